// Watching with std::function callbacks and with the pull form. Usage: cpp_watch [endpoints]
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <mutex>
#include <thread>

#include <etcdc.hpp>

int main(int argc, char** argv) try {
  const char* env = std::getenv("ETCDC_ENDPOINTS");
  auto client = etcdc::Client::connect(argc > 1 ? argv[1] : env ? env : "http://127.0.0.1:2379");

  std::atomic<int> seen{0};
  std::mutex out;
  etcdc::WatchOptions opts;
  opts.prefix().prev_kv();
  etcdc::Watch watch = client.watch("users/", opts, [&](const etcdc::WatchResponse& r) {
    std::lock_guard<std::mutex> lock(out);
    for (etcdc::Event ev : r) {
      std::cout << (ev.is_put() ? "PUT " : "DELETE ") << ev.kv().key();
      if (auto prev = ev.prev_kv()) std::cout << " (was " << prev->value() << ")";
      std::cout << " @" << ev.kv().mod_revision() << "\n";
      ++seen;
    }
  });
  etcdc::Watch pulled = client.watch("users/", opts);

  client.put("users/alice", "online");
  client.put("users/alice", "away");
  client.del("users/alice");

  int pulled_events = 0;
  while (pulled_events < 3) {
    auto r = pulled.next(5000);
    if (!r) break;
    pulled_events += static_cast<int>(r->size());
  }
  for (int i = 0; i < 50 && seen < 3; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  watch.reset();
  std::cout << "callback saw " << seen << ", pull saw " << pulled_events << "\n";
  return seen == 3 && pulled_events == 3 ? 0 : 1;
} catch (const etcdc::Error& e) {
  std::cerr << e.what() << "\n";
  return 1;
}

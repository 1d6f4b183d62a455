// Service registration and discovery in C++: login servers register, a msg server follows
// them with a callback and picks the least busy one per request. Usage: discovery [endpoints]
#include <condition_variable>
#include <cstdlib>
#include <iostream>
#include <mutex>

#include <etcdc.hpp>

int main(int argc, char** argv) try {
  const char* env = std::getenv("ETCDC_ENDPOINTS");
  auto client = etcdc::Client::connect(argc > 1 ? argv[1] : env ? env : "http://127.0.0.1:2379");

  std::mutex mu;
  std::condition_variable cv;
  int live = 0;
  auto discovery = etcdc::discover(client, "/login_servers", [&](const etcdc::DiscoveryEvent& e) {
    std::lock_guard<std::mutex> lock(mu);
    if (e.change == etcdc::Change::Added) live++;
    if (e.change == etcdc::Change::Removed) live--;
    std::cout << (e.change == etcdc::Change::Removed ? "- " : "+ ") << e.instance.id << " " << e.instance.addr << "\n";
    cv.notify_all();
  });
  auto wait_for = [&](int n) {
    std::unique_lock<std::mutex> lock(mu);
    return cv.wait_for(lock, std::chrono::seconds(5), [&] { return live == n; });
  };

  etcdc::RegistrationOptions o;
  o.ttl_seconds = 5;
  auto a = etcdc::register_instance(client, "/login_servers", "0001-0001", "127.0.0.1:8001", o);
  auto b = etcdc::register_instance(client, "/login_servers", "0001-0002", "127.0.0.1:8002", o);
  if (!wait_for(2)) return 1;

  for (int request = 0; request < 4; request++) {
    auto login = discovery.pick(etcdc::Pick::LeastInFlight);
    if (!login) return 1;
    discovery.begin(login->id);  // in flight until end()
    std::cout << "request " << request << " -> " << login->addr << "\n";
    if (request % 2) discovery.end(login->id);
  }
  a.reset();  // unregisters
  if (!wait_for(1)) return 1;
  return discovery.snapshot().size() == 1 ? 0 : 1;
} catch (const etcdc::Error& e) {
  std::cerr << e.what() << "\n";
  return 1;
}

// A lease kept alive by a LeaseKeeper while the key registered under it stays visible.
// Usage: cpp_lease [endpoints]
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <thread>

#include <etcdc.hpp>

int main(int argc, char** argv) try {
  const char* env = std::getenv("ETCDC_ENDPOINTS");
  auto client = etcdc::Client::connect(argc > 1 ? argv[1] : env ? env : "http://127.0.0.1:2379");

  auto lease = client.lease_grant(2);
  etcdc::PutOptions under_lease;
  under_lease.lease(lease.id);
  client.put("services/msg/10.0.0.2:9000", "{}", under_lease);

  std::atomic<int> alive{0}, lost{0};
  {
    auto keeper = client.keeper([&](const etcdc::LeaseEvent& e) {
      if (e.state() == etcdc::LeaseState::Alive) ++alive;
      if (e.state() == etcdc::LeaseState::Lost) ++lost;
    });
    keeper.add(lease.id);
    std::this_thread::sleep_for(std::chrono::seconds(5));
    std::cout << "after 5 s: ttl left " << client.lease_ttl(lease.id) << " s, key "
              << (client.value("services/msg/10.0.0.2:9000") ? "present" : "missing") << "\n";
    client.lease_revoke(lease.id);
    for (int i = 0; i < 50 && lost == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  bool gone = !client.value("services/msg/10.0.0.2:9000");
  std::cout << "alive reports " << alive << ", lost reports " << lost << ", key gone " << gone << "\n";
  return alive >= 1 && lost == 1 && gone ? 0 : 1;
} catch (const etcdc::Error& e) {
  std::cerr << e.what() << "\n";
  return 1;
}

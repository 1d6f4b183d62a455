// A lock, a leader election with an observer, and a job queue in C++.
// Usage: coordination [endpoints]
#include <cstdlib>
#include <iostream>

#include <etcdc.hpp>

int main(int argc, char** argv) try {
  const char* env = std::getenv("ETCDC_ENDPOINTS");
  auto client = etcdc::Client::connect(argc > 1 ? argv[1] : env ? env : "http://127.0.0.1:2379");
  auto session = etcdc::Session::start(client, 10);

  etcdc::Mutex lock(session, "/locks/report");
  if (!lock.lock(5000)) return 1;
  std::cout << "locked " << lock.key() << " (token " << lock.revision() << ")\n";
  lock.unlock();

  auto observer = etcdc::Observer::start(client, "/elect/msg");
  etcdc::Election election(session, "/elect/msg");
  if (!election.campaign("msg-server-1", 5000)) return 1;
  auto seen = observer.next(5000);
  std::cout << "observed leader " << (seen ? seen->value : "none") << "\n";
  election.proclaim("msg-server-1 (busy)");
  seen = observer.next(5000);
  std::cout << "observed proclamation " << (seen ? seen->value : "none") << "\n";
  election.resign();
  if (etcdc::leader(client, "/elect/msg")) return 1;

  for (int i = 0; i < 3; i++) etcdc::enqueue(client, "/queue/jobs", "job-" + std::to_string(i));
  int n = 0;
  while (auto job = etcdc::dequeue(client, "/queue/jobs")) {
    std::cout << "dequeued " << *job << "\n";
    n++;
  }
  return n == 3 && seen && seen->value == "msg-server-1 (busy)" ? 0 : 1;
} catch (const etcdc::Error& e) {
  std::cerr << e.what() << "\n";
  return 1;
}

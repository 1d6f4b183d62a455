// Keys, values and transactions with the C++ wrapper. Usage: cpp_kv_txn [endpoints]
#include <cstdlib>
#include <iostream>

#include <etcdc.hpp>

int main(int argc, char** argv) try {
  const char* env = std::getenv("ETCDC_ENDPOINTS");
  auto client = etcdc::Client::connect(argc > 1 ? argv[1] : env ? env : "http://127.0.0.1:2379");

  client.put("config/max_users", "1000");
  etcdc::PutOptions prev;
  prev.prev_kv();
  auto put = client.put("config/max_users", "2000", prev);
  std::cout << "was " << put.prev_kv()->value() << ", now revision " << put.header().revision() << "\n";

  // Compare-and-swap: only one of two writers expecting "2000" succeeds.
  bool first = client.cas("config/max_users", "2000", "3000").has_value();
  bool second = client.cas("config/max_users", "2000", "4000").has_value();
  std::cout << "cas: first " << first << ", second " << second << "\n";

  // A transaction: move a user's route only if it still points at the old server.
  client.put("routes/alice", "msg_server-a");
  etcdc::Txn txn;
  txn.compare_value("routes/alice", etcdc::Cmp::Equal, "msg_server-a")
      .then_put("routes/alice", "msg_server-b")
      .then_get("routes/alice")
      .else_get("routes/alice");
  auto result = client.commit(txn);
  auto kvs = result.get(1);
  std::cout << "moved: " << result.succeeded() << ", route now " << kvs.at(0).value() << "\n";

  etcdc::GetOptions all;
  all.prefix().sort(etcdc::SortTarget::Key, etcdc::SortOrder::Ascend);
  auto everything = client.get("", all);
  for (etcdc::KeyValue kv : everything) std::cout << kv.key() << " = " << kv.value() << "\n";

  try {
    etcdc::GetOptions old;
    old.revision(1'000'000);
    client.get("routes/alice", old);
    return 1;
  } catch (const etcdc::Error& e) {
    std::cout << "expected error: " << e.what() << "\n";
    if (e.status() != etcdc::Status::FutureRevision) return 1;
  }
  return first && !second && result.succeeded() && everything.size() == 2 ? 0 : 1;
} catch (const etcdc::Error& e) {
  std::cerr << e.what() << "\n";
  return 1;
}

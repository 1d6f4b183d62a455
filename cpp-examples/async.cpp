// Asynchronous calls in C++: a std::future, a lambda run on etcdc's event thread, a
// completion queue for an epoll loop, and one driven by the loop's own thread. Usage: async [endpoints]
#include <cstdlib>
#include <iostream>
#include <atomic>
#include <future>
#include <optional>

#include <poll.h>

#include <etcdc.hpp>

int main(int argc, char** argv) try {
  const char* env = std::getenv("ETCDC_ENDPOINTS");
  auto client = etcdc::Client::connect(argc > 1 ? argv[1] : env ? env : "http://127.0.0.1:2379");
  etcdc::Async async(client);

  // A future.
  etcdc::Reply put = async.put("async/config", "v1").get();
  std::cout << "put at revision " << put.header.revision() << "\n";

  // Callbacks: 16 puts in flight, each completion on etcdc's event thread.
  std::promise<void> all;
  std::atomic<int> left{16};
  for (int i = 0; i < 16; i++) {
    async.put("async/k" + std::to_string(i), "v", [&](const etcdc::Reply& r) {
      if (!r.ok()) std::cerr << r.message << "\n";
      if (--left == 0) all.set_value();
    });
  }
  all.get_future().wait();

  // A completion queue, pulled (its fd() goes into an epoll set).
  auto q = etcdc::CompletionQueue::create();
  etcdc::GetOptions prefix;
  prefix.prefix();
  async.get("async/", q, reinterpret_cast<void*>(42), &prefix);
  auto got = q.next(5000);
  if (!got || got->tag != reinterpret_cast<void*>(42) || !got->reply.ok()) return 1;
  std::cout << got->reply.kvs.size() << " keys under async/\n";

  // A driven queue: the calls run inside next(), on this thread — for a single-threaded loop,
  // which sleeps on its fd() with its other descriptors and calls next(0) when it is readable.
  auto driven = etcdc::CompletionQueue::driven();
  async.get("async/", driven, reinterpret_cast<void*>(43), &prefix);
  std::optional<etcdc::Completion> local;
  for (int i = 0; i < 1000 && !local; i++) {
    pollfd p{driven.fd(), POLLIN, 0};
    if (poll(&p, 1, 5000) != 1) return 1;
    local = driven.next(0);
  }
  if (!local || !local->reply.ok() || local->reply.kvs.size() != got->reply.kvs.size()) return 1;

  // A watch on the driven queue: its stream runs there too, and its responses come through
  // the queue like the calls.
  etcdc::Watch here = client.watch("async/here", etcdc::WatchOptions().queue(driven));
  etcdc::next_async(here, driven, reinterpret_cast<void*>(44));
  async.put("async/here", "y", driven, reinterpret_cast<void*>(45));
  int taken = 0;
  for (int i = 0; i < 1000 && taken < 2; i++) {
    pollfd p{driven.fd(), POLLIN, 0};
    if (poll(&p, 1, 5000) != 1) return 1;
    while (auto c = driven.next(0)) {
      if (!c->reply.ok() || (c->tag == reinterpret_cast<void*>(44) && (!c->reply.watch || c->reply.watch->size() != 1))) return 1;
      taken++;
    }
  }
  if (taken != 2) return 1;
  std::cout << "watched async/here on the loop's thread\n";

  // A watch's responses come through the same queue as the calls.
  etcdc::Watch w = client.watch("async/watched");
  etcdc::next_async(w, q, reinterpret_cast<void*>(7));
  async.put("async/watched", "x").get();
  auto seen = q.next(5000);
  if (!seen || seen->tag != reinterpret_cast<void*>(7) || !seen->reply.watch || seen->reply.watch->size() != 1) return 1;
  std::cout << "watched " << (*seen->reply.watch)[0].kv().key() << "\n";

  // A lock taken without blocking a thread.
  etcdc::Session session = etcdc::Session::start(client, 10);
  etcdc::Mutex m(session, "async/lock");
  if (!etcdc::lock_async(m).get().ok() || m.revision() == 0) return 1;
  etcdc::unlock_async(m).get();

  // A queue in the loop: the dequeue completes when the item arrives.
  auto job = async.dequeue("/async-jobs", true, 5000);
  async.enqueue("/async-jobs", "job-1").get();
  if (job.get().item_value != "job-1") return 1;
  std::cout << async.members().get().members.size() << " member(s), leader "
            << std::hex << async.status().get().endpoint_status->leader << std::dec << "\n";

  auto lease = async.lease_grant(10).get();
  std::cout << "lease " << std::hex << lease.lease_id << std::dec << "\n";
  if (async.lease_time_to_live(lease.lease_id).get().granted_ttl != 10) return 1;
  async.lease_revoke(lease.lease_id).get();
  etcdc::DeleteOptions all_of;
  all_of.prefix();
  auto gone = async.del("async/", &all_of).get();
  return got->reply.kvs.size() == 17 && lease.lease_id > 0 && gone.deleted == 19 ? 0 : 1;
} catch (const etcdc::Error& e) {
  std::cerr << e.what() << "\n";
  return 1;
}

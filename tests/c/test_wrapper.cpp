// The C++ wrapper end to end against a real etcd: range-for over results and responses,
// clone() inside a callback, cas/create with put options, the keeper's pull form, members,
// endpoint status, lease list and time-to-live with keys, a txn's put and delete results,
// enum classes. (dangling_view.cpp, which must not compile, checks the view rules.)
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <unistd.h>
#include <iostream>
#include <mutex>
#include <vector>

#include <etcdc.hpp>

static int failures = 0;
#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) {                                                             \
      std::cerr << __FILE__ << ":" << __LINE__ << ": CHECK failed: " #cond "\n"; \
      ++failures;                                                              \
    }                                                                          \
  } while (0)

int main() try {
  const char* ep = std::getenv("ETCDC_ENDPOINTS");
  if (!ep) return 2;
  auto c = etcdc::Client::connect(ep);

  // Range-for over a get result.
  c.put("w/a", "1");
  c.put("w/b", "2");
  etcdc::GetOptions prefix;
  prefix.prefix().sort(etcdc::SortTarget::Key, etcdc::SortOrder::Ascend);
  auto got = c.get("w/", prefix);
  std::vector<std::string> keys;
  for (etcdc::KeyValue kv : got) keys.emplace_back(kv.key());
  CHECK((keys == std::vector<std::string>{"w/a", "w/b"}));
  CHECK(c.put("w/c", "3").header().revision() > 0);  // a header copied from a temporary

  // cas and create, with a lease through PutOptions.
  auto lease = c.lease_grant(30);
  etcdc::PutOptions leased;
  leased.lease(lease.id);
  CHECK(c.create("owner", "me", &leased).has_value());
  CHECK(!c.create("owner", "you").has_value());
  CHECK(!c.cas("owner", "you", "x").has_value());
  auto swapped = c.cas("owner", "me", "me-again", &leased);
  CHECK(swapped && swapped->header().revision() > 0);
  auto info = c.lease_info(lease.id, true);
  CHECK(info.granted_ttl == 30 && info.keys == std::vector<std::string>{"owner"});
  bool listed = false;
  for (int64_t id : c.leases()) listed |= id == lease.id;
  CHECK(listed);

  // A txn's put and delete results.
  etcdc::Txn txn;
  etcdc::PutOptions prev;
  prev.prev_kv();
  etcdc::DeleteOptions del_prev;
  del_prev.prev_kv();
  txn.then_put("w/a", "10", &prev).then_delete("w/b", &del_prev);
  auto r = c.commit(txn);
  CHECK(r.succeeded() && r.type(0) == etcdc::OpType::Put && r.type(1) == etcdc::OpType::Delete);
  auto put = r.put(0);
  CHECK(put && put->prev_kv() && put->prev_kv()->value() == "1");
  auto del = r.del(1);
  CHECK(del && del->deleted() == 1 && del->prev(0).value() == "2");
  CHECK(!r.put(1) && !r.del(0));

  // A moved-from result is empty, not a view of the result it was moved into (which may be
  // gone by then).
  {
    auto owner = c.put("w/moved", "1");
    etcdc::PutResult moved_from = c.put("w/moved", "2", &prev);
    auto keep = std::move(moved_from);
    owner = std::move(keep);
    CHECK(owner.prev_kv() && owner.prev_kv()->value() == "1");
    CHECK(moved_from.header().revision() == 0 && !moved_from.prev_kv());
    CHECK(keep.header().revision() == 0 && !keep.prev_kv());
    etcdc::DeleteOptions moved_prev;
    moved_prev.prev_kv();
    auto d = c.del("w/moved", &moved_prev);
    auto d2 = std::move(d);
    CHECK(d2.deleted() == 1 && d.deleted() == 0 && d.prev_size() == 0);
  }
  CHECK(std::string(etcdc::to_string(etcdc::Status::Timeout)) == "ETCDC_ERR_TIMEOUT");

  // A watch callback that keeps responses past the call with clone(), and range-for.
  std::mutex mu;
  std::condition_variable cv;
  std::vector<etcdc::OwnedWatchResponse> kept;
  etcdc::WatchOptions wo;
  wo.prefix();
  auto w = c.watch("k/", wo, [&](const etcdc::WatchResponse& resp) {
    std::lock_guard<std::mutex> lock(mu);
    kept.push_back(resp.clone());
    cv.notify_all();
  });
  c.put("k/1", "one");
  c.put("k/2", "two");
  {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait_for(lock, std::chrono::seconds(10), [&] { return kept.size() >= 2; });
  }
  w.reset();
  std::vector<std::string> seen;
  for (const auto& resp : kept) {
    CHECK(resp.kind() == etcdc::WatchKind::Events && resp.status() == etcdc::Status::Ok);
    for (etcdc::Event ev : resp) {
      CHECK(ev.type() == etcdc::EventType::Put);
      seen.emplace_back(ev.kv().value());
    }
  }
  CHECK((seen == std::vector<std::string>{"one", "two"}));

  // The keeper's pull form.
  auto keeper = c.keeper();
  CHECK(keeper.fd() >= 0);
  keeper.add(lease.id);
  auto ev = keeper.next(5000);
  CHECK(ev && ev->id() == lease.id && ev->state() == etcdc::LeaseState::Alive && ev->status() == etcdc::Status::Ok);
  keeper.reset();

  // Members and status.
  auto members = c.members();
  CHECK(members.size() == 1 && !members[0].client_urls.empty() && members[0].client_urls[0] == ep);
  auto st = c.status(ep);
  CHECK(st.version.rfind("3.", 0) == 0 && st.leader == members[0].id && st.raft_index > 0);
  CHECK(c.status().leader == st.leader);

  try {
    c.status("http://127.0.0.1:9");
    CHECK(false);
  } catch (const etcdc::Error& e) {
    CHECK(e.status() == etcdc::Status::InvalidArgument);
  }
 // The embedded node from C++: a member in process, a client bound to it.
  {
    char tmpl[] = "/tmp/etcdc-wrapper-node-XXXXXX";
    std::string dir = mkdtemp(tmpl);
    etcdc::NodeOptions no;
    no.data_dir = dir + "/data";
    no.heartbeat_ms = 50;
    no.election_ms = 300;
    auto node = etcdc::Node::start(no);
    auto nc = node.client();
    nc.put("embedded", "yes");
    CHECK(nc.value("embedded") == std::optional<std::string>("yes"));
    auto st = node.status();
    CHECK(st.is_leader && st.member_id == st.leader_id && st.member_id != 0);
    node.stop();
    std::string rm = "rm -rf " + dir;
    CHECK(std::system(rm.c_str()) == 0);
  }

  if (failures) {
    std::cerr << "test_wrapper: " << failures << " check(s) failed\n";
    return 1;
  }
  std::cout << "test_wrapper: all checks passed\n";
  return 0;
} catch (const etcdc::Error& e) {
  std::cerr << "unexpected: " << e.what() << "\n";
  return 1;
}

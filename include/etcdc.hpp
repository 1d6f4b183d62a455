// etcdc.hpp: header-only C++17 RAII wrapper over the etcdc C ABI (etcdc.h).
//
// Every handle is a move-only owner that frees itself; results are owners with
// std::string_view accessors that borrow from them; failures throw etcdc::Error carrying the
// etcdc_status and etcd's message. Callbacks are std::function, run on etcdc's event thread
// through noexcept trampolines: an exception escaping a callback is caught and dropped.
#ifndef ETCDC_HPP
#define ETCDC_HPP

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "etcdc.h"

namespace etcdc {

/// A failed call: the status and the message etcdc_last_error() gave for it.
class Error : public std::runtime_error {
 public:
  Error(etcdc_status status, const std::string& message)
      : std::runtime_error(std::string(etcdc_status_str(status)) + ": " + message), status_(status) {}
  etcdc_status status() const noexcept { return status_; }

 private:
  etcdc_status status_;
};

namespace detail {
inline void check(etcdc_status s) {
  if (s != ETCDC_OK) throw Error(s, etcdc_last_error());
}
inline const uint8_t* bytes(std::string_view s) noexcept {
  return reinterpret_cast<const uint8_t*>(s.data());
}
inline std::string_view view(const uint8_t* p, size_t n) noexcept {
  return p ? std::string_view(reinterpret_cast<const char*>(p), n) : std::string_view();
}
template <typename T, void (*Free)(T*)>
struct Deleter {
  void operator()(T* p) const noexcept { Free(p); }
};
template <typename T, void (*Free)(T*)>
using Owned = std::unique_ptr<T, Deleter<T, Free>>;
template <typename T>
T* not_null(T* p) {
  if (!p) throw std::bad_alloc();
  return p;
}
}  // namespace detail

/// The header of a response.
class Header {
 public:
  explicit Header(const etcdc_header* h) noexcept : h_(h) {}
  int64_t revision() const noexcept { return etcdc_header_revision(h_); }
  uint64_t cluster_id() const noexcept { return etcdc_header_cluster_id(h_); }
  uint64_t member_id() const noexcept { return etcdc_header_member_id(h_); }
  uint64_t raft_term() const noexcept { return etcdc_header_raft_term(h_); }

 private:
  const etcdc_header* h_;
};

/// A key-value, borrowed from the result that holds it.
class KeyValue {
 public:
  explicit KeyValue(const etcdc_kv* kv) noexcept : kv_(kv) {}
  std::string_view key() const noexcept {
    size_t n = 0;
    const uint8_t* p = etcdc_kv_key(kv_, &n);
    return detail::view(p, n);
  }
  std::string_view value() const noexcept {
    size_t n = 0;
    const uint8_t* p = etcdc_kv_value(kv_, &n);
    return detail::view(p, n);
  }
  int64_t create_revision() const noexcept { return etcdc_kv_create_revision(kv_); }
  int64_t mod_revision() const noexcept { return etcdc_kv_mod_revision(kv_); }
  int64_t version() const noexcept { return etcdc_kv_version(kv_); }
  int64_t lease() const noexcept { return etcdc_kv_lease(kv_); }

 private:
  const etcdc_kv* kv_;
};

/// The keys a get returned. Views (KeyValue) live as long as this object.
class GetResult {
 public:
  explicit GetResult(etcdc_get_result* r) noexcept : r_(r) {}
  Header header() const noexcept { return Header(etcdc_get_result_header(r_.get())); }
  size_t size() const noexcept { return etcdc_get_result_len(r_.get()); }
  bool empty() const noexcept { return size() == 0; }
  KeyValue operator[](size_t i) const noexcept { return KeyValue(etcdc_get_result_kv(r_.get(), i)); }
  int64_t count() const noexcept { return etcdc_get_result_count(r_.get()); }
  bool more() const noexcept { return etcdc_get_result_more(r_.get()); }

 private:
  detail::Owned<etcdc_get_result, etcdc_get_result_free> r_;
};

/// What a put returned.
class PutResult {
 public:
  explicit PutResult(etcdc_put_result* r) noexcept : r_(r) {}
  Header header() const noexcept { return Header(etcdc_put_result_header(r_.get())); }
  std::optional<KeyValue> prev_kv() const noexcept {
    const etcdc_kv* kv = etcdc_put_result_prev_kv(r_.get());
    return kv ? std::optional<KeyValue>(KeyValue(kv)) : std::nullopt;
  }

 private:
  detail::Owned<etcdc_put_result, etcdc_put_result_free> r_;
};

/// What a delete returned.
class DeleteResult {
 public:
  explicit DeleteResult(etcdc_delete_result* r) noexcept : r_(r) {}
  Header header() const noexcept { return Header(etcdc_delete_result_header(r_.get())); }
  int64_t deleted() const noexcept { return etcdc_delete_result_deleted(r_.get()); }
  size_t prev_size() const noexcept { return etcdc_delete_result_prev_len(r_.get()); }
  KeyValue prev(size_t i) const noexcept { return KeyValue(etcdc_delete_result_prev_kv(r_.get(), i)); }

 private:
  detail::Owned<etcdc_delete_result, etcdc_delete_result_free> r_;
};

/// Options for get (and gets in a transaction). Setters chain.
class GetOptions {
 public:
  GetOptions() : o_(detail::not_null(etcdc_get_options_new())) {}
  GetOptions& prefix() { detail::check(etcdc_get_options_set_prefix(o_.get())); return *this; }
  GetOptions& from_key() { detail::check(etcdc_get_options_set_from_key(o_.get())); return *this; }
  GetOptions& range_end(std::string_view end) {
    detail::check(etcdc_get_options_set_range_end(o_.get(), detail::bytes(end), end.size()));
    return *this;
  }
  GetOptions& revision(int64_t rev) { detail::check(etcdc_get_options_set_revision(o_.get(), rev)); return *this; }
  GetOptions& limit(int64_t n) { detail::check(etcdc_get_options_set_limit(o_.get(), n)); return *this; }
  GetOptions& sort(etcdc_sort_target target, etcdc_sort_order order) {
    detail::check(etcdc_get_options_set_sort(o_.get(), target, order));
    return *this;
  }
  GetOptions& keys_only(bool on = true) { detail::check(etcdc_get_options_set_keys_only(o_.get(), on)); return *this; }
  GetOptions& count_only(bool on = true) { detail::check(etcdc_get_options_set_count_only(o_.get(), on)); return *this; }
  GetOptions& serializable(bool on = true) {
    detail::check(etcdc_get_options_set_serializable(o_.get(), on));
    return *this;
  }
  GetOptions& timeout_ms(int64_t ms) { detail::check(etcdc_get_options_set_timeout_ms(o_.get(), ms)); return *this; }
  const etcdc_get_options* get() const noexcept { return o_.get(); }

 private:
  detail::Owned<etcdc_get_options, etcdc_get_options_free> o_;
};

/// Options for put (and puts in a transaction). Setters chain.
class PutOptions {
 public:
  PutOptions() : o_(detail::not_null(etcdc_put_options_new())) {}
  PutOptions& lease(int64_t id) { detail::check(etcdc_put_options_set_lease(o_.get(), id)); return *this; }
  PutOptions& prev_kv(bool on = true) { detail::check(etcdc_put_options_set_prev_kv(o_.get(), on)); return *this; }
  PutOptions& ignore_value(bool on = true) {
    detail::check(etcdc_put_options_set_ignore_value(o_.get(), on));
    return *this;
  }
  PutOptions& ignore_lease(bool on = true) {
    detail::check(etcdc_put_options_set_ignore_lease(o_.get(), on));
    return *this;
  }
  PutOptions& timeout_ms(int64_t ms) { detail::check(etcdc_put_options_set_timeout_ms(o_.get(), ms)); return *this; }
  const etcdc_put_options* get() const noexcept { return o_.get(); }

 private:
  detail::Owned<etcdc_put_options, etcdc_put_options_free> o_;
};

/// Options for delete (and deletes in a transaction). Setters chain.
class DeleteOptions {
 public:
  DeleteOptions() : o_(detail::not_null(etcdc_delete_options_new())) {}
  DeleteOptions& prefix() { detail::check(etcdc_delete_options_set_prefix(o_.get())); return *this; }
  DeleteOptions& from_key() { detail::check(etcdc_delete_options_set_from_key(o_.get())); return *this; }
  DeleteOptions& range_end(std::string_view end) {
    detail::check(etcdc_delete_options_set_range_end(o_.get(), detail::bytes(end), end.size()));
    return *this;
  }
  DeleteOptions& prev_kv(bool on = true) { detail::check(etcdc_delete_options_set_prev_kv(o_.get(), on)); return *this; }
  DeleteOptions& timeout_ms(int64_t ms) {
    detail::check(etcdc_delete_options_set_timeout_ms(o_.get(), ms));
    return *this;
  }
  const etcdc_delete_options* get() const noexcept { return o_.get(); }

 private:
  detail::Owned<etcdc_delete_options, etcdc_delete_options_free> o_;
};

/// Compare operators for Txn.
enum class Cmp : etcdc_compare_op {
  Equal = ETCDC_CMP_EQUAL,
  Greater = ETCDC_CMP_GREATER,
  Less = ETCDC_CMP_LESS,
  NotEqual = ETCDC_CMP_NOT_EQUAL,
};

/// A transaction: compares, then the then-branch or else-branch. Commit with Client::commit.
class Txn {
 public:
  Txn() : t_(detail::not_null(etcdc_txn_new())) {}
  Txn& compare_value(std::string_view key, Cmp op, std::string_view value) {
    detail::check(etcdc_txn_compare_value(t_.get(), detail::bytes(key), key.size(), static_cast<etcdc_compare_op>(op),
                                          detail::bytes(value), value.size()));
    return *this;
  }
  Txn& compare_version(std::string_view key, Cmp op, int64_t v) {
    detail::check(etcdc_txn_compare_version(t_.get(), detail::bytes(key), key.size(), static_cast<etcdc_compare_op>(op), v));
    return *this;
  }
  Txn& compare_create_revision(std::string_view key, Cmp op, int64_t rev) {
    detail::check(
        etcdc_txn_compare_create_revision(t_.get(), detail::bytes(key), key.size(), static_cast<etcdc_compare_op>(op), rev));
    return *this;
  }
  Txn& compare_mod_revision(std::string_view key, Cmp op, int64_t rev) {
    detail::check(
        etcdc_txn_compare_mod_revision(t_.get(), detail::bytes(key), key.size(), static_cast<etcdc_compare_op>(op), rev));
    return *this;
  }
  Txn& compare_lease(std::string_view key, Cmp op, int64_t lease) {
    detail::check(etcdc_txn_compare_lease(t_.get(), detail::bytes(key), key.size(), static_cast<etcdc_compare_op>(op), lease));
    return *this;
  }
  Txn& put(etcdc_txn_branch b, std::string_view key, std::string_view value, const PutOptions* o = nullptr) {
    detail::check(etcdc_txn_put(t_.get(), b, detail::bytes(key), key.size(), detail::bytes(value), value.size(),
                                o ? o->get() : nullptr));
    return *this;
  }
  Txn& get(etcdc_txn_branch b, std::string_view key, const GetOptions* o = nullptr) {
    detail::check(etcdc_txn_get(t_.get(), b, detail::bytes(key), key.size(), o ? o->get() : nullptr));
    return *this;
  }
  Txn& del(etcdc_txn_branch b, std::string_view key, const DeleteOptions* o = nullptr) {
    detail::check(etcdc_txn_delete(t_.get(), b, detail::bytes(key), key.size(), o ? o->get() : nullptr));
    return *this;
  }
  /// Adds `nested`, which is consumed.
  Txn& txn(etcdc_txn_branch b, Txn&& nested) {
    detail::check(etcdc_txn_txn(t_.get(), b, nested.t_.release()));
    return *this;
  }
  Txn& then_put(std::string_view k, std::string_view v, const PutOptions* o = nullptr) { return put(ETCDC_TXN_THEN, k, v, o); }
  Txn& then_get(std::string_view k, const GetOptions* o = nullptr) { return get(ETCDC_TXN_THEN, k, o); }
  Txn& then_delete(std::string_view k, const DeleteOptions* o = nullptr) { return del(ETCDC_TXN_THEN, k, o); }
  Txn& else_put(std::string_view k, std::string_view v, const PutOptions* o = nullptr) { return put(ETCDC_TXN_ELSE, k, v, o); }
  Txn& else_get(std::string_view k, const GetOptions* o = nullptr) { return get(ETCDC_TXN_ELSE, k, o); }
  Txn& else_delete(std::string_view k, const DeleteOptions* o = nullptr) { return del(ETCDC_TXN_ELSE, k, o); }
  Txn& timeout_ms(int64_t ms) { detail::check(etcdc_txn_set_timeout_ms(t_.get(), ms)); return *this; }
  const etcdc_txn* get() const noexcept { return t_.get(); }

 private:
  detail::Owned<etcdc_txn, etcdc_txn_free> t_;
};

/// A transaction's outcome. Per-operation views borrow from it.
class TxnResult {
 public:
  explicit TxnResult(etcdc_txn_result* r) noexcept : r_(r), view_(r) {}
  Header header() const noexcept { return Header(etcdc_txn_result_header(view_)); }
  bool succeeded() const noexcept { return etcdc_txn_result_succeeded(view_); }
  size_t size() const noexcept { return etcdc_txn_result_len(view_); }
  etcdc_op_type type(size_t i) const {
    etcdc_op_type t;
    detail::check(etcdc_txn_result_op_type(view_, i, &t));
    return t;
  }
  /// The i-th operation's key-values, when it was a get.
  std::vector<KeyValue> get(size_t i) const {
    std::vector<KeyValue> out;
    const etcdc_get_result* g = etcdc_txn_result_get(view_, i);
    for (size_t j = 0, n = etcdc_get_result_len(g); j < n; ++j) out.emplace_back(etcdc_get_result_kv(g, j));
    return out;
  }
  /// The i-th operation's nested transaction, when it was one (a view into this result).
  TxnResult nested(size_t i) const noexcept { return TxnResult(view_, etcdc_txn_result_txn(view_, i)); }

 private:
  TxnResult(const etcdc_txn_result*, const etcdc_txn_result* nested) noexcept : view_(nested) {}
  detail::Owned<etcdc_txn_result, etcdc_txn_result_free> r_;
  const etcdc_txn_result* view_;
};

/// One change of a key, borrowed from its WatchResponse.
class Event {
 public:
  explicit Event(const etcdc_event* e) noexcept : e_(e) {}
  etcdc_event_kind type() const noexcept { return etcdc_event_type(e_); }
  bool is_put() const noexcept { return type() == ETCDC_EVENT_PUT; }
  KeyValue kv() const noexcept { return KeyValue(etcdc_event_kv(e_)); }
  std::optional<KeyValue> prev_kv() const noexcept {
    const etcdc_kv* kv = etcdc_event_prev_kv(e_);
    return kv ? std::optional<KeyValue>(KeyValue(kv)) : std::nullopt;
  }

 private:
  const etcdc_event* e_;
};

/// One delivery of a watch (a view; owned when pulled with Watch::next).
class WatchResponse {
 public:
  explicit WatchResponse(const etcdc_watch_response* r) noexcept : r_(r) {}
  etcdc_watch_kind kind() const noexcept { return etcdc_watch_response_kind(r_); }
  int64_t revision() const noexcept { return etcdc_header_revision(etcdc_watch_response_header(r_)); }
  int64_t compact_revision() const noexcept { return etcdc_watch_response_compact_revision(r_); }
  std::string_view reason() const noexcept { return etcdc_watch_response_reason(r_); }
  size_t size() const noexcept { return etcdc_watch_response_len(r_); }
  Event operator[](size_t i) const noexcept { return Event(etcdc_watch_response_event(r_, i)); }

 protected:
  const etcdc_watch_response* r_;
};

/// A pulled watch response that owns its data.
class OwnedWatchResponse : public WatchResponse {
 public:
  explicit OwnedWatchResponse(etcdc_watch_response* r) noexcept : WatchResponse(r), own_(r) {}

 private:
  detail::Owned<etcdc_watch_response, etcdc_watch_response_free> own_;
};

/// Options for Client::watch. Setters chain.
class WatchOptions {
 public:
  WatchOptions() : o_(detail::not_null(etcdc_watch_options_new())) {}
  WatchOptions& prefix() { detail::check(etcdc_watch_options_set_prefix(o_.get())); return *this; }
  WatchOptions& from_key() { detail::check(etcdc_watch_options_set_from_key(o_.get())); return *this; }
  WatchOptions& range_end(std::string_view end) {
    detail::check(etcdc_watch_options_set_range_end(o_.get(), detail::bytes(end), end.size()));
    return *this;
  }
  WatchOptions& start_revision(int64_t rev) {
    detail::check(etcdc_watch_options_set_start_revision(o_.get(), rev));
    return *this;
  }
  WatchOptions& prev_kv(bool on = true) { detail::check(etcdc_watch_options_set_prev_kv(o_.get(), on)); return *this; }
  WatchOptions& no_put(bool on = true) { detail::check(etcdc_watch_options_set_no_put(o_.get(), on)); return *this; }
  WatchOptions& no_delete(bool on = true) { detail::check(etcdc_watch_options_set_no_delete(o_.get(), on)); return *this; }
  WatchOptions& progress_notify(bool on = true) {
    detail::check(etcdc_watch_options_set_progress_notify(o_.get(), on));
    return *this;
  }
  WatchOptions& timeout_ms(int64_t ms) { detail::check(etcdc_watch_options_set_timeout_ms(o_.get(), ms)); return *this; }
  const etcdc_watch_options* get() const noexcept { return o_.get(); }

 private:
  detail::Owned<etcdc_watch_options, etcdc_watch_options_free> o_;
};

/// A running watch; destroying it cancels it (waiting for a running callback, except from
/// inside that callback).
class Watch {
 public:
  explicit Watch(etcdc_watch* w) noexcept : w_(w) {}
  Watch(Watch&& o) noexcept : w_(std::exchange(o.w_, nullptr)) {}
  Watch& operator=(Watch&& o) noexcept {
    if (this != &o) {
      reset();
      w_ = std::exchange(o.w_, nullptr);
    }
    return *this;
  }
  Watch(const Watch&) = delete;
  Watch& operator=(const Watch&) = delete;
  ~Watch() { reset(); }

  /// Pull form: the next response within timeout_ms, or nullopt on timeout. Throws
  /// etcdc::Error with ETCDC_ERR_CLOSED once the watch has ended.
  std::optional<OwnedWatchResponse> next(int64_t timeout_ms) {
    etcdc_watch_response* r = nullptr;
    etcdc_status s = etcdc_watch_next(w_, timeout_ms, &r);
    if (s == ETCDC_ERR_TIMEOUT) return std::nullopt;
    detail::check(s);
    return OwnedWatchResponse(r);
  }
  /// Pull form: readable while a response is waiting.
  int fd() const {
    int fd = -1;
    detail::check(etcdc_watch_fd(w_, &fd));
    return fd;
  }
  void request_progress() { detail::check(etcdc_watch_request_progress(w_)); }
  void reset() noexcept {
    if (w_) etcdc_watch_free(std::exchange(w_, nullptr));
  }

 private:
  etcdc_watch* w_;
};

/// A kept lease's state change (a view, valid during the callback).
class LeaseEvent {
 public:
  explicit LeaseEvent(const etcdc_lease_event* e) noexcept : e_(e) {}
  int64_t id() const noexcept { return etcdc_lease_event_id(e_); }
  etcdc_lease_state state() const noexcept { return etcdc_lease_event_state(e_); }
  int64_t ttl() const noexcept { return etcdc_lease_event_ttl(e_); }
  std::string_view reason() const noexcept { return etcdc_lease_event_reason(e_); }

 private:
  const etcdc_lease_event* e_;
};

/// Keeps leases alive until destroyed (destroying revokes nothing).
class LeaseKeeper {
 public:
  explicit LeaseKeeper(etcdc_lease_keeper* k) noexcept : k_(k) {}
  LeaseKeeper(LeaseKeeper&& o) noexcept : k_(std::exchange(o.k_, nullptr)) {}
  LeaseKeeper& operator=(LeaseKeeper&& o) noexcept {
    if (this != &o) {
      reset();
      k_ = std::exchange(o.k_, nullptr);
    }
    return *this;
  }
  LeaseKeeper(const LeaseKeeper&) = delete;
  LeaseKeeper& operator=(const LeaseKeeper&) = delete;
  ~LeaseKeeper() { reset(); }
  void add(int64_t lease) { detail::check(etcdc_lease_keeper_add(k_, lease)); }
  void remove(int64_t lease) { detail::check(etcdc_lease_keeper_remove(k_, lease)); }
  void reset() noexcept {
    if (k_) etcdc_lease_keeper_free(std::exchange(k_, nullptr));
  }

 private:
  etcdc_lease_keeper* k_;
};

/// A granted lease.
struct Lease {
  int64_t id;
  int64_t ttl;
};

/// Options for Client::connect.
struct ClientOptions {
  int64_t connect_timeout_ms = 0;  // 0: etcdc's default (2 s)
  int64_t timeout_ms = 0;          // 0: etcdc's default (5 s)
};

namespace detail {
template <typename Arg, typename Fn>
struct Trampoline {
  static void call(void* user_data, const Arg* arg) noexcept {
    try {
      (*static_cast<Fn*>(user_data))(arg);
    } catch (...) {
      // Nothing may unwind into C. The callback's own error handling is its business.
    }
  }
  static void drop(void* user_data) noexcept { delete static_cast<Fn*>(user_data); }
};
}  // namespace detail

/// A client of an etcd cluster. Thread-safe; move-only.
class Client {
 public:
  /// Connects to "http://host:port[,http://host:port...]". Connections are lazy: an
  /// unreachable cluster shows in the first call.
  static Client connect(const std::string& endpoints, ClientOptions opts = {}) {
    detail::Owned<etcdc_client_options, etcdc_client_options_free> o(detail::not_null(etcdc_client_options_new()));
    if (opts.connect_timeout_ms) detail::check(etcdc_client_options_set_connect_timeout_ms(o.get(), opts.connect_timeout_ms));
    if (opts.timeout_ms) detail::check(etcdc_client_options_set_timeout_ms(o.get(), opts.timeout_ms));
    etcdc_client* c = nullptr;
    detail::check(etcdc_client_connect(endpoints.c_str(), o.get(), &c));
    return Client(c);
  }
  Client(Client&& o) noexcept : c_(std::exchange(o.c_, nullptr)) {}
  Client& operator=(Client&& o) noexcept {
    if (this != &o) {
      if (c_) etcdc_client_free(c_);
      c_ = std::exchange(o.c_, nullptr);
    }
    return *this;
  }
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;
  ~Client() {
    if (c_) etcdc_client_free(c_);
  }

  PutResult put(std::string_view key, std::string_view value, const PutOptions* o = nullptr) {
    etcdc_put_result* r = nullptr;
    detail::check(etcdc_put(c_, detail::bytes(key), key.size(), detail::bytes(value), value.size(), o ? o->get() : nullptr, &r));
    return PutResult(r);
  }
  PutResult put(std::string_view key, std::string_view value, const PutOptions& o) { return put(key, value, &o); }

  GetResult get(std::string_view key, const GetOptions* o = nullptr) {
    etcdc_get_result* r = nullptr;
    detail::check(etcdc_get(c_, detail::bytes(key), key.size(), o ? o->get() : nullptr, &r));
    return GetResult(r);
  }
  GetResult get(std::string_view key, const GetOptions& o) { return get(key, &o); }

  /// The value at `key`, or nullopt when there is none.
  std::optional<std::string> value(std::string_view key) {
    GetResult r = get(key);
    if (r.empty()) return std::nullopt;
    return std::string(r[0].value());
  }

  DeleteResult del(std::string_view key, const DeleteOptions* o = nullptr) {
    etcdc_delete_result* r = nullptr;
    detail::check(etcdc_delete(c_, detail::bytes(key), key.size(), o ? o->get() : nullptr, &r));
    return DeleteResult(r);
  }
  DeleteResult del(std::string_view key, const DeleteOptions& o) { return del(key, &o); }

  TxnResult commit(const Txn& txn) {
    etcdc_txn_result* r = nullptr;
    detail::check(etcdc_txn_commit(c_, txn.get(), &r));
    return TxnResult(r);
  }

  /// Compare-and-swap: false (nothing written) when the current value is not `expected`
  /// (or, with nullopt, when the key exists).
  bool cas(std::string_view key, std::optional<std::string_view> expected, std::string_view value) {
    etcdc_status s = etcdc_cas(c_, detail::bytes(key), key.size(), expected ? detail::bytes(*expected) : nullptr,
                               expected ? expected->size() : 0, detail::bytes(value), value.size(), nullptr, nullptr);
    if (s == ETCDC_ERR_COMPARE_FAILED) return false;
    detail::check(s);
    return true;
  }

  void compact(int64_t revision, bool physical = false, int64_t timeout_ms = 0) {
    detail::check(etcdc_compact(c_, revision, physical, timeout_ms));
  }

  Lease lease_grant(int64_t ttl, int64_t id = 0, int64_t timeout_ms = 0) {
    Lease l{0, 0};
    detail::check(etcdc_lease_grant(c_, ttl, id, timeout_ms, &l.id, &l.ttl));
    return l;
  }
  void lease_revoke(int64_t id, int64_t timeout_ms = 0) { detail::check(etcdc_lease_revoke(c_, id, timeout_ms)); }
  /// Seconds left on the lease (throws ETCDC_ERR_NOT_FOUND once it is gone).
  int64_t lease_ttl(int64_t id, int64_t timeout_ms = 0) {
    etcdc_lease_info* info = nullptr;
    detail::check(etcdc_lease_time_to_live(c_, id, false, timeout_ms, &info));
    detail::Owned<etcdc_lease_info, etcdc_lease_info_free> own(info);
    return etcdc_lease_info_ttl(info);
  }

  /// Watches with a callback on etcdc's event thread.
  Watch watch(std::string_view key, const WatchOptions* o, std::function<void(const WatchResponse&)> fn) {
    using Fn = std::function<void(const etcdc_watch_response*)>;
    auto* holder = new Fn([fn = std::move(fn)](const etcdc_watch_response* r) { fn(WatchResponse(r)); });
    etcdc_watch_callback cb{&detail::Trampoline<etcdc_watch_response, Fn>::call,
                            &detail::Trampoline<etcdc_watch_response, Fn>::drop, holder};
    etcdc_watch* w = nullptr;
    detail::check(etcdc_watch_start(c_, detail::bytes(key), key.size(), o ? o->get() : nullptr, &cb, &w));
    return Watch(w);
  }
  /// Watches in the pull form (Watch::next, Watch::fd).
  Watch watch(std::string_view key, const WatchOptions* o = nullptr) {
    etcdc_watch* w = nullptr;
    detail::check(etcdc_watch_start(c_, detail::bytes(key), key.size(), o ? o->get() : nullptr, nullptr, &w));
    return Watch(w);
  }

  /// A lease keeper reporting state changes to `fn` on etcdc's event thread.
  LeaseKeeper keeper(std::function<void(const LeaseEvent&)> fn) {
    using Fn = std::function<void(const etcdc_lease_event*)>;
    auto* holder = new Fn([fn = std::move(fn)](const etcdc_lease_event* e) { fn(LeaseEvent(e)); });
    etcdc_lease_callback cb{&detail::Trampoline<etcdc_lease_event, Fn>::call,
                            &detail::Trampoline<etcdc_lease_event, Fn>::drop, holder};
    etcdc_lease_keeper* k = nullptr;
    detail::check(etcdc_lease_keeper_start(c_, &cb, &k));
    return LeaseKeeper(k);
  }

  etcdc_client* handle() const noexcept { return c_; }

 private:
  explicit Client(etcdc_client* c) noexcept : c_(c) {}
  etcdc_client* c_;
};

}  // namespace etcdc

#endif  // ETCDC_HPP

// etcdc.hpp: header-only C++17 RAII wrapper over the etcdc C ABI (etcdc.h).
//
// Every handle is a move-only owner that frees itself; results are owners whose views
// (KeyValue, Event, std::string_view) borrow from them, and a view cannot be taken from a
// temporary result (those accessors are deleted on rvalues), so it cannot dangle. Results and
// responses iterate with range-for. Failures throw etcdc::Error carrying the status and
// etcd's message. Callbacks are std::function, run on etcdc's event thread through noexcept
// trampolines: an exception escaping a callback is caught and dropped. Enumerations are
// enum classes (etcdc::Status, etcdc::LeaseState, ...).
#ifndef ETCDC_HPP
#define ETCDC_HPP

#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "etcdc.h"

namespace etcdc {

/// etcdc_status as an enum class.
enum class Status : int32_t {
  Ok = ETCDC_OK,
  InvalidArgument = ETCDC_ERR_INVALID_ARGUMENT,
  NotFound = ETCDC_ERR_NOT_FOUND,
  CompareFailed = ETCDC_ERR_COMPARE_FAILED,
  Compacted = ETCDC_ERR_COMPACTED,
  FutureRevision = ETCDC_ERR_FUTURE_REVISION,
  TooLarge = ETCDC_ERR_TOO_LARGE,
  TooManyOps = ETCDC_ERR_TOO_MANY_OPS,
  Unavailable = ETCDC_ERR_UNAVAILABLE,
  Timeout = ETCDC_ERR_TIMEOUT,
  Canceled = ETCDC_ERR_CANCELED,
  NoLeader = ETCDC_ERR_NO_LEADER,
  Permission = ETCDC_ERR_PERMISSION,
  Auth = ETCDC_ERR_AUTH,
  NoSpace = ETCDC_ERR_NO_SPACE,
  Panic = ETCDC_ERR_PANIC,
  Forked = ETCDC_ERR_FORKED,
  TooManyRequests = ETCDC_ERR_TOO_MANY_REQUESTS,
  FailedPrecondition = ETCDC_ERR_FAILED_PRECONDITION,
  DataLoss = ETCDC_ERR_DATA_LOSS,
  Unsupported = ETCDC_ERR_UNSUPPORTED,
  Internal = ETCDC_ERR_INTERNAL,
  Closed = ETCDC_ERR_CLOSED,
};

enum class SortTarget : etcdc_sort_target {
  Key = ETCDC_SORT_BY_KEY,
  Version = ETCDC_SORT_BY_VERSION,
  CreateRevision = ETCDC_SORT_BY_CREATE_REVISION,
  ModRevision = ETCDC_SORT_BY_MOD_REVISION,
  Value = ETCDC_SORT_BY_VALUE,
};
enum class SortOrder : etcdc_sort_order { None = ETCDC_SORT_NONE, Ascend = ETCDC_SORT_ASCEND, Descend = ETCDC_SORT_DESCEND };
enum class Cmp : etcdc_compare_op {
  Equal = ETCDC_CMP_EQUAL,
  Greater = ETCDC_CMP_GREATER,
  Less = ETCDC_CMP_LESS,
  NotEqual = ETCDC_CMP_NOT_EQUAL,
};
enum class Branch : etcdc_txn_branch { Then = ETCDC_TXN_THEN, Else = ETCDC_TXN_ELSE };
enum class OpType { Get = ETCDC_OP_GET, Put = ETCDC_OP_PUT, Delete = ETCDC_OP_DELETE, Txn = ETCDC_OP_TXN };
enum class WatchKind {
  Events = ETCDC_WATCH_EVENTS,
  Progress = ETCDC_WATCH_PROGRESS,
  Compacted = ETCDC_WATCH_COMPACTED,
  Canceled = ETCDC_WATCH_CANCELED,
};
enum class EventType { Put = ETCDC_EVENT_PUT, Delete = ETCDC_EVENT_DELETE };
enum class LeaseState { Alive = ETCDC_LEASE_ALIVE, Reconnecting = ETCDC_LEASE_RECONNECTING, Lost = ETCDC_LEASE_LOST };

/// A status's name ("ETCDC_ERR_TIMEOUT"); static.
inline const char* to_string(Status s) noexcept { return etcdc_status_str(static_cast<int32_t>(s)); }

/// A failed call: the status and the message etcdc_last_error() gave for it.
class Error : public std::runtime_error {
 public:
  Error(etcdc_status status, const std::string& message)
      : std::runtime_error(std::string(etcdc_status_str(status)) + ": " + message), status_(status) {}
  Status status() const noexcept { return static_cast<Status>(status_); }

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

/// Iterates any container with size() and operator[] (by index, yielding views).
template <typename Container, typename Item>
class IndexIterator {
 public:
  IndexIterator(const Container* c, size_t i) noexcept : c_(c), i_(i) {}
  Item operator*() const noexcept { return (*c_)[i_]; }
  IndexIterator& operator++() noexcept {
    ++i_;
    return *this;
  }
  bool operator!=(const IndexIterator& o) const noexcept { return i_ != o.i_; }
  bool operator==(const IndexIterator& o) const noexcept { return i_ == o.i_; }

 private:
  const Container* c_;
  size_t i_;
};
}  // namespace detail

/// The header of a response, copied out of it (safe to keep, also from a temporary).
class Header {
 public:
  Header() = default;
  static Header of(const etcdc_header* h) noexcept {
    Header out;
    out.revision_ = etcdc_header_revision(h);
    out.cluster_id_ = etcdc_header_cluster_id(h);
    out.member_id_ = etcdc_header_member_id(h);
    out.raft_term_ = etcdc_header_raft_term(h);
    return out;
  }
  int64_t revision() const noexcept { return revision_; }
  uint64_t cluster_id() const noexcept { return cluster_id_; }
  uint64_t member_id() const noexcept { return member_id_; }
  uint64_t raft_term() const noexcept { return raft_term_; }

 private:
  int64_t revision_ = 0;
  uint64_t cluster_id_ = 0;
  uint64_t member_id_ = 0;
  uint64_t raft_term_ = 0;
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

/// The keys a get returned. Views (KeyValue) live as long as this object; none can be taken
/// from a temporary GetResult.
class GetResult {
 public:
  using iterator = detail::IndexIterator<GetResult, KeyValue>;
  explicit GetResult(etcdc_get_result* r) noexcept : r_(r) {}
  Header header() const noexcept { return Header::of(etcdc_get_result_header(r_.get())); }
  size_t size() const noexcept { return etcdc_get_result_len(r_.get()); }
  bool empty() const noexcept { return size() == 0; }
  KeyValue operator[](size_t i) const& noexcept { return KeyValue(etcdc_get_result_kv(r_.get(), i)); }
  KeyValue operator[](size_t i) const&& = delete;
  iterator begin() const& noexcept { return iterator(this, 0); }
  iterator end() const& noexcept { return iterator(this, size()); }
  iterator begin() const&& = delete;
  iterator end() const&& = delete;
  int64_t count() const noexcept { return etcdc_get_result_count(r_.get()); }
  bool more() const noexcept { return etcdc_get_result_more(r_.get()); }

 private:
  detail::Owned<etcdc_get_result, etcdc_get_result_free> r_;
};

/// What a put returned.
class PutResult {
 public:
  explicit PutResult(etcdc_put_result* r) noexcept : r_(r), view_(r) {}
  /// A view of a put result inside a transaction result.
  static PutResult view(const etcdc_put_result* r) noexcept { return PutResult(r, nullptr); }
  /// A moved-from result is empty (header 0, no prev_kv), never a view of the moved one.
  PutResult(PutResult&& o) noexcept : r_(std::move(o.r_)), view_(std::exchange(o.view_, nullptr)) {}
  PutResult& operator=(PutResult&& o) noexcept {
    r_ = std::move(o.r_);
    view_ = std::exchange(o.view_, nullptr);
    return *this;
  }
  Header header() const noexcept { return Header::of(etcdc_put_result_header(view_)); }
  std::optional<KeyValue> prev_kv() const& noexcept {
    const etcdc_kv* kv = etcdc_put_result_prev_kv(view_);
    return kv ? std::optional<KeyValue>(KeyValue(kv)) : std::nullopt;
  }
  std::optional<KeyValue> prev_kv() const&& = delete;

 private:
  PutResult(const etcdc_put_result* r, std::nullptr_t) noexcept : view_(r) {}
  detail::Owned<etcdc_put_result, etcdc_put_result_free> r_;
  const etcdc_put_result* view_;
};

/// What a delete returned.
class DeleteResult {
 public:
  explicit DeleteResult(etcdc_delete_result* r) noexcept : r_(r), view_(r) {}
  /// A view of a delete result inside a transaction result.
  static DeleteResult view(const etcdc_delete_result* r) noexcept { return DeleteResult(r, nullptr); }
  /// A moved-from result is empty (header 0, nothing deleted), never a view of the moved one.
  DeleteResult(DeleteResult&& o) noexcept : r_(std::move(o.r_)), view_(std::exchange(o.view_, nullptr)) {}
  DeleteResult& operator=(DeleteResult&& o) noexcept {
    r_ = std::move(o.r_);
    view_ = std::exchange(o.view_, nullptr);
    return *this;
  }
  Header header() const noexcept { return Header::of(etcdc_delete_result_header(view_)); }
  int64_t deleted() const noexcept { return etcdc_delete_result_deleted(view_); }
  size_t prev_size() const noexcept { return etcdc_delete_result_prev_len(view_); }
  KeyValue prev(size_t i) const& noexcept { return KeyValue(etcdc_delete_result_prev_kv(view_, i)); }
  KeyValue prev(size_t i) const&& = delete;

 private:
  DeleteResult(const etcdc_delete_result* r, std::nullptr_t) noexcept : view_(r) {}
  detail::Owned<etcdc_delete_result, etcdc_delete_result_free> r_;
  const etcdc_delete_result* view_;
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
  GetOptions& sort(SortTarget target, SortOrder order) {
    detail::check(etcdc_get_options_set_sort(o_.get(), static_cast<etcdc_sort_target>(target),
                                             static_cast<etcdc_sort_order>(order)));
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

/// Options for put (and puts in a transaction, cas and create). Setters chain.
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
  Txn& put(Branch b, std::string_view key, std::string_view value, const PutOptions* o = nullptr) {
    detail::check(etcdc_txn_put(t_.get(), static_cast<etcdc_txn_branch>(b), detail::bytes(key), key.size(),
                                detail::bytes(value), value.size(), o ? o->get() : nullptr));
    return *this;
  }
  Txn& get(Branch b, std::string_view key, const GetOptions* o = nullptr) {
    detail::check(
        etcdc_txn_get(t_.get(), static_cast<etcdc_txn_branch>(b), detail::bytes(key), key.size(), o ? o->get() : nullptr));
    return *this;
  }
  Txn& del(Branch b, std::string_view key, const DeleteOptions* o = nullptr) {
    detail::check(
        etcdc_txn_delete(t_.get(), static_cast<etcdc_txn_branch>(b), detail::bytes(key), key.size(), o ? o->get() : nullptr));
    return *this;
  }
  /// Adds `nested`, which is consumed.
  Txn& txn(Branch b, Txn&& nested) {
    detail::check(etcdc_txn_txn(t_.get(), static_cast<etcdc_txn_branch>(b), nested.t_.release()));
    return *this;
  }
  Txn& then_put(std::string_view k, std::string_view v, const PutOptions* o = nullptr) { return put(Branch::Then, k, v, o); }
  Txn& then_get(std::string_view k, const GetOptions* o = nullptr) { return get(Branch::Then, k, o); }
  Txn& then_delete(std::string_view k, const DeleteOptions* o = nullptr) { return del(Branch::Then, k, o); }
  Txn& else_put(std::string_view k, std::string_view v, const PutOptions* o = nullptr) { return put(Branch::Else, k, v, o); }
  Txn& else_get(std::string_view k, const GetOptions* o = nullptr) { return get(Branch::Else, k, o); }
  Txn& else_delete(std::string_view k, const DeleteOptions* o = nullptr) { return del(Branch::Else, k, o); }
  Txn& timeout_ms(int64_t ms) { detail::check(etcdc_txn_set_timeout_ms(t_.get(), ms)); return *this; }
  const etcdc_txn* get() const noexcept { return t_.get(); }

 private:
  detail::Owned<etcdc_txn, etcdc_txn_free> t_;
};

/// A transaction's outcome. Per-operation views borrow from it and cannot be taken from a
/// temporary TxnResult.
class TxnResult {
 public:
  explicit TxnResult(etcdc_txn_result* r) noexcept : r_(r), view_(r) {}
  Header header() const noexcept { return Header::of(etcdc_txn_result_header(view_)); }
  bool succeeded() const noexcept { return etcdc_txn_result_succeeded(view_); }
  size_t size() const noexcept { return etcdc_txn_result_len(view_); }
  OpType type(size_t i) const {
    etcdc_op_type t;
    detail::check(etcdc_txn_result_op_type(view_, i, &t));
    return static_cast<OpType>(t);
  }
  /// The i-th operation's key-values, when it was a get.
  std::vector<KeyValue> get(size_t i) const& {
    std::vector<KeyValue> out;
    const etcdc_get_result* g = etcdc_txn_result_get(view_, i);
    for (size_t j = 0, n = etcdc_get_result_len(g); j < n; ++j) out.emplace_back(etcdc_get_result_kv(g, j));
    return out;
  }
  std::vector<KeyValue> get(size_t i) const&& = delete;
  /// The i-th operation's put result, when it was a put (a view into this result).
  std::optional<PutResult> put(size_t i) const& noexcept {
    const etcdc_put_result* p = etcdc_txn_result_put(view_, i);
    return p ? std::optional<PutResult>(PutResult::view(p)) : std::nullopt;
  }
  std::optional<PutResult> put(size_t i) const&& = delete;
  /// The i-th operation's delete result, when it was a delete (a view into this result).
  std::optional<DeleteResult> del(size_t i) const& noexcept {
    const etcdc_delete_result* d = etcdc_txn_result_delete(view_, i);
    return d ? std::optional<DeleteResult>(DeleteResult::view(d)) : std::nullopt;
  }
  std::optional<DeleteResult> del(size_t i) const&& = delete;
  /// The i-th operation's nested transaction, when it was one (a view into this result).
  TxnResult nested(size_t i) const& noexcept { return TxnResult(view_, etcdc_txn_result_txn(view_, i)); }
  TxnResult nested(size_t i) const&& = delete;

 private:
  TxnResult(const etcdc_txn_result*, const etcdc_txn_result* nested) noexcept : view_(nested) {}
  detail::Owned<etcdc_txn_result, etcdc_txn_result_free> r_;
  const etcdc_txn_result* view_;
};

/// One change of a key, borrowed from its WatchResponse.
class Event {
 public:
  explicit Event(const etcdc_event* e) noexcept : e_(e) {}
  EventType type() const noexcept { return static_cast<EventType>(etcdc_event_type(e_)); }
  bool is_put() const noexcept { return type() == EventType::Put; }
  KeyValue kv() const noexcept { return KeyValue(etcdc_event_kv(e_)); }
  std::optional<KeyValue> prev_kv() const noexcept {
    const etcdc_kv* kv = etcdc_event_prev_kv(e_);
    return kv ? std::optional<KeyValue>(KeyValue(kv)) : std::nullopt;
  }

 private:
  const etcdc_event* e_;
};

class OwnedWatchResponse;

/// One delivery of a watch: a view, valid during the callback (keep it with clone()).
class WatchResponse {
 public:
  using iterator = detail::IndexIterator<WatchResponse, Event>;
  explicit WatchResponse(const etcdc_watch_response* r) noexcept : r_(r) {}
  WatchKind kind() const noexcept { return static_cast<WatchKind>(etcdc_watch_response_kind(r_)); }
  Header header() const noexcept { return Header::of(etcdc_watch_response_header(r_)); }
  int64_t revision() const noexcept { return header().revision(); }
  int64_t compact_revision() const noexcept { return etcdc_watch_response_compact_revision(r_); }
  /// Ok, except on the last response of a watch etcdc could not go on with.
  Status status() const noexcept { return static_cast<Status>(etcdc_watch_response_status(r_)); }
  std::string_view reason() const& noexcept { return etcdc_watch_response_reason(r_); }
  std::string_view reason() const&& = delete;
  size_t size() const noexcept { return etcdc_watch_response_len(r_); }
  Event operator[](size_t i) const& noexcept { return Event(etcdc_watch_response_event(r_, i)); }
  Event operator[](size_t i) const&& = delete;
  iterator begin() const& noexcept { return iterator(this, 0); }
  iterator end() const& noexcept { return iterator(this, size()); }
  iterator begin() const&& = delete;
  iterator end() const&& = delete;
  /// A copy that owns its data, to keep past the callback.
  inline OwnedWatchResponse clone() const;

 protected:
  const etcdc_watch_response* r_;
};

/// A pulled or cloned watch response that owns its data.
class OwnedWatchResponse : public WatchResponse {
 public:
  explicit OwnedWatchResponse(etcdc_watch_response* r) noexcept : WatchResponse(r), own_(r) {}

 private:
  detail::Owned<etcdc_watch_response, etcdc_watch_response_free> own_;
};

inline OwnedWatchResponse WatchResponse::clone() const {
  return OwnedWatchResponse(detail::not_null(etcdc_watch_response_clone(r_)));
}

/// Options for Client::watch. Setters chain.
class CompletionQueue;

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
  WatchOptions& queue_limit(uint32_t responses) {
    detail::check(etcdc_watch_options_set_queue_limit(o_.get(), responses));
    return *this;
  }
  WatchOptions& timeout_ms(int64_t ms) { detail::check(etcdc_watch_options_set_timeout_ms(o_.get(), ms)); return *this; }
  /// Runs the watch on the thread that drives `q` (a CompletionQueue::driven()); see
  /// etcdc_watch_options_set_queue.
  WatchOptions& queue(const CompletionQueue& q);
  const etcdc_watch_options* get() const noexcept { return o_.get(); }

 private:
  detail::Owned<etcdc_watch_options, etcdc_watch_options_free> o_;
};

namespace detail {
/// A move-only owner of a C stream handle (etcdc_watch, etcdc_lease_keeper).
template <typename H, etcdc_status (*Free)(H*)>
class StreamOwner {
 public:
  explicit StreamOwner(H* h) noexcept : h_(h) {}
  StreamOwner(StreamOwner&& o) noexcept : h_(std::exchange(o.h_, nullptr)) {}
  StreamOwner& operator=(StreamOwner&& o) noexcept {
    if (this != &o) {
      reset();
      h_ = std::exchange(o.h_, nullptr);
    }
    return *this;
  }
  StreamOwner(const StreamOwner&) = delete;
  StreamOwner& operator=(const StreamOwner&) = delete;
  ~StreamOwner() { reset(); }
  /// Frees the handle: waits for a running callback (except from inside it); a thread
  /// waiting in next() wakes with Status::Closed.
  void reset() noexcept {
    if (h_) Free(std::exchange(h_, nullptr));
  }

 protected:
  H* h_;
};
}  // namespace detail

/// A running watch; destroying it cancels it.
class Watch : public detail::StreamOwner<etcdc_watch, etcdc_watch_free> {
 public:
  using StreamOwner::StreamOwner;
  /// Pull form: the next response within timeout_ms, or nullopt on timeout. Throws
  /// etcdc::Error with Status::Closed once the watch has ended.
  std::optional<OwnedWatchResponse> next(int64_t timeout_ms) {
    etcdc_watch_response* r = nullptr;
    etcdc_status s = etcdc_watch_next(h_, timeout_ms, &r);
    if (s == ETCDC_ERR_TIMEOUT) return std::nullopt;
    detail::check(s);
    return OwnedWatchResponse(r);
  }
  /// Pull form: readable while a response is waiting.
  int fd() const {
    int fd = -1;
    detail::check(etcdc_watch_fd(h_, &fd));
    return fd;
  }
  void request_progress() { detail::check(etcdc_watch_request_progress(h_)); }
  const etcdc_watch* handle() const noexcept { return h_; }
};

/// A kept lease's state change: a view during the callback; owned when pulled.
class LeaseEvent {
 public:
  explicit LeaseEvent(const etcdc_lease_event* e) noexcept : e_(e) {}
  /// The lease; 0 on the last event of a keeper that stopped by itself (see status()).
  int64_t id() const noexcept { return etcdc_lease_event_id(e_); }
  LeaseState state() const noexcept { return static_cast<LeaseState>(etcdc_lease_event_state(e_)); }
  int64_t ttl() const noexcept { return etcdc_lease_event_ttl(e_); }
  std::string_view reason() const noexcept { return etcdc_lease_event_reason(e_); }
  Status status() const noexcept { return static_cast<Status>(etcdc_lease_event_status(e_)); }

 protected:
  const etcdc_lease_event* e_;
};

/// A pulled lease event that owns its data.
class OwnedLeaseEvent : public LeaseEvent {
 public:
  explicit OwnedLeaseEvent(etcdc_lease_event* e) noexcept : LeaseEvent(e), own_(e) {}

 private:
  detail::Owned<etcdc_lease_event, etcdc_lease_event_free> own_;
};

/// Keeps leases alive until destroyed (destroying revokes nothing).
class LeaseKeeper : public detail::StreamOwner<etcdc_lease_keeper, etcdc_lease_keeper_free> {
 public:
  using StreamOwner::StreamOwner;
  void add(int64_t lease) { detail::check(etcdc_lease_keeper_add(h_, lease)); }
  void remove(int64_t lease) { detail::check(etcdc_lease_keeper_remove(h_, lease)); }
  /// Pull form: the next state change within timeout_ms, or nullopt on timeout.
  std::optional<OwnedLeaseEvent> next(int64_t timeout_ms) {
    etcdc_lease_event* e = nullptr;
    etcdc_status s = etcdc_lease_keeper_next(h_, timeout_ms, &e);
    if (s == ETCDC_ERR_TIMEOUT) return std::nullopt;
    detail::check(s);
    return OwnedLeaseEvent(e);
  }
  /// Pull form: readable while a state change is waiting.
  int fd() const {
    int fd = -1;
    detail::check(etcdc_lease_keeper_fd(h_, &fd));
    return fd;
  }
};

/// A granted lease.
struct Lease {
  int64_t id;
  int64_t ttl;
};

/// A lease's remaining time and, when asked, its keys.
struct LeaseInfo {
  int64_t ttl = 0;
  int64_t granted_ttl = 0;
  std::vector<std::string> keys;
};

/// One member of the cluster.
struct Member {
  uint64_t id = 0;
  std::string name;
  std::vector<std::string> peer_urls;
  std::vector<std::string> client_urls;
  bool learner = false;
};

/// One member's status.
struct EndpointStatus {
  Header header;
  std::string version;
  int64_t db_size = 0;
  int64_t db_size_in_use = 0;
  uint64_t leader = 0;
  uint64_t raft_index = 0;
  uint64_t raft_term = 0;
  uint64_t raft_applied_index = 0;
  bool learner = false;
};

namespace detail {
inline std::vector<Member> members_of(const etcdc_member_list* raw) {
  std::vector<Member> out;
  for (size_t i = 0, n = etcdc_member_list_len(raw); i < n; ++i) {
    Member m;
    m.id = etcdc_member_list_id(raw, i);
    m.name = etcdc_member_list_name(raw, i);
    m.learner = etcdc_member_list_is_learner(raw, i);
    for (size_t j = 0, k = etcdc_member_list_peer_urls_len(raw, i); j < k; ++j)
      m.peer_urls.emplace_back(etcdc_member_list_peer_url(raw, i, j));
    for (size_t j = 0, k = etcdc_member_list_client_urls_len(raw, i); j < k; ++j)
      m.client_urls.emplace_back(etcdc_member_list_client_url(raw, i, j));
    out.push_back(std::move(m));
  }
  return out;
}

inline EndpointStatus status_of(const etcdc_endpoint_status* raw) {
  EndpointStatus out;
  out.header = Header::of(etcdc_endpoint_status_header(raw));
  out.version = etcdc_endpoint_status_version(raw);
  out.db_size = etcdc_endpoint_status_db_size(raw);
  out.db_size_in_use = etcdc_endpoint_status_db_size_in_use(raw);
  out.leader = etcdc_endpoint_status_leader(raw);
  out.raft_index = etcdc_endpoint_status_raft_index(raw);
  out.raft_term = etcdc_endpoint_status_raft_term(raw);
  out.raft_applied_index = etcdc_endpoint_status_raft_applied_index(raw);
  out.learner = etcdc_endpoint_status_is_learner(raw);
  return out;
}

inline std::string bytes_of(const uint8_t* p, size_t n) { return p ? std::string(reinterpret_cast<const char*>(p), n) : std::string(); }
}  // namespace detail

/// Options for Client::connect.
struct ClientOptions {
  int64_t connect_timeout_ms = 0;  // 0: etcdc's default (2 s)
  int64_t timeout_ms = 0;          // 0: etcdc's default (5 s)
  // TLS (https:// endpoints), PEM files read at connect: see etcdc_client_options_set_tls_files.
  std::string tls_ca_file;         // empty: the system's roots
  std::string tls_cert_file;       // with tls_key_file, for servers that ask for a client certificate
  std::string tls_key_file;
  std::string tls_server_name;     // empty: the endpoint's host
  // A user for clusters with authentication on: see etcdc_client_options_set_user.
  std::string user;                // empty: none (or the client certificate's common name)
  std::string password;
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

class Node;

/// A client of an etcd cluster. Thread-safe; move-only.
class Client {
 public:
  /// Connects to "http://host:port[,http://host:port...]". Connections are lazy: an
  /// unreachable cluster shows in the first call.
  static Client connect(const std::string& endpoints, ClientOptions opts = {}) {
    detail::Owned<etcdc_client_options, etcdc_client_options_free> o(detail::not_null(etcdc_client_options_new()));
    if (opts.connect_timeout_ms) detail::check(etcdc_client_options_set_connect_timeout_ms(o.get(), opts.connect_timeout_ms));
    if (opts.timeout_ms) detail::check(etcdc_client_options_set_timeout_ms(o.get(), opts.timeout_ms));
    auto c_or_null = [](const std::string& s) { return s.empty() ? nullptr : s.c_str(); };
    if (!opts.tls_ca_file.empty() || !opts.tls_cert_file.empty() || !opts.tls_key_file.empty())
      detail::check(etcdc_client_options_set_tls_files(o.get(), c_or_null(opts.tls_ca_file),
                                                       c_or_null(opts.tls_cert_file), c_or_null(opts.tls_key_file)));
    if (!opts.tls_server_name.empty())
      detail::check(etcdc_client_options_set_tls_server_name(o.get(), opts.tls_server_name.c_str()));
    if (!opts.user.empty())
      detail::check(etcdc_client_options_set_user(o.get(), opts.user.c_str(), opts.password.c_str()));
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

  /// Compare-and-swap: writes only if the current value is exactly `expected`; nullopt
  /// (nothing written) otherwise. `o` may carry a lease, prev_kv or a timeout.
  std::optional<PutResult> cas(std::string_view key, std::string_view expected, std::string_view value,
                               const PutOptions* o = nullptr) {
    etcdc_put_result* r = nullptr;
    etcdc_status s = etcdc_cas(c_, detail::bytes(key), key.size(), detail::bytes(expected), expected.size(),
                               detail::bytes(value), value.size(), o ? o->get() : nullptr, &r);
    return compared(s, r);
  }
  /// Create: writes only if the key does not exist; nullopt (nothing written) otherwise.
  std::optional<PutResult> create(std::string_view key, std::string_view value, const PutOptions* o = nullptr) {
    etcdc_put_result* r = nullptr;
    etcdc_status s =
        etcdc_create(c_, detail::bytes(key), key.size(), detail::bytes(value), value.size(), o ? o->get() : nullptr, &r);
    return compared(s, r);
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
  /// Seconds left on the lease (throws Status::NotFound once it is gone).
  int64_t lease_ttl(int64_t id, int64_t timeout_ms = 0) { return lease_info(id, false, timeout_ms).ttl; }
  /// The lease's remaining and granted TTL and, with `keys`, its keys (throws
  /// Status::NotFound once it is gone).
  LeaseInfo lease_info(int64_t id, bool keys, int64_t timeout_ms = 0) {
    etcdc_lease_info* raw = nullptr;
    detail::check(etcdc_lease_time_to_live(c_, id, keys, timeout_ms, &raw));
    detail::Owned<etcdc_lease_info, etcdc_lease_info_free> info(raw);
    LeaseInfo out;
    out.ttl = etcdc_lease_info_ttl(raw);
    out.granted_ttl = etcdc_lease_info_granted_ttl(raw);
    for (size_t i = 0, n = etcdc_lease_info_keys_len(raw); i < n; ++i) {
      size_t len = 0;
      const uint8_t* k = etcdc_lease_info_key(raw, i, &len);
      out.keys.emplace_back(detail::view(k, len));
    }
    return out;
  }
  /// Every lease of the cluster.
  std::vector<int64_t> leases(int64_t timeout_ms = 0) {
    etcdc_lease_list* raw = nullptr;
    detail::check(etcdc_leases(c_, timeout_ms, &raw));
    detail::Owned<etcdc_lease_list, etcdc_lease_list_free> list(raw);
    std::vector<int64_t> out;
    for (size_t i = 0, n = etcdc_lease_list_len(raw); i < n; ++i) out.push_back(etcdc_lease_list_id(raw, i));
    return out;
  }

  /// The cluster's members.
  std::vector<Member> members(int64_t timeout_ms = 0) {
    etcdc_member_list* raw = nullptr;
    detail::check(etcdc_cluster_members(c_, timeout_ms, &raw));
    detail::Owned<etcdc_member_list, etcdc_member_list_free> list(raw);
    return detail::members_of(raw);
  }
  /// The status of the member at `endpoint` (one of the client's), or of any member ("").
  EndpointStatus status(const std::string& endpoint = "", int64_t timeout_ms = 0) {
    etcdc_endpoint_status* raw = nullptr;
    detail::check(etcdc_endpoint_status_get(c_, endpoint.empty() ? nullptr : endpoint.c_str(), timeout_ms, &raw));
    detail::Owned<etcdc_endpoint_status, etcdc_endpoint_status_free> st(raw);
    return detail::status_of(raw);
  }

  /// Watches with a callback on etcdc's event thread.
  Watch watch(std::string_view key, const WatchOptions& o, std::function<void(const WatchResponse&)> fn) {
    return watch_with(key, o.get(), std::move(fn));
  }
  Watch watch(std::string_view key, std::function<void(const WatchResponse&)> fn) {
    return watch_with(key, nullptr, std::move(fn));
  }
  /// Watches in the pull form (Watch::next, Watch::fd).
  Watch watch(std::string_view key, const WatchOptions& o) { return watch_pulled(key, o.get()); }
  Watch watch(std::string_view key) { return watch_pulled(key, nullptr); }
  /// Pointer forms, kept for earlier callers.
  Watch watch(std::string_view key, const WatchOptions* o, std::function<void(const WatchResponse&)> fn) {
    return watch_with(key, o ? o->get() : nullptr, std::move(fn));
  }
  Watch watch(std::string_view key, const WatchOptions* o) { return watch_pulled(key, o ? o->get() : nullptr); }

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
  /// A lease keeper in the pull form (LeaseKeeper::next, LeaseKeeper::fd).
  LeaseKeeper keeper() {
    etcdc_lease_keeper* k = nullptr;
    detail::check(etcdc_lease_keeper_start(c_, nullptr, &k));
    return LeaseKeeper(k);
  }

  /// What the client counted since it was created (reconnects, watch resumes, ...).
  enum class Counter {
    Reconnects = ETCDC_COUNTER_RECONNECTS,
    WatchResumes = ETCDC_COUNTER_WATCH_RESUMES,
    KeepaliveFailures = ETCDC_COUNTER_KEEPALIVE_FAILURES,
    Retries = ETCDC_COUNTER_RETRIES,
  };
  uint64_t counter(Counter which) const noexcept {
    return etcdc_client_counter(c_, static_cast<etcdc_counter>(which));
  }

  etcdc_client* handle() const noexcept { return c_; }

 private:
  friend class Node;
  explicit Client(etcdc_client* c) noexcept : c_(c) {}

  static std::optional<PutResult> compared(etcdc_status s, etcdc_put_result* r) {
    if (s == ETCDC_ERR_COMPARE_FAILED) return std::nullopt;
    detail::check(s);
    return PutResult(r);
  }
  Watch watch_with(std::string_view key, const etcdc_watch_options* o, std::function<void(const WatchResponse&)> fn) {
    using Fn = std::function<void(const etcdc_watch_response*)>;
    auto* holder = new Fn([fn = std::move(fn)](const etcdc_watch_response* r) { fn(WatchResponse(r)); });
    etcdc_watch_callback cb{&detail::Trampoline<etcdc_watch_response, Fn>::call,
                            &detail::Trampoline<etcdc_watch_response, Fn>::drop, holder};
    etcdc_watch* w = nullptr;
    detail::check(etcdc_watch_start(c_, detail::bytes(key), key.size(), o, &cb, &w));
    return Watch(w);
  }
  Watch watch_pulled(std::string_view key, const etcdc_watch_options* o) {
    etcdc_watch* w = nullptr;
    detail::check(etcdc_watch_start(c_, detail::bytes(key), key.size(), o, nullptr, &w));
    return Watch(w);
  }

  etcdc_client* c_;
};

/// Options for Node::start, in etcd's vocabulary; empty fields keep etcdc's defaults (a
/// one-member cluster in process only, data dir "default.etcd").
struct NodeOptions {
  std::string name;
  std::string data_dir;
  std::string listen_client_urls;
  std::string advertise_client_urls;
  std::string listen_peer_urls;
  std::string initial_advertise_peer_urls;
  std::string initial_cluster;
  std::string initial_cluster_state;
  std::string initial_cluster_token;
  uint64_t heartbeat_ms = 0;  // with election_ms; 0: etcd's 100 / 1000
  uint64_t election_ms = 0;
  uint64_t snapshot_count = 0;  // 0: etcd's 100000
};

/// A member of etcdc's embedded store running in this process. Destroying it stops it
/// gracefully; its data stays in its data dir. Move-only.
class Node {
 public:
  static Node start(const NodeOptions& o = {}) {
    detail::Owned<etcdc_node_options, etcdc_node_options_free> opts(detail::not_null(etcdc_node_options_new()));
    auto text = [&](etcdc_status (*set)(etcdc_node_options*, const char*), const std::string& v) {
      if (!v.empty()) detail::check(set(opts.get(), v.c_str()));
    };
    text(etcdc_node_options_set_name, o.name);
    text(etcdc_node_options_set_data_dir, o.data_dir);
    text(etcdc_node_options_set_listen_client_urls, o.listen_client_urls);
    text(etcdc_node_options_set_advertise_client_urls, o.advertise_client_urls);
    text(etcdc_node_options_set_listen_peer_urls, o.listen_peer_urls);
    text(etcdc_node_options_set_initial_advertise_peer_urls, o.initial_advertise_peer_urls);
    text(etcdc_node_options_set_initial_cluster, o.initial_cluster);
    text(etcdc_node_options_set_initial_cluster_state, o.initial_cluster_state);
    text(etcdc_node_options_set_initial_cluster_token, o.initial_cluster_token);
    if (o.heartbeat_ms || o.election_ms) detail::check(etcdc_node_options_set_timing_ms(opts.get(), o.heartbeat_ms, o.election_ms));
    if (o.snapshot_count) detail::check(etcdc_node_options_set_snapshot_count(opts.get(), o.snapshot_count));
    etcdc_node* n = nullptr;
    detail::check(etcdc_node_start(opts.get(), &n));
    return Node(n);
  }
  Node(Node&& o) noexcept : n_(std::exchange(o.n_, nullptr)) {}
  Node& operator=(Node&& o) noexcept {
    if (this != &o) {
      stop();
      n_ = std::exchange(o.n_, nullptr);
    }
    return *this;
  }
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;
  ~Node() { stop(); }

  /// A client bound to this member, in process (no socket).
  Client client(ClientOptions opts = {}) const {
    detail::Owned<etcdc_client_options, etcdc_client_options_free> o(detail::not_null(etcdc_client_options_new()));
    if (opts.timeout_ms) detail::check(etcdc_client_options_set_timeout_ms(o.get(), opts.timeout_ms));
    etcdc_client* c = nullptr;
    detail::check(etcdc_node_client(n_, o.get(), &c));
    return Client(c);
  }

  struct Status {
    uint64_t member_id = 0;
    uint64_t leader_id = 0;
    uint64_t term = 0;
    uint64_t applied_index = 0;
    bool is_leader = false;
  };
  Status status() const {
    Status s;
    detail::check(etcdc_node_status(n_, &s.member_id, &s.leader_id, &s.term, &s.applied_index, &s.is_leader));
    return s;
  }

  /// Stops the member (graceful); its data stays for a restart.
  void stop() noexcept {
    if (n_) etcdc_node_stop(std::exchange(n_, nullptr));
  }

 private:
  explicit Node(etcdc_node* n) noexcept : n_(n) {}
  etcdc_node* n_;
};

// ---- recipes: registration and discovery, sessions, mutexes, elections, queues ----

enum class RegistrationState {
  Registered = ETCDC_REGISTERED,
  Reconnecting = ETCDC_REGISTRATION_RECONNECTING,
  Lost = ETCDC_REGISTRATION_LOST,
  Conflict = ETCDC_REGISTRATION_CONFLICT,
};

/// A registration's state change (copied out of etcdc's record).
struct RegistrationEvent {
  RegistrationState state;
  int64_t lease;
  std::string reason;
  Status status;
  explicit RegistrationEvent(const etcdc_registration_event* e)
      : state(static_cast<RegistrationState>(etcdc_registration_event_state(e))),
        lease(etcdc_registration_event_lease(e)),
        reason(etcdc_registration_event_reason(e)),
        status(static_cast<Status>(etcdc_registration_event_status(e))) {}
};

struct RegistrationOptions {
  std::optional<std::string> metadata;  // any JSON; a "weight" number feeds weighted picks
  int64_t ttl_seconds = 10;
  int64_t timeout_ms = 0;  // 0: the client's
};

/// An instance kept registered under <dir>/<id>; destroying it unregisters (delete + revoke).
class Registration : public detail::StreamOwner<etcdc_registration, etcdc_registration_free> {
 public:
  using StreamOwner::StreamOwner;
  int64_t lease() const noexcept { return etcdc_registration_lease(h_); }
  void set_metadata(const std::optional<std::string>& json, int64_t timeout_ms = 0) {
    detail::check(etcdc_registration_set_metadata(h_, json ? json->c_str() : nullptr, timeout_ms));
  }
  std::optional<RegistrationEvent> next(int64_t timeout_ms) {
    etcdc_registration_event* e = nullptr;
    etcdc_status s = etcdc_registration_next(h_, timeout_ms, &e);
    if (s == ETCDC_ERR_TIMEOUT) return std::nullopt;
    detail::check(s);
    detail::Owned<etcdc_registration_event, etcdc_registration_event_free> own(e);
    return RegistrationEvent(e);
  }
  int fd() const {
    int fd = -1;
    detail::check(etcdc_registration_fd(h_, &fd));
    return fd;
  }
};

/// One registered instance (copied out of etcdc's record).
struct Instance {
  std::string id;
  std::string addr;
  std::string metadata;  // JSON text, "null" when none
  uint32_t weight = 1;
  int64_t revision = 0;
  Instance() = default;
  explicit Instance(const etcdc_instance* i)
      : id(etcdc_instance_id(i)),
        addr(etcdc_instance_addr(i)),
        metadata(etcdc_instance_metadata(i)),
        weight(etcdc_instance_weight(i)),
        revision(etcdc_instance_revision(i)) {}
};

enum class Change { Added = ETCDC_INSTANCE_ADDED, Updated = ETCDC_INSTANCE_UPDATED, Removed = ETCDC_INSTANCE_REMOVED, Ended = ETCDC_DISCOVERY_ENDED };
enum class Pick { RoundRobin = ETCDC_PICK_ROUND_ROBIN, Random = ETCDC_PICK_RANDOM, LeastInFlight = ETCDC_PICK_LEAST_IN_FLIGHT, Weighted = ETCDC_PICK_WEIGHTED };

struct DiscoveryEvent {
  Change change;
  Instance instance;
  Status status;  // for Change::Ended, why
  explicit DiscoveryEvent(const etcdc_discovery_event* e)
      : change(static_cast<Change>(etcdc_discovery_event_change(e))),
        instance(etcdc_discovery_event_instance(e)),
        status(static_cast<Status>(etcdc_discovery_event_status(e))) {}
};

/// A service directory followed; destroying it stops following.
class Discovery : public detail::StreamOwner<etcdc_discovery, etcdc_discovery_free> {
 public:
  using StreamOwner::StreamOwner;
  /// An instance by `policy`; nullopt when none is registered.
  std::optional<Instance> pick(Pick policy = Pick::RoundRobin) {
    etcdc_instance* i = nullptr;
    etcdc_status s = etcdc_discovery_pick(h_, static_cast<etcdc_pick_policy>(policy), &i);
    if (s == ETCDC_ERR_NOT_FOUND) return std::nullopt;
    detail::check(s);
    detail::Owned<etcdc_instance, etcdc_instance_free> own(i);
    return Instance(i);
  }
  void begin(const std::string& id) { detail::check(etcdc_discovery_begin(h_, id.c_str())); }
  void end(const std::string& id) { detail::check(etcdc_discovery_end(h_, id.c_str())); }
  std::vector<Instance> snapshot() const {
    etcdc_instance_list* l = nullptr;
    detail::check(etcdc_discovery_snapshot(h_, &l));
    detail::Owned<etcdc_instance_list, etcdc_instance_list_free> own(l);
    std::vector<Instance> out;
    for (size_t i = 0; i < etcdc_instance_list_len(l); i++) out.emplace_back(etcdc_instance_list_get(l, i));
    return out;
  }
  std::optional<DiscoveryEvent> next(int64_t timeout_ms) {
    etcdc_discovery_event* e = nullptr;
    etcdc_status s = etcdc_discovery_next(h_, timeout_ms, &e);
    if (s == ETCDC_ERR_TIMEOUT) return std::nullopt;
    detail::check(s);
    detail::Owned<etcdc_discovery_event, etcdc_discovery_event_free> own(e);
    return DiscoveryEvent(e);
  }
  int fd() const {
    int fd = -1;
    detail::check(etcdc_discovery_fd(h_, &fd));
    return fd;
  }
};

namespace detail {
inline etcdc_registration_options* registration_options(const RegistrationOptions& o) {
  etcdc_registration_options* r = not_null(etcdc_registration_options_new());
  Owned<etcdc_registration_options, etcdc_registration_options_free> own(r);
  check(etcdc_registration_options_set_ttl(r, o.ttl_seconds));
  if (o.metadata) check(etcdc_registration_options_set_metadata(r, o.metadata->c_str()));
  if (o.timeout_ms) check(etcdc_registration_options_set_timeout(r, o.timeout_ms));
  return own.release();
}
}  // namespace detail

/// Registers <dir>/<id> at `addr`, kept registered (again after a loss) until destroyed;
/// state changes go to `fn` on etcdc's event thread, or, without `fn`, to Registration::next.
inline Registration register_instance(Client& c, const std::string& dir, const std::string& id, const std::string& addr,
                                      const RegistrationOptions& o = {},
                                      std::function<void(const RegistrationEvent&)> fn = nullptr) {
  detail::Owned<etcdc_registration_options, etcdc_registration_options_free> opts(detail::registration_options(o));
  etcdc_registration* r = nullptr;
  if (fn) {
    using Fn = std::function<void(const etcdc_registration_event*)>;
    auto* holder = new Fn([fn = std::move(fn)](const etcdc_registration_event* e) { fn(RegistrationEvent(e)); });
    etcdc_registration_callback cb{&detail::Trampoline<etcdc_registration_event, Fn>::call,
                                   &detail::Trampoline<etcdc_registration_event, Fn>::drop, holder};
    detail::check(etcdc_register(c.handle(), dir.c_str(), id.c_str(), addr.c_str(), opts.get(), &cb, &r));
  } else {
    detail::check(etcdc_register(c.handle(), dir.c_str(), id.c_str(), addr.c_str(), opts.get(), nullptr, &r));
  }
  return Registration(r);
}

/// Follows the instances under `dir`; changes go to `fn` on etcdc's event thread, or,
/// without `fn`, to Discovery::next (and Discovery::fd for epoll).
inline Discovery discover(Client& c, const std::string& dir, std::function<void(const DiscoveryEvent&)> fn = nullptr) {
  etcdc_discovery* d = nullptr;
  if (fn) {
    using Fn = std::function<void(const etcdc_discovery_event*)>;
    auto* holder = new Fn([fn = std::move(fn)](const etcdc_discovery_event* e) { fn(DiscoveryEvent(e)); });
    etcdc_discovery_callback cb{&detail::Trampoline<etcdc_discovery_event, Fn>::call,
                                &detail::Trampoline<etcdc_discovery_event, Fn>::drop, holder};
    detail::check(etcdc_discover(c.handle(), dir.c_str(), &cb, &d));
  } else {
    detail::check(etcdc_discover(c.handle(), dir.c_str(), nullptr, &d));
  }
  return Discovery(d);
}

/// A lease kept alive for mutexes and elections; destroying it revokes the lease.
class Session : public detail::StreamOwner<etcdc_session, etcdc_session_free> {
 public:
  /// ttl_seconds 0: Go's default, 60 s. State changes are pulled with next().
  static Session start(Client& c, int64_t ttl_seconds = 0) {
    etcdc_session* s = nullptr;
    detail::check(etcdc_session_start(c.handle(), ttl_seconds, nullptr, &s));
    return Session(s);
  }
  int64_t lease() const noexcept { return etcdc_session_lease(h_); }
  std::optional<OwnedLeaseEvent> next(int64_t timeout_ms) {
    etcdc_lease_event* e = nullptr;
    etcdc_status s = etcdc_session_next(h_, timeout_ms, &e);
    if (s == ETCDC_ERR_TIMEOUT) return std::nullopt;
    detail::check(s);
    return OwnedLeaseEvent(e);
  }
  const etcdc_session* handle() const noexcept { return h_; }

 private:
  using StreamOwner::StreamOwner;
};

/// A lock of a session, interoperable with Go's concurrency.Mutex and `etcdctl lock`.
class Mutex {
 public:
  Mutex(const Session& s, std::string_view name) {
    detail::check(etcdc_mutex_new(s.handle(), detail::bytes(name), name.size(), &m_));
  }
  Mutex(Mutex&& o) noexcept : m_(std::exchange(o.m_, nullptr)) {}
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;
  Mutex& operator=(Mutex&&) = delete;
  ~Mutex() {
    if (m_) etcdc_mutex_free(m_);
  }
  /// Waits up to timeout_ms (negative: no limit); false when not taken in time.
  bool lock(int64_t timeout_ms = -1) { return taken(etcdc_mutex_lock(m_, timeout_ms), ETCDC_ERR_TIMEOUT); }
  /// Takes it if free; false when another session holds it.
  bool try_lock() { return taken(etcdc_mutex_try_lock(m_, 0), ETCDC_ERR_FAILED_PRECONDITION); }
  void unlock() { detail::check(etcdc_mutex_unlock(m_, 0)); }
  std::string_view key() const noexcept {
    size_t n = 0;
    const uint8_t* k = etcdc_mutex_key(m_, &n);
    return detail::view(k, n);
  }
  /// The fencing token while held.
  int64_t revision() const noexcept { return etcdc_mutex_revision(m_); }
  const etcdc_mutex* handle() const noexcept { return m_; }

 private:
  static bool taken(etcdc_status s, etcdc_status no) {
    if (s == no) return false;
    detail::check(s);
    return true;
  }
  etcdc_mutex* m_ = nullptr;
};

/// A leader as observed.
struct LeaderInfo {
  std::string key;
  std::string value;
  int64_t revision = 0;
  explicit LeaderInfo(const etcdc_leader* l) : revision(etcdc_leader_revision(l)) {
    size_t n = 0;
    const uint8_t* p = etcdc_leader_key(l, &n);
    key.assign(reinterpret_cast<const char*>(p), n);
    p = etcdc_leader_value(l, &n);
    value.assign(reinterpret_cast<const char*>(p), n);
  }
};

/// A candidacy in an election of a session, interoperable with Go's concurrency.Election
/// and `etcdctl elect`.
class Election {
 public:
  Election(const Session& s, std::string_view name) {
    detail::check(etcdc_election_new(s.handle(), detail::bytes(name), name.size(), &e_));
  }
  Election(Election&& o) noexcept : e_(std::exchange(o.e_, nullptr)) {}
  Election(const Election&) = delete;
  Election& operator=(const Election&) = delete;
  Election& operator=(Election&&) = delete;
  ~Election() {
    if (e_) etcdc_election_free(e_);
  }
  /// Waits to be elected up to timeout_ms (negative: no limit); false when not in time.
  bool campaign(std::string_view value, int64_t timeout_ms = -1) {
    etcdc_status s = etcdc_election_campaign(e_, detail::bytes(value), value.size(), timeout_ms);
    if (s == ETCDC_ERR_TIMEOUT) return false;
    detail::check(s);
    return true;
  }
  void proclaim(std::string_view value) { detail::check(etcdc_election_proclaim(e_, detail::bytes(value), value.size(), 0)); }
  void resign() { detail::check(etcdc_election_resign(e_, 0)); }
  const etcdc_election* handle() const noexcept { return e_; }

 private:
  etcdc_election* e_ = nullptr;
};

/// The current leader of `name`, or nullopt when there is none.
inline std::optional<LeaderInfo> leader(Client& c, std::string_view name) {
  etcdc_leader* l = nullptr;
  etcdc_status s = etcdc_election_leader(c.handle(), detail::bytes(name), name.size(), 0, &l);
  if (s == ETCDC_ERR_NOT_FOUND) return std::nullopt;
  detail::check(s);
  detail::Owned<etcdc_leader, etcdc_leader_free> own(l);
  return LeaderInfo(l);
}

/// Every leader and proclamation of an election, pulled; destroying it stops observing.
class Observer : public detail::StreamOwner<etcdc_observer, etcdc_observer_free> {
 public:
  static Observer start(Client& c, std::string_view name) {
    etcdc_observer* o = nullptr;
    detail::check(etcdc_election_observe(c.handle(), detail::bytes(name), name.size(), nullptr, &o));
    return Observer(o);
  }
  std::optional<LeaderInfo> next(int64_t timeout_ms) {
    etcdc_leader* l = nullptr;
    etcdc_status s = etcdc_observer_next(h_, timeout_ms, &l);
    if (s == ETCDC_ERR_TIMEOUT) return std::nullopt;
    detail::check(s);
    detail::Owned<etcdc_leader, etcdc_leader_free> own(l);
    return LeaderInfo(l);
  }
  int fd() const {
    int fd = -1;
    detail::check(etcdc_observer_fd(h_, &fd));
    return fd;
  }

 private:
  using StreamOwner::StreamOwner;
};

/// Appends to the ordered queue in `dir`; returns the new item's key.
inline std::string enqueue(Client& c, const std::string& dir, std::string_view value) {
  etcdc_queue_item* it = nullptr;
  detail::check(etcdc_queue_enqueue(c.handle(), dir.c_str(), detail::bytes(value), value.size(), 0, &it));
  detail::Owned<etcdc_queue_item, etcdc_queue_item_free> own(it);
  size_t n = 0;
  const uint8_t* k = etcdc_queue_item_key(it, &n);
  return std::string(reinterpret_cast<const char*>(k), n);
}

/// Takes the oldest item's value; with `wait`, waits up to timeout_ms (negative: no limit).
/// nullopt when the queue is empty (or stayed empty).
inline std::optional<std::string> dequeue(Client& c, const std::string& dir, bool wait = false, int64_t timeout_ms = 0) {
  etcdc_queue_item* it = nullptr;
  etcdc_status s = etcdc_queue_dequeue(c.handle(), dir.c_str(), wait, timeout_ms, &it);
  if (s == ETCDC_ERR_NOT_FOUND || s == ETCDC_ERR_TIMEOUT) return std::nullopt;
  detail::check(s);
  detail::Owned<etcdc_queue_item, etcdc_queue_item_free> own(it);
  size_t n = 0;
  const uint8_t* v = etcdc_queue_item_value(it, &n);
  return std::string(reinterpret_cast<const char*>(v), n);
}

// ---- asynchronous calls ----

/// What an asynchronous call returned, copied out of its completion.
struct Reply {
  Status status = Status::Ok;
  std::string message;   // why, when status is not Ok
  Header header;         // put, get, delete, txn
  std::vector<std::pair<std::string, std::string>> kvs;  // get: the key-values
  int64_t deleted = 0;   // delete
  bool succeeded = false;  // txn: which branch ran
  int64_t lease_id = 0;  // lease grant
  int64_t ttl = 0, granted_ttl = 0;                  // lease time-to-live
  std::vector<std::string> lease_keys;               // lease time-to-live with keys
  std::vector<int64_t> lease_ids;                    // leases
  std::vector<Member> members;                       // members
  std::optional<EndpointStatus> endpoint_status;     // status
  std::string item_key, item_value;                  // queue enqueue / dequeue
  std::shared_ptr<OwnedWatchResponse> watch;  // a watch's next response
  bool ok() const noexcept { return status == Status::Ok; }

  explicit Reply(const etcdc_completion* c)
      : status(static_cast<Status>(etcdc_completion_status(c))), message(etcdc_completion_message(c)) {
    if (auto* r = etcdc_completion_put_result(c)) header = Header::of(etcdc_put_result_header(r));
    if (auto* r = etcdc_completion_get_result(c)) {
      header = Header::of(etcdc_get_result_header(r));
      for (size_t i = 0; i < etcdc_get_result_len(r); i++) {
        KeyValue kv(etcdc_get_result_kv(r, i));
        kvs.emplace_back(std::string(kv.key()), std::string(kv.value()));
      }
    }
    if (auto* r = etcdc_completion_delete_result(c)) {
      header = Header::of(etcdc_delete_result_header(r));
      deleted = etcdc_delete_result_deleted(r);
    }
    if (auto* r = etcdc_completion_txn_result(c)) {
      header = Header::of(etcdc_txn_result_header(r));
      succeeded = etcdc_txn_result_succeeded(r);
    }
    lease_id = etcdc_completion_lease_id(c);
    if (auto* r = etcdc_completion_watch_response(c)) watch = std::make_shared<OwnedWatchResponse>(etcdc_watch_response_clone(r));
    if (auto* i = etcdc_completion_lease_info(c)) {
      ttl = etcdc_lease_info_ttl(i);
      granted_ttl = etcdc_lease_info_granted_ttl(i);
      for (size_t k = 0, n = etcdc_lease_info_keys_len(i); k < n; ++k) {
        size_t len = 0;
        const uint8_t* key = etcdc_lease_info_key(i, k, &len);
        lease_keys.push_back(detail::bytes_of(key, len));
      }
    }
    if (auto* l = etcdc_completion_lease_list(c))
      for (size_t k = 0, n = etcdc_lease_list_len(l); k < n; ++k) lease_ids.push_back(etcdc_lease_list_id(l, k));
    if (auto* m = etcdc_completion_member_list(c)) members = detail::members_of(m);
    if (auto* st = etcdc_completion_endpoint_status(c)) endpoint_status = detail::status_of(st);
    if (auto* it = etcdc_completion_queue_item(c)) {
      size_t n = 0;
      const uint8_t* k = etcdc_queue_item_key(it, &n);
      item_key = detail::bytes_of(k, n);
      const uint8_t* v = etcdc_queue_item_value(it, &n);
      item_value = detail::bytes_of(v, n);
    }
  }
};

/// A pulled completion: the Reply and the tag the call was started with.
struct Completion {
  void* tag;
  Reply reply;
};

/// A completion queue in the pull form, for epoll loops: start calls with it, wait on fd(),
/// take completions with next(). driven(): a queue whose remote calls run inside next(), on
/// the thread that calls it; its fd() is readable when next(0) has work (etcdc_cq_fd).
class CompletionQueue : public detail::StreamOwner<etcdc_cq, etcdc_cq_free> {
 public:
  static CompletionQueue create() {
    etcdc_cq* q = nullptr;
    detail::check(etcdc_cq_new(nullptr, &q));
    return CompletionQueue(q);
  }
  static CompletionQueue driven() {
    etcdc_cq* q = nullptr;
    detail::check(etcdc_cq_new_driven(&q));
    return CompletionQueue(q);
  }
  std::optional<Completion> next(int64_t timeout_ms) {
    etcdc_completion* c = nullptr;
    etcdc_status s = etcdc_cq_next(h_, timeout_ms, &c);
    if (s == ETCDC_ERR_TIMEOUT) return std::nullopt;
    detail::check(s);
    detail::Owned<etcdc_completion, etcdc_completion_free> own(c);
    return Completion{etcdc_completion_tag(c), Reply(c)};
  }
  int fd() const {
    int fd = -1;
    detail::check(etcdc_cq_fd(h_, &fd));
    return fd;
  }
  const etcdc_cq* handle() const noexcept { return h_; }

 private:
  using StreamOwner::StreamOwner;
};

inline WatchOptions& WatchOptions::queue(const CompletionQueue& q) {
  detail::check(etcdc_watch_options_set_queue(o_.get(), q.handle()));
  return *this;
}

namespace detail {
/// The process's queue for callback and future forms: each call's tag is its own
/// std::function, run (then deleted) on etcdc's event thread. Never freed: calls may
/// complete while statics are destroyed.
inline const etcdc_cq* callback_queue() {
  static const etcdc_cq* q = [] {
    etcdc_completion_callback cb{[](void*, const etcdc_completion* c) noexcept {
                                   auto* fn = static_cast<std::function<void(const Reply&)>*>(etcdc_completion_tag(c));
                                   try {
                                     (*fn)(Reply(c));
                                   } catch (...) {
                                   }
                                   delete fn;
                                 },
                                 nullptr, nullptr};
    etcdc_cq* out = nullptr;
    check(etcdc_cq_new(&cb, &out));
    return out;
  }();
  return q;
}

/// Starts a call whose completion runs `fn`; a call refused at once throws and runs nothing.
template <typename Start>
void start_with(std::function<void(const Reply&)> fn, Start start) {
  auto* holder = new std::function<void(const Reply&)>(std::move(fn));
  etcdc_status s = start(callback_queue(), holder);
  if (s != ETCDC_OK) {
    delete holder;
    check(s);
  }
}

template <typename Start>
std::future<Reply> start_future(Start start) {
  auto promise = std::make_shared<std::promise<Reply>>();
  std::future<Reply> f = promise->get_future();
  start_with([promise](const Reply& r) { promise->set_value(r); }, start);
  return f;
}
}  // namespace detail

/// Asynchronous calls of a client: with a CompletionQueue and a tag (pull), with a callback
/// run on etcdc's event thread, or as a std::future. Each completes exactly once; freeing
/// the client completes what is in flight with Status::Canceled.
class Async {
 public:
  explicit Async(Client& c) noexcept : c_(c.handle()) {}

  void put(std::string_view key, std::string_view value, CompletionQueue& q, void* tag) {
    detail::check(etcdc_put_async(c_, detail::bytes(key), key.size(), detail::bytes(value), value.size(), nullptr, q.handle(), tag, nullptr));
  }
  void get(std::string_view key, CompletionQueue& q, void* tag, const GetOptions* o = nullptr) {
    detail::check(etcdc_get_async(c_, detail::bytes(key), key.size(), o ? o->get() : nullptr, q.handle(), tag, nullptr));
  }
  void put(std::string_view key, std::string_view value, std::function<void(const Reply&)> fn) {
    detail::start_with(std::move(fn), [&](const etcdc_cq* q, void* tag) {
      return etcdc_put_async(c_, detail::bytes(key), key.size(), detail::bytes(value), value.size(), nullptr, q, tag, nullptr);
    });
  }
  std::future<Reply> put(std::string_view key, std::string_view value) {
    return detail::start_future([&](const etcdc_cq* q, void* tag) {
      return etcdc_put_async(c_, detail::bytes(key), key.size(), detail::bytes(value), value.size(), nullptr, q, tag, nullptr);
    });
  }
  std::future<Reply> get(std::string_view key, const GetOptions* o = nullptr) {
    return detail::start_future([&](const etcdc_cq* q, void* tag) {
      return etcdc_get_async(c_, detail::bytes(key), key.size(), o ? o->get() : nullptr, q, tag, nullptr);
    });
  }
  std::future<Reply> del(std::string_view key, const DeleteOptions* o = nullptr) {
    return detail::start_future([&](const etcdc_cq* q, void* tag) {
      return etcdc_delete_async(c_, detail::bytes(key), key.size(), o ? o->get() : nullptr, q, tag, nullptr);
    });
  }
  std::future<Reply> commit(const Txn& txn) {
    return detail::start_future([&](const etcdc_cq* q, void* tag) { return etcdc_txn_commit_async(c_, txn.get(), q, tag, nullptr); });
  }
  std::future<Reply> lease_grant(int64_t ttl_seconds) {
    return detail::start_future([&](const etcdc_cq* q, void* tag) { return etcdc_lease_grant_async(c_, ttl_seconds, 0, 0, q, tag, nullptr); });
  }
  std::future<Reply> lease_revoke(int64_t id) {
    return detail::start_future([&](const etcdc_cq* q, void* tag) { return etcdc_lease_revoke_async(c_, id, 0, q, tag, nullptr); });
  }
  std::future<Reply> lease_time_to_live(int64_t id, bool keys = false) {
    return detail::start_future([&](const etcdc_cq* q, void* tag) { return etcdc_lease_time_to_live_async(c_, id, keys, 0, q, tag, nullptr); });
  }
  std::future<Reply> leases() {
    return detail::start_future([&](const etcdc_cq* q, void* tag) { return etcdc_leases_async(c_, 0, q, tag, nullptr); });
  }
  std::future<Reply> compact(int64_t revision, bool physical = false) {
    return detail::start_future([&](const etcdc_cq* q, void* tag) { return etcdc_compact_async(c_, revision, physical, 0, q, tag, nullptr); });
  }
  std::future<Reply> members() {
    return detail::start_future([&](const etcdc_cq* q, void* tag) { return etcdc_cluster_members_async(c_, 0, q, tag, nullptr); });
  }
  std::future<Reply> status() {
    return detail::start_future([&](const etcdc_cq* q, void* tag) { return etcdc_endpoint_status_async(c_, 0, q, tag, nullptr); });
  }
  std::future<Reply> enqueue(const std::string& dir, std::string_view value) {
    return detail::start_future([&](const etcdc_cq* q, void* tag) {
      return etcdc_queue_enqueue_async(c_, dir.c_str(), detail::bytes(value), value.size(), 0, q, tag, nullptr);
    });
  }
  /// With `wait`, completes when an item arrives (or after timeout_ms; negative: no limit).
  std::future<Reply> dequeue(const std::string& dir, bool wait = false, int64_t timeout_ms = 0) {
    return detail::start_future([&](const etcdc_cq* q, void* tag) { return etcdc_queue_dequeue_async(c_, dir.c_str(), wait, timeout_ms, q, tag, nullptr); });
  }

 private:
  etcdc_client* c_;
};

/// A watch's next response as a completion into `q` with `tag` (Reply::watch): one queue's fd
/// then serves every watch and call of an epoll loop. Start the next one after it completed.
inline void next_async(Watch& w, CompletionQueue& q, void* tag) { detail::check(etcdc_watch_next_async(w.handle(), q.handle(), tag, nullptr)); }

/// Takes the lock without blocking a thread; the future's Reply is Ok once held.
inline std::future<Reply> lock_async(Mutex& m, int64_t timeout_ms = -1) {
  return detail::start_future([&](const etcdc_cq* q, void* tag) { return etcdc_mutex_lock_async(m.handle(), timeout_ms, q, tag, nullptr); });
}
inline std::future<Reply> unlock_async(Mutex& m) {
  return detail::start_future([&](const etcdc_cq* q, void* tag) { return etcdc_mutex_unlock_async(m.handle(), 0, q, tag, nullptr); });
}
/// Campaigns without blocking a thread; the future's Reply is Ok once elected.
inline std::future<Reply> campaign_async(Election& e, std::string_view value, int64_t timeout_ms = -1) {
  return detail::start_future([&](const etcdc_cq* q, void* tag) {
    return etcdc_election_campaign_async(e.handle(), detail::bytes(value), value.size(), timeout_ms, q, tag, nullptr);
  });
}
inline std::future<Reply> proclaim_async(Election& e, std::string_view value) {
  return detail::start_future([&](const etcdc_cq* q, void* tag) {
    return etcdc_election_proclaim_async(e.handle(), detail::bytes(value), value.size(), 0, q, tag, nullptr);
  });
}
inline std::future<Reply> resign_async(Election& e) {
  return detail::start_future([&](const etcdc_cq* q, void* tag) { return etcdc_election_resign_async(e.handle(), 0, q, tag, nullptr); });
}

}  // namespace etcdc

#endif  // ETCDC_HPP

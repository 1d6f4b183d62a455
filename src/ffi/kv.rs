//! Keys and values: put, get (key, prefix, range, from-key), delete, compact, their options
//! and their result objects.

use super::client::{etcdc_client, CLIENTS};
use super::guard::{
    bytes, field, free_box, guard, new_boxed, non_negative, opts_or, out, set, set_span,
    set_timeout, write_result, Spanned, Timed,
};
use super::record::{etcdc_header, etcdc_kv, header, kvs};
use super::status::etcdc_status;
use crate::error::{Error, Result};
use crate::kv::Span;
use crate::pb::etcdserverpb::*;

// ---- get ----

/// Sort by which field (`etcdc_get_options_set_sort`).
pub type etcdc_sort_target = u32;
/// Sort by key, bytewise.
pub const ETCDC_SORT_BY_KEY: etcdc_sort_target = 0;
/// Sort by version (writes since creation).
pub const ETCDC_SORT_BY_VERSION: etcdc_sort_target = 1;
/// Sort by create revision.
pub const ETCDC_SORT_BY_CREATE_REVISION: etcdc_sort_target = 2;
/// Sort by mod revision.
pub const ETCDC_SORT_BY_MOD_REVISION: etcdc_sort_target = 3;
/// Sort by value, bytewise.
pub const ETCDC_SORT_BY_VALUE: etcdc_sort_target = 4;

/// Sort order (`etcdc_get_options_set_sort`).
pub type etcdc_sort_order = u32;
/// No sorting: etcd's order (by key).
pub const ETCDC_SORT_NONE: etcdc_sort_order = 0;
/// Smallest first.
pub const ETCDC_SORT_ASCEND: etcdc_sort_order = 1;
/// Largest first.
pub const ETCDC_SORT_DESCEND: etcdc_sort_order = 2;

/// Options for `etcdc_get` and for gets inside a transaction.
#[derive(Clone, Default)]
pub struct etcdc_get_options {
    span: Span,
    req: RangeRequest,
    pub(crate) timeout_ms: i64,
}

impl Spanned for etcdc_get_options {
    fn span(&mut self) -> &mut Span {
        &mut self.span
    }
}

impl Timed for etcdc_get_options {
    fn timeout_ms(&mut self) -> &mut i64 {
        &mut self.timeout_ms
    }
}

impl etcdc_get_options {
    pub(crate) fn request(&self, key: *const u8, key_len: usize) -> Result<RangeRequest> {
        let (key, range_end) = self.span.resolve(bytes(key, key_len, "key")?)?;
        Ok(RangeRequest {
            key,
            range_end,
            ..self.req.clone()
        })
    }
}

/// The result of a get. Free with `etcdc_get_result_free`.
pub struct etcdc_get_result {
    header: etcdc_header,
    kvs: Vec<etcdc_kv>,
    more: bool,
    count: i64,
}

impl From<RangeResponse> for etcdc_get_result {
    fn from(r: RangeResponse) -> Self {
        etcdc_get_result {
            header: header(r.header),
            kvs: kvs(r.kvs),
            more: r.more,
            count: r.count,
        }
    }
}

/// New get options: one key, linearizable, latest revision, no limit. Free with
/// `etcdc_get_options_free`.
#[no_mangle]
pub extern "C" fn etcdc_get_options_new() -> *mut etcdc_get_options {
    new_boxed()
}

/// Frees get options. NULL does nothing.
#[no_mangle]
pub extern "C" fn etcdc_get_options_free(opts: *mut etcdc_get_options) {
    free_box(opts)
}

/// Every key that starts with the given key (an empty key: every key).
#[no_mangle]
pub extern "C" fn etcdc_get_options_set_prefix(opts: *mut etcdc_get_options) -> etcdc_status {
    set_span(opts, || Ok(Span::Prefix))
}

/// Every key from the given key on (an empty key: every key).
#[no_mangle]
pub extern "C" fn etcdc_get_options_set_from_key(opts: *mut etcdc_get_options) -> etcdc_status {
    set_span(opts, || Ok(Span::FromKey))
}

/// Keys in [key, end). The bytes are copied.
#[no_mangle]
pub extern "C" fn etcdc_get_options_set_range_end(
    opts: *mut etcdc_get_options,
    end: *const u8,
    end_len: usize,
) -> etcdc_status {
    set_span(opts, || Span::range(bytes(end, end_len, "end")?))
}

/// Read the store as of `revision` (0: the latest).
#[no_mangle]
pub extern "C" fn etcdc_get_options_set_revision(
    opts: *mut etcdc_get_options,
    revision: i64,
) -> etcdc_status {
    set(opts, |o| {
        o.req.revision = non_negative(revision, "revision")?;
        Ok(())
    })
}

/// Return at most `limit` keys (0: no limit); `etcdc_get_result_more` tells if there were more.
#[no_mangle]
pub extern "C" fn etcdc_get_options_set_limit(
    opts: *mut etcdc_get_options,
    limit: i64,
) -> etcdc_status {
    set(opts, |o| {
        o.req.limit = non_negative(limit, "limit")?;
        Ok(())
    })
}

/// Sort the keys by `target` in `order` (ETCDC_SORT_BY_*, ETCDC_SORT_NONE/ASCEND/DESCEND).
#[no_mangle]
pub extern "C" fn etcdc_get_options_set_sort(
    opts: *mut etcdc_get_options,
    target: etcdc_sort_target,
    order: etcdc_sort_order,
) -> etcdc_status {
    set(opts, |o| {
        if target > ETCDC_SORT_BY_VALUE {
            return Err(Error::invalid(format!("unknown sort target {target}")));
        }
        if order > ETCDC_SORT_DESCEND {
            return Err(Error::invalid(format!("unknown sort order {order}")));
        }
        o.req.sort_target = target as i32;
        o.req.sort_order = order as i32;
        Ok(())
    })
}

/// Return keys without their values.
#[no_mangle]
pub extern "C" fn etcdc_get_options_set_keys_only(
    opts: *mut etcdc_get_options,
    on: bool,
) -> etcdc_status {
    set(opts, |o| {
        o.req.keys_only = on;
        Ok(())
    })
}

/// Return only the number of keys (`etcdc_get_result_count`).
#[no_mangle]
pub extern "C" fn etcdc_get_options_set_count_only(
    opts: *mut etcdc_get_options,
    on: bool,
) -> etcdc_status {
    set(opts, |o| {
        o.req.count_only = on;
        Ok(())
    })
}

/// Serve from the member's local state without a quorum round: faster, possibly stale.
#[no_mangle]
pub extern "C" fn etcdc_get_options_set_serializable(
    opts: *mut etcdc_get_options,
    on: bool,
) -> etcdc_status {
    set(opts, |o| {
        o.req.serializable = on;
        Ok(())
    })
}

/// Only keys whose mod revision is in [min, max]; 0 leaves a bound open.
#[no_mangle]
pub extern "C" fn etcdc_get_options_set_mod_revision_range(
    opts: *mut etcdc_get_options,
    min: i64,
    max: i64,
) -> etcdc_status {
    set(opts, |o| {
        o.req.min_mod_revision = non_negative(min, "min mod revision")?;
        o.req.max_mod_revision = non_negative(max, "max mod revision")?;
        Ok(())
    })
}

/// Only keys whose create revision is in [min, max]; 0 leaves a bound open.
#[no_mangle]
pub extern "C" fn etcdc_get_options_set_create_revision_range(
    opts: *mut etcdc_get_options,
    min: i64,
    max: i64,
) -> etcdc_status {
    set(opts, |o| {
        o.req.min_create_revision = non_negative(min, "min create revision")?;
        o.req.max_create_revision = non_negative(max, "max create revision")?;
        Ok(())
    })
}

/// This call's deadline in ms (0: the client's default).
#[no_mangle]
pub extern "C" fn etcdc_get_options_set_timeout_ms(
    opts: *mut etcdc_get_options,
    timeout_ms: i64,
) -> etcdc_status {
    set_timeout(opts, timeout_ms)
}

/// Reads `key` (or the span the options select). `opts` may be NULL. On success `*result_out`
/// owns a result to free with `etcdc_get_result_free`; a missing key is success with 0 kvs.
#[no_mangle]
pub extern "C" fn etcdc_get(
    client: *const etcdc_client,
    key: *const u8,
    key_len: usize,
    opts: *const etcdc_get_options,
    result_out: *mut *mut etcdc_get_result,
) -> etcdc_status {
    guard(|| {
        let c = CLIENTS.get(client)?;
        let out = out(result_out, "result_out")?;
        let default = etcdc_get_options::default();
        let opts = opts_or(opts, &default);
        let req = opts.request(key, key_len)?;
        let deadline = c.deadline(opts.timeout_ms)?;
        let resp = c.block(c.etcd.range(req, deadline))?;
        out.write(Box::into_raw(Box::new(resp.into())));
        Ok(())
    })
}

/// Frees a get result and every key-value borrowed from it. NULL does nothing.
#[no_mangle]
pub extern "C" fn etcdc_get_result_free(result: *mut etcdc_get_result) {
    free_box(result)
}

/// The response header, borrowed from the result.
#[no_mangle]
pub extern "C" fn etcdc_get_result_header(r: *const etcdc_get_result) -> *const etcdc_header {
    field(r, std::ptr::null(), |r| &r.header)
}

/// How many key-values the result holds.
#[no_mangle]
pub extern "C" fn etcdc_get_result_len(r: *const etcdc_get_result) -> usize {
    field(r, 0, |r| r.kvs.len())
}

/// The `i`-th key-value, borrowed from the result; NULL when `i` is out of range.
#[no_mangle]
pub extern "C" fn etcdc_get_result_kv(r: *const etcdc_get_result, i: usize) -> *const etcdc_kv {
    field(r, std::ptr::null(), |r| {
        r.kvs.get(i).map_or(std::ptr::null(), |kv| kv)
    })
}

/// How many keys matched in all (more than `etcdc_get_result_len` with a limit).
#[no_mangle]
pub extern "C" fn etcdc_get_result_count(r: *const etcdc_get_result) -> i64 {
    field(r, 0, |r| r.count)
}

/// True when a limit cut off further keys.
#[no_mangle]
pub extern "C" fn etcdc_get_result_more(r: *const etcdc_get_result) -> bool {
    field(r, false, |r| r.more)
}

// ---- put ----

/// Options for `etcdc_put` and for puts inside a transaction.
#[derive(Clone, Default)]
pub struct etcdc_put_options {
    req: PutRequest,
    pub(crate) timeout_ms: i64,
}

impl Timed for etcdc_put_options {
    fn timeout_ms(&mut self) -> &mut i64 {
        &mut self.timeout_ms
    }
}

impl etcdc_put_options {
    pub(crate) fn request(
        &self,
        key: *const u8,
        key_len: usize,
        value: *const u8,
        value_len: usize,
    ) -> Result<PutRequest> {
        let (key, _) = Span::Key.resolve(bytes(key, key_len, "key")?)?;
        let value = bytes(value, value_len, "value")?;
        if self.req.ignore_value && !value.is_empty() {
            return Err(Error::invalid("a value was given with ignore_value set"));
        }
        Ok(PutRequest {
            key,
            value: value.to_vec(),
            ..self.req.clone()
        })
    }
}

/// The result of a put. Free with `etcdc_put_result_free`.
pub struct etcdc_put_result {
    header: etcdc_header,
    prev_kv: Option<etcdc_kv>,
}

impl From<PutResponse> for etcdc_put_result {
    fn from(r: PutResponse) -> Self {
        etcdc_put_result {
            header: header(r.header),
            prev_kv: r.prev_kv.map(|kv| etcdc_kv { kv }),
        }
    }
}

/// New put options: no lease, no previous value returned. Free with `etcdc_put_options_free`.
#[no_mangle]
pub extern "C" fn etcdc_put_options_new() -> *mut etcdc_put_options {
    new_boxed()
}

/// Frees put options. NULL does nothing.
#[no_mangle]
pub extern "C" fn etcdc_put_options_free(opts: *mut etcdc_put_options) {
    free_box(opts)
}

/// Attach the key to lease `lease` (0: no lease). The key is deleted when the lease ends.
#[no_mangle]
pub extern "C" fn etcdc_put_options_set_lease(
    opts: *mut etcdc_put_options,
    lease: i64,
) -> etcdc_status {
    set(opts, |o| {
        o.req.lease = non_negative(lease, "lease")?;
        Ok(())
    })
}

/// Return the key-value as it was before the put (`etcdc_put_result_prev_kv`).
#[no_mangle]
pub extern "C" fn etcdc_put_options_set_prev_kv(
    opts: *mut etcdc_put_options,
    on: bool,
) -> etcdc_status {
    set(opts, |o| {
        o.req.prev_kv = on;
        Ok(())
    })
}

/// Keep the current value (pass an empty value); the key must exist.
#[no_mangle]
pub extern "C" fn etcdc_put_options_set_ignore_value(
    opts: *mut etcdc_put_options,
    on: bool,
) -> etcdc_status {
    set(opts, |o| {
        o.req.ignore_value = on;
        Ok(())
    })
}

/// Keep the current lease; the key must exist.
#[no_mangle]
pub extern "C" fn etcdc_put_options_set_ignore_lease(
    opts: *mut etcdc_put_options,
    on: bool,
) -> etcdc_status {
    set(opts, |o| {
        o.req.ignore_lease = on;
        Ok(())
    })
}

/// This call's deadline in ms (0: the client's default).
#[no_mangle]
pub extern "C" fn etcdc_put_options_set_timeout_ms(
    opts: *mut etcdc_put_options,
    timeout_ms: i64,
) -> etcdc_status {
    set_timeout(opts, timeout_ms)
}

/// Writes `value` at `key`. `opts` and `result_out` may be NULL. A put is sent at most once:
/// when the connection fails after sending, the call reports `ETCDC_ERR_UNAVAILABLE` and the
/// write may or may not have been applied (read it back, or use a transaction).
#[no_mangle]
pub extern "C" fn etcdc_put(
    client: *const etcdc_client,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
    opts: *const etcdc_put_options,
    result_out: *mut *mut etcdc_put_result,
) -> etcdc_status {
    guard(|| {
        let c = CLIENTS.get(client)?;
        let default = etcdc_put_options::default();
        let opts = opts_or(opts, &default);
        let req = opts.request(key, key_len, value, value_len)?;
        let deadline = c.deadline(opts.timeout_ms)?;
        let resp = c.block(c.etcd.put(req, deadline))?;
        write_result(result_out, resp.into());
        Ok(())
    })
}

/// Frees a put result. NULL does nothing.
#[no_mangle]
pub extern "C" fn etcdc_put_result_free(result: *mut etcdc_put_result) {
    free_box(result)
}

/// The response header, borrowed from the result.
#[no_mangle]
pub extern "C" fn etcdc_put_result_header(r: *const etcdc_put_result) -> *const etcdc_header {
    field(r, std::ptr::null(), |r| &r.header)
}

/// The key-value before the put, when asked for and the key existed; else NULL.
#[no_mangle]
pub extern "C" fn etcdc_put_result_prev_kv(r: *const etcdc_put_result) -> *const etcdc_kv {
    field(r, std::ptr::null(), |r| {
        r.prev_kv.as_ref().map_or(std::ptr::null(), |kv| kv)
    })
}

// ---- delete ----

/// Options for `etcdc_delete` and for deletes inside a transaction.
#[derive(Clone, Default)]
pub struct etcdc_delete_options {
    span: Span,
    prev_kv: bool,
    pub(crate) timeout_ms: i64,
}

impl Spanned for etcdc_delete_options {
    fn span(&mut self) -> &mut Span {
        &mut self.span
    }
}

impl Timed for etcdc_delete_options {
    fn timeout_ms(&mut self) -> &mut i64 {
        &mut self.timeout_ms
    }
}

impl etcdc_delete_options {
    pub(crate) fn request(&self, key: *const u8, key_len: usize) -> Result<DeleteRangeRequest> {
        let (key, range_end) = self.span.resolve(bytes(key, key_len, "key")?)?;
        Ok(DeleteRangeRequest {
            key,
            range_end,
            prev_kv: self.prev_kv,
        })
    }
}

/// The result of a delete. Free with `etcdc_delete_result_free`.
pub struct etcdc_delete_result {
    header: etcdc_header,
    deleted: i64,
    prev_kvs: Vec<etcdc_kv>,
}

impl From<DeleteRangeResponse> for etcdc_delete_result {
    fn from(r: DeleteRangeResponse) -> Self {
        etcdc_delete_result {
            header: header(r.header),
            deleted: r.deleted,
            prev_kvs: kvs(r.prev_kvs),
        }
    }
}

/// New delete options: one key. Free with `etcdc_delete_options_free`.
#[no_mangle]
pub extern "C" fn etcdc_delete_options_new() -> *mut etcdc_delete_options {
    new_boxed()
}

/// Frees delete options. NULL does nothing.
#[no_mangle]
pub extern "C" fn etcdc_delete_options_free(opts: *mut etcdc_delete_options) {
    free_box(opts)
}

/// Delete every key that starts with the given key.
#[no_mangle]
pub extern "C" fn etcdc_delete_options_set_prefix(opts: *mut etcdc_delete_options) -> etcdc_status {
    set_span(opts, || Ok(Span::Prefix))
}

/// Delete every key from the given key on.
#[no_mangle]
pub extern "C" fn etcdc_delete_options_set_from_key(
    opts: *mut etcdc_delete_options,
) -> etcdc_status {
    set_span(opts, || Ok(Span::FromKey))
}

/// Delete keys in [key, end). The bytes are copied.
#[no_mangle]
pub extern "C" fn etcdc_delete_options_set_range_end(
    opts: *mut etcdc_delete_options,
    end: *const u8,
    end_len: usize,
) -> etcdc_status {
    set_span(opts, || Span::range(bytes(end, end_len, "end")?))
}

/// Return the deleted key-values (`etcdc_delete_result_prev_kv`).
#[no_mangle]
pub extern "C" fn etcdc_delete_options_set_prev_kv(
    opts: *mut etcdc_delete_options,
    on: bool,
) -> etcdc_status {
    set(opts, |o| {
        o.prev_kv = on;
        Ok(())
    })
}

/// This call's deadline in ms (0: the client's default).
#[no_mangle]
pub extern "C" fn etcdc_delete_options_set_timeout_ms(
    opts: *mut etcdc_delete_options,
    timeout_ms: i64,
) -> etcdc_status {
    set_timeout(opts, timeout_ms)
}

/// Deletes `key` (or the span the options select). `opts` and `result_out` may be NULL.
/// Deleting nothing is success with `etcdc_delete_result_deleted` = 0.
#[no_mangle]
pub extern "C" fn etcdc_delete(
    client: *const etcdc_client,
    key: *const u8,
    key_len: usize,
    opts: *const etcdc_delete_options,
    result_out: *mut *mut etcdc_delete_result,
) -> etcdc_status {
    guard(|| {
        let c = CLIENTS.get(client)?;
        let default = etcdc_delete_options::default();
        let opts = opts_or(opts, &default);
        let req = opts.request(key, key_len)?;
        let deadline = c.deadline(opts.timeout_ms)?;
        let resp = c.block(c.etcd.delete_range(req, deadline))?;
        write_result(result_out, resp.into());
        Ok(())
    })
}

/// Frees a delete result. NULL does nothing.
#[no_mangle]
pub extern "C" fn etcdc_delete_result_free(result: *mut etcdc_delete_result) {
    free_box(result)
}

/// The response header, borrowed from the result.
#[no_mangle]
pub extern "C" fn etcdc_delete_result_header(r: *const etcdc_delete_result) -> *const etcdc_header {
    field(r, std::ptr::null(), |r| &r.header)
}

/// How many keys were deleted.
#[no_mangle]
pub extern "C" fn etcdc_delete_result_deleted(r: *const etcdc_delete_result) -> i64 {
    field(r, 0, |r| r.deleted)
}

/// How many deleted key-values the result holds (with prev_kv set).
#[no_mangle]
pub extern "C" fn etcdc_delete_result_prev_len(r: *const etcdc_delete_result) -> usize {
    field(r, 0, |r| r.prev_kvs.len())
}

/// The `i`-th deleted key-value, borrowed from the result; NULL when out of range.
#[no_mangle]
pub extern "C" fn etcdc_delete_result_prev_kv(
    r: *const etcdc_delete_result,
    i: usize,
) -> *const etcdc_kv {
    field(r, std::ptr::null(), |r| {
        r.prev_kvs.get(i).map_or(std::ptr::null(), |kv| kv)
    })
}

// ---- compact ----

/// Discards history before `revision`; reads and watches of older revisions then fail with
/// `ETCDC_ERR_COMPACTED`. `physical`: return only once the space is reclaimed.
#[no_mangle]
pub extern "C" fn etcdc_compact(
    client: *const etcdc_client,
    revision: i64,
    physical: bool,
    timeout_ms: i64,
) -> etcdc_status {
    guard(|| {
        let c = CLIENTS.get(client)?;
        if revision <= 0 {
            return Err(Error::invalid(format!(
                "compact revision must be positive, got {revision}"
            )));
        }
        let deadline = c.deadline(timeout_ms)?;
        c.block(
            c.etcd
                .compact(CompactionRequest { revision, physical }, deadline),
        )?;
        Ok(())
    })
}

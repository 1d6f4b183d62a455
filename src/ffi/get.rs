//! Reads: get by key, prefix, range or from a key, its options and its result object.

use std::ffi::c_void;
use std::future::Future;
use std::sync::Arc;

use super::client::{etcdc_client, launch, wait, Client};
use super::completion::{etcdc_completion, etcdc_cq, etcdc_op, result};
use super::guard::{
    bytes, field, free_box, guard, new_boxed, non_negative, opts_or, out, set, set_span,
    set_timeout, Spanned, Timed,
};
use super::record::{etcdc_header, etcdc_kv, header, kvs};
use super::status::etcdc_status;
use crate::api::Etcd;
use crate::error::{Error, Result};
use crate::kv::Span;
use crate::pb::etcdserverpb::*;

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

/// A get: the arguments checked and copied now, the call when awaited.
fn get_call(
    c: &Client,
    etcd: Arc<dyn Etcd>,
    key: *const u8,
    key_len: usize,
    opts: *const etcdc_get_options,
) -> Result<impl Future<Output = Result<etcdc_get_result>>> {
    let default = etcdc_get_options::default();
    let opts = opts_or(opts, &default);
    let req = opts.request(key, key_len)?;
    let deadline = c.deadline(opts.timeout_ms)?;
    Ok(async move { Ok(etcd.range(req, deadline).await?.into()) })
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
        let out = out(result_out, "result_out")?;
        let r = wait(client, |c, etcd| get_call(c, etcd, key, key_len, opts))?;
        out.write(Box::into_raw(Box::new(r)));
        Ok(())
    })
}

/// `etcdc_get`, asynchronously (see `etcdc_put_async`): `etcdc_completion_get_result`.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn etcdc_get_async(
    client: *const etcdc_client,
    key: *const u8,
    key_len: usize,
    opts: *const etcdc_get_options,
    cq: *const etcdc_cq,
    tag: *mut c_void,
    op_out: *mut *mut etcdc_op,
) -> etcdc_status {
    launch(client, cq, tag, op_out, |c, etcd| {
        get_call(c, etcd, key, key_len, opts)
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

/// A get's result, borrowed from the completion; NULL for another kind or a failure.
#[no_mangle]
pub extern "C" fn etcdc_completion_get_result(
    c: *const etcdc_completion,
) -> *const etcdc_get_result {
    result::<etcdc_get_result>(c)
}

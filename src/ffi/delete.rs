//! Removals: delete (a key, prefix, range or from a key), its options and result object;
//! and compaction, which removes history.

use std::ffi::c_void;
use std::future::Future;
use std::sync::Arc;

use super::client::{etcdc_client, launch, wait, Client};
use super::completion::{etcdc_completion, etcdc_cq, etcdc_op, result};
use super::guard::{
    bytes, field, free_box, guard, new_boxed, opts_or, set, set_span, set_timeout, write_result,
    Spanned, Timed,
};
use super::record::{etcdc_header, etcdc_kv, header, kvs};
use super::status::etcdc_status;
use crate::api::Etcd;
use crate::error::{Error, Result};
use crate::kv::Span;
use crate::pb::etcdserverpb::*;

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

/// A delete: the arguments checked and copied now, the call when awaited.
fn delete_call(
    c: &Client,
    etcd: Arc<dyn Etcd>,
    key: *const u8,
    key_len: usize,
    opts: *const etcdc_delete_options,
) -> Result<impl Future<Output = Result<etcdc_delete_result>>> {
    let default = etcdc_delete_options::default();
    let opts = opts_or(opts, &default);
    let req = opts.request(key, key_len)?;
    let deadline = c.deadline(opts.timeout_ms)?;
    Ok(async move { Ok(etcd.delete_range(req, deadline).await?.into()) })
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
        let r = wait(client, |c, etcd| delete_call(c, etcd, key, key_len, opts))?;
        write_result(result_out, r);
        Ok(())
    })
}

/// `etcdc_delete`, asynchronously (see `etcdc_put_async`): `etcdc_completion_delete_result`.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn etcdc_delete_async(
    client: *const etcdc_client,
    key: *const u8,
    key_len: usize,
    opts: *const etcdc_delete_options,
    cq: *const etcdc_cq,
    tag: *mut c_void,
    op_out: *mut *mut etcdc_op,
) -> etcdc_status {
    launch(client, cq, tag, op_out, |c, etcd| {
        delete_call(c, etcd, key, key_len, opts)
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

/// A delete's result, borrowed from the completion; NULL for another kind or a failure.
#[no_mangle]
pub extern "C" fn etcdc_completion_delete_result(
    c: *const etcdc_completion,
) -> *const etcdc_delete_result {
    result::<etcdc_delete_result>(c)
}

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
        wait(client, |c, etcd| {
            compact_call(c, etcd, revision, physical, timeout_ms)
        })
    })
}

/// `etcdc_compact`, asynchronously (see `etcdc_put_async`).
#[no_mangle]
pub extern "C" fn etcdc_compact_async(
    client: *const etcdc_client,
    revision: i64,
    physical: bool,
    timeout_ms: i64,
    cq: *const etcdc_cq,
    tag: *mut c_void,
    op_out: *mut *mut etcdc_op,
) -> etcdc_status {
    launch(client, cq, tag, op_out, |c, etcd| {
        compact_call(c, etcd, revision, physical, timeout_ms)
    })
}

/// A compaction: the arguments checked now, the call when awaited.
fn compact_call(
    c: &Client,
    etcd: Arc<dyn Etcd>,
    revision: i64,
    physical: bool,
    timeout_ms: i64,
) -> Result<impl Future<Output = Result<()>>> {
    if revision <= 0 {
        return Err(Error::invalid(format!(
            "compact revision must be positive, got {revision}"
        )));
    }
    let deadline = c.deadline(timeout_ms)?;
    Ok(async move {
        etcd.compact(CompactionRequest { revision, physical }, deadline)
            .await
            .map(drop)
    })
}

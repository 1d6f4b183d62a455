//! Writes of one key: put, its options and its result object.

use std::ffi::c_void;
use std::future::Future;
use std::sync::Arc;

use super::client::{etcdc_client, launch, wait, Client};
use super::completion::{etcdc_completion, etcdc_cq, etcdc_op, result};
use super::guard::{
    bytes, field, free_box, guard, new_boxed, non_negative, opts_or, set, set_timeout,
    write_result, Timed,
};
use super::record::{etcdc_header, etcdc_kv, header};
use super::status::etcdc_status;
use crate::api::Etcd;
use crate::error::{Error, Result};
use crate::kv::Span;
use crate::pb::etcdserverpb::*;

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

/// A put: the arguments checked and copied now, the call when awaited (`etcdc_put` and
/// `etcdc_put_async` both).
fn put_call(
    c: &Client,
    etcd: Arc<dyn Etcd>,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
    opts: *const etcdc_put_options,
) -> Result<impl Future<Output = Result<etcdc_put_result>>> {
    let default = etcdc_put_options::default();
    let opts = opts_or(opts, &default);
    let req = opts.request(key, key_len, value, value_len)?;
    let deadline = c.deadline(opts.timeout_ms)?;
    Ok(async move { Ok(etcd.put(req, deadline).await?.into()) })
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
        let r = wait(client, |c, etcd| {
            put_call(c, etcd, key, key_len, value, value_len, opts)
        })?;
        write_result(result_out, r);
        Ok(())
    })
}

/// `etcdc_put`, asynchronously: the arguments are checked now (a bad one is this call's
/// status, and nothing completes); the answer completes into `cq` with `tag` (its
/// `etcdc_completion_put_result`). `op_out` may be NULL; otherwise free it with
/// `etcdc_op_free`.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn etcdc_put_async(
    client: *const etcdc_client,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
    opts: *const etcdc_put_options,
    cq: *const etcdc_cq,
    tag: *mut c_void,
    op_out: *mut *mut etcdc_op,
) -> etcdc_status {
    launch(client, cq, tag, op_out, |c, etcd| {
        put_call(c, etcd, key, key_len, value, value_len, opts)
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

/// A put's result, borrowed from the completion; NULL for another kind or a failure.
#[no_mangle]
pub extern "C" fn etcdc_completion_put_result(
    c: *const etcdc_completion,
) -> *const etcdc_put_result {
    result::<etcdc_put_result>(c)
}

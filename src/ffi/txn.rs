//! Transactions: compares, then/else branches of put, get, delete and nested transactions,
//! and compare-and-swap on top of them.

use std::ffi::c_void;
use std::future::Future;
use std::sync::Arc;

use super::client::{etcdc_client, launch, wait, Client, CLIENTS};
use super::completion::{etcdc_completion, etcdc_cq, etcdc_op, result};
use super::delete::{etcdc_delete_options, etcdc_delete_result};
use super::get::{etcdc_get_options, etcdc_get_result};
use super::guard::{
    arg, arg_mut, bytes, field, free_box, guard, new_boxed, opts_or, out, set_timeout,
    write_result, Timed,
};
use super::put::{etcdc_put_options, etcdc_put_result};
use super::record::{etcdc_header, header};
use super::status::etcdc_status;
use crate::api::Etcd;
use crate::error::{Error, Result};
use crate::kv::{compare_and_put, Expect, Span};
use crate::pb::etcdserverpb::compare::{CompareTarget, TargetUnion};
use crate::pb::etcdserverpb::request_op::Request;
use crate::pb::etcdserverpb::response_op::Response;
use crate::pb::etcdserverpb::*;

/// How a compare relates the key's field to the given value.
pub type etcdc_compare_op = u32;
/// The key's field equals the value.
pub const ETCDC_CMP_EQUAL: etcdc_compare_op = 0;
/// The key's field is greater than the value.
pub const ETCDC_CMP_GREATER: etcdc_compare_op = 1;
/// The key's field is less than the value.
pub const ETCDC_CMP_LESS: etcdc_compare_op = 2;
/// The key's field differs from the value.
pub const ETCDC_CMP_NOT_EQUAL: etcdc_compare_op = 3;

/// Which branch an operation joins: run when every compare holds, or otherwise.
pub type etcdc_txn_branch = u32;
/// Runs when every compare holds.
pub const ETCDC_TXN_THEN: etcdc_txn_branch = 0;
/// Runs when a compare fails.
pub const ETCDC_TXN_ELSE: etcdc_txn_branch = 1;

/// What one operation of a transaction result is.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum etcdc_op_type {
    ETCDC_OP_GET = 0,
    ETCDC_OP_PUT = 1,
    ETCDC_OP_DELETE = 2,
    ETCDC_OP_TXN = 3,
}

/// A transaction being built: compares, then the operations of each branch. Create with
/// `etcdc_txn_new`, run with `etcdc_txn_commit` (any number of times), free with
/// `etcdc_txn_free`.
#[derive(Default)]
pub struct etcdc_txn {
    pub(crate) req: TxnRequest,
    pub(crate) timeout_ms: i64,
}

impl Timed for etcdc_txn {
    fn timeout_ms(&mut self) -> &mut i64 {
        &mut self.timeout_ms
    }
}

enum TxnOp {
    Get(etcdc_get_result),
    Put(etcdc_put_result),
    Delete(etcdc_delete_result),
    Txn(etcdc_txn_result),
}

/// The result of a transaction. Free with `etcdc_txn_result_free`.
pub struct etcdc_txn_result {
    header: etcdc_header,
    succeeded: bool,
    ops: Vec<TxnOp>,
}

impl From<TxnResponse> for etcdc_txn_result {
    fn from(r: TxnResponse) -> Self {
        let ops = r
            .responses
            .into_iter()
            .filter_map(|op| {
                Some(match op.response? {
                    Response::ResponseRange(r) => TxnOp::Get(r.into()),
                    Response::ResponsePut(r) => TxnOp::Put(r.into()),
                    Response::ResponseDeleteRange(r) => TxnOp::Delete(r.into()),
                    Response::ResponseTxn(r) => TxnOp::Txn(r.into()),
                })
            })
            .collect();
        etcdc_txn_result {
            header: header(r.header),
            succeeded: r.succeeded,
            ops,
        }
    }
}

/// A new, empty transaction. Free with `etcdc_txn_free`.
#[no_mangle]
pub extern "C" fn etcdc_txn_new() -> *mut etcdc_txn {
    new_boxed()
}

/// Frees a transaction. NULL does nothing.
#[no_mangle]
pub extern "C" fn etcdc_txn_free(txn: *mut etcdc_txn) {
    free_box(txn)
}

fn add_compare(
    txn: *mut etcdc_txn,
    key: *const u8,
    key_len: usize,
    op: etcdc_compare_op,
    target: CompareTarget,
    value: impl FnOnce() -> Result<TargetUnion>,
) -> etcdc_status {
    guard(|| {
        let txn = arg_mut(txn, "txn")?;
        let (key, _) = Span::Key.resolve(bytes(key, key_len, "key")?)?;
        if op > ETCDC_CMP_NOT_EQUAL {
            return Err(Error::invalid(format!("unknown compare op {op}")));
        }
        txn.req.compare.push(Compare {
            result: op as i32,
            target: target as i32,
            key,
            target_union: Some(value()?),
            range_end: Vec::new(),
        });
        Ok(())
    })
}

/// Compares the key's value with `value` (bytewise). On a missing key a value compare never
/// holds: test existence with `etcdc_txn_compare_create_revision(..., ETCDC_CMP_EQUAL, 0)`.
#[no_mangle]
pub extern "C" fn etcdc_txn_compare_value(
    txn: *mut etcdc_txn,
    key: *const u8,
    key_len: usize,
    op: etcdc_compare_op,
    value: *const u8,
    value_len: usize,
) -> etcdc_status {
    add_compare(txn, key, key_len, op, CompareTarget::Value, || {
        Ok(TargetUnion::Value(
            bytes(value, value_len, "value")?.to_vec(),
        ))
    })
}

/// Compares the key's version (0 when the key does not exist).
#[no_mangle]
pub extern "C" fn etcdc_txn_compare_version(
    txn: *mut etcdc_txn,
    key: *const u8,
    key_len: usize,
    op: etcdc_compare_op,
    version: i64,
) -> etcdc_status {
    add_compare(txn, key, key_len, op, CompareTarget::Version, || {
        Ok(TargetUnion::Version(version))
    })
}

/// Compares the key's create revision (0 when the key does not exist: `EQUAL 0` means
/// "absent").
#[no_mangle]
pub extern "C" fn etcdc_txn_compare_create_revision(
    txn: *mut etcdc_txn,
    key: *const u8,
    key_len: usize,
    op: etcdc_compare_op,
    revision: i64,
) -> etcdc_status {
    add_compare(txn, key, key_len, op, CompareTarget::Create, || {
        Ok(TargetUnion::CreateRevision(revision))
    })
}

/// Compares the key's mod revision.
#[no_mangle]
pub extern "C" fn etcdc_txn_compare_mod_revision(
    txn: *mut etcdc_txn,
    key: *const u8,
    key_len: usize,
    op: etcdc_compare_op,
    revision: i64,
) -> etcdc_status {
    add_compare(txn, key, key_len, op, CompareTarget::Mod, || {
        Ok(TargetUnion::ModRevision(revision))
    })
}

/// Compares the key's lease id (0: no lease).
#[no_mangle]
pub extern "C" fn etcdc_txn_compare_lease(
    txn: *mut etcdc_txn,
    key: *const u8,
    key_len: usize,
    op: etcdc_compare_op,
    lease: i64,
) -> etcdc_status {
    add_compare(txn, key, key_len, op, CompareTarget::Lease, || {
        Ok(TargetUnion::Lease(lease))
    })
}

fn add_op(
    txn: *mut etcdc_txn,
    branch: etcdc_txn_branch,
    op: impl FnOnce() -> Result<Request>,
) -> etcdc_status {
    guard(|| {
        let txn = arg_mut(txn, "txn")?;
        let ops = match branch {
            ETCDC_TXN_THEN => &mut txn.req.success,
            ETCDC_TXN_ELSE => &mut txn.req.failure,
            other => return Err(Error::invalid(format!("unknown txn branch {other}"))),
        };
        ops.push(RequestOp {
            request: Some(op()?),
        });
        Ok(())
    })
}

/// Adds a put to `branch`. `opts` may be NULL; its timeout is ignored here.
#[no_mangle]
pub extern "C" fn etcdc_txn_put(
    txn: *mut etcdc_txn,
    branch: etcdc_txn_branch,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
    opts: *const etcdc_put_options,
) -> etcdc_status {
    add_op(txn, branch, || {
        let default = etcdc_put_options::default();
        let opts = opts_or(opts, &default);
        Ok(Request::RequestPut(
            opts.request(key, key_len, value, value_len)?,
        ))
    })
}

/// Adds a get to `branch`. `opts` may be NULL; its timeout is ignored here.
#[no_mangle]
pub extern "C" fn etcdc_txn_get(
    txn: *mut etcdc_txn,
    branch: etcdc_txn_branch,
    key: *const u8,
    key_len: usize,
    opts: *const etcdc_get_options,
) -> etcdc_status {
    add_op(txn, branch, || {
        let default = etcdc_get_options::default();
        let opts = opts_or(opts, &default);
        Ok(Request::RequestRange(opts.request(key, key_len)?))
    })
}

/// Adds a delete to `branch`. `opts` may be NULL; its timeout is ignored here.
#[no_mangle]
pub extern "C" fn etcdc_txn_delete(
    txn: *mut etcdc_txn,
    branch: etcdc_txn_branch,
    key: *const u8,
    key_len: usize,
    opts: *const etcdc_delete_options,
) -> etcdc_status {
    add_op(txn, branch, || {
        let default = etcdc_delete_options::default();
        let opts = opts_or(opts, &default);
        Ok(Request::RequestDeleteRange(opts.request(key, key_len)?))
    })
}

/// Adds the transaction `nested` to `branch`. Takes ownership of `nested` on every path,
/// errors included: do not use or free it afterwards.
#[no_mangle]
pub extern "C" fn etcdc_txn_txn(
    txn: *mut etcdc_txn,
    branch: etcdc_txn_branch,
    nested: *mut etcdc_txn,
) -> etcdc_status {
    let nested = (!nested.is_null()).then(|| {
        // SAFETY: `nested` came from etcdc_txn_new and ownership passes here, as documented.
        unsafe { Box::from_raw(nested) }
    });
    if std::ptr::eq(txn, nested.as_deref().map_or(std::ptr::null(), |n| n)) {
        // The same object twice: keep it alive for the caller's `txn`, refuse the call.
        std::mem::forget(nested);
        return guard(|| Err(Error::invalid("a transaction cannot contain itself")));
    }
    add_op(txn, branch, || {
        let nested = nested.ok_or_else(|| Error::invalid("nested is NULL"))?;
        Ok(Request::RequestTxn(nested.req))
    })
}

/// This transaction's deadline in ms (0: the client's default).
#[no_mangle]
pub extern "C" fn etcdc_txn_set_timeout_ms(txn: *mut etcdc_txn, timeout_ms: i64) -> etcdc_status {
    set_timeout(txn, timeout_ms)
}

/// Runs the transaction atomically. A compare that fails is not an error: the else branch
/// ran and `etcdc_txn_result_succeeded` is false. `txn` is not consumed. Sent at most once,
/// as `etcdc_put`.
#[no_mangle]
pub extern "C" fn etcdc_txn_commit(
    client: *const etcdc_client,
    txn: *const etcdc_txn,
    result_out: *mut *mut etcdc_txn_result,
) -> etcdc_status {
    guard(|| {
        // The outcome (which branch ran) is in the result: a call that drops it is a bug.
        let out = out(result_out, "result_out")?;
        let r = wait(client, |c, etcd| commit_call(c, etcd, txn))?;
        out.write(Box::into_raw(Box::new(r)));
        Ok(())
    })
}

/// A commit: the transaction checked and copied now, the call when awaited.
fn commit_call(
    c: &Client,
    etcd: Arc<dyn Etcd>,
    txn: *const etcdc_txn,
) -> Result<impl Future<Output = Result<etcdc_txn_result>>> {
    let txn = arg(txn, "txn")?;
    let deadline = c.deadline(txn.timeout_ms)?;
    let req = txn.req.clone();
    Ok(async move { Ok(etcd.txn(req, deadline).await?.into()) })
}

/// `etcdc_txn_commit`, asynchronously (see `etcdc_put_async`): `etcdc_completion_txn_result`.
/// The transaction is copied: it may be freed or reused at once.
#[no_mangle]
pub extern "C" fn etcdc_txn_commit_async(
    client: *const etcdc_client,
    txn: *const etcdc_txn,
    cq: *const etcdc_cq,
    tag: *mut c_void,
    op_out: *mut *mut etcdc_op,
) -> etcdc_status {
    launch(client, cq, tag, op_out, |c, etcd| commit_call(c, etcd, txn))
}

/// Compare-and-swap: writes `value` at `key` only if the key's current value is exactly
/// `expected` (`expected_len` bytes; NULL with length 0 is the empty value). Otherwise
/// nothing is written and the call returns `ETCDC_ERR_COMPARE_FAILED`. To write only if the
/// key does not exist, use `etcdc_create`. `opts` (a lease, prev_kv, a timeout) and
/// `result_out` may be NULL.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn etcdc_cas(
    client: *const etcdc_client,
    key: *const u8,
    key_len: usize,
    expected: *const u8,
    expected_len: usize,
    value: *const u8,
    value_len: usize,
    opts: *const etcdc_put_options,
    result_out: *mut *mut etcdc_put_result,
) -> etcdc_status {
    guard(|| {
        let expected = bytes(expected, expected_len, "expected")?;
        put_if(
            client,
            key,
            key_len,
            value,
            value_len,
            opts,
            result_out,
            Expect::Value(expected),
        )
    })
}

/// Create: writes `value` at `key` only if the key does not exist (etcd v2's
/// `prevExist=false`). Otherwise nothing is written and the call returns
/// `ETCDC_ERR_COMPARE_FAILED`. `opts` and `result_out` may be NULL.
#[no_mangle]
pub extern "C" fn etcdc_create(
    client: *const etcdc_client,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
    opts: *const etcdc_put_options,
    result_out: *mut *mut etcdc_put_result,
) -> etcdc_status {
    guard(|| {
        put_if(
            client,
            key,
            key_len,
            value,
            value_len,
            opts,
            result_out,
            Expect::Absent,
        )
    })
}

#[allow(clippy::too_many_arguments)]
fn put_if(
    client: *const etcdc_client,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
    opts: *const etcdc_put_options,
    result_out: *mut *mut etcdc_put_result,
    expect: Expect<'_>,
) -> Result<()> {
    let c = CLIENTS.get(client)?;
    let default = etcdc_put_options::default();
    let opts = opts_or(opts, &default);
    let put = opts.request(key, key_len, value, value_len)?;
    let deadline = c.deadline(opts.timeout_ms)?;
    let resp = c.block(compare_and_put(&*c.etcd, put, expect, deadline))?;
    write_result(result_out, resp.into());
    Ok(())
}

/// Frees a transaction result and everything borrowed from it. NULL does nothing.
#[no_mangle]
pub extern "C" fn etcdc_txn_result_free(result: *mut etcdc_txn_result) {
    free_box(result)
}

/// The response header, borrowed from the result.
#[no_mangle]
pub extern "C" fn etcdc_txn_result_header(r: *const etcdc_txn_result) -> *const etcdc_header {
    field(r, std::ptr::null(), |r| &r.header)
}

/// True when every compare held and the then-branch ran.
#[no_mangle]
pub extern "C" fn etcdc_txn_result_succeeded(r: *const etcdc_txn_result) -> bool {
    field(r, false, |r| r.succeeded)
}

/// How many operation results there are (those of the branch that ran).
#[no_mangle]
pub extern "C" fn etcdc_txn_result_len(r: *const etcdc_txn_result) -> usize {
    field(r, 0, |r| r.ops.len())
}

/// The `i`-th operation's result of one kind, borrowed; NULL if it is another kind.
fn op<R>(
    r: *const etcdc_txn_result,
    i: usize,
    pick: impl FnOnce(&TxnOp) -> Option<&R>,
) -> *const R {
    field(r, std::ptr::null(), |r| {
        r.ops.get(i).and_then(pick).map_or(std::ptr::null(), |x| x)
    })
}

/// What the `i`-th operation was; `*type_out` is written only on success.
#[no_mangle]
pub extern "C" fn etcdc_txn_result_op_type(
    r: *const etcdc_txn_result,
    i: usize,
    type_out: *mut etcdc_op_type,
) -> etcdc_status {
    guard(|| {
        let out = out(type_out, "type_out")?;
        let ty = arg(r, "result")?
            .ops
            .get(i)
            .map(|op| match op {
                TxnOp::Get(_) => etcdc_op_type::ETCDC_OP_GET,
                TxnOp::Put(_) => etcdc_op_type::ETCDC_OP_PUT,
                TxnOp::Delete(_) => etcdc_op_type::ETCDC_OP_DELETE,
                TxnOp::Txn(_) => etcdc_op_type::ETCDC_OP_TXN,
            })
            .ok_or_else(|| Error::invalid(format!("no operation {i} in the result")))?;
        out.write(ty);
        Ok(())
    })
}

/// The `i`-th operation's get result, borrowed; NULL if it is not a get.
#[no_mangle]
pub extern "C" fn etcdc_txn_result_get(
    r: *const etcdc_txn_result,
    i: usize,
) -> *const etcdc_get_result {
    op(r, i, |o| match o {
        TxnOp::Get(g) => Some(g),
        _ => None,
    })
}

/// The `i`-th operation's put result, borrowed; NULL if it is not a put.
#[no_mangle]
pub extern "C" fn etcdc_txn_result_put(
    r: *const etcdc_txn_result,
    i: usize,
) -> *const etcdc_put_result {
    op(r, i, |o| match o {
        TxnOp::Put(p) => Some(p),
        _ => None,
    })
}

/// The `i`-th operation's delete result, borrowed; NULL if it is not a delete.
#[no_mangle]
pub extern "C" fn etcdc_txn_result_delete(
    r: *const etcdc_txn_result,
    i: usize,
) -> *const etcdc_delete_result {
    op(r, i, |o| match o {
        TxnOp::Delete(d) => Some(d),
        _ => None,
    })
}

/// The `i`-th operation's nested transaction result, borrowed; NULL if it is not a txn.
#[no_mangle]
pub extern "C" fn etcdc_txn_result_txn(
    r: *const etcdc_txn_result,
    i: usize,
) -> *const etcdc_txn_result {
    op(r, i, |o| match o {
        TxnOp::Txn(t) => Some(t),
        _ => None,
    })
}

/// A transaction's result, borrowed from the completion; NULL for another kind or a failure.
#[no_mangle]
pub extern "C" fn etcdc_completion_txn_result(
    c: *const etcdc_completion,
) -> *const etcdc_txn_result {
    result::<etcdc_txn_result>(c)
}

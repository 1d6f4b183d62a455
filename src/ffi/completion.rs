//! The asynchronous C API: a call's `_async` form starts it on etcdc's runtime and returns
//! at once; its completion — status, message, result, the caller's tag — goes to a
//! completion queue: pulled (`etcdc_cq_next`, an fd for epoll) or pushed to a callback on the
//! event thread. A queue is one instance of the one stream model and serves any number of
//! clients and calls. Every operation completes exactly once: with its answer, or
//! `ETCDC_ERR_CANCELED` when `etcdc_op_cancel` or freeing its client came first.

use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void, CString};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::client::{etcdc_client, Client, CLIENTS};
use super::cluster::{etcdc_endpoint_status, etcdc_member_list};
use super::guard::{arg, cstring, field, free_box, guard, opts_or, out, status_field};
use super::handle::Table;
use super::kv::{
    etcdc_delete_options, etcdc_delete_result, etcdc_get_options, etcdc_get_result,
    etcdc_put_options, etcdc_put_result,
};
use super::lease::{etcdc_lease_info, etcdc_lease_list};
use super::status::etcdc_status;
use super::stream::{self, CCallback, CItem, StreamHandle};
use super::txn::{etcdc_txn, etcdc_txn_result};
use crate::error::{Error, ErrorKind, Result};
use crate::stream::Feed;

/// What an operation returns.
pub(crate) enum Answer {
    Put(etcdc_put_result),
    Get(etcdc_get_result),
    Delete(etcdc_delete_result),
    Txn(etcdc_txn_result),
    /// A lease id (grant), or nothing (revoke, compact).
    Number(i64),
    LeaseInfo(etcdc_lease_info),
    Leases(etcdc_lease_list),
    Members(etcdc_member_list),
    Status(etcdc_endpoint_status),
    Item(super::queue::etcdc_queue_item),
    Watch(super::watch::etcdc_watch_response),
    Lease(super::lease::etcdc_lease_event),
    Registration(super::registry::etcdc_registration_event),
    /// A registration started by `etcdc_register_async`, until the completion hands it over.
    Registered(Handover),
    Discovery(super::registry::etcdc_discovery_event),
    Leader(super::election::etcdc_leader),
}

/// A registration's handle owned by a completion until `etcdc_completion_take_registration`;
/// one never taken is freed (unregistered) with the completion.
pub(crate) struct Handover(Mutex<Option<usize>>);

impl Handover {
    pub fn new(handle: usize) -> Self {
        Handover(Mutex::new(Some(handle)))
    }
}

impl Drop for Handover {
    fn drop(&mut self) {
        let Some(id) = self.0.get_mut().unwrap_or_else(|p| p.into_inner()).take() else {
            return;
        };
        let free = move || {
            super::registry::etcdc_registration_free(id as *mut _);
        };
        // Unregistering blocks on the runtime: never on one of its threads, nor on the event
        // thread (a callback's completion is dropped there) where it would hold up the others.
        if tokio::runtime::Handle::try_current().is_ok() || crate::events::on_event_thread() {
            std::thread::spawn(free);
        } else {
            free();
        }
    }
}

/// One finished operation.
pub(crate) struct Done {
    tag: usize,
    result: std::result::Result<Answer, Error>,
}

/// A completion, owned by whoever pulled it (free with `etcdc_completion_free`), borrowed for
/// a callback's call.
pub struct etcdc_completion {
    tag: usize,
    status: etcdc_status,
    message: CString,
    answer: Option<Answer>,
}

impl CItem<Done> for etcdc_completion {
    fn from_item(d: Done) -> Self {
        match d.result {
            Ok(answer) => etcdc_completion {
                tag: d.tag,
                status: etcdc_status::ETCDC_OK,
                message: CString::default(),
                answer: Some(answer),
            },
            Err(e) => etcdc_completion {
                tag: d.tag,
                status: e.kind.into(),
                message: cstring(&e.message),
                answer: None,
            },
        }
    }

    fn from_failure(e: Error) -> Self {
        etcdc_completion {
            tag: 0,
            status: e.kind.into(),
            message: cstring(&e.message),
            answer: None,
        }
    }
}

/// A completion callback, with the same rules as `etcdc_watch_callback`.
#[repr(C)]
pub struct etcdc_completion_callback {
    pub call: Option<unsafe extern "C" fn(user_data: *mut c_void, c: *const etcdc_completion)>,
    pub drop: Option<unsafe extern "C" fn(user_data: *mut c_void)>,
    pub user_data: *mut c_void,
}

/// A completion queue. Free with `etcdc_cq_free`.
pub struct etcdc_cq {
    _opaque: [u8; 0],
}

/// The producer end every operation completing into the queue clones.
pub(crate) struct Sink(Feed<Done>);

pub(crate) static QUEUES: Table<StreamHandle<Done, Sink>> = Table::new(12, "completion queue");

/// A new completion queue. With `callback` NULL, completions wait for `etcdc_cq_next` (and
/// `etcdc_cq_fd` is readable while one waits); otherwise each goes to `callback->call` on
/// etcdc's event thread. One queue serves any number of clients and operations; its memory
/// is one completion per operation in flight or not yet taken.
#[no_mangle]
pub extern "C" fn etcdc_cq_new(
    callback: *const etcdc_completion_callback,
    cq_out: *mut *mut etcdc_cq,
) -> etcdc_status {
    let cb = arg(callback, "callback")
        .ok()
        .map(|cb| CCallback::new(cb.call, cb.drop, cb.user_data));
    guard(|| {
        let out = out(cq_out, "cq_out")?;
        // Completions are queued past the capacity (`send_anyway`): each operation owes
        // exactly one, so operations in flight bound the queue.
        let (feed, stream) = stream::open::<Done, etcdc_completion>(cb, 1024)?;
        out.write(QUEUES.insert(StreamHandle::new(stream, Sink(feed))));
        Ok(())
    })
}

/// The next completion, waiting up to `timeout_ms` (0: no wait; negative: no limit).
/// `ETCDC_ERR_TIMEOUT` when none arrived. Free it with `etcdc_completion_free`.
#[no_mangle]
pub extern "C" fn etcdc_cq_next(
    cq: *const etcdc_cq,
    timeout_ms: i64,
    completion_out: *mut *mut etcdc_completion,
) -> etcdc_status {
    stream::next(&QUEUES, cq, timeout_ms, completion_out)
}

/// A descriptor readable while a completion waits. Owned by the queue.
#[no_mangle]
pub extern "C" fn etcdc_cq_fd(cq: *const etcdc_cq, fd_out: *mut c_int) -> etcdc_status {
    stream::fd(&QUEUES, cq, fd_out)
}

/// Frees the queue, with the same callback rules as `etcdc_watch_free`. Operations still
/// in flight into it run to their end; their completions are dropped. NULL does nothing.
#[no_mangle]
pub extern "C" fn etcdc_cq_free(cq: *mut etcdc_cq) -> etcdc_status {
    stream::free(&QUEUES, cq)
}

/// `ETCDC_OK`, or why the operation failed (`ETCDC_ERR_CANCELED` after `etcdc_op_cancel` or
/// its client's free).
#[no_mangle]
pub extern "C" fn etcdc_completion_status(c: *const etcdc_completion) -> etcdc_status {
    status_field(c, "completion", |c| c.status)
}

/// The failure's message ("" on success): what `etcdc_last_error` gives for a blocking call.
#[no_mangle]
pub extern "C" fn etcdc_completion_message(c: *const etcdc_completion) -> *const c_char {
    field(c, c"".as_ptr(), |c| c.message.as_ptr())
}

/// The tag given when the operation started.
#[no_mangle]
pub extern "C" fn etcdc_completion_tag(c: *const etcdc_completion) -> *mut c_void {
    field(c, std::ptr::null_mut(), |c| c.tag as *mut c_void)
}

/// The result a completion holds, borrowed; NULL for another kind of result or a failure.
fn answer<R>(c: *const etcdc_completion, pick: impl FnOnce(&Answer) -> Option<&R>) -> *const R {
    field(c, std::ptr::null(), |c| {
        c.answer
            .as_ref()
            .and_then(pick)
            .map_or(std::ptr::null(), |r| r as *const R)
    })
}

/// A put's result, borrowed from the completion; NULL for another kind or a failure.
#[no_mangle]
pub extern "C" fn etcdc_completion_put_result(
    c: *const etcdc_completion,
) -> *const etcdc_put_result {
    answer(c, |a| match a {
        Answer::Put(r) => Some(r),
        _ => None,
    })
}

/// A get's result, borrowed from the completion; NULL for another kind or a failure.
#[no_mangle]
pub extern "C" fn etcdc_completion_get_result(
    c: *const etcdc_completion,
) -> *const etcdc_get_result {
    answer(c, |a| match a {
        Answer::Get(r) => Some(r),
        _ => None,
    })
}

/// A delete's result, borrowed from the completion; NULL for another kind or a failure.
#[no_mangle]
pub extern "C" fn etcdc_completion_delete_result(
    c: *const etcdc_completion,
) -> *const etcdc_delete_result {
    answer(c, |a| match a {
        Answer::Delete(r) => Some(r),
        _ => None,
    })
}

/// A transaction's result, borrowed from the completion; NULL for another kind or a failure.
#[no_mangle]
pub extern "C" fn etcdc_completion_txn_result(
    c: *const etcdc_completion,
) -> *const etcdc_txn_result {
    answer(c, |a| match a {
        Answer::Txn(r) => Some(r),
        _ => None,
    })
}

/// A lease grant's lease id; 0 for another kind or a failure.
#[no_mangle]
pub extern "C" fn etcdc_completion_lease_id(c: *const etcdc_completion) -> i64 {
    field(c, 0, |c| match &c.answer {
        Some(Answer::Number(n)) => *n,
        _ => 0,
    })
}

/// A lease time-to-live's answer, borrowed; NULL for another kind or a failure.
#[no_mangle]
pub extern "C" fn etcdc_completion_lease_info(
    c: *const etcdc_completion,
) -> *const etcdc_lease_info {
    answer(c, |a| match a {
        Answer::LeaseInfo(r) => Some(r),
        _ => None,
    })
}

/// A lease list, borrowed; NULL for another kind or a failure.
#[no_mangle]
pub extern "C" fn etcdc_completion_lease_list(
    c: *const etcdc_completion,
) -> *const etcdc_lease_list {
    answer(c, |a| match a {
        Answer::Leases(r) => Some(r),
        _ => None,
    })
}

/// A member list, borrowed; NULL for another kind or a failure.
#[no_mangle]
pub extern "C" fn etcdc_completion_member_list(
    c: *const etcdc_completion,
) -> *const etcdc_member_list {
    answer(c, |a| match a {
        Answer::Members(r) => Some(r),
        _ => None,
    })
}

/// An endpoint status, borrowed; NULL for another kind or a failure.
#[no_mangle]
pub extern "C" fn etcdc_completion_endpoint_status(
    c: *const etcdc_completion,
) -> *const etcdc_endpoint_status {
    answer(c, |a| match a {
        Answer::Status(r) => Some(r),
        _ => None,
    })
}

/// A queue item (enqueued or dequeued), borrowed; NULL for another kind or a failure.
#[no_mangle]
pub extern "C" fn etcdc_completion_queue_item(
    c: *const etcdc_completion,
) -> *const super::queue::etcdc_queue_item {
    answer(c, |a| match a {
        Answer::Item(r) => Some(r),
        _ => None,
    })
}

/// A watch's response (`etcdc_watch_next_async`), borrowed; NULL for another kind or a
/// failure.
#[no_mangle]
pub extern "C" fn etcdc_completion_watch_response(
    c: *const etcdc_completion,
) -> *const super::watch::etcdc_watch_response {
    answer(c, |a| match a {
        Answer::Watch(r) => Some(r),
        _ => None,
    })
}

/// A lease keeper's or session's event (`etcdc_lease_keeper_next_async`,
/// `etcdc_session_next_async`), borrowed; NULL for another kind or a failure.
#[no_mangle]
pub extern "C" fn etcdc_completion_lease_event(
    c: *const etcdc_completion,
) -> *const super::lease::etcdc_lease_event {
    answer(c, |a| match a {
        Answer::Lease(r) => Some(r),
        _ => None,
    })
}

/// A registration's state change (`etcdc_registration_next_async`), borrowed; NULL for
/// another kind or a failure.
#[no_mangle]
pub extern "C" fn etcdc_completion_registration_event(
    c: *const etcdc_completion,
) -> *const super::registry::etcdc_registration_event {
    answer(c, |a| match a {
        Answer::Registration(r) => Some(r),
        _ => None,
    })
}

/// A discovery change (`etcdc_discovery_next_async`), borrowed; NULL for another kind or a
/// failure.
#[no_mangle]
pub extern "C" fn etcdc_completion_discovery_event(
    c: *const etcdc_completion,
) -> *const super::registry::etcdc_discovery_event {
    answer(c, |a| match a {
        Answer::Discovery(r) => Some(r),
        _ => None,
    })
}

/// An observed leader (`etcdc_observer_next_async`), borrowed; NULL for another kind or a
/// failure.
#[no_mangle]
pub extern "C" fn etcdc_completion_leader(
    c: *const etcdc_completion,
) -> *const super::election::etcdc_leader {
    answer(c, |a| match a {
        Answer::Leader(r) => Some(r),
        _ => None,
    })
}

/// The registration `etcdc_register_async` made, handed over to the caller (free it with
/// `etcdc_registration_free`): the first call returns it, later ones NULL, as does a
/// completion of another kind or a failure. A completion freed without taking it frees the
/// registration (unregistering it).
#[no_mangle]
pub extern "C" fn etcdc_completion_take_registration(
    c: *const etcdc_completion,
) -> *mut super::registry::etcdc_registration {
    field(c, std::ptr::null_mut(), |c| match &c.answer {
        Some(Answer::Registered(h)) => {
            h.0.lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
                .map_or(std::ptr::null_mut(), |id| id as *mut _)
        }
        _ => std::ptr::null_mut(),
    })
}

/// Frees a pulled completion (and the result it holds). NULL does nothing.
#[no_mangle]
pub extern "C" fn etcdc_completion_free(c: *mut etcdc_completion) {
    free_box(c)
}

// ---- operations ----

/// An operation in flight. Optional: `_async` calls take a NULL `op_out`. Free with
/// `etcdc_op_free` (that does not cancel it).
pub struct etcdc_op {
    _opaque: [u8; 0],
}

/// One operation's fate: completed once, by its answer or by a cancel, whichever is first.
pub(crate) struct OpState {
    done: AtomicBool,
    tag: usize,
    sink: Feed<Done>,
    task: Mutex<Option<tokio::task::AbortHandle>>,
    id: u64,
    inflight: std::sync::Weak<Inflight>,
}

impl OpState {
    fn complete(&self, result: std::result::Result<Answer, Error>) {
        self.complete_with(|| result);
    }

    /// Completes the operation with what `result` makes, unless it has completed already:
    /// then `result` is not called and false comes back (the caller still owns its input).
    fn complete_with(&self, result: impl FnOnce() -> std::result::Result<Answer, Error>) -> bool {
        if self.done.swap(true, Ordering::AcqRel) {
            return false;
        }
        self.sink.send_anyway(Done {
            tag: self.tag,
            result: result(),
        });
        if let Some(inflight) = self.inflight.upgrade() {
            inflight.remove(self.id);
        }
        true
    }

    fn cancel(&self, why: &str) {
        self.complete(Err(Error::new(ErrorKind::Canceled, why)));
        if let Some(task) = self.task.lock().unwrap_or_else(|p| p.into_inner()).take() {
            task.abort();
        }
    }
}

/// A client's operations in flight, completed with `ETCDC_ERR_CANCELED` when it is freed.
#[derive(Default)]
pub(crate) struct Inflight {
    ops: Mutex<HashMap<u64, Arc<OpState>>>,
}

static NEXT_OP: AtomicU64 = AtomicU64::new(1);

impl Inflight {
    fn remove(&self, id: u64) {
        self.ops
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }

    /// Completes every operation in flight with `ETCDC_ERR_CANCELED`.
    pub fn cancel_all(&self) {
        let ops: Vec<Arc<OpState>> = self
            .ops
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(_, op)| op)
            .collect();
        for op in ops {
            op.cancel("the client was freed with the operation in flight");
        }
    }
}

pub(crate) static OPS: Table<Arc<OpState>> = Table::new(13, "operation");

/// Starts `call` on the client's runtime, completing into `cq` with `tag`; the operation's
/// handle goes to `op_out` when that is not NULL. Everything about the arguments was checked
/// before: from here on, the only outcome is the completion.
pub(crate) fn start<F>(
    c: &Client,
    cq: *const etcdc_cq,
    tag: *mut c_void,
    op_out: *mut *mut etcdc_op,
    call: F,
) -> Result<()>
where
    F: Future<Output = Result<Answer>> + Send + 'static,
{
    begin(
        &c.rt,
        Some(&c.inflight),
        cq,
        tag,
        op_out,
        |running| async move {
            let result = call.await;
            running.complete(result);
        },
    )
}

/// Where an `_async` call completes: the queue, the caller's tag and the optional handle
/// out-pointer, as every `_async` export takes them.
pub(crate) struct Queued {
    pub cq: *const etcdc_cq,
    pub tag: *mut c_void,
    pub op_out: *mut *mut etcdc_op,
}

impl Queued {
    /// `start` with these.
    pub fn start<F>(self, c: &Client, call: F) -> Result<()>
    where
        F: Future<Output = Result<Answer>> + Send + 'static,
    {
        start(c, self.cq, self.tag, self.op_out, call)
    }
}

/// Runs `task` (which completes its operation) on `rt`; with `inflight`, freeing that
/// client cancels the operation.
fn begin<F>(
    rt: &tokio::runtime::Handle,
    inflight: Option<&Arc<Inflight>>,
    cq: *const etcdc_cq,
    tag: *mut c_void,
    op_out: *mut *mut etcdc_op,
    task: impl FnOnce(Arc<OpState>) -> F,
) -> Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let sink = QUEUES.get(cq)?.with_source(|s| Ok(s.0.clone()))?;
    let op = Arc::new(OpState {
        done: AtomicBool::new(false),
        tag: tag as usize,
        sink,
        task: Mutex::new(None),
        id: NEXT_OP.fetch_add(1, Ordering::Relaxed),
        inflight: inflight.map_or_else(std::sync::Weak::new, Arc::downgrade),
    });
    if let Some(inflight) = inflight {
        inflight
            .ops
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(op.id, op.clone());
    }
    let running = rt.spawn(task(op.clone()));
    *op.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(running.abort_handle());
    if !op_out.is_null() {
        let handle: *mut etcdc_op = OPS.insert(op);
        // SAFETY: a non-NULL out-pointer points at writable storage for one pointer.
        unsafe { *op_out = handle };
    }
    Ok(())
}

/// Every stream's `_next_async`: the stream's next item (or its end: `ETCDC_ERR_CLOSED`
/// after a clean end, else why it failed) completes into `cq` with `tag`. An item is taken
/// only by an operation that delivers it: one canceled meanwhile puts it back.
pub(crate) fn next_async<T, S, R, H>(
    table: &'static Table<StreamHandle<T, S>>,
    handle: *const H,
    cq: *const etcdc_cq,
    tag: *mut c_void,
    op_out: *mut *mut etcdc_op,
    answer: fn(R) -> Answer,
) -> etcdc_status
where
    T: Send + 'static,
    S: Send + Sync + 'static,
    R: CItem<T>,
{
    guard(|| {
        let h = table.get(handle)?;
        h.stream().ensure_pull()?;
        let rt = crate::runtime::handle()?;
        begin(&rt, None, cq, tag, op_out, |running| async move {
            let mut next = Some(h.stream().next_async().await);
            let delivered = running.complete_with(|| match next.take() {
                Some(Ok(t)) => Ok(answer(R::from_item(t))),
                Some(Err(e)) => Err(e),
                None => Err(Error::new(ErrorKind::Internal, "no item")),
            });
            if let (false, Some(Ok(t))) = (delivered, next) {
                h.stream().put_back(t);
            }
        })
    })
}

/// Every `_async` export: `prepare` checks the arguments and builds the call on the caller's
/// thread (its error is the export's status, and then nothing completes); the call then runs
/// on the runtime and completes into `cq` with `tag`.
fn launch<P, Fut>(
    client: *const etcdc_client,
    cq: *const etcdc_cq,
    tag: *mut c_void,
    op_out: *mut *mut etcdc_op,
    prepare: P,
) -> etcdc_status
where
    P: FnOnce(&Client, Arc<dyn crate::api::Etcd>) -> Result<Fut>,
    Fut: Future<Output = Result<Answer>> + Send + 'static,
{
    guard(|| {
        let c = CLIENTS.get(client)?;
        let call = prepare(&c, c.etcd.clone())?;
        start(&c, cq, tag, op_out, call)
    })
}

/// Cancels an operation: it completes with `ETCDC_ERR_CANCELED` unless it had completed
/// already (then nothing happens). A write may still have been applied by the cluster.
#[no_mangle]
pub extern "C" fn etcdc_op_cancel(op: *const etcdc_op) -> etcdc_status {
    guard(|| {
        OPS.get(op)?.cancel("canceled by etcdc_op_cancel");
        Ok(())
    })
}

/// Frees an operation's handle (the operation goes on and completes). NULL does nothing.
#[no_mangle]
pub extern "C" fn etcdc_op_free(op: *mut etcdc_op) -> etcdc_status {
    if op.is_null() {
        return etcdc_status::ETCDC_OK;
    }
    guard(|| OPS.remove(op).map(drop))
}

// ---- the asynchronous forms ----

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
        let default = etcdc_put_options::default();
        let opts = opts_or(opts, &default);
        let req = opts.request(key, key_len, value, value_len)?;
        let deadline = c.deadline(opts.timeout_ms)?;
        Ok(async move { Ok(Answer::Put(etcd.put(req, deadline).await?.into())) })
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
        let default = etcdc_get_options::default();
        let opts = opts_or(opts, &default);
        let req = opts.request(key, key_len)?;
        let deadline = c.deadline(opts.timeout_ms)?;
        Ok(async move { Ok(Answer::Get(etcd.range(req, deadline).await?.into())) })
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
        let default = etcdc_delete_options::default();
        let opts = opts_or(opts, &default);
        let req = opts.request(key, key_len)?;
        let deadline = c.deadline(opts.timeout_ms)?;
        Ok(async move {
            Ok(Answer::Delete(
                etcd.delete_range(req, deadline).await?.into(),
            ))
        })
    })
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
    launch(client, cq, tag, op_out, |c, etcd| {
        let txn = arg(txn, "txn")?;
        let deadline = c.deadline(txn.timeout_ms)?;
        let req = txn.req.clone();
        Ok(async move { Ok(Answer::Txn(etcd.txn(req, deadline).await?.into())) })
    })
}

/// `etcdc_lease_grant`, asynchronously (see `etcdc_put_async`): `etcdc_completion_lease_id`.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn etcdc_lease_grant_async(
    client: *const etcdc_client,
    ttl: i64,
    id: i64,
    timeout_ms: i64,
    cq: *const etcdc_cq,
    tag: *mut c_void,
    op_out: *mut *mut etcdc_op,
) -> etcdc_status {
    launch(client, cq, tag, op_out, |c, etcd| {
        if ttl <= 0 || id < 0 {
            return Err(Error::invalid(format!(
                "lease TTL must be positive and id not negative, got TTL {ttl}, id {id}"
            )));
        }
        let deadline = c.deadline(timeout_ms)?;
        Ok(async move {
            let req = crate::pb::etcdserverpb::LeaseGrantRequest { ttl, id };
            Ok(Answer::Number(etcd.lease_grant(req, deadline).await?.id))
        })
    })
}

/// `etcdc_lease_revoke`, asynchronously (see `etcdc_put_async`).
#[no_mangle]
pub extern "C" fn etcdc_lease_revoke_async(
    client: *const etcdc_client,
    id: i64,
    timeout_ms: i64,
    cq: *const etcdc_cq,
    tag: *mut c_void,
    op_out: *mut *mut etcdc_op,
) -> etcdc_status {
    launch(client, cq, tag, op_out, |c, etcd| {
        let deadline = c.deadline(timeout_ms)?;
        Ok(async move {
            let req = crate::pb::etcdserverpb::LeaseRevokeRequest { id };
            etcd.lease_revoke(req, deadline).await?;
            Ok(Answer::Number(0))
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
        if revision <= 0 {
            return Err(Error::invalid(format!(
                "compact revision must be positive, got {revision}"
            )));
        }
        let deadline = c.deadline(timeout_ms)?;
        Ok(async move {
            let req = crate::pb::etcdserverpb::CompactionRequest { revision, physical };
            etcd.compact(req, deadline).await?;
            Ok(Answer::Number(0))
        })
    })
}

/// `etcdc_lease_time_to_live`, asynchronously (see `etcdc_put_async`):
/// `etcdc_completion_lease_info`.
#[no_mangle]
pub extern "C" fn etcdc_lease_time_to_live_async(
    client: *const etcdc_client,
    id: i64,
    keys: bool,
    timeout_ms: i64,
    cq: *const etcdc_cq,
    tag: *mut c_void,
    op_out: *mut *mut etcdc_op,
) -> etcdc_status {
    launch(client, cq, tag, op_out, |c, etcd| {
        let deadline = c.deadline(timeout_ms)?;
        Ok(async move {
            let req = crate::pb::etcdserverpb::LeaseTimeToLiveRequest { id, keys };
            let info = super::lease::lease_info(etcd.lease_time_to_live(req, deadline).await?)?;
            Ok(Answer::LeaseInfo(info))
        })
    })
}

/// `etcdc_leases`, asynchronously (see `etcdc_put_async`): `etcdc_completion_lease_list`.
#[no_mangle]
pub extern "C" fn etcdc_leases_async(
    client: *const etcdc_client,
    timeout_ms: i64,
    cq: *const etcdc_cq,
    tag: *mut c_void,
    op_out: *mut *mut etcdc_op,
) -> etcdc_status {
    launch(client, cq, tag, op_out, |c, etcd| {
        let deadline = c.deadline(timeout_ms)?;
        Ok(async move {
            let resp = etcd.lease_leases(deadline).await?;
            Ok(Answer::Leases(etcdc_lease_list {
                ids: resp.leases.into_iter().map(|l| l.id).collect(),
            }))
        })
    })
}

/// `etcdc_cluster_members`, asynchronously (see `etcdc_put_async`):
/// `etcdc_completion_member_list`.
#[no_mangle]
pub extern "C" fn etcdc_cluster_members_async(
    client: *const etcdc_client,
    timeout_ms: i64,
    cq: *const etcdc_cq,
    tag: *mut c_void,
    op_out: *mut *mut etcdc_op,
) -> etcdc_status {
    launch(client, cq, tag, op_out, |c, etcd| {
        let deadline = c.deadline(timeout_ms)?;
        Ok(async move { Ok(Answer::Members(etcd.member_list(deadline).await?.into())) })
    })
}

/// `etcdc_endpoint_status_get` for any member, asynchronously (see `etcdc_put_async`):
/// `etcdc_completion_endpoint_status`.
#[no_mangle]
pub extern "C" fn etcdc_endpoint_status_async(
    client: *const etcdc_client,
    timeout_ms: i64,
    cq: *const etcdc_cq,
    tag: *mut c_void,
    op_out: *mut *mut etcdc_op,
) -> etcdc_status {
    launch(client, cq, tag, op_out, |c, etcd| {
        let deadline = c.deadline(timeout_ms)?;
        Ok(async move { Ok(Answer::Status(etcd.status(None, deadline).await?.into())) })
    })
}

/// `etcdc_queue_enqueue`, asynchronously (see `etcdc_put_async`):
/// `etcdc_completion_queue_item` is the new item.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn etcdc_queue_enqueue_async(
    client: *const etcdc_client,
    dir: *const c_char,
    value: *const u8,
    value_len: usize,
    timeout_ms: i64,
    cq: *const etcdc_cq,
    tag: *mut c_void,
    op_out: *mut *mut etcdc_op,
) -> etcdc_status {
    launch(client, cq, tag, op_out, |c, etcd| {
        let value = super::guard::bytes(value, value_len, "value")?.to_vec();
        let dir = super::guard::c_str(dir, "dir")?.to_string();
        let deadline = c.deadline(timeout_ms)?;
        Ok(async move {
            let key = crate::recipes::queue::enqueue(&*etcd, &dir, &value, deadline).await?;
            Ok(Answer::Item(super::queue::etcdc_queue_item { key, value }))
        })
    })
}

/// `etcdc_queue_dequeue`, asynchronously (see `etcdc_put_async`): with `wait`, the
/// completion comes when an item does (or the deadline: negative `timeout_ms` waits without
/// limit) — a consumer in an epoll loop. `etcdc_completion_queue_item` is the item.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn etcdc_queue_dequeue_async(
    client: *const etcdc_client,
    dir: *const c_char,
    wait: bool,
    timeout_ms: i64,
    cq: *const etcdc_cq,
    tag: *mut c_void,
    op_out: *mut *mut etcdc_op,
) -> etcdc_status {
    launch(client, cq, tag, op_out, |c, etcd| {
        let dir = super::guard::c_str(dir, "dir")?.to_string();
        let deadline = if wait {
            c.wait_deadline(timeout_ms)?
        } else {
            c.deadline(timeout_ms)?
        };
        Ok(async move {
            let kv = crate::recipes::queue::dequeue(&*etcd, &dir, wait, deadline).await?;
            Ok(Answer::Item(super::queue::etcdc_queue_item {
                key: kv.key,
                value: kv.value,
            }))
        })
    })
}

// ---- streams into a queue ----

/// `etcdc_watch_next`, asynchronously: the watch's next response completes into `cq` with
/// `tag` (`etcdc_completion_watch_response`); at its end, `ETCDC_ERR_CLOSED` or why it
/// failed. Start the next one when it has completed: one queue then carries every watch,
/// keeper and call of an epoll loop, and a watch's memory stays bounded by its queue limit
/// (it pauses and resumes from history while nobody asks). For a watch in the pull form
/// (started with a NULL callback); `etcdc_op_cancel` leaves the response in the watch.
#[no_mangle]
pub extern "C" fn etcdc_watch_next_async(
    watch: *const super::watch::etcdc_watch,
    cq: *const etcdc_cq,
    tag: *mut c_void,
    op_out: *mut *mut etcdc_op,
) -> etcdc_status {
    next_async(
        &super::watch::WATCHES,
        watch,
        cq,
        tag,
        op_out,
        Answer::Watch,
    )
}

/// `etcdc_lease_keeper_next`, asynchronously (see `etcdc_watch_next_async`):
/// `etcdc_completion_lease_event`.
#[no_mangle]
pub extern "C" fn etcdc_lease_keeper_next_async(
    keeper: *const super::lease::etcdc_lease_keeper,
    cq: *const etcdc_cq,
    tag: *mut c_void,
    op_out: *mut *mut etcdc_op,
) -> etcdc_status {
    next_async(
        &super::lease::KEEPERS,
        keeper,
        cq,
        tag,
        op_out,
        Answer::Lease,
    )
}

/// `etcdc_session_next`, asynchronously (see `etcdc_watch_next_async`):
/// `etcdc_completion_lease_event`.
#[no_mangle]
pub extern "C" fn etcdc_session_next_async(
    session: *const super::election::etcdc_session,
    cq: *const etcdc_cq,
    tag: *mut c_void,
    op_out: *mut *mut etcdc_op,
) -> etcdc_status {
    next_async(
        &super::election::SESSIONS,
        session,
        cq,
        tag,
        op_out,
        Answer::Lease,
    )
}

/// `etcdc_registration_next`, asynchronously (see `etcdc_watch_next_async`):
/// `etcdc_completion_registration_event`.
#[no_mangle]
pub extern "C" fn etcdc_registration_next_async(
    r: *const super::registry::etcdc_registration,
    cq: *const etcdc_cq,
    tag: *mut c_void,
    op_out: *mut *mut etcdc_op,
) -> etcdc_status {
    next_async(
        &super::registry::REGISTRATIONS,
        r,
        cq,
        tag,
        op_out,
        Answer::Registration,
    )
}

/// `etcdc_discovery_next`, asynchronously (see `etcdc_watch_next_async`):
/// `etcdc_completion_discovery_event`.
#[no_mangle]
pub extern "C" fn etcdc_discovery_next_async(
    d: *const super::registry::etcdc_discovery,
    cq: *const etcdc_cq,
    tag: *mut c_void,
    op_out: *mut *mut etcdc_op,
) -> etcdc_status {
    next_async(
        &super::registry::DISCOVERIES,
        d,
        cq,
        tag,
        op_out,
        Answer::Discovery,
    )
}

/// `etcdc_observer_next`, asynchronously (see `etcdc_watch_next_async`):
/// `etcdc_completion_leader`.
#[no_mangle]
pub extern "C" fn etcdc_observer_next_async(
    o: *const super::election::etcdc_observer,
    cq: *const etcdc_cq,
    tag: *mut c_void,
    op_out: *mut *mut etcdc_op,
) -> etcdc_status {
    next_async(
        &super::election::OBSERVERS,
        o,
        cq,
        tag,
        op_out,
        Answer::Leader,
    )
}

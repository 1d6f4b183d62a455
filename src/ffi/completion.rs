//! The asynchronous C API: a call's `_async` form starts it on etcdc's runtime and returns
//! at once; its completion — status, message, result, the caller's tag — goes to a
//! completion queue: pulled (`etcdc_cq_next`, an fd for epoll) or pushed to a callback on the
//! event thread. A queue is one instance of the one stream model and serves any number of
//! clients and calls. Every operation completes exactly once: with its answer, or
//! `ETCDC_ERR_CANCELED` when `etcdc_op_cancel` or freeing its client came first.

use std::any::Any;
use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;

use tokio::runtime::Handle;

pub(crate) use super::driven::Driver;
use super::guard::{arg, cstring, field, free_box, guard, out, status_field};
use super::handle::Table;
use super::status::etcdc_status;
use super::stream::{self, CCallback, CItem, StreamHandle};
use crate::error::{Error, ErrorKind, Result};
use crate::stream::Feed;

/// What an operation returns: the result object its concept's `etcdc_completion_*`
/// accessor hands out (`etcdc_put_result`, a lease id, ...), or `()` for nothing. The queue
/// does not know the concepts: each accessor asks for its own type.
pub(crate) struct Answer(Box<dyn Any + Send>);

impl Answer {
    pub fn new<R: Any + Send>(result: R) -> Self {
        // An Answer inside an Answer would downcast to nothing: a result type is never one.
        debug_assert!(std::any::TypeId::of::<R>() != std::any::TypeId::of::<Answer>());
        Answer(Box::new(result))
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
    /// None on success ("" without an allocation per completion).
    message: Option<CString>,
    answer: Option<Answer>,
}

impl CItem<Done> for etcdc_completion {
    fn from_item(d: Done) -> Self {
        match d.result {
            Ok(answer) => etcdc_completion {
                tag: d.tag,
                status: etcdc_status::ETCDC_OK,
                message: None,
                answer: Some(answer),
            },
            Err(e) => etcdc_completion {
                tag: d.tag,
                status: e.kind.into(),
                message: Some(cstring(&e.message)),
                answer: None,
            },
        }
    }

    fn from_failure(e: Error) -> Self {
        etcdc_completion {
            tag: 0,
            status: e.kind.into(),
            message: Some(cstring(&e.message)),
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

/// The producer end every operation completing into the queue clones, and for a driven
/// queue the runtime its calls run on.
pub(crate) struct Sink {
    feed: Feed<Done>,
    driver: Option<Arc<Driver>>,
}

/// The driver of a driven queue; None for another queue.
pub(crate) fn driver(cq: *const etcdc_cq) -> Result<Option<Arc<Driver>>> {
    QUEUES.get(cq)?.with_source(|s| Ok(s.driver.clone()))
}

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
        out.write(QUEUES.insert(StreamHandle::new(stream, Sink { feed, driver: None })));
        Ok(())
    })
}

/// A new completion queue driven by its caller: the `_async` calls of a remote client
/// (`etcdc_client_connect`) that complete into it — put, get, delete, txn, compact, leases,
/// members, status, the queue recipe — run on the thread that calls `etcdc_cq_next`, over
/// a connection of the queue's own: no hand-off between threads either way, for an event
/// loop that keeps many calls in flight from one thread. They progress only inside
/// `etcdc_cq_next` (their deadlines run all the same). So does a watch started with
/// `etcdc_watch_options_set_queue` on this queue, and its `etcdc_watch_next_async` into it.
/// Other operations complete into it as into any queue, running on etcdc's runtime: an
/// embedded node's client, mutexes, elections, registrations and `_next_async` of other
/// streams. For a loop that waits on other descriptors too, `etcdc_cq_fd` gives one that
/// is readable when `etcdc_cq_next` has work.
/// Free with `etcdc_cq_free`, which ends its calls in flight with it (a write may have been
/// applied or not).
#[no_mangle]
pub extern "C" fn etcdc_cq_new_driven(cq_out: *mut *mut etcdc_cq) -> etcdc_status {
    guard(|| {
        let out = out(cq_out, "cq_out")?;
        let driver = Some(Arc::new(Driver::new()?));
        let (feed, stream) = crate::stream::channel(1024);
        out.write(QUEUES.insert(StreamHandle::new(stream, Sink { feed, driver })));
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
    match driver(cq) {
        Ok(Some(driver)) => guard(|| {
            let out = out(completion_out, "completion_out")?;
            let done = driver.next(QUEUES.get(cq)?.stream(), timeout_ms)?;
            out.write(Box::into_raw(Box::new(etcdc_completion::from_item(done))));
            Ok(())
        }),
        _ => stream::next(&QUEUES, cq, timeout_ms, completion_out),
    }
}

/// A descriptor for `poll`/`epoll` (`POLLIN`), owned by the queue. A queue's: readable while
/// a completion waits. A driven queue's: readable when `etcdc_cq_next` has work — a
/// completion, an answer on one of its connections, a call to start, a resolved name, or a
/// timer of its calls due (a deadline, a retry's pause: on time, within a millisecond). While
/// calls are in flight it also wakes once a second for timers it is not told of (HTTP/2
/// keep-alive pings). On readable, call `etcdc_cq_next` with timeout 0 until
/// `ETCDC_ERR_TIMEOUT`; a wake-up may find nothing. From the first call on,
/// each drive of a driven queue takes a few more system calls to keep the descriptor true.
#[no_mangle]
pub extern "C" fn etcdc_cq_fd(cq: *const etcdc_cq, fd_out: *mut c_int) -> etcdc_status {
    match driver(cq) {
        Ok(Some(driver)) => guard(|| {
            let out = out(fd_out, "fd_out")?;
            out.write(driver.fd(QUEUES.get(cq)?.stream())?);
            Ok(())
        }),
        _ => stream::fd(&QUEUES, cq, fd_out),
    }
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
    field(c, c"".as_ptr(), |c| {
        c.message.as_deref().map_or(c"".as_ptr(), CStr::as_ptr)
    })
}

/// The tag given when the operation started.
#[no_mangle]
pub extern "C" fn etcdc_completion_tag(c: *const etcdc_completion) -> *mut c_void {
    field(c, std::ptr::null_mut(), |c| c.tag as *mut c_void)
}

/// `read` of the result a completion holds if that is an `R`, else `default` (also for a
/// NULL completion or a failure).
pub(crate) fn with_result<R: 'static, T>(
    c: *const etcdc_completion,
    default: T,
    read: impl FnOnce(&R) -> T,
) -> T {
    field(c, None, |c| {
        c.answer
            .as_ref()
            .and_then(|a| a.0.downcast_ref::<R>())
            .map(read)
    })
    .unwrap_or(default)
}

/// The result a completion holds, borrowed, if it is an `R`; NULL for another kind of result
/// or a failure.
pub(crate) fn result<R: 'static>(c: *const etcdc_completion) -> *const R {
    with_result(c, std::ptr::null(), |r: &R| r as *const R)
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
    pub(super) done: AtomicBool,
    tag: usize,
    sink: Feed<Done>,
    task: Mutex<Option<tokio::task::AbortHandle>>,
    id: u64,
    inflight: std::sync::Weak<Inflight>,
}

impl OpState {
    pub(crate) fn complete(&self, result: std::result::Result<Answer, Error>) {
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

pin_project_lite::pin_project! {
    /// `fut`, then `then` on its output: `async move { then(fut.await) }` in one future the
    /// size of the two. An `async` block keeps another copy of the future it awaits
    /// (rust-lang/rust#62958): the three layers around an `etcdc_put_async` call of 120
    /// bytes made a task of more than 1 KiB, copied whole at each layer and allocated past
    /// glibc's per-thread cache, where every such allocation first consolidates the freed
    /// small chunks.
    pub(crate) struct Then<F, G> {
        #[pin]
        fut: F,
        then: Option<G>,
    }
}

impl<F, G> Then<F, G> {
    pub(crate) fn new(fut: F, then: G) -> Self {
        Then {
            fut,
            then: Some(then),
        }
    }
}

impl<F: Future, G: FnOnce(F::Output) -> T, T> Future for Then<F, G> {
    type Output = T;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<T> {
        let this = self.project();
        let out = std::task::ready!(this.fut.poll(cx));
        let then = this
            .then
            .take()
            .expect("a future is not polled once it is done");
        Poll::Ready(then(out))
    }
}

/// Where an operation runs: a runtime, or a driven queue's (started by its next drive).
pub(crate) enum Runner<'a> {
    Runtime(&'a Handle),
    Driven(&'a Driver),
}

/// An operation's task waiting for a drive.
pub(super) type Task = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// Spawns `task` on `rt` where `op`'s cancel can abort it; a cancel that came first (and
/// found no task to abort) aborts it here.
pub(super) fn run(rt: &Handle, op: &OpState, task: impl Future<Output = ()> + Send + 'static) {
    let running = rt.spawn(task);
    *op.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(running.abort_handle());
    if op.done.load(Ordering::Acquire) {
        running.abort();
    }
}

/// Runs `task` (which completes its operation) with `runner`; with `inflight`, freeing that
/// client cancels the operation.
pub(crate) fn begin<F>(
    runner: Runner<'_>,
    inflight: Option<&Arc<Inflight>>,
    cq: *const etcdc_cq,
    tag: *mut c_void,
    op_out: *mut *mut etcdc_op,
    task: impl FnOnce(Arc<OpState>) -> F,
) -> Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let sink = QUEUES.get(cq)?.with_source(|s| Ok(s.feed.clone()))?;
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
    let task = task(op.clone());
    match runner {
        Runner::Runtime(rt) => run(rt, &op, task),
        Runner::Driven(driver) => driver.start(&op, task),
    }
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
pub(crate) fn next_async<R, T, S, H>(
    table: &'static Table<StreamHandle<T, S>>,
    handle: *const H,
    cq: *const etcdc_cq,
    tag: *mut c_void,
    op_out: *mut *mut etcdc_op,
) -> etcdc_status
where
    T: Send + 'static,
    S: Send + Sync + 'static,
    R: CItem<T> + Send + 'static,
{
    guard(|| {
        let h = table.get(handle)?;
        h.stream().ensure_pull()?;
        // Into the queue whose runtime feeds the stream: taken there too, on its thread.
        let home = h.home().filter(|home| {
            driver(cq)
                .ok()
                .flatten()
                .is_some_and(|queue| Arc::ptr_eq(home, &queue))
        });
        let rt;
        let runner = match &home {
            Some(home) => Runner::Driven(home),
            None => {
                rt = crate::runtime::handle()?;
                Runner::Runtime(&rt)
            }
        };
        begin(runner, None, cq, tag, op_out, |running| async move {
            let mut next = Some(h.stream().next_async().await);
            let delivered = running.complete_with(|| match next.take() {
                Some(Ok(t)) => Ok(Answer::new(R::from_item(t))),
                Some(Err(e)) => Err(e),
                None => Err(Error::new(ErrorKind::Internal, "no item")),
            });
            if let (false, Some(Ok(t))) = (delivered, next) {
                h.stream().put_back(t);
            }
        })
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

// ---- streams into a queue ----

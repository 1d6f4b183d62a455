//! Where a stream's items go: to a C callback on etcdc's one event thread, or into a queue
//! the caller pulls from (with an eventfd that is readable while something is waiting).
//! The callback rules: `call` never runs after `drop`; `drop` runs exactly once, after the
//! last `call`; closing from inside the callback returns at once and `drop` follows the call.

use std::collections::VecDeque;
use std::ffi::{c_int, c_void};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use crate::error::{Error, ErrorKind, Result};

pub(crate) struct Callback<T> {
    pub call: Option<unsafe extern "C" fn(*mut c_void, *const T)>,
    pub drop: Option<unsafe extern "C" fn(*mut c_void)>,
    pub user_data: *mut c_void,
}

// SAFETY: the header documents that user_data is handed to call/drop on etcdc's event thread
// (or the freeing thread); making that safe is the caller's side of the contract.
unsafe impl<T> Send for Callback<T> {}
// SAFETY: as above; the callback is only invoked under the sink's own serialization.
unsafe impl<T> Sync for Callback<T> {}

impl<T> Callback<T> {
    /// Runs `drop` for a callback that will never be registered.
    pub fn discard(self) {
        if let Some(drop) = self.drop {
            // SAFETY: the caller's drop function with its own user_data, once.
            unsafe { drop(self.user_data) };
        }
    }
}

fn lock<S>(m: &Mutex<S>) -> MutexGuard<'_, S> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Default)]
struct PushState {
    in_call: bool,
    closed: bool,
    drop_after_call: bool,
    dropped: bool,
}

struct PullState<T> {
    queue: VecDeque<Box<T>>,
    ended: bool,
}

enum Mode<T> {
    Push {
        cb: Callback<T>,
        state: Mutex<PushState>,
    },
    Pull {
        state: Mutex<PullState<T>>,
        fd: c_int,
    },
}

pub(crate) struct Sink<T> {
    mode: Mode<T>,
    cv: Condvar,
}

impl<T: Send + 'static> Sink<T> {
    pub fn push(cb: Callback<T>) -> Arc<Self> {
        Arc::new(Sink {
            mode: Mode::Push {
                cb,
                state: Mutex::new(PushState::default()),
            },
            cv: Condvar::new(),
        })
    }

    pub fn pull() -> Result<Arc<Self>> {
        // SAFETY: plain syscall; the fd is owned by this sink and closed in Drop.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(Error::new(
                ErrorKind::Internal,
                format!("eventfd: {}", std::io::Error::last_os_error()),
            ));
        }
        Ok(Arc::new(Sink {
            mode: Mode::Pull {
                state: Mutex::new(PullState {
                    queue: VecDeque::new(),
                    ended: false,
                }),
                fd,
            },
            cv: Condvar::new(),
        }))
    }

    /// The sink for a C callback, or the pull form when there is none. Takes the callback out
    /// of `cb` only on success, so that a failed start can still run its `drop`.
    pub fn for_callback(cb: &mut Option<Callback<T>>) -> Result<Arc<Self>> {
        if cb.as_ref().is_some_and(|cb| cb.call.is_none()) {
            return Err(Error::invalid(
                "callback->call is NULL (pass a NULL callback for the pull form)",
            ));
        }
        match cb.take() {
            Some(cb) => Ok(Sink::push(cb)),
            None => Sink::pull(),
        }
    }

    /// Hands one item on: to the event thread, or into the pull queue.
    pub fn deliver(self: &Arc<Self>, item: Box<T>) {
        match &self.mode {
            Mode::Push { .. } => {
                let sink = self.clone();
                post(Box::new(move || sink.call(*item)));
            }
            Mode::Pull { state, fd } => {
                let mut st = lock(state);
                if st.queue.is_empty() && !st.ended {
                    signal(*fd);
                }
                st.queue.push_back(item);
                self.cv.notify_all();
            }
        }
    }

    /// The stream is over: a puller gets `ETCDC_ERR_CLOSED` once the queue is empty.
    pub fn end(&self) {
        if let Mode::Pull { state, fd } = &self.mode {
            let mut st = lock(state);
            if st.queue.is_empty() && !st.ended {
                signal(*fd);
            }
            st.ended = true;
            self.cv.notify_all();
        }
    }

    fn call(&self, item: T) {
        let Mode::Push { cb, state } = &self.mode else {
            return;
        };
        {
            let mut st = lock(state);
            if st.closed {
                return;
            }
            st.in_call = true;
        }
        if let Some(call) = cb.call {
            // SAFETY: the caller's function with its own user_data and an item that lives for
            // the call; C code cannot unwind into Rust.
            unsafe { call(cb.user_data, &item) };
        }
        let run_drop = {
            let mut st = lock(state);
            st.in_call = false;
            let run = st.drop_after_call && !st.dropped;
            st.dropped |= run;
            run
        };
        if run_drop {
            cb.drop.inspect(|d| {
                // SAFETY: exactly once (guarded by `dropped`), after the last call.
                unsafe { d(cb.user_data) }
            });
        }
        self.cv.notify_all();
    }

    /// Stops delivery. Waits for a running callback and runs `drop`, except from inside the
    /// callback itself, where it returns at once and `drop` runs when the callback returns.
    pub fn close(&self) {
        let Mode::Push { cb, state } = &self.mode else {
            self.end();
            return;
        };
        let mut st = lock(state);
        st.closed = true;
        if st.dropped || st.drop_after_call {
            return;
        }
        if st.in_call && on_event_thread() {
            st.drop_after_call = true;
            return;
        }
        while st.in_call {
            st = self.cv.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        st.dropped = true;
        drop(st);
        cb.drop.inspect(|d| {
            // SAFETY: exactly once (guarded by `dropped`), no call running or to come.
            unsafe { d(cb.user_data) }
        });
    }

    /// The next pulled item; waits up to `timeout_ms` (negative: no limit, 0: no wait).
    pub fn next(&self, timeout_ms: i64) -> Result<Box<T>> {
        let Mode::Pull { state, fd } = &self.mode else {
            return Err(Error::invalid(
                "this handle delivers through its callback; it has nothing to pull",
            ));
        };
        let until =
            (timeout_ms >= 0).then(|| Instant::now() + Duration::from_millis(timeout_ms as u64));
        let mut st = lock(state);
        loop {
            if let Some(item) = st.queue.pop_front() {
                if st.queue.is_empty() && !st.ended {
                    drain(*fd);
                }
                return Ok(item);
            }
            if st.ended {
                return Err(Error::new(
                    ErrorKind::Closed,
                    "the stream has ended; nothing more will arrive",
                ));
            }
            match until {
                None => st = self.cv.wait(st).unwrap_or_else(|p| p.into_inner()),
                Some(until) => {
                    let left = until.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(Error::new(
                            ErrorKind::Timeout,
                            format!("nothing arrived within {timeout_ms} ms"),
                        ));
                    }
                    st = self
                        .cv
                        .wait_timeout(st, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            }
        }
    }

    pub fn fd(&self) -> Result<c_int> {
        match &self.mode {
            Mode::Pull { fd, .. } => Ok(*fd),
            Mode::Push { .. } => Err(Error::invalid(
                "this handle delivers through its callback; it has no fd",
            )),
        }
    }
}

impl<T> Drop for Sink<T> {
    fn drop(&mut self) {
        if let Mode::Pull { fd, .. } = &self.mode {
            // SAFETY: the sink owns the fd and closes it once.
            unsafe { libc::close(*fd) };
        }
    }
}

fn signal(fd: c_int) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live u64 to our own eventfd.
    unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
}

fn drain(fd: c_int) {
    let mut n: u64 = 0;
    // SAFETY: reads 8 bytes into a live u64 from our own non-blocking eventfd.
    unsafe { libc::read(fd, (&mut n as *mut u64).cast(), 8) };
}

type Job = Box<dyn FnOnce() + Send>;

struct EventThread {
    pid: u32,
    jobs: mpsc::Sender<Job>,
    id: ThreadId,
}

static EVENTS: Mutex<Option<EventThread>> = Mutex::new(None);

/// Runs `job` on etcdc's event thread, starting it if needed. Jobs run one at a time, in
/// the order posted: so the events of one watch arrive in order.
fn post(job: Job) {
    let mut ev = lock(&EVENTS);
    let pid = std::process::id();
    if ev.as_ref().is_none_or(|e| e.pid != pid) {
        let (tx, rx) = mpsc::channel::<Job>();
        let spawned = std::thread::Builder::new()
            .name("etcdc-events".into())
            .spawn(move || {
                for job in rx {
                    job();
                }
            });
        let Ok(thread) = spawned else {
            return;
        };
        if let Some(old) = ev.take() {
            std::mem::forget(old);
        }
        *ev = Some(EventThread {
            pid,
            jobs: tx,
            id: thread.thread().id(),
        });
    }
    if let Some(e) = ev.as_ref() {
        let _ = e.jobs.send(job);
    }
}

fn on_event_thread() -> bool {
    lock(&EVENTS)
        .as_ref()
        .is_some_and(|e| e.id == std::thread::current().id())
}

/// After fork(): the parent's event thread does not exist in the child.
pub(crate) fn forget_event_thread() {
    if let Some(old) = lock(&EVENTS).take() {
        std::mem::forget(old);
    }
}

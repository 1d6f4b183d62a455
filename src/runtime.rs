//! The process-wide tokio runtime every handle runs on, created on first use. A child
//! process after `fork()` has none of the parent's threads: it gets `Forked` until it calls
//! `reinit_after_fork`, which starts afresh.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::eventfd::{EfdFlags, EventFd};
use tokio::runtime::{Builder, Handle, Runtime};
use tokio::time::Instant;

use crate::error::{Error, ErrorKind, Result};

struct Current {
    pid: u32,
    runtime: Runtime,
}

static CURRENT: Mutex<Option<Current>> = Mutex::new(None);
static THREADS: AtomicUsize = AtomicUsize::new(2);
/// The pid the runtime was started in (0: not started): every call compares it with its own
/// without taking a lock.
static STARTED_IN: AtomicU32 = AtomicU32::new(0);

/// Sets the worker thread count; only before the runtime has started.
pub fn set_threads(n: usize) -> Result<()> {
    if n == 0 || n > 1024 {
        return Err(Error::invalid(format!(
            "runtime threads must be 1..=1024, not {n}"
        )));
    }
    let current = CURRENT.lock().unwrap_or_else(|p| p.into_inner());
    if current.is_some() {
        return Err(Error::new(
            ErrorKind::FailedPrecondition,
            "the runtime is already running: set its size before the first etcdc call",
        ));
    }
    THREADS.store(n, Ordering::Relaxed);
    Ok(())
}

/// Runs `f` on this thread inside the runtime `rt`: what creates tasks or connections there
/// (a client's channels, an observer's task) needs the runtime's context. The one way a C
/// caller's thread enters the runtime; calls that wait run on it with `Handle::block_on`.
pub(crate) fn within<T>(rt: &Handle, f: impl FnOnce() -> T) -> T {
    let _entered = rt.enter();
    f()
}

/// The runtime's handle, starting it if needed.
pub fn handle() -> Result<Handle> {
    let mut current = CURRENT.lock().unwrap_or_else(|p| p.into_inner());
    let pid = std::process::id();
    if let Some(c) = current.as_ref() {
        if c.pid != pid {
            return Err(forked_error());
        }
        return Ok(c.runtime.handle().clone());
    }
    let runtime = with_sigpipe_blocked(|| {
        Builder::new_multi_thread()
            .worker_threads(THREADS.load(Ordering::Relaxed))
            .thread_name("etcdc-runtime")
            .on_thread_start(block_sigpipe)
            .enable_all()
            .build()
    })
    .map_err(|e| {
        Error::new(
            ErrorKind::Internal,
            format!("cannot start the runtime: {e}"),
        )
    })?;
    let handle = runtime.handle().clone();
    *current = Some(Current { pid, runtime });
    STARTED_IN.store(pid, Ordering::Release);
    Ok(handle)
}

/// Blocks SIGPIPE on the calling thread. Every thread etcdc starts does this first: a write
/// to a connection whose member just died then fails with EPIPE instead of killing a host
/// process that leaves SIGPIPE at its default (most C programs do).
pub(crate) fn block_sigpipe() {
    use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGPIPE);
    let _ = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None);
}

/// Runs `start` (which starts threads) with SIGPIPE blocked on the calling thread, then
/// restores the caller's mask: a thread inherits its creator's mask, so the threads started
/// are born with SIGPIPE blocked — not only once their first line has run, which left a
/// moment where a write could kill the host (and a check of /proc could see it unblocked).
pub(crate) fn with_sigpipe_blocked<T>(start: impl FnOnce() -> T) -> T {
    use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGPIPE);
    let mut old = SigSet::empty();
    let blocked = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut old)).is_ok();
    let started = start();
    if blocked {
        let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
    }
    started
}

/// The error for a call made in a child process that inherited the parent's runtime.
pub fn forked_error() -> Error {
    Error::new(
        ErrorKind::Closed,
        "etcdc was started before fork(): call etcdc_reinit_after_fork() in the child",
    )
}

/// A fork handler is installed (`fork_handler_installed`): `FORKED` says what the pid
/// comparison said, without a system call per check.
static FORK_HANDLER: AtomicBool = AtomicBool::new(false);
/// Set in a child process of a parent that had started the runtime.
static FORKED: AtomicBool = AtomicBool::new(false);

/// True in a child process that inherited a runtime from its parent.
pub fn is_forked() -> bool {
    if FORK_HANDLER.load(Ordering::Acquire) {
        return FORKED.load(Ordering::Acquire);
    }
    let started_in = STARTED_IN.load(Ordering::Acquire);
    started_in != 0 && started_in != std::process::id()
}

/// The child's side of `fork()`, for a `pthread_atfork` handler (only atomics: safe to run
/// in the child of a multithreaded process).
pub(crate) fn on_fork_in_child() {
    if STARTED_IN.load(Ordering::Acquire) != 0 {
        FORKED.store(true, Ordering::Release);
    }
}

/// `on_fork_in_child` now runs in every child: `is_forked` may trust `FORKED`. Only in a
/// process that is not itself a child with an inherited runtime.
pub(crate) fn fork_handler_installed() {
    FORK_HANDLER.store(true, Ordering::Release);
}

/// In a forked child: forgets the parent's runtime (its threads do not exist here, so it
/// cannot be shut down) so the next call starts a fresh one.
pub fn reinit_after_fork() {
    let mut current = CURRENT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(c) = current.take() {
        if c.pid == std::process::id() {
            *current = Some(c);
        } else {
            std::mem::forget(c);
            STARTED_IN.store(0, Ordering::Release);
            FORKED.store(false, Ordering::Release);
        }
    }
}

/// What a driven queue's descriptor has to wake for beyond its connections' I/O, noted by
/// the code that starts it while the queue's runtime runs on this thread (`driving`): tokio
/// keeps its poller, its timers and its wake-ups from other threads to itself.
pub(crate) struct Notes {
    /// The queue's epoll set: its connections join it as they are made (`connected`).
    pub(crate) set: Epoll,
    /// Written by another thread once it has handed the runtime something (`Afar`); in the
    /// set with `AFAR` as its event's data.
    afar: EventFd,
    /// When the timers set by the runtime's tasks fire, each with a number of its own.
    wakes: Mutex<BTreeSet<(Instant, u64)>>,
    numbers: AtomicU64,
}

impl Notes {
    /// The data of the `afar` descriptor's events in the set.
    pub(crate) const AFAR: u64 = 1;

    pub(crate) fn new() -> nix::Result<Self> {
        let notes = Notes {
            set: Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?,
            afar: EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)?,
            wakes: Mutex::default(),
            numbers: AtomicU64::new(0),
        };
        notes.set.add(
            &notes.afar,
            EpollEvent::new(EpollFlags::EPOLLIN, Self::AFAR),
        )?;
        Ok(notes)
    }

    /// The set reported `AFAR`: what the other thread handed over is taken by this drive.
    pub(crate) fn took_afar(&self) {
        let _ = self.afar.read();
    }

    /// The first timer that fires at `from` or later.
    pub(crate) fn next_wake(&self, from: Instant) -> Option<Instant> {
        let wakes = self.wakes.lock().unwrap_or_else(|p| p.into_inner());
        wakes.range((from, 0)..).next().map(|(at, _)| *at)
    }
}

thread_local! {
    /// The notes of the driven queue whose runtime runs on this thread now.
    static DRIVING: std::cell::RefCell<Option<Arc<Notes>>> =
        const { std::cell::RefCell::new(None) };
}

fn driving_now() -> Option<Arc<Notes>> {
    DRIVING.with(|d| d.borrow().clone())
}

/// Runs `f` (a drive of a driven queue's runtime) with what it starts noted in `notes`.
pub(crate) fn driving<T>(notes: &Arc<Notes>, f: impl FnOnce() -> T) -> T {
    struct Restore(Option<Arc<Notes>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let before = self.0.take();
            DRIVING.with(|d| *d.borrow_mut() = before);
        }
    }
    let _restore = Restore(DRIVING.with(|d| d.borrow_mut().replace(notes.clone())));
    f()
}

/// A new connection: in a driven queue's set, if one is driving (edge-triggered: the set
/// reports each arrival of data or room once, and the runtime's own poller does the I/O).
pub(crate) fn connected(conn: impl std::os::fd::AsFd) {
    DRIVING.with(|d| {
        if let Some(notes) = d.borrow().as_ref() {
            let events = EpollFlags::EPOLLIN
                | EpollFlags::EPOLLOUT
                | EpollFlags::EPOLLRDHUP
                | EpollFlags::EPOLLET;
            if let Err(e) = notes.set.add(conn, EpollEvent::new(events, 0)) {
                crate::observe::log(crate::observe::Level::Warn, || {
                    format!("a driven queue cannot watch its new connection: {e}")
                });
            }
        }
    });
}

/// A timer's wake-up noted for the driven queue driving now, until the timer is dropped.
struct Wake {
    notes: Arc<Notes>,
    key: (Instant, u64),
}

impl Wake {
    fn note(at: Instant) -> Option<Wake> {
        let notes = driving_now()?;
        let key = (at, notes.numbers.fetch_add(1, Ordering::Relaxed));
        notes
            .wakes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key);
        Some(Wake { notes, key })
    }
}

impl Drop for Wake {
    fn drop(&mut self) {
        self.notes
            .wakes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
    }
}

pin_project_lite::pin_project! {
    /// A timer of the client's: tokio's, with its wake-up noted for a driven queue whose
    /// runtime it is set on (so the queue's descriptor fires for it); tokio's alone elsewhere.
    pub(crate) struct Noted<F> {
        #[pin]
        timer: F,
        wake: Option<Wake>,
    }
}

impl<F: Future> Future for Noted<F> {
    type Output = F::Output;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        self.project().timer.poll(cx)
    }
}

pub(crate) fn sleep_until(at: Instant) -> Noted<tokio::time::Sleep> {
    Noted {
        wake: Wake::note(at),
        timer: tokio::time::sleep_until(at),
    }
}

pub(crate) fn sleep(pause: Duration) -> Noted<tokio::time::Sleep> {
    sleep_until(Instant::now() + pause)
}

pub(crate) fn timeout_at<F: Future>(at: Instant, f: F) -> Noted<tokio::time::Timeout<F>> {
    Noted {
        wake: Wake::note(at),
        timer: tokio::time::timeout_at(at, f),
    }
}

pub(crate) fn timeout<F: Future>(limit: Duration, f: F) -> Noted<tokio::time::Timeout<F>> {
    timeout_at(Instant::now() + limit, f)
}

/// Work handed to another thread whose answer wakes a task here: the driven queue driving
/// now (if any) is told once the answer is in (`Afar::answered`), since the wake-up goes to
/// tokio's own poller, in no set of ours.
pub(crate) struct Afar(Option<Arc<Notes>>);

impl Afar {
    pub(crate) fn here() -> Self {
        Afar(driving_now())
    }

    pub(crate) fn answered(self) {
        if let Some(notes) = self.0 {
            let _ = notes.afar.write(1);
        }
    }
}

//! A driven completion queue: its own current-thread runtime, which runs only inside
//! `etcdc_cq_next` on the calling thread, and the connections its calls use.

use std::future::Future;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Poll, Waker};
use std::time::Duration;

use nix::sys::epoll::{EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use tokio::runtime::Handle;
use tokio::time::Instant;

use super::client::Client;
use super::completion::{run, Done, OpState, Task, Then};
use crate::error::{Error, ErrorKind, Result};
use crate::remote::Remote;
use crate::runtime::Notes;
use crate::stream::Stream;
use crate::Etcd;

/// A driven queue's own runtime (current-thread: it runs only inside `etcdc_cq_next`) and
/// the connections it made there, one per remote client that started a call into it.
pub(crate) struct Driver {
    rt: Option<tokio::runtime::Runtime>,
    conns: Mutex<Vec<LocalConn>>,
    waiting: Mutex<Waiting>,
    ready: Readiness,
    /// Counts the times the runtime ran out of work (tokio's `on_thread_park`).
    idle: Arc<Idle>,
    /// Calls of this queue not ended yet (waiting, running): the timer's backstop runs while
    /// any are.
    pending: Arc<AtomicUsize>,
}

/// How late a watched driven queue's descriptor may be for what its notes do not know of
/// while calls are in flight (the timer fires this often then): a timer set inside a library
/// (hyper's keep-alive pings) or a wake-up from another thread that is not ours. The
/// client's own timers (deadlines, retry pauses, connect and handshake timeouts) and name
/// resolutions are noted, so the descriptor fires for them on time.
const BACKSTOP: Duration = Duration::from_secs(1);

/// tokio fires a timer at its next millisecond: the queue's timer fires that much after it.
const TOKIO_TICK: Duration = Duration::from_millis(1);

/// The data of the timer's events in the set.
const TIMER: u64 = 2;

/// The descriptor a driven queue gives its caller (`etcdc_cq_fd`): an epoll set of the
/// queue's connections (edge-triggered, noted as the connector makes them), the queue's
/// completions from elsewhere (its stream's descriptor), a wake for calls started between
/// drives, one for answers from other threads, and a timer. It is readable when a drive has
/// something to do.
struct Readiness {
    notes: Arc<Notes>,
    /// Written when a call waits to be started, or the descriptor is first asked for.
    wake: EventFd,
    timer: TimerFd,
    /// Somebody asked for the descriptor: from then on it has to tell the truth.
    watched: AtomicBool,
    /// When the timer fires, if it is set and has not been read since.
    armed: Mutex<Option<Instant>>,
}

impl Readiness {
    fn new() -> nix::Result<Self> {
        let ready = Readiness {
            notes: Arc::new(Notes::new()?),
            wake: EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)?,
            timer: TimerFd::new(
                ClockId::CLOCK_MONOTONIC,
                TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
            )?,
            watched: AtomicBool::new(false),
            armed: Mutex::new(None),
        };
        let set = &ready.notes.set;
        set.add(&ready.wake, EpollEvent::new(EpollFlags::EPOLLIN, 0))?;
        set.add(&ready.timer, EpollEvent::new(EpollFlags::EPOLLIN, TIMER))?;
        Ok(ready)
    }

    fn armed(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.armed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Before a drive's end: what made the descriptor readable so far is handled by it.
    fn reset(&self) {
        // The connections' edges, and the level-triggered sources (read here, or by now
        // empty), so a bounded number of rounds empties the ready list.
        let mut events = [EpollEvent::empty(); 32];
        for _ in 0..4 {
            let Ok(n) = self.notes.set.wait(&mut events, EpollTimeout::ZERO) else {
                break;
            };
            for event in &events[..n] {
                match event.data() {
                    TIMER => {
                        let mut armed = self.armed();
                        if self.timer.wait().is_ok() {
                            *armed = None;
                        }
                    }
                    Notes::AFAR => self.notes.took_afar(),
                    _ => {}
                }
            }
            if n < events.len() {
                break;
            }
        }
    }

    /// At a drive's end: the timer is set for the first noted timer of the runtime (past
    /// tokio's rounding), and no later than `BACKSTOP` from now while calls are in flight.
    /// A timer set to fire no later than that stays (a spare expiry costs one drive; setting
    /// it costs a system call).
    fn rearm(&self, pending: bool) {
        let now = Instant::now();
        // A noted timer more than a tick past is one tokio has fired (its task has run):
        // the drive ended once the runtime had nothing to do.
        let noted = self
            .notes
            .next_wake(now.checked_sub(2 * TOKIO_TICK).unwrap_or(now))
            .map(|at| (at + TOKIO_TICK).max(now + TOKIO_TICK));
        let backstop = pending.then(|| now + BACKSTOP);
        let Some(at) = noted.into_iter().chain(backstop).min() else {
            return;
        };
        let mut armed = self.armed();
        if armed.is_some_and(|set| set <= at) {
            return;
        }
        let once = Expiration::OneShot(TimeSpec::from_duration(at - now));
        if self.timer.set(once, TimerSetTimeFlags::empty()).is_ok() {
            *armed = Some(at);
        }
    }
}

/// The runtime's idle moments, counted, for a drive that ends only once what it woke has
/// run (`Idle::next`).
#[derive(Default)]
struct Idle {
    times: AtomicU64,
    waiting: Mutex<Vec<Waker>>,
}

impl Idle {
    /// tokio's `on_thread_park`: the runtime has no task to run.
    fn parked(&self) {
        self.times.fetch_add(1, Ordering::AcqRel);
        // Woken under the lock (a drive's waker marks it woken and pokes tokio's driver,
        // nothing that takes this lock), so the list keeps its room: no allocation per drive.
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        for w in waiting.drain(..) {
            w.wake();
        }
    }

    /// Until the runtime next runs out of work. It then looks at its poller without
    /// waiting (a woken `block_on` is pending work) before this returns.
    async fn next(&self) {
        let seen = self.times.load(Ordering::Acquire);
        std::future::poll_fn(|cx| {
            if self.times.load(Ordering::Acquire) != seen {
                return Poll::Ready(());
            }
            self.waiting
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(cx.waker().clone());
            if self.times.load(Ordering::Acquire) != seen {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }
}

/// Counts a call as pending until its task is dropped (ended, aborted or never started).
struct Alive(Arc<AtomicUsize>);

impl Alive {
    fn new(pending: &Arc<AtomicUsize>) -> Self {
        pending.fetch_add(1, Ordering::AcqRel);
        Alive(pending.clone())
    }
}

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Calls started while no thread drives the queue wait here for the next drive, which
/// spawns them from inside the runtime: a spawn from outside would wake the runtime's
/// driver through its eventfd, a system call per call.
#[derive(Default)]
struct Waiting {
    /// Threads inside `etcdc_cq_next` now: a call started meanwhile is spawned at once.
    drivers: usize,
    calls: Vec<(Arc<OpState>, Task)>,
    /// The wake is written and not yet read by a drive.
    signaled: bool,
}

/// A driven queue's connection for one client, dropped once the client is freed.
type LocalConn = (Weak<Client>, Arc<dyn Etcd>);

impl Driver {
    pub(super) fn new() -> Result<Self> {
        let idle = Arc::new(Idle::default());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .on_thread_park({
                let idle = idle.clone();
                move || idle.parked()
            })
            .build()
            .map_err(|e| Error::new(ErrorKind::Internal, format!("cannot start a runtime: {e}")))?;
        let ready = Readiness::new().map_err(|e| {
            Error::new(
                ErrorKind::Internal,
                format!("cannot make a descriptor: {e}"),
            )
        })?;
        Ok(Driver {
            rt: Some(rt),
            conns: Mutex::default(),
            waiting: Mutex::default(),
            ready,
            idle,
            pending: Arc::default(),
        })
    }

    /// The descriptor for the caller's epoll set (`etcdc_cq_fd`); `completions` is the
    /// queue's stream, into which operations that do not run here complete.
    pub(super) fn fd(&self, completions: &Stream<Done>) -> Result<RawFd> {
        let completed = completions.fd()?;
        if !self.ready.watched.load(Ordering::Acquire) {
            // SAFETY: `completed` is the stream's descriptor, open while the queue is;
            // borrowed for the one call that adds it to the set.
            let completed = unsafe { BorrowedFd::borrow_raw(completed) };
            match self
                .ready
                .notes
                .set
                .add(completed, EpollEvent::new(EpollFlags::EPOLLIN, 0))
            {
                // EEXIST: another thread's first look added it.
                Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
                Err(e) => {
                    return Err(Error::new(
                        ErrorKind::Internal,
                        format!("cannot watch completions: {e}"),
                    ))
                }
            }
            if !self.ready.watched.swap(true, Ordering::AcqRel) {
                // The first look drives: it starts the calls waiting and arms the timer.
                self.signal(&mut self.waiting());
            }
        }
        Ok(self.ready.notes.set.0.as_raw_fd())
    }

    /// Makes a watched descriptor readable until the next drive.
    fn signal(&self, waiting: &mut Waiting) {
        if !waiting.signaled && self.ready.wake.write(1).is_ok() {
            waiting.signaled = true;
        }
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts an operation's task: at the next drive, or now if one is under way.
    pub(super) fn start(&self, op: &Arc<OpState>, task: impl Future<Output = ()> + Send + 'static) {
        let alive = Alive::new(&self.pending);
        let task: Task = Box::pin(Then::new(task, move |()| drop(alive)));
        let mut waiting = self.waiting();
        if self.ready.watched.load(Ordering::Acquire) {
            // Also when a drive is under way: it may be ending.
            self.signal(&mut waiting);
        }
        if waiting.drivers == 0 {
            waiting.calls.push((op.clone(), task));
            return;
        }
        drop(waiting);
        run(self.rt().handle(), op, task);
    }

    fn rt(&self) -> &tokio::runtime::Runtime {
        self.rt
            .as_ref()
            .expect("a driver's runtime lives as long as the driver")
    }

    /// The connection `c`'s calls into this queue use, on this queue's runtime: its own for
    /// a remote client (made on its first call); None for a client of the embedded node
    /// (its calls run on the node's runtime).
    pub(crate) fn local(&self, c: &Arc<Client>) -> Result<Option<Arc<dyn Etcd>>> {
        let Some(config) = &c.remote else {
            return Ok(None);
        };
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        // A freed client's connection goes with it; a live one's address is its own.
        conns.retain(|(client, _)| client.strong_count() > 0);
        if let Some((_, etcd)) = conns
            .iter()
            .find(|(client, _)| client.as_ptr() == Arc::as_ptr(c))
        {
            return Ok(Some(etcd.clone()));
        }
        let etcd: Arc<dyn Etcd> = Arc::new(crate::runtime::within(self.rt().handle(), || {
            Remote::new(config.clone())
        })?);
        conns.push((Arc::downgrade(c), etcd.clone()));
        Ok(Some(etcd))
    }

    /// The queue's next completion, running its calls on this thread meanwhile.
    pub(super) fn next(&self, stream: &Stream<Done>, timeout_ms: i64) -> Result<Done> {
        if let Some(done) = stream.try_next()? {
            return Ok(done);
        }
        let timed_out = || {
            Error::new(
                ErrorKind::Timeout,
                format!("nothing arrived within {timeout_ms} ms"),
            )
        };
        self.drive(async {
            match timeout_ms {
                ..0 => stream.next_async().await,
                0 => {
                    // What is ready: a few rounds of the connections' I/O and the calls it
                    // wakes, no waiting.
                    for _ in 0..3 {
                        tokio::task::yield_now().await;
                        if let Some(done) = stream.try_next()? {
                            return Ok(done);
                        }
                    }
                    Err(timed_out())
                }
                ms => tokio::time::timeout(Duration::from_millis(ms as u64), stream.next_async())
                    .await
                    .unwrap_or_else(|_| Err(timed_out())),
            }
        })
    }

    /// Runs the queue on this thread until `until` is done: the calls waiting are started,
    /// and everything of the queue's runtime runs meanwhile.
    pub(crate) fn drive<T>(&self, until: impl Future<Output = T>) -> T {
        struct Driving<'a>(&'a Driver);
        impl Drop for Driving<'_> {
            fn drop(&mut self) {
                self.0.waiting().drivers -= 1;
            }
        }
        let watched = self.ready.watched.load(Ordering::Acquire);
        let calls = {
            let mut waiting = self.waiting();
            waiting.drivers += 1;
            if waiting.signaled {
                let _ = self.ready.wake.read();
                waiting.signaled = false;
            }
            std::mem::take(&mut waiting.calls)
        };
        let _driving = Driving(self);
        let drive = || {
            self.rt().block_on(async {
                let here = Handle::current();
                let mut calls = calls;
                for (op, task) in calls.drain(..) {
                    // A call canceled before it started is not sent.
                    if !op.done.load(Ordering::Acquire) {
                        run(&here, &op, task);
                    }
                }
                {
                    // The list's room goes back for the calls started before the next drive.
                    let mut waiting = self.waiting();
                    if waiting.calls.capacity() < calls.capacity() {
                        calls.append(&mut waiting.calls);
                        waiting.calls = calls;
                    }
                }
                let done = until.await;
                if watched {
                    // The set's ready list is emptied (the runtime's poller holds the same
                    // events), then the drive ends idle: what those events woke has run, so
                    // nothing is left for which the descriptor would not wake again (later
                    // events are in the set; the second idle covers a drive that found its
                    // completion before the runtime first looked at its poller). Emptied
                    // here rather than at the start, the edges of this drive's own writes
                    // do not wake the loop for a drive with nothing to do.
                    self.ready.reset();
                    self.idle.next().await;
                    self.idle.next().await;
                }
                done
            })
        };
        let done = without_sigpipe(|| crate::runtime::driving(&self.ready.notes, drive));
        if watched {
            self.ready.rearm(self.pending.load(Ordering::Acquire) > 0);
        }
        done
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // Its connections go first, then its calls, dropped where they stand: nothing
        // waits for a member.
        self.conns
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Runs `f`, which writes to connections on the caller's own thread (a driven completion
/// queue), with SIGPIPE blocked there: a write to a connection a member closed then fails
/// with EPIPE instead of killing a host that leaves SIGPIPE at its default. A SIGPIPE raised
/// meanwhile is taken off the thread before the caller's mask comes back.
fn without_sigpipe<T>(f: impl FnOnce() -> T) -> T {
    use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow, Signal};

    struct Restore(SigSet);
    impl Drop for Restore {
        fn drop(&mut self) {
            // SAFETY: sigset_t values filled by sigemptyset/sigpending, and a zero timeout:
            // sigtimedwait takes a pending SIGPIPE (blocked here) without waiting.
            unsafe {
                let mut pending = std::mem::zeroed::<libc::sigset_t>();
                if libc::sigpending(&mut pending) == 0
                    && libc::sigismember(&pending, libc::SIGPIPE) == 1
                {
                    let mut pipe = std::mem::zeroed::<libc::sigset_t>();
                    libc::sigemptyset(&mut pipe);
                    libc::sigaddset(&mut pipe, libc::SIGPIPE);
                    let now = libc::timespec {
                        tv_sec: 0,
                        tv_nsec: 0,
                    };
                    libc::sigtimedwait(&pipe, std::ptr::null_mut(), &now);
                }
            }
            let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&self.0), None);
        }
    }

    let mut set = SigSet::empty();
    set.add(Signal::SIGPIPE);
    let mut old = SigSet::empty();
    let _restore = (pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut old)).is_ok()
        && !old.contains(Signal::SIGPIPE))
    .then(|| Restore(old));
    f()
}

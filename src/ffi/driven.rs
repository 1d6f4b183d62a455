//! A driven completion queue: its own current-thread runtime, which runs only inside
//! `etcdc_cq_next` on the calling thread, and the connections its calls use.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::runtime::Handle;

use super::client::Client;
use super::completion::{run, Done, OpState, Task};
use crate::error::{Error, ErrorKind, Result};
use crate::remote::Remote;
use crate::stream::Stream;
use crate::Etcd;

/// A driven queue's own runtime (current-thread: it runs only inside `etcdc_cq_next`) and
/// the connections it made there, one per remote client that started a call into it.
pub(crate) struct Driver {
    rt: Option<tokio::runtime::Runtime>,
    conns: Mutex<Vec<LocalConn>>,
    waiting: Mutex<Waiting>,
}

/// Calls started while no thread drives the queue wait here for the next drive, which
/// spawns them from inside the runtime: a spawn from outside would wake the runtime's
/// driver through its eventfd, a system call per call.
#[derive(Default)]
struct Waiting {
    /// Threads inside `etcdc_cq_next` now: a call started meanwhile is spawned at once.
    drivers: usize,
    calls: Vec<(Arc<OpState>, Task)>,
}

/// A driven queue's connection for one client, dropped once the client is freed.
type LocalConn = (Weak<Client>, Arc<dyn Etcd>);

impl Driver {
    pub(super) fn new() -> Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::new(ErrorKind::Internal, format!("cannot start a runtime: {e}")))?;
        Ok(Driver {
            rt: Some(rt),
            conns: Mutex::default(),
            waiting: Mutex::default(),
        })
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts an operation's task: at the next drive, or now if one is under way.
    pub(super) fn start(&self, op: &Arc<OpState>, task: Task) {
        let mut waiting = self.waiting();
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
        struct Driving<'a>(&'a Driver);
        impl Drop for Driving<'_> {
            fn drop(&mut self) {
                self.0.waiting().drivers -= 1;
            }
        }
        let calls = {
            let mut waiting = self.waiting();
            waiting.drivers += 1;
            std::mem::take(&mut waiting.calls)
        };
        let _driving = Driving(self);
        without_sigpipe(|| {
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
                match timeout_ms {
                    ..0 => stream.next_async().await,
                    0 => {
                        // What is ready: a few rounds of the connections' I/O and the calls
                        // it wakes, no waiting.
                        for _ in 0..3 {
                            tokio::task::yield_now().await;
                            if let Some(done) = stream.try_next()? {
                                return Ok(done);
                            }
                        }
                        Err(timed_out())
                    }
                    ms => {
                        tokio::time::timeout(Duration::from_millis(ms as u64), stream.next_async())
                            .await
                            .unwrap_or_else(|_| Err(timed_out()))
                    }
                }
            })
        })
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

//! etcdc's one event thread ("etcdc-events"): it runs every push handler (C callbacks), one
//! delivery at a time, so the items of one stream arrive in order and a callback never runs
//! on a runtime worker or inside the call that registered it. It is started when the first
//! push stream is made, and that fails if the thread cannot be started.

use std::cell::Cell;
use std::sync::{mpsc, Arc, Mutex, MutexGuard};

use crate::error::{Error, ErrorKind, Result};

/// Work for the event thread: a stream with something to deliver.
pub(crate) trait Job: Send + Sync {
    fn run(self: Arc<Self>);
}

struct EventThread {
    pid: u32,
    jobs: mpsc::Sender<Arc<dyn Job>>,
}

static EVENTS: Mutex<Option<EventThread>> = Mutex::new(None);

thread_local! {
    static ON_EVENT_THREAD: Cell<bool> = const { Cell::new(false) };
}

fn lock() -> MutexGuard<'static, Option<EventThread>> {
    EVENTS.lock().unwrap_or_else(|p| p.into_inner())
}

/// Starts the event thread in this process if it is not running yet.
pub(crate) fn start() -> Result<()> {
    let mut ev = lock();
    let pid = std::process::id();
    if ev.as_ref().is_some_and(|e| e.pid == pid) {
        return Ok(());
    }
    let (jobs, rx) = mpsc::channel::<Arc<dyn Job>>();
    crate::runtime::with_sigpipe_blocked(|| {
        std::thread::Builder::new()
            .name("etcdc-events".into())
            .spawn(move || {
                ON_EVENT_THREAD.with(|f| f.set(true));
                for job in rx {
                    job.run();
                }
            })
    })
    .map_err(|e| {
        Error::new(
            ErrorKind::Internal,
            format!("cannot start etcdc's event thread: {e}"),
        )
    })?;
    // A parent's thread after fork() does not exist here: forget it, never join it.
    if let Some(old) = ev.replace(EventThread { pid, jobs }) {
        std::mem::forget(old);
    }
    Ok(())
}

/// Queues `job` on the event thread (started by `start` when its stream was made).
pub(crate) fn post(job: Arc<dyn Job>) {
    if let Some(e) = lock().as_ref() {
        let _ = e.jobs.send(job);
    }
}

/// True on the event thread itself.
pub(crate) fn on_event_thread() -> bool {
    ON_EVENT_THREAD.with(|f| f.get())
}

/// After fork(): the parent's event thread does not exist in the child.
pub(crate) fn forget() {
    if let Some(old) = lock().take() {
        std::mem::forget(old);
    }
}

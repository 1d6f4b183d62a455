//! What etcdc tells its host about itself: log records (to a sink the host installs;
//! nothing on stderr by default) and per-client counters of the events that are invisible
//! in call results — stream reconnects, watches resumed, keep-alive stream failures, calls
//! retried on another member.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::stream::Feed;

/// How serious a record is; a sink takes its level and the more serious ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error = 1,
    Warn = 2,
    Info = 3,
    Debug = 4,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub level: Level,
    pub message: String,
}

static SINK: Mutex<Option<(Level, Feed<Record>)>> = Mutex::new(None);

/// Installs the sink for records at `min` or more serious (None: no sink). Records are
/// queued (boundedly: a sink that falls behind loses records, never blocks etcdc).
pub fn set_sink(min: Level, feed: Option<Feed<Record>>) {
    *SINK.lock().unwrap_or_else(|p| p.into_inner()) = feed.map(|f| (min, f));
}

/// Logs a record; `message` is only formatted when a sink wants it.
pub fn log(level: Level, message: impl FnOnce() -> String) {
    let sink = SINK.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((min, feed)) = sink.as_ref() {
        if level <= *min {
            let _ = feed.try_send(Record {
                level,
                message: message(),
            });
        }
    }
}

/// A client's counters.
#[derive(Default, Debug)]
pub struct Counters {
    pub reconnects: AtomicU64,
    pub watch_resumes: AtomicU64,
    pub keepalive_failures: AtomicU64,
    pub retries: AtomicU64,
}

/// The counters at one moment.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct Totals {
    /// Watch and keep-alive streams opened again after they broke.
    pub reconnects: u64,
    /// Watches re-created from their next revision on a new stream after a reconnect.
    pub watch_resumes: u64,
    /// Keep-alive streams that broke.
    pub keepalive_failures: u64,
    /// Unary calls sent again to another member.
    pub retries: u64,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn totals(&self) -> Totals {
        Totals {
            reconnects: self.reconnects.load(Ordering::Relaxed),
            watch_resumes: self.watch_resumes.load(Ordering::Relaxed),
            keepalive_failures: self.keepalive_failures.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
        }
    }
}

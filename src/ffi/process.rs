//! The process: etcdc's version, its runtime's size, and life after fork().

use std::ffi::{c_char, CStr};

use super::guard::{catch, guard};
use super::status::etcdc_status;

/// etcdc's version, "MAJOR.MINOR.PATCH". The string is static.
#[no_mangle]
pub extern "C" fn etcdc_version() -> *const c_char {
    const V: &CStr =
        match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
            Ok(v) => v,
            Err(_) => c"unknown",
        };
    V.as_ptr()
}

/// Sets how many worker threads etcdc's runtime uses (default 2). Only before the first call
/// that needs the runtime; `ETCDC_ERR_FAILED_PRECONDITION` after.
#[no_mangle]
pub extern "C" fn etcdc_runtime_set_threads(threads: u32) -> etcdc_status {
    guard(|| crate::runtime::set_threads(threads as usize))
}

/// In a child process after `fork()`: drops every handle inherited from the parent (they are
/// unusable there) and lets the next call start etcdc afresh. Until it is called, calls in
/// the child return `ETCDC_ERR_FORKED`. A no-op in a process that did not fork.
#[no_mangle]
pub extern "C" fn etcdc_reinit_after_fork() -> etcdc_status {
    // Not `guard`: that refuses every call in a forked child, and this is the one that must run.
    catch(|| {
        if crate::runtime::is_forked() {
            forget_all();
            crate::events::forget();
        }
        crate::runtime::reinit_after_fork();
        Ok(())
    })
}

pub(crate) fn forget_all() {
    super::client::CLIENTS.forget();
    super::watch::WATCHES.forget();
    super::lease::KEEPERS.forget();
    super::node::NODES.forget();
    super::registration::REGISTRATIONS.forget();
    super::discovery::DISCOVERIES.forget();
    super::session::SESSIONS.forget();
    super::mutex::MUTEXES.forget();
    super::election::ELECTIONS.forget();
    super::election::OBSERVERS.forget();
    super::v2::V2_WATCHERS.forget();
    super::completion::QUEUES.forget();
    super::completion::OPS.forget();
}

/// How serious a log record is (`ETCDC_LOG_*`).
pub type etcdc_log_level = u32;
/// Failures etcdc could not work around.
pub const ETCDC_LOG_ERROR: etcdc_log_level = 1;
/// A member unreachable, a stream broken and moved to another member.
pub const ETCDC_LOG_WARN: etcdc_log_level = 2;
/// Watches resumed.
pub const ETCDC_LOG_INFO: etcdc_log_level = 3;
/// Each retry.
pub const ETCDC_LOG_DEBUG: etcdc_log_level = 4;

/// One log record, borrowed for the callback's call.
pub struct etcdc_log_record {
    level: etcdc_log_level,
    message: std::ffi::CString,
}

/// The record's level.
#[no_mangle]
pub extern "C" fn etcdc_log_record_level(r: *const etcdc_log_record) -> etcdc_log_level {
    super::guard::field(r, ETCDC_LOG_ERROR, |r| r.level)
}

/// The record's text.
#[no_mangle]
pub extern "C" fn etcdc_log_record_message(r: *const etcdc_log_record) -> *const c_char {
    super::guard::field(r, c"".as_ptr(), |r| r.message.as_ptr())
}

impl super::stream::CItem<crate::observe::Record> for etcdc_log_record {
    fn from_item(r: crate::observe::Record) -> Self {
        use crate::observe::Level;
        etcdc_log_record {
            level: match r.level {
                Level::Error => ETCDC_LOG_ERROR,
                Level::Warn => ETCDC_LOG_WARN,
                Level::Info => ETCDC_LOG_INFO,
                Level::Debug => ETCDC_LOG_DEBUG,
            },
            message: super::guard::cstring(&r.message),
        }
    }

    fn from_failure(e: crate::error::Error) -> Self {
        etcdc_log_record {
            level: ETCDC_LOG_ERROR,
            message: super::guard::cstring(&e.message),
        }
    }
}

/// A log callback, with the rules of every etcdc callback: `call` runs on etcdc's event
/// thread; `drop` runs once, after the last `call`.
#[repr(C)]
pub struct etcdc_log_callback {
    pub call: Option<
        unsafe extern "C" fn(user_data: *mut std::ffi::c_void, record: *const etcdc_log_record),
    >,
    pub drop: Option<unsafe extern "C" fn(user_data: *mut std::ffi::c_void)>,
    pub user_data: *mut std::ffi::c_void,
}

/// Sends etcdc's log records at `min_level` or more serious to `callback` (NULL: none, the
/// default — etcdc writes nothing to stderr or stdout). A callback that falls behind loses
/// records (1,024 are queued); etcdc never waits for it. Replacing the callback drops the
/// previous one after its last record.
#[no_mangle]
pub extern "C" fn etcdc_set_log_callback(
    min_level: etcdc_log_level,
    callback: *const etcdc_log_callback,
) -> etcdc_status {
    use crate::observe::Level;
    let cb = super::guard::arg(callback, "callback")
        .ok()
        .map(|cb| super::stream::CCallback::new(cb.call, cb.drop, cb.user_data));
    guard(|| {
        let level = match min_level {
            ETCDC_LOG_ERROR => Level::Error,
            ETCDC_LOG_WARN => Level::Warn,
            ETCDC_LOG_INFO => Level::Info,
            ETCDC_LOG_DEBUG => Level::Debug,
            other => {
                return Err(crate::error::Error::invalid(format!(
                    "unknown log level {other}"
                )))
            }
        };
        let Some(cb) = cb else {
            crate::observe::set_sink(level, None);
            LOG_STREAM.lock().unwrap_or_else(|p| p.into_inner()).take();
            return Ok(());
        };
        let (feed, stream) =
            super::stream::open::<crate::observe::Record, etcdc_log_record>(Some(cb), 1024)?;
        // The consumer end is kept while the sink is installed; replacing it closes the
        // previous one, whose `drop` then runs.
        LOG_STREAM
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replace(stream);
        crate::observe::set_sink(level, Some(feed));
        Ok(())
    })
}

/// The consumer end of the installed log sink.
static LOG_STREAM: std::sync::Mutex<Option<crate::stream::Stream<crate::observe::Record>>> =
    std::sync::Mutex::new(None);

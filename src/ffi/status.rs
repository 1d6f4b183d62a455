//! Status codes and the per-thread last-error message.

use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};

use crate::error::ErrorKind;

/// The outcome of every fallible etcdc call. 0 is success; values are only ever added.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum etcdc_status {
    ETCDC_OK = 0,
    /// A NULL handle or buffer, a bad option value, a malformed endpoint.
    ETCDC_ERR_INVALID_ARGUMENT = 1,
    /// No such key, lease or member.
    ETCDC_ERR_NOT_FOUND = 2,
    /// A compare-and-swap's condition did not hold.
    ETCDC_ERR_COMPARE_FAILED = 3,
    /// The revision asked for has been compacted away.
    ETCDC_ERR_COMPACTED = 4,
    /// The revision asked for is newer than the store's.
    ETCDC_ERR_FUTURE_REVISION = 5,
    /// The request is larger than the server (1.5 MiB by default) or client (2 MiB) accepts.
    ETCDC_ERR_TOO_LARGE = 6,
    /// More than the server's limit of operations in one transaction (128 by default).
    ETCDC_ERR_TOO_MANY_OPS = 7,
    /// No member could be reached, or the member went away during the call.
    ETCDC_ERR_UNAVAILABLE = 8,
    /// The call's deadline passed (or, for a pull call, nothing arrived in time).
    ETCDC_ERR_TIMEOUT = 9,
    /// The call or stream was canceled.
    ETCDC_ERR_CANCELED = 10,
    /// The member has no Raft leader.
    ETCDC_ERR_NO_LEADER = 11,
    /// The user may not do this.
    ETCDC_ERR_PERMISSION = 12,
    /// Authentication failed or its token expired.
    ETCDC_ERR_AUTH = 13,
    /// The cluster's storage quota is exhausted (etcd's NOSPACE alarm).
    ETCDC_ERR_NO_SPACE = 14,
    /// A panic inside etcdc was caught at the boundary; the message says where.
    ETCDC_ERR_PANIC = 15,
    /// etcdc was in use before `fork()`: call `etcdc_reinit_after_fork()` in the child.
    ETCDC_ERR_FORKED = 16,
    /// The server is overloaded ("etcdserver: too many requests"): back off and retry.
    ETCDC_ERR_TOO_MANY_REQUESTS = 17,
    /// The server refused the call in its current state ("lease already exists", ...).
    ETCDC_ERR_FAILED_PRECONDITION = 18,
    /// The cluster reported data corruption.
    ETCDC_ERR_DATA_LOSS = 19,
    /// The server or this version of etcdc does not support the call.
    ETCDC_ERR_UNSUPPORTED = 20,
    /// An unexpected failure; the message has the details.
    ETCDC_ERR_INTERNAL = 21,
    /// The handle or stream has ended or been closed.
    ETCDC_ERR_CLOSED = 22,
}

use etcdc_status::*;

impl From<ErrorKind> for etcdc_status {
    fn from(kind: ErrorKind) -> Self {
        match kind {
            ErrorKind::InvalidArgument => ETCDC_ERR_INVALID_ARGUMENT,
            ErrorKind::NotFound => ETCDC_ERR_NOT_FOUND,
            ErrorKind::CompareFailed => ETCDC_ERR_COMPARE_FAILED,
            ErrorKind::Compacted => ETCDC_ERR_COMPACTED,
            ErrorKind::FutureRevision => ETCDC_ERR_FUTURE_REVISION,
            ErrorKind::TooLarge => ETCDC_ERR_TOO_LARGE,
            ErrorKind::TooManyOps => ETCDC_ERR_TOO_MANY_OPS,
            ErrorKind::Unavailable => ETCDC_ERR_UNAVAILABLE,
            ErrorKind::Timeout => ETCDC_ERR_TIMEOUT,
            ErrorKind::Canceled => ETCDC_ERR_CANCELED,
            ErrorKind::NoLeader => ETCDC_ERR_NO_LEADER,
            ErrorKind::PermissionDenied => ETCDC_ERR_PERMISSION,
            ErrorKind::Auth => ETCDC_ERR_AUTH,
            ErrorKind::NoSpace => ETCDC_ERR_NO_SPACE,
            ErrorKind::TooManyRequests => ETCDC_ERR_TOO_MANY_REQUESTS,
            ErrorKind::FailedPrecondition => ETCDC_ERR_FAILED_PRECONDITION,
            ErrorKind::DataLoss => ETCDC_ERR_DATA_LOSS,
            ErrorKind::Unsupported => ETCDC_ERR_UNSUPPORTED,
            ErrorKind::Internal => ETCDC_ERR_INTERNAL,
            ErrorKind::Closed => ETCDC_ERR_CLOSED,
        }
    }
}

/// The constant name of a status code, e.g. "ETCDC_ERR_TIMEOUT"; "ETCDC_UNKNOWN" for a value
/// this version does not know. Takes an int so that any value is safe to pass. The string is
/// static.
#[no_mangle]
pub extern "C" fn etcdc_status_str(status: i32) -> *const c_char {
    let name: &'static CStr = match status {
        0 => c"ETCDC_OK",
        1 => c"ETCDC_ERR_INVALID_ARGUMENT",
        2 => c"ETCDC_ERR_NOT_FOUND",
        3 => c"ETCDC_ERR_COMPARE_FAILED",
        4 => c"ETCDC_ERR_COMPACTED",
        5 => c"ETCDC_ERR_FUTURE_REVISION",
        6 => c"ETCDC_ERR_TOO_LARGE",
        7 => c"ETCDC_ERR_TOO_MANY_OPS",
        8 => c"ETCDC_ERR_UNAVAILABLE",
        9 => c"ETCDC_ERR_TIMEOUT",
        10 => c"ETCDC_ERR_CANCELED",
        11 => c"ETCDC_ERR_NO_LEADER",
        12 => c"ETCDC_ERR_PERMISSION",
        13 => c"ETCDC_ERR_AUTH",
        14 => c"ETCDC_ERR_NO_SPACE",
        15 => c"ETCDC_ERR_PANIC",
        16 => c"ETCDC_ERR_FORKED",
        17 => c"ETCDC_ERR_TOO_MANY_REQUESTS",
        18 => c"ETCDC_ERR_FAILED_PRECONDITION",
        19 => c"ETCDC_ERR_DATA_LOSS",
        20 => c"ETCDC_ERR_UNSUPPORTED",
        21 => c"ETCDC_ERR_INTERNAL",
        22 => c"ETCDC_ERR_CLOSED",
        _ => c"ETCDC_UNKNOWN",
    };
    name.as_ptr()
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

pub(crate) fn set_last_error(message: &str) {
    let c = CString::new(message.replace('\0', "\\0")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

/// The message of the last failed etcdc call on the calling thread, keeping etcd's own text
/// when the server sent one ("etcdserver: requested lease not found"). "" when no call has
/// failed on this thread. Valid until the next failing call on this thread.
#[no_mangle]
pub extern "C" fn etcdc_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

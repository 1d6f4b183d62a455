//! The C ABI: opaque handles, status codes and callbacks over the `Etcd` trait. No logic of
//! its own lives here: every export checks its arguments, calls down, and maps the result.

#![allow(non_camel_case_types)]
// Every export checks its pointers itself (see `guard`, `arg`, `bytes`); they stay callable
// from C, where Rust's `unsafe fn` means nothing.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

pub mod client;
pub mod cluster;
mod handle;
pub mod kv;
pub mod lease;
mod sink;
pub mod txn;
pub mod watch;

use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::error::{Error, ErrorKind, Result};

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

fn set_last_error(message: &str) {
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
            handle::forget_all();
            sink::forget_event_thread();
        }
        crate::runtime::reinit_after_fork();
        Ok(())
    })
}

/// Runs an export's body: refuses work in a forked child, turns an error into its status and
/// the thread's last-error message, and stops a panic at the boundary.
pub(crate) fn guard(body: impl FnOnce() -> Result<()>) -> etcdc_status {
    if crate::runtime::is_forked() {
        set_last_error(&crate::runtime::forked_error().message);
        return ETCDC_ERR_FORKED;
    }
    catch(body)
}

/// `guard` without the fork check.
fn catch(body: impl FnOnce() -> Result<()>) -> etcdc_status {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => ETCDC_OK,
        Ok(Err(e)) => {
            set_last_error(&e.message);
            e.kind.into()
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            set_last_error(&format!("etcdc panicked (a bug; please report it): {what}"));
            ETCDC_ERR_PANIC
        }
    }
}

/// A required pointer argument.
pub(crate) fn arg<'a, T>(p: *const T, name: &str) -> Result<&'a T> {
    // SAFETY: non-NULL pointers from C are taken to point at a live T, as documented per
    // function; NULL is refused.
    unsafe { p.as_ref() }.ok_or_else(|| Error::invalid(format!("{name} is NULL")))
}

pub(crate) fn arg_mut<'a, T>(p: *mut T, name: &str) -> Result<&'a mut T> {
    // SAFETY: as in `arg`, and the caller does not share the object during the call.
    unsafe { p.as_mut() }.ok_or_else(|| Error::invalid(format!("{name} is NULL")))
}

/// A (pointer, length) buffer; NULL is allowed only with length 0.
pub(crate) fn bytes<'a>(p: *const u8, len: usize, name: &str) -> Result<&'a [u8]> {
    if p.is_null() {
        if len == 0 {
            return Ok(&[]);
        }
        return Err(Error::invalid(format!(
            "{name} is NULL but its length is {len}"
        )));
    }
    if len > isize::MAX as usize {
        return Err(Error::invalid(format!("{name} length {len} is too large")));
    }
    // SAFETY: the caller passes `len` readable bytes at `p`, as documented.
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

/// A NUL-terminated UTF-8 string argument.
pub(crate) fn c_str<'a>(p: *const c_char, name: &str) -> Result<&'a str> {
    if p.is_null() {
        return Err(Error::invalid(format!("{name} is NULL")));
    }
    // SAFETY: the caller passes a NUL-terminated string, as documented.
    unsafe { CStr::from_ptr(p) }
        .to_str()
        .map_err(|_| Error::invalid(format!("{name} is not valid UTF-8")))
}

/// Checks an output pointer up front, so a call fails before doing anything.
pub(crate) fn out<'a, T>(p: *mut T, name: &str) -> Result<&'a mut std::mem::MaybeUninit<T>> {
    // SAFETY: a non-NULL output pointer points at writable storage for a T.
    unsafe { p.cast::<std::mem::MaybeUninit<T>>().as_mut() }
        .ok_or_else(|| Error::invalid(format!("{name} is NULL")))
}

/// Options from C, or the defaults when the pointer is NULL.
pub(crate) fn opts_or<T>(p: *const T, default: &T) -> &T {
    // SAFETY: a non-NULL options pointer came from the matching `_new` and is not freed
    // during the call, as documented.
    unsafe { p.as_ref() }.unwrap_or(default)
}

/// Hands a result to C through an optional out-pointer; with NULL the result is dropped.
pub(crate) fn write_result<T>(p: *mut *mut T, result: T) {
    // SAFETY: a non-NULL out-pointer points at writable storage for one pointer.
    if let Some(slot) = unsafe { p.as_mut() } {
        *slot = Box::into_raw(Box::new(result));
    }
}

/// Frees a boxed result object; NULL does nothing.
pub(crate) fn free_box<T>(p: *mut T) {
    if !p.is_null() {
        // SAFETY: `p` came from Box::into_raw in this library and is freed once, as documented.
        drop(unsafe { Box::from_raw(p) });
    }
}

/// A borrowed (pointer, length) view written to C out-parameters.
pub(crate) fn view(data: &[u8], len: *mut usize) -> *const u8 {
    // SAFETY: a non-NULL length pointer points at a writable size_t.
    if let Some(len) = unsafe { len.as_mut() } {
        *len = data.len();
    }
    if data.is_empty() {
        // Never NULL: an empty value is still a value.
        return c"".as_ptr().cast();
    }
    data.as_ptr()
}

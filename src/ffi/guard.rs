//! The boundary guard every export runs through, and the checked conversions of C
//! arguments. A panic never crosses into C; a bad pointer or length is an error status.

use std::ffi::{c_char, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

use super::status::{etcdc_status, set_last_error};
use crate::error::{Error, ErrorKind, Result};
use crate::kv::Span;
use crate::remote::MAX_SEND_BYTES;

/// Runs an export's body: refuses work in a forked child, turns an error into its status and
/// the thread's last-error message, and stops a panic at the boundary.
pub(crate) fn guard(body: impl FnOnce() -> Result<()>) -> etcdc_status {
    WATCH_FORKS.call_once(watch_forks);
    if crate::runtime::is_forked() {
        set_last_error(&crate::runtime::forked_error().message);
        return etcdc_status::ETCDC_ERR_FORKED;
    }
    catch(body)
}

static WATCH_FORKS: std::sync::Once = std::sync::Once::new();

/// Installs a fork handler, so that the fork check of every call is a load instead of a
/// `getpid` system call — unless this process is already a child with its parent's runtime
/// (then the pid comparison goes on deciding).
fn watch_forks() {
    extern "C" fn child() {
        crate::runtime::on_fork_in_child();
    }
    if crate::runtime::is_forked() {
        return;
    }
    // SAFETY: pthread_atfork with a child handler that only stores to atomics.
    if unsafe { libc::pthread_atfork(None, None, Some(child)) } == 0 {
        crate::runtime::fork_handler_installed();
    }
}

/// `guard` without the fork check.
pub(crate) fn catch(body: impl FnOnce() -> Result<()>) -> etcdc_status {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => etcdc_status::ETCDC_OK,
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
            etcdc_status::ETCDC_ERR_PANIC
        }
    }
}

/// The guard of exports that return a value instead of a status (accessors, `_new`,
/// `_clone`): `default` for a panic.
pub(crate) fn value<R>(default: R, body: impl FnOnce() -> R) -> R {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(default)
}

/// An accessor: `read(&*p)`, or `default` for NULL or a panic. The reference lives only for
/// the call of `read`.
pub(crate) fn field<T, R>(p: *const T, default: R, read: impl FnOnce(&T) -> R) -> R {
    // SAFETY: a non-NULL object pointer from C points at a live object from this library,
    // as documented per function; NULL is refused.
    match unsafe { p.as_ref() } {
        Some(obj) => catch_unwind(AssertUnwindSafe(|| read(obj))).unwrap_or(default),
        None => default,
    }
}

/// A status accessor (`etcdc_watch_response_status`, ...): the status `read` gives, or for
/// NULL `ETCDC_ERR_INVALID_ARGUMENT` with its reason as the thread's last error, as every
/// call that returns a failure status sets it.
pub(crate) fn status_field<T>(
    p: *const T,
    name: &str,
    read: impl FnOnce(&T) -> etcdc_status,
) -> etcdc_status {
    if p.is_null() {
        set_last_error(&format!("{name} is NULL"));
        return etcdc_status::ETCDC_ERR_INVALID_ARGUMENT;
    }
    field(p, etcdc_status::ETCDC_ERR_PANIC, read)
}

/// `_new` of an options or builder object: a boxed default, NULL for a panic.
pub(crate) fn new_boxed<T: Default>() -> *mut T {
    value(std::ptr::null_mut(), || Box::into_raw(Box::default()))
}

/// Runs a setter on an options object.
pub(crate) fn set<O>(opts: *mut O, f: impl FnOnce(&mut O) -> Result<()>) -> etcdc_status {
    guard(|| f(arg_mut(opts, "opts")?))
}

/// Options (and builders) with their own deadline.
pub(crate) trait Timed {
    fn timeout_ms(&mut self) -> &mut i64;
}

/// `_set_timeout_ms`: the call's deadline in ms, 0 for the client's default.
pub(crate) fn set_timeout<O: Timed>(opts: *mut O, timeout_ms: i64) -> etcdc_status {
    set(opts, |o| {
        *o.timeout_ms() = non_negative(timeout_ms, "timeout_ms")?;
        Ok(())
    })
}

/// Options that select a span of keys.
pub(crate) trait Spanned {
    fn span(&mut self) -> &mut Span;
}

/// `_set_prefix`, `_set_from_key`, `_set_range_end`.
pub(crate) fn set_span<O: Spanned>(
    opts: *mut O,
    span: impl FnOnce() -> Result<Span>,
) -> etcdc_status {
    set(opts, |o| {
        *o.span() = span()?;
        Ok(())
    })
}

/// A required pointer argument, for the duration of the export that received it.
pub(crate) fn arg<'a, T>(p: *const T, name: &str) -> Result<&'a T> {
    // SAFETY: non-NULL pointers from C are taken to point at a live T, as documented per
    // function; NULL is refused. Callers do not keep the reference past the export.
    unsafe { p.as_ref() }.ok_or_else(|| Error::invalid(format!("{name} is NULL")))
}

pub(crate) fn arg_mut<'a, T>(p: *mut T, name: &str) -> Result<&'a mut T> {
    // SAFETY: as in `arg`, and the caller does not share the object during the call.
    unsafe { p.as_mut() }.ok_or_else(|| Error::invalid(format!("{name} is NULL")))
}

/// A (pointer, length) buffer; NULL is allowed only with length 0. A length over the
/// largest request etcdc sends is refused before the bytes are touched.
pub(crate) fn bytes<'a>(p: *const u8, len: usize, name: &str) -> Result<&'a [u8]> {
    if len > MAX_SEND_BYTES {
        return Err(Error::new(
            ErrorKind::TooLarge,
            format!("{name} is too large: {len} bytes (a request carries at most {MAX_SEND_BYTES}; etcd's default limit is 1.5 MiB)"),
        ));
    }
    if p.is_null() {
        if len == 0 {
            return Ok(&[]);
        }
        return Err(Error::invalid(format!(
            "{name} is NULL but its length is {len}"
        )));
    }
    // SAFETY: the caller passes `len` readable bytes at `p`, as documented; `len` is small.
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

/// A string argument that may be NULL (then None).
pub(crate) fn opt_c_str<'a>(p: *const c_char, name: &str) -> Result<Option<&'a str>> {
    (!p.is_null()).then(|| c_str(p, name)).transpose()
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
        let _ = catch_unwind(AssertUnwindSafe(|| drop(unsafe { Box::from_raw(p) })));
    }
}

/// A copy of a borrowed object that the caller owns; NULL for NULL.
pub(crate) fn clone_box<T: Clone>(p: *const T) -> *mut T {
    field(p, std::ptr::null_mut(), |obj| {
        Box::into_raw(Box::new(obj.clone()))
    })
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

/// A timeout argument in ms: 0 means the default, negative is refused.
pub(crate) fn non_negative(v: i64, what: &str) -> Result<i64> {
    if v < 0 {
        return Err(Error::invalid(format!(
            "{what} must not be negative, got {v}"
        )));
    }
    Ok(v)
}

/// A message for C: NUL bytes shown as "\0".
pub(crate) fn cstring(s: &str) -> std::ffi::CString {
    std::ffi::CString::new(s.replace('\0', "\\0")).unwrap_or_default()
}

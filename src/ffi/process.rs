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
            super::handle::forget_all();
            crate::events::forget();
        }
        crate::runtime::reinit_after_fork();
        Ok(())
    })
}

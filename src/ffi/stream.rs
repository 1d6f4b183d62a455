//! The one C stream handle. Watches and lease keepers — and next discovery, election
//! observation and async completions — are instances of `StreamHandle`: a core `Stream`
//! plus the source that feeds it (a watch's control, a keeper). Delivery is a C callback
//! `{call, drop, user_data}` on the event thread, or the pull form (`next` with a timeout,
//! an fd for epoll); `_free` ends the stream, stops its source and wakes every waiter.

use std::ffi::{c_int, c_void};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use super::completion::Driver;
use super::guard::{guard, out};
use super::handle::Table;
use super::status::etcdc_status;
use crate::error::{Error, ErrorKind, Result};
use crate::stream::{self, Delivery, Feed, Stream};

/// A C callback. `call` runs on the event thread; dropping this runs `drop` exactly once,
/// after the last `call` (also when the registration fails).
pub(crate) struct CCallback<R> {
    call: Option<unsafe extern "C" fn(*mut c_void, *const R)>,
    drop: Option<unsafe extern "C" fn(*mut c_void)>,
    user_data: *mut c_void,
}

// SAFETY: the header documents that user_data is handed to call/drop on etcdc's event thread
// (or the freeing thread); making that safe is the caller's side of the contract.
unsafe impl<R> Send for CCallback<R> {}

impl<R> CCallback<R> {
    pub fn new(
        call: Option<unsafe extern "C" fn(*mut c_void, *const R)>,
        drop: Option<unsafe extern "C" fn(*mut c_void)>,
        user_data: *mut c_void,
    ) -> Self {
        CCallback {
            call,
            drop,
            user_data,
        }
    }

    fn invoke(&self, item: &R) {
        if let Some(call) = self.call {
            // SAFETY: the caller's function with its own user_data and an item that lives for
            // the call; C code cannot unwind into Rust.
            unsafe { call(self.user_data, item) };
        }
    }
}

impl<R> Drop for CCallback<R> {
    fn drop(&mut self) {
        if let Some(drop) = self.drop {
            // SAFETY: the caller's drop function with its own user_data, once (Drop runs once).
            unsafe { drop(self.user_data) };
        }
    }
}

/// What C receives for a stream item, or for the error that ended the stream abnormally
/// (the final delivery a callback gets: its status and message say why).
pub(crate) trait CItem<T>: Sized + Send + 'static {
    fn from_item(item: T) -> Self;
    fn from_failure(error: Error) -> Self;
}

/// Opens a stream for a C consumer: to `callback` on the event thread, or pulled when there
/// is none. A callback whose `call` is NULL is refused (and its `drop` runs).
pub(crate) fn open<T, R>(
    callback: Option<CCallback<R>>,
    capacity: usize,
) -> Result<(Feed<T>, Stream<T>)>
where
    T: Send + 'static,
    R: CItem<T>,
{
    let Some(cb) = callback else {
        return Ok(stream::channel(capacity));
    };
    if cb.call.is_none() {
        return Err(Error::invalid(
            "callback->call is NULL (pass a NULL callback for the pull form)",
        ));
    }
    stream::with_handler(
        capacity,
        Box::new(move |d| {
            let item = match d {
                Delivery::Item(t) => R::from_item(t),
                Delivery::Failed(e) => R::from_failure(e),
            };
            cb.invoke(&item);
        }),
    )
}

/// A stream behind a C handle, with the source that feeds it.
pub(crate) struct StreamHandle<T: Send + 'static, S> {
    stream: Stream<T>,
    source: Mutex<Option<S>>,
    /// The driven queue whose runtime feeds the stream; None for etcdc's runtime.
    home: Option<Weak<Driver>>,
}

impl<T: Send + 'static, S> StreamHandle<T, S> {
    pub fn new(stream: Stream<T>, source: S) -> Self {
        StreamHandle {
            stream,
            source: Mutex::new(Some(source)),
            home: None,
        }
    }

    /// The same, fed by a driven queue's runtime.
    pub fn at(self, home: Option<Weak<Driver>>) -> Self {
        StreamHandle { home, ..self }
    }

    /// The driven queue whose runtime feeds the stream, while it lives.
    pub fn home(&self) -> Option<Arc<Driver>> {
        self.home.as_ref().and_then(Weak::upgrade)
    }

    pub fn stream(&self) -> &Stream<T> {
        &self.stream
    }

    fn source(&self) -> MutexGuard<'_, Option<S>> {
        self.source.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the source; `Closed` once the handle is being freed.
    pub fn with_source<R>(&self, f: impl FnOnce(&S) -> Result<R>) -> Result<R> {
        match self.source().as_ref() {
            Some(s) => f(s),
            None => Err(Error::new(ErrorKind::Closed, "the handle is being freed")),
        }
    }

    /// Closes the stream (as `shutdown`) and hands the source over instead of dropping it.
    pub fn close(&self) -> Option<S> {
        self.stream.close();
        self.source().take()
    }

    /// Closes the stream — pull waiters wake with `ETCDC_ERR_CLOSED`, a running callback is
    /// waited for, `drop` runs — then stops the source (a watch is canceled on the server).
    /// In that order, so the source going away is not reported as the stream failing.
    fn shutdown(&self) {
        self.stream.close();
        let source = self.source().take();
        drop(source);
    }
}

/// `_next`: the next item, waiting up to `timeout_ms` (0: no wait; negative: no limit).
pub(crate) fn next<T, S, R, H>(
    table: &Table<StreamHandle<T, S>>,
    handle: *const H,
    timeout_ms: i64,
    item_out: *mut *mut R,
) -> etcdc_status
where
    T: Send + 'static,
    R: CItem<T>,
{
    guard(|| {
        let out = out(item_out, "item_out")?;
        let h = table.get(handle)?;
        let timeout = (timeout_ms >= 0).then(|| Duration::from_millis(timeout_ms as u64));
        let item = h.stream.next(timeout)?;
        out.write(Box::into_raw(Box::new(R::from_item(item))));
        Ok(())
    })
}

/// `_fd`: a descriptor readable while an item (or the end) is waiting.
pub(crate) fn fd<T: Send + 'static, S, H>(
    table: &Table<StreamHandle<T, S>>,
    handle: *const H,
    fd_out: *mut c_int,
) -> etcdc_status {
    guard(|| {
        let out = out(fd_out, "fd_out")?;
        out.write(table.get(handle)?.stream.fd()?);
        Ok(())
    })
}

/// `_free`: removes the handle and shuts it down, even while other threads still use it.
pub(crate) fn free<T: Send + 'static, S, H>(
    table: &Table<StreamHandle<T, S>>,
    handle: *mut H,
) -> etcdc_status {
    if handle.is_null() {
        return etcdc_status::ETCDC_OK;
    }
    guard(|| {
        table.remove(handle)?.shutdown();
        Ok(())
    })
}

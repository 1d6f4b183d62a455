//! Watches: a callback on etcdc's event thread, or a pull form for epoll loops.

use std::ffi::{c_char, c_int, c_void, CString};
use std::sync::{Arc, Weak};

use super::client::{etcdc_client, CLIENTS};
use super::completion::{driver, etcdc_completion, etcdc_cq, etcdc_op, next_async, result, Driver};
use super::guard::{
    arg, bytes, clone_box, cstring, field, free_box, guard, new_boxed, non_negative, opts_or, out,
    set, set_span, set_timeout, status_field, Spanned, Timed,
};
use super::handle::Table;
use super::record::{etcdc_header, etcdc_kv, header};
use super::status::etcdc_status;
use super::stream::{self, CCallback, CItem, StreamHandle};
use crate::api::{WatchControl, WatchUpdate};
use crate::error::{Error, ErrorKind};
use crate::kv::Span;
use crate::pb::etcdserverpb::watch_create_request::FilterType;
use crate::pb::etcdserverpb::WatchCreateRequest;
use crate::pb::mvccpb::event::EventType;

/// A running watch. Free with `etcdc_watch_free`.
pub struct etcdc_watch {
    _opaque: [u8; 0],
}

/// Options for `etcdc_watch_start`.
#[derive(Clone)]
pub struct etcdc_watch_options {
    span: Span,
    req: WatchCreateRequest,
    timeout_ms: i64,
    queue_limit: usize,
    /// The driven queue whose thread runs the watch; None for etcdc's runtime.
    home: Option<Weak<Driver>>,
}

impl Spanned for etcdc_watch_options {
    fn span(&mut self) -> &mut Span {
        &mut self.span
    }
}

impl Timed for etcdc_watch_options {
    fn timeout_ms(&mut self) -> &mut i64 {
        &mut self.timeout_ms
    }
}

impl Default for etcdc_watch_options {
    fn default() -> Self {
        etcdc_watch_options {
            span: Span::Key,
            req: WatchCreateRequest::default(),
            timeout_ms: 0,
            queue_limit: crate::stream::DEFAULT_CAPACITY,
            home: None,
        }
    }
}

/// What a watch response carries.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum etcdc_watch_kind {
    /// The events of one or more revisions, in order, never a partial revision.
    ETCDC_WATCH_EVENTS = 0,
    /// No events: every event up to the header's revision has been delivered.
    ETCDC_WATCH_PROGRESS = 1,
    /// The watch's next revision was compacted (`etcdc_watch_response_compact_revision`): read
    /// the keys again and start a new watch from that read's revision + 1. The watch has ended.
    ETCDC_WATCH_COMPACTED = 2,
    /// The watch has ended: the server canceled it, or (`etcdc_watch_response_status` not
    /// `ETCDC_OK`) etcdc could not go on with it. `etcdc_watch_response_reason` says why.
    ETCDC_WATCH_CANCELED = 3,
}

/// What happened to a key.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum etcdc_event_kind {
    ETCDC_EVENT_PUT = 0,
    ETCDC_EVENT_DELETE = 1,
}

/// One change of one key.
#[derive(Clone)]
pub struct etcdc_event {
    ty: etcdc_event_kind,
    kv: etcdc_kv,
    prev_kv: Option<etcdc_kv>,
}

/// One delivery of a watch. Borrowed for the duration of a callback (keep it with
/// `etcdc_watch_response_clone`); owned when pulled (free with `etcdc_watch_response_free`).
#[derive(Clone)]
pub struct etcdc_watch_response {
    kind: etcdc_watch_kind,
    header: etcdc_header,
    compact_revision: i64,
    reason: CString,
    status: etcdc_status,
    events: Vec<etcdc_event>,
}

impl CItem<WatchUpdate> for etcdc_watch_response {
    fn from_item(u: WatchUpdate) -> Self {
        let mut r = etcdc_watch_response {
            kind: etcdc_watch_kind::ETCDC_WATCH_PROGRESS,
            header: header(None),
            compact_revision: 0,
            reason: CString::default(),
            status: etcdc_status::ETCDC_OK,
            events: Vec::new(),
        };
        match u {
            WatchUpdate::Events { header: h, events } => {
                r.kind = etcdc_watch_kind::ETCDC_WATCH_EVENTS;
                r.header = header(Some(h));
                r.events = events
                    .into_iter()
                    .map(|e| etcdc_event {
                        ty: if e.r#type == EventType::Delete as i32 {
                            etcdc_event_kind::ETCDC_EVENT_DELETE
                        } else {
                            etcdc_event_kind::ETCDC_EVENT_PUT
                        },
                        kv: etcdc_kv {
                            kv: e.kv.unwrap_or_default(),
                        },
                        prev_kv: e.prev_kv.map(|kv| etcdc_kv { kv }),
                    })
                    .collect();
            }
            WatchUpdate::Progress { header: h } => r.header = header(Some(h)),
            WatchUpdate::Compacted {
                header: h,
                compact_revision,
            } => {
                r.kind = etcdc_watch_kind::ETCDC_WATCH_COMPACTED;
                r.header = header(Some(h));
                r.compact_revision = compact_revision;
                r.reason = c"etcdserver: mvcc: required revision has been compacted".into();
            }
            WatchUpdate::Canceled { reason } => {
                r.kind = etcdc_watch_kind::ETCDC_WATCH_CANCELED;
                r.reason = cstring(&reason);
            }
        }
        r
    }

    fn from_failure(e: Error) -> Self {
        etcdc_watch_response {
            kind: etcdc_watch_kind::ETCDC_WATCH_CANCELED,
            header: header(None),
            compact_revision: 0,
            reason: cstring(&e.message),
            status: e.kind.into(),
            events: Vec::new(),
        }
    }
}

/// A watch callback. `call` runs on etcdc's event thread, one response at a time, in revision
/// order, never inside `etcdc_watch_start`. `drop` (may be NULL) runs exactly once after the
/// last `call` — also when the start fails — so it can free `user_data`.
#[repr(C)]
pub struct etcdc_watch_callback {
    pub call:
        Option<unsafe extern "C" fn(user_data: *mut c_void, response: *const etcdc_watch_response)>,
    pub drop: Option<unsafe extern "C" fn(user_data: *mut c_void)>,
    pub user_data: *mut c_void,
}

pub(crate) static WATCHES: Table<StreamHandle<WatchUpdate, Box<dyn WatchControl>>> =
    Table::new(2, "watch");

/// New watch options: one key, from now on, all event types. Free with
/// `etcdc_watch_options_free`.
#[no_mangle]
pub extern "C" fn etcdc_watch_options_new() -> *mut etcdc_watch_options {
    new_boxed()
}

/// Frees watch options. NULL does nothing.
#[no_mangle]
pub extern "C" fn etcdc_watch_options_free(opts: *mut etcdc_watch_options) {
    free_box(opts)
}

/// Watch every key that starts with the given key.
#[no_mangle]
pub extern "C" fn etcdc_watch_options_set_prefix(opts: *mut etcdc_watch_options) -> etcdc_status {
    set_span(opts, || Ok(Span::Prefix))
}

/// Watch every key from the given key on.
#[no_mangle]
pub extern "C" fn etcdc_watch_options_set_from_key(opts: *mut etcdc_watch_options) -> etcdc_status {
    set_span(opts, || Ok(Span::FromKey))
}

/// Watch keys in [key, end). The bytes are copied.
#[no_mangle]
pub extern "C" fn etcdc_watch_options_set_range_end(
    opts: *mut etcdc_watch_options,
    end: *const u8,
    end_len: usize,
) -> etcdc_status {
    set_span(opts, || Span::range(bytes(end, end_len, "end")?))
}

/// Deliver history from `revision` on (0: only changes after the start).
#[no_mangle]
pub extern "C" fn etcdc_watch_options_set_start_revision(
    opts: *mut etcdc_watch_options,
    revision: i64,
) -> etcdc_status {
    set(opts, |o| {
        o.req.start_revision = non_negative(revision, "start revision")?;
        Ok(())
    })
}

/// Deliver each event's previous key-value (`etcdc_event_prev_kv`).
#[no_mangle]
pub extern "C" fn etcdc_watch_options_set_prev_kv(
    opts: *mut etcdc_watch_options,
    on: bool,
) -> etcdc_status {
    set(opts, |o| {
        o.req.prev_kv = on;
        Ok(())
    })
}

/// Leave out put events.
#[no_mangle]
pub extern "C" fn etcdc_watch_options_set_no_put(
    opts: *mut etcdc_watch_options,
    on: bool,
) -> etcdc_status {
    set(opts, |o| {
        set_filter(&mut o.req.filters, FilterType::Noput, on);
        Ok(())
    })
}

/// Leave out delete events.
#[no_mangle]
pub extern "C" fn etcdc_watch_options_set_no_delete(
    opts: *mut etcdc_watch_options,
    on: bool,
) -> etcdc_status {
    set(opts, |o| {
        set_filter(&mut o.req.filters, FilterType::Nodelete, on);
        Ok(())
    })
}

fn set_filter(filters: &mut Vec<i32>, f: FilterType, on: bool) {
    filters.retain(|&x| x != f as i32);
    if on {
        filters.push(f as i32);
    }
}

/// Ask the server for periodic progress responses while the watch is idle (etcd: every
/// 10 minutes by default).
#[no_mangle]
pub extern "C" fn etcdc_watch_options_set_progress_notify(
    opts: *mut etcdc_watch_options,
    on: bool,
) -> etcdc_status {
    set(opts, |o| {
        o.req.progress_notify = on;
        Ok(())
    })
}

/// How long `etcdc_watch_start` waits for the server to confirm the watch (0: the client's
/// default call timeout).
#[no_mangle]
pub extern "C" fn etcdc_watch_options_set_timeout_ms(
    opts: *mut etcdc_watch_options,
    timeout_ms: i64,
) -> etcdc_status {
    set_timeout(opts, timeout_ms)
}

/// How many responses may wait for a slow callback or an undrained pull form (default 256,
/// 1..=65536; a response carries whole revisions, cut at about 64 KiB of keys and values
/// when a catch-up from history is larger). When they are all waiting, etcdc stops taking
/// events for this watch and
/// resumes it from the next undelivered revision once half have been consumed: memory stays
/// bounded, no event is lost or repeated, other watches go on. If that revision has been
/// compacted meanwhile, the watch ends with `ETCDC_WATCH_COMPACTED`.
#[no_mangle]
pub extern "C" fn etcdc_watch_options_set_queue_limit(
    opts: *mut etcdc_watch_options,
    responses: u32,
) -> etcdc_status {
    set(opts, |o| {
        if responses == 0 || responses > 65536 {
            return Err(Error::invalid(format!(
                "queue limit must be 1..=65536 responses, got {responses}"
            )));
        }
        o.queue_limit = responses as usize;
        Ok(())
    })
}

/// Where the watch runs: on the thread that drives `cq`, a queue made by
/// `etcdc_cq_new_driven`, for an event loop that takes the watch's responses with
/// `etcdc_watch_next_async` into that queue — the watch's stream then shares the queue's
/// connection, and its I/O, reconnects and responses all happen inside `etcdc_cq_next` on
/// that thread, with no hand-off between threads (`etcdc_cq_fd` is readable when a response
/// arrives). Such a watch moves only while its queue is driven: `etcdc_watch_start` drives
/// the queue until the server has confirmed the watch, and freeing the queue ends the watch
/// (`ETCDC_ERR_CLOSED`). For another queue, a client of the embedded node, or `cq` NULL
/// (the default), the watch runs on etcdc's runtime.
#[no_mangle]
pub extern "C" fn etcdc_watch_options_set_queue(
    opts: *mut etcdc_watch_options,
    cq: *const etcdc_cq,
) -> etcdc_status {
    set(opts, |o| {
        o.home = if cq.is_null() {
            None
        } else {
            driver(cq)?.as_ref().map(Arc::downgrade)
        };
        Ok(())
    })
}

/// Starts watching `key` (or the span the options select); returns once the server has
/// confirmed the watch, so every later write is seen. `opts` may be NULL.
///
/// With `callback` non-NULL, responses go to `callback->call` on etcdc's event thread. With
/// `callback` NULL, responses queue for `etcdc_watch_next`, and `etcdc_watch_fd` gives a
/// descriptor that is readable while one is waiting.
///
/// The watch survives member failures and reconnects by itself, resuming from the last
/// delivered revision + 1: no event is lost or repeated. It ends only by
/// `ETCDC_WATCH_COMPACTED`, `ETCDC_WATCH_CANCELED` or `etcdc_watch_free`.
#[no_mangle]
pub extern "C" fn etcdc_watch_start(
    client: *const etcdc_client,
    key: *const u8,
    key_len: usize,
    opts: *const etcdc_watch_options,
    callback: *const etcdc_watch_callback,
    watch_out: *mut *mut etcdc_watch,
) -> etcdc_status {
    // Take the callback first: its drop must run even when the start fails.
    let cb = arg(callback, "callback")
        .ok()
        .map(|cb| CCallback::new(cb.call, cb.drop, cb.user_data));
    guard(|| {
        let out = out(watch_out, "watch_out")?;
        let c = CLIENTS.get(client)?;
        let default = etcdc_watch_options::default();
        let opts = opts_or(opts, &default);
        let (key, range_end) = opts.span.resolve(bytes(key, key_len, "key")?)?;
        let req = WatchCreateRequest {
            key,
            range_end,
            ..opts.req.clone()
        };
        let deadline = c.deadline(opts.timeout_ms)?;
        let home = match &opts.home {
            Some(home) => match home.upgrade() {
                Some(driver) => driver.local(&c)?.map(|etcd| (driver, etcd)),
                None => {
                    return Err(Error::new(
                        ErrorKind::Closed,
                        "the queue set in the watch's options was freed",
                    ))
                }
            },
            None => None,
        };
        let (feed, stream) =
            stream::open::<WatchUpdate, etcdc_watch_response>(cb, opts.queue_limit)?;
        // On failure `stream` drops here: a callback's `drop` runs.
        let control = match &home {
            Some((driver, etcd)) => driver.drive(etcd.watch(req, feed, deadline))?,
            None => c.block(c.etcd.watch(req, feed, deadline))?,
        };
        let home = home.map(|(driver, _)| Arc::downgrade(&driver));
        out.write(WATCHES.insert(StreamHandle::new(stream, control).at(home)));
        Ok(())
    })
}

/// Pull form: the next response, waiting up to `timeout_ms` (0: do not wait; negative: no
/// limit). `ETCDC_ERR_TIMEOUT` when nothing arrived; `ETCDC_ERR_CLOSED` once the watch has
/// ended and everything was pulled. The response is owned: free it with
/// `etcdc_watch_response_free`.
#[no_mangle]
pub extern "C" fn etcdc_watch_next(
    watch: *const etcdc_watch,
    timeout_ms: i64,
    response_out: *mut *mut etcdc_watch_response,
) -> etcdc_status {
    stream::next(&WATCHES, watch, timeout_ms, response_out)
}

/// `etcdc_watch_next`, asynchronously: the watch's next response completes into `cq` with
/// `tag` (`etcdc_completion_watch_response`); at its end, `ETCDC_ERR_CLOSED` or why it
/// failed. Start the next one when it has completed: one queue then carries every watch,
/// keeper and call of an epoll loop, and a watch's memory stays bounded by its queue limit
/// (it pauses and resumes from history while nobody asks). For a watch in the pull form
/// (started with a NULL callback); `etcdc_op_cancel` leaves the response in the watch.
#[no_mangle]
pub extern "C" fn etcdc_watch_next_async(
    watch: *const etcdc_watch,
    cq: *const etcdc_cq,
    tag: *mut c_void,
    op_out: *mut *mut etcdc_op,
) -> etcdc_status {
    next_async::<etcdc_watch_response, _, _, _>(&WATCHES, watch, cq, tag, op_out)
}

/// Pull form: a descriptor that is readable while a response (or the end) is waiting, for
/// poll/epoll. Owned by the watch: do not read or close it.
#[no_mangle]
pub extern "C" fn etcdc_watch_fd(watch: *const etcdc_watch, fd_out: *mut c_int) -> etcdc_status {
    stream::fd(&WATCHES, watch, fd_out)
}

/// Asks the server for a progress response (`ETCDC_WATCH_PROGRESS`) on this watch.
#[no_mangle]
pub extern "C" fn etcdc_watch_request_progress(watch: *const etcdc_watch) -> etcdc_status {
    guard(|| {
        WATCHES.get(watch)?.with_source(|control| {
            control.request_progress();
            Ok(())
        })
    })
}

/// Cancels and frees a watch. Waits for a running callback to return and runs `drop`; called
/// from inside the watch's own callback it returns at once and `drop` runs when the callback
/// returns. NULL does nothing; a handle already freed gives `ETCDC_ERR_INVALID_ARGUMENT`.
#[no_mangle]
pub extern "C" fn etcdc_watch_free(watch: *mut etcdc_watch) -> etcdc_status {
    stream::free(&WATCHES, watch)
}

/// A copy of a response that the caller owns (free with `etcdc_watch_response_free`); NULL
/// for NULL.
#[no_mangle]
pub extern "C" fn etcdc_watch_response_clone(
    r: *const etcdc_watch_response,
) -> *mut etcdc_watch_response {
    clone_box(r)
}

/// Frees a pulled or cloned response. NULL does nothing.
#[no_mangle]
pub extern "C" fn etcdc_watch_response_free(r: *mut etcdc_watch_response) {
    free_box(r)
}

/// What the response carries.
#[no_mangle]
pub extern "C" fn etcdc_watch_response_kind(r: *const etcdc_watch_response) -> etcdc_watch_kind {
    field(r, etcdc_watch_kind::ETCDC_WATCH_CANCELED, |r| r.kind)
}

/// The response header (its revision: the store's revision when it was sent), borrowed.
#[no_mangle]
pub extern "C" fn etcdc_watch_response_header(
    r: *const etcdc_watch_response,
) -> *const etcdc_header {
    field(r, std::ptr::null(), |r| &r.header)
}

/// For `ETCDC_WATCH_COMPACTED`: the compaction revision; else 0.
#[no_mangle]
pub extern "C" fn etcdc_watch_response_compact_revision(r: *const etcdc_watch_response) -> i64 {
    field(r, 0, |r| r.compact_revision)
}

/// For `ETCDC_WATCH_CANCELED` and `_COMPACTED`: why, in etcd's words; else "".
#[no_mangle]
pub extern "C" fn etcdc_watch_response_reason(r: *const etcdc_watch_response) -> *const c_char {
    field(r, c"".as_ptr(), |r| r.reason.as_ptr())
}

/// `ETCDC_OK`, except on the last response of a watch that etcdc could not go on with
/// (kind `ETCDC_WATCH_CANCELED`): then why, with the message in `etcdc_watch_response_reason`.
#[no_mangle]
pub extern "C" fn etcdc_watch_response_status(r: *const etcdc_watch_response) -> etcdc_status {
    status_field(r, "response", |r| r.status)
}

/// How many events the response holds.
#[no_mangle]
pub extern "C" fn etcdc_watch_response_len(r: *const etcdc_watch_response) -> usize {
    field(r, 0, |r| r.events.len())
}

/// The `i`-th event, borrowed from the response; NULL when out of range.
#[no_mangle]
pub extern "C" fn etcdc_watch_response_event(
    r: *const etcdc_watch_response,
    i: usize,
) -> *const etcdc_event {
    field(r, std::ptr::null(), |r| {
        r.events.get(i).map_or(std::ptr::null(), |e| e)
    })
}

/// Put or delete.
#[no_mangle]
pub extern "C" fn etcdc_event_type(e: *const etcdc_event) -> etcdc_event_kind {
    field(e, etcdc_event_kind::ETCDC_EVENT_PUT, |e| e.ty)
}

/// The key-value after the change (for a delete: the key, with the delete's mod revision).
#[no_mangle]
pub extern "C" fn etcdc_event_kv(e: *const etcdc_event) -> *const etcdc_kv {
    field(e, std::ptr::null(), |e| &e.kv)
}

/// The key-value before the change, when the watch asked for it and there was one; else NULL.
#[no_mangle]
pub extern "C" fn etcdc_event_prev_kv(e: *const etcdc_event) -> *const etcdc_kv {
    field(e, std::ptr::null(), |e| {
        e.prev_kv.as_ref().map_or(std::ptr::null(), |kv| kv)
    })
}

/// A watch's response (`etcdc_watch_next_async`), borrowed; NULL for another kind or a
/// failure.
#[no_mangle]
pub extern "C" fn etcdc_completion_watch_response(
    c: *const etcdc_completion,
) -> *const etcdc_watch_response {
    result::<etcdc_watch_response>(c)
}

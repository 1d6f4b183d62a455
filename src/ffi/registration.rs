//! Service registration: `etcdc_register` keeps `<dir>/<id>` registered under a lease of its
//! own, kept alive, and registers again by itself after a loss. It reports through the one
//! stream handle (callback, or pull with an fd for epoll loops).

use std::ffi::{c_char, c_int, c_void, CString};
use std::sync::Mutex;

use super::client::{etcdc_client, Client, Queued, CLIENTS};
use super::completion::{
    etcdc_completion, etcdc_cq, etcdc_op, next_async, result, with_result, Answer,
};
use super::guard::{
    arg, c_str, clone_box, cstring, field, free_box, guard, new_boxed, opt_c_str, opts_or, out,
    set, set_timeout, status_field, value, Timed,
};
use super::handle::Table;
use super::status::etcdc_status;
use super::stream::{self, CCallback, CItem, StreamHandle};
use crate::error::{Error, Result};
use crate::recipes::registration::{RegState, RegUpdate, Registration, Spec};

/// Options for `etcdc_register`.
#[derive(Clone)]
pub struct etcdc_registration_options {
    metadata: Option<String>,
    ttl: i64,
    timeout_ms: i64,
}

impl Default for etcdc_registration_options {
    fn default() -> Self {
        etcdc_registration_options {
            metadata: None,
            ttl: DEFAULT_REGISTRATION_TTL,
            timeout_ms: 0,
        }
    }
}

impl Timed for etcdc_registration_options {
    fn timeout_ms(&mut self) -> &mut i64 {
        &mut self.timeout_ms
    }
}

/// The lease TTL of a registration unless set, seconds.
const DEFAULT_REGISTRATION_TTL: i64 = 10;

/// New registration options: TTL 10 s, metadata `null`, the client's timeout.
#[no_mangle]
pub extern "C" fn etcdc_registration_options_new() -> *mut etcdc_registration_options {
    new_boxed()
}

/// The metadata: any JSON text (an object with a `weight` number is what weighted picks
/// use); NULL for `null`. Invalid JSON is `ETCDC_ERR_INVALID_ARGUMENT`.
#[no_mangle]
pub extern "C" fn etcdc_registration_options_set_metadata(
    opts: *mut etcdc_registration_options,
    json: *const c_char,
) -> etcdc_status {
    set(opts, |o| {
        o.metadata = if json.is_null() {
            None
        } else {
            let text = c_str(json, "json")?;
            serde_json::from_str::<serde_json::Value>(text)
                .map_err(|e| Error::invalid(format!("metadata is not JSON: {e}")))?;
            Some(text.to_string())
        };
        Ok(())
    })
}

/// The lease TTL in seconds (how soon a dead instance disappears), at least 1 and at least
/// the cluster's minimum (`etcdc_register` refuses less rather than silently raising it).
#[no_mangle]
pub extern "C" fn etcdc_registration_options_set_ttl(
    opts: *mut etcdc_registration_options,
    ttl_seconds: i64,
) -> etcdc_status {
    set(opts, |o| {
        if ttl_seconds <= 0 {
            return Err(Error::invalid(format!(
                "the registration TTL must be positive, got {ttl_seconds} s"
            )));
        }
        o.ttl = ttl_seconds;
        Ok(())
    })
}

/// How long `etcdc_register` may take (0: the client's default).
#[no_mangle]
pub extern "C" fn etcdc_registration_options_set_timeout(
    opts: *mut etcdc_registration_options,
    timeout_ms: i64,
) -> etcdc_status {
    set_timeout(opts, timeout_ms)
}

/// Frees registration options. NULL does nothing.
#[no_mangle]
pub extern "C" fn etcdc_registration_options_free(opts: *mut etcdc_registration_options) {
    free_box(opts)
}

/// A registration's state.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum etcdc_registration_state {
    /// Written under a live lease: first, and again after a loss (with a new lease).
    ETCDC_REGISTERED = 0,
    /// The keep-alive lost its member; refreshing resumes through another one.
    ETCDC_REGISTRATION_RECONNECTING = 1,
    /// The lease is gone (the reason says why) and the key with it; registering again
    /// follows by itself.
    ETCDC_REGISTRATION_LOST = 2,
    /// Registering again found another live instance under the same id; retrying until it
    /// is gone.
    ETCDC_REGISTRATION_CONFLICT = 3,
}

/// One state change of a registration. Borrowed for a callback (keep it with
/// `etcdc_registration_event_clone`), owned when pulled (free with
/// `etcdc_registration_event_free`).
#[derive(Clone)]
pub struct etcdc_registration_event {
    state: etcdc_registration_state,
    lease: i64,
    reason: CString,
    status: etcdc_status,
}

impl CItem<RegUpdate> for etcdc_registration_event {
    fn from_item(u: RegUpdate) -> Self {
        etcdc_registration_event {
            state: match u.state {
                RegState::Registered => etcdc_registration_state::ETCDC_REGISTERED,
                RegState::Reconnecting => etcdc_registration_state::ETCDC_REGISTRATION_RECONNECTING,
                RegState::Lost => etcdc_registration_state::ETCDC_REGISTRATION_LOST,
                RegState::Conflict => etcdc_registration_state::ETCDC_REGISTRATION_CONFLICT,
            },
            lease: u.lease,
            reason: cstring(&u.reason),
            status: etcdc_status::ETCDC_OK,
        }
    }

    fn from_failure(e: Error) -> Self {
        etcdc_registration_event {
            state: etcdc_registration_state::ETCDC_REGISTRATION_LOST,
            lease: 0,
            reason: cstring(&e.message),
            status: e.kind.into(),
        }
    }
}

/// A registration state callback, with the same rules as `etcdc_watch_callback`.
#[repr(C)]
pub struct etcdc_registration_callback {
    pub call: Option<
        unsafe extern "C" fn(user_data: *mut c_void, event: *const etcdc_registration_event),
    >,
    pub drop: Option<unsafe extern "C" fn(user_data: *mut c_void)>,
    pub user_data: *mut c_void,
}

/// A service instance kept registered. Free with `etcdc_registration_free`.
pub struct etcdc_registration {
    _opaque: [u8; 0],
}

/// A registration's handle owned by a completion until `etcdc_completion_take_registration`;
/// one never taken is freed (unregistered) with the completion.
pub(crate) struct Handover(Mutex<Option<usize>>);

impl Handover {
    pub fn new(handle: usize) -> Self {
        Handover(Mutex::new(Some(handle)))
    }
}

impl Drop for Handover {
    fn drop(&mut self) {
        let Some(id) = self.0.get_mut().unwrap_or_else(|p| p.into_inner()).take() else {
            return;
        };
        let free = move || {
            etcdc_registration_free(id as *mut _);
        };
        // Unregistering blocks on the runtime: never on one of its threads, nor on the event
        // thread (a callback's completion is dropped there) where it would hold up the others.
        if tokio::runtime::Handle::try_current().is_ok() || crate::events::on_event_thread() {
            std::thread::spawn(free);
        } else {
            free();
        }
    }
}

/// The registration behind a handle; unregisters (delete + revoke) when dropped.
pub(crate) struct Registered {
    reg: Option<Registration>,
    client: std::sync::Arc<Client>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        if let Some(reg) = self.reg.take() {
            let deadline = crate::api::deadline_in(self.client.timeout);
            let _ = self.client.block(reg.unregister(deadline));
        }
    }
}

pub(crate) static REGISTRATIONS: Table<StreamHandle<RegUpdate, Registered>> =
    Table::new(5, "registration");

/// Registers instance `instance_id` of the service in `service_dir` (e.g. `/login_servers`
/// and `0001-0001`): the key `<service_dir>/<instance_id>` holds Go `naming/endpoints`'
/// value `{"Op":0,"Addr":"<addr>","Metadata":...}` under a lease refreshed at a third of its
/// TTL, so Go gRPC clients resolve it with `etcd:///<service_dir>`. Returns once written.
///
/// When the lease is lost (expired during a partition, revoked, cluster restored) the
/// instance registers again by itself under a new lease, and says so: state changes go to
/// `callback->call` on etcdc's event thread, or with a NULL `callback` queue for
/// `etcdc_registration_next` / `_fd`. The first is `ETCDC_REGISTERED`.
///
/// `ETCDC_ERR_FAILED_PRECONDITION` when another live instance holds the id (it is never
/// overwritten); `ETCDC_ERR_INVALID_ARGUMENT` for an empty directory or address, an id that
/// is empty or contains `/`, or a TTL under the cluster's minimum.
#[no_mangle]
pub extern "C" fn etcdc_register(
    client: *const etcdc_client,
    service_dir: *const c_char,
    instance_id: *const c_char,
    addr: *const c_char,
    opts: *const etcdc_registration_options,
    callback: *const etcdc_registration_callback,
    registration_out: *mut *mut etcdc_registration,
) -> etcdc_status {
    let cb = arg(callback, "callback")
        .ok()
        .map(|cb| CCallback::new(cb.call, cb.drop, cb.user_data));
    guard(|| {
        let out = out(registration_out, "registration_out")?;
        let (c, start) = registering(client, service_dir, instance_id, addr, opts, cb)?;
        let handle = c.block(start)?;
        out.write(handle);
        Ok(())
    })
}

/// Checks `etcdc_register`'s arguments and builds the registration, to run on the runtime;
/// it gives the new handle.
fn registering(
    client: *const etcdc_client,
    service_dir: *const c_char,
    instance_id: *const c_char,
    addr: *const c_char,
    opts: *const etcdc_registration_options,
    cb: Option<CCallback<etcdc_registration_event>>,
) -> Result<(
    std::sync::Arc<Client>,
    impl std::future::Future<Output = Result<*mut etcdc_registration>> + Send + 'static,
)> {
    let c = CLIENTS.get(client)?;
    let defaults = etcdc_registration_options::default();
    let o = opts_or(opts, &defaults);
    let spec = Spec {
        dir: c_str(service_dir, "service_dir")?.to_string(),
        id: c_str(instance_id, "instance_id")?.to_string(),
        addr: c_str(addr, "addr")?.to_string(),
        metadata: o.metadata.clone(),
        ttl: o.ttl,
    };
    let (feed, stream) = stream::open::<RegUpdate, etcdc_registration_event>(cb, 64)?;
    let deadline = c.deadline(o.timeout_ms)?;
    let client = c.clone();
    let start = async move {
        // On failure `stream` drops here: a callback's `drop` runs.
        let reg = Registration::start(client.etcd.clone(), spec, feed, deadline).await?;
        let source = Registered {
            reg: Some(reg),
            client,
        };
        Ok(REGISTRATIONS.insert(StreamHandle::new(stream, source)))
    };
    Ok((c, start))
}

/// `etcdc_register`, asynchronously: completes into `cq` with `tag` once registered; take
/// the registration from the completion with `etcdc_completion_take_registration`.
/// Arguments are checked now (a bad one is this call's status, and nothing completes).
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn etcdc_register_async(
    client: *const etcdc_client,
    service_dir: *const c_char,
    instance_id: *const c_char,
    addr: *const c_char,
    opts: *const etcdc_registration_options,
    callback: *const etcdc_registration_callback,
    cq: *const etcdc_cq,
    tag: *mut c_void,
    op_out: *mut *mut etcdc_op,
) -> etcdc_status {
    let cb = arg(callback, "callback")
        .ok()
        .map(|cb| CCallback::new(cb.call, cb.drop, cb.user_data));
    guard(|| {
        let (c, start) = registering(client, service_dir, instance_id, addr, opts, cb)?;
        let q = Queued { cq, tag, op_out };
        q.start(&c, async move {
            let handle = start.await?;
            Ok(Answer::new(Handover::new(handle as usize)))
        })
    })
}

/// The registration `etcdc_register_async` made, handed over to the caller (free it with
/// `etcdc_registration_free`): the first call returns it, later ones NULL, as does a
/// completion of another kind or a failure. A completion freed without taking it frees the
/// registration (unregistering it).
#[no_mangle]
pub extern "C" fn etcdc_completion_take_registration(
    c: *const etcdc_completion,
) -> *mut etcdc_registration {
    with_result(c, std::ptr::null_mut(), |h: &Handover| {
        h.0.lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .map_or(std::ptr::null_mut(), |id| id as *mut _)
    })
}

/// Unregisters and frees the registration as `etcdc_registration_free` does, without
/// waiting: the handle is gone at once (a callback's `drop` has run when this returns),
/// and the completion comes into `cq` with `tag` once the key is deleted and its lease
/// revoked (`ETCDC_OK`), or with why not (the key then goes when its lease expires).
#[no_mangle]
pub extern "C" fn etcdc_registration_free_async(
    r: *mut etcdc_registration,
    cq: *const etcdc_cq,
    tag: *mut c_void,
    op_out: *mut *mut etcdc_op,
) -> etcdc_status {
    guard(|| {
        // The queue is checked before anything is freed.
        super::completion::QUEUES.get(cq)?;
        let mut source = REGISTRATIONS.remove(r)?.close().ok_or_else(gone)?;
        let reg = source.reg.take().ok_or_else(gone)?;
        let client = source.client.clone();
        let deadline = crate::api::deadline_in(client.timeout);
        Queued { cq, tag, op_out }.start(&client, async move {
            reg.unregister(deadline).await.map(|()| Answer::new(()))
        })
    })
}

/// Replaces the metadata in place (same key, same lease); NULL for `null`. While the
/// instance is registering again, `ETCDC_ERR_UNAVAILABLE` — the metadata goes with the next
/// registration.
#[no_mangle]
pub extern "C" fn etcdc_registration_set_metadata(
    r: *const etcdc_registration,
    json: *const c_char,
    timeout_ms: i64,
) -> etcdc_status {
    guard(|| {
        let metadata = opt_c_str(json, "json")?.map(str::to_string);
        let h = REGISTRATIONS.get(r)?;
        h.with_source(|s| {
            let reg = s.reg.as_ref().ok_or_else(gone)?;
            let deadline = s.client.deadline(timeout_ms)?;
            s.client.block(reg.set_metadata(metadata, deadline))
        })
    })
}

fn gone() -> Error {
    Error::new(
        crate::error::ErrorKind::Closed,
        "the registration is being freed",
    )
}

/// The lease the key is under now; 0 while registering again or for a bad handle.
#[no_mangle]
pub extern "C" fn etcdc_registration_lease(r: *const etcdc_registration) -> i64 {
    value(0, || {
        REGISTRATIONS
            .get(r)
            .and_then(|h| h.with_source(|s| Ok(s.reg.as_ref().map_or(0, |r| r.lease()))))
            .unwrap_or(0)
    })
}

/// Pull form: the next state change, waiting up to `timeout_ms` (0: no wait; negative: no
/// limit). `ETCDC_ERR_TIMEOUT` when nothing arrived. Free it with
/// `etcdc_registration_event_free`.
#[no_mangle]
pub extern "C" fn etcdc_registration_next(
    r: *const etcdc_registration,
    timeout_ms: i64,
    event_out: *mut *mut etcdc_registration_event,
) -> etcdc_status {
    stream::next(&REGISTRATIONS, r, timeout_ms, event_out)
}

/// `etcdc_registration_next`, asynchronously (see `etcdc_watch_next_async`):
/// `etcdc_completion_registration_event`.
#[no_mangle]
pub extern "C" fn etcdc_registration_next_async(
    r: *const etcdc_registration,
    cq: *const etcdc_cq,
    tag: *mut c_void,
    op_out: *mut *mut etcdc_op,
) -> etcdc_status {
    next_async::<etcdc_registration_event, _, _, _>(&REGISTRATIONS, r, cq, tag, op_out)
}

/// Pull form: a descriptor readable while a state change is waiting. Owned by the
/// registration.
#[no_mangle]
pub extern "C" fn etcdc_registration_fd(
    r: *const etcdc_registration,
    fd_out: *mut c_int,
) -> etcdc_status {
    stream::fd(&REGISTRATIONS, r, fd_out)
}

/// Unregisters (deletes the key and revokes its lease, within the client's timeout) and
/// frees the registration, with the same callback rules as `etcdc_watch_free`. NULL does
/// nothing. A process that dies without calling it disappears when its lease expires.
#[no_mangle]
pub extern "C" fn etcdc_registration_free(r: *mut etcdc_registration) -> etcdc_status {
    stream::free(&REGISTRATIONS, r)
}

/// The registration's new state.
#[no_mangle]
pub extern "C" fn etcdc_registration_event_state(
    e: *const etcdc_registration_event,
) -> etcdc_registration_state {
    field(e, etcdc_registration_state::ETCDC_REGISTRATION_LOST, |e| {
        e.state
    })
}

/// The lease the key is (or, for LOST, was) under.
#[no_mangle]
pub extern "C" fn etcdc_registration_event_lease(e: *const etcdc_registration_event) -> i64 {
    field(e, 0, |e| e.lease)
}

/// Why the state changed ("" for REGISTERED).
#[no_mangle]
pub extern "C" fn etcdc_registration_event_reason(
    e: *const etcdc_registration_event,
) -> *const c_char {
    field(e, c"".as_ptr(), |e| e.reason.as_ptr())
}

/// `ETCDC_OK`, or for the last event of a registration that stopped by itself (its client
/// was freed), why.
#[no_mangle]
pub extern "C" fn etcdc_registration_event_status(
    e: *const etcdc_registration_event,
) -> etcdc_status {
    status_field(e, "event", |e| e.status)
}

/// A copy of an event that the caller owns; NULL for NULL.
#[no_mangle]
pub extern "C" fn etcdc_registration_event_clone(
    e: *const etcdc_registration_event,
) -> *mut etcdc_registration_event {
    clone_box(e)
}

/// Frees a pulled or cloned event. NULL does nothing.
#[no_mangle]
pub extern "C" fn etcdc_registration_event_free(e: *mut etcdc_registration_event) {
    free_box(e)
}

/// A registration's state change (`etcdc_registration_next_async`), borrowed; NULL for
/// another kind or a failure.
#[no_mangle]
pub extern "C" fn etcdc_completion_registration_event(
    c: *const etcdc_completion,
) -> *const etcdc_registration_event {
    result::<etcdc_registration_event>(c)
}

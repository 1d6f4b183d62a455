//! Service registration and discovery: `etcdc_register` keeps `<dir>/<id>` registered (and
//! registers again by itself after a loss); `etcdc_discover` keeps a table of a directory's
//! instances and picks one per request. Both report through the one stream handle
//! (callback, or pull with an fd for epoll loops).

use std::ffi::{c_char, c_int, c_void, CString};

use super::client::{etcdc_client, Client, CLIENTS};
use super::completion::{etcdc_cq, etcdc_op, Answer, Handover, Queued};
use super::guard::{
    arg, c_str, clone_box, cstring, field, free_box, guard, new_boxed, opts_or, out, set,
    set_timeout, status_field, value, write_result, Timed,
};
use super::handle::Table;
use super::status::etcdc_status;
use super::stream::{self, CCallback, CItem, StreamHandle};
use crate::error::{Error, Result};
use crate::recipes::discovery::{Change, Discovery, Instance, Policy};
use crate::recipes::registration::{RegState, RegUpdate, Registration, Spec};

// ---- registration ----

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
            Ok(Answer::Registered(Handover::new(handle as usize)))
        })
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
            reg.unregister(deadline).await.map(|()| Answer::Number(0))
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
        let metadata = if json.is_null() {
            None
        } else {
            Some(c_str(json, "json")?.to_string())
        };
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

// ---- discovery ----

/// One registered instance. Borrowed from the event or list that holds it; owned (free with
/// `etcdc_instance_free`) when returned by `etcdc_discovery_pick` or cloned.
#[derive(Clone)]
pub struct etcdc_instance {
    id: CString,
    addr: CString,
    metadata: CString,
    weight: u32,
    revision: i64,
}

impl From<Instance> for etcdc_instance {
    fn from(i: Instance) -> Self {
        etcdc_instance {
            id: cstring(&i.id),
            addr: cstring(&i.addr),
            metadata: cstring(&i.metadata),
            weight: i.weight,
            revision: i.revision,
        }
    }
}

/// The instance id: its key under the service directory.
#[no_mangle]
pub extern "C" fn etcdc_instance_id(i: *const etcdc_instance) -> *const c_char {
    field(i, c"".as_ptr(), |i| i.id.as_ptr())
}

/// Its address (`Addr` of Go's value; a value that is not that JSON is taken as the
/// address itself, as v2-era scripts wrote it).
#[no_mangle]
pub extern "C" fn etcdc_instance_addr(i: *const etcdc_instance) -> *const c_char {
    field(i, c"".as_ptr(), |i| i.addr.as_ptr())
}

/// Its metadata as JSON text (`null` when it has none).
#[no_mangle]
pub extern "C" fn etcdc_instance_metadata(i: *const etcdc_instance) -> *const c_char {
    field(i, c"null".as_ptr(), |i| i.metadata.as_ptr())
}

/// Its weight for `ETCDC_PICK_WEIGHTED`: the metadata's `weight` number, else 1.
#[no_mangle]
pub extern "C" fn etcdc_instance_weight(i: *const etcdc_instance) -> u32 {
    field(i, 0, |i| i.weight)
}

/// The revision of its key's last change.
#[no_mangle]
pub extern "C" fn etcdc_instance_revision(i: *const etcdc_instance) -> i64 {
    field(i, 0, |i| i.revision)
}

/// A copy the caller owns; NULL for NULL.
#[no_mangle]
pub extern "C" fn etcdc_instance_clone(i: *const etcdc_instance) -> *mut etcdc_instance {
    clone_box(i)
}

/// Frees a picked or cloned instance. NULL does nothing.
#[no_mangle]
pub extern "C" fn etcdc_instance_free(i: *mut etcdc_instance) {
    free_box(i)
}

/// What changed in a discovery's table.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum etcdc_discovery_change {
    ETCDC_INSTANCE_ADDED = 0,
    ETCDC_INSTANCE_UPDATED = 1,
    ETCDC_INSTANCE_REMOVED = 2,
    /// The discovery stopped (its client was freed): `etcdc_discovery_event_status` says why.
    ETCDC_DISCOVERY_ENDED = 3,
}

/// One change of the table. Borrowed for a callback (keep it with
/// `etcdc_discovery_event_clone`), owned when pulled (free with
/// `etcdc_discovery_event_free`).
#[derive(Clone)]
pub struct etcdc_discovery_event {
    change: etcdc_discovery_change,
    instance: etcdc_instance,
    status: etcdc_status,
    reason: CString,
}

impl CItem<Change> for etcdc_discovery_event {
    fn from_item(c: Change) -> Self {
        let (change, i) = match c {
            Change::Added(i) => (etcdc_discovery_change::ETCDC_INSTANCE_ADDED, i),
            Change::Updated(i) => (etcdc_discovery_change::ETCDC_INSTANCE_UPDATED, i),
            Change::Removed(i) => (etcdc_discovery_change::ETCDC_INSTANCE_REMOVED, i),
        };
        etcdc_discovery_event {
            change,
            instance: i.into(),
            status: etcdc_status::ETCDC_OK,
            reason: CString::default(),
        }
    }

    fn from_failure(e: Error) -> Self {
        etcdc_discovery_event {
            change: etcdc_discovery_change::ETCDC_DISCOVERY_ENDED,
            instance: Instance {
                id: String::new(),
                addr: String::new(),
                metadata: "null".into(),
                weight: 0,
                revision: 0,
            }
            .into(),
            status: e.kind.into(),
            reason: cstring(&e.message),
        }
    }
}

/// A discovery change callback, with the same rules as `etcdc_watch_callback`.
#[repr(C)]
pub struct etcdc_discovery_callback {
    pub call:
        Option<unsafe extern "C" fn(user_data: *mut c_void, event: *const etcdc_discovery_event)>,
    pub drop: Option<unsafe extern "C" fn(user_data: *mut c_void)>,
    pub user_data: *mut c_void,
}

/// A service directory followed: its table of instances. Free with `etcdc_discovery_free`.
pub struct etcdc_discovery {
    _opaque: [u8; 0],
}

pub(crate) static DISCOVERIES: Table<StreamHandle<Change, Discovery>> = Table::new(6, "discovery");

/// Follows the instances registered under `service_dir`: lists them, then watches from the
/// listed revision + 1, keeping a table that never misses or repeats a change (across
/// reconnects; after a compaction it lists again and reports the difference). Every change
/// — the listed instances first, as ADDED — goes to `callback->call` on etcdc's event
/// thread, or with a NULL `callback` queues for `etcdc_discovery_next` / `_fd`. The table
/// (`etcdc_discovery_pick`, `_snapshot`) is current whether or not changes are consumed.
/// Returns once the table holds the listing (within the client's timeout).
#[no_mangle]
pub extern "C" fn etcdc_discover(
    client: *const etcdc_client,
    service_dir: *const c_char,
    callback: *const etcdc_discovery_callback,
    discovery_out: *mut *mut etcdc_discovery,
) -> etcdc_status {
    let cb = arg(callback, "callback")
        .ok()
        .map(|cb| CCallback::new(cb.call, cb.drop, cb.user_data));
    guard(|| {
        let out = out(discovery_out, "discovery_out")?;
        let c = CLIENTS.get(client)?;
        let dir = c_str(service_dir, "service_dir")?;
        let (feed, stream) = stream::open::<Change, etcdc_discovery_event>(cb, 256)?;
        let deadline = c.deadline(0)?;
        let d = c.block(Discovery::start(c.etcd.clone(), dir, feed, deadline))?;
        out.write(DISCOVERIES.insert(StreamHandle::new(stream, d)));
        Ok(())
    })
}

/// How `etcdc_discovery_pick` chooses (`ETCDC_PICK_*`).
pub type etcdc_pick_policy = u32;
/// Each instance in turn.
pub const ETCDC_PICK_ROUND_ROBIN: etcdc_pick_policy = 0;
/// Uniformly at random.
pub const ETCDC_PICK_RANDOM: etcdc_pick_policy = 1;
/// The instance with the fewest uses in flight (`etcdc_discovery_begin` / `_end`);
/// round-robin among equals.
pub const ETCDC_PICK_LEAST_IN_FLIGHT: etcdc_pick_policy = 2;
/// At random, in proportion to each instance's `weight` metadata.
pub const ETCDC_PICK_WEIGHTED: etcdc_pick_policy = 3;

/// Picks an instance from the table (a copy the caller owns: `etcdc_instance_free`).
/// `ETCDC_ERR_NOT_FOUND` when the table is empty. Takes no network round trip.
#[no_mangle]
pub extern "C" fn etcdc_discovery_pick(
    d: *const etcdc_discovery,
    policy: etcdc_pick_policy,
    instance_out: *mut *mut etcdc_instance,
) -> etcdc_status {
    guard(|| {
        let out = out(instance_out, "instance_out")?;
        let policy = match policy {
            ETCDC_PICK_ROUND_ROBIN => Policy::RoundRobin,
            ETCDC_PICK_RANDOM => Policy::Random,
            ETCDC_PICK_LEAST_IN_FLIGHT => Policy::LeastInFlight,
            ETCDC_PICK_WEIGHTED => Policy::Weighted,
            other => return Err(Error::invalid(format!("unknown pick policy {other}"))),
        };
        let picked = DISCOVERIES
            .get(d)?
            .with_source(|d| Ok(d.pick(policy)))?
            .ok_or_else(|| {
                Error::new(
                    crate::error::ErrorKind::NotFound,
                    "no instance is registered in the directory",
                )
            })?;
        out.write(Box::into_raw(Box::new(picked.into())));
        Ok(())
    })
}

/// Marks the start of a use of instance `id` (for `ETCDC_PICK_LEAST_IN_FLIGHT`).
/// `ETCDC_ERR_NOT_FOUND` if it is not in the table.
#[no_mangle]
pub extern "C" fn etcdc_discovery_begin(
    d: *const etcdc_discovery,
    id: *const c_char,
) -> etcdc_status {
    guard(|| {
        let id = c_str(id, "id")?;
        DISCOVERIES.get(d)?.with_source(|d| d.begin(id))
    })
}

/// Marks the end of a use begun with `etcdc_discovery_begin` (an instance removed meanwhile
/// is fine).
#[no_mangle]
pub extern "C" fn etcdc_discovery_end(
    d: *const etcdc_discovery,
    id: *const c_char,
) -> etcdc_status {
    guard(|| {
        let id = c_str(id, "id")?;
        DISCOVERIES.get(d)?.with_source(|d| d.end(id))
    })
}

/// The instances of a table at one moment, by id. Free with `etcdc_instance_list_free`.
pub struct etcdc_instance_list {
    items: Vec<etcdc_instance>,
}

/// The table now.
#[no_mangle]
pub extern "C" fn etcdc_discovery_snapshot(
    d: *const etcdc_discovery,
    list_out: *mut *mut etcdc_instance_list,
) -> etcdc_status {
    guard(|| {
        out(list_out, "list_out")?;
        let items = DISCOVERIES.get(d)?.with_source(|d| Ok(d.snapshot()))?;
        write_result(
            list_out,
            etcdc_instance_list {
                items: items.into_iter().map(Into::into).collect(),
            },
        );
        Ok(())
    })
}

/// How many instances the list holds.
#[no_mangle]
pub extern "C" fn etcdc_instance_list_len(l: *const etcdc_instance_list) -> usize {
    field(l, 0, |l| l.items.len())
}

/// The `i`-th instance, borrowed from the list; NULL when out of range.
#[no_mangle]
pub extern "C" fn etcdc_instance_list_get(
    l: *const etcdc_instance_list,
    i: usize,
) -> *const etcdc_instance {
    field(l, std::ptr::null(), |l| {
        l.items.get(i).map_or(std::ptr::null(), |x| x as *const _)
    })
}

/// Frees a list. NULL does nothing.
#[no_mangle]
pub extern "C" fn etcdc_instance_list_free(l: *mut etcdc_instance_list) {
    free_box(l)
}

/// Pull form: the next change, waiting up to `timeout_ms` (0: no wait; negative: no limit).
/// `ETCDC_ERR_TIMEOUT` when nothing arrived. Free it with `etcdc_discovery_event_free`.
#[no_mangle]
pub extern "C" fn etcdc_discovery_next(
    d: *const etcdc_discovery,
    timeout_ms: i64,
    event_out: *mut *mut etcdc_discovery_event,
) -> etcdc_status {
    stream::next(&DISCOVERIES, d, timeout_ms, event_out)
}

/// Pull form: a descriptor readable while a change is waiting. Owned by the discovery.
#[no_mangle]
pub extern "C" fn etcdc_discovery_fd(
    d: *const etcdc_discovery,
    fd_out: *mut c_int,
) -> etcdc_status {
    stream::fd(&DISCOVERIES, d, fd_out)
}

/// Stops following and frees the discovery, with the same callback rules as
/// `etcdc_watch_free`. NULL does nothing.
#[no_mangle]
pub extern "C" fn etcdc_discovery_free(d: *mut etcdc_discovery) -> etcdc_status {
    stream::free(&DISCOVERIES, d)
}

/// What changed.
#[no_mangle]
pub extern "C" fn etcdc_discovery_event_change(
    e: *const etcdc_discovery_event,
) -> etcdc_discovery_change {
    field(e, etcdc_discovery_change::ETCDC_DISCOVERY_ENDED, |e| {
        e.change
    })
}

/// The instance (as it is now; for REMOVED, as it was), borrowed from the event.
#[no_mangle]
pub extern "C" fn etcdc_discovery_event_instance(
    e: *const etcdc_discovery_event,
) -> *const etcdc_instance {
    field(e, std::ptr::null(), |e| &e.instance as *const _)
}

/// `ETCDC_OK`, or for `ETCDC_DISCOVERY_ENDED` why the discovery stopped.
#[no_mangle]
pub extern "C" fn etcdc_discovery_event_status(e: *const etcdc_discovery_event) -> etcdc_status {
    status_field(e, "event", |e| e.status)
}

/// For `ETCDC_DISCOVERY_ENDED`, the message; "" otherwise.
#[no_mangle]
pub extern "C" fn etcdc_discovery_event_reason(e: *const etcdc_discovery_event) -> *const c_char {
    field(e, c"".as_ptr(), |e| e.reason.as_ptr())
}

/// A copy of an event that the caller owns; NULL for NULL.
#[no_mangle]
pub extern "C" fn etcdc_discovery_event_clone(
    e: *const etcdc_discovery_event,
) -> *mut etcdc_discovery_event {
    clone_box(e)
}

/// Frees a pulled or cloned event. NULL does nothing.
#[no_mangle]
pub extern "C" fn etcdc_discovery_event_free(e: *mut etcdc_discovery_event) {
    free_box(e)
}

//! Leases: grant, revoke, time-to-live, list, and a keeper that keeps leases alive and reports
//! their state.

use std::ffi::{c_char, c_int, c_void, CString};
use std::future::Future;
use std::sync::Arc;

use super::client::{etcdc_client, launch, wait, Client, CLIENTS};
use super::completion::{etcdc_completion, etcdc_cq, etcdc_op, next_async, result, with_result};
use super::guard::{arg, clone_box, cstring, field, free_box, guard, out, status_field, view};
use super::handle::Table;
use super::status::etcdc_status;
use super::stream::{self, CCallback, CItem, StreamHandle};
use crate::api::{Etcd, LeaseState, LeaseUpdate};
use crate::error::{Error, ErrorKind, Result};
use crate::lease::LeaseKeeper;
use crate::pb::etcdserverpb::*;

/// A grant: the arguments checked now, the call when awaited.
fn grant_call(
    c: &Client,
    etcd: Arc<dyn Etcd>,
    ttl: i64,
    id: i64,
    timeout_ms: i64,
) -> Result<impl Future<Output = Result<LeaseGrantResponse>>> {
    if ttl <= 0 {
        return Err(Error::invalid(format!(
            "lease TTL must be positive, got {ttl}"
        )));
    }
    if id < 0 {
        return Err(Error::invalid(format!(
            "lease id must not be negative, got {id}"
        )));
    }
    let deadline = c.deadline(timeout_ms)?;
    Ok(async move {
        etcd.lease_grant(LeaseGrantRequest { ttl, id }, deadline)
            .await
    })
}

/// Grants a lease of `ttl` seconds. `id` 0 lets the server choose the id. The granted id and
/// TTL (the server may raise a small TTL to its minimum) are written to `id_out` and
/// `ttl_out`; `ttl_out` may be NULL.
#[no_mangle]
pub extern "C" fn etcdc_lease_grant(
    client: *const etcdc_client,
    ttl: i64,
    id: i64,
    timeout_ms: i64,
    id_out: *mut i64,
    ttl_out: *mut i64,
) -> etcdc_status {
    guard(|| {
        let id_out = out(id_out, "id_out")?;
        let resp = wait(client, |c, etcd| grant_call(c, etcd, ttl, id, timeout_ms))?;
        id_out.write(resp.id);
        if !ttl_out.is_null() {
            out(ttl_out, "ttl_out")?.write(resp.ttl);
        }
        Ok(())
    })
}

/// `etcdc_lease_grant`, asynchronously (see `etcdc_put_async`): `etcdc_completion_lease_id`.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn etcdc_lease_grant_async(
    client: *const etcdc_client,
    ttl: i64,
    id: i64,
    timeout_ms: i64,
    cq: *const etcdc_cq,
    tag: *mut c_void,
    op_out: *mut *mut etcdc_op,
) -> etcdc_status {
    launch(client, cq, tag, op_out, |c, etcd| {
        let call = grant_call(c, etcd, ttl, id, timeout_ms)?;
        Ok(async move { Ok(Granted(call.await?.id)) })
    })
}

/// What `etcdc_lease_grant_async` completes with.
struct Granted(i64);

/// A lease grant's lease id; 0 for another kind or a failure.
#[no_mangle]
pub extern "C" fn etcdc_completion_lease_id(c: *const etcdc_completion) -> i64 {
    with_result(c, 0, |g: &Granted| g.0)
}

/// Revokes a lease: every key attached to it is deleted. `ETCDC_ERR_NOT_FOUND` if there is
/// no such lease.
#[no_mangle]
pub extern "C" fn etcdc_lease_revoke(
    client: *const etcdc_client,
    id: i64,
    timeout_ms: i64,
) -> etcdc_status {
    guard(|| wait(client, |c, etcd| revoke_call(c, etcd, id, timeout_ms)))
}

/// A revoke: the deadline now, the call when awaited.
fn revoke_call(
    c: &Client,
    etcd: Arc<dyn Etcd>,
    id: i64,
    timeout_ms: i64,
) -> Result<impl Future<Output = Result<()>>> {
    let deadline = c.deadline(timeout_ms)?;
    Ok(async move {
        etcd.lease_revoke(LeaseRevokeRequest { id }, deadline)
            .await
            .map(drop)
    })
}

/// `etcdc_lease_revoke`, asynchronously (see `etcdc_put_async`).
#[no_mangle]
pub extern "C" fn etcdc_lease_revoke_async(
    client: *const etcdc_client,
    id: i64,
    timeout_ms: i64,
    cq: *const etcdc_cq,
    tag: *mut c_void,
    op_out: *mut *mut etcdc_op,
) -> etcdc_status {
    launch(client, cq, tag, op_out, |c, etcd| {
        revoke_call(c, etcd, id, timeout_ms)
    })
}

/// A lease's remaining time and, if asked, its keys. Free with `etcdc_lease_info_free`.
pub struct etcdc_lease_info {
    resp: LeaseTimeToLiveResponse,
}

/// A time-to-live answer, or etcd's "not found" for a lease that is gone (etcd answers those
/// with a TTL of -1).
pub(crate) fn lease_info(resp: LeaseTimeToLiveResponse) -> Result<etcdc_lease_info> {
    if resp.ttl < 0 {
        return Err(Error::new(
            ErrorKind::NotFound,
            "etcdserver: requested lease not found",
        ));
    }
    Ok(etcdc_lease_info { resp })
}

/// Reads a lease's remaining TTL, granted TTL and (with `keys`) attached keys.
/// `ETCDC_ERR_NOT_FOUND` ("etcdserver: requested lease not found") if it has expired or never
/// existed.
#[no_mangle]
pub extern "C" fn etcdc_lease_time_to_live(
    client: *const etcdc_client,
    id: i64,
    keys: bool,
    timeout_ms: i64,
    info_out: *mut *mut etcdc_lease_info,
) -> etcdc_status {
    guard(|| {
        let out = out(info_out, "info_out")?;
        let info = wait(client, |c, etcd| ttl_call(c, etcd, id, keys, timeout_ms))?;
        out.write(Box::into_raw(Box::new(info)));
        Ok(())
    })
}

/// A time-to-live: the deadline now, the call when awaited.
fn ttl_call(
    c: &Client,
    etcd: Arc<dyn Etcd>,
    id: i64,
    keys: bool,
    timeout_ms: i64,
) -> Result<impl Future<Output = Result<etcdc_lease_info>>> {
    let deadline = c.deadline(timeout_ms)?;
    Ok(async move {
        lease_info(
            etcd.lease_time_to_live(LeaseTimeToLiveRequest { id, keys }, deadline)
                .await?,
        )
    })
}

/// `etcdc_lease_time_to_live`, asynchronously (see `etcdc_put_async`):
/// `etcdc_completion_lease_info`.
#[no_mangle]
pub extern "C" fn etcdc_lease_time_to_live_async(
    client: *const etcdc_client,
    id: i64,
    keys: bool,
    timeout_ms: i64,
    cq: *const etcdc_cq,
    tag: *mut c_void,
    op_out: *mut *mut etcdc_op,
) -> etcdc_status {
    launch(client, cq, tag, op_out, |c, etcd| {
        ttl_call(c, etcd, id, keys, timeout_ms)
    })
}

/// Frees lease info. NULL does nothing.
#[no_mangle]
pub extern "C" fn etcdc_lease_info_free(info: *mut etcdc_lease_info) {
    free_box(info)
}

/// Seconds left before the lease expires.
#[no_mangle]
pub extern "C" fn etcdc_lease_info_ttl(info: *const etcdc_lease_info) -> i64 {
    field(info, 0, |i| i.resp.ttl)
}

/// The TTL the lease was granted with.
#[no_mangle]
pub extern "C" fn etcdc_lease_info_granted_ttl(info: *const etcdc_lease_info) -> i64 {
    field(info, 0, |i| i.resp.granted_ttl)
}

/// How many keys are attached (0 unless asked for with `keys`).
#[no_mangle]
pub extern "C" fn etcdc_lease_info_keys_len(info: *const etcdc_lease_info) -> usize {
    field(info, 0, |i| i.resp.keys.len())
}

/// The `i`-th attached key, borrowed (length in `*len`); NULL when out of range.
#[no_mangle]
pub extern "C" fn etcdc_lease_info_key(
    info: *const etcdc_lease_info,
    i: usize,
    len: *mut usize,
) -> *const u8 {
    field(info, std::ptr::null(), |info| {
        info.resp
            .keys
            .get(i)
            .map_or(std::ptr::null(), |k| view(k, len))
    })
}

/// A lease time-to-live's answer, borrowed; NULL for another kind or a failure.
#[no_mangle]
pub extern "C" fn etcdc_completion_lease_info(
    c: *const etcdc_completion,
) -> *const etcdc_lease_info {
    result::<etcdc_lease_info>(c)
}

/// The ids of all leases. Free with `etcdc_lease_list_free`.
pub struct etcdc_lease_list {
    pub(crate) ids: Vec<i64>,
}

/// Lists every lease of the cluster, as one member knows them (etcd answers from the member
/// asked): a lease granted a moment ago through another member may not be listed yet.
#[no_mangle]
pub extern "C" fn etcdc_leases(
    client: *const etcdc_client,
    timeout_ms: i64,
    list_out: *mut *mut etcdc_lease_list,
) -> etcdc_status {
    guard(|| {
        let out = out(list_out, "list_out")?;
        let list = wait(client, |c, etcd| leases_call(c, etcd, timeout_ms))?;
        out.write(Box::into_raw(Box::new(list)));
        Ok(())
    })
}

/// A lease list: the deadline now, the call when awaited.
fn leases_call(
    c: &Client,
    etcd: Arc<dyn Etcd>,
    timeout_ms: i64,
) -> Result<impl Future<Output = Result<etcdc_lease_list>>> {
    let deadline = c.deadline(timeout_ms)?;
    Ok(async move {
        let resp = etcd.lease_leases(deadline).await?;
        Ok(etcdc_lease_list {
            ids: resp.leases.into_iter().map(|l| l.id).collect(),
        })
    })
}

/// `etcdc_leases`, asynchronously (see `etcdc_put_async`): `etcdc_completion_lease_list`.
#[no_mangle]
pub extern "C" fn etcdc_leases_async(
    client: *const etcdc_client,
    timeout_ms: i64,
    cq: *const etcdc_cq,
    tag: *mut c_void,
    op_out: *mut *mut etcdc_op,
) -> etcdc_status {
    launch(client, cq, tag, op_out, |c, etcd| {
        leases_call(c, etcd, timeout_ms)
    })
}

/// Frees a lease list. NULL does nothing.
#[no_mangle]
pub extern "C" fn etcdc_lease_list_free(list: *mut etcdc_lease_list) {
    free_box(list)
}

/// How many leases the list holds.
#[no_mangle]
pub extern "C" fn etcdc_lease_list_len(list: *const etcdc_lease_list) -> usize {
    field(list, 0, |l| l.ids.len())
}

/// The `i`-th lease id; 0 when out of range.
#[no_mangle]
pub extern "C" fn etcdc_lease_list_id(list: *const etcdc_lease_list, i: usize) -> i64 {
    field(list, 0, |l| l.ids.get(i).copied().unwrap_or(0))
}

/// A lease list, borrowed; NULL for another kind or a failure.
#[no_mangle]
pub extern "C" fn etcdc_completion_lease_list(
    c: *const etcdc_completion,
) -> *const etcdc_lease_list {
    result::<etcdc_lease_list>(c)
}

// ---- keeper ----

/// A kept lease's state.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum etcdc_lease_state {
    /// The last refresh succeeded.
    ETCDC_LEASE_ALIVE = 0,
    /// The keep-alive stream broke; refreshing resumes through another member.
    ETCDC_LEASE_RECONNECTING = 1,
    /// The lease is gone: the cluster said so (expired or revoked), or no member could
    /// confirm it for another TTL after it ran out (`etcdc_lease_event_reason` says which).
    /// Its keys are deleted (or will be, by the cluster). Grant a new lease and write them
    /// again. Nothing more follows for it.
    ETCDC_LEASE_LOST = 2,
}

/// One state change of a kept lease. Borrowed for a callback (keep it with
/// `etcdc_lease_event_clone`), owned when pulled (free with `etcdc_lease_event_free`).
#[derive(Clone)]
pub struct etcdc_lease_event {
    id: i64,
    state: etcdc_lease_state,
    ttl: i64,
    reason: CString,
    status: etcdc_status,
}

impl CItem<LeaseUpdate> for etcdc_lease_event {
    fn from_item(u: LeaseUpdate) -> Self {
        etcdc_lease_event {
            id: u.id,
            state: match u.state {
                LeaseState::Alive => etcdc_lease_state::ETCDC_LEASE_ALIVE,
                LeaseState::Reconnecting => etcdc_lease_state::ETCDC_LEASE_RECONNECTING,
                LeaseState::Lost => etcdc_lease_state::ETCDC_LEASE_LOST,
            },
            ttl: u.ttl,
            reason: cstring(&u.reason),
            status: etcdc_status::ETCDC_OK,
        }
    }

    /// The keeper itself stopped (id 0): no lease of it is kept any more.
    fn from_failure(e: Error) -> Self {
        etcdc_lease_event {
            id: 0,
            state: etcdc_lease_state::ETCDC_LEASE_LOST,
            ttl: -1,
            reason: cstring(&e.message),
            status: e.kind.into(),
        }
    }
}

/// A lease state callback, with the same rules as `etcdc_watch_callback`.
#[repr(C)]
pub struct etcdc_lease_callback {
    pub call: Option<unsafe extern "C" fn(user_data: *mut c_void, event: *const etcdc_lease_event)>,
    pub drop: Option<unsafe extern "C" fn(user_data: *mut c_void)>,
    pub user_data: *mut c_void,
}

/// Keeps leases alive in the background: each is refreshed at a third of its TTL over one
/// shared stream that moves to another member when its member fails. Free with
/// `etcdc_lease_keeper_free`.
pub struct etcdc_lease_keeper {
    _opaque: [u8; 0],
}

pub(crate) static KEEPERS: Table<StreamHandle<LeaseUpdate, LeaseKeeper>> =
    Table::new(3, "lease keeper");

/// Starts a keeper on `client` with no leases yet. With `callback` non-NULL, state changes go
/// to `callback->call` on etcdc's event thread; with NULL they queue for
/// `etcdc_lease_keeper_next` (and `etcdc_lease_keeper_fd`). A consumer that falls behind
/// costs bounded memory: a lease's intermediate states may be merged into its latest one,
/// but a LOST is always delivered.
#[no_mangle]
pub extern "C" fn etcdc_lease_keeper_start(
    client: *const etcdc_client,
    callback: *const etcdc_lease_callback,
    keeper_out: *mut *mut etcdc_lease_keeper,
) -> etcdc_status {
    let cb = arg(callback, "callback")
        .ok()
        .map(|cb| CCallback::new(cb.call, cb.drop, cb.user_data));
    guard(|| {
        let out = out(keeper_out, "keeper_out")?;
        let c = CLIENTS.get(client)?;
        let (feed, stream) = stream::open::<LeaseUpdate, etcdc_lease_event>(cb, 64)?;
        let keeper = LeaseKeeper::new(c.etcd.clone(), feed);
        out.write(KEEPERS.insert(StreamHandle::new(stream, keeper)));
        Ok(())
    })
}

/// Starts keeping lease `id` alive. The first state (`ETCDC_LEASE_ALIVE`, or `_LOST` if the
/// lease does not exist) follows within a few seconds. Adding a lease kept already is a no-op;
/// a lost lease is no longer kept, so adding it again (after granting it anew with the same
/// id) starts over.
#[no_mangle]
pub extern "C" fn etcdc_lease_keeper_add(k: *const etcdc_lease_keeper, id: i64) -> etcdc_status {
    guard(|| KEEPERS.get(k)?.with_source(|keeper| keeper.add(id)))
}

/// Stops keeping lease `id` alive (it is not revoked: it expires after its TTL).
/// `ETCDC_ERR_NOT_FOUND` if the keeper does not keep it.
#[no_mangle]
pub extern "C" fn etcdc_lease_keeper_remove(k: *const etcdc_lease_keeper, id: i64) -> etcdc_status {
    guard(|| KEEPERS.get(k)?.with_source(|keeper| keeper.remove(id)))
}

/// Pull form: the next state change, waiting up to `timeout_ms` (0: no wait; negative: no
/// limit). `ETCDC_ERR_TIMEOUT` when nothing arrived; `ETCDC_ERR_CLOSED` once the keeper is
/// freed (also for a thread waiting here when another frees it). Free the event with
/// `etcdc_lease_event_free`.
#[no_mangle]
pub extern "C" fn etcdc_lease_keeper_next(
    k: *const etcdc_lease_keeper,
    timeout_ms: i64,
    event_out: *mut *mut etcdc_lease_event,
) -> etcdc_status {
    stream::next(&KEEPERS, k, timeout_ms, event_out)
}

/// `etcdc_lease_keeper_next`, asynchronously (see `etcdc_watch_next_async`):
/// `etcdc_completion_lease_event`.
#[no_mangle]
pub extern "C" fn etcdc_lease_keeper_next_async(
    keeper: *const etcdc_lease_keeper,
    cq: *const etcdc_cq,
    tag: *mut c_void,
    op_out: *mut *mut etcdc_op,
) -> etcdc_status {
    next_async::<etcdc_lease_event, _, _, _>(&KEEPERS, keeper, cq, tag, op_out)
}

/// Pull form: a descriptor readable while a state change is waiting. Owned by the keeper.
#[no_mangle]
pub extern "C" fn etcdc_lease_keeper_fd(
    k: *const etcdc_lease_keeper,
    fd_out: *mut c_int,
) -> etcdc_status {
    stream::fd(&KEEPERS, k, fd_out)
}

/// Stops keeping every lease (none is revoked) and frees the keeper, with the same callback
/// rules as `etcdc_watch_free`. NULL does nothing.
#[no_mangle]
pub extern "C" fn etcdc_lease_keeper_free(k: *mut etcdc_lease_keeper) -> etcdc_status {
    stream::free(&KEEPERS, k)
}

/// The lease this event is about.
#[no_mangle]
pub extern "C" fn etcdc_lease_event_id(e: *const etcdc_lease_event) -> i64 {
    field(e, 0, |e| e.id)
}

/// The lease's new state.
#[no_mangle]
pub extern "C" fn etcdc_lease_event_state(e: *const etcdc_lease_event) -> etcdc_lease_state {
    field(e, etcdc_lease_state::ETCDC_LEASE_LOST, |e| e.state)
}

/// The TTL the server last granted (seconds); -1 once lost.
#[no_mangle]
pub extern "C" fn etcdc_lease_event_ttl(e: *const etcdc_lease_event) -> i64 {
    field(e, 0, |e| e.ttl)
}

/// Why the state changed ("" for ALIVE), e.g. the server's or the transport's message.
#[no_mangle]
pub extern "C" fn etcdc_lease_event_reason(e: *const etcdc_lease_event) -> *const c_char {
    field(e, c"".as_ptr(), |e| e.reason.as_ptr())
}

/// A copy of an event that the caller owns; NULL for NULL.
#[no_mangle]
pub extern "C" fn etcdc_lease_event_clone(e: *const etcdc_lease_event) -> *mut etcdc_lease_event {
    clone_box(e)
}

/// `ETCDC_OK` for a lease's state change; for the last event of a keeper that stopped by
/// itself (id 0), why it stopped (`etcdc_lease_event_reason` has the message).
#[no_mangle]
pub extern "C" fn etcdc_lease_event_status(e: *const etcdc_lease_event) -> etcdc_status {
    status_field(e, "event", |e| e.status)
}

/// Frees a pulled or cloned event. NULL does nothing.
#[no_mangle]
pub extern "C" fn etcdc_lease_event_free(e: *mut etcdc_lease_event) {
    free_box(e)
}

/// A lease keeper's or session's event (`etcdc_lease_keeper_next_async`,
/// `etcdc_session_next_async`), borrowed; NULL for another kind or a failure.
#[no_mangle]
pub extern "C" fn etcdc_completion_lease_event(
    c: *const etcdc_completion,
) -> *const etcdc_lease_event {
    result::<etcdc_lease_event>(c)
}

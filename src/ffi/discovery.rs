//! Service discovery: `etcdc_discover` keeps a table of a directory's registered instances
//! (a list, then a watch) and picks one per request. It reports changes through the one
//! stream handle (callback, or pull with an fd for epoll loops).

use std::ffi::{c_char, c_int, c_void, CString};

use super::client::{etcdc_client, CLIENTS};
use super::completion::{etcdc_completion, etcdc_cq, etcdc_op, next_async, result};
use super::guard::{
    arg, c_str, clone_box, cstring, field, free_box, guard, out, status_field, write_result,
};
use super::handle::Table;
use super::status::etcdc_status;
use super::stream::{self, CCallback, CItem, StreamHandle};
use crate::error::Error;
use crate::recipes::discovery::{Change, Discovery, Instance, Policy};

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
        let items = DISCOVERIES.get(d)?.with_source(|d| Ok(d.instances()))?;
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

/// `etcdc_discovery_next`, asynchronously (see `etcdc_watch_next_async`):
/// `etcdc_completion_discovery_event`.
#[no_mangle]
pub extern "C" fn etcdc_discovery_next_async(
    d: *const etcdc_discovery,
    cq: *const etcdc_cq,
    tag: *mut c_void,
    op_out: *mut *mut etcdc_op,
) -> etcdc_status {
    next_async::<etcdc_discovery_event, _, _, _>(&DISCOVERIES, d, cq, tag, op_out)
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

/// A discovery change (`etcdc_discovery_next_async`), borrowed; NULL for another kind or a
/// failure.
#[no_mangle]
pub extern "C" fn etcdc_completion_discovery_event(
    c: *const etcdc_completion,
) -> *const etcdc_discovery_event {
    result::<etcdc_discovery_event>(c)
}

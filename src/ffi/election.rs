//! Elections — Go's `concurrency.Election` on the wire, so etcdc, `etcdctl elect` and Go
//! services see the same leader: campaign, proclaim, resign, the leader, and observers.

use std::ffi::{c_int, c_void, CString};
use std::sync::{Arc, Mutex as StdMutex};

use super::client::{etcdc_client, Client, Queued, CLIENTS};
use super::completion::{etcdc_completion, etcdc_cq, etcdc_op, next_async, result, Answer};
use super::guard::{
    arg, bytes, clone_box, cstring, field, free_box, guard, out, status_field, view,
};
use super::handle::Table;
use super::session::{etcdc_session, session_of};
use super::status::etcdc_status;
use super::stream::{self, CCallback, CItem, StreamHandle};
use crate::error::{Error, ErrorKind, Result};
use crate::recipes::election::{self, Election, Leader};

/// A candidacy in an election of a session (Go's `concurrency.Election`). Free with
/// `etcdc_election_free`.
pub struct etcdc_election {
    _opaque: [u8; 0],
}

pub(crate) struct ElectionHandle {
    // Held across the calls to etcd: an async mutex, so a campaign blocks no thread.
    election: tokio::sync::Mutex<Election>,
    /// The candidacy's key and revision after the last call.
    key: StdMutex<Option<(Vec<u8>, i64)>>,
    client: Arc<Client>,
}

enum ElectionOp {
    Campaign(Vec<u8>),
    Proclaim(Vec<u8>),
    Resign,
}

impl ElectionHandle {
    fn new(election: Election, client: Arc<Client>) -> Self {
        let key = election.key().map(|(k, r)| (k.to_vec(), r));
        ElectionHandle {
            election: tokio::sync::Mutex::new(election),
            key: StdMutex::new(key),
            client,
        }
    }

    async fn run(&self, op: ElectionOp, deadline: crate::api::Deadline) -> Result<()> {
        let mut e = self.election.lock().await;
        let result = match op {
            ElectionOp::Campaign(v) => e.campaign(&v, deadline).await,
            ElectionOp::Proclaim(v) => e.proclaim(&v, deadline).await,
            ElectionOp::Resign => e.resign(deadline).await,
        };
        *self.key.lock().unwrap_or_else(|p| p.into_inner()) = e.key().map(|(k, r)| (k.to_vec(), r));
        result
    }
}

pub(crate) static ELECTIONS: Table<ElectionHandle> = Table::new(9, "election");

/// The election `name` for `session`; candidates' keys are `<name>/<lease hex>`, as Go's and
/// `etcdctl elect`'s. An empty name is `ETCDC_ERR_INVALID_ARGUMENT`.
#[no_mangle]
pub extern "C" fn etcdc_election_new(
    session: *const etcdc_session,
    name: *const u8,
    name_len: usize,
    election_out: *mut *mut etcdc_election,
) -> etcdc_status {
    guard(|| {
        let out = out(election_out, "election_out")?;
        let name = bytes(name, name_len, "name")?;
        let (client, lease) = session_of(session)?;
        let election = Election::new(client.etcd.clone(), name, lease)?;
        out.write(ELECTIONS.insert(ElectionHandle::new(election, client)));
        Ok(())
    })
}

/// Leadership taken earlier and saved (`etcdc_election_key`, `_revision`), e.g. before a
/// restart that kept the session's lease: proclaim and resign work as for the campaign.
#[no_mangle]
pub extern "C" fn etcdc_election_resume(
    session: *const etcdc_session,
    name: *const u8,
    name_len: usize,
    key: *const u8,
    key_len: usize,
    revision: i64,
    election_out: *mut *mut etcdc_election,
) -> etcdc_status {
    guard(|| {
        let out = out(election_out, "election_out")?;
        let name = bytes(name, name_len, "name")?;
        let key = bytes(key, key_len, "key")?;
        let (client, lease) = session_of(session)?;
        let election = Election::resume(client.etcd.clone(), name, lease, key.to_vec(), revision)?;
        out.write(ELECTIONS.insert(ElectionHandle::new(election, client)));
        Ok(())
    })
}

fn election_call(
    e: *const etcdc_election,
    op: Result<ElectionOp>,
    timeout_ms: i64,
    queue: Option<Queued>,
) -> etcdc_status {
    guard(|| {
        let op = op?;
        let h = ELECTIONS.get(e)?;
        let deadline = match op {
            ElectionOp::Campaign(_) => h.client.wait_deadline(timeout_ms)?,
            _ => h.client.deadline(timeout_ms)?,
        };
        match queue {
            None => h.client.block(h.run(op, deadline)),
            Some(q) => {
                let client = h.client.clone();
                q.start(&client, async move {
                    h.run(op, deadline).await.map(|()| Answer::new(()))
                })
            }
        }
    })
}

fn value_of(value: *const u8, value_len: usize) -> Result<Vec<u8>> {
    bytes(value, value_len, "value").map(<[u8]>::to_vec)
}

/// Runs for leader with `value` and waits until elected, up to `timeout_ms` (0: the
/// client's timeout; negative: no limit). `ETCDC_ERR_TIMEOUT` when not elected in time (the
/// candidacy is withdrawn).
#[no_mangle]
pub extern "C" fn etcdc_election_campaign(
    e: *const etcdc_election,
    value: *const u8,
    value_len: usize,
    timeout_ms: i64,
) -> etcdc_status {
    let op = value_of(value, value_len).map(ElectionOp::Campaign);
    election_call(e, op, timeout_ms, None)
}

/// Replaces the leader's value without a new election. `ETCDC_ERR_FAILED_PRECONDITION`
/// ("election: not leader") when this candidacy does not lead.
#[no_mangle]
pub extern "C" fn etcdc_election_proclaim(
    e: *const etcdc_election,
    value: *const u8,
    value_len: usize,
    timeout_ms: i64,
) -> etcdc_status {
    let op = value_of(value, value_len).map(ElectionOp::Proclaim);
    election_call(e, op, timeout_ms, None)
}

/// Gives up leadership (or the candidacy): the next candidate is elected.
#[no_mangle]
pub extern "C" fn etcdc_election_resign(e: *const etcdc_election, timeout_ms: i64) -> etcdc_status {
    election_call(e, Ok(ElectionOp::Resign), timeout_ms, None)
}

/// `etcdc_election_campaign`, asynchronously: completes into `cq` with `tag` once elected
/// (or with why not). Calls on one election run one at a time.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn etcdc_election_campaign_async(
    e: *const etcdc_election,
    value: *const u8,
    value_len: usize,
    timeout_ms: i64,
    cq: *const etcdc_cq,
    tag: *mut c_void,
    op_out: *mut *mut etcdc_op,
) -> etcdc_status {
    let op = value_of(value, value_len).map(ElectionOp::Campaign);
    election_call(e, op, timeout_ms, Some(Queued { cq, tag, op_out }))
}

/// `etcdc_election_proclaim`, asynchronously (see `etcdc_election_campaign_async`).
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn etcdc_election_proclaim_async(
    e: *const etcdc_election,
    value: *const u8,
    value_len: usize,
    timeout_ms: i64,
    cq: *const etcdc_cq,
    tag: *mut c_void,
    op_out: *mut *mut etcdc_op,
) -> etcdc_status {
    let op = value_of(value, value_len).map(ElectionOp::Proclaim);
    election_call(e, op, timeout_ms, Some(Queued { cq, tag, op_out }))
}

/// `etcdc_election_resign`, asynchronously (see `etcdc_election_campaign_async`).
#[no_mangle]
pub extern "C" fn etcdc_election_resign_async(
    e: *const etcdc_election,
    timeout_ms: i64,
    cq: *const etcdc_cq,
    tag: *mut c_void,
    op_out: *mut *mut etcdc_op,
) -> etcdc_status {
    let op = Ok(ElectionOp::Resign);
    election_call(e, op, timeout_ms, Some(Queued { cq, tag, op_out }))
}

/// This candidacy's key while campaigning or leading, copied into a new leader record
/// (free with `etcdc_leader_free`); `ETCDC_ERR_NOT_FOUND` when not campaigning.
#[no_mangle]
pub extern "C" fn etcdc_election_key(
    e: *const etcdc_election,
    leader_out: *mut *mut etcdc_leader,
) -> etcdc_status {
    guard(|| {
        let out = out(leader_out, "leader_out")?;
        let h = ELECTIONS.get(e)?;
        let (key, rev) = h
            .key
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| Error::new(ErrorKind::NotFound, "not campaigning"))?;
        out.write(Box::into_raw(Box::new(etcdc_leader::from_item(Leader {
            key,
            rev,
            ..Default::default()
        }))));
        Ok(())
    })
}

/// Frees the election handle (leadership is not resigned: resign first, or end the
/// session). NULL does nothing.
#[no_mangle]
pub extern "C" fn etcdc_election_free(e: *mut etcdc_election) -> etcdc_status {
    if e.is_null() {
        return etcdc_status::ETCDC_OK;
    }
    guard(|| ELECTIONS.remove(e).map(drop))
}

/// A leader: its key, the revision it was elected at (its key's create revision) and its
/// value. Borrowed for an observer's callback (keep it with `etcdc_leader_clone`), owned
/// otherwise (free with `etcdc_leader_free`).
#[derive(Clone)]
pub struct etcdc_leader {
    key: Vec<u8>,
    value: Vec<u8>,
    revision: i64,
    status: etcdc_status,
    reason: CString,
}

impl CItem<Leader> for etcdc_leader {
    fn from_item(l: Leader) -> Self {
        etcdc_leader {
            key: l.key,
            value: l.value,
            revision: l.rev,
            status: etcdc_status::ETCDC_OK,
            reason: CString::default(),
        }
    }

    fn from_failure(e: Error) -> Self {
        etcdc_leader {
            key: Vec::new(),
            value: Vec::new(),
            revision: 0,
            status: e.kind.into(),
            reason: cstring(&e.message),
        }
    }
}

/// The current leader of election `name` (a record the caller owns). `ETCDC_ERR_NOT_FOUND`
/// ("election: no leader") when there is none.
#[no_mangle]
pub extern "C" fn etcdc_election_leader(
    client: *const etcdc_client,
    name: *const u8,
    name_len: usize,
    timeout_ms: i64,
    leader_out: *mut *mut etcdc_leader,
) -> etcdc_status {
    guard(|| {
        let out = out(leader_out, "leader_out")?;
        let name = bytes(name, name_len, "name")?;
        let c = CLIENTS.get(client)?;
        let deadline = c.deadline(timeout_ms)?;
        let l = c.block(election::leader(&*c.etcd, name, deadline))?;
        out.write(Box::into_raw(Box::new(etcdc_leader::from_item(l))));
        Ok(())
    })
}

/// The leader's key (length in `*len`).
#[no_mangle]
pub extern "C" fn etcdc_leader_key(l: *const etcdc_leader, len: *mut usize) -> *const u8 {
    field(l, std::ptr::null(), |l| view(&l.key, len))
}

/// The leader's value (length in `*len`).
#[no_mangle]
pub extern "C" fn etcdc_leader_value(l: *const etcdc_leader, len: *mut usize) -> *const u8 {
    field(l, std::ptr::null(), |l| view(&l.value, len))
}

/// The revision the leader was elected at (its key's create revision).
#[no_mangle]
pub extern "C" fn etcdc_leader_revision(l: *const etcdc_leader) -> i64 {
    field(l, 0, |l| l.revision)
}

/// `ETCDC_OK`, or for the last record of an observer that stopped by itself, why.
#[no_mangle]
pub extern "C" fn etcdc_leader_status(l: *const etcdc_leader) -> etcdc_status {
    status_field(l, "leader", |l| l.status)
}

/// For the last record of an observer that stopped by itself, the message; "" otherwise.
#[no_mangle]
pub extern "C" fn etcdc_leader_reason(l: *const etcdc_leader) -> *const std::ffi::c_char {
    field(l, c"".as_ptr(), |l| l.reason.as_ptr())
}

/// A copy the caller owns; NULL for NULL.
#[no_mangle]
pub extern "C" fn etcdc_leader_clone(l: *const etcdc_leader) -> *mut etcdc_leader {
    clone_box(l)
}

/// Frees an owned leader record. NULL does nothing.
#[no_mangle]
pub extern "C" fn etcdc_leader_free(l: *mut etcdc_leader) {
    free_box(l)
}

/// An observed leader (`etcdc_observer_next_async`), borrowed; NULL for another kind or a
/// failure.
#[no_mangle]
pub extern "C" fn etcdc_completion_leader(c: *const etcdc_completion) -> *const etcdc_leader {
    result::<etcdc_leader>(c)
}

/// A leader callback, with the same rules as `etcdc_watch_callback`.
#[repr(C)]
pub struct etcdc_leader_callback {
    pub call: Option<unsafe extern "C" fn(user_data: *mut c_void, leader: *const etcdc_leader)>,
    pub drop: Option<unsafe extern "C" fn(user_data: *mut c_void)>,
    pub user_data: *mut c_void,
}

/// An election followed (Go's `Observe`). Free with `etcdc_observer_free`.
pub struct etcdc_observer {
    _opaque: [u8; 0],
}

/// Stops the observing task when the handle goes.
pub(crate) struct Observing(tokio::task::JoinHandle<()>);

impl Drop for Observing {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub(crate) static OBSERVERS: Table<StreamHandle<Leader, Observing>> = Table::new(10, "observer");

/// Follows election `name`: each new leader and each proclamation, in order, go to
/// `callback->call` on etcdc's event thread, or with a NULL `callback` queue for
/// `etcdc_observer_next` / `_fd`.
#[no_mangle]
pub extern "C" fn etcdc_election_observe(
    client: *const etcdc_client,
    name: *const u8,
    name_len: usize,
    callback: *const etcdc_leader_callback,
    observer_out: *mut *mut etcdc_observer,
) -> etcdc_status {
    let cb = arg(callback, "callback")
        .ok()
        .map(|cb| CCallback::new(cb.call, cb.drop, cb.user_data));
    guard(|| {
        let out = out(observer_out, "observer_out")?;
        let name = bytes(name, name_len, "name")?;
        let c = CLIENTS.get(client)?;
        let (feed, stream) = stream::open::<Leader, etcdc_leader>(cb, 64)?;
        let task = crate::runtime::within(&c.rt, || election::observe(c.etcd.clone(), name, feed))?;
        out.write(OBSERVERS.insert(StreamHandle::new(stream, Observing(task))));
        Ok(())
    })
}

/// Pull form: the next leader or proclamation, waiting up to `timeout_ms` (0: no wait;
/// negative: no limit). Free it with `etcdc_leader_free`.
#[no_mangle]
pub extern "C" fn etcdc_observer_next(
    o: *const etcdc_observer,
    timeout_ms: i64,
    leader_out: *mut *mut etcdc_leader,
) -> etcdc_status {
    stream::next(&OBSERVERS, o, timeout_ms, leader_out)
}

/// `etcdc_observer_next`, asynchronously (see `etcdc_watch_next_async`):
/// `etcdc_completion_leader`.
#[no_mangle]
pub extern "C" fn etcdc_observer_next_async(
    o: *const etcdc_observer,
    cq: *const etcdc_cq,
    tag: *mut c_void,
    op_out: *mut *mut etcdc_op,
) -> etcdc_status {
    next_async::<etcdc_leader, _, _, _>(&OBSERVERS, o, cq, tag, op_out)
}

/// Pull form: a descriptor readable while a leader record is waiting.
#[no_mangle]
pub extern "C" fn etcdc_observer_fd(o: *const etcdc_observer, fd_out: *mut c_int) -> etcdc_status {
    stream::fd(&OBSERVERS, o, fd_out)
}

/// Stops observing and frees the observer, with the same callback rules as
/// `etcdc_watch_free`. NULL does nothing.
#[no_mangle]
pub extern "C" fn etcdc_observer_free(o: *mut etcdc_observer) -> etcdc_status {
    stream::free(&OBSERVERS, o)
}

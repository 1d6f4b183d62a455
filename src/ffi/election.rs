//! Sessions, mutexes and elections — Go's `concurrency` package on the wire, so etcdc,
//! `etcdctl lock` / `etcdctl elect` and Go services exclude each other and see the same
//! leader. A session is a lease kept alive; a mutex or an election belongs to a session and
//! is lost with it.

use std::ffi::{c_int, c_void, CString};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};

use super::client::{etcdc_client, Client, CLIENTS};
use super::completion::{etcdc_cq, etcdc_op, Answer, Queued};
use super::guard::{
    arg, bytes, clone_box, cstring, field, free_box, guard, out, status_field, value, view,
};
use super::handle::Table;
use super::lease::{etcdc_lease_callback, etcdc_lease_event};
use super::status::etcdc_status;
use super::stream::{self, CCallback, CItem, StreamHandle};
use crate::api::LeaseUpdate;
use crate::error::{Error, ErrorKind, Result};
use crate::recipes::election::{self, Election, Leader};
use crate::recipes::mutex::Mutex;
use crate::recipes::session::Session;

// ---- session ----

/// A lease kept alive for mutexes and elections (Go's `concurrency.Session`). Free with
/// `etcdc_session_free`.
pub struct etcdc_session {
    _opaque: [u8; 0],
}

/// The session behind a handle: revoked when dropped (Go's `Close`).
pub(crate) struct Held {
    session: Option<Session>,
    client: Arc<Client>,
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            let deadline = crate::api::deadline_in(self.client.timeout);
            let _ = self.client.block(s.close(deadline));
        }
    }
}

pub(crate) static SESSIONS: Table<StreamHandle<LeaseUpdate, Held>> = Table::new(7, "session");

/// Starts a session: a new lease of `ttl_seconds` (0: Go's default, 60 s) refreshed at a
/// third of its TTL. Its state changes (`etcdc_lease_event`, as a lease keeper's) go to
/// `callback->call` on etcdc's event thread, or with a NULL `callback` queue for
/// `etcdc_session_next` / `_fd`; LOST means every lock and leadership of the session is
/// gone. A TTL under the cluster's minimum is `ETCDC_ERR_INVALID_ARGUMENT`.
#[no_mangle]
pub extern "C" fn etcdc_session_start(
    client: *const etcdc_client,
    ttl_seconds: i64,
    callback: *const etcdc_lease_callback,
    session_out: *mut *mut etcdc_session,
) -> etcdc_status {
    let cb = arg(callback, "callback")
        .ok()
        .map(|cb| CCallback::new(cb.call, cb.drop, cb.user_data));
    guard(|| {
        let out = out(session_out, "session_out")?;
        let c = CLIENTS.get(client)?;
        let (feed, stream) = stream::open::<LeaseUpdate, etcdc_lease_event>(cb, 64)?;
        let deadline = c.deadline(0)?;
        let session = c.block(Session::new(c.etcd.clone(), ttl_seconds, feed, deadline))?;
        out.write(SESSIONS.insert(StreamHandle::new(
            stream,
            Held {
                session: Some(session),
                client: c,
            },
        )));
        Ok(())
    })
}

/// The session's lease id; 0 for a bad handle.
#[no_mangle]
pub extern "C" fn etcdc_session_lease(s: *const etcdc_session) -> i64 {
    value(0, || {
        SESSIONS
            .get(s)
            .and_then(|h| h.with_source(|h| Ok(h.session.as_ref().map_or(0, |s| s.lease()))))
            .unwrap_or(0)
    })
}

/// Pull form: the next state change of the session's lease, waiting up to `timeout_ms` (0:
/// no wait; negative: no limit). Free it with `etcdc_lease_event_free`.
#[no_mangle]
pub extern "C" fn etcdc_session_next(
    s: *const etcdc_session,
    timeout_ms: i64,
    event_out: *mut *mut etcdc_lease_event,
) -> etcdc_status {
    stream::next(&SESSIONS, s, timeout_ms, event_out)
}

/// Pull form: a descriptor readable while a state change is waiting.
#[no_mangle]
pub extern "C" fn etcdc_session_fd(s: *const etcdc_session, fd_out: *mut c_int) -> etcdc_status {
    stream::fd(&SESSIONS, s, fd_out)
}

/// Ends the session: revokes its lease (its locks and leadership go at once) and frees it,
/// with the same callback rules as `etcdc_watch_free`. Free its mutexes and elections first.
/// NULL does nothing.
#[no_mangle]
pub extern "C" fn etcdc_session_free(s: *mut etcdc_session) -> etcdc_status {
    stream::free(&SESSIONS, s)
}

/// The client and lease of a live session.
fn session_of(s: *const etcdc_session) -> Result<(Arc<Client>, i64)> {
    SESSIONS.get(s)?.with_source(|h| {
        let lease = h
            .session
            .as_ref()
            .map(|s| s.lease())
            .ok_or_else(|| Error::new(ErrorKind::Closed, "the session is being freed"))?;
        Ok((h.client.clone(), lease))
    })
}

// ---- mutex ----

/// A distributed lock of a session (Go's `concurrency.Mutex`). Free with
/// `etcdc_mutex_free`.
pub struct etcdc_mutex {
    _opaque: [u8; 0],
}

pub(crate) struct MutexHandle {
    // Held across the calls to etcd: an async mutex, so a waiting lock blocks no thread.
    mutex: tokio::sync::Mutex<Mutex>,
    key: Vec<u8>,
    /// The lock's revision after the last call (0: not held).
    revision: AtomicI64,
    client: Arc<Client>,
}

#[derive(Clone, Copy)]
enum MutexOp {
    Lock,
    TryLock,
    Unlock,
}

impl MutexHandle {
    async fn run(&self, op: MutexOp, deadline: crate::api::Deadline) -> Result<()> {
        let mut m = self.mutex.lock().await;
        let result = match op {
            MutexOp::Lock => m.lock(deadline).await,
            MutexOp::TryLock => m.try_lock(deadline).await,
            MutexOp::Unlock => m.unlock(deadline).await,
        };
        self.revision.store(m.revision(), Ordering::Release);
        result
    }
}

pub(crate) static MUTEXES: Table<MutexHandle> = Table::new(8, "mutex");

/// The mutex `name` for `session`: its key is `<name>/<lease id in lowercase hex>`, as Go's
/// and `etcdctl lock`'s. An empty name is `ETCDC_ERR_INVALID_ARGUMENT`.
#[no_mangle]
pub extern "C" fn etcdc_mutex_new(
    session: *const etcdc_session,
    name: *const u8,
    name_len: usize,
    mutex_out: *mut *mut etcdc_mutex,
) -> etcdc_status {
    guard(|| {
        let out = out(mutex_out, "mutex_out")?;
        let name = bytes(name, name_len, "name")?;
        let (client, lease) = session_of(session)?;
        let mutex = Mutex::new(client.etcd.clone(), name, lease)?;
        let key = mutex.key().to_vec();
        out.write(MUTEXES.insert(MutexHandle {
            mutex: tokio::sync::Mutex::new(mutex),
            key,
            revision: AtomicI64::new(0),
            client,
        }));
        Ok(())
    })
}

fn mutex_call(
    m: *const etcdc_mutex,
    op: MutexOp,
    timeout_ms: i64,
    queue: Option<Queued>,
) -> etcdc_status {
    guard(|| {
        let h = MUTEXES.get(m)?;
        let deadline = match op {
            MutexOp::Lock => h.client.wait_deadline(timeout_ms)?,
            _ => h.client.deadline(timeout_ms)?,
        };
        match queue {
            None => h.client.block(h.run(op, deadline)),
            Some(q) => {
                let client = h.client.clone();
                q.start(&client, async move {
                    h.run(op, deadline).await.map(|()| Answer::Number(0))
                })
            }
        }
    })
}

/// Waits until the lock is held, up to `timeout_ms` (0: the client's timeout; negative: no
/// limit). `ETCDC_ERR_TIMEOUT` when it was not (the place in line is given up);
/// `ETCDC_ERR_FAILED_PRECONDITION` if the session's lease is gone.
#[no_mangle]
pub extern "C" fn etcdc_mutex_lock(m: *const etcdc_mutex, timeout_ms: i64) -> etcdc_status {
    mutex_call(m, MutexOp::Lock, timeout_ms, None)
}

/// Takes the lock if it is free, without waiting: `ETCDC_ERR_FAILED_PRECONDITION`
/// ("mutex: Locked by another session") when it is held.
#[no_mangle]
pub extern "C" fn etcdc_mutex_try_lock(m: *const etcdc_mutex, timeout_ms: i64) -> etcdc_status {
    mutex_call(m, MutexOp::TryLock, timeout_ms, None)
}

/// Releases the lock.
#[no_mangle]
pub extern "C" fn etcdc_mutex_unlock(m: *const etcdc_mutex, timeout_ms: i64) -> etcdc_status {
    mutex_call(m, MutexOp::Unlock, timeout_ms, None)
}

/// `etcdc_mutex_lock`, asynchronously: completes into `cq` with `tag` once the lock is held
/// (or with why not). Calls on one mutex run one at a time.
#[no_mangle]
pub extern "C" fn etcdc_mutex_lock_async(
    m: *const etcdc_mutex,
    timeout_ms: i64,
    cq: *const etcdc_cq,
    tag: *mut c_void,
    op_out: *mut *mut etcdc_op,
) -> etcdc_status {
    mutex_call(
        m,
        MutexOp::Lock,
        timeout_ms,
        Some(Queued { cq, tag, op_out }),
    )
}

/// `etcdc_mutex_try_lock`, asynchronously (see `etcdc_mutex_lock_async`).
#[no_mangle]
pub extern "C" fn etcdc_mutex_try_lock_async(
    m: *const etcdc_mutex,
    timeout_ms: i64,
    cq: *const etcdc_cq,
    tag: *mut c_void,
    op_out: *mut *mut etcdc_op,
) -> etcdc_status {
    mutex_call(
        m,
        MutexOp::TryLock,
        timeout_ms,
        Some(Queued { cq, tag, op_out }),
    )
}

/// `etcdc_mutex_unlock`, asynchronously (see `etcdc_mutex_lock_async`).
#[no_mangle]
pub extern "C" fn etcdc_mutex_unlock_async(
    m: *const etcdc_mutex,
    timeout_ms: i64,
    cq: *const etcdc_cq,
    tag: *mut c_void,
    op_out: *mut *mut etcdc_op,
) -> etcdc_status {
    mutex_call(
        m,
        MutexOp::Unlock,
        timeout_ms,
        Some(Queued { cq, tag, op_out }),
    )
}

/// The lock's key, borrowed from the mutex (length in `*len`); NULL for a bad handle.
#[no_mangle]
pub extern "C" fn etcdc_mutex_key(m: *const etcdc_mutex, len: *mut usize) -> *const u8 {
    value(std::ptr::null(), || match MUTEXES.get(m) {
        // The key never changes and lives as long as the handle.
        Ok(h) => view(&h.key, len).cast::<u8>(),
        Err(_) => std::ptr::null(),
    })
}

/// The lock's revision while held (its key's create revision): a fencing token — a txn
/// comparing the key's create revision to it only succeeds while the lock is held. 0 when
/// not held.
#[no_mangle]
pub extern "C" fn etcdc_mutex_revision(m: *const etcdc_mutex) -> i64 {
    value(0, || {
        MUTEXES
            .get(m)
            .map_or(0, |h| h.revision.load(Ordering::Acquire))
    })
}

/// Frees the mutex (a held lock is not released: unlock first, or end the session). NULL
/// does nothing.
#[no_mangle]
pub extern "C" fn etcdc_mutex_free(m: *mut etcdc_mutex) -> etcdc_status {
    if m.is_null() {
        return etcdc_status::ETCDC_OK;
    }
    guard(|| MUTEXES.remove(m).map(drop))
}

// ---- election ----

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
                    h.run(op, deadline).await.map(|()| Answer::Number(0))
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
            value: Vec::new(),
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
        let _in_runtime = c.rt.enter();
        let task = election::observe(c.etcd.clone(), name, feed)?;
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

//! Mutexes — Go's `concurrency.Mutex` on the wire, so etcdc, `etcdctl lock` and Go services
//! exclude each other.

use std::ffi::c_void;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use super::client::{Client, Queued};
use super::completion::{etcdc_cq, etcdc_op, Answer};
use super::guard::{bytes, guard, out, value, view};
use super::handle::Table;
use super::session::{etcdc_session, session_of};
use super::status::etcdc_status;
use crate::error::Result;
use crate::recipes::mutex::Mutex;

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
                    h.run(op, deadline).await.map(|()| Answer::new(()))
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

//! Go's `concurrency.Mutex`, on the wire exactly: the key `<name>/<lease id in lowercase
//! hex>` under the session's lease, the owner is the key created first, and each waiter
//! watches only its immediate predecessor. `etcdctl lock`, Go services and etcdc exclude
//! each other. The lock's revision is a fencing token: a write guarded by `created_at(key,
//! revision)` in a txn only lands while the lock is held.

use std::sync::Arc;

use super::{created_at, first_created, get_op, name_prefix, put_op, range_at, wait_deletes};
use crate::api::{deadline_in, Deadline, Etcd};
use crate::error::{Error, ErrorKind, Result};
use crate::pb::etcdserverpb::request_op::Request;
use crate::pb::etcdserverpb::*;

pub struct Mutex {
    etcd: Arc<dyn Etcd>,
    prefix: Vec<u8>,
    key: Vec<u8>,
    lease: i64,
    /// The create revision of our key while it exists (held or waiting); 0 otherwise.
    rev: i64,
}

/// How long the clean-up after a failed lock may take.
const CLEANUP: std::time::Duration = std::time::Duration::from_secs(5);

impl Mutex {
    /// The mutex `name` for a session's `lease`.
    pub fn new(etcd: Arc<dyn Etcd>, name: &[u8], lease: i64) -> Result<Mutex> {
        let prefix = name_prefix("lock", name)?;
        if lease <= 0 {
            return Err(Error::invalid(format!(
                "lease {lease} is not a valid lease"
            )));
        }
        let mut key = prefix.clone();
        key.extend_from_slice(format!("{lease:x}").as_bytes());
        Ok(Mutex {
            etcd,
            prefix,
            key,
            lease,
            rev: 0,
        })
    }

    /// Go's `tryAcquire`: our key (created unless it exists — a re-lock within the session
    /// is the same lock) and the current owner's. True when we are the owner.
    async fn acquire(&mut self, deadline: Deadline) -> Result<bool> {
        let owner = RequestOp {
            request: Some(Request::RequestRange(first_created(&self.prefix))),
        };
        let resp = self
            .etcd
            .txn(
                TxnRequest {
                    compare: vec![created_at(&self.key, 0)],
                    success: vec![put_op(&self.key, b"", self.lease), owner.clone()],
                    failure: vec![get_op(&self.key), owner],
                },
                deadline,
            )
            .await?;
        self.rev = if resp.succeeded {
            resp.header.as_ref().map_or(0, |h| h.revision)
        } else {
            range_at(&resp, 0)
                .and_then(|r| r.kvs.first())
                .map_or(0, |kv| kv.create_revision)
        };
        let first = range_at(&resp, 1).and_then(|r| r.kvs.first());
        Ok(first.is_none_or(|kv| kv.create_revision == self.rev))
    }

    /// Waits until the lock is ours, or the deadline (`Timeout`; our place in line is
    /// given up). `FailedPrecondition` if the session's lease is gone meanwhile.
    pub async fn lock(&mut self, deadline: Deadline) -> Result<()> {
        let result = async {
            if self.acquire(deadline).await? {
                return Ok(());
            }
            wait_deletes(&*self.etcd, &self.prefix, self.rev - 1, deadline).await?;
            let mine = self.etcd.range(simple_get(&self.key), deadline).await?;
            if mine.kvs.is_empty() {
                return Err(Error::new(
                    ErrorKind::FailedPrecondition,
                    "session expired: the lock's lease is gone",
                ));
            }
            Ok(())
        }
        .await;
        if result.is_err() {
            let _ = self.unlock(deadline_in(CLEANUP)).await;
        }
        result
    }

    /// Takes the lock if it is free, at once. `FailedPrecondition` ("mutex: Locked by
    /// another session") when it is held.
    pub async fn try_lock(&mut self, deadline: Deadline) -> Result<()> {
        if self.acquire(deadline).await? {
            return Ok(());
        }
        self.unlock(deadline).await?;
        Err(Error::new(
            ErrorKind::FailedPrecondition,
            "mutex: Locked by another session",
        ))
    }

    /// Releases the lock (deletes our key).
    pub async fn unlock(&mut self, deadline: Deadline) -> Result<()> {
        self.etcd
            .delete_range(
                DeleteRangeRequest {
                    key: self.key.clone(),
                    ..Default::default()
                },
                deadline,
            )
            .await?;
        self.rev = 0;
        Ok(())
    }

    /// The lock's key, `<name>/<lease hex>`.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The lock's revision (its key's create revision) while held: the fencing token.
    pub fn revision(&self) -> i64 {
        self.rev
    }
}

fn simple_get(key: &[u8]) -> RangeRequest {
    RangeRequest {
        key: key.to_vec(),
        ..Default::default()
    }
}

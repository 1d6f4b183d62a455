//! Go's `concurrency.Session`: a lease kept alive at a third of its TTL, whose state changes
//! go to the caller's stream; `orphan` stops refreshing, `close` also revokes.

use std::sync::Arc;

use crate::api::{Deadline, Etcd, KeepAliveGuard, LeaseUpdate};
use crate::error::{Error, Result};
use crate::pb::etcdserverpb::{LeaseGrantRequest, LeaseRevokeRequest};
use crate::stream::Feed;

/// Go's default session TTL, seconds.
pub const DEFAULT_TTL: i64 = 60;

pub struct Session {
    etcd: Arc<dyn Etcd>,
    lease: i64,
    ttl: i64,
    keeper: Option<Box<dyn KeepAliveGuard>>,
}

impl Session {
    /// Grants a lease of `ttl` seconds (`DEFAULT_TTL` for 0) and keeps it alive, reporting
    /// to `updates`. A cluster that would grant a longer TTL than asked (etcd raises a TTL
    /// below its minimum) is refused, and the lease revoked: the caller asked for a loss to
    /// be noticed within `ttl`.
    pub async fn new(
        etcd: Arc<dyn Etcd>,
        ttl: i64,
        updates: Feed<LeaseUpdate>,
        deadline: Deadline,
    ) -> Result<Session> {
        let ttl = if ttl == 0 { DEFAULT_TTL } else { ttl };
        if ttl < 0 {
            return Err(Error::invalid(format!(
                "a session TTL must be positive, got {ttl}"
            )));
        }
        let granted = etcd
            .lease_grant(LeaseGrantRequest { ttl, id: 0 }, deadline)
            .await?;
        if granted.ttl > ttl {
            let _ = etcd
                .lease_revoke(LeaseRevokeRequest { id: granted.id }, deadline)
                .await;
            return Err(Error::invalid(format!(
                "a TTL of {ttl} s is below the cluster's minimum lease TTL ({} s)",
                granted.ttl
            )));
        }
        Self::resume(etcd, granted.id, ttl, updates)
    }

    /// A session on an existing lease (Go's `WithLease`), kept alive from now on.
    pub fn resume(
        etcd: Arc<dyn Etcd>,
        lease: i64,
        ttl: i64,
        updates: Feed<LeaseUpdate>,
    ) -> Result<Session> {
        let keeper = etcd.keep_alive(lease, updates)?;
        Ok(Session {
            etcd,
            lease,
            ttl,
            keeper: Some(keeper),
        })
    }

    pub fn lease(&self) -> i64 {
        self.lease
    }

    pub fn ttl(&self) -> i64 {
        self.ttl
    }

    pub fn etcd(&self) -> &Arc<dyn Etcd> {
        &self.etcd
    }

    /// True once the lease was reported LOST.
    pub fn is_lost(&self) -> bool {
        self.keeper.as_ref().is_none_or(|k| k.is_lost())
    }

    /// Stops refreshing without revoking: the lease expires after its TTL.
    pub fn orphan(mut self) {
        self.keeper.take();
    }

    /// Stops refreshing and revokes the lease: its keys are deleted now.
    pub async fn close(mut self, deadline: Deadline) -> Result<()> {
        self.keeper.take();
        match self
            .etcd
            .lease_revoke(LeaseRevokeRequest { id: self.lease }, deadline)
            .await
        {
            Err(e) if e.kind == crate::error::ErrorKind::NotFound => Ok(()),
            other => other.map(|_| ()),
        }
    }
}

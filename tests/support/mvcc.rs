//! The node's state machine (`etcdc::node::mvcc`) behind `trait Etcd`, so the behaviour
//! suite's key-value, transaction, compaction and lease cases check it against what real
//! etcd does. A test harness only: no consensus, no disk, no clocks; it answers the calls
//! the state machine does not serve (watch, keep-alive, members, status) with Unsupported.

use std::sync::{Arc, Mutex};

use etcdc::api::{Deadline, KeepAliveGuard, LeaseUpdate, WatchControl, WatchUpdate};
use etcdc::node::mvcc::Mvcc;
use etcdc::node::Limits;
use etcdc::pb::etcdserverpb::*;
use etcdc::stream::Feed;
use etcdc::{Error, ErrorKind, Etcd, Result};

#[derive(Default)]
pub struct MvccTarget {
    store: Mutex<Mvcc>,
    next_lease: Mutex<i64>,
}

impl MvccTarget {
    fn store(&self) -> std::sync::MutexGuard<'_, Mvcc> {
        self.store.lock().unwrap()
    }
}

fn unsupported(what: &str) -> Error {
    Error::new(
        ErrorKind::Unsupported,
        format!("the MVCC harness has no {what}"),
    )
}

#[async_trait::async_trait]
impl Etcd for MvccTarget {
    async fn range(&self, req: RangeRequest, _: Deadline) -> Result<RangeResponse> {
        Limits::default().check_size(&req)?;
        self.store().range(&req)
    }
    async fn put(&self, req: PutRequest, _: Deadline) -> Result<PutResponse> {
        Limits::default().check_size(&req)?;
        Ok(self.store().put(req)?.0)
    }
    async fn delete_range(
        &self,
        req: DeleteRangeRequest,
        _: Deadline,
    ) -> Result<DeleteRangeResponse> {
        Limits::default().check_size(&req)?;
        Ok(self.store().delete_range(req)?.0)
    }
    async fn txn(&self, req: TxnRequest, _: Deadline) -> Result<TxnResponse> {
        // What a member checks before proposing (the state machine has no limit of its own).
        let limits = Limits::default();
        limits.check_size(&req)?;
        etcdc::node::mvcc::request::check_txn(&req, limits.max_txn_ops)?;
        Ok(self.store().txn(req)?.0)
    }
    async fn compact(&self, req: CompactionRequest, _: Deadline) -> Result<CompactionResponse> {
        self.store().compact(req.revision)
    }
    async fn lease_grant(&self, req: LeaseGrantRequest, _: Deadline) -> Result<LeaseGrantResponse> {
        let id = if req.id == 0 {
            let mut next = self.next_lease.lock().unwrap();
            *next += 1;
            0x1000 + *next
        } else {
            req.id
        };
        // etcd's minimum TTL with its default timing (1.5 election timeouts, rounded up).
        self.store().lease_grant(id, req.ttl, 2)
    }
    async fn lease_revoke(
        &self,
        req: LeaseRevokeRequest,
        _: Deadline,
    ) -> Result<LeaseRevokeResponse> {
        Ok(self.store().lease_revoke(req.id)?.0)
    }
    async fn lease_time_to_live(
        &self,
        req: LeaseTimeToLiveRequest,
        _: Deadline,
    ) -> Result<LeaseTimeToLiveResponse> {
        let store = self.store();
        // No clock here: the remaining TTL is the granted one. A missing lease is TTL -1, as
        // etcd answers.
        let (ttl, keys) = store.lease(req.id).unwrap_or((-1, Vec::new()));
        Ok(LeaseTimeToLiveResponse {
            header: None,
            id: req.id,
            ttl,
            granted_ttl: ttl.max(0),
            keys: if req.keys { keys } else { Vec::new() },
        })
    }
    async fn lease_leases(&self, _: Deadline) -> Result<LeaseLeasesResponse> {
        let leases = self
            .store()
            .lease_ids()
            .into_iter()
            .map(|id| LeaseStatus { id })
            .collect();
        Ok(LeaseLeasesResponse {
            header: None,
            leases,
        })
    }
    async fn member_list(&self, _: Deadline) -> Result<MemberListResponse> {
        Err(unsupported("members"))
    }
    async fn status(&self, _: Option<&str>, _: Deadline) -> Result<StatusResponse> {
        Err(unsupported("status"))
    }
    async fn watch(
        &self,
        _: WatchCreateRequest,
        _: Feed<WatchUpdate>,
        _: Deadline,
    ) -> Result<Box<dyn WatchControl>> {
        Err(unsupported("watch"))
    }
    fn keep_alive(&self, _: i64, _: Feed<LeaseUpdate>) -> Result<Box<dyn KeepAliveGuard>> {
        Err(unsupported("keep-alive"))
    }
}

/// The state machine alone, as a behaviour-suite target.
pub fn mvcc_store() -> Option<super::Target> {
    Some(super::Target {
        etcd: Arc::new(MvccTarget::default()),
        cluster: None,
        keep: None,
    })
}

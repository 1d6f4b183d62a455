//! `trait Etcd` on a member: etcd's requests checked, proposed or read, answered.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use prost::Message;

use super::lessor::{keep_lease, LeaseGuard};
use super::membership::members_of;
use super::Member;
use crate::api::{Deadline, Etcd, KeepAliveGuard, LeaseUpdate, WatchControl, WatchUpdate};
use crate::error::{Error, ErrorKind, Result};
use crate::node::raft::Command;
use crate::pb::etcdserverpb::request_op::Request;
use crate::pb::etcdserverpb::*;
use crate::stream::Feed;

/// etcd's default space quota (`DefaultQuotaBytes`).
pub const DEFAULT_QUOTA_BYTES: u64 = 2 << 30;
/// What a lease costs against the quota (etcd's `leaseOverhead`).
const LEASE_COST: u64 = 64;

/// What a put adds to the store, as `Mvcc` counts it.
fn put_cost(req: &PutRequest) -> u64 {
    req.key.len() as u64 + req.value.len() as u64 + 64
}

/// What a transaction's puts add (the larger branch counts, as etcd's `costTxn`).
fn txn_cost(ops: &[RequestOp]) -> u64 {
    ops.iter()
        .map(|op| match &op.request {
            Some(Request::RequestPut(p)) => put_cost(p),
            Some(Request::RequestTxn(t)) => txn_cost(&t.success).max(txn_cost(&t.failure)),
            _ => 0,
        })
        .sum()
}

/// An answer of the state machine, whose header the member that answers fills in.
trait Answer: Message + Default {
    fn header_mut(&mut self) -> &mut Option<ResponseHeader>;
}

macro_rules! answers {
    ($($t:ty),*) => {$(
        impl Answer for $t {
            fn header_mut(&mut self) -> &mut Option<ResponseHeader> {
                &mut self.header
            }
        }
    )*};
}
answers!(
    PutResponse,
    DeleteRangeResponse,
    TxnResponse,
    CompactionResponse,
    LeaseGrantResponse,
    LeaseRevokeResponse
);

impl Member {
    /// Every write: `cmd` through Raft, its answer (encoded once by the state machine) decoded,
    /// with this member's header at the revision it was applied at.
    async fn write<T: Answer>(&self, cmd: Command, deadline: Deadline) -> Result<T> {
        let bytes = self.propose(cmd, deadline).await?;
        let mut resp = T::decode(&bytes[..])
            .map_err(|e| Error::new(ErrorKind::Internal, format!("undecodable answer: {e}")))?;
        let revision = resp.header_mut().as_ref().map_or(0, |h| h.revision);
        self.applied_through(revision, deadline).await;
        Ok(self.answer(resp))
    }

    /// Waits until this member has applied the store through `revision`. A write forwarded
    /// to the leader is answered once the leader applied it; etcd answers a write on the
    /// member that took it once that member applied it too, so the reads and watches that
    /// follow on it see the write. Past the deadline the answer goes anyway: the write is
    /// applied, only this member is behind.
    async fn applied_through(&self, revision: i64, deadline: Deadline) {
        let mut applied = self.raft.metrics();
        while self.sm.revision.load(std::sync::atomic::Ordering::Acquire) < revision {
            match tokio::time::timeout_at(deadline, applied.changed()).await {
                Ok(Ok(())) => {}
                _ => return,
            }
        }
    }

    /// `Etcd::put` of a caller whose permissions were checked against the auth store at
    /// `auth_revision` (None: authentication is off, or the caller is the service itself):
    /// refused when applied after that store changed, as etcd does.
    pub(crate) async fn put_checked(
        &self,
        req: PutRequest,
        deadline: Deadline,
        auth_revision: Option<u64>,
    ) -> Result<PutResponse> {
        self.limits.check_size(&req)?;
        crate::node::mvcc::request::check_put(&req)?;
        self.check_quota(put_cost(&req), deadline).await?;
        let cmd = Command::Put(req.encode_to_vec()).checked_at(auth_revision);
        self.write(cmd, deadline).await
    }

    /// `Etcd::delete_range`, checked at `auth_revision` (see `put_checked`).
    pub(crate) async fn delete_range_checked(
        &self,
        req: DeleteRangeRequest,
        deadline: Deadline,
        auth_revision: Option<u64>,
    ) -> Result<DeleteRangeResponse> {
        self.limits.check_size(&req)?;
        crate::node::mvcc::request::check_delete(&req)?;
        let cmd = Command::DeleteRange(req.encode_to_vec()).checked_at(auth_revision);
        self.write(cmd, deadline).await
    }

    /// `Etcd::lease_revoke`, checked at `auth_revision` (see `put_checked`).
    pub(crate) async fn lease_revoke_checked(
        &self,
        req: LeaseRevokeRequest,
        deadline: Deadline,
        auth_revision: Option<u64>,
    ) -> Result<LeaseRevokeResponse> {
        let cmd = Command::LeaseRevoke(req.id).checked_at(auth_revision);
        self.write(cmd, deadline).await
    }

    /// `Etcd::txn`; a read-only one is served without a read barrier when `confirmed` (the
    /// caller passed one since it arrived); one that writes is checked at `auth_revision`
    /// (see `put_checked`).
    pub(crate) async fn txn_with(
        &self,
        req: TxnRequest,
        deadline: Deadline,
        confirmed: bool,
        auth_revision: Option<u64>,
    ) -> Result<TxnResponse> {
        self.limits.check_size(&req)?;
        crate::node::mvcc::request::check_txn(&req, self.limits.max_txn_ops)?;
        if txn_is_read_only(&req) {
            // As etcd: a read-only transaction is a read, not a proposal.
            if !confirmed {
                self.read_barrier(deadline).await?;
            }
            let mut state = self.sm.state.write().await;
            return Ok(self.answer(state.mvcc.txn(req)?.0));
        }
        self.check_quota(txn_cost(&req.success) + txn_cost(&req.failure), deadline)
            .await?;
        let cmd = Command::Txn(req.encode_to_vec()).checked_at(auth_revision);
        self.write(cmd, deadline).await
    }

    /// `resp` with this member's header at the revision it carries.
    fn answer<T: Answer>(&self, mut resp: T) -> T {
        let header = resp.header_mut();
        *header = self.header(header.as_ref().map_or(0, |h| h.revision));
        resp
    }
}

/// Whether `req` only reads (etcd serves such a transaction as a read, not a proposal).
pub(crate) fn txn_is_read_only(req: &TxnRequest) -> bool {
    is_read_only(&req.success) && is_read_only(&req.failure)
}

fn is_read_only(ops: &[RequestOp]) -> bool {
    ops.iter().all(|op| match &op.request {
        Some(Request::RequestRange(_)) | None => true,
        Some(Request::RequestTxn(t)) => is_read_only(&t.success) && is_read_only(&t.failure),
        _ => false,
    })
}

#[async_trait::async_trait]
impl Etcd for Member {
    async fn range(&self, req: RangeRequest, deadline: Deadline) -> Result<RangeResponse> {
        self.limits.check_size(&req)?;
        crate::node::mvcc::request::check_range(&req)?;
        if !req.serializable {
            self.read_barrier(deadline).await?;
        }
        let state = self.sm.state.read().await;
        let mut resp = state.mvcc.range(&req)?;
        resp.header = self.header(state.mvcc.revision());
        Ok(resp)
    }

    async fn put(&self, req: PutRequest, deadline: Deadline) -> Result<PutResponse> {
        self.put_checked(req, deadline, None).await
    }

    async fn delete_range(
        &self,
        req: DeleteRangeRequest,
        deadline: Deadline,
    ) -> Result<DeleteRangeResponse> {
        self.delete_range_checked(req, deadline, None).await
    }

    async fn txn(&self, req: TxnRequest, deadline: Deadline) -> Result<TxnResponse> {
        self.txn_with(req, deadline, false, None).await
    }

    async fn compact(
        &self,
        req: CompactionRequest,
        deadline: Deadline,
    ) -> Result<CompactionResponse> {
        self.write(Command::Compact(req.revision), deadline).await
    }

    async fn lease_grant(
        &self,
        req: LeaseGrantRequest,
        deadline: Deadline,
    ) -> Result<LeaseGrantResponse> {
        if req.id < 0 {
            return Err(Error::invalid("lease id must not be negative"));
        }
        let id = if req.id != 0 {
            req.id
        } else {
            // Unique per member: the member id in the high bits, a counter below.
            ((self.id << 40) as i64 ^ self.lease_seq.fetch_add(1, Ordering::Relaxed)) & i64::MAX
        };
        let ttl = req.ttl.max(self.min_lease_ttl);
        self.check_quota(LEASE_COST, deadline).await?;
        self.write(Command::LeaseGrant { id, ttl }, deadline).await
    }

    async fn lease_revoke(
        &self,
        req: LeaseRevokeRequest,
        deadline: Deadline,
    ) -> Result<LeaseRevokeResponse> {
        self.lease_revoke_checked(req, deadline, None).await
    }

    async fn lease_time_to_live(
        &self,
        req: LeaseTimeToLiveRequest,
        deadline: Deadline,
    ) -> Result<LeaseTimeToLiveResponse> {
        self.read_barrier(deadline).await?;
        let remaining = self.lessor.ttl(req.id, false).await?;
        let state = self.sm.state.read().await;
        let Some((granted, keys)) = state.mvcc.lease(req.id) else {
            return Ok(LeaseTimeToLiveResponse {
                header: self.header(state.mvcc.revision()),
                id: req.id,
                ttl: -1,
                granted_ttl: 0,
                keys: Vec::new(),
            });
        };
        Ok(LeaseTimeToLiveResponse {
            header: self.header(state.mvcc.revision()),
            id: req.id,
            ttl: remaining,
            granted_ttl: granted,
            keys: if req.keys { keys } else { Vec::new() },
        })
    }

    async fn lease_leases(&self, deadline: Deadline) -> Result<LeaseLeasesResponse> {
        self.read_barrier(deadline).await?;
        let state = self.sm.state.read().await;
        Ok(LeaseLeasesResponse {
            header: self.header(state.mvcc.revision()),
            leases: state
                .mvcc
                .lease_ids()
                .into_iter()
                .map(|id| LeaseStatus { id })
                .collect(),
        })
    }

    async fn member_list(&self, _deadline: Deadline) -> Result<MemberListResponse> {
        let state = self.sm.state.read().await;
        let members = members_of(state.membership.membership(), &state.mvcc);
        // etcd's cluster calls answer with no revision in their header.
        Ok(MemberListResponse {
            header: self.header(0),
            members,
        })
    }

    async fn status(&self, _endpoint: Option<&str>, _deadline: Deadline) -> Result<StatusResponse> {
        let metrics = self.raft.metrics().borrow().clone();
        let state = self.sm.state.read().await;
        let size = state.mvcc.size() as i64;
        // etcd's texts, which `etcdctl endpoint status` shows under ERRORS.
        let errors = state
            .mvcc
            .alarms()
            .iter()
            .map(|&(member, alarm)| {
                let kind = if alarm == crate::node::mvcc::ALARM_NOSPACE {
                    "NOSPACE"
                } else {
                    "CORRUPT"
                };
                format!("memberID:{member} alarm:{kind} ")
            })
            .collect();
        let voter = metrics
            .membership_config
            .membership()
            .voter_ids()
            .any(|v| v == self.id);
        Ok(StatusResponse {
            header: self.header(state.mvcc.revision()),
            version: crate::node::ETCD_VERSION.into(),
            db_size: size,
            leader: metrics.current_leader.unwrap_or(0),
            raft_index: metrics.last_log_index.unwrap_or(0),
            raft_term: metrics.current_term,
            raft_applied_index: metrics.last_applied.map_or(0, |l| l.index),
            errors,
            db_size_in_use: size,
            is_learner: !voter,
            ..Default::default()
        })
    }

    async fn watch(
        &self,
        req: WatchCreateRequest,
        updates: Feed<WatchUpdate>,
        _deadline: Deadline,
    ) -> Result<Box<dyn WatchControl>> {
        Ok(self.watch_at(&req, updates).await?.0)
    }

    fn keep_alive(&self, id: i64, updates: Feed<LeaseUpdate>) -> Result<Box<dyn KeepAliveGuard>> {
        if id <= 0 {
            return Err(Error::invalid(format!(
                "lease id {id} is not a valid lease"
            )));
        }
        let lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let task = self
            .rt
            .spawn(keep_lease(self.lessor.clone(), id, updates, lost.clone()));
        Ok(Box::new(LeaseGuard { task, lost }))
    }
}

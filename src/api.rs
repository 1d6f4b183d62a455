//! `Etcd`: the one internal API, in etcd's own request and response messages. The remote
//! backend forwards it over gRPC; the embedded node will execute it. Recipes and the C ABI
//! are written only against this trait, so they work the same on both.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::error::Result;
use crate::pb::etcdserverpb::*;
use crate::pb::mvccpb::Event;

/// When a call gives up. Every unary call carries one: nothing waits forever.
pub type Deadline = Instant;

/// What a watch delivers, in revision order, one item per revision batch.
#[derive(Clone, Debug, PartialEq)]
pub enum WatchUpdate {
    /// Every event of one or more revisions, never a partial revision (fragments are
    /// reassembled before delivery).
    Events {
        header: ResponseHeader,
        events: Vec<Event>,
    },
    /// Every event up to `header.revision` has been delivered.
    Progress { header: ResponseHeader },
    /// The watch's next revision was compacted away: the caller must re-read and re-watch
    /// from `header.revision + 1`. The watch ends here.
    Compacted {
        header: ResponseHeader,
        compact_revision: i64,
    },
    /// The server ended the watch (permission denied, ...). The watch ends here.
    Canceled { reason: String },
}

/// A running watch. Dropping it cancels the watch on the server.
pub struct Watcher {
    pub updates: mpsc::UnboundedReceiver<WatchUpdate>,
    /// Cancels the watch when dropped; also asks for progress.
    pub control: Box<dyn WatchControl>,
}

pub trait WatchControl: Send + Sync {
    /// Asks the server for a progress notification on this watch's stream.
    fn request_progress(&self);
}

/// A kept lease's health as the keep-alive loop sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseState {
    /// The last refresh succeeded; `ttl` is what the server granted.
    Alive,
    /// The keep-alive stream broke; refreshing resumes on another member.
    Reconnecting,
    /// The lease is gone (expired, revoked, or not refreshed before its TTL ran out).
    /// Nothing more follows for this lease.
    Lost,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseUpdate {
    pub id: i64,
    pub state: LeaseState,
    pub ttl: i64,
    pub reason: String,
}

/// Keeps one lease alive until dropped. Dropping does not revoke the lease.
pub trait KeepAliveGuard: Send + Sync {}

#[async_trait::async_trait]
pub trait Etcd: Send + Sync + 'static {
    async fn range(&self, req: RangeRequest, deadline: Deadline) -> Result<RangeResponse>;
    async fn put(&self, req: PutRequest, deadline: Deadline) -> Result<PutResponse>;
    async fn delete_range(
        &self,
        req: DeleteRangeRequest,
        deadline: Deadline,
    ) -> Result<DeleteRangeResponse>;
    async fn txn(&self, req: TxnRequest, deadline: Deadline) -> Result<TxnResponse>;
    async fn compact(
        &self,
        req: CompactionRequest,
        deadline: Deadline,
    ) -> Result<CompactionResponse>;

    async fn lease_grant(
        &self,
        req: LeaseGrantRequest,
        deadline: Deadline,
    ) -> Result<LeaseGrantResponse>;
    async fn lease_revoke(
        &self,
        req: LeaseRevokeRequest,
        deadline: Deadline,
    ) -> Result<LeaseRevokeResponse>;
    async fn lease_time_to_live(
        &self,
        req: LeaseTimeToLiveRequest,
        deadline: Deadline,
    ) -> Result<LeaseTimeToLiveResponse>;
    async fn lease_leases(&self, deadline: Deadline) -> Result<LeaseLeasesResponse>;

    async fn member_list(&self, deadline: Deadline) -> Result<MemberListResponse>;
    /// Status of one member: `endpoint` as given at connect time, or any member if `None`.
    async fn status(&self, endpoint: Option<&str>, deadline: Deadline) -> Result<StatusResponse>;

    /// Starts a watch; returns once the server has confirmed it.
    async fn watch(&self, req: WatchCreateRequest, deadline: Deadline) -> Result<Watcher>;

    /// Keeps `id` alive at a third of its TTL, reporting every state change to `updates`.
    fn keep_alive(
        &self,
        id: i64,
        updates: mpsc::UnboundedSender<LeaseUpdate>,
    ) -> Result<Box<dyn KeepAliveGuard>>;
}

/// A deadline `timeout` from now.
pub fn deadline_in(timeout: Duration) -> Deadline {
    Instant::now() + timeout
}

/// The range end that selects every key starting with `prefix` (etcd's `GetPrefixRangeEnd`):
/// the prefix with its last byte below 0xff incremented; `[0]` (every key) when none is.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

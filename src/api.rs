//! `Etcd`: the one internal API, in etcd's own request and response messages. The remote
//! backend forwards it over gRPC; the embedded node will execute it. Recipes and the C ABI
//! are written only against this trait, so they work the same on both.

use std::time::Duration;

use tokio::time::Instant;

use crate::error::Result;
use crate::pb::etcdserverpb::*;
use crate::pb::mvccpb::Event;
use crate::stream::{self, Feed, Stream};

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

/// A running watch with its own stream. Dropping it cancels the watch on the server.
pub struct Watcher {
    pub updates: Stream<WatchUpdate>,
    /// Cancels the watch when dropped; also asks for progress.
    pub control: Box<dyn WatchControl>,
}

/// The handle of a running watch: dropping it cancels the watch on the server.
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
pub trait KeepAliveGuard: Send + Sync {
    /// True once the lease was reported LOST: it is no longer kept.
    fn is_lost(&self) -> bool;
}

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
    /// The leases one member knows of, from its own state as etcd answers it: a lease just
    /// granted through another member appears once this one has applied the grant.
    async fn lease_leases(&self, deadline: Deadline) -> Result<LeaseLeasesResponse>;

    async fn member_list(&self, deadline: Deadline) -> Result<MemberListResponse>;
    /// Status of one member: `endpoint` as given at connect time, or any member if `None`.
    async fn status(&self, endpoint: Option<&str>, deadline: Deadline) -> Result<StatusResponse>;

    /// Starts a watch that delivers into `updates`; returns once the server has confirmed
    /// it. When `updates` is full the watch stops taking events and resumes from its next
    /// undelivered revision once there is room; `Compacted` or `Canceled` ends the stream.
    async fn watch(
        &self,
        req: WatchCreateRequest,
        updates: Feed<WatchUpdate>,
        deadline: Deadline,
    ) -> Result<Box<dyn WatchControl>>;

    /// `watch` into a new pulled stream of the default capacity.
    async fn watcher(&self, req: WatchCreateRequest, deadline: Deadline) -> Result<Watcher> {
        let (feed, updates) = stream::channel(stream::DEFAULT_CAPACITY);
        let control = self.watch(req, feed, deadline).await?;
        Ok(Watcher { updates, control })
    }

    /// Keeps `id` alive at a third of its TTL, reporting every state change to `updates`.
    fn keep_alive(&self, id: i64, updates: Feed<LeaseUpdate>) -> Result<Box<dyn KeepAliveGuard>>;

    /// What the backend counted: reconnects, resumed watches, keep-alive failures, retries
    /// (all zero for a backend without connections to lose).
    fn counters(&self) -> crate::observe::Totals {
        crate::observe::Totals::default()
    }
}

/// A deadline `timeout` from now.
pub fn deadline_in(timeout: Duration) -> Deadline {
    Instant::now() + timeout
}

/// The revision of a watch event.
pub(crate) fn event_rev(e: &Event) -> i64 {
    e.kv.as_ref().map_or(0, |kv| kv.mod_revision)
}

/// Events and bytes past which a batch is cut, at the next revision boundary.
pub(crate) const PIECE_EVENTS: usize = 256;
pub(crate) const PIECE_BYTES: usize = 64 << 10;

/// Splits a batch of events into pieces of whole revisions, each cut once it holds
/// `PIECE_EVENTS` events or `PIECE_BYTES` bytes.
pub(crate) fn pieces(events: Vec<Event>) -> Vec<Vec<Event>> {
    let rev = event_rev;
    let mut out: Vec<Vec<Event>> = Vec::new();
    let mut bytes = 0;
    for e in events {
        let size = e.kv.as_ref().map_or(0, |kv| kv.key.len() + kv.value.len())
            + e.prev_kv
                .as_ref()
                .map_or(0, |kv| kv.key.len() + kv.value.len());
        let cut = out.last().is_some_and(|piece| {
            (piece.len() >= PIECE_EVENTS || bytes >= PIECE_BYTES)
                && piece.last().map(rev) != Some(rev(&e))
        });
        if cut || out.is_empty() {
            out.push(Vec::new());
            bytes = 0;
        }
        bytes += size;
        if let Some(piece) = out.last_mut() {
            piece.push(e);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::mvccpb::KeyValue;

    fn event(rev: i64) -> Event {
        Event {
            kv: Some(KeyValue {
                mod_revision: rev,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn large_batches_are_cut_between_revisions_only() {
        // 300 revisions of 2 events: cut after the 256th event, at a revision boundary.
        let events: Vec<Event> = (1..=300).flat_map(|r| [event(r), event(r)]).collect();
        let ps = pieces(events);
        assert_eq!(ps.iter().map(Vec::len).sum::<usize>(), 600);
        for p in &ps {
            assert!(p.len() <= PIECE_EVENTS + 1);
        }
        for w in ps.windows(2) {
            let end = w[0].last().unwrap().kv.as_ref().unwrap().mod_revision;
            let start = w[1][0].kv.as_ref().unwrap().mod_revision;
            assert_eq!(start, end + 1, "no revision is split");
        }
        assert_eq!(pieces(vec![event(7)]).len(), 1);
    }
}

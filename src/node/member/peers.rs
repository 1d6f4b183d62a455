//! What a member needs of the others: the transport's trait (Raft's messages travel through
//! openraft's network traits; these are the member's own calls), and its error.

use crate::error::{Error, ErrorKind, Result};
use crate::node::raft::{Command, NodeId, Outcome};

/// How members reach each other: Raft's messages and forwarded client calls.
#[async_trait::async_trait]
pub trait Peers: Send + Sync + 'static {
    /// Proposes `cmd` on `leader`.
    async fn forward_write(&self, leader: NodeId, cmd: Command) -> Result<Outcome>;
    /// A read index confirmed by `leader`: the log index a linearizable read must wait for.
    async fn read_index(&self, leader: NodeId) -> Result<u64>;
    /// Lease `id`'s remaining TTL on `leader` (refreshed first when `refresh`); 0 if gone.
    async fn lease_ttl(&self, leader: NodeId, id: i64, refresh: bool) -> Result<i64>;
    /// Tells member `id` (at `addr`) that it was removed from the cluster; best effort.
    async fn tell_removed(&self, id: NodeId, addr: &str);
    /// Asks member `id` to run for leader now.
    async fn campaign(&self, id: NodeId) -> Result<()>;
    /// The newest kind of log entry member `id`'s build reads (`raft::ENTRY_VERSION` of its
    /// build, 0 for a build before it); an error when it cannot be asked now.
    async fn reads(&self, id: NodeId) -> Result<u32>;
    /// When member `id` last answered one of this member's Raft messages (etcd's
    /// `ActiveSince`); None if it never did.
    fn last_contact(&self, id: NodeId) -> Option<std::time::Instant>;
}

/// A member's "cannot do it now" (a peer unreachable, no leader yet).
pub(super) fn unavailable(what: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::Unavailable, what.to_string())
}

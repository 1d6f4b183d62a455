//! The embedded node: a replicated, durable, etcd-compatible store inside the service
//! process. Built in layers, each tested on its own before the next sits on it:
//!
//! - `mvcc/`: the state machine — etcd's revisions, key history, ranges, transactions,
//!   compaction and lease bookkeeping, deterministic so that every member applying the same
//!   commands reaches the same state. Storage in `mod.rs`; `write` (one request's changes,
//!   undone whole on failure), `request` (etcd's apply layer: validation, compares, the kv
//!   entry points), `image` (the store as bytes: a snapshot's payload). Checked against real
//!   etcd by the behaviour suite.
//! - `history`: superseded values out of memory, in a file the store reads back for past
//!   revisions (a cache: the log and the snapshots are the truth).
//! - `wal/`: the write-ahead log for Raft entries and the vote — CRC-framed `record`s in
//!   `segment` files (torn tails cut, corruption refused), group commit on the `writer`
//!   thread of its own.
//! - `raft/`: openraft's `log_store` on `wal`, the `state_machine` on `mvcc` (applying
//!   commands), the member's `snapshot` file, backups and restore.
//! - `watch`: each member's watches, fed by the state machine as it applies.
//! - `member/`: a running member serving `trait Etcd` in process — `proposal` (batching,
//!   forwarding to the leader, exactly-once), `read` (shared read-index rounds), `lessor`
//!   (the lease clocks), `membership`, `router` (the in-process network), `peers` (what a
//!   member needs of the others), `etcd` (the trait). Each file names what it uses; the
//!   leaves (proposal, read, lessor, peers) use nothing of `mod.rs`.
//! - `peer` and `grpc/`: the members' own gRPC transport, and etcd's v3 API for clients (one
//!   file per service).
//! - `auth`: etcd's auth store (users, roles, permissions, simple tokens), part of the
//!   replicated state; `grpc/auth.rs` serves it and `grpc/` checks every request against it.
//! - `metrics`: `/metrics` under etcd's names (leader, fsync latency, database size).
//! - `launch`: etcd's options (flags, environment, member ids, TLS) to a running node.

pub mod auth;
pub mod bolt;
pub mod compactor;
pub mod corrupt;
pub mod flags;
pub mod grpc;
pub mod history;
pub mod jwt;
pub mod launch;
pub mod member;
pub mod metrics;
pub mod mirror;
pub mod mvcc;
pub mod peer;
pub mod raft;
pub mod tcp_gateway;
pub mod wal;
pub mod watch;

use crate::error::{Error, ErrorKind, Result};

/// The etcd version the node answers as (`Status.version`, `/version`, `--version`): its API
/// and semantics are those of etcd 3.4.23, the release it is tested against side by side.
pub(crate) const ETCD_VERSION: &str = "3.4.23";

/// The cluster version etcd 3.4 members agree on (`/version`'s `etcdcluster`).
pub(crate) const ETCD_CLUSTER_VERSION: &str = "3.4.0";

/// The largest request a member accepts by default (etcd's `--max-request-bytes`, 1.5 MiB).
pub(crate) const MAX_REQUEST_BYTES: usize = 1536 * 1024;

/// etcd's default limit on the operations of one transaction branch (`--max-txn-ops`).
pub(crate) const MAX_TXN_OPS: usize = 128;

/// What a member refuses before proposing, as etcd's API layer does: a request larger than
/// `max_request_bytes` (etcd's `--max-request-bytes`; also the size of a watch response's
/// fragments) and a transaction branch of more than `max_txn_ops` operations
/// (`--max-txn-ops`). Checked where a request enters, never at apply: members may differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_request_bytes: usize,
    pub max_txn_ops: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_bytes: MAX_REQUEST_BYTES,
            max_txn_ops: MAX_TXN_OPS,
        }
    }
}

impl Limits {
    /// Refuses a request over `max_request_bytes` with etcd's text.
    pub fn check_size(&self, req: &impl prost::Message) -> Result<()> {
        if req.encoded_len() > self.max_request_bytes {
            return Err(Error::new(
                ErrorKind::TooLarge,
                "etcdserver: request is too large",
            ));
        }
        Ok(())
    }
}

/// A connection a member's servers take: plain TCP or TLS over it.
pub trait Connection:
    tokio::io::AsyncRead
    + tokio::io::AsyncWrite
    + tonic::transport::server::Connected<ConnectInfo: Clone + Send + Sync + 'static>
    + std::os::fd::AsRawFd
    + Unpin
    + Send
    + 'static
{
}

impl<T> Connection for T where
    T: tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + tonic::transport::server::Connected<ConnectInfo: Clone + Send + Sync + 'static>
        + std::os::fd::AsRawFd
        + Unpin
        + Send
        + 'static
{
}

/// Accepted connections with Nagle's algorithm off: a small answer must not wait for the
/// client's delayed ACK (40 ms on Linux).
pub fn nodelay(
    listener: tokio::net::TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|conn| {
        let conn = conn?;
        conn.set_nodelay(true)?;
        Ok(conn)
    })
}

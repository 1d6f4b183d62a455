//! Consensus: openraft 0.9 over the node's own storage. The log store keeps its newest
//! entries in memory (older ones are read back from the `wal`) and makes every append, vote
//! and commit mark durable in the `wal` before openraft hears it is done; the state machine
//! applies commands to `mvcc`. Snapshots are the encoded store in a checksummed file, synced
//! before openraft may purge the log behind it, and never held whole in memory. Nothing of openraft's types reaches the disk unversioned: every payload written
//! starts with a format byte.

use std::fmt::Debug;

use openraft::{BasicNode, StorageError, StorageIOError};
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind};

pub type NodeId = u64;

openraft::declare_raft_types!(
    /// The node's Raft types: etcd requests in, their encoded answers out.
    pub TypeConfig:
        D = Command,
        R = Outcome,
        NodeId = NodeId,
        Node = BasicNode,
        SnapshotData = tokio::fs::File,
);

pub type Raft = openraft::Raft<TypeConfig>;
type StorageResult<T> = std::result::Result<T, StorageError<NodeId>>;

/// The newest kind of log entry this build reads: 1, `Command::Forwarded`; builds before it
/// read 0. A leader proposes an entry of a newer kind only once every member said it reads
/// it (`Peers::reads`), as etcd gates a new kind of request on its cluster version.
pub const ENTRY_VERSION: u32 = 1;

/// A write, as proposed to the cluster: etcd's request, encoded once by the proposer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum Command {
    // Requests as bytes, not as sequences of numbers: the same bincode, written and read
    // with one copy instead of one call per byte (a 1 MiB value took milliseconds).
    Put(#[serde(with = "serde_bytes")] Vec<u8>),
    DeleteRange(#[serde(with = "serde_bytes")] Vec<u8>),
    Txn(#[serde(with = "serde_bytes")] Vec<u8>),
    Compact(i64),
    /// The lease's id and TTL as the leader decided them (id chosen, minimum TTL applied).
    LeaseGrant {
        id: i64,
        ttl: i64,
    },
    LeaseRevoke(i64),
    /// Concurrent writes packed into one entry (one append, one sync): applied in order,
    /// each its own request, answered with the encoded list of answers.
    Batch(Vec<Command>),
    /// Raises (`on`) or disarms an alarm (etcd's AlarmRequest); member 0 disarms that alarm
    /// of every member.
    Alarm {
        member: u64,
        alarm: i32,
        on: bool,
    },
    /// A membership change a member forwards to the leader. Never in the log: the leader
    /// carries it out through Raft's own membership change.
    Membership(MemberChange),
    /// A member's name and client URLs, published by the member itself once it runs (etcd's
    /// `publish`): what `member list` shows besides the peer URLs Raft knows.
    Publish {
        member: u64,
        name: String,
        client_urls: Vec<String>,
    },
    /// A change to the auth store (users, roles, permissions, enable/disable, a token).
    Auth(crate::node::auth::AuthCommand),
    /// One revision of the etcd cluster the store mirrors (`node::mirror`): its events
    /// (`mvccpb.Event`, encoded) and the leases they name with their TTLs.
    Mirror {
        revision: i64,
        events: Vec<Vec<u8>>,
        leases: Vec<(i64, i64)>,
    },
    /// The end of the mirror: from here on the store takes client writes.
    Promote,
    /// A client's write whose permissions its member checked against the auth store at
    /// `auth_revision` (etcd's request header): refused when applied after users, roles or
    /// permissions changed since ("revision of auth store is old"; clients check again).
    Checked {
        auth_revision: u64,
        cmd: Box<Command>,
    },
    /// A write its member (`origin`) forwarded to the leader, tagged so that the member
    /// answers it from its own apply of the entry (`Awaited`), as etcd's member answers from
    /// its own apply by the request's id, not from the leader's answer, which comes later.
    /// Entry version 1 (`ENTRY_VERSION`): a leader proposes the write untagged while a
    /// member cannot read it, and a leader of an earlier build is sent it untagged (DESIGN.md,
    /// "A forwarded write").
    Forwarded {
        origin: NodeId,
        seq: u64,
        cmd: Box<Command>,
    },
}

impl Command {
    /// The client requests this command carries (a batch packs many).
    pub(crate) fn requests(&self) -> u64 {
        match self {
            Command::Batch(cmds) => cmds.len() as u64,
            Command::Forwarded { cmd, .. } => cmd.requests(),
            _ => 1,
        }
    }

    /// `self`, as checked at `auth_revision` when authentication was on (Some).
    pub(crate) fn checked_at(self, auth_revision: Option<u64>) -> Command {
        match auth_revision {
            Some(auth_revision) => Command::Checked {
                auth_revision,
                cmd: Box::new(self),
            },
            None => self,
        }
    }
}

/// A change of the cluster's members (etcd's MemberAdd / MemberRemove / MemberPromote /
/// MemberUpdate).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum MemberChange {
    Add {
        peer_urls: Vec<String>,
        learner: bool,
    },
    Remove(NodeId),
    Promote(NodeId),
    /// The leader telling a member it removed that it is out (etcd's removed member stops).
    Removed(NodeId),
    /// New peer URLs for a member (etcd's MemberUpdate); its id stays.
    Update {
        id: NodeId,
        peer_urls: Vec<String>,
    },
}

/// What applying a command answered: etcd's response encoded, or its error.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct Outcome(pub Option<std::result::Result<Vec<u8>, Error>>);

/// The on-disk format of every payload this module writes.
const FORMAT: u8 = 1;

/// One of our own values as bytes, for the disk or a peer: the format byte, then bincode.
pub(crate) fn pack<T: Serialize>(value: &T) -> Vec<u8> {
    pack_after(&[], value)
}

/// `head`, then what `pack` makes of `value`, in one buffer.
pub(crate) fn pack_after<T: Serialize>(head: &[u8], value: &T) -> Vec<u8> {
    let size = bincode::serialized_size(value).unwrap_or(0) as usize;
    let mut out = Vec::with_capacity(head.len() + 1 + size);
    out.extend_from_slice(head);
    out.push(FORMAT);
    // Serializing our own plain types into a Vec cannot fail.
    let _ = bincode::serialize_into(&mut out, value);
    out
}

/// What `pack` made, back; a damaged or unknown payload is `DataLoss`.
pub(crate) fn unpack<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> std::result::Result<T, Error> {
    match bytes.split_first() {
        Some((&FORMAT, rest)) => bincode::deserialize(rest)
            .map_err(|e| Error::new(ErrorKind::DataLoss, format!("undecodable record: {e}"))),
        _ => Err(Error::new(
            ErrorKind::DataLoss,
            "a record of an unknown format version",
        )),
    }
}

fn io_err(e: &Error) -> StorageIOError<NodeId> {
    StorageIOError::write_logs(e)
}

mod log_store;
mod snapshot;
mod state_machine;

pub use log_store::{LeaderAppend, LogStore, KEEP_BYTES, MAX_SEND_BYTES};
pub use snapshot::{force_new_cluster, restore, Backup};
pub use state_machine::{Applied, Awaited, SnapshotDue, StateMachine};

#[cfg(test)]
mod tests {
    use super::*;

    /// A request's bytes are written as they were when they were a sequence of numbers
    /// (bincode: a u64 length, then the bytes), so logs written before read the same.
    #[test]
    fn requests_keep_their_encoding() {
        let packed = pack(&Command::Put(vec![7, 8, 9]));
        assert_eq!(
            packed,
            [&[FORMAT, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 7, 8, 9][..]].concat()
        );
        let seq: Vec<u8> = bincode::serialize(&(0u32, vec![7u8, 8, 9])).unwrap();
        assert_eq!(packed[1..], seq[..]);
        assert_eq!(
            unpack::<Command>(&packed).unwrap(),
            Command::Put(vec![7, 8, 9])
        );
    }
}

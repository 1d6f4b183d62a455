//! The state machine: commands applied to `mvcc`, snapshots built and installed.

use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, RaftSnapshotBuilder, SnapshotMeta, StorageIOError,
    StoredMembership,
};
use prost::Message;
use tokio::sync::{RwLock, RwLockReadGuard};

use super::snapshot::{
    load_snapshot, read_head, read_snapshot, receiving_path, snapshot_path,
    write_snapshot_in_turns, write_snapshot_with, Backup,
};
use super::{pack, Command, NodeId, Outcome, Raft, StorageResult, TypeConfig};
use crate::error::{Error, ErrorKind, Result};
use crate::node::mvcc::Mvcc;
use crate::node::watch::Hub;
use crate::pb::etcdserverpb::*;
use crate::pb::mvccpb::Event;

/// What the state machine holds: the store and where it stands in the log.
pub struct Applied {
    pub mvcc: Mvcc,
    pub last_applied: Option<LogId<NodeId>>,
    pub membership: StoredMembership<NodeId, BasicNode>,
}

impl AsRef<Mvcc> for Applied {
    fn as_ref(&self) -> &Mvcc {
        &self.mvcc
    }
}

/// The state machine. Cheap to clone; readers take `state` directly (serializable reads run
/// on the caller's thread).
#[derive(Clone)]
pub struct StateMachine {
    pub state: Arc<RwLock<Applied>>,
    /// The member's watches, told of every applied change.
    pub hub: Arc<Hub>,
    dir: PathBuf,
    /// The newest snapshot's metadata; its data stays in the file (read when a follower
    /// needs it), not in memory beside the store it was made from.
    current: Arc<RwLock<Option<SnapshotMeta<NodeId, BasicNode>>>>,
    /// The store's size after the last apply, for the quota check without a lock.
    pub size: Arc<std::sync::atomic::AtomicU64>,
    /// The store's revision after the last apply, for a write waiting without a lock until
    /// its member has applied it.
    pub revision: Arc<std::sync::atomic::AtomicI64>,
    /// Whether authentication is on after the last apply: requests skip the auth store's
    /// lock while it is off.
    pub auth_enabled: Arc<std::sync::atomic::AtomicBool>,
    /// Counts applied requests towards the next snapshot.
    pub due: Arc<SnapshotDue>,
    /// The writes this member forwarded, waiting for their answers from this apply.
    pub awaited: Arc<Awaited>,
}

type Answering = tokio::sync::oneshot::Sender<Result<Vec<u8>>>;

/// The writes a member forwarded to the leader as `Command::Forwarded`, each waiting for the
/// answer its own apply of the entry makes: the member answers once it applied the write,
/// without the leader's answer, which comes after the leader applied it and crossed the
/// network (300-500 µs later on loopback). Keyed by origin and tag: a tag is unique per
/// member and process (a random start), so an entry another member or an earlier run of
/// this one tagged, applied now, answers no write waiting here.
pub struct Awaited {
    next: std::sync::atomic::AtomicU64,
    waiting: std::sync::Mutex<std::collections::HashMap<(NodeId, u64), Answering>>,
}

impl Default for Awaited {
    fn default() -> Awaited {
        let mut start = [0; 8];
        getrandom::fill(&mut start).expect("the OS random source");
        Awaited {
            next: u64::from_ne_bytes(start).into(),
            waiting: Default::default(),
        }
    }
}

impl Awaited {
    /// `cmd` tagged as `origin`'s, to forward; the answer of its apply here comes on the
    /// receiver, as long as the tag is kept.
    pub fn tag(
        self: &Arc<Self>,
        origin: NodeId,
        cmd: Command,
    ) -> (
        Command,
        Tag,
        tokio::sync::oneshot::Receiver<Result<Vec<u8>>>,
    ) {
        let seq = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.lock().insert((origin, seq), tx);
        let tag = Tag {
            awaited: self.clone(),
            key: (origin, seq),
        };
        let cmd = Command::Forwarded {
            origin,
            seq,
            cmd: Box::new(cmd),
        };
        (cmd, tag, rx)
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<(NodeId, u64), Answering>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A forwarded write's place in `Awaited`, given up when dropped.
pub struct Tag {
    awaited: Arc<Awaited>,
    key: (NodeId, u64),
}

impl Drop for Tag {
    fn drop(&mut self) {
        self.awaited.lock().remove(&self.key);
    }
}

/// etcd's `--snapshot-count` counts requests; an entry here packs many (a batch), so
/// openraft's count of entries would let the log between snapshots (on disk, replayed on a
/// restart) grow to `count` batches. This counts the requests applied and says when a
/// snapshot is due: after `every` of them, and after no fewer than half the versions the
/// last snapshot wrote. A snapshot writes every version the store holds (etcd's writes only
/// what its backend lacks), so at a fixed count a store whose history grows would write it
/// again and again; this way a request makes a snapshot write at most about two versions,
/// however large the store.
#[derive(Default)]
pub struct SnapshotDue {
    applied: std::sync::atomic::AtomicU64,
    every: std::sync::atomic::AtomicU64,
    /// Versions in the last snapshot this member wrote.
    written: std::sync::atomic::AtomicU64,
    closed: std::sync::atomic::AtomicBool,
    wake: tokio::sync::Notify,
}

impl SnapshotDue {
    /// Counts `requests` applied; true when that made a snapshot due.
    fn applied(&self, requests: u64) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let every = self.every.load(Relaxed);
        let due = every.max(self.written.load(Relaxed) / 2);
        if every > 0 && self.applied.fetch_add(requests, Relaxed) + requests >= due {
            self.applied.store(0, Relaxed);
            self.wake.notify_one();
            return true;
        }
        false
    }

    /// A snapshot of `versions` versions was written.
    fn wrote(&self, versions: u64) {
        self.written
            .store(versions, std::sync::atomic::Ordering::Relaxed);
    }

    /// Takes a snapshot whenever one is due, at least `every` applied requests apart, until
    /// `close`.
    pub async fn run(self: Arc<Self>, every: u64, raft: Raft) {
        use std::sync::atomic::Ordering::Relaxed;
        self.every.store(every, Relaxed);
        loop {
            self.wake.notified().await;
            if self.closed.load(Relaxed) || raft.trigger().snapshot().await.is_err() {
                return;
            }
        }
    }

    pub fn close(&self) {
        self.closed
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.wake.notify_one();
    }
}

impl StateMachine {
    /// The state machine of the node in `dir`, restored from its newest snapshot file; the
    /// log after it is re-applied by openraft from the committed mark.
    pub fn open(dir: &Path) -> Result<StateMachine> {
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::new(
                ErrorKind::Internal,
                format!("cannot create {}: {e}", dir.display()),
            )
        })?;
        // A snapshot being received when the member stopped is of no use any more.
        let _ = std::fs::remove_file(receiving_path(dir));
        let (applied, current) = match load_snapshot(&snapshot_path(dir), dir)? {
            Some((meta, mvcc)) => (
                Applied {
                    mvcc,
                    last_applied: meta.last_log_id,
                    membership: meta.last_membership.clone(),
                },
                Some(meta),
            ),
            None => (
                Applied {
                    mvcc: {
                        let mut empty = Mvcc::new();
                        empty.keep_history_in(dir)?;
                        empty
                    },
                    last_applied: None,
                    membership: StoredMembership::default(),
                },
                None,
            ),
        };
        Ok(StateMachine {
            size: Arc::new(applied.mvcc.size().into()),
            revision: Arc::new(applied.mvcc.revision().into()),
            auth_enabled: Arc::new(applied.mvcc.auth.enabled.into()),
            due: Arc::default(),
            awaited: Arc::default(),
            state: Arc::new(RwLock::new(applied)),
            hub: Arc::default(),
            dir: dir.to_path_buf(),
            current: Arc::new(RwLock::new(current)),
        })
    }
}

impl StateMachine {
    /// The store now, as etcd's backend file written aside: what `Maintenance.Snapshot`
    /// streams, `etcdctl snapshot restore` makes an etcd data dir of and `restore` reads
    /// back. Written off the runtime's workers under the store's read lock (writes wait,
    /// reads go on), never held whole in memory.
    pub async fn backup(&self) -> Result<Backup> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let state = self.state.clone().read_owned().await;
        let applied = state.last_applied.map_or(0, |l| l.index);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = self
            .dir
            .join(format!("backup-{}-{n}.tmp", std::process::id()));
        let write = move || -> Result<Backup> {
            let io = |e: std::io::Error| {
                Error::new(
                    ErrorKind::Internal,
                    format!("cannot write a backup at {}: {e}", path.display()),
                )
            };
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(io)?;
            let _ = std::fs::remove_file(&path);
            let file = std::io::BufWriter::with_capacity(1 << 20, file);
            let mut file = state
                .mvcc
                .write_etcd(file, applied)?
                .into_inner()
                .map_err(|e| io(e.into_error()))?;
            drop(state);
            let len = file.stream_position().map_err(io)?;
            file.seek(SeekFrom::Start(0)).map_err(io)?;
            Ok(Backup { file, len })
        };
        tokio::task::spawn_blocking(write)
            .await
            .map_err(|e| Error::new(ErrorKind::Internal, format!("backup: {e}")))?
    }
}

/// Whether a command adds data (a put, a transaction with a put on any path, a lease
/// grant): what etcd refuses while the space alarm is raised.
pub(super) fn adds_data(cmd: &Command) -> bool {
    fn ops_put(ops: &[RequestOp]) -> bool {
        ops.iter().any(|op| match &op.request {
            Some(request_op::Request::RequestPut(_)) => true,
            Some(request_op::Request::RequestTxn(t)) => ops_put(&t.success) || ops_put(&t.failure),
            _ => false,
        })
    }
    match cmd {
        Command::Put(_) | Command::LeaseGrant { .. } => true,
        Command::Txn(req) => TxnRequest::decode(&**req)
            .map(|t| ops_put(&t.success) || ops_put(&t.failure))
            .unwrap_or(false),
        _ => false,
    }
}

/// Whether `cmd` is a client's change of the data: what a mirror refuses. (A transaction
/// that only reads is not, nor a login.)
fn client_write(cmd: &Command) -> bool {
    use crate::node::auth::AuthCommand;
    fn ops_write(ops: &[RequestOp]) -> bool {
        ops.iter().any(|op| match &op.request {
            Some(request_op::Request::RequestRange(_)) | None => false,
            Some(request_op::Request::RequestTxn(t)) => {
                ops_write(&t.success) || ops_write(&t.failure)
            }
            Some(_) => true,
        })
    }
    match cmd {
        Command::Put(_)
        | Command::DeleteRange(_)
        | Command::Compact(_)
        | Command::LeaseGrant { .. }
        | Command::LeaseRevoke(_) => true,
        // Logging in changes no data: a mirror's users read with a token.
        Command::Auth(change) => !matches!(change, AuthCommand::Authenticate { .. }),
        Command::Txn(req) => TxnRequest::decode(&**req)
            .map(|t| ops_write(&t.success) || ops_write(&t.failure))
            .unwrap_or(true),
        _ => false,
    }
}

/// Applies one command to the store; the answer is etcd's response, encoded. The changes
/// it made are added to `events`, for the watches.
pub(super) fn apply_command(
    mvcc: &mut Mvcc,
    cmd: Command,
    events: &mut Vec<Event>,
) -> Result<Vec<u8>> {
    let bad = |e: prost::DecodeError| {
        Error::new(ErrorKind::DataLoss, format!("undecodable command: {e}"))
    };
    if mvcc.out_of_space() && adds_data(&cmd) {
        return Err(crate::node::mvcc::no_space());
    }
    if let Some(source) = &mvcc.mirror {
        if client_write(&cmd) {
            return Err(crate::node::mirror::read_only(source));
        }
    }
    let (answer, changes) = match cmd {
        Command::Alarm { member, alarm, on } => {
            mvcc.set_alarm(member, alarm, on);
            (Vec::new(), Vec::new())
        }
        Command::Publish {
            member,
            name,
            client_urls,
        } => {
            let attributes = crate::node::mvcc::Attributes { name, client_urls };
            mvcc.set_attributes(member, attributes);
            (Vec::new(), Vec::new())
        }
        Command::Auth(change) => {
            mvcc.auth.apply(change)?;
            (Vec::new(), Vec::new())
        }
        Command::Put(req) => {
            let (r, e) = mvcc.put(PutRequest::decode(&*req).map_err(bad)?)?;
            (r.encode_to_vec(), e)
        }
        Command::DeleteRange(req) => {
            let (r, e) = mvcc.delete_range(DeleteRangeRequest::decode(&*req).map_err(bad)?)?;
            (r.encode_to_vec(), e)
        }
        Command::Txn(req) => {
            let (r, e) = mvcc.txn(TxnRequest::decode(&*req).map_err(bad)?)?;
            (r.encode_to_vec(), e)
        }
        Command::Compact(rev) => (mvcc.compact(rev)?.encode_to_vec(), Vec::new()),
        Command::LeaseGrant { id, ttl } => {
            (mvcc.lease_grant(id, ttl, 1)?.encode_to_vec(), Vec::new())
        }
        Command::LeaseRevoke(id) => {
            let (r, e) = mvcc.lease_revoke(id)?;
            (r.encode_to_vec(), e)
        }
        Command::Mirror {
            revision,
            events: encoded,
            leases,
        } => {
            let decoded = encoded
                .iter()
                .map(|e| Event::decode(e.as_slice()).map_err(bad))
                .collect::<Result<Vec<_>>>()?;
            (Vec::new(), mvcc.mirrored(revision, decoded, &leases)?)
        }
        Command::Promote => {
            mvcc.mirror = None;
            (Vec::new(), Vec::new())
        }
        Command::Membership(_) => {
            return Err(Error::new(
                ErrorKind::Internal,
                "a membership change is not a log entry",
            ))
        }
        Command::Checked { auth_revision, cmd } => {
            // As etcd's applier: permissions checked before a change of the auth store no
            // longer hold (a revoked user's write is not applied after the revocation).
            if mvcc.auth.enabled && auth_revision < mvcc.auth.revision {
                return Err(crate::node::auth::old_revision());
            }
            return apply_command(mvcc, *cmd, events);
        }
        Command::Forwarded { cmd, .. } => return apply_command(mvcc, *cmd, events),
        Command::Batch(cmds) => {
            let answers: Vec<Result<Vec<u8>>> = cmds
                .into_iter()
                .map(|c| apply_command(mvcc, c, events))
                .collect();
            (pack(&answers), Vec::new())
        }
    };
    events.extend(changes);
    Ok(answer)
}

/// Versions written into a snapshot per hold of the store: about a millisecond, which
/// writes wait at most.
const SNAPSHOT_TURN: usize = 1024;

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        // On disk and synced before openraft may purge the log behind it; the file is
        // replaced under `current`'s write lock (taken before the store's, as everywhere), so
        // a reader of `current` finds its file.
        let mut current = self.current.write().await;
        let (state, dir) = (self.state.clone(), self.dir.clone());
        // The store is held a turn at a time while it is written (writes go on between turns,
        // reads throughout), and not at all while the file is synced.
        let write = move || {
            let mut per_turn = SNAPSHOT_TURN;
            loop {
                let first = state.blocking_read();
                let meta = SnapshotMeta {
                    last_log_id: first.last_applied,
                    last_membership: first.membership.clone(),
                    snapshot_id: first.last_applied.map_or_else(
                        || "empty".to_string(),
                        |l| format!("{}-{}", l.leader_id, l.index),
                    ),
                };
                let mut first = Some(RwLockReadGuard::map(first, |a| &a.mvcc));
                let turn = || {
                    first
                        .take()
                        .unwrap_or_else(|| RwLockReadGuard::map(state.blocking_read(), |a| &a.mvcc))
                };
                let mut compacted = false;
                let written = write_snapshot_with(&dir, |f| {
                    let streamed = write_snapshot_in_turns(f, &meta, turn, per_turn);
                    compacted =
                        matches!(&streamed, Err(e) if e.kind() == std::io::ErrorKind::Interrupted);
                    streamed
                });
                if compacted && per_turn != usize::MAX {
                    // Again, in one turn: a compaction cannot come between turns then.
                    per_turn = usize::MAX;
                    continue;
                }
                return (meta, written);
            }
        };
        let (meta, written) = tokio::task::spawn_blocking(write)
            .await
            .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        let versions =
            written.map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        self.due.wrote(versions);
        *current = Some(meta.clone());
        let file = tokio::fs::File::open(snapshot_path(&self.dir))
            .await
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(file),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> StorageResult<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>)> {
        let state = self.state.read().await;
        Ok((state.last_applied, state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<Outcome>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
    {
        let mut state = self.state.write().await;
        let mut out = Vec::new();
        let mut events = Vec::new();
        let mut requests = 0;
        let mut heard = Vec::new();
        for entry in entries {
            state.last_applied = Some(entry.log_id);
            out.push(match entry.payload {
                EntryPayload::Blank => Outcome(None),
                EntryPayload::Normal(Command::Forwarded { origin, seq, cmd }) => {
                    requests += cmd.requests();
                    let answer = apply_command(&mut state.mvcc, *cmd, &mut events);
                    if let Some(waiting) = self.awaited.lock().remove(&(origin, seq)) {
                        heard.push((waiting, answer.clone()));
                    }
                    Outcome(Some(answer))
                }
                EntryPayload::Normal(cmd) => {
                    requests += cmd.requests();
                    Outcome(Some(apply_command(&mut state.mvcc, cmd, &mut events)))
                }
                EntryPayload::Membership(m) => {
                    let before: Vec<NodeId> = state
                        .membership
                        .membership()
                        .nodes()
                        .map(|(id, _)| *id)
                        .collect();
                    let after: Vec<NodeId> = m.nodes().map(|(id, _)| *id).collect();
                    state.mvcc.members_changed(&before, &after);
                    state.membership = StoredMembership::new(Some(entry.log_id), m);
                    Outcome(None)
                }
            });
        }
        // Under the write lock: watchers see batches in revision order, and a watch being
        // created (under the read lock) sees either all of this batch or none of it.
        self.hub.notify(&events, state.mvcc.revision());
        self.size
            .store(state.mvcc.size(), std::sync::atomic::Ordering::Relaxed);
        self.revision
            .store(state.mvcc.revision(), std::sync::atomic::Ordering::Release);
        self.auth_enabled.store(
            state.mvcc.auth.enabled,
            std::sync::atomic::Ordering::Release,
        );
        drop(state);
        // After the revision is out: a write answered here finds its member applied through it.
        for (waiting, answer) in heard {
            let _ = waiting.send(answer);
        }
        self.due.applied(requests);
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    /// The leader's snapshot file arrives in chunks into a file of its own, never whole in
    /// memory. (A receive openraft gave up on is replaced: its file is unlinked, and whatever
    /// still writes to it writes to nothing anyone reads.)
    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<tokio::fs::File>> {
        let path = receiving_path(&self.dir);
        let create = move || {
            let _ = std::fs::remove_file(&path);
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
        };
        let file = tokio::task::spawn_blocking(create)
            .await
            .map_err(|e| StorageIOError::write_snapshot(None, &e))?
            .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        Ok(Box::new(tokio::fs::File::from_std(file)))
    }

    /// The received file is the leader's snapshot file, byte for byte: synced, checked
    /// (crc, and that it is the snapshot announced), loaded as a stream, and renamed to be
    /// the member's own snapshot.
    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<tokio::fs::File>,
    ) -> StorageResult<()> {
        let signature = Some(meta.signature());
        let mut current = self.current.write().await;
        // Waits for the writes still in flight, then syncs.
        snapshot
            .sync_all()
            .await
            .map_err(|e| StorageIOError::read_snapshot(signature.clone(), &e))?;
        let mut received = snapshot.into_std().await;
        let (dir, announced) = (self.dir.clone(), meta.clone());
        let load = move || -> Result<Mvcc> {
            use std::os::unix::fs::MetadataExt;
            let path = receiving_path(&dir);
            let io = |e: std::io::Error| {
                Error::new(
                    ErrorKind::Internal,
                    format!("cannot install the snapshot in {}: {e}", dir.display()),
                )
            };
            let (got, mvcc) = read_snapshot(&mut received, &path, &dir)?;
            if got != announced {
                return Err(Error::new(
                    ErrorKind::DataLoss,
                    format!(
                        "the received snapshot is {}, not the {} announced",
                        got.snapshot_id, announced.snapshot_id
                    ),
                ));
            }
            // The file received into becomes the member's snapshot; a snapshot handed over
            // as some other file is copied.
            let gathered = std::fs::metadata(&path)
                .is_ok_and(|m| received.metadata().is_ok_and(|r| r.ino() == m.ino()));
            if gathered {
                std::fs::rename(&path, snapshot_path(&dir)).map_err(io)?;
                std::fs::File::open(&dir)
                    .and_then(|d| d.sync_all())
                    .map_err(io)?;
            } else {
                received.seek(SeekFrom::Start(0)).map_err(io)?;
                write_snapshot_with(&dir, |f| std::io::copy(&mut received, f))?;
            }
            Ok(mvcc)
        };
        let mut mvcc = tokio::task::spawn_blocking(load)
            .await
            .map_err(|e| StorageIOError::read_snapshot(signature.clone(), &e))?
            .map_err(|e| StorageIOError::read_snapshot(signature, &e))?;
        let mut state = self.state.write().await;
        mvcc.counters = state.mvcc.counters.clone();
        *state = Applied {
            mvcc,
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
        };
        self.hub.restored(&state.mvcc);
        self.size
            .store(state.mvcc.size(), std::sync::atomic::Ordering::Relaxed);
        self.revision
            .store(state.mvcc.revision(), std::sync::atomic::Ordering::Release);
        self.auth_enabled.store(
            state.mvcc.auth.enabled,
            std::sync::atomic::Ordering::Release,
        );
        drop(state);
        *current = Some(meta.clone());
        Ok(())
    }

    /// The member's snapshot file, opened, for a follower: openraft sends it in chunks. The
    /// file is replaced only under `current`'s write lock, and a replaced file stays
    /// readable through this handle.
    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let current = self.current.read().await;
        let Some(meta) = current.clone() else {
            return Ok(None);
        };
        let (path, want) = (snapshot_path(&self.dir), meta.clone());
        let open = move || -> Result<std::fs::File> {
            let io = |e: std::io::Error| {
                Error::new(
                    ErrorKind::Internal,
                    format!("cannot read {}: {e}", path.display()),
                )
            };
            let mut f = std::fs::File::open(&path).map_err(io)?;
            let mut r = std::io::BufReader::new(&mut f);
            r.seek_relative(4).map_err(io)?;
            let (got, _) = read_head(&mut r)?;
            drop(r);
            if got != want {
                return Err(Error::new(
                    ErrorKind::DataLoss,
                    "the snapshot file changed or went missing",
                ));
            }
            f.seek(SeekFrom::Start(0)).map_err(io)?;
            Ok(f)
        };
        let file = tokio::task::spawn_blocking(open)
            .await
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(tokio::fs::File::from_std(file)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::auth::AuthCommand;

    /// A snapshot is due every `--snapshot-count` requests, and no sooner than half the
    /// versions the last one wrote.
    #[test]
    fn a_snapshot_waits_for_half_the_versions_the_last_one_wrote() {
        let due = SnapshotDue::default();
        due.every.store(10, std::sync::atomic::Ordering::Relaxed);
        let counts = |n| (0..n).filter(|_| due.applied(1)).count();
        assert_eq!(counts(30), 3, "every 10 requests");
        due.wrote(100);
        assert_eq!(counts(49), 0);
        assert_eq!(counts(1), 1, "after 50 requests");
        due.wrote(6);
        assert_eq!(counts(9), 0);
        assert_eq!(counts(1), 1, "every 10 again");
        assert!(
            !due.applied(9) && due.applied(1),
            "a batch counts all its requests"
        );
        due.every.store(0, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(counts(1000), 0, "none before `run`");
    }

    /// A mirror refuses every client change of the data, at apply (so every member alike),
    /// and takes reads in transactions, logins, and its source's revisions; promoted, it
    /// takes writes.
    #[test]
    fn a_mirror_refuses_client_writes_until_promoted() {
        let mut mvcc = Mvcc::new();
        mvcc.mirror = Some("http://etcd:2379".into());
        let mut events = Vec::new();
        let put = Command::Put(
            PutRequest {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                ..Default::default()
            }
            .encode_to_vec(),
        );
        let read = Command::Txn(
            TxnRequest {
                success: vec![RequestOp {
                    request: Some(request_op::Request::RequestRange(RangeRequest {
                        key: b"k".to_vec(),
                        ..Default::default()
                    })),
                }],
                ..Default::default()
            }
            .encode_to_vec(),
        );
        let login = Command::Auth(AuthCommand::Authenticate {
            user: "u".into(),
            token: "t".into(),
        });
        let refused = apply_command(&mut mvcc, put.clone(), &mut events).unwrap_err();
        assert!(
            refused.message.contains("mirrors http://etcd:2379"),
            "{}",
            refused.message
        );
        for cmd in [Command::Compact(1), Command::LeaseGrant { id: 1, ttl: 5 }] {
            assert!(apply_command(&mut mvcc, cmd, &mut events).is_err());
        }
        apply_command(&mut mvcc, read, &mut events).unwrap();
        // (The user does not exist here: refused by the auth store, not by the mirror.)
        if let Err(e) = apply_command(&mut mvcc, login, &mut events) {
            assert!(!e.message.contains("mirrors"), "{}", e.message);
        }
        assert_eq!(mvcc.revision(), 1);
        apply_command(&mut mvcc, Command::Promote, &mut events).unwrap();
        apply_command(&mut mvcc, put, &mut events).unwrap();
        assert_eq!(mvcc.revision(), 2);
    }

    /// A write checked before the auth store changed is refused when applied, on every
    /// member alike (etcd's "revision of auth store is old"); one checked at the current
    /// revision, or applied with authentication off, goes through.
    #[test]
    fn a_write_checked_before_an_auth_change_is_refused() {
        let mut mvcc = Mvcc::new();
        let mut events = Vec::new();
        let put = |key: &[u8]| {
            Command::Put(
                PutRequest {
                    key: key.to_vec(),
                    value: b"v".to_vec(),
                    ..Default::default()
                }
                .encode_to_vec(),
            )
        };
        let mut auth = |cmd| apply_command(&mut mvcc, Command::Auth(cmd), &mut Vec::new());
        auth(AuthCommand::UserAdd {
            name: "root".into(),
            hash: String::new(),
        })
        .unwrap();
        auth(AuthCommand::UserGrantRole {
            user: "root".into(),
            role: "root".into(),
        })
        .unwrap();
        // Off: nothing is refused, whatever it was checked at.
        let before = mvcc.auth.revision;
        let old = put(b"off").checked_at(Some(0));
        apply_command(&mut mvcc, old, &mut events).unwrap();
        apply_command(&mut mvcc, Command::Auth(AuthCommand::Enable), &mut events).unwrap();
        assert!(mvcc.auth.revision > before);
        let now = mvcc.auth.revision;
        let stale = put(b"stale").checked_at(Some(now - 1));
        let refused = apply_command(&mut mvcc, stale, &mut events).unwrap_err();
        assert_eq!(refused.message, "etcdserver: revision of auth store is old");
        // Inside a batch, only that write is refused.
        let batch = Command::Batch(vec![
            put(b"a").checked_at(Some(now - 1)),
            put(b"b").checked_at(Some(now)),
        ]);
        let answers: Vec<Result<Vec<u8>>> =
            crate::node::raft::unpack(&apply_command(&mut mvcc, batch, &mut events).unwrap())
                .unwrap();
        assert!(answers[0].is_err() && answers[1].is_ok(), "{answers:?}");
        let revision = mvcc.revision();
        apply_command(&mut mvcc, put(b"c").checked_at(Some(now)), &mut events).unwrap();
        assert_eq!(mvcc.revision(), revision + 1);
    }
}

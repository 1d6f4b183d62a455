//! Consensus: openraft 0.9 over the node's own storage. The log store keeps its newest
//! entries in memory (older ones are read back from the `wal`) and makes every append, vote
//! and commit mark durable in the `wal` before openraft hears it is done; the state machine
//! applies commands to `mvcc`. Snapshots are the encoded store in a checksummed file, synced
//! before openraft may purge the log behind it, and never held whole in memory. Nothing of openraft's types reaches the disk unversioned: every payload written
//! starts with a format byte.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io::{Seek, SeekFrom, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, RaftLogReader, RaftSnapshotBuilder, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership, Vote,
};
use prost::Message;
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, RwLock};

use super::mvcc::Mvcc;
use super::wal::{Record, Wal};
use super::watch::Hub;
use crate::error::{Error, ErrorKind, Result};
use crate::pb::etcdserverpb::*;
use crate::pb::mvccpb::Event;

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

/// A write, as proposed to the cluster: etcd's request, encoded once by the proposer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum Command {
    Put(Vec<u8>),
    DeleteRange(Vec<u8>),
    Txn(Vec<u8>),
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
}

/// A change of the cluster's members (etcd's MemberAdd / MemberRemove / MemberPromote).
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
}

/// What applying a command answered: etcd's response encoded, or its error.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct Outcome(pub Option<std::result::Result<Vec<u8>, Error>>);

/// The on-disk format of every payload this module writes.
const FORMAT: u8 = 1;

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![FORMAT];
    // Serializing our own plain types into a Vec cannot fail.
    out.extend(bincode::serialize(value).unwrap_or_default());
    out
}

pub(crate) fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> std::result::Result<T, Error> {
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

// ---- the log ----

/// How many bytes of committed entries the log store keeps in memory (the newest): older
/// ones are read back from the write-ahead log when a lagging follower needs them. Entries
/// not yet committed or not yet written always stay.
pub const KEEP_BYTES: usize = 4 << 20;

struct Kept {
    entry: Entry<TypeConfig>,
    /// Its encoded size.
    bytes: usize,
}

struct LogInner {
    wal: Arc<Wal>,
    /// The newest entries; every entry from the purged one up to the first kept is in the
    /// write-ahead log only.
    entries: BTreeMap<u64, Kept>,
    /// What `entries` holds, in encoded bytes.
    bytes: usize,
    keep_bytes: usize,
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
    purged: Option<LogId<NodeId>>,
}

impl LogInner {
    /// Lets go of the oldest entries that are committed and written while the rest
    /// still hold `keep_bytes`; the last entry always stays (it is the log's last id).
    fn shed(&mut self) {
        let Some(committed) = self.committed else {
            return;
        };
        let upto = self
            .wal
            .last_written()
            .map_or(0, |w| w.min(committed.index));
        while self.entries.len() > 1 {
            let Some(first) = self.entries.first_entry() else {
                break;
            };
            if *first.key() > upto || self.bytes - first.get().bytes < self.keep_bytes {
                break;
            }
            self.bytes -= first.remove().bytes;
        }
    }

    fn recount(&mut self) {
        self.bytes = self.entries.values().map(|k| k.bytes).sum();
    }
}

/// The Raft log over the write-ahead log. Cheap to clone (one shared inner).
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Mutex<LogInner>>,
    /// The write-ahead log's stall state (disk full).
    pub stall: Arc<super::wal::Stall>,
    /// How long the write-ahead log's syncs take.
    pub sync_latency: Arc<super::metrics::Histogram>,
}

impl LogStore {
    /// Opens the log in `dir`, with what the write-ahead log held.
    pub fn open(dir: &Path) -> Result<LogStore> {
        LogStore::open_keeping(dir, KEEP_BYTES)
    }

    /// Writes without syncing from now on (etcd's `--unsafe-no-fsync`; see
    /// `Wal::unsafe_no_fsync`).
    pub async fn unsafe_no_fsync(&self) {
        self.inner.lock().await.wal.unsafe_no_fsync();
    }

    /// `open`, keeping `keep_bytes` of committed entries in memory instead of `KEEP_BYTES`
    /// (0: only the last one; every other read goes to the disk).
    pub fn open_keeping(dir: &Path, keep_bytes: usize) -> Result<LogStore> {
        let (wal, recovered) = Wal::open(dir)?;
        let mut entries = BTreeMap::new();
        for (index, data) in recovered.entries {
            let entry = decode::<Entry<TypeConfig>>(&data)?;
            let bytes = data.len();
            entries.insert(index, Kept { entry, bytes });
        }
        let purged = match recovered.purged {
            Some((_, data)) => decode::<Option<LogId<NodeId>>>(&data)?,
            None => None,
        };
        let mut inner = LogInner {
            wal: Arc::new(wal),
            entries,
            bytes: 0,
            keep_bytes,
            vote: recovered
                .vote
                .map(|v| decode::<Vote<NodeId>>(&v))
                .transpose()?,
            committed: match recovered.committed {
                Some(c) => decode::<Option<LogId<NodeId>>>(&c)?,
                None => None,
            },
            purged,
        };
        inner.recount();
        inner.shed();
        Ok(LogStore {
            stall: inner.wal.stall(),
            sync_latency: inner.wal.sync_latency(),
            inner: Arc::new(Mutex::new(inner)),
        })
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        use std::ops::Bound;
        let inner = self.inner.lock().await;
        let start = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&i) => i.saturating_add(1),
            Bound::Excluded(&i) => i,
            Bound::Unbounded => u64::MAX,
        };
        let mut out = Vec::new();
        // Entries let go of are read back (a follower catching up; rare, page-cached).
        let first_kept = inner.entries.keys().next().copied().unwrap_or(end);
        let from_disk = start.max(inner.purged.map_or(0, |p| p.index + 1));
        if from_disk < first_kept.min(end) {
            let read = inner
                .wal
                .read_entries(from_disk, first_kept.min(end))
                .map_err(|e| StorageIOError::read_logs(&e))?;
            for (_, data) in read {
                out.push(
                    decode::<Entry<TypeConfig>>(&data)
                        .map_err(|e| StorageIOError::read_logs(&e))?,
                );
            }
        }
        out.extend(
            inner
                .entries
                .range(start..end)
                .map(|(_, k)| k.entry.clone()),
        );
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let inner = self.inner.lock().await;
        let last = inner
            .entries
            .values()
            .next_back()
            .map(|k| k.entry.log_id)
            .or(inner.purged);
        Ok(LogState {
            last_purged_log_id: inner.purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StorageResult<()> {
        let mut inner = self.inner.lock().await;
        let wal = inner.wal.clone();
        wal.write(vec![Record::Vote(encode(vote))])
            .await
            .map_err(|e| StorageIOError::write_vote(&e))?;
        inner.vote = Some(*vote);
        Ok(())
    }

    /// Read once, at start. A member never starts as the leader: openraft 0.9 would resume
    /// the leadership of a committed vote of its own, with only the committed mark it saved
    /// (which may lag what it had acknowledged) and a "first entry of its term" written
    /// before the restart — so it would serve linearizable reads before it had re-applied
    /// what it acknowledged (found by the fault checker: stale reads after kill-all), and
    /// could append at indexes its followers hold other entries of the same term for. Handed
    /// over as not committed, the vote still promises what it promised (no other vote in its
    /// term), and the member campaigns in a new term like any other: as etcd's raft does, a
    /// new leader serves reads only once an entry of its own term is committed.
    async fn read_vote(&mut self) -> StorageResult<Option<Vote<NodeId>>> {
        Ok(self.inner.lock().await.vote.map(|mut v| {
            v.committed = false;
            v
        }))
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StorageResult<()> {
        let mut inner = self.inner.lock().await;
        // Not synced: the mark only lets a restart re-apply sooner; the log stays the truth.
        inner
            .wal
            .submit_unsynced(vec![Record::Committed(encode(&committed))]);
        inner.committed = committed;
        inner.shed();
        Ok(())
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<NodeId>>> {
        Ok(self.inner.lock().await.committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
    {
        let mut inner = self.inner.lock().await;
        let mut records = Vec::new();
        for entry in entries {
            let index = entry.log_id.index;
            let data = encode(&entry);
            let bytes = data.len();
            records.push(Record::Entry { index, data });
            // An entry replacing a conflicting suffix drops it, as the log does.
            let dropped: usize = inner
                .entries
                .split_off(&index)
                .values()
                .map(|k| k.bytes)
                .sum();
            inner.bytes = inner.bytes - dropped + bytes;
            inner.entries.insert(index, Kept { entry, bytes });
        }
        // Readable now; reported durable once the group commit has synced it.
        inner.wal.submit(records, move |r| {
            callback.log_io_completed(r.map_err(|e| std::io::Error::other(e.message)));
        });
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        let mut inner = self.inner.lock().await;
        let wal = inner.wal.clone();
        wal.write(vec![Record::Truncate { from: log_id.index }])
            .await
            .map_err(|e| io_err(&e))?;
        inner.entries.split_off(&log_id.index);
        inner.recount();
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        let mut inner = self.inner.lock().await;
        let wal = inner.wal.clone();
        wal.write(vec![Record::Purge {
            upto: log_id.index,
            data: encode(&Some(log_id)),
        }])
        .await
        .map_err(|e| io_err(&e))?;
        inner.entries = inner.entries.split_off(&(log_id.index + 1));
        inner.purged = Some(log_id);
        inner.recount();
        Ok(())
    }
}

// ---- the state machine ----

/// What the state machine holds: the store and where it stands in the log.
pub struct Applied {
    pub mvcc: Mvcc,
    pub last_applied: Option<LogId<NodeId>>,
    pub membership: StoredMembership<NodeId, BasicNode>,
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
    /// Counts applied requests towards the next snapshot.
    pub due: Arc<SnapshotDue>,
}

/// etcd's `--snapshot-count` counts requests; an entry here packs many (a batch), so
/// openraft's count of entries would let the log — kept in memory until a snapshot — grow
/// to `count` batches. This counts the requests applied and says when a snapshot is due.
#[derive(Default)]
pub struct SnapshotDue {
    applied: std::sync::atomic::AtomicU64,
    every: std::sync::atomic::AtomicU64,
    closed: std::sync::atomic::AtomicBool,
    wake: tokio::sync::Notify,
}

impl SnapshotDue {
    fn applied(&self, requests: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let every = self.every.load(Relaxed);
        if every > 0 && self.applied.fetch_add(requests, Relaxed) + requests >= every {
            self.applied.store(0, Relaxed);
            self.wake.notify_one();
        }
    }

    /// Takes a snapshot every `every` applied requests until `close`.
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

/// The member's snapshot file: `crc32 (big endian) | FORMAT | bincode(meta) | the store's
/// length (u64, little endian) | the store (`Mvcc::encode_to`)`, the crc over everything
/// after it — what bincode writes for `(meta, store bytes)` behind the format byte.
fn snapshot_path(dir: &Path) -> PathBuf {
    dir.join("snapshot.snap")
}

/// Writes a snapshot file's bytes for `meta` and `mvcc` into `out` from where it stands,
/// the store streamed as it is encoded — never copied whole into memory first. The head
/// ends with the store's length, known once it is written: its place is kept, and the crc of
/// head + store is combined from the two parts' crcs.
fn write_snapshot_stream(
    out: &mut (impl Write + Seek),
    meta: &SnapshotMeta<NodeId, BasicNode>,
    mvcc: &Mvcc,
) -> std::io::Result<()> {
    let start = out.stream_position()?;
    let mut head = encode(meta);
    out.seek(SeekFrom::Current(4 + head.len() as i64 + 8))?;
    let (store_crc, len) = {
        let mut store = Hashing {
            inner: std::io::BufWriter::with_capacity(1 << 20, &mut *out),
            crc: crc32fast::Hasher::new(),
            len: 0,
        };
        mvcc.encode_to(&mut store)?;
        store.inner.flush()?;
        (store.crc.clone(), store.len)
    };
    head.extend_from_slice(&len.to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&head);
    crc.combine(&store_crc);
    out.seek(SeekFrom::Start(start))?;
    out.write_all(&crc.finalize().to_be_bytes())?;
    out.write_all(&head)?;
    out.seek(SeekFrom::Current(len as i64))?;
    Ok(())
}

/// A writer that counts and checksums what passes through it.
struct Hashing<W> {
    inner: W,
    crc: crc32fast::Hasher,
    len: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes the snapshot file through a temporary one — `body` writes its bytes — then
/// syncs it, renames it into place and syncs the directory.
fn write_snapshot_with(
    dir: &Path,
    body: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> Result<()> {
    let tmp = dir.join("snapshot.tmp");
    let io = |e: std::io::Error| {
        Error::new(
            ErrorKind::Internal,
            format!("cannot write a snapshot in {}: {e}", dir.display()),
        )
    };
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    body(&mut f).and_then(|_| f.sync_all()).map_err(io)?;
    std::fs::rename(&tmp, snapshot_path(dir)).map_err(io)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io)
}

/// Reads a snapshot file's head as a stream: its meta and the length of the store after it.
fn read_head(r: &mut impl std::io::Read) -> Result<(SnapshotMeta<NodeId, BasicNode>, u64)> {
    let bad = || Error::new(ErrorKind::DataLoss, "the snapshot is malformed");
    let mut format = [0; 1];
    r.read_exact(&mut format).map_err(|_| bad())?;
    if format[0] != FORMAT {
        return Err(Error::new(
            ErrorKind::DataLoss,
            "a snapshot of an unknown format version",
        ));
    }
    let meta = bincode::deserialize_from(&mut *r).map_err(|_| bad())?;
    let mut len = [0; 8];
    r.read_exact(&mut len).map_err(|_| bad())?;
    Ok((meta, u64::from_le_bytes(len)))
}

/// Loads the snapshot file at `path` (None if there is none) as a stream, never holding
/// its bytes whole, its superseded values going to a history file in `history`.
fn load_snapshot(
    path: &Path,
    history: &Path,
) -> Result<Option<(SnapshotMeta<NodeId, BasicNode>, Mvcc)>> {
    match std::fs::File::open(path) {
        Ok(mut f) => read_snapshot(&mut f, path, history).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::new(
            ErrorKind::Internal,
            format!("cannot read {}: {e}", path.display()),
        )),
    }
}

/// A snapshot file — or a backup, `Backup::send`'s framing around one — read as a stream:
/// checked first (`check_snapshot`), then its meta and store decoded, the store's
/// superseded values going to a history file in `history`. `path` names it in errors.
fn read_snapshot(
    f: &mut std::fs::File,
    path: &Path,
    history: &Path,
) -> Result<(SnapshotMeta<NodeId, BasicNode>, Mvcc)> {
    use std::io::{BufReader, Read};
    let end = check_snapshot(f, path)?;
    f.seek(SeekFrom::Start(4))
        .map_err(|e| read_error(path, e))?;
    let mut r = BufReader::with_capacity(1 << 20, f).take(end - 4);
    let (meta, len) = read_head(&mut r)?;
    let mvcc = Mvcc::decode_from(r.take(len), Some((history, super::history::PIECE)))?;
    Ok((meta, mvcc))
}

fn read_error(path: &Path, e: std::io::Error) -> Error {
    Error::new(
        ErrorKind::Internal,
        format!("cannot read {}: {e}", path.display()),
    )
}

/// Hands `f`'s bytes in `from..to` to `take`, a piece at a time.
fn each_piece(
    f: &mut std::fs::File,
    from: u64,
    to: u64,
    mut take: impl FnMut(&[u8]),
) -> std::io::Result<()> {
    use std::io::{BufRead, BufReader, Read};
    f.seek(SeekFrom::Start(from))?;
    let mut r = BufReader::with_capacity(1 << 20, Read::take(&mut *f, to - from));
    loop {
        let n = {
            let buf = r.fill_buf()?;
            take(buf);
            buf.len()
        };
        if n == 0 {
            return Ok(());
        }
        r.consume(n);
    }
}

/// The crc32 of `f`'s bytes in `from..to`, read as a stream.
fn crc_of(f: &mut std::fs::File, from: u64, to: u64) -> std::io::Result<u32> {
    let mut crc = crc32fast::Hasher::new();
    each_piece(f, from, to, |b| crc.update(b))?;
    Ok(crc.finalize())
}

/// Checks a snapshot file — or a backup, `Backup::send`'s framing around one — and says
/// where the snapshot's bytes end: the crc over everything after it for a file; for a
/// backup its SHA-256, then the crc over the snapshot inside. Read as a stream.
fn check_snapshot(f: &mut std::fs::File, path: &Path) -> Result<u64> {
    use sha2::Digest;
    use std::io::{BufReader, Read};
    let io = |e| read_error(path, e);
    let corrupt = || {
        Error::new(
            ErrorKind::DataLoss,
            format!("snapshot {} is corrupt (checksum)", path.display()),
        )
    };
    let len = f.metadata().map_err(io)?.len();
    if len < 4 {
        return Err(corrupt());
    }
    let mut crc = [0; 4];
    f.seek(SeekFrom::Start(0)).map_err(io)?;
    f.read_exact(&mut crc).map_err(io)?;
    let crc = u32::from_be_bytes(crc);
    if crc_of(f, 4, len).map_err(io)? == crc {
        return Ok(len);
    }
    if len % BACKUP_ALIGN as u64 != 32 {
        return Err(corrupt());
    }
    let mut sum = sha2::Sha256::new();
    each_piece(f, 0, len - 32, |b| sum.update(b)).map_err(io)?;
    let mut want = [0; 32];
    f.read_exact(&mut want).map_err(io)?;
    if sum.finalize().as_slice() != want {
        return Err(corrupt());
    }
    // The snapshot inside ends after its head and store; the padding follows.
    f.seek(SeekFrom::Start(4)).map_err(io)?;
    let (meta, data) = read_head(&mut BufReader::new(&mut *f)).map_err(|_| corrupt())?;
    let head = 1 + bincode::serialized_size(&meta).map_err(|_| corrupt())? + 8;
    match (4 + head).checked_add(data) {
        Some(end) if end <= len - 32 && crc_of(f, 4, end).map_err(io)? == crc => Ok(end),
        _ => Err(corrupt()),
    }
}

/// Where a snapshot sent by the leader is gathered before it replaces the member's own.
fn receiving_path(dir: &Path) -> PathBuf {
    dir.join("snapshot.receiving")
}

/// etcd's snapshot stream ends with the SHA-256 of what came before, which is a multiple of
/// 512 bytes (bbolt pages): `etcdctl snapshot save` refuses a stream without it.
const BACKUP_ALIGN: usize = 512;

/// A backup, ready to stream as `Maintenance.Snapshot` sends it: a snapshot file written
/// aside (its name unlinked at once, so nothing is left behind), sent with etcd's framing —
/// zeros up to a multiple of 512 bytes, then the SHA-256 of all that.
pub struct Backup {
    file: std::fs::File,
    len: u64,
}

impl Backup {
    /// The bytes the stream sends in all.
    fn total(&self) -> u64 {
        self.len.div_ceil(BACKUP_ALIGN as u64) * BACKUP_ALIGN as u64 + 32
    }

    /// Reads the backup in pieces of `piece` bytes and hands each to `out` with the number
    /// of bytes still to come after it, until `out` says stop. Blocking: run it off the
    /// runtime's workers.
    pub fn send(mut self, piece: usize, mut out: impl FnMut(Vec<u8>, u64) -> bool) -> Result<()> {
        use sha2::Digest;
        use std::io::Read;
        let mut sum = sha2::Sha256::new();
        let total = self.total();
        let mut sent = 0u64;
        loop {
            let mut blob = Vec::with_capacity(piece);
            (&mut self.file)
                .take(piece as u64)
                .read_to_end(&mut blob)
                .map_err(|e| {
                    Error::new(ErrorKind::Internal, format!("cannot read the backup: {e}"))
                })?;
            if blob.is_empty() {
                break;
            }
            sum.update(&blob);
            sent += blob.len() as u64;
            if !out(blob, total - sent) {
                return Ok(());
            }
        }
        if sent != self.len {
            return Err(Error::new(ErrorKind::Internal, "the backup was cut short"));
        }
        let mut tail = vec![0; (total - 32 - sent) as usize];
        sum.update(&tail);
        tail.extend_from_slice(&sum.finalize());
        out(tail, 0);
        Ok(())
    }
}

/// Makes `dir`, a new member's data dir, start from `backup` (what `Maintenance.Snapshot`
/// streamed: a snapshot file's bytes): the store as the backup holds it, the cluster
/// `members` (as etcd's `snapshot restore` takes them from `--initial-cluster`), and a log
/// that starts after the backup's last entry with a vote at its term, so the new cluster's
/// terms go on from there.
pub fn restore(backup: &Path, dir: &Path, members: BTreeMap<NodeId, String>) -> Result<()> {
    let restored = restore_into(backup, dir, members);
    if restored.is_err() {
        // Called on an empty data dir: what a failed restore wrote goes, so that the next
        // start tries again instead of finding a half-made member.
        let _ = std::fs::remove_dir_all(dir.join("snap"));
        let _ = std::fs::remove_dir_all(dir.join("wal"));
    }
    restored
}

fn restore_into(backup: &Path, dir: &Path, members: BTreeMap<NodeId, String>) -> Result<()> {
    let snap = dir.join("snap");
    std::fs::create_dir_all(&snap).map_err(|e| {
        Error::new(
            ErrorKind::Internal,
            format!("cannot create {}: {e}", snap.display()),
        )
    })?;
    let mut f = std::fs::File::open(backup).map_err(|e| {
        Error::invalid(format!(
            "cannot read the snapshot {}: {e}",
            backup.display()
        ))
    })?;
    let (meta, mut mvcc) = read_snapshot(&mut f, backup, &snap)?;
    // A new cluster: the old one's member names and removals do not apply to it.
    mvcc.forget_members();
    let last = meta
        .last_log_id
        .ok_or_else(|| Error::invalid(format!("{} holds an empty store", backup.display())))?;
    let voters = members.keys().copied().collect();
    let nodes: BTreeMap<NodeId, BasicNode> = members
        .into_iter()
        .map(|(id, addr)| (id, BasicNode { addr }))
        .collect();
    let membership = openraft::Membership::new(vec![voters], nodes);
    let meta = SnapshotMeta {
        last_log_id: Some(last),
        last_membership: StoredMembership::new(Some(last), membership),
        snapshot_id: format!("restored-{}", last.index),
    };
    write_snapshot_with(&snap, |f| write_snapshot_stream(f, &meta, &mvcc))?;
    let (wal, _) = Wal::open(&dir.join("wal"))?;
    wal.write_blocking(vec![
        Record::Purge {
            upto: last.index,
            data: encode(&Some(last)),
        },
        Record::Committed(encode(&Some(last))),
        Record::Vote(encode(&Vote::<NodeId>::new(last.leader_id.term, 0))),
    ])
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
            due: Arc::default(),
            state: Arc::new(RwLock::new(applied)),
            hub: Arc::default(),
            dir: dir.to_path_buf(),
            current: Arc::new(RwLock::new(current)),
        })
    }
}

impl StateMachine {
    /// The store now, as a snapshot file written aside: what `Maintenance.Snapshot` streams
    /// and `restore` reads back. Written off the runtime's workers under the store's read
    /// lock (writes wait, reads go on), never held whole in memory.
    pub async fn backup(&self) -> Result<Backup> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let state = self.state.clone().read_owned().await;
        let meta = SnapshotMeta {
            last_log_id: state.last_applied,
            last_membership: state.membership.clone(),
            snapshot_id: "backup".into(),
        };
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
            let mut file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(io)?;
            let _ = std::fs::remove_file(&path);
            write_snapshot_stream(&mut file, &meta, &state.mvcc).map_err(io)?;
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
fn adds_data(cmd: &Command) -> bool {
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

/// Applies one command to the store; the answer is etcd's response, encoded. The changes
/// it made are added to `events`, for the watches.
fn apply_command(mvcc: &mut Mvcc, cmd: Command, events: &mut Vec<Event>) -> Result<Vec<u8>> {
    let bad = |e: prost::DecodeError| {
        Error::new(ErrorKind::DataLoss, format!("undecodable command: {e}"))
    };
    if mvcc.out_of_space() && adds_data(&cmd) {
        return Err(super::mvcc::no_space());
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
            let attributes = super::mvcc::Attributes { name, client_urls };
            mvcc.set_attributes(member, attributes);
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
        Command::Membership(_) => {
            return Err(Error::new(
                ErrorKind::Internal,
                "a membership change is not a log entry",
            ))
        }
        Command::Batch(cmds) => {
            let answers: Vec<Result<Vec<u8>>> = cmds
                .into_iter()
                .map(|c| apply_command(mvcc, c, events))
                .collect();
            (encode(&answers), Vec::new())
        }
    };
    events.extend(changes);
    Ok(answer)
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        // On disk and synced before openraft may purge the log behind it; the file is
        // replaced under `current`'s write lock (taken before the store's, as everywhere), so
        // a reader of `current` finds its file.
        let mut current = self.current.write().await;
        let state = self.state.clone().read_owned().await;
        let meta = SnapshotMeta {
            last_log_id: state.last_applied,
            last_membership: state.membership.clone(),
            snapshot_id: state.last_applied.map_or_else(
                || "empty".to_string(),
                |l| format!("{}-{}", l.leader_id, l.index),
            ),
        };
        let (dir, written) = (self.dir.clone(), meta.clone());
        // The store's read lock is held while it is written (writes wait, reads go on), and
        // released before the sync.
        let write = move || {
            write_snapshot_with(&dir, |f| {
                let streamed = write_snapshot_stream(f, &written, &state.mvcc);
                drop(state);
                streamed
            })
        };
        tokio::task::spawn_blocking(write)
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
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
        for entry in entries {
            state.last_applied = Some(entry.log_id);
            out.push(match entry.payload {
                EntryPayload::Blank => Outcome(None),
                EntryPayload::Normal(cmd) => {
                    requests += match &cmd {
                        Command::Batch(cmds) => cmds.len() as u64,
                        _ => 1,
                    };
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
        drop(state);
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
                write_snapshot_with(&dir, |f| std::io::copy(&mut received, f).map(drop))?;
            }
            Ok(mvcc)
        };
        let mvcc = tokio::task::spawn_blocking(load)
            .await
            .map_err(|e| StorageIOError::read_snapshot(signature.clone(), &e))?
            .map_err(|e| StorageIOError::read_snapshot(signature, &e))?;
        let mut state = self.state.write().await;
        *state = Applied {
            mvcc,
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
        };
        self.hub.restored(&state.mvcc);
        self.size
            .store(state.mvcc.size(), std::sync::atomic::Ordering::Relaxed);
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
    use std::io::Cursor;

    /// `bytes` sent as a backup in pieces of `piece` bytes; the remaining counts must add up.
    fn framed(bytes: &[u8], piece: usize) -> Vec<u8> {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(bytes).unwrap();
        file.seek(SeekFrom::Start(0)).unwrap();
        let backup = Backup {
            file,
            len: bytes.len() as u64,
        };
        let total = backup.total();
        let mut out = Vec::new();
        backup
            .send(piece, |blob, remaining| {
                out.extend_from_slice(&blob);
                assert_eq!(out.len() as u64 + remaining, total);
                true
            })
            .unwrap();
        assert_eq!(out.len() as u64, total);
        out
    }

    /// A snapshot file as one value: `snapshot_path`'s format written whole, to check the
    /// streamed writer and the checks against.
    #[derive(Serialize, Deserialize)]
    struct SnapshotFile {
        meta: SnapshotMeta<NodeId, BasicNode>,
        data: Vec<u8>,
    }

    /// The crc of a snapshot file and the part before the store's bytes.
    fn snapshot_head(file: &SnapshotFile) -> ([u8; 4], Vec<u8>) {
        let mut head = encode(&file.meta);
        head.extend_from_slice(&(file.data.len() as u64).to_le_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(&head);
        crc.update(&file.data);
        (crc.finalize().to_be_bytes(), head)
    }

    /// `check_snapshot` of a file holding `bytes`.
    fn check(bytes: &[u8], path: &Path) -> Result<u64> {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(bytes).unwrap();
        check_snapshot(&mut f, path)
    }

    fn file(data_len: usize) -> SnapshotFile {
        SnapshotFile {
            meta: SnapshotMeta::default(),
            data: vec![7; data_len],
        }
    }

    /// The member's own file and a backup stream parse alike; a changed byte in either is
    /// refused as corrupt — whatever the length (a file whose length looks framed included).
    #[test]
    fn snapshot_files_and_backups_are_checked() {
        let path = Path::new("test.snap");
        for len in [0, 1, 400, 512, 5000] {
            let f = file(len);
            let (crc, head) = snapshot_head(&f);
            let plain = [&crc[..], &head, &f.data].concat();
            let backup = framed(&plain, 100);
            assert_eq!(backup.len() % BACKUP_ALIGN, 32);
            for bytes in [plain.clone(), backup] {
                assert_eq!(check(&bytes, path).unwrap(), plain.len() as u64);
                for at in [0, 5, bytes.len() - 1] {
                    let mut bad = bytes.clone();
                    bad[at] ^= 0x40;
                    let e = check(&bad, path).err();
                    assert_eq!(e.map(|e| e.kind), Some(ErrorKind::DataLoss), "{len} {at}");
                }
            }
        }
    }

    /// A store streamed into a snapshot file is the same file as one written from its bytes.
    #[test]
    fn a_streamed_snapshot_is_the_file_written_whole() {
        let mut mvcc = Mvcc::new();
        for i in 0..100 {
            mvcc.put(crate::pb::etcdserverpb::PutRequest {
                key: format!("k{i}").into_bytes(),
                value: vec![b'v'; i],
                ..Default::default()
            })
            .unwrap();
        }
        let whole = SnapshotFile {
            meta: SnapshotMeta::default(),
            data: mvcc.encode(),
        };
        let (crc, head) = snapshot_head(&whole);
        let mut streamed = Cursor::new(b"before".to_vec());
        streamed.set_position(6);
        write_snapshot_stream(&mut streamed, &whole.meta, &mvcc).unwrap();
        let streamed = streamed.into_inner();
        assert_eq!(&streamed[6..], [&crc[..], &head, &whole.data].concat());
        assert_eq!(&streamed[..6], b"before");
    }
}

//! The log store: the newest entries in memory, every one durable in the `wal` first.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, LogId, RaftLogReader, StorageIOError, Vote};
use tokio::sync::Mutex;

use super::{io_err, pack, unpack, NodeId, StorageResult, TypeConfig};
use crate::error::Result;
use crate::node::wal::{Record, Wal};

/// How many bytes of committed entries the log store keeps in memory (the newest): older
/// ones are read back from the write-ahead log when a lagging follower needs them. Entries
/// not yet committed or not yet written always stay.
pub const KEEP_BYTES: usize = 4 << 20;

pub(super) struct Kept {
    entry: Entry<TypeConfig>,
    /// Its encoded size.
    bytes: usize,
}

pub(super) struct LogInner {
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
    pub stall: Arc<crate::node::wal::Stall>,
    /// How long the write-ahead log's syncs take.
    pub sync_latency: Arc<crate::node::metrics::Histogram>,
    /// This member's id, and what is told of the entries it appends as the leader, before
    /// they are synced.
    on_append: Arc<std::sync::OnceLock<(NodeId, OnAppend)>>,
}

/// Entries a leader appended, handed over before they are synced, so that its followers
/// may be sent them while its own sync runs (`PeerNetwork::send_early`). openraft 0.9
/// replicates an entry only once the leader's copy is synced (its core awaits the append's
/// flush before it runs the next command), so a write waited for the leader's sync and then
/// for a follower's, one after the other.
pub struct LeaderAppend<'a> {
    /// The leader's vote, as its AppendEntries carry it.
    pub vote: Vote<NodeId>,
    /// The entry before the first of `entries`.
    pub prev: Option<LogId<NodeId>>,
    pub entries: &'a [Entry<TypeConfig>],
    /// The newest committed entry this log knows of.
    pub committed: Option<LogId<NodeId>>,
}

/// What `LogStore::on_append` calls: whether the leader has followers to replicate to. It
/// must not block.
pub type OnAppend = Box<dyn Fn(LeaderAppend<'_>) -> bool + Send + Sync>;

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
            let entry = unpack::<Entry<TypeConfig>>(&data)?;
            let bytes = data.len();
            entries.insert(index, Kept { entry, bytes });
        }
        let purged = match recovered.purged {
            Some((_, data)) => unpack::<Option<LogId<NodeId>>>(&data)?,
            None => None,
        };
        let mut inner = LogInner {
            wal: Arc::new(wal),
            entries,
            bytes: 0,
            keep_bytes,
            vote: recovered
                .vote
                .map(|v| unpack::<Vote<NodeId>>(&v))
                .transpose()?,
            committed: match recovered.committed {
                Some(c) => unpack::<Option<LogId<NodeId>>>(&c)?,
                None => None,
            },
            purged,
        };
        inner.recount();
        inner.shed();
        Ok(LogStore {
            stall: inner.wal.stall(),
            sync_latency: inner.wal.sync_latency(),
            on_append: Arc::default(),
            inner: Arc::new(Mutex::new(inner)),
        })
    }

    /// Tells the log it is member `me`'s, and has `f` told of every later batch of entries
    /// `me` appends as the leader whose vote this log holds as committed, before they are
    /// synced; `f` says whether `me` has followers to send them to. A log that knows its
    /// member writes the entries it appends as a follower, or as a leader without
    /// followers, on the calling thread (`Wal::submit_here`). Set once.
    pub fn on_append(&self, me: NodeId, f: OnAppend) {
        let _ = self.on_append.set((me, f));
    }
}

/// The most one AppendEntries carries, in encoded entry bytes (more only when a single entry
/// is larger). openraft 0.9 gives an AppendEntries one heartbeat interval to be answered, and
/// a lagging follower used to be sent everything it missed at once: with 1 MiB values that
/// was hundreds of megabytes, which never arrived in time, and the follower never caught up.
/// etcd's raft caps a message at 1 MiB (`MaxSizePerMsg`) the same way.
pub const MAX_SEND_BYTES: usize = 2 << 20;

impl LogStore {
    /// The entries in `start..end`, as far as `budget` encoded bytes reach (at least one).
    async fn entries(
        &self,
        start: u64,
        end: u64,
        budget: usize,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        let inner = self.inner.lock().await;
        let mut out = Vec::new();
        let mut bytes = 0;
        // Entries let go of are read back (a follower catching up; rare, page-cached).
        let first_kept = inner.entries.keys().next().copied().unwrap_or(end);
        let from_disk = start.max(inner.purged.map_or(0, |p| p.index + 1));
        if from_disk < first_kept.min(end) {
            let read = inner
                .wal
                .read_entries(from_disk, first_kept.min(end), budget)
                .map_err(|e| StorageIOError::read_logs(&e))?;
            for (_, data) in read.entries {
                bytes += data.len();
                out.push(
                    unpack::<Entry<TypeConfig>>(&data)
                        .map_err(|e| StorageIOError::read_logs(&e))?,
                );
            }
            // Cut short by the budget: the entries kept in memory would leave a gap.
            if read.cut {
                return Ok(out);
            }
        }
        for (_, k) in inner.entries.range(start..end) {
            if bytes >= budget && !out.is_empty() {
                break;
            }
            bytes += k.bytes;
            out.push(k.entry.clone());
        }
        Ok(out)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        use std::ops::Bound;
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
        self.entries(start, end, usize::MAX).await
    }

    /// What replication sends: a prefix of `start..end` within `MAX_SEND_BYTES`.
    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        self.entries(start, end, MAX_SEND_BYTES).await
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
        wal.write(vec![Record::Vote(pack(vote))])
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
            .submit_unsynced(vec![Record::Committed(pack(&committed))]);
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
        let entries: Vec<Entry<TypeConfig>> = entries.into_iter().collect();
        let (mut follower, mut alone) = (false, false);
        if let (Some((me, hook)), Some(first)) = (self.on_append.get(), entries.first()) {
            let vote = inner
                .vote
                .filter(|v| v.committed && v.leader_id == first.log_id.leader_id);
            follower = vote.is_some_and(|v| v.leader_id.node_id != *me);
            let index = first.log_id.index;
            let prev = match inner.entries.range(..index).next_back() {
                Some((&i, k)) if i + 1 == index => Some(Some(k.entry.log_id)),
                None if inner.purged.map_or(0, |p| p.index + 1) == index => Some(inner.purged),
                _ => None,
            };
            if let (Some(vote), Some(prev)) = (vote.filter(|_| !follower), prev) {
                alone = !hook(LeaderAppend {
                    vote,
                    prev,
                    entries: &entries,
                    committed: inner.committed,
                });
            }
        }
        let mut records = Vec::new();
        for entry in entries {
            let index = entry.log_id.index;
            let data = pack(&entry);
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
        // Readable now; reported durable once the group commit has synced it — at once, on
        // this thread, unless the writer thread has work queued, when no leader's sync is
        // to overlap with its followers': a follower's, or a leader's without followers.
        let done = move |r: crate::error::Result<()>| {
            callback.log_io_completed(r.map_err(|e| std::io::Error::other(e.message)));
        };
        if follower || alone {
            inner.wal.submit_here(records, done);
        } else {
            inner.wal.submit(records, done);
        }
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
            data: pack(&Some(log_id)),
        }])
        .await
        .map_err(|e| io_err(&e))?;
        inner.entries = inner.entries.split_off(&(log_id.index + 1));
        inner.purged = Some(log_id);
        inner.recount();
        Ok(())
    }
}

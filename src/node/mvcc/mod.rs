//! The node's state machine, with etcd's semantics: one main revision per write request (a
//! whole transaction included), sub revisions within it, every key's history of versions
//! and tombstones, ranges at any revision not yet compacted, transactions with nested
//! transactions, compaction, and lease bookkeeping (which keys a lease holds; its clock runs
//! elsewhere). Deterministic: the same commands in the same order give the same state and
//! the same answers on every member. Error texts are etcd's own, so clients see no
//! difference.
//!
//! Storage here (the versions, reads at a revision, compaction, the hash, lease bookkeeping);
//! beside it: `write` (one request's changes under one revision, undone whole on failure,
//! and the lease writes), `request` (etcd's apply layer: validation, compares and
//! transactions, the kv entry points), `image` (the store as bytes: a Raft snapshot's payload),
//! `backend` (etcd's own backend buckets: a snapshot real etcd saved, made a store).
//! The children use this file's types; this file uses none of them.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::history::{History, Spilled};
use crate::error::{Error, ErrorKind, Result};
use crate::kv::KeyRange;
use crate::pb::etcdserverpb::range_request::{SortOrder, SortTarget};
use crate::pb::etcdserverpb::*;
use crate::pb::mvccpb::event::EventType;
use crate::pb::mvccpb::{Event, KeyValue};

mod backend;
mod image;
pub use image::write_image_in_turns;
pub mod request;
#[cfg(test)]
mod tests;
mod write;

/// etcd's largest lease TTL (`MaxLeaseTTL`, seconds).
pub(crate) const MAX_LEASE_TTL: i64 = 9_000_000_000;

/// A point in the store's history: the request's main revision and the write's place in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Revision {
    pub main: i64,
    pub sub: i64,
}

/// One version of a key: its value at a revision, or the tombstone of a delete. The key is
/// the map's; a version does not repeat it (64 bytes plus the value, against 96 plus a copy
/// of the key for a stored `KeyValue`).
#[derive(Debug)]
struct Version {
    rev: Revision,
    create_revision: i64,
    version: i64,
    lease: i64,
    /// None: the tombstone of a delete.
    value: Option<Value>,
}

/// A version's value: in memory, or — once a later version of its key superseded it — in
/// the store's history file (a key's newest version always stays in memory).
#[derive(Debug)]
enum Value {
    Mem(Box<[u8]>),
    Spilled(Spilled),
}

impl Value {
    fn len(&self) -> usize {
        match self {
            Value::Mem(b) => b.len(),
            Value::Spilled(s) => s.len as usize,
        }
    }
}

impl Version {
    fn tombstone(rev: Revision) -> Version {
        Version {
            rev,
            create_revision: 0,
            version: 0,
            lease: 0,
            value: None,
        }
    }

    fn from_kv(rev: Revision, kv: KeyValue) -> Version {
        Version {
            rev,
            create_revision: kv.create_revision,
            version: kv.version,
            lease: kv.lease,
            value: Some(Value::Mem(kv.value.into_boxed_slice())),
        }
    }
}

#[derive(Clone, Debug, Default)]
struct LeaseEntry {
    ttl: i64,
    keys: BTreeSet<Vec<u8>>,
}

/// What one version costs against the space quota: its key, its value and a fixed part
/// for the bookkeeping (etcd counts its bolt file; this is the store's own measure).
fn cost(key: &[u8], v: &Version) -> u64 {
    const FIXED: u64 = 64;
    key.len() as u64 + v.value.as_ref().map_or(0, |v| v.len() as u64) + FIXED
}

/// A member's name and client URLs, as it published them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attributes {
    pub name: String,
    pub client_urls: Vec<String>,
}

/// etcd's alarms: raised by a member, held by the cluster until disarmed.
pub const ALARM_NOSPACE: i32 = 1;

/// etcd's answer to a write while the space alarm is raised.
pub(crate) fn no_space() -> Error {
    err(
        ErrorKind::NoSpace,
        "etcdserver: mvcc: database space exceeded",
    )
}

/// The store: every key's versions since the last compaction, and the leases.
#[derive(Debug, Default)]
pub struct Mvcc {
    /// Where superseded values go (`keep_history_in`); None keeps them all in memory.
    past: Option<History>,
    /// The sum of `cost` over every version held: what the quota limits.
    size: u64,
    /// Raised alarms: (member id, alarm type).
    alarms: BTreeSet<(u64, i32)>,
    /// What each member published about itself (etcd's member attributes): its name and
    /// client URLs. Cluster metadata, not keys: no revision, no watch event.
    attributes: BTreeMap<u64, Attributes>,
    /// Members removed from the cluster (etcd's `cluster.removed`): a removed member that
    /// comes back is told so by its former peers, and stops.
    removed: BTreeSet<u64>,
    keys: BTreeMap<Vec<u8>, Vec<Version>>,
    /// The revision of the last write (0 for an empty store).
    rev: i64,
    /// Reads and watches below this revision are refused; -1 until the first compaction
    /// (etcd's `compactMainRev`: a compaction at 0 is allowed once).
    compacted: i64,
    leases: BTreeMap<i64, LeaseEntry>,
    /// Users, roles and permissions (etcd keeps them in its backend too).
    pub(crate) auth: crate::node::auth::AuthStore,
    /// While the store mirrors an etcd cluster (`node::mirror`): its client URLs. Client
    /// writes are refused until a promote clears it.
    pub(crate) mirror: Option<String>,
    /// The operations this member's store served, for `/metrics`; kept across snapshots.
    pub(crate) counters: std::sync::Arc<OpCounters>,
}

/// etcd's `etcd_mvcc_{range,put,delete,txn}_total`: ranges, puts and deletes this member's
/// store served (within transactions too), and the transactions of more than one of them.
#[derive(Default)]
pub struct OpCounters {
    pub ranges: std::sync::atomic::AtomicU64,
    pub puts: std::sync::atomic::AtomicU64,
    pub deletes: std::sync::atomic::AtomicU64,
    pub txns: std::sync::atomic::AtomicU64,
}

/// Counts of what was served, not the store's state: two stores with the same data print
/// the same (the tests compare stores by their Debug text).
impl std::fmt::Debug for OpCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OpCounters")
    }
}

fn err(kind: ErrorKind, text: &str) -> Error {
    Error::new(kind, text)
}

fn empty_key() -> Error {
    err(
        ErrorKind::InvalidArgument,
        "etcdserver: key is not provided",
    )
}

fn compacted() -> Error {
    err(
        ErrorKind::Compacted,
        "etcdserver: mvcc: required revision has been compacted",
    )
}

fn future() -> Error {
    err(
        ErrorKind::FutureRevision,
        "etcdserver: mvcc: required revision is a future revision",
    )
}

fn lease_not_found() -> Error {
    err(ErrorKind::NotFound, "etcdserver: requested lease not found")
}

fn duplicate_key() -> Error {
    err(
        ErrorKind::InvalidArgument,
        "etcdserver: duplicate key given in txn request",
    )
}

fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        revision,
        ..Default::default()
    })
}

impl Mvcc {
    /// An empty store at revision 1, as etcd starts: the first write is revision 2.
    pub fn new() -> Self {
        Mvcc {
            rev: 1,
            compacted: -1,
            ..Self::default()
        }
    }

    /// How many keys are live (etcd's `etcd_debugging_mvcc_keys_total`).
    pub fn live_keys(&self) -> usize {
        self.keys
            .values()
            .filter(|v| v.last().is_some_and(|v| v.value.is_some()))
            .count()
    }

    /// The revision of the last write.
    pub fn revision(&self) -> i64 {
        self.rev
    }

    /// The revision history was compacted at (0: none).
    /// What the store holds, as the quota counts it.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// etcd's HashKV, computed as etcd computes it (so a member, a mirror or a restored copy
    /// can be checked against etcd itself): CRC-32C of the bucket name `key`, then of every
    /// version at or below `revision` (0: the current one) in revision order, each as etcd
    /// stores it — its revision as 17 bytes (main, `_`, sub; `t` after a tombstone) and its
    /// `mvccpb.KeyValue` encoding (only the key for a tombstone). A version compaction kept is
    /// hashed only while it is still its key's version at `revision`, as etcd's `Keep` says.
    /// Returns the hash with the compaction revision (-1 before the first, as etcd).
    pub fn hash_kv(&self, revision: i64) -> Result<(u32, i64)> {
        let rev = if revision == 0 { self.rev } else { revision };
        if rev > self.rev {
            return Err(future());
        }
        if revision != 0 && revision <= self.compacted {
            return Err(compacted());
        }
        // (revision, key, version, whether it is a kept version superseded at `rev`)
        let mut rows = Vec::new();
        let mut any_kept = false;
        for (key, versions) in &self.keys {
            let at = versions.partition_point(|v| v.rev.main <= rev);
            let live = versions[..at].last().filter(|v| v.value.is_some());
            any_kept |= live.is_some();
            for v in &versions[..at] {
                let superseded =
                    v.rev.main <= self.compacted && live.is_none_or(|l| l.rev != v.rev);
                rows.push((v.rev, key, v, superseded));
            }
        }
        rows.sort_unstable_by_key(|r| r.0);
        let mut h = crc32c::crc32c(b"key");
        let mut kv = Vec::new();
        for (_, key, v, superseded) in rows {
            if superseded && any_kept {
                continue;
            }
            let (bucket_key, len) = self.bucket_entry(key, v, &mut kv)?;
            h = crc32c::crc32c_append(h, &bucket_key[..len]);
            h = crc32c::crc32c_append(h, &kv);
        }
        Ok((h, self.compacted))
    }

    /// The raised alarms: (member id, alarm type).
    pub fn alarms(&self) -> &BTreeSet<(u64, i32)> {
        &self.alarms
    }

    /// Raises (`on`) or disarms an alarm. Disarming with member 0 disarms that alarm type
    /// for every member.
    pub fn set_alarm(&mut self, member: u64, alarm: i32, on: bool) {
        if on {
            self.alarms.insert((member, alarm));
        } else {
            self.alarms
                .retain(|&(m, a)| !(a == alarm && (member == 0 || m == member)));
        }
    }

    /// What member `id` published about itself, if it did.
    pub fn attributes(&self, id: u64) -> Option<&Attributes> {
        self.attributes.get(&id)
    }

    /// Records what member `id` published.
    pub fn set_attributes(&mut self, id: u64, a: Attributes) {
        self.attributes.insert(id, a);
    }

    /// A new membership: members that left it are removed for good (until added again),
    /// their attributes forgotten.
    pub fn members_changed(&mut self, before: &[u64], after: &[u64]) {
        self.removed
            .extend(before.iter().filter(|id| !after.contains(id)));
        self.removed.retain(|id| !after.contains(id));
        self.attributes.retain(|id, _| after.contains(id));
    }

    /// Whether member `id` was removed from the cluster.
    pub fn is_removed(&self, id: u64) -> bool {
        self.removed.contains(&id)
    }

    /// Forgets every member's attributes and removal (a store restored into a new cluster).
    pub fn forget_members(&mut self) {
        self.attributes.clear();
        self.removed.clear();
    }

    /// True while the space alarm holds: writes that add data are refused.
    pub fn out_of_space(&self) -> bool {
        self.alarms.iter().any(|&(_, a)| a == ALARM_NOSPACE)
    }

    pub fn compact_revision(&self) -> i64 {
        self.compacted.max(0)
    }

    /// The oldest revision reads and watches may ask for (-1 before any compaction).
    pub fn oldest_readable(&self) -> i64 {
        self.compacted
    }

    fn latest(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        match self.keys.get(key).and_then(|v| v.last()) {
            Some(v) => self.kv(key, v),
            None => Ok(None),
        }
    }

    /// A value's bytes, read back from the history file if it is there.
    fn value<'a>(&self, value: &'a Value) -> Result<Cow<'a, [u8]>> {
        match value {
            Value::Mem(b) => Ok(Cow::Borrowed(b)),
            Value::Spilled(at) => self.history_file()?.read(*at).map(Cow::Owned),
        }
    }

    /// The history file spilled values are read back from.
    fn history_file(&self) -> Result<&History> {
        self.past.as_ref().ok_or_else(|| {
            err(
                ErrorKind::Internal,
                "a value is in a history file the store no longer has",
            )
        })
    }

    /// The key-value `v` of `key` is, for an answer; None for a tombstone.
    fn kv(&self, key: &[u8], v: &Version) -> Result<Option<KeyValue>> {
        self.kv_with(key, v, true)
    }

    /// `kv`, with or without the value (keys-only ranges copy none).
    fn kv_with(&self, key: &[u8], v: &Version, with_value: bool) -> Result<Option<KeyValue>> {
        let Some(value) = &v.value else {
            return Ok(None);
        };
        Ok(Some(KeyValue {
            key: key.to_vec(),
            create_revision: v.create_revision,
            mod_revision: v.rev.main,
            version: v.version,
            value: if with_value {
                self.value(value)?.into_owned()
            } else {
                Vec::new()
            },
            lease: v.lease,
        }))
    }

    /// Keeps the values of superseded versions in a history file in `dir` from now on,
    /// beginning with those the store holds.
    pub fn keep_history_in(&mut self, dir: &Path) -> Result<()> {
        self.keep_history_in_pieces(dir, super::history::PIECE)
    }

    /// `keep_history_in`, writing the file every `piece` bytes (1: at once, so that every
    /// read of an old value goes to the file — for tests).
    pub fn keep_history_in_pieces(&mut self, dir: &Path, piece: usize) -> Result<()> {
        let mut past = History::create(dir, piece)?;
        for versions in self.keys.values_mut() {
            spill_superseded(&mut past, versions);
        }
        self.past = Some(past);
        Ok(())
    }

    /// Every key of `KeyRange::new(start, end)` with its versions.
    fn span<'a>(
        &'a self,
        start: &[u8],
        end: &[u8],
    ) -> Box<dyn Iterator<Item = (&'a Vec<u8>, &'a Vec<Version>)> + 'a> {
        match KeyRange::new(start, end) {
            KeyRange::Key(key) => Box::new(self.keys.get_key_value(key).into_iter()),
            KeyRange::From(start) => Box::new(self.keys.range(start.to_vec()..)),
            KeyRange::Between(start, end) if end <= start => Box::new(std::iter::empty()),
            KeyRange::Between(start, end) => {
                Box::new(self.keys.range(start.to_vec()..end.to_vec()))
            }
        }
    }

    /// The live key-values of [start, end) as of `rev`, in key order.
    fn visible<'a>(
        &'a self,
        start: &'a [u8],
        end: &'a [u8],
        rev: i64,
    ) -> impl Iterator<Item = (&'a [u8], &'a Version)> + 'a {
        self.span(start, end).filter_map(move |(key, versions)| {
            let at = versions.partition_point(|v| v.rev.main <= rev);
            let v = versions[..at].last().filter(|v| v.value.is_some())?;
            Some((key.as_slice(), v))
        })
    }

    /// The events of [start, end) (a range as `visible` reads it) at revisions from `from`
    /// on, in revision order with `prev_kv` set, for a watch catching up from history: at
    /// least `min_events` of them if there are that many, then up to the end of that
    /// revision, so that a revision is never split. The caller has checked that `from` is
    /// not compacted away.
    pub fn history(
        &self,
        start: &[u8],
        end: &[u8],
        from: i64,
        min_events: usize,
    ) -> Result<Vec<Event>> {
        // Where each change is, by revision; only the first `min_events` (rounded up to a
        // whole revision) are copied.
        let mut found: Vec<(Revision, &[u8], &[Version], usize)> = Vec::new();
        for (key, versions) in self.span(start, end) {
            let at = versions.partition_point(|v| v.rev.main < from);
            found.extend(
                (at..versions.len()).map(|i| (versions[i].rev, &key[..], &versions[..], i)),
            );
        }
        found.sort_unstable_by_key(|(rev, ..)| *rev);
        let mut take = found.len().min(min_events.max(1));
        while take > 0 && take < found.len() && found[take].0.main == found[take - 1].0.main {
            take += 1;
        }
        found[..take]
            .iter()
            .map(|(rev, key, versions, i)| {
                let prev_kv = match i.checked_sub(1) {
                    Some(p) => self.kv(key, &versions[p])?,
                    None => None,
                };
                Ok(match self.kv(key, &versions[*i])? {
                    Some(kv) => Event {
                        r#type: EventType::Put as i32,
                        kv: Some(kv),
                        prev_kv,
                    },
                    None => Event {
                        r#type: EventType::Delete as i32,
                        kv: Some(KeyValue {
                            key: key.to_vec(),
                            mod_revision: rev.main,
                            ..Default::default()
                        }),
                        prev_kv,
                    },
                })
            })
            .collect()
    }

    /// A range as of `read_rev` (the store's current revision unless inside a write).
    fn range_at(&self, req: &RangeRequest, current: i64) -> Result<RangeResponse> {
        let rev = if req.revision <= 0 {
            current
        } else {
            req.revision
        };
        if rev > current {
            return Err(future());
        }
        if rev < self.compacted {
            return Err(compacted());
        }
        let mut count = 0i64;
        let mut kvs: Vec<KeyValue> = Vec::new();
        let max_mod = req.max_mod_revision;
        let min_mod = req.min_mod_revision;
        let max_create = req.max_create_revision;
        let min_create = req.min_create_revision;
        let order = match SortOrder::try_from(req.sort_order).unwrap_or(SortOrder::None) {
            // etcd sorts ascending by default when the target is not the key.
            SortOrder::None if req.sort_target != SortTarget::Key as i32 => SortOrder::Ascend,
            o => o,
        };
        // As etcd: unless the request names a sort order or a filter, only the first
        // `limit` + 1 keys in key order are fetched — and then sorted by a non-key target.
        let unfiltered = max_mod == 0 && min_mod == 0 && max_create == 0 && min_create == 0;
        let stop_at = if req.sort_order == SortOrder::None as i32 && unfiltered && req.limit > 0 {
            req.limit as usize
        } else {
            usize::MAX
        };
        let plain = order == SortOrder::None
            || (order == SortOrder::Ascend && req.sort_target == SortTarget::Key as i32);
        // A keys-only answer sorted by value needs the values to sort.
        let values = !req.keys_only || req.sort_target == SortTarget::Value as i32;
        for (key, v) in self.visible(&req.key, &req.range_end, rev) {
            count += 1;
            if req.count_only || kvs.len() > stop_at {
                continue;
            }
            let keep = (max_mod == 0 || v.rev.main <= max_mod)
                && (min_mod == 0 || v.rev.main >= min_mod)
                && (max_create == 0 || v.create_revision <= max_create)
                && (min_create == 0 || v.create_revision >= min_create);
            if keep {
                kvs.extend(self.kv_with(key, v, values)?);
            }
        }
        if !plain {
            let target = SortTarget::try_from(req.sort_target).unwrap_or(SortTarget::Key);
            let by = |a: &KeyValue, b: &KeyValue| -> Ordering {
                match target {
                    SortTarget::Key => a.key.cmp(&b.key),
                    SortTarget::Version => a.version.cmp(&b.version),
                    SortTarget::Create => a.create_revision.cmp(&b.create_revision),
                    SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
                    SortTarget::Value => a.value.cmp(&b.value),
                }
            };
            match order {
                SortOrder::Descend => kvs.sort_by(|a, b| by(b, a)),
                _ => kvs.sort_by(by),
            }
        }
        let mut more = false;
        if req.limit > 0 && kvs.len() > req.limit as usize {
            kvs.truncate(req.limit as usize);
            more = true;
        }
        if req.keys_only {
            kvs.iter_mut().for_each(|kv| kv.value.clear());
        }
        Ok(RangeResponse {
            header: header(current),
            kvs,
            more,
            count,
        })
    }

    /// Forgets every version superseded at `revision`: reads below it fail from now on.
    pub fn compact(&mut self, revision: i64) -> Result<CompactionResponse> {
        if revision <= self.compacted {
            return Err(compacted());
        }
        if revision > self.rev {
            return Err(future());
        }
        let mut freed = 0;
        self.keys.retain(|key, versions| {
            let at = versions.partition_point(|v| v.rev.main <= revision);
            // Keep the version live at `revision` (unless it is a tombstone) and later ones.
            let keep_from = match versions[..at].last() {
                Some(v) if v.value.is_some() => at - 1,
                _ => at,
            };
            freed += versions
                .drain(..keep_from)
                .map(|v| cost(key, &v))
                .sum::<u64>();
            // A key written often keeps room for all its old versions otherwise.
            if versions.capacity() > 2 * versions.len() {
                versions.shrink_to_fit();
            }
            !versions.is_empty()
        });
        self.size -= freed;
        self.compacted = revision;
        if let Some(past) = &mut self.past {
            past.compact(revision);
        }
        Ok(CompactionResponse {
            header: header(self.rev),
        })
    }

    /// A lease's granted TTL and keys; None if it does not exist.
    pub fn lease(&self, id: i64) -> Option<(i64, Vec<Vec<u8>>)> {
        let l = self.leases.get(&id)?;
        Some((l.ttl, l.keys.iter().cloned().collect()))
    }

    /// Every lease with its granted TTL.
    pub fn lease_ttls(&self) -> Vec<(i64, i64)> {
        self.leases.iter().map(|(id, l)| (*id, l.ttl)).collect()
    }

    /// Every lease id.
    pub fn lease_ids(&self) -> Vec<i64> {
        self.leases.keys().copied().collect()
    }
}

/// Moves the values of a key's superseded versions (all but its newest) to `past`.
fn spill_superseded(past: &mut History, versions: &mut [Version]) {
    for i in 1..versions.len() {
        let by = versions[i].rev.main;
        let v = &mut versions[i - 1];
        if let Some(Value::Mem(value)) = &v.value {
            v.value = Some(Value::Spilled(past.push(value, by)));
        }
    }
}

//! The node's state machine, with etcd's semantics: one main revision per write request (a
//! whole transaction included), sub revisions within it, every key's history of versions
//! and tombstones, ranges at any revision not yet compacted, transactions with nested
//! transactions, compaction, and lease bookkeeping (which keys a lease holds; its clock runs
//! elsewhere). Deterministic: the same commands in the same order give the same state and
//! the same answers on every member. Error texts are etcd's own, so clients see no
//! difference.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;

use super::history::{History, Spilled};
use super::MAX_TXN_OPS;
use crate::error::{Error, ErrorKind, Result};
use crate::pb::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::pb::etcdserverpb::range_request::{SortOrder, SortTarget};
use crate::pb::etcdserverpb::request_op::Request;
use crate::pb::etcdserverpb::response_op::Response;
use crate::pb::etcdserverpb::*;
use crate::pb::mvccpb::event::EventType;
use crate::pb::mvccpb::{Event, KeyValue};

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

/// The ranges a transaction deletes, for the duplicate-key check: a point, [start, end), or
/// everything from start on for an end of "\0" — as the delete itself reads it. (etcd 3.4
/// takes "\0" literally here, misses the overlap of a from-key delete with a later put of a
/// key it deleted, and then panics applying that txn; the node refuses it instead.)
#[derive(Default)]
struct Intervals(Vec<(Vec<u8>, Vec<u8>)>);

impl Intervals {
    fn hits(&self, key: &[u8]) -> bool {
        self.0.iter().any(|(start, end)| match end.as_slice() {
            [] => key == start.as_slice(),
            [0] => key >= start.as_slice(),
            end => key >= start.as_slice() && key < end,
        })
    }
}

/// etcd's `checkIntervals`: no key is written twice on any path through a transaction.
/// Returns the keys put and the ranges deleted at this level and below.
fn check_intervals(ops: &[RequestOp]) -> Result<(HashSet<Vec<u8>>, Intervals)> {
    let mut dels = Intervals::default();
    for op in ops {
        if let Some(Request::RequestDeleteRange(d)) = &op.request {
            dels.0.push((d.key.clone(), d.range_end.clone()));
        }
    }
    let mut puts: HashSet<Vec<u8>> = HashSet::new();
    for op in ops {
        let Some(Request::RequestTxn(t)) = &op.request else {
            continue;
        };
        let (puts_then, dels_then) = check_intervals(&t.success)?;
        let (puts_else, dels_else) = check_intervals(&t.failure)?;
        for k in &puts_then {
            if puts.contains(k) || dels.hits(k) {
                return Err(duplicate_key());
            }
            puts.insert(k.clone());
        }
        for k in puts_else {
            // then and else never both run: the same key in both is fine.
            if (puts.contains(&k) && !puts_then.contains(&k)) || dels.hits(&k) {
                return Err(duplicate_key());
            }
            puts.insert(k);
        }
        dels.0.extend(dels_then.0);
        dels.0.extend(dels_else.0);
    }
    for op in ops {
        if let Some(Request::RequestPut(p)) = &op.request {
            if puts.contains(&p.key) || dels.hits(&p.key) {
                return Err(duplicate_key());
            }
            puts.insert(p.key.clone());
        }
    }
    Ok((puts, dels))
}

/// etcd's request checks (`checkRangeRequest`, `checkPutRequest`, `checkTxnRequest`, ...),
/// made before anything is applied.
pub fn check_range(r: &RangeRequest) -> Result<()> {
    if r.key.is_empty() {
        return Err(empty_key());
    }
    if SortOrder::try_from(r.sort_order).is_err() || SortTarget::try_from(r.sort_target).is_err() {
        return Err(err(
            ErrorKind::InvalidArgument,
            "etcdserver: invalid sort option",
        ));
    }
    Ok(())
}

pub fn check_put(p: &PutRequest) -> Result<()> {
    if p.key.is_empty() {
        return Err(empty_key());
    }
    if p.ignore_value && !p.value.is_empty() {
        return Err(err(
            ErrorKind::InvalidArgument,
            "etcdserver: value is provided",
        ));
    }
    if p.ignore_lease && p.lease != 0 {
        return Err(err(
            ErrorKind::InvalidArgument,
            "etcdserver: lease is provided",
        ));
    }
    Ok(())
}

pub fn check_delete(d: &DeleteRangeRequest) -> Result<()> {
    if d.key.is_empty() {
        return Err(empty_key());
    }
    Ok(())
}

/// etcd's `checkTxnRequest` and then, once for the whole request, `checkIntervals`: the
/// per-operation errors of every level come before a duplicate key, as in etcd.
pub fn check_txn(t: &TxnRequest) -> Result<()> {
    check_txn_ops(t)?;
    check_intervals(&t.success)?;
    check_intervals(&t.failure)?;
    Ok(())
}

fn check_txn_ops(t: &TxnRequest) -> Result<()> {
    if t.compare.len().max(t.success.len()).max(t.failure.len()) > MAX_TXN_OPS {
        return Err(err(
            ErrorKind::TooManyOps,
            "etcdserver: too many operations in txn request",
        ));
    }
    if t.compare.iter().any(|c| c.key.is_empty()) {
        return Err(empty_key());
    }
    for op in t.success.iter().chain(&t.failure) {
        match &op.request {
            Some(Request::RequestRange(r)) => check_range(r)?,
            Some(Request::RequestPut(p)) => check_put(p)?,
            Some(Request::RequestDeleteRange(d)) => check_delete(d)?,
            Some(Request::RequestTxn(t)) => check_txn_ops(t)?,
            None => {}
        }
    }
    Ok(())
}

fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        revision,
        ..Default::default()
    })
}

/// What a write changed, so that a request that fails half-way leaves nothing behind.
enum Undo {
    Version(Vec<u8>),
    LeaseAttached(i64, Vec<u8>),
    LeaseDetached(i64, Vec<u8>),
}

/// The writes of one request: one main revision, a sub revision per write, the events.
/// Dropped without `commit`, it undoes them.
struct Write<'a> {
    store: &'a mut Mvcc,
    main: i64,
    sub: i64,
    events: Vec<Event>,
    undo: Vec<Undo>,
}

impl Drop for Write<'_> {
    fn drop(&mut self) {
        for undo in self.undo.drain(..).rev() {
            match undo {
                Undo::Version(key) => {
                    if let Some(versions) = self.store.keys.get_mut(&key) {
                        if let Some(v) = versions.pop() {
                            self.store.size -= cost(&key, &v);
                        }
                        if versions.is_empty() {
                            self.store.keys.remove(&key);
                        }
                    }
                }
                Undo::LeaseAttached(lease, key) => {
                    if let Some(l) = self.store.leases.get_mut(&lease) {
                        l.keys.remove(&key);
                    }
                }
                Undo::LeaseDetached(lease, key) => {
                    if let Some(l) = self.store.leases.get_mut(&lease) {
                        l.keys.insert(key);
                    }
                }
            }
        }
    }
}

impl Write<'_> {
    /// The revision reads inside this request see: its own writes included.
    fn read_rev(&self) -> i64 {
        if self.sub > 0 {
            self.main
        } else {
            self.store.rev
        }
    }

    fn next(&mut self) -> Revision {
        let rev = Revision {
            main: self.main,
            sub: self.sub,
        };
        self.sub += 1;
        rev
    }

    fn put(&mut self, req: PutRequest) -> Result<PutResponse> {
        let prev = self.store.latest(&req.key)?;
        if (req.ignore_value || req.ignore_lease) && prev.is_none() {
            return Err(err(ErrorKind::NotFound, "etcdserver: key not found"));
        }
        if req.lease != 0 && !self.store.leases.contains_key(&req.lease) {
            return Err(lease_not_found());
        }
        let rev = self.next();
        let (value, lease) = match &prev {
            Some(p) => (
                if req.ignore_value {
                    p.value.clone()
                } else {
                    req.value
                },
                if req.ignore_lease { p.lease } else { req.lease },
            ),
            None => (req.value, req.lease),
        };
        let kv = KeyValue {
            key: req.key.clone(),
            create_revision: prev.as_ref().map_or(rev.main, |p| p.create_revision),
            mod_revision: rev.main,
            version: prev.as_ref().map_or(1, |p| p.version + 1),
            value,
            lease,
        };
        if let Some(old) = prev.as_ref().filter(|p| p.lease != lease && p.lease != 0) {
            self.detach(&old.key, old.lease);
        }
        if lease != 0 {
            if let Some(l) = self.store.leases.get_mut(&lease) {
                if l.keys.insert(req.key.clone()) {
                    self.undo.push(Undo::LeaseAttached(lease, req.key.clone()));
                }
            }
        }
        self.undo.push(Undo::Version(req.key.clone()));
        let version = Version {
            rev,
            create_revision: kv.create_revision,
            version: kv.version,
            lease,
            value: Some(Value::Mem(kv.value.as_slice().into())),
        };
        self.store.size += cost(&req.key, &version);
        let versions = self.store.keys.entry(req.key).or_default();
        // Most keys keep a few versions between compactions: room for exactly those (a
        // doubling Vec holds 4 for 2 or 3), doubling only for keys written often.
        if versions.len() < 8 {
            versions.reserve_exact(1);
        }
        versions.push(version);
        self.events.push(Event {
            r#type: EventType::Put as i32,
            kv: Some(kv),
            prev_kv: prev.clone(),
        });
        Ok(PutResponse {
            header: header(self.main),
            prev_kv: if req.prev_kv { prev } else { None },
        })
    }

    fn delete_range(&mut self, req: DeleteRangeRequest) -> Result<DeleteRangeResponse> {
        let doomed: Vec<KeyValue> = self
            .store
            .visible(&req.key, &req.range_end, self.read_rev())
            .filter_map(|(key, v)| self.store.kv(key, v).transpose())
            .collect::<Result<_>>()?;
        for prev in &doomed {
            let rev = self.next();
            if prev.lease != 0 {
                self.detach(&prev.key, prev.lease);
            }
            if let Some(versions) = self.store.keys.get_mut(&prev.key) {
                let version = Version::tombstone(rev);
                self.store.size += cost(&prev.key, &version);
                versions.push(version);
                self.undo.push(Undo::Version(prev.key.clone()));
            }
            self.events.push(Event {
                r#type: EventType::Delete as i32,
                kv: Some(KeyValue {
                    key: prev.key.clone(),
                    mod_revision: rev.main,
                    ..Default::default()
                }),
                prev_kv: Some(prev.clone()),
            });
        }
        Ok(DeleteRangeResponse {
            header: header(self.read_rev()),
            deleted: doomed.len() as i64,
            prev_kvs: if req.prev_kv { doomed } else { Vec::new() },
        })
    }

    /// Applies a transaction whose branches were decided beforehand (`Mvcc::txn_path`).
    fn txn(&mut self, req: TxnRequest, path: &mut std::vec::IntoIter<bool>) -> Result<TxnResponse> {
        let succeeded = path.next().unwrap_or(false);
        let ops = if succeeded { req.success } else { req.failure };
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            let response = match op.request {
                Some(Request::RequestRange(r)) => {
                    Response::ResponseRange(self.store.range_at(&r, self.read_rev())?)
                }
                Some(Request::RequestPut(p)) => Response::ResponsePut(self.put(p)?),
                Some(Request::RequestDeleteRange(d)) => {
                    Response::ResponseDeleteRange(self.delete_range(d)?)
                }
                Some(Request::RequestTxn(t)) => Response::ResponseTxn(self.txn(t, path)?),
                None => continue,
            };
            responses.push(ResponseOp {
                response: Some(response),
            });
        }
        // etcd leaves a nested transaction's header empty; the outer one gets the revision.
        Ok(TxnResponse {
            header: Some(ResponseHeader::default()),
            succeeded,
            responses,
        })
    }

    fn detach(&mut self, key: &[u8], lease: i64) {
        if let Some(l) = self.store.leases.get_mut(&lease) {
            if l.keys.remove(key) {
                self.undo.push(Undo::LeaseDetached(lease, key.to_vec()));
            }
        }
    }

    /// Makes the request's writes the store's current revision.
    fn commit(mut self) -> Vec<Event> {
        if self.sub > 0 {
            self.store.rev = self.main;
        }
        // The values this request superseded leave memory.
        if let Some(past) = &mut self.store.past {
            for undo in &self.undo {
                let Undo::Version(key) = undo else { continue };
                let Some(versions) = self.store.keys.get_mut(key) else {
                    continue;
                };
                if let [.., old, _] = &mut versions[..] {
                    if let Some(Value::Mem(value)) = &old.value {
                        old.value = Some(Value::Spilled(past.push(value, self.main)));
                    }
                }
            }
        }
        self.undo.clear();
        std::mem::take(&mut self.events)
    }
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

    /// The revision of the last write.
    pub fn revision(&self) -> i64 {
        self.rev
    }

    /// The revision history was compacted at (0: none).
    /// What the store holds, as the quota counts it.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// etcd's HashKV: a checksum of every version at or below `revision` (0: the current
    /// one) that compaction kept, in key and revision order, with the compaction revision.
    /// Members that applied the same log agree; one that differs has diverged.
    pub fn hash_kv(&self, revision: i64) -> Result<(u32, i64)> {
        let rev = if revision == 0 { self.rev } else { revision };
        if rev > self.rev {
            return Err(future());
        }
        if revision != 0 && revision < self.compacted {
            return Err(compacted());
        }
        let mut h = crc32fast::Hasher::new();
        for (key, versions) in &self.keys {
            for v in versions.iter().take_while(|v| v.rev.main <= rev) {
                h.update(key);
                h.update(&v.rev.main.to_be_bytes());
                h.update(&v.rev.sub.to_be_bytes());
                match &v.value {
                    Some(value) => {
                        h.update(&v.create_revision.to_be_bytes());
                        h.update(&v.version.to_be_bytes());
                        h.update(&v.lease.to_be_bytes());
                        h.update(&self.value(value)?);
                    }
                    None => h.update(b"tombstone"),
                }
            }
        }
        Ok((h.finalize(), self.compacted.max(0)))
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

    fn write(&mut self) -> Write<'_> {
        let main = self.rev + 1;
        Write {
            store: self,
            main,
            sub: 0,
            events: Vec::new(),
            undo: Vec::new(),
        }
    }

    fn latest(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        match self.keys.get(key).and_then(|v| v.last()) {
            Some(v) => self.kv(key, v),
            None => Ok(None),
        }
    }

    /// A value's bytes, read back from the history file if it is there.
    fn value<'a>(&self, value: &'a Value) -> Result<Cow<'a, [u8]>> {
        match (value, &self.past) {
            (Value::Mem(b), _) => Ok(Cow::Borrowed(b)),
            (Value::Spilled(at), Some(past)) => past.read(*at).map(Cow::Owned),
            (Value::Spilled(_), None) => Err(err(
                ErrorKind::Internal,
                "a value is in a history file the store no longer has",
            )),
        }
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

    /// Every key of [start, end) with its versions: one key for an empty `end`, every key
    /// from `start` on for "\0".
    fn span<'a>(
        &'a self,
        start: &[u8],
        end: &[u8],
    ) -> Box<dyn Iterator<Item = (&'a Vec<u8>, &'a Vec<Version>)> + 'a> {
        match end {
            [] => Box::new(self.keys.get_key_value(start).into_iter()),
            [0] => Box::new(self.keys.range(start.to_vec()..)),
            end if end <= start => Box::new(std::iter::empty()),
            end => Box::new(self.keys.range(start.to_vec()..end.to_vec())),
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

    /// Reads keys (etcd's Range). The header carries only the revision.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse> {
        check_range(req)?;
        self.range_at(req, self.rev)
    }

    /// etcd's `applyCompare`: every key of the compare's range must satisfy it; a missing
    /// key compares as zero values, except that a value compare on it never holds.
    fn compare(&self, c: &Compare, rev: i64) -> Result<bool> {
        let mut any = false;
        for (_, v) in self.visible(&c.key, &c.range_end, rev) {
            any = true;
            let value = match &v.value {
                Some(value) => self.value(value)?,
                None => Cow::Borrowed(&[][..]),
            };
            if !compare_kv(c, Some((v, &value))) {
                return Ok(false);
            }
        }
        if !any {
            if c.target == CompareTarget::Value as i32 {
                return Ok(false);
            }
            return Ok(compare_kv(c, None));
        }
        Ok(true)
    }

    /// etcd's `compareToPath`: the branch every transaction takes — the outer one, then its
    /// nested ones in order — decided on the state before any of it is applied.
    fn txn_path(&self, t: &TxnRequest, rev: i64, path: &mut Vec<bool>) -> Result<()> {
        let mut ok = true;
        for c in &t.compare {
            if !self.compare(c, rev)? {
                ok = false;
                break;
            }
        }
        path.push(ok);
        for op in if ok { &t.success } else { &t.failure } {
            if let Some(Request::RequestTxn(nested)) = &op.request {
                self.txn_path(nested, rev, path)?;
            }
        }
        Ok(())
    }

    /// etcd's `checkRequestPut` and `checkRequestRange` along the path: leases exist, keys
    /// for ignore_* exist, ranges read revisions that exist.
    fn check_puts(
        &self,
        t: &TxnRequest,
        rev: i64,
        path: &mut std::slice::Iter<'_, bool>,
    ) -> Result<()> {
        let ok = path.next().copied().unwrap_or(false);
        for op in if ok { &t.success } else { &t.failure } {
            match &op.request {
                Some(Request::RequestPut(p)) => {
                    if p.lease != 0 && !self.leases.contains_key(&p.lease) {
                        return Err(lease_not_found());
                    }
                    if (p.ignore_value || p.ignore_lease)
                        && self.visible(&p.key, &[], rev).next().is_none()
                    {
                        return Err(err(ErrorKind::NotFound, "etcdserver: key not found"));
                    }
                }
                // etcd's `checkRequestRange`, against the state before the txn.
                Some(Request::RequestRange(r)) if r.revision > 0 => {
                    if r.revision > rev {
                        return Err(future());
                    }
                    if r.revision < self.compacted {
                        return Err(compacted());
                    }
                }
                Some(Request::RequestTxn(nested)) => self.check_puts(nested, rev, path)?,
                _ => {}
            }
        }
        Ok(())
    }

    /// Writes one key (etcd's Put); the events are for watchers.
    pub fn put(&mut self, req: PutRequest) -> Result<(PutResponse, Vec<Event>)> {
        check_put(&req)?;
        let mut w = self.write();
        let resp = w.put(req)?;
        Ok((resp, w.commit()))
    }

    /// Deletes keys (etcd's DeleteRange): a delete that finds nothing writes no revision.
    pub fn delete_range(
        &mut self,
        req: DeleteRangeRequest,
    ) -> Result<(DeleteRangeResponse, Vec<Event>)> {
        check_delete(&req)?;
        let mut w = self.write();
        let resp = w.delete_range(req)?;
        Ok((resp, w.commit()))
    }

    /// A transaction: all of it under one revision, or (on an error) none of it.
    pub fn txn(&mut self, req: TxnRequest) -> Result<(TxnResponse, Vec<Event>)> {
        check_txn(&req)?;
        let mut path = Vec::new();
        self.txn_path(&req, self.rev, &mut path)?;
        // Checked before anything is applied, so a refused txn changes nothing.
        self.check_puts(&req, self.rev, &mut path.iter())?;
        let mut w = self.write();
        let mut resp = w.txn(req, &mut path.into_iter())?;
        let events = w.commit();
        resp.header = header(self.rev);
        Ok((resp, events))
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

    /// Creates lease `id` (chosen by the proposer, non-zero) with `ttl` seconds, raised to
    /// `min_ttl`.
    pub fn lease_grant(&mut self, id: i64, ttl: i64, min_ttl: i64) -> Result<LeaseGrantResponse> {
        if id <= 0 {
            return Err(Error::invalid("lease id must be positive"));
        }
        if ttl > MAX_LEASE_TTL {
            return Err(err(
                ErrorKind::InvalidArgument,
                "etcdserver: too large lease TTL",
            ));
        }
        if self.leases.contains_key(&id) {
            return Err(err(
                ErrorKind::FailedPrecondition,
                "etcdserver: lease already exists",
            ));
        }
        let ttl = ttl.max(min_ttl);
        self.leases.insert(
            id,
            LeaseEntry {
                ttl,
                keys: BTreeSet::new(),
            },
        );
        Ok(LeaseGrantResponse {
            header: header(self.rev),
            id,
            ttl,
            error: String::new(),
        })
    }

    /// Ends lease `id`: its keys are deleted under one revision.
    pub fn lease_revoke(&mut self, id: i64) -> Result<(LeaseRevokeResponse, Vec<Event>)> {
        let lease = self.leases.remove(&id).ok_or_else(lease_not_found)?;
        let mut w = self.write();
        for key in lease.keys {
            w.delete_range(DeleteRangeRequest {
                key,
                ..Default::default()
            })?;
        }
        let events = w.commit();
        Ok((
            LeaseRevokeResponse {
                header: header(self.rev),
            },
            events,
        ))
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

/// The snapshot format's version: the first byte of `Mvcc::encode`. Version 2 added the
/// alarms at the end, version 3 the members' attributes and removed members after them;
/// older snapshots are read as having none.
const SNAPSHOT_FORMAT: u8 = 3;

impl Mvcc {
    /// The whole store as bytes (a Raft snapshot): versioned, self-contained. The node
    /// streams it (`encode_to`); the tests compare bytes.
    #[cfg(test)]
    pub fn encode(&self) -> Vec<u8> {
        // About the size the quota counts (key + value + 64 per version): one allocation.
        let mut out = Vec::with_capacity(self.size as usize + 1024);
        // Writing into a Vec cannot fail.
        let _ = self.encode_to(&mut out);
        out
    }

    /// `encode`, written to `out` as it goes: a snapshot file is streamed, never held whole.
    pub fn encode_to(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        use prost::Message;
        fn put(out: &mut impl std::io::Write, v: u64) -> std::io::Result<()> {
            out.write_all(&v.to_be_bytes())
        }
        fn bytes(out: &mut impl std::io::Write, b: &[u8]) -> std::io::Result<()> {
            put(out, b.len() as u64)?;
            out.write_all(b)
        }
        out.write_all(&[SNAPSHOT_FORMAT])?;
        put(out, self.rev as u64)?;
        put(out, self.compacted as u64)?;
        put(out, self.leases.len() as u64)?;
        for (id, l) in &self.leases {
            put(out, *id as u64)?;
            put(out, l.ttl as u64)?;
            put(out, l.keys.len() as u64)?;
            for k in &l.keys {
                bytes(out, k)?;
            }
        }
        put(out, self.keys.len() as u64)?;
        let mut kv_bytes = Vec::new();
        for (key, versions) in &self.keys {
            bytes(out, key)?;
            put(out, versions.len() as u64)?;
            for v in versions {
                put(out, v.rev.main as u64)?;
                put(out, v.rev.sub as u64)?;
                match self
                    .kv(key, v)
                    .map_err(|e| std::io::Error::other(e.message))?
                {
                    Some(kv) => {
                        out.write_all(&[1])?;
                        kv_bytes.clear();
                        kv.encode(&mut kv_bytes).map_err(std::io::Error::other)?;
                        bytes(out, &kv_bytes)?;
                    }
                    None => out.write_all(&[0])?,
                }
            }
        }
        put(out, self.alarms.len() as u64)?;
        for (member, alarm) in &self.alarms {
            put(out, *member)?;
            put(out, *alarm as u64)?;
        }
        put(out, self.attributes.len() as u64)?;
        for (id, a) in &self.attributes {
            put(out, *id)?;
            bytes(out, a.name.as_bytes())?;
            put(out, a.client_urls.len() as u64)?;
            for url in &a.client_urls {
                bytes(out, url.as_bytes())?;
            }
        }
        put(out, self.removed.len() as u64)?;
        for id in &self.removed {
            put(out, *id)?;
        }
        Ok(())
    }

    /// A store from `encode`'s bytes, all in memory (the node decodes with `decode_from`).
    #[cfg(test)]
    pub fn decode(data: &[u8]) -> Result<Mvcc> {
        Mvcc::decode_from(data, None)
    }

    /// A store from `encode`'s bytes, read as they come, its superseded values going to a
    /// new history file in `history.0` (written every `history.1` bytes) key by key as they
    /// are read: neither the snapshot nor the store's whole history is ever in memory.
    pub fn decode_from(data: impl std::io::Read, history: Option<(&Path, usize)>) -> Result<Mvcc> {
        use prost::Message;
        let mut r = Reader { data };
        let format = r.byte()?;
        if !(1..=SNAPSHOT_FORMAT).contains(&format) {
            return Err(Error::new(
                ErrorKind::DataLoss,
                "the snapshot has an unknown format version",
            ));
        }
        let mut m = Mvcc {
            rev: r.num()? as i64,
            compacted: r.num()? as i64,
            past: match history {
                Some((dir, piece)) => Some(History::create(dir, piece)?),
                None => None,
            },
            ..Default::default()
        };
        for _ in 0..r.num()? {
            let id = r.num()? as i64;
            let ttl = r.num()? as i64;
            let mut keys = BTreeSet::new();
            for _ in 0..r.num()? {
                keys.insert(r.bytes()?);
            }
            m.leases.insert(id, LeaseEntry { ttl, keys });
        }
        for _ in 0..r.num()? {
            let key = r.bytes()?;
            let count = r.num()? as usize;
            let mut versions = Vec::with_capacity(count.min(1 << 16));
            for _ in 0..count {
                let rev = Revision {
                    main: r.num()? as i64,
                    sub: r.num()? as i64,
                };
                let version = match r.byte()? {
                    1 => Version::from_kv(
                        rev,
                        KeyValue::decode(&r.bytes()?[..]).map_err(|_| bad_snapshot())?,
                    ),
                    _ => Version::tombstone(rev),
                };
                m.size += cost(&key, &version);
                versions.push(version);
            }
            if let Some(past) = &mut m.past {
                spill_superseded(past, &mut versions);
            }
            m.keys.insert(key, versions);
        }
        if format >= 2 {
            for _ in 0..r.num()? {
                m.alarms.insert((r.num()?, r.num()? as i32));
            }
        }
        if format >= 3 {
            let text = |b: Vec<u8>| String::from_utf8(b).map_err(|_| bad_snapshot());
            for _ in 0..r.num()? {
                let id = r.num()?;
                let name = text(r.bytes()?)?;
                let mut client_urls = Vec::new();
                for _ in 0..r.num()? {
                    client_urls.push(text(r.bytes()?)?);
                }
                m.attributes.insert(id, Attributes { name, client_urls });
            }
            for _ in 0..r.num()? {
                m.removed.insert(r.num()?);
            }
        }
        Ok(m)
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

fn bad_snapshot() -> Error {
    Error::new(ErrorKind::DataLoss, "the snapshot is malformed")
}

/// Reads `Mvcc::encode`'s format from a stream.
struct Reader<R> {
    data: R,
}

impl<R: std::io::Read> Reader<R> {
    fn fill(&mut self, buf: &mut [u8]) -> Result<()> {
        self.data.read_exact(buf).map_err(|_| bad_snapshot())
    }

    fn byte(&mut self) -> Result<u8> {
        let mut b = [0; 1];
        self.fill(&mut b)?;
        Ok(b[0])
    }

    fn num(&mut self) -> Result<u64> {
        let mut b = [0; 8];
        self.fill(&mut b)?;
        Ok(u64::from_be_bytes(b))
    }

    /// A length-prefixed byte string; a length past the end fails without allocating it.
    fn bytes(&mut self) -> Result<Vec<u8>> {
        use std::io::Read;
        let n = self.num()?;
        let mut out = Vec::new();
        (&mut self.data)
            .take(n)
            .read_to_end(&mut out)
            .map_err(|_| bad_snapshot())?;
        if out.len() as u64 != n {
            return Err(bad_snapshot());
        }
        Ok(out)
    }
}

/// A compare against one live version, or against a missing key's zero values (None).
fn compare_kv(c: &Compare, v: Option<(&Version, &[u8])>) -> bool {
    let field = |f: fn(&Version) -> i64| v.map_or(0, |(v, _)| f(v));
    let ord = match CompareTarget::try_from(c.target).unwrap_or(CompareTarget::Version) {
        CompareTarget::Value => {
            let want: &[u8] = match &c.target_union {
                Some(TargetUnion::Value(v)) => v,
                _ => &[],
            };
            let value: &[u8] = v.map_or(&[], |(_, value)| value);
            value.cmp(want)
        }
        CompareTarget::Create => field(|v| v.create_revision).cmp(&int_target(c)),
        CompareTarget::Mod => field(|v| v.rev.main).cmp(&int_target(c)),
        CompareTarget::Version => field(|v| v.version).cmp(&int_target(c)),
        CompareTarget::Lease => field(|v| v.lease).cmp(&int_target(c)),
    };
    match CompareResult::try_from(c.result).unwrap_or(CompareResult::Equal) {
        CompareResult::Equal => ord == Ordering::Equal,
        CompareResult::NotEqual => ord != Ordering::Equal,
        CompareResult::Greater => ord == Ordering::Greater,
        CompareResult::Less => ord == Ordering::Less,
    }
}

/// The compare's number for its target; 0 when the union holds another target's field (as
/// etcd reads it).
fn int_target(c: &Compare) -> i64 {
    match (
        CompareTarget::try_from(c.target).unwrap_or(CompareTarget::Version),
        &c.target_union,
    ) {
        (CompareTarget::Create, Some(TargetUnion::CreateRevision(v)))
        | (CompareTarget::Mod, Some(TargetUnion::ModRevision(v)))
        | (CompareTarget::Version, Some(TargetUnion::Version(v)))
        | (CompareTarget::Lease, Some(TargetUnion::Lease(v))) => *v,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(m: &mut Mvcc, k: &str, v: &str) -> i64 {
        m.put(PutRequest {
            key: k.into(),
            value: v.into(),
            ..Default::default()
        })
        .unwrap()
        .0
        .header
        .unwrap()
        .revision
    }

    fn get_at(m: &Mvcc, k: &str, rev: i64) -> Result<Vec<KeyValue>> {
        m.range(&RangeRequest {
            key: k.into(),
            revision: rev,
            ..Default::default()
        })
        .map(|r| r.kvs)
    }

    #[test]
    fn history_tombstones_and_generations() {
        let mut m = Mvcc::new();
        let r1 = put(&mut m, "a", "1");
        let r2 = put(&mut m, "a", "2");
        let (d, events) = m
            .delete_range(DeleteRangeRequest {
                key: "a".into(),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(d.deleted, 1);
        assert_eq!(events[0].r#type, EventType::Delete as i32);
        let r3 = m.revision();
        let r4 = put(&mut m, "a", "3");
        assert_eq!(
            (r1, r2, r3, r4),
            (2, 3, 4, 5),
            "etcd's first write is revision 2"
        );
        let kv = &get_at(&m, "a", 0).unwrap()[0];
        assert_eq!((kv.create_revision, kv.version), (5, 1), "a new generation");
        assert_eq!(get_at(&m, "a", 3).unwrap()[0].version, 2);
        assert!(get_at(&m, "a", 4).unwrap().is_empty(), "deleted at 4");
        // A delete of nothing writes no revision.
        m.delete_range(DeleteRangeRequest {
            key: "zz".into(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(m.revision(), 5);
        m.compact(4).unwrap();
        assert_eq!(get_at(&m, "a", 3).unwrap_err().kind, ErrorKind::Compacted);
        assert!(get_at(&m, "a", 4).unwrap().is_empty());
        assert_eq!(
            get_at(&m, "a", 9).unwrap_err().kind,
            ErrorKind::FutureRevision
        );
        assert_eq!(m.compact(4).unwrap_err().kind, ErrorKind::Compacted);
    }

    #[test]
    fn revoke_deletes_the_leases_keys_in_one_revision() {
        let mut m = Mvcc::new();
        m.lease_grant(7, 1, 2).unwrap();
        for k in ["x", "y"] {
            m.put(PutRequest {
                key: k.into(),
                lease: 7,
                ..Default::default()
            })
            .unwrap();
        }
        assert_eq!(m.lease(7).unwrap(), (2, vec![b"x".to_vec(), b"y".to_vec()]));
        let (_, events) = m.lease_revoke(7).unwrap();
        assert_eq!(events.len(), 2);
        assert!(events
            .iter()
            .all(|e| e.kv.as_ref().unwrap().mod_revision == 4));
        assert_eq!(m.revision(), 4);
        assert!(m.lease(7).is_none());
        assert_eq!(m.lease_revoke(7).unwrap_err().kind, ErrorKind::NotFound);
    }

    #[test]
    fn a_from_key_delete_then_a_put_of_a_deleted_key_is_refused_whole() {
        let mut m = Mvcc::new();
        put(&mut m, "/d/b", "1");
        let before = m.revision();
        let txn = TxnRequest {
            success: vec![
                RequestOp {
                    request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                        key: "/d/a".into(),
                        range_end: vec![0],
                        ..Default::default()
                    })),
                },
                RequestOp {
                    request: Some(Request::RequestPut(PutRequest {
                        key: "/d/b".into(),
                        ignore_value: true,
                        ..Default::default()
                    })),
                },
            ],
            ..Default::default()
        };
        let e = m.txn(txn).unwrap_err();
        assert_eq!(e.message, "etcdserver: duplicate key given in txn request");
        assert_eq!(m.revision(), before);
        assert_eq!(get_at(&m, "/d/b", 0).unwrap()[0].value, b"1");
    }

    #[test]
    fn an_unfinished_write_leaves_nothing_behind() {
        let mut m = Mvcc::new();
        m.lease_grant(9, 60, 2).unwrap();
        put(&mut m, "k", "old");
        let snapshot = format!("{m:?}");
        {
            let mut w = m.write();
            w.put(PutRequest {
                key: "k".into(),
                value: "new".into(),
                lease: 9,
                ..Default::default()
            })
            .unwrap();
            w.put(PutRequest {
                key: "fresh".into(),
                ..Default::default()
            })
            .unwrap();
            w.delete_range(DeleteRangeRequest {
                key: "k".into(),
                ..Default::default()
            })
            .unwrap();
            // Dropped without commit, as on an error half-way through a request.
        }
        assert_eq!(format!("{m:?}"), snapshot);
    }

    #[test]
    fn a_snapshot_restores_the_same_store() {
        let mut m = Mvcc::new();
        m.lease_grant(3, 60, 2).unwrap();
        put(&mut m, "a", "1");
        m.put(PutRequest {
            key: "b".into(),
            value: "2".into(),
            lease: 3,
            ..Default::default()
        })
        .unwrap();
        m.delete_range(DeleteRangeRequest {
            key: "a".into(),
            ..Default::default()
        })
        .unwrap();
        put(&mut m, "a", "3");
        m.compact(3).unwrap();
        m.set_alarm(7, ALARM_NOSPACE, true);
        m.set_attributes(
            7,
            Attributes {
                name: "n7".into(),
                client_urls: vec!["http://127.0.0.1:1".into(), "http://[::1]:2".into()],
            },
        );
        m.members_changed(&[7, 8], &[7]);
        assert!(m.is_removed(8) && !m.is_removed(7));
        let back = Mvcc::decode(&m.encode()).unwrap();
        assert_eq!(format!("{back:?}"), format!("{m:?}"));
        assert_eq!(
            Mvcc::decode(&m.encode()[..10]).unwrap_err().kind,
            ErrorKind::DataLoss
        );
    }

    /// Every answer of `a` and `b` that reads history: ranges at each readable revision,
    /// watch history from each, hashes, the snapshot bytes.
    fn same_history(a: &Mvcc, b: &Mvcc) {
        assert_eq!(a.revision(), b.revision());
        for rev in a.oldest_readable().max(1)..=a.revision() {
            let all = RangeRequest {
                key: vec![0],
                range_end: vec![0],
                revision: rev,
                ..Default::default()
            };
            assert_eq!(
                a.range(&all).unwrap(),
                b.range(&all).unwrap(),
                "range at {rev}"
            );
            let (ha, hb) = (a.history(&[0], &[0], rev, 7), b.history(&[0], &[0], rev, 7));
            assert_eq!(ha.unwrap(), hb.unwrap(), "history from {rev}");
            assert_eq!(
                a.hash_kv(rev).unwrap(),
                b.hash_kv(rev).unwrap(),
                "hash at {rev}"
            );
        }
        assert_eq!(a.encode(), b.encode());
    }

    /// A store that keeps superseded values in its history file answers as one that keeps
    /// them in memory: writes, compares, past ranges, watch history, hashes and snapshots,
    /// across compactions (which free the file's prefix) and after a reload.
    #[test]
    fn a_store_with_a_history_file_answers_as_one_without() {
        let dir = tempfile::tempdir().unwrap();
        let mut mem = Mvcc::new();
        let mut file = Mvcc::new();
        // A piece of one byte: every superseded value is in the file at once.
        file.keep_history_in_pieces(dir.path(), 1).unwrap();
        let mut seed = 7u64;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize
        };
        for step in 0..2000 {
            let key = format!("k{}", next() % 30).into_bytes();
            let value = format!("{}{step}", "v".repeat(next() % 40)).into_bytes();
            match next() % 10 {
                0 => {
                    let d = DeleteRangeRequest {
                        key: key.clone(),
                        prev_kv: true,
                        ..Default::default()
                    };
                    let (a, b) = (mem.delete_range(d.clone()), file.delete_range(d));
                    assert_eq!(a.unwrap(), b.unwrap(), "step {step}");
                }
                1 if step % 200 == 1 => {
                    let at = mem.revision() - (next() % 40) as i64;
                    if at > mem.compact_revision() {
                        let before = file.past.as_ref().map(History::bytes);
                        mem.compact(at).unwrap();
                        file.compact(at).unwrap();
                        let after = file.past.as_ref().map(History::bytes);
                        assert!(after <= before, "a compaction frees the file's prefix");
                    }
                }
                2 => {
                    // A compare on the value the key holds (or held) now.
                    let t = TxnRequest {
                        compare: vec![Compare {
                            key: key.clone(),
                            target: CompareTarget::Value as i32,
                            result: CompareResult::Greater as i32,
                            target_union: Some(TargetUnion::Value(b"v".to_vec())),
                            ..Default::default()
                        }],
                        success: vec![RequestOp {
                            request: Some(Request::RequestPut(PutRequest {
                                key: key.clone(),
                                value: value.clone(),
                                prev_kv: true,
                                ..Default::default()
                            })),
                        }],
                        ..Default::default()
                    };
                    let (a, b) = (mem.txn(t.clone()), file.txn(t));
                    assert_eq!(a.unwrap(), b.unwrap(), "step {step}");
                }
                _ => {
                    let p = PutRequest {
                        key,
                        value,
                        prev_kv: true,
                        ..Default::default()
                    };
                    let (a, b) = (mem.put(p.clone()), file.put(p));
                    assert_eq!(a.unwrap(), b.unwrap(), "step {step}");
                }
            }
        }
        assert!(file.compact_revision() > 0, "the run compacted");
        same_history(&mem, &file);
        // Loaded from its snapshot, a store spills its old values again, in order.
        let encoded = file.encode();
        let mut back = Mvcc::decode_from(&encoded[..], Some((dir.path(), 1))).unwrap();
        same_history(&mem, &back);
        let at = mem.revision() - 5;
        mem.compact(at).unwrap();
        back.compact(at).unwrap();
        same_history(&mem, &back);
    }
}

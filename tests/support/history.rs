//! A history checker for the fault tests, in the style of Porcupine / Knossos.
//!
//! Clients record each operation's invocation and completion (a request whose outcome is
//! unknown — a timeout, a connection lost mid-call — has no completion: it may or may not
//! have happened). Three checks:
//! - `linearizable`: per key, a Wing-Gong search (with Lowe's cache of visited
//!   (linearized set, state) pairs) for an order of the operations that respects real time
//!   and the register's semantics; operations of unknown outcome may be left out.
//! - `revisions_in_real_time`: an operation that began after another one completed sees at
//!   least its revision (greater, if it writes) — etcd's header revision is global, so this
//!   catches a stale read on any key, and per-client monotonicity with it.
//! - `watch_log`: etcd's watch guarantees for watchers of the whole key space from revision
//!   1: ordered, unique, atomic per revision, no gap (every acknowledged write is there, at
//!   its revision), `prev_kv` right, every watcher the same, the replay equal to the store.

use std::collections::{BTreeMap, HashMap, HashSet};

/// What a client asked for on one key. Values are unique numbers, so a value names the
/// write that made it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    Put(u64),
    Delete,
    Get,
    /// A transaction: if the key holds `from`, put `to`; else read it.
    Cas {
        from: u64,
        to: u64,
    },
}

/// What it answered; `Unknown` when it never said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    Done,
    Deleted(bool),
    Value(Option<u64>),
    Swapped(bool, Option<u64>),
    Unknown,
}

#[derive(Clone, Debug)]
pub struct Op {
    pub client: usize,
    pub key: String,
    pub call: Call,
    pub answer: Answer,
    /// Nanoseconds on one monotonic clock.
    pub invoked: u64,
    /// `None` for an unknown outcome.
    pub completed: Option<u64>,
    /// The response header's revision.
    pub revision: Option<i64>,
}

impl Op {
    /// Whether it changed the store (as far as its answer tells).
    pub fn writes(&self) -> bool {
        match (self.call, self.answer) {
            (Call::Put(_), _) => true,
            (Call::Delete, Answer::Deleted(d)) => d,
            (Call::Cas { .. }, Answer::Swapped(s, _)) => s,
            _ => false,
        }
    }
}

/// The register's step: the state after `op`, or `None` if `op` could not have answered
/// what it did from `state`.
fn step(state: Option<u64>, call: Call, answer: Answer) -> Option<Option<u64>> {
    match (call, answer) {
        (Call::Put(v), Answer::Done | Answer::Unknown) => Some(Some(v)),
        (Call::Delete, Answer::Deleted(d)) => (d == state.is_some()).then_some(None),
        (Call::Delete, Answer::Unknown) => Some(None),
        (Call::Get, Answer::Value(v)) => (v == state).then_some(state),
        (Call::Cas { from, to }, Answer::Swapped(true, _)) => {
            (state == Some(from)).then_some(Some(to))
        }
        (Call::Cas { from, .. }, Answer::Swapped(false, seen)) => {
            (state != Some(from) && seen == state).then_some(state)
        }
        (Call::Cas { from, to }, Answer::Unknown) => {
            Some(if state == Some(from) { Some(to) } else { state })
        }
        _ => None,
    }
}

/// The outcome of a search.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// No order exists; the key and the operations the search could linearize least far.
    NotLinearizable(String),
    /// The search ran past its budget: counted as a failure, never as a pass.
    Inconclusive(String),
}

/// Checks every key's history on its own (linearizability is compositional).
pub fn linearizable(ops: &[Op], budget: usize) -> Verdict {
    let mut by_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in ops {
        // A read that never answered tells nothing.
        if op.call == Call::Get && op.answer == Answer::Unknown {
            continue;
        }
        by_key.entry(&op.key).or_default().push(op);
    }
    for (key, ops) in by_key {
        match wgl(&ops, budget) {
            Verdict::Linearizable => {}
            Verdict::NotLinearizable(why) => {
                return Verdict::NotLinearizable(format!("key {key}: {why}"))
            }
            Verdict::Inconclusive(why) => {
                return Verdict::Inconclusive(format!("key {key}: {why}"))
            }
        }
    }
    Verdict::Linearizable
}

/// Wing & Gong's search over a doubly linked list of call and return entries, with the
/// cache of Lowe (and Porcupine): a (linearized set, state) pair seen before is not
/// explored again. Entry 0 is the list's head; op `i` has its call at `2i+1`, its return at
/// `2i+2` (an op of unknown outcome has no return in the list, so it may stay out).
fn wgl(ops: &[&Op], budget: usize) -> Verdict {
    let n = ops.len();
    let mut order: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * n);
    for (i, op) in ops.iter().enumerate() {
        order.push((op.invoked, true, i));
        if let Some(c) = op.completed {
            order.push((c, false, i));
        }
    }
    // Calls before returns at the same instant: such ops count as concurrent.
    order.sort_by_key(|&(t, call, i)| (t, !call, i));
    let slots = 2 * n + 1;
    let (mut next, mut prev) = (vec![usize::MAX; slots], vec![usize::MAX; slots]);
    let mut last = 0;
    for &(_, call, i) in &order {
        let e = if call { 2 * i + 1 } else { 2 * i + 2 };
        next[last] = e;
        prev[e] = last;
        last = e;
    }
    next[last] = usize::MAX;
    let known = |i: usize| ops[i].completed.is_some();
    let mut left = (0..n).filter(|&i| known(i)).count();
    let words = n.div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, Option<u64>)> = HashSet::new();
    let mut stack: Vec<(usize, Option<u64>)> = Vec::new();
    let mut state: Option<u64> = None;
    let mut deepest = 0usize;
    let mut entry = next[0];
    let mut steps = 0usize;
    let unlink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, e: usize| {
        let (p, nx) = (prev[e], next[e]);
        next[p] = nx;
        if nx != usize::MAX {
            prev[nx] = p;
        }
    };
    let relink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, e: usize| {
        let (p, nx) = (prev[e], next[e]);
        next[p] = e;
        if nx != usize::MAX {
            prev[nx] = e;
        }
    };
    loop {
        if left == 0 {
            return Verdict::Linearizable;
        }
        steps += 1;
        if steps > budget {
            return Verdict::Inconclusive(format!(
                "{n} operations, search stopped after {budget} steps"
            ));
        }
        if entry == usize::MAX {
            // Only calls of unknown outcome remain after the last return: cannot happen
            // while a known op is left, whose return is still in the list.
            return Verdict::NotLinearizable("search ran off the list".into());
        }
        let i = (entry - 1) / 2;
        if entry % 2 == 1 {
            let op = ops[i];
            if let Some(after) = step(state, op.call, op.answer) {
                linearized[i / 64] |= 1 << (i % 64);
                if cache.insert((linearized.clone(), after)) {
                    stack.push((entry, state));
                    state = after;
                    unlink(&mut next, &mut prev, entry);
                    if known(i) {
                        unlink(&mut next, &mut prev, entry + 1);
                        left -= 1;
                    }
                    deepest = deepest.max(stack.len());
                    entry = next[0];
                    continue;
                }
                linearized[i / 64] &= !(1 << (i % 64));
            }
            entry = next[entry];
        } else {
            // A return reached before its call was linearized: undo the last choice.
            let Some((e, before)) = stack.pop() else {
                let op = ops[i];
                return Verdict::NotLinearizable(format!(
                    "no order explains {:?} -> {:?} by client {} (revision {:?}); \
                     at most {deepest} of {n} operations could be ordered",
                    op.call, op.answer, op.client, op.revision
                ));
            };
            let j = (e - 1) / 2;
            state = before;
            linearized[j / 64] &= !(1 << (j % 64));
            if known(j) {
                relink(&mut next, &mut prev, e + 1);
                left += 1;
            }
            relink(&mut next, &mut prev, e);
            entry = next[e];
        }
    }
}

/// Every operation that began after another completed must see at least its revision, and
/// a later write a greater one. Returns the violations found (at most `limit`).
pub fn revisions_in_real_time(ops: &[Op], limit: usize) -> Vec<String> {
    let mut done: Vec<(u64, i64, &Op)> = ops
        .iter()
        .filter_map(|o| Some((o.completed?, o.revision?, o)))
        .collect();
    done.sort_by_key(|d| d.0);
    let mut started: Vec<&Op> = ops.iter().filter(|o| o.revision.is_some()).collect();
    started.sort_by_key(|o| o.invoked);
    let mut bad = Vec::new();
    let (mut k, mut max): (usize, Option<(i64, &Op)>) = (0, None);
    for op in started {
        while k < done.len() && done[k].0 < op.invoked {
            if max.is_none_or(|(r, _)| done[k].1 > r) {
                max = Some((done[k].1, done[k].2));
            }
            k += 1;
        }
        let (Some((seen, before)), Some(rev)) = (max, op.revision) else {
            continue;
        };
        if rev < seen || (op.writes() && rev == seen && before.writes()) {
            bad.push(format!(
                "{:?} on {} by client {} answered at revision {rev}, after {:?} on {} by \
                 client {} had completed at revision {seen}",
                op.call, op.key, op.client, before.call, before.key, before.client
            ));
            if bad.len() >= limit {
                break;
            }
        }
    }
    bad
}

/// One event as a watcher received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchEvent {
    pub key: String,
    /// `None` for a delete.
    pub value: Option<Vec<u8>>,
    pub mod_revision: i64,
    pub create_revision: i64,
    pub version: i64,
    /// The value before, if the watch asked for it (`None` when there was none).
    pub prev: Option<Vec<u8>>,
    /// Which response of the watcher it came in (for atomicity per revision).
    pub response: u64,
}

/// A key's state at the end, from a range at `revision`.
#[derive(Clone, Debug)]
pub struct Stored {
    pub value: Vec<u8>,
    pub mod_revision: i64,
    pub create_revision: i64,
    pub version: i64,
}

/// A write a client saw acknowledged: its key, what it wrote (`None`: a delete) and the
/// revision it got.
#[derive(Clone, Debug)]
pub struct Acked {
    pub key: String,
    pub value: Option<Vec<u8>>,
    pub revision: i64,
}

/// etcd's watch guarantees for logs of watchers that watched everything from revision 1,
/// each up to at least `revision`, against the store at `revision` and the acknowledged
/// writes. Returns the violations found (at most `limit`).
pub fn watch_log(
    logs: &[Vec<WatchEvent>],
    store: &BTreeMap<String, Stored>,
    revision: i64,
    acked: &[Acked],
    limit: usize,
) -> Vec<String> {
    let mut bad = Vec::new();
    let mut first: Option<Vec<&WatchEvent>> = None;
    for (w, log) in logs.iter().enumerate() {
        let log: Vec<&WatchEvent> = log.iter().filter(|e| e.mod_revision <= revision).collect();
        let mut replay: BTreeMap<&str, (&WatchEvent, i64)> = BTreeMap::new();
        let mut seen: HashSet<(&str, i64)> = HashSet::new();
        let mut response_of: HashMap<i64, u64> = HashMap::new();
        let mut last = 0;
        for e in &log {
            if e.mod_revision < last {
                bad.push(format!(
                    "watcher {w}: revision {} after {last} (out of order)",
                    e.mod_revision
                ));
            }
            last = e.mod_revision;
            if !seen.insert((&e.key, e.mod_revision)) {
                bad.push(format!(
                    "watcher {w}: {} at revision {} delivered twice",
                    e.key, e.mod_revision
                ));
            }
            if *response_of.entry(e.mod_revision).or_insert(e.response) != e.response {
                bad.push(format!(
                    "watcher {w}: revision {} split over two responses",
                    e.mod_revision
                ));
            }
            let before = replay.get(e.key.as_str());
            let prev_value = before.and_then(|(b, _)| b.value.clone());
            if e.prev != prev_value {
                bad.push(format!(
                    "watcher {w}: {} at revision {}: prev_kv {:?}, the log says {:?}",
                    e.key,
                    e.mod_revision,
                    e.prev.as_deref().map(String::from_utf8_lossy),
                    prev_value.as_deref().map(String::from_utf8_lossy)
                ));
            }
            if e.value.is_some() {
                let live = before.filter(|(b, _)| b.value.is_some());
                let (create, version) = match live {
                    Some((b, _)) => (b.create_revision, b.version + 1),
                    None => (e.mod_revision, 1),
                };
                if (e.create_revision, e.version) != (create, version) {
                    bad.push(format!(
                        "watcher {w}: {} at revision {}: create {} version {}, the log says \
                         create {create} version {version}",
                        e.key, e.mod_revision, e.create_revision, e.version
                    ));
                }
            }
            replay.insert(&e.key, (e, e.mod_revision));
            if bad.len() >= limit {
                return bad;
            }
        }
        if last < revision {
            bad.push(format!(
                "watcher {w}: stopped at revision {last}, the store is at {revision}"
            ));
        }
        let live: BTreeMap<&str, &WatchEvent> = replay
            .iter()
            .filter(|(_, (e, _))| e.value.is_some())
            .map(|(k, (e, _))| (*k, *e))
            .collect();
        for (key, s) in store {
            match live.get(key.as_str()) {
                Some(e)
                    if e.value.as_deref() == Some(&s.value[..])
                        && e.mod_revision == s.mod_revision
                        && e.create_revision == s.create_revision
                        && e.version == s.version => {}
                other => bad.push(format!(
                    "watcher {w}: {key} is {:?} in the store, the log ends with {:?}",
                    s,
                    other.map(|e| (e.mod_revision, e.version))
                )),
            }
        }
        for key in live.keys() {
            if !store.contains_key(*key) {
                bad.push(format!(
                    "watcher {w}: {key} is live in the log, not in the store"
                ));
            }
        }
        let events: HashMap<(&str, i64), &WatchEvent> = log
            .iter()
            .map(|e| ((e.key.as_str(), e.mod_revision), *e))
            .collect();
        for a in acked.iter().filter(|a| a.revision <= revision) {
            match events.get(&(a.key.as_str(), a.revision)) {
                Some(e) if e.value == a.value => {}
                other => bad.push(format!(
                    "watcher {w}: acknowledged write of {} at revision {} is {:?} in the log",
                    a.key,
                    a.revision,
                    other.map(|e| e.value.as_deref().map(String::from_utf8_lossy))
                )),
            }
            if bad.len() >= limit {
                return bad;
            }
        }
        match &first {
            None => first = Some(log),
            Some(f) => {
                let same = f.len() == log.len()
                    && f.iter().zip(&log).all(|(a, b)| {
                        (&a.key, &a.value, a.mod_revision) == (&b.key, &b.value, b.mod_revision)
                    });
                if !same {
                    bad.push(format!(
                        "watcher {w} saw {} events, watcher 0 saw {}, or other ones",
                        log.len(),
                        f.len()
                    ));
                }
            }
        }
        bad.truncate(limit);
    }
    bad
}

/// Keys each written by exactly one put: each must hold version 1, and an acknowledged one
/// must be there at its revision. `unique`: key → acknowledged revision (`None`: unknown).
pub fn applied_once(
    unique: &BTreeMap<String, Option<i64>>,
    store: &BTreeMap<String, Stored>,
    limit: usize,
) -> (usize, usize, Vec<String>) {
    let (mut lost, mut twice, mut bad) = (0, 0, Vec::new());
    for (key, acked) in unique {
        match (store.get(key), acked) {
            (None, Some(rev)) => {
                lost += 1;
                bad.push(format!(
                    "{key}: acknowledged at revision {rev}, not in the store"
                ));
            }
            (None, None) => {}
            (Some(s), _) if s.version != 1 || s.create_revision != s.mod_revision => {
                twice += 1;
                bad.push(format!(
                    "{key}: written once, version {} (create revision {}, mod revision {})",
                    s.version, s.create_revision, s.mod_revision
                ));
            }
            (Some(s), Some(rev)) if s.mod_revision != *rev => {
                bad.push(format!(
                    "{key}: acknowledged at revision {rev}, stored at {}",
                    s.mod_revision
                ));
            }
            (Some(_), _) => {}
        }
    }
    bad.truncate(limit);
    (lost, twice, bad)
}

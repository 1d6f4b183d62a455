//! Service discovery: the instances under `<dir>/`, listed, then followed by a watch from
//! the listed revision + 1 — a local table that never misses or repeats a change (the
//! watch resumes across reconnects from its last revision; after a compaction the table is
//! listed again and the difference reported). Picks: round-robin, random, least-in-flight
//! (the caller marks the start and end of each use) and weighted (`weight` in the metadata).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{room_of, send};
use crate::api::{deadline_in, Deadline, Etcd, WatchUpdate};
use crate::error::{Error, ErrorKind, Result};
use crate::pb::etcdserverpb::{RangeRequest, WatchCreateRequest};
use crate::pb::mvccpb::event::EventType;
use crate::pb::mvccpb::KeyValue;
use crate::stream::Feed;

/// One registered instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    /// The key under the directory (`<dir>/<id>`): the id.
    pub id: String,
    /// `Addr` of the value; a value that is not Go's JSON is taken as the address itself
    /// (entries written by v2-era scripts).
    pub addr: String,
    /// `Metadata` of the value as JSON text (`null` when absent).
    pub metadata: String,
    /// `weight` of the metadata when it is an object with a positive number there; else 1.
    pub weight: u32,
    /// The revision of the last change of its key.
    pub revision: i64,
}

/// A change of the table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Added(Instance),
    Updated(Instance),
    Removed(Instance),
}

/// How to pick an instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    RoundRobin,
    Random,
    LeastInFlight,
    Weighted,
}

fn instance_of(prefix: &[u8], kv: &KeyValue) -> Instance {
    let id = String::from_utf8_lossy(&kv.key[prefix.len().min(kv.key.len())..]).into_owned();
    let text = String::from_utf8_lossy(&kv.value);
    let json: Option<serde_json::Value> = serde_json::from_str(&text).ok();
    let (addr, metadata) = match json.as_ref().and_then(|j| j.as_object()) {
        Some(o) if o.get("Addr").is_some_and(|a| a.is_string()) => (
            o["Addr"].as_str().unwrap_or_default().to_string(),
            o.get("Metadata")
                .cloned()
                .unwrap_or(serde_json::Value::Null),
        ),
        _ => (text.into_owned(), serde_json::Value::Null),
    };
    let weight = metadata
        .get("weight")
        .and_then(|w| w.as_f64())
        .filter(|w| *w >= 1.0)
        .map_or(1, |w| w.min(u32::MAX as f64) as u32);
    Instance {
        id,
        addr,
        metadata: metadata.to_string(),
        weight,
        revision: kv.mod_revision,
    }
}

#[derive(Default)]
struct Table {
    instances: BTreeMap<String, (Instance, u64)>,
    /// Round-robin position.
    next: u64,
}

/// A running discovery. Dropping it stops the watch.
pub struct Discovery {
    table: Arc<Mutex<Table>>,
    task: tokio::task::JoinHandle<()>,
    rng: AtomicU64,
}

impl Discovery {
    /// Lists `<dir>/` and follows it, reporting each change to `changes` (the listed
    /// instances first, as `Added`). Returns once the table holds the listing.
    pub async fn start(
        etcd: Arc<dyn Etcd>,
        dir: &str,
        changes: Feed<Change>,
        deadline: Deadline,
    ) -> Result<Discovery> {
        let dir = dir.trim_end_matches('/');
        if dir.is_empty() {
            return Err(Error::invalid("the service directory is empty"));
        }
        let prefix = format!("{dir}/").into_bytes();
        let table = Arc::new(Mutex::new(Table::default()));
        let (listed, rev) = list(&*etcd, &prefix, deadline).await?;
        let initial = replace(&table, listed);
        let task = tokio::spawn(follow(etcd, prefix, table.clone(), changes, initial, rev));
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1;
        Ok(Discovery {
            table,
            task,
            rng: AtomicU64::new(seed),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The instances now, by id.
    pub fn instances(&self) -> Vec<Instance> {
        self.lock()
            .instances
            .values()
            .map(|(i, _)| i.clone())
            .collect()
    }

    fn random(&self) -> u64 {
        // xorshift64*: good enough to spread load, no dependency.
        let mut x = self.rng.load(Ordering::Relaxed);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.store(x, Ordering::Relaxed);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// An instance by `policy`; None when there is none.
    pub fn pick(&self, policy: Policy) -> Option<Instance> {
        let r = self.random();
        let mut t = self.lock();
        let n = t.instances.len() as u64;
        if n == 0 {
            return None;
        }
        let at = match policy {
            Policy::RoundRobin => {
                t.next = t.next.wrapping_add(1);
                ((t.next - 1) % n) as usize
            }
            Policy::Random => (r % n) as usize,
            Policy::LeastInFlight => {
                // The least loaded; among equals, round-robin. No allocation per pick.
                let least = t.instances.values().map(|(_, f)| *f).min().unwrap_or(0);
                let ties = t.instances.values().filter(|(_, f)| *f == least).count() as u64;
                t.next = t.next.wrapping_add(1);
                let k = ((t.next - 1) % ties.max(1)) as usize;
                t.instances
                    .values()
                    .enumerate()
                    .filter(|(_, (_, f))| *f == least)
                    .nth(k)
                    .map_or(0, |(i, _)| i)
            }
            Policy::Weighted => {
                let total: u64 = t.instances.values().map(|(i, _)| i.weight as u64).sum();
                let mut x = r % total.max(1);
                t.instances
                    .values()
                    .position(|(i, _)| {
                        let hit = x < i.weight as u64;
                        x = x.saturating_sub(i.weight as u64);
                        hit
                    })
                    .unwrap_or(0)
            }
        };
        t.instances.values().nth(at).map(|(i, _)| i.clone())
    }

    /// Marks the start of a use of instance `id` (for least-in-flight). `NotFound` if it
    /// is not in the table.
    pub fn begin(&self, id: &str) -> Result<()> {
        match self.lock().instances.get_mut(id) {
            Some((_, f)) => {
                *f += 1;
                Ok(())
            }
            None => Err(Error::new(
                ErrorKind::NotFound,
                format!("no instance {id:?} in the table"),
            )),
        }
    }

    /// Marks the end of a use begun with `begin`.
    pub fn end(&self, id: &str) -> Result<()> {
        match self.lock().instances.get_mut(id) {
            Some((_, f)) => {
                *f = f.saturating_sub(1);
                Ok(())
            }
            // Removed meanwhile: nothing to count down.
            None => Ok(()),
        }
    }
}

impl Drop for Discovery {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn list(
    etcd: &dyn Etcd,
    prefix: &[u8],
    deadline: Deadline,
) -> Result<(BTreeMap<String, Instance>, i64)> {
    let resp = etcd
        .range(
            RangeRequest {
                key: prefix.to_vec(),
                range_end: crate::kv::prefix_end(prefix),
                ..Default::default()
            },
            deadline,
        )
        .await?;
    let rev = resp.header.map_or(0, |h| h.revision);
    let listed = resp
        .kvs
        .iter()
        .map(|kv| {
            let i = instance_of(prefix, kv);
            (i.id.clone(), i)
        })
        .collect();
    Ok((listed, rev))
}

/// Makes the table `listed`; returns the changes that took it there.
fn replace(table: &Mutex<Table>, listed: BTreeMap<String, Instance>) -> Vec<Change> {
    let mut t = table.lock().unwrap_or_else(|p| p.into_inner());
    let mut changes = Vec::new();
    t.instances.retain(|id, (old, _)| {
        let keep = listed.contains_key(id);
        if !keep {
            changes.push(Change::Removed(old.clone()));
        }
        keep
    });
    for (id, i) in listed {
        match t.instances.get_mut(&id) {
            Some((old, _)) if *old == i => {}
            Some((old, _)) => {
                *old = i.clone();
                changes.push(Change::Updated(i));
            }
            None => {
                t.instances.insert(id, (i.clone(), 0));
                changes.push(Change::Added(i));
            }
        }
    }
    changes
}

/// Follows the directory from `rev` + 1: applies each event to the table and reports it.
async fn follow(
    etcd: Arc<dyn Etcd>,
    prefix: Vec<u8>,
    table: Arc<Mutex<Table>>,
    changes: Feed<Change>,
    initial: Vec<Change>,
    mut rev: i64,
) {
    let room = room_of(&changes);
    for c in initial {
        if !send(&changes, &room, c).await {
            return;
        }
    }
    let far = || deadline_in(Duration::from_secs(30));
    // Told once per run of failures: why the table is not followed (a refused permission
    // is not fixed by retrying, but may be granted again).
    let mut told = false;
    loop {
        let watch = etcd
            .watcher(
                WatchCreateRequest {
                    key: prefix.clone(),
                    range_end: crate::kv::prefix_end(&prefix),
                    start_revision: rev + 1,
                    ..Default::default()
                },
                far(),
            )
            .await;
        let w = match watch {
            Ok(w) => {
                told = false;
                w
            }
            Err(e) if e.kind == ErrorKind::Closed => {
                changes.fail(e);
                return;
            }
            Err(e) => {
                if !std::mem::replace(&mut told, true) {
                    crate::observe::log(crate::observe::Level::Warn, || {
                        format!(
                            "discovery of {}: cannot watch it ({e}); trying again",
                            String::from_utf8_lossy(&prefix)
                        )
                    });
                }
                crate::runtime::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        loop {
            match w.updates.recv().await {
                Some(WatchUpdate::Events { events, .. }) => {
                    for e in events {
                        let Some(kv) = e.kv else { continue };
                        rev = rev.max(kv.mod_revision);
                        let id = String::from_utf8_lossy(&kv.key[prefix.len()..]).into_owned();
                        let change = {
                            let mut t = table.lock().unwrap_or_else(|p| p.into_inner());
                            if e.r#type == EventType::Delete as i32 {
                                t.instances.remove(&id).map(|(i, _)| Change::Removed(i))
                            } else {
                                let i = instance_of(&prefix, &kv);
                                match t.instances.get_mut(&id) {
                                    Some((old, _)) => {
                                        *old = i.clone();
                                        Some(Change::Updated(i))
                                    }
                                    None => {
                                        t.instances.insert(id, (i.clone(), 0));
                                        Some(Change::Added(i))
                                    }
                                }
                            }
                        };
                        if let Some(c) = change {
                            if !send(&changes, &room, c).await {
                                return;
                            }
                        }
                    }
                }
                Some(WatchUpdate::Progress { .. }) => {}
                Some(WatchUpdate::Compacted { .. }) => {
                    // History is gone: list again and report the difference.
                    match list(&*etcd, &prefix, far()).await {
                        Ok((listed, at)) => {
                            rev = at;
                            for c in replace(&table, listed) {
                                if !send(&changes, &room, c).await {
                                    return;
                                }
                            }
                        }
                        Err(_) => crate::runtime::sleep(Duration::from_millis(200)).await,
                    }
                    break;
                }
                Some(WatchUpdate::Canceled { .. }) => break,
                None => {
                    if let Some(e) = w.updates.error().filter(|e| e.kind == ErrorKind::Closed) {
                        changes.fail(e);
                        return;
                    }
                    break;
                }
            }
        }
    }
}

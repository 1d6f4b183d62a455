//! The write of one request: one main revision, a sub revision per change, its events; undone
//! whole when the request fails half-way.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;

use super::{
    cost, err, header, lease_not_found, LeaseEntry, Mvcc, Revision, Value, Version, MAX_LEASE_TTL,
};
use crate::error::{Error, ErrorKind, Result};
use crate::pb::etcdserverpb::request_op::Request;
use crate::pb::etcdserverpb::response_op::Response;
use crate::pb::etcdserverpb::*;
use crate::pb::mvccpb::event::EventType;
use crate::pb::mvccpb::{Event, KeyValue};

/// What a write changed, so that a request that fails half-way leaves nothing behind.
enum Undo {
    Version(Vec<u8>),
    LeaseAttached(i64, Vec<u8>),
    LeaseDetached(i64, Vec<u8>),
}

/// The writes of one request: one main revision, a sub revision per write, the events.
/// Dropped without `commit`, it undoes them.
pub(super) struct Write<'a> {
    store: &'a mut Mvcc,
    main: i64,
    sub: i64,
    events: Vec<Event>,
    undo: Vec<Undo>,
    /// Ranges, puts and deletes done, counted once the write commits.
    ranges: u64,
    puts: u64,
    deletes: u64,
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
    pub(super) fn read_rev(&self) -> i64 {
        if self.sub > 0 {
            self.main
        } else {
            self.store.rev
        }
    }

    pub(super) fn next(&mut self) -> Revision {
        let rev = Revision {
            main: self.main,
            sub: self.sub,
        };
        self.sub += 1;
        rev
    }

    pub(super) fn put(&mut self, req: PutRequest) -> Result<PutResponse> {
        self.puts += 1;
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

    pub(super) fn delete_range(&mut self, req: DeleteRangeRequest) -> Result<DeleteRangeResponse> {
        self.deletes += 1;
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
    pub(super) fn txn(
        &mut self,
        req: TxnRequest,
        path: &mut std::vec::IntoIter<bool>,
    ) -> Result<TxnResponse> {
        let succeeded = path.next().unwrap_or(false);
        let ops = if succeeded { req.success } else { req.failure };
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            let response = match op.request {
                Some(Request::RequestRange(r)) => {
                    self.ranges += 1;
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

    pub(super) fn detach(&mut self, key: &[u8], lease: i64) {
        if let Some(l) = self.store.leases.get_mut(&lease) {
            if l.keys.remove(key) {
                self.undo.push(Undo::LeaseDetached(lease, key.to_vec()));
            }
        }
    }

    /// Makes the request's writes the store's current revision.
    pub(super) fn commit(mut self) -> Vec<Event> {
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
        let c = &self.store.counters;
        c.ranges.fetch_add(self.ranges, Ordering::Relaxed);
        c.puts.fetch_add(self.puts, Ordering::Relaxed);
        c.deletes.fetch_add(self.deletes, Ordering::Relaxed);
        if self.ranges + self.puts + self.deletes > 1 {
            c.txns.fetch_add(1, Ordering::Relaxed);
        }
        std::mem::take(&mut self.events)
    }
}

impl Mvcc {
    pub(super) fn write(&mut self) -> Write<'_> {
        let main = self.rev + 1;
        Write {
            store: self,
            main,
            sub: 0,
            events: Vec::new(),
            undo: Vec::new(),
            ranges: 0,
            puts: 0,
            deletes: 0,
        }
    }

    /// One revision of the etcd cluster this store mirrors (`node::mirror`), applied at
    /// the same revision: its events in order (a put with its value and lease, a delete),
    /// after the leases they name are created with their TTL. A revision the store already
    /// has is skipped (a mirror that resumes after a leader change may send it again); a
    /// revision that is not the next one, or an outcome other than the source's (create
    /// revision, version, a delete that deletes nothing), is refused: the mirror would
    /// have diverged.
    pub fn mirrored(
        &mut self,
        revision: i64,
        events: Vec<Event>,
        leases: &[(i64, i64)],
    ) -> Result<Vec<Event>> {
        if self.mirror.is_none() {
            return Err(err(
                ErrorKind::FailedPrecondition,
                "etcdserver: this member is no longer a mirror (promoted)",
            ));
        }
        if revision <= self.rev {
            return Ok(Vec::new());
        }
        let diverged = |what: &str| {
            err(
                ErrorKind::DataLoss,
                &format!("the mirror diverged from its source at revision {revision}: {what}"),
            )
        };
        // Every revision of etcd changes a key, so a watch of every key shows each one.
        if revision != self.rev + 1 {
            return Err(diverged(&format!("it is at revision {}", self.rev)));
        }
        for &(id, ttl) in leases {
            self.leases.entry(id).or_insert_with(|| LeaseEntry {
                ttl,
                keys: BTreeSet::new(),
            });
        }
        let mut w = self.write();
        for ev in events {
            let Some(kv) = ev.kv else { continue };
            if ev.r#type == EventType::Delete as i32 {
                let req = DeleteRangeRequest {
                    key: kv.key,
                    ..Default::default()
                };
                if w.delete_range(req)?.deleted != 1 {
                    return Err(diverged("a deleted key it does not have"));
                }
            } else {
                let want = (kv.create_revision, kv.version);
                let req = PutRequest {
                    key: kv.key,
                    value: kv.value,
                    lease: kv.lease,
                    ..Default::default()
                };
                w.put(req)?;
                let got = w.events.last().and_then(|e| e.kv.as_ref());
                if got.map(|k| (k.create_revision, k.version)) != Some(want) {
                    return Err(diverged("a put with another version"));
                }
            }
        }
        Ok(w.commit())
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
}

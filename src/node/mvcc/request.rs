//! Request semantics, etcd's `apply` layer over the store: what a request may be
//! (validation, with etcd's error texts), how a transaction's compares choose its branch, and
//! the public entry points of the four kv requests.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::HashSet;

use super::{
    compacted, duplicate_key, empty_key, err, future, header, lease_not_found, Mvcc, Version,
};
use crate::error::{ErrorKind, Result};
use crate::kv::KeyRange;
use crate::pb::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::pb::etcdserverpb::range_request::{SortOrder, SortTarget};
use crate::pb::etcdserverpb::request_op::Request;
use crate::pb::etcdserverpb::*;
use crate::pb::mvccpb::Event;

/// The ranges a transaction deletes, for the duplicate-key check: a point, [start, end), or
/// everything from start on for an end of "\0" — as the delete itself reads it. (etcd 3.4
/// takes "\0" literally here, misses the overlap of a from-key delete with a later put of a
/// key it deleted, and then panics applying that txn; the node refuses it instead.)
#[derive(Default)]
struct Intervals(Vec<(Vec<u8>, Vec<u8>)>);

impl Intervals {
    fn hits(&self, key: &[u8]) -> bool {
        self.0
            .iter()
            .any(|(start, end)| KeyRange::new(start, end).contains(key))
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
/// `max_ops` is `--max-txn-ops`, checked where the request enters (at apply: no limit).
pub fn check_txn(t: &TxnRequest, max_ops: usize) -> Result<()> {
    check_txn_ops(t, max_ops)?;
    check_intervals(&t.success)?;
    check_intervals(&t.failure)?;
    Ok(())
}

fn check_txn_ops(t: &TxnRequest, max_ops: usize) -> Result<()> {
    let ops = t.compare.len().max(t.success.len()).max(t.failure.len());
    if ops > max_ops {
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
            // A nested transaction has what its parent left of the limit, as in etcd.
            Some(Request::RequestTxn(t)) => check_txn_ops(t, max_ops - ops)?,
            // An operation with no request (etcd's "empty op").
            None => return Err(err(ErrorKind::NotFound, "etcdserver: key not found")),
        }
    }
    Ok(())
}

impl Mvcc {
    /// Reads keys (etcd's Range). The header carries only the revision.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse> {
        check_range(req)?;
        (self.counters.ranges).fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.range_at(req, self.rev)
    }

    /// etcd's `applyCompare`: every key of the compare's range must satisfy it; a missing
    /// key compares as zero values, except that a value compare on it never holds.
    pub(super) fn compare(&self, c: &Compare, rev: i64) -> Result<bool> {
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
    pub(super) fn txn_path(&self, t: &TxnRequest, rev: i64, path: &mut Vec<bool>) -> Result<()> {
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
    pub(super) fn check_puts(
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
        check_txn(&req, usize::MAX)?;
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

//! etcd's backend layout — the buckets of its bbolt file (`node::bolt`), what `etcdctl
//! snapshot save` stores — made into the store at the same revisions: `key` (every version
//! under its revision: 8 bytes main, `_`, 8 bytes sub, `t` after a tombstone; the value
//! `mvccpb.KeyValue`), `meta` (the compaction revisions), `lease` (`leasepb.Lease`), `auth`,
//! `authUsers`, `authRoles`. Members and alarms are the old cluster's and are not taken.

use super::{cost, LeaseEntry, Mvcc, Revision, Version};
use crate::error::{Error, ErrorKind, Result};
use crate::node::auth::{Perm, User};
use crate::node::bolt::Buckets;
use crate::pb::authpb;
use crate::pb::mvccpb::KeyValue;
use prost::Message;
use std::collections::{BTreeMap, BTreeSet};

/// etcd's `leasepb.Lease`: what the node keeps of it.
#[derive(Clone, PartialEq, prost::Message)]
struct Lease {
    #[prost(int64, tag = "1")]
    id: i64,
    #[prost(int64, tag = "2")]
    ttl: i64,
}

fn bad(what: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::DataLoss,
        format!("not an etcd snapshot, or a damaged one: {what}"),
    )
}

/// A revision key of the `key` bucket: the revision, and whether it is a tombstone's.
fn revision(b: &[u8]) -> Result<(Revision, bool)> {
    let tombstone = match b.len() {
        17 => false,
        18 if b[17] == b't' => true,
        _ => return Err(bad(format!("a revision key of {} bytes", b.len()))),
    };
    if b[8] != b'_' {
        return Err(bad("a revision key without its separator"));
    }
    let number = |s: &[u8]| i64::from_be_bytes([s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]]);
    Ok((
        Revision {
            main: number(&b[..8]),
            sub: number(&b[9..17]),
        },
        tombstone,
    ))
}

fn text(b: Vec<u8>, what: &str) -> Result<String> {
    String::from_utf8(b).map_err(|_| bad(format!("{what} is not UTF-8")))
}

impl Mvcc {
    /// The store etcd's buckets hold: the same keys, versions, revisions, compaction,
    /// leases (with their keys) and users, roles and permissions.
    pub fn from_etcd(buckets: &Buckets) -> Result<Mvcc> {
        let mut m = Mvcc::new();
        let none = BTreeMap::new();
        let bucket = |name: &str| buckets.get(name.as_bytes()).unwrap_or(&none);
        if !buckets.contains_key(b"key".as_slice()) {
            return Err(bad("no key bucket"));
        }
        // The bucket is in revision order, so each key's versions come in order.
        for (at, value) in bucket("key") {
            let (rev, tombstone) = revision(at)?;
            let kv = KeyValue::decode(value.as_slice())
                .map_err(|e| bad(format!("revision {}: {e}", rev.main)))?;
            if kv.key.is_empty() {
                return Err(bad(format!("revision {} has no key", rev.main)));
            }
            let key = kv.key.clone();
            let v = if tombstone {
                Version::tombstone(rev)
            } else {
                Version::from_kv(rev, kv)
            };
            m.size += cost(&key, &v);
            m.rev = m.rev.max(rev.main);
            m.keys.entry(key).or_default().push(v);
        }
        let meta = bucket("meta");
        let compaction = |name: &str| -> Result<Option<i64>> {
            meta.get(name.as_bytes())
                .map(|b| revision(b).map(|(r, _)| r.main))
                .transpose()
        };
        if let Some(done) = compaction("finishedCompactRev")? {
            m.compacted = done;
        }
        // As etcd at start: the revision is at least the compaction's, and a compaction it
        // had scheduled but not finished is finished.
        m.rev = m.rev.max(m.compacted);
        if let Some(scheduled) = compaction("scheduledCompactRev")?.filter(|&s| s > m.compacted) {
            m.compact(scheduled)?;
        }
        for value in bucket("lease").values() {
            let l = Lease::decode(value.as_slice()).map_err(|e| bad(format!("a lease: {e}")))?;
            m.leases.insert(
                l.id,
                LeaseEntry {
                    ttl: l.ttl,
                    keys: BTreeSet::new(),
                },
            );
        }
        for (key, versions) in &m.keys {
            let Some(live) = versions
                .last()
                .filter(|v| v.value.is_some() && v.lease != 0)
            else {
                continue;
            };
            if let Some(lease) = m.leases.get_mut(&live.lease) {
                lease.keys.insert(key.clone());
            }
        }
        let auth = bucket("auth");
        m.auth.enabled = auth.get(b"enabled".as_slice()).is_some_and(|v| v == &[1]);
        m.auth.revision = match auth.get(b"revision".as_slice()) {
            Some(v) => u64::from_be_bytes(
                v.as_slice()
                    .try_into()
                    .map_err(|_| bad("the auth revision"))?,
            ),
            None => 0,
        };
        for value in bucket("authUsers").values() {
            let u =
                authpb::User::decode(value.as_slice()).map_err(|e| bad(format!("a user: {e}")))?;
            let user = User {
                password: text(u.password, "a password hash")?,
                roles: u.roles.into_iter().collect(),
            };
            m.auth.users.insert(text(u.name, "a user name")?, user);
        }
        for value in bucket("authRoles").values() {
            let r =
                authpb::Role::decode(value.as_slice()).map_err(|e| bad(format!("a role: {e}")))?;
            let mut perms: Vec<Perm> = r
                .key_permission
                .into_iter()
                .map(|p| Perm {
                    kind: p.perm_type,
                    key: p.key,
                    range_end: p.range_end,
                })
                .collect();
            perms.sort_by(|a, b| a.key.cmp(&b.key));
            m.auth.roles.insert(text(r.name, "a role name")?, perms);
        }
        Ok(m)
    }
}

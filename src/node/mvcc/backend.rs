//! etcd's backend layout — the buckets of its bbolt file (`node::bolt`), what `etcdctl
//! snapshot save` stores — both ways, at the same revisions: `key` (every version under its
//! revision: 8 bytes main, `_`, 8 bytes sub, `t` after a tombstone; the value
//! `mvccpb.KeyValue`), `meta` (the applied index and the compaction revisions), `lease`
//! (`leasepb.Lease` under its id, 8 bytes big-endian), `auth` (`enabled`, `revision`),
//! `authUsers`, `authRoles` (`authpb`), `cluster` (the cluster version). Members and alarms
//! are a cluster's own: they are not taken from a file, and a file the node writes has
//! their buckets empty (`etcdctl snapshot restore` makes the members anew).

use super::{cost, LeaseEntry, Mvcc, Revision, Version};
use crate::error::{Error, ErrorKind, Result};
use crate::node::auth::{Perm, User};
use crate::node::bolt::Buckets;
use crate::pb::authpb;
use crate::pb::mvccpb::KeyValue;
use prost::Message;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Seek, Write};

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

/// A revision as the `key` and `meta` buckets write it: 8 bytes main, `_`, 8 bytes sub,
/// and room for the tombstone's `t`.
fn revision_key(rev: Revision) -> [u8; 18] {
    let mut b = [0u8; 18];
    b[..8].copy_from_slice(&rev.main.to_be_bytes());
    b[8] = b'_';
    b[9..17].copy_from_slice(&rev.sub.to_be_bytes());
    b
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
    /// The version `v` of `key` as etcd's `key` bucket holds it: the revision key (its
    /// first 17 bytes, or all 18 for a tombstone) and, into `kv`, the value's bytes.
    pub(super) fn bucket_entry(
        &self,
        key: &[u8],
        v: &Version,
        kv: &mut Vec<u8>,
    ) -> Result<([u8; 18], usize)> {
        let mut at = revision_key(v.rev);
        let (stored, len) = match &v.value {
            Some(value) => (
                KeyValue {
                    key: key.to_vec(),
                    create_revision: v.create_revision,
                    mod_revision: v.rev.main,
                    version: v.version,
                    value: self.value(value)?.into_owned(),
                    lease: v.lease,
                },
                17,
            ),
            None => {
                at[17] = b't';
                (
                    KeyValue {
                        key: key.to_vec(),
                        ..Default::default()
                    },
                    18,
                )
            }
        };
        kv.clear();
        stored
            .encode(kv)
            .map_err(|e| Error::new(ErrorKind::Internal, format!("cannot encode a key: {e}")))?;
        Ok((at, len))
    }

    /// The store as etcd's backend file — what `etcdctl snapshot save` stores, before its
    /// SHA-256 — written to `out` as a stream (one page of keys in memory at a time, plus
    /// each version's place in revision order). `applied` is the Raft index it holds.
    pub fn write_etcd<W: Write + Seek>(&self, out: W, applied: u64) -> Result<W> {
        let io = |e: std::io::Error| {
            Error::new(ErrorKind::Internal, format!("cannot write the backup: {e}"))
        };
        let mut w = crate::node::bolt::Writer::new(out);
        for empty in ["alarm", "members", "members_removed"] {
            w.bucket(empty.as_bytes()).map_err(io)?;
        }
        w.bucket(b"auth").map_err(io)?;
        w.put(b"authEnabled", &[u8::from(self.auth.enabled)])
            .map_err(io)?;
        w.put(b"authRevision", &self.auth.revision.to_be_bytes())
            .map_err(io)?;
        w.bucket(b"authRoles").map_err(io)?;
        for (name, perms) in &self.auth.roles {
            let role = authpb::Role {
                name: name.as_bytes().to_vec(),
                key_permission: perms
                    .iter()
                    .map(|p| authpb::Permission {
                        perm_type: p.kind,
                        key: p.key.clone(),
                        range_end: p.range_end.clone(),
                    })
                    .collect(),
            };
            w.put(name.as_bytes(), &role.encode_to_vec()).map_err(io)?;
        }
        w.bucket(b"authUsers").map_err(io)?;
        for (name, u) in &self.auth.users {
            let user = authpb::User {
                name: name.as_bytes().to_vec(),
                password: u.password.as_bytes().to_vec(),
                roles: u.roles.iter().cloned().collect(),
                options: None,
            };
            w.put(name.as_bytes(), &user.encode_to_vec()).map_err(io)?;
        }
        w.bucket(b"cluster").map_err(io)?;
        w.put(
            b"clusterVersion",
            crate::node::ETCD_CLUSTER_VERSION.as_bytes(),
        )
        .map_err(io)?;
        w.bucket(b"key").map_err(io)?;
        let mut order: Vec<(Revision, &Vec<u8>, &Version)> = self
            .keys
            .iter()
            .flat_map(|(key, versions)| versions.iter().map(move |v| (v.rev, key, v)))
            .collect();
        order.sort_unstable_by_key(|r| r.0);
        let mut kv = Vec::new();
        for (_, key, v) in order {
            let (at, len) = self.bucket_entry(key, v, &mut kv)?;
            w.put(&at[..len], &kv).map_err(io)?;
        }
        w.bucket(b"lease").map_err(io)?;
        // etcd's bucket is in the byte order of the ids' big-endian bytes.
        let mut leases: Vec<([u8; 8], &LeaseEntry, i64)> = self
            .leases
            .iter()
            .map(|(id, l)| (id.to_be_bytes(), l, *id))
            .collect();
        leases.sort_unstable_by_key(|l| l.0);
        for (at, l, id) in leases {
            let lease = Lease { id, ttl: l.ttl };
            w.put(&at, &lease.encode_to_vec()).map_err(io)?;
        }
        w.bucket(b"meta").map_err(io)?;
        w.put(b"consistent_index", &applied.to_be_bytes())
            .map_err(io)?;
        if self.compacted > 0 {
            let at = revision_key(Revision {
                main: self.compacted,
                sub: 0,
            });
            w.put(b"finishedCompactRev", &at[..17]).map_err(io)?;
            w.put(b"scheduledCompactRev", &at[..17]).map_err(io)?;
        }
        w.finish().map_err(io)
    }

    /// The store etcd's backend file `db` holds (the snapshot's SHA-256 removed): the same
    /// keys, versions, revisions, compaction, leases (with their keys) and users, roles and
    /// permissions. Read as a stream: the `key` bucket's versions go into the store as they
    /// are met, never copied into a map of their own first.
    pub fn from_etcd(db: &[u8]) -> Result<Mvcc> {
        let mut m = Mvcc::new();
        let mut other = Buckets::new();
        // The bucket is in revision order, so each key's versions come in order.
        let names = crate::node::bolt::visit(db, &mut |bucket, at, value| {
            if bucket != b"key" {
                other
                    .entry(bucket.to_vec())
                    .or_default()
                    .insert(at.to_vec(), value.to_vec());
                return Ok(());
            }
            let (rev, tombstone) = revision(at)?;
            let kv =
                KeyValue::decode(value).map_err(|e| bad(format!("revision {}: {e}", rev.main)))?;
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
            Ok(())
        })?;
        if !names.iter().any(|n| n == b"key") {
            return Err(bad("no key bucket"));
        }
        let none = BTreeMap::new();
        let bucket = |name: &str| other.get(name.as_bytes()).unwrap_or(&none);
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
        m.auth.enabled = auth
            .get(b"authEnabled".as_slice())
            .is_some_and(|v| v == &[1]);
        m.auth.revision = match auth.get(b"authRevision".as_slice()) {
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

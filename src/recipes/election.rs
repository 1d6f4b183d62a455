//! Go's `concurrency.Election`, on the wire exactly: candidates' keys `<name>/<lease hex>`
//! hold their proposals; the leader is the key created first; a candidate waits for its
//! predecessors only. Interoperates with `etcdctl elect` and Go services.

use std::sync::Arc;

use super::{
    created_at, delete_op, first_created, get_op, name_prefix, put_op, range_at, room_of, send,
    wait_deletes,
};
use crate::api::{deadline_in, Deadline, Etcd, WatchUpdate};
use crate::error::{Error, ErrorKind, Result};
use crate::pb::etcdserverpb::*;
use crate::pb::mvccpb::event::EventType;
use crate::pb::mvccpb::KeyValue;
use crate::stream::Feed;

pub struct Election {
    etcd: Arc<dyn Etcd>,
    prefix: Vec<u8>,
    lease: i64,
    /// Our candidate key and its create revision while campaigning or leading.
    leader: Option<(Vec<u8>, i64)>,
}

/// The leader as observed: its key, create revision and proposal, and the rest of its
/// key-value (what etcd's election service answers).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Leader {
    pub key: Vec<u8>,
    pub rev: i64,
    pub value: Vec<u8>,
    pub mod_revision: i64,
    pub version: i64,
    pub lease: i64,
}

impl Leader {
    fn of(kv: &KeyValue) -> Leader {
        Leader {
            key: kv.key.clone(),
            rev: kv.create_revision,
            value: kv.value.clone(),
            mod_revision: kv.mod_revision,
            version: kv.version,
            lease: kv.lease,
        }
    }

    /// The leader's key as etcd stores it.
    pub fn kv(self) -> KeyValue {
        KeyValue {
            key: self.key,
            create_revision: self.rev,
            mod_revision: self.mod_revision,
            version: self.version,
            value: self.value,
            lease: self.lease,
        }
    }
}

fn not_leader() -> Error {
    Error::new(
        ErrorKind::FailedPrecondition,
        "election: not leader (the leader key was deleted or its lease expired)",
    )
}

impl Election {
    /// The election `name` for a session's `lease`.
    pub fn new(etcd: Arc<dyn Etcd>, name: &[u8], lease: i64) -> Result<Election> {
        let prefix = name_prefix("election", name)?;
        if lease <= 0 {
            return Err(Error::invalid(format!(
                "lease {lease} is not a valid lease"
            )));
        }
        Ok(Election {
            etcd,
            prefix,
            lease,
            leader: None,
        })
    }

    /// Leadership taken earlier (Go's `ResumeElection`): `key` and its create revision.
    pub fn resume(
        etcd: Arc<dyn Etcd>,
        name: &[u8],
        lease: i64,
        key: Vec<u8>,
        rev: i64,
    ) -> Result<Election> {
        let mut e = Self::new(etcd, name, lease)?;
        e.leader = Some((key, rev));
        Ok(e)
    }

    /// Runs for leader with `value` and waits until elected, or the deadline (`Timeout`;
    /// the candidacy is withdrawn).
    pub async fn campaign(&mut self, value: &[u8], deadline: Deadline) -> Result<()> {
        let mut key = self.prefix.clone();
        key.extend_from_slice(format!("{:x}", self.lease).as_bytes());
        let resp = self
            .etcd
            .txn(
                TxnRequest {
                    compare: vec![created_at(&key, 0)],
                    success: vec![put_op(&key, value, self.lease)],
                    failure: vec![get_op(&key)],
                },
                deadline,
            )
            .await?;
        let rev = if resp.succeeded {
            resp.header.as_ref().map_or(0, |h| h.revision)
        } else {
            let kv = range_at(&resp, 0).and_then(|r| r.kvs.first()).cloned();
            let kv = kv.ok_or_else(not_leader)?;
            self.leader = Some((key.clone(), kv.create_revision));
            if kv.value != value {
                self.proclaim(value, deadline).await?;
            }
            kv.create_revision
        };
        self.leader = Some((key, rev));
        if let Err(e) = wait_deletes(&*self.etcd, &self.prefix, rev - 1, deadline).await {
            let _ = self
                .resign(deadline_in(std::time::Duration::from_secs(5)))
                .await;
            return Err(e);
        }
        Ok(())
    }

    /// Replaces the leader's proposal without a new election.
    pub async fn proclaim(&self, value: &[u8], deadline: Deadline) -> Result<()> {
        let (key, rev) = self.leader.as_ref().ok_or_else(not_leader)?;
        let resp = self
            .etcd
            .txn(
                TxnRequest {
                    compare: vec![created_at(key, *rev)],
                    success: vec![put_op(key, value, self.lease)],
                    failure: vec![],
                },
                deadline,
            )
            .await?;
        if !resp.succeeded {
            return Err(not_leader());
        }
        Ok(())
    }

    /// Gives up leadership (or the candidacy): the next candidate is elected.
    pub async fn resign(&mut self, deadline: Deadline) -> Result<()> {
        let Some((key, rev)) = self.leader.take() else {
            return Ok(());
        };
        self.etcd
            .txn(
                TxnRequest {
                    compare: vec![created_at(&key, rev)],
                    success: vec![delete_op(&key)],
                    failure: vec![],
                },
                deadline,
            )
            .await?;
        Ok(())
    }

    /// Our key and its create revision while campaigning or leading.
    pub fn key(&self) -> Option<(&[u8], i64)> {
        self.leader.as_ref().map(|(k, r)| (k.as_slice(), *r))
    }
}

/// The current leader of election `name`; `NotFound` ("election: no leader") if none.
pub async fn leader(etcd: &dyn Etcd, name: &[u8], deadline: Deadline) -> Result<Leader> {
    let prefix = name_prefix("election", name)?;
    let resp = etcd.range(first_created(&prefix), deadline).await?;
    resp.kvs
        .first()
        .map(Leader::of)
        .ok_or_else(|| Error::new(ErrorKind::NotFound, "election: no leader"))
}

/// Go's `Observe`: every leader and every proclamation, in order, to `updates`, until the
/// consumer closes its stream or the client goes away. Runs on the runtime; abort the
/// returned task to stop.
pub fn observe(
    etcd: Arc<dyn Etcd>,
    name: &[u8],
    updates: Feed<Leader>,
) -> Result<tokio::task::JoinHandle<()>> {
    let prefix = name_prefix("election", name)?;
    Ok(tokio::spawn(async move {
        let room = room_of(&updates);
        if let Err(e) = observe_loop(&*etcd, &prefix, &updates, &room).await {
            updates.fail(e);
        }
    }))
}

async fn observe_loop(
    etcd: &dyn Etcd,
    prefix: &[u8],
    updates: &Feed<Leader>,
    room: &tokio::sync::Notify,
) -> Result<()> {
    let far = || deadline_in(std::time::Duration::from_secs(3600 * 24 * 365));
    let call = || deadline_in(std::time::Duration::from_secs(10));
    loop {
        // 1. The leader now, or the first one elected from here on.
        let resp = etcd.range(first_created(prefix), call()).await?;
        let mut current = match resp.kvs.first() {
            Some(kv) => kv.clone(),
            None => {
                let rev = resp.header.map_or(0, |h| h.revision);
                let w = etcd
                    .watcher(
                        WatchCreateRequest {
                            key: prefix.to_vec(),
                            range_end: crate::kv::prefix_end(prefix),
                            start_revision: rev + 1,
                            ..Default::default()
                        },
                        call(),
                    )
                    .await?;
                let mut first = None;
                while first.is_none() {
                    match w.updates.recv().await {
                        Some(WatchUpdate::Events { events, .. }) => {
                            first = events
                                .into_iter()
                                .find(|e| e.r#type == EventType::Put as i32)
                                .and_then(|e| e.kv);
                        }
                        Some(WatchUpdate::Progress { .. }) => {}
                        // Compacted, canceled, ended: look again.
                        _ => break,
                    }
                }
                match first {
                    Some(kv) => kv,
                    None => continue,
                }
            }
        };
        // 2. Report it, then its proclamations until its key is deleted.
        if !send(updates, room, Leader::of(&current)).await {
            return Ok(());
        }
        let w = etcd
            .watcher(
                WatchCreateRequest {
                    key: current.key.clone(),
                    start_revision: current.mod_revision + 1,
                    ..Default::default()
                },
                far(),
            )
            .await?;
        'leader: loop {
            match w.updates.recv().await {
                Some(WatchUpdate::Events { events, .. }) => {
                    for e in events {
                        let Some(kv) = e.kv else { continue };
                        if e.r#type == EventType::Delete as i32 {
                            break 'leader;
                        }
                        // Every put on the leader's key is a proclamation (as Go).
                        current = kv;
                        if !send(updates, room, Leader::of(&current)).await {
                            return Ok(());
                        }
                    }
                }
                Some(WatchUpdate::Progress { .. }) => {}
                _ => break 'leader,
            }
        }
    }
}

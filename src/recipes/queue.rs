//! An ordered queue, as etcd v2's in-order keys (`POST /v2/keys/<dir>`): each item is a key
//! `<dir>/<20-digit zero-padded revision>`, so key order is creation order; dequeue takes
//! the oldest atomically (a txn on its mod revision), so two consumers never get the same
//! item. Enqueues of one queue are serialized by its tail key `<dir>` (the key itself, not
//! under `<dir>/`), which also makes their suffixes strictly increasing.

use super::{delete_op, modified_at, put_op};
use crate::api::{Deadline, Etcd, WatchUpdate};
use crate::error::{Error, ErrorKind, Result};
use crate::pb::etcdserverpb::range_request::{SortOrder, SortTarget};
use crate::pb::etcdserverpb::*;
use crate::pb::mvccpb::event::EventType;
use crate::pb::mvccpb::KeyValue;

fn dir_of(dir: &str) -> Result<&str> {
    let dir = dir.trim_end_matches('/');
    if dir.is_empty() {
        return Err(Error::invalid("the queue directory is empty"));
    }
    Ok(dir)
}

/// Appends `value`; returns the item's key.
pub async fn enqueue(
    etcd: &dyn Etcd,
    dir: &str,
    value: &[u8],
    deadline: Deadline,
) -> Result<Vec<u8>> {
    enqueue_leased(etcd, dir, value, 0, deadline).await
}

/// `enqueue` with the item under `lease` (0: none), e.g. etcd v2's in-order key with a TTL.
pub async fn enqueue_leased(
    etcd: &dyn Etcd,
    dir: &str,
    value: &[u8],
    lease: i64,
    deadline: Deadline,
) -> Result<Vec<u8>> {
    let dir = dir_of(dir)?;
    let tail = dir.as_bytes();
    loop {
        let now = etcd
            .range(
                RangeRequest {
                    key: tail.to_vec(),
                    ..Default::default()
                },
                deadline,
            )
            .await?;
        let rev = now.header.map_or(0, |h| h.revision);
        let tail_rev = now.kvs.first().map_or(0, |kv| kv.mod_revision);
        let key = format!("{dir}/{:020}", rev + 1).into_bytes();
        let resp = etcd
            .txn(
                TxnRequest {
                    compare: vec![modified_at(tail, tail_rev)],
                    success: vec![put_op(&key, value, lease), put_op(tail, &key, 0)],
                    failure: vec![],
                },
                deadline,
            )
            .await?;
        if resp.succeeded {
            return Ok(key);
        }
    }
}

/// Takes the oldest item: `(key, value)`. With `wait`, waits for one until the deadline
/// (`Timeout`); without, `NotFound` when the queue is empty.
pub async fn dequeue(
    etcd: &dyn Etcd,
    dir: &str,
    wait: bool,
    deadline: Deadline,
) -> Result<KeyValue> {
    let dir = dir_of(dir)?;
    let prefix = format!("{dir}/").into_bytes();
    loop {
        let resp = etcd
            .range(
                RangeRequest {
                    key: prefix.clone(),
                    range_end: crate::kv::prefix_end(&prefix),
                    sort_order: SortOrder::Ascend as i32,
                    sort_target: SortTarget::Key as i32,
                    limit: 1,
                    ..Default::default()
                },
                deadline,
            )
            .await?;
        let Some(kv) = resp.kvs.into_iter().next() else {
            if !wait {
                return Err(Error::new(ErrorKind::NotFound, "the queue is empty"));
            }
            let rev = resp.header.map_or(0, |h| h.revision);
            wait_put(etcd, &prefix, rev + 1, deadline).await?;
            continue;
        };
        let taken = etcd
            .txn(
                TxnRequest {
                    compare: vec![modified_at(&kv.key, kv.mod_revision)],
                    success: vec![delete_op(&kv.key)],
                    failure: vec![],
                },
                deadline,
            )
            .await?;
        if taken.succeeded {
            return Ok(kv);
        }
    }
}

/// Waits for a put under `prefix` from `rev` on.
async fn wait_put(etcd: &dyn Etcd, prefix: &[u8], rev: i64, deadline: Deadline) -> Result<()> {
    let w = etcd
        .watcher(
            WatchCreateRequest {
                key: prefix.to_vec(),
                range_end: crate::kv::prefix_end(prefix),
                start_revision: rev,
                ..Default::default()
            },
            deadline,
        )
        .await?;
    loop {
        match crate::runtime::timeout_at(deadline, w.updates.recv()).await {
            Err(_) => return Err(super::timeout()),
            Ok(Some(WatchUpdate::Events { events, .. })) => {
                if events.iter().any(|e| e.r#type == EventType::Put as i32) {
                    return Ok(());
                }
            }
            Ok(Some(WatchUpdate::Progress { .. })) => {}
            // Compacted or ended: look again.
            Ok(_) => return Ok(()),
        }
    }
}

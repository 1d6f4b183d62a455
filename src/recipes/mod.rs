//! The recipes services build on etcd — sessions, service registration and discovery,
//! mutexes, elections and ordered queues — written on `trait Etcd` alone, so they work the
//! same on the remote client and on the embedded node. Keys, values and wire operations are
//! Go clientv3's (`concurrency`, `naming/endpoints`), byte for byte, so etcdc, `etcdctl
//! lock` / `etcdctl elect` and Go services interoperate.

pub mod discovery;
pub mod election;
pub mod mutex;
pub mod queue;
pub mod registration;
pub mod session;
pub mod v2;

use std::sync::Arc;

use tokio::sync::Notify;

use crate::api::{Deadline, Etcd, WatchUpdate};
use crate::error::{Error, ErrorKind, Result};
use crate::pb::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::pb::etcdserverpb::range_request::{SortOrder, SortTarget};
use crate::pb::etcdserverpb::request_op::Request;
use crate::pb::etcdserverpb::response_op::Response;
use crate::pb::etcdserverpb::*;
use crate::pb::mvccpb::event::EventType;
use crate::stream::{Feed, SendError};

/// `target(key) == value` as a txn compare.
fn compare(key: &[u8], target: CompareTarget, value: TargetUnion) -> Compare {
    Compare {
        result: CompareResult::Equal as i32,
        target: target as i32,
        key: key.to_vec(),
        range_end: Vec::new(),
        target_union: Some(value),
    }
}

pub(crate) fn created_at(key: &[u8], rev: i64) -> Compare {
    compare(key, CompareTarget::Create, TargetUnion::CreateRevision(rev))
}

pub(crate) fn modified_at(key: &[u8], rev: i64) -> Compare {
    compare(key, CompareTarget::Mod, TargetUnion::ModRevision(rev))
}

pub(crate) fn leased_by(key: &[u8], lease: i64) -> Compare {
    compare(key, CompareTarget::Lease, TargetUnion::Lease(lease))
}

pub(crate) fn put_op(key: &[u8], value: &[u8], lease: i64) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestPut(PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            lease,
            ..Default::default()
        })),
    }
}

pub(crate) fn get_op(key: &[u8]) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestRange(RangeRequest {
            key: key.to_vec(),
            ..Default::default()
        })),
    }
}

pub(crate) fn delete_op(key: &[u8]) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
            key: key.to_vec(),
            ..Default::default()
        })),
    }
}

/// The key under `prefix` created first (Go's `WithFirstCreate`).
pub(crate) fn first_created(prefix: &[u8]) -> RangeRequest {
    RangeRequest {
        key: prefix.to_vec(),
        range_end: crate::kv::prefix_end(prefix),
        sort_order: SortOrder::Ascend as i32,
        sort_target: SortTarget::Create as i32,
        limit: 1,
        ..Default::default()
    }
}

/// The `i`-th answer of a txn, as a range.
pub(crate) fn range_at(resp: &TxnResponse, i: usize) -> Option<&RangeResponse> {
    match resp.responses.get(i)?.response.as_ref()? {
        Response::ResponseRange(r) => Some(r),
        _ => None,
    }
}

/// Refuses an empty name (a lock, an election, a directory).
pub(crate) fn name_prefix(what: &str, name: &[u8]) -> Result<Vec<u8>> {
    if name.is_empty() {
        return Err(Error::invalid(format!("the {what} name is empty")));
    }
    let mut prefix = name.to_vec();
    prefix.push(b'/');
    Ok(prefix)
}

/// Go's `waitDeletes`: waits until no key under `prefix` created at or before `max_rev`
/// is left, watching only the newest of them (the immediate predecessor) at a time.
pub(crate) async fn wait_deletes(
    etcd: &dyn Etcd,
    prefix: &[u8],
    max_rev: i64,
    deadline: Deadline,
) -> Result<()> {
    loop {
        let resp = etcd
            .range(
                RangeRequest {
                    key: prefix.to_vec(),
                    range_end: crate::kv::prefix_end(prefix),
                    sort_order: SortOrder::Descend as i32,
                    sort_target: SortTarget::Create as i32,
                    limit: 1,
                    max_create_revision: max_rev,
                    ..Default::default()
                },
                deadline,
            )
            .await?;
        let Some(kv) = resp.kvs.first() else {
            return Ok(());
        };
        let rev = resp.header.map_or(0, |h| h.revision);
        wait_delete(etcd, &kv.key, rev, deadline).await?;
    }
}

/// Waits for `key` to be deleted, watching from `rev` (a compaction meanwhile: returns, and
/// the caller looks again).
async fn wait_delete(etcd: &dyn Etcd, key: &[u8], rev: i64, deadline: Deadline) -> Result<()> {
    let w = etcd
        .watcher(
            WatchCreateRequest {
                key: key.to_vec(),
                start_revision: rev,
                ..Default::default()
            },
            deadline,
        )
        .await?;
    loop {
        match crate::runtime::timeout_at(deadline, w.updates.recv()).await {
            Err(_) => return Err(timeout()),
            Ok(None) => {
                return Err(w
                    .updates
                    .error()
                    .unwrap_or_else(|| Error::new(ErrorKind::Closed, "the watch ended")))
            }
            Ok(Some(WatchUpdate::Events { events, .. })) => {
                if events.iter().any(|e| e.r#type == EventType::Delete as i32) {
                    return Ok(());
                }
            }
            Ok(Some(WatchUpdate::Compacted { .. })) => return Ok(()),
            Ok(Some(WatchUpdate::Canceled { reason })) => {
                return Err(Error::new(ErrorKind::Canceled, reason))
            }
            Ok(Some(WatchUpdate::Progress { .. })) => {}
        }
    }
}

pub(crate) fn timeout() -> Error {
    Error::new(ErrorKind::Timeout, "the deadline passed while waiting")
}

/// Sends `item`, waiting while the consumer is full (its room callback wakes `room`).
/// False once the consumer is gone.
pub(crate) async fn send<T: Send + 'static>(feed: &Feed<T>, room: &Notify, mut item: T) -> bool {
    loop {
        match feed.try_send(item) {
            Ok(()) => return true,
            Err(SendError::Closed(_)) => return false,
            Err(SendError::Full(back)) => {
                item = back;
                room.notified().await;
            }
        }
    }
}

/// A `Notify` woken whenever `feed`'s consumer has room again.
pub(crate) fn room_of<T: Send + 'static>(feed: &Feed<T>) -> Arc<Notify> {
    let room = Arc::new(Notify::new());
    let weak = Arc::downgrade(&room);
    feed.on_room(move || {
        if let Some(room) = weak.upgrade() {
            room.notify_one();
        }
    });
    room
}

//! Ordered queues, as etcd v2's in-order keys: enqueue appends `<dir>/<20-digit revision>`,
//! dequeue takes the oldest item atomically — two consumers never get the same one.

use std::ffi::{c_char, c_void};

use super::client::{etcdc_client, launch, CLIENTS};
use super::completion::{etcdc_completion, etcdc_cq, etcdc_op, result};
use super::guard::{bytes, c_str, field, free_box, guard, out, view};
use super::status::etcdc_status;
use crate::recipes::queue;

/// An item of a queue: its key and value. Free with `etcdc_queue_item_free`.
pub struct etcdc_queue_item {
    pub(crate) key: Vec<u8>,
    pub(crate) value: Vec<u8>,
}

/// Appends `value` to the queue in directory `dir` (e.g. `/jobs`). With `item_out` non-NULL,
/// the new item (its key orders by creation) is written there.
#[no_mangle]
pub extern "C" fn etcdc_queue_enqueue(
    client: *const etcdc_client,
    dir: *const c_char,
    value: *const u8,
    value_len: usize,
    timeout_ms: i64,
    item_out: *mut *mut etcdc_queue_item,
) -> etcdc_status {
    guard(|| {
        let value = bytes(value, value_len, "value")?;
        let dir = c_str(dir, "dir")?;
        let c = CLIENTS.get(client)?;
        let deadline = c.deadline(timeout_ms)?;
        let key = c.block(queue::enqueue(&*c.etcd, dir, value, deadline))?;
        super::guard::write_result(
            item_out,
            etcdc_queue_item {
                key,
                value: value.to_vec(),
            },
        );
        Ok(())
    })
}

/// `etcdc_queue_enqueue`, asynchronously (see `etcdc_put_async`):
/// `etcdc_completion_queue_item` is the new item.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn etcdc_queue_enqueue_async(
    client: *const etcdc_client,
    dir: *const c_char,
    value: *const u8,
    value_len: usize,
    timeout_ms: i64,
    cq: *const etcdc_cq,
    tag: *mut c_void,
    op_out: *mut *mut etcdc_op,
) -> etcdc_status {
    launch(client, cq, tag, op_out, |c, etcd| {
        let value = super::guard::bytes(value, value_len, "value")?.to_vec();
        let dir = super::guard::c_str(dir, "dir")?.to_string();
        let deadline = c.deadline(timeout_ms)?;
        Ok(async move {
            let key = crate::recipes::queue::enqueue(&*etcd, &dir, &value, deadline).await?;
            Ok(etcdc_queue_item { key, value })
        })
    })
}

/// Takes the oldest item of the queue in `dir`. With `wait` false, `ETCDC_ERR_NOT_FOUND` when
/// the queue is empty; with `wait` true, waits for an item up to `timeout_ms` (0: the
/// client's timeout; negative: no limit), then `ETCDC_ERR_TIMEOUT`.
#[no_mangle]
pub extern "C" fn etcdc_queue_dequeue(
    client: *const etcdc_client,
    dir: *const c_char,
    wait: bool,
    timeout_ms: i64,
    item_out: *mut *mut etcdc_queue_item,
) -> etcdc_status {
    guard(|| {
        let out = out(item_out, "item_out")?;
        let dir = c_str(dir, "dir")?;
        let c = CLIENTS.get(client)?;
        let deadline = if wait {
            c.wait_deadline(timeout_ms)?
        } else {
            c.deadline(timeout_ms)?
        };
        let kv = c.block(queue::dequeue(&*c.etcd, dir, wait, deadline))?;
        out.write(Box::into_raw(Box::new(etcdc_queue_item {
            key: kv.key,
            value: kv.value,
        })));
        Ok(())
    })
}

/// `etcdc_queue_dequeue`, asynchronously (see `etcdc_put_async`): with `wait`, the
/// completion comes when an item does (or the deadline: negative `timeout_ms` waits without
/// limit) — a consumer in an epoll loop. `etcdc_completion_queue_item` is the item.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn etcdc_queue_dequeue_async(
    client: *const etcdc_client,
    dir: *const c_char,
    wait: bool,
    timeout_ms: i64,
    cq: *const etcdc_cq,
    tag: *mut c_void,
    op_out: *mut *mut etcdc_op,
) -> etcdc_status {
    launch(client, cq, tag, op_out, |c, etcd| {
        let dir = super::guard::c_str(dir, "dir")?.to_string();
        let deadline = if wait {
            c.wait_deadline(timeout_ms)?
        } else {
            c.deadline(timeout_ms)?
        };
        Ok(async move {
            let kv = crate::recipes::queue::dequeue(&*etcd, &dir, wait, deadline).await?;
            Ok(etcdc_queue_item {
                key: kv.key,
                value: kv.value,
            })
        })
    })
}

/// The item's key (length in `*len`).
#[no_mangle]
pub extern "C" fn etcdc_queue_item_key(i: *const etcdc_queue_item, len: *mut usize) -> *const u8 {
    field(i, std::ptr::null(), |i| view(&i.key, len))
}

/// The item's value (length in `*len`).
#[no_mangle]
pub extern "C" fn etcdc_queue_item_value(i: *const etcdc_queue_item, len: *mut usize) -> *const u8 {
    field(i, std::ptr::null(), |i| view(&i.value, len))
}

/// Frees an item. NULL does nothing.
#[no_mangle]
pub extern "C" fn etcdc_queue_item_free(i: *mut etcdc_queue_item) {
    free_box(i)
}

/// A queue item (enqueued or dequeued), borrowed; NULL for another kind or a failure.
#[no_mangle]
pub extern "C" fn etcdc_completion_queue_item(
    c: *const etcdc_completion,
) -> *const etcdc_queue_item {
    result::<etcdc_queue_item>(c)
}

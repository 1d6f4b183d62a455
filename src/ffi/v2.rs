//! The path off cetcd: etcd v2's key space in cetcd's vocabulary, on etcd v3 (see
//! `include/etcdc_v2.h` and docs/migrating-from-cetcd.md). Every call takes the same
//! `etcdc_client` as the rest of the API and returns an `etcdc_status`; a refusal also sets
//! v2's error code, read with `etcdc_v2_last_error_code`.

use std::cell::Cell;
use std::ffi::{c_char, c_int, c_void, CString};

use super::client::{etcdc_client, Client, CLIENTS};
use super::guard::{arg, c_str, clone_box, field, free_box, guard, out, view};
use super::handle::Table;
use super::status::etcdc_status;
use super::stream::{self, CCallback, CItem, StreamHandle};
use crate::error::{Error, ErrorKind, Result};
use crate::recipes::v2::{self, Action, Expect, Node, Refusal, Response, V2Result};

thread_local! {
    static V2_CODE: Cell<c_int> = const { Cell::new(0) };
}

/// v2's error code of the calling thread's last `etcdc_v2_*` call: 0 after a success, else
/// 100 (key not found), 101 (compare failed), 105 (node exists), 108 (directory not empty),
/// 401 (event index cleared), or 0 for a failure v2 had no code for (the etcdc status says
/// what happened).
#[no_mangle]
pub extern "C" fn etcdc_v2_last_error_code() -> c_int {
    V2_CODE.with(|c| c.get())
}

/// What a v2 request did, in cetcd's order and names.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum etcdc_v2_action {
    ETCDC_V2_SET = 0,
    ETCDC_V2_GET = 1,
    ETCDC_V2_UPDATE = 2,
    ETCDC_V2_CREATE = 3,
    ETCDC_V2_DELETE = 4,
    ETCDC_V2_EXPIRE = 5,
    ETCDC_V2_CAS = 6,
    ETCDC_V2_CAD = 7,
}

/// A v2 node: a key and its value, or a directory and its children. Borrowed from the
/// response that holds it.
#[derive(Clone)]
pub struct etcdc_v2_node {
    key: CString,
    value: Vec<u8>,
    dir: bool,
    ttl: i64,
    modified_index: i64,
    created_index: i64,
    nodes: Vec<etcdc_v2_node>,
}

impl From<Node> for etcdc_v2_node {
    fn from(n: Node) -> Self {
        etcdc_v2_node {
            key: super::guard::cstring(&n.key),
            value: n.value,
            dir: n.dir,
            ttl: n.ttl,
            modified_index: n.modified_index,
            created_index: n.created_index,
            nodes: n.nodes.into_iter().map(Into::into).collect(),
        }
    }
}

/// A v2 response (cetcd's `cetcd_response`). Owned: free with `etcdc_v2_response_free`;
/// borrowed for a watch callback (keep it with `etcdc_v2_response_clone`).
#[derive(Clone)]
pub struct etcdc_v2_response {
    action: etcdc_v2_action,
    node: Option<etcdc_v2_node>,
    prev_node: Option<etcdc_v2_node>,
    etcd_index: i64,
    status: etcdc_status,
    error_code: c_int,
    reason: CString,
}

impl From<Response> for etcdc_v2_response {
    fn from(r: Response) -> Self {
        etcdc_v2_response {
            action: match r.action {
                Action::Set => etcdc_v2_action::ETCDC_V2_SET,
                Action::Get => etcdc_v2_action::ETCDC_V2_GET,
                Action::Update => etcdc_v2_action::ETCDC_V2_UPDATE,
                Action::Create => etcdc_v2_action::ETCDC_V2_CREATE,
                Action::Delete => etcdc_v2_action::ETCDC_V2_DELETE,
                Action::Expire => etcdc_v2_action::ETCDC_V2_EXPIRE,
                Action::CompareAndSwap => etcdc_v2_action::ETCDC_V2_CAS,
                Action::CompareAndDelete => etcdc_v2_action::ETCDC_V2_CAD,
            },
            node: r.node.map(Into::into),
            prev_node: r.prev_node.map(Into::into),
            etcd_index: r.etcd_index,
            status: etcdc_status::ETCDC_OK,
            error_code: 0,
            reason: CString::default(),
        }
    }
}

impl CItem<Response> for etcdc_v2_response {
    fn from_item(r: Response) -> Self {
        r.into()
    }

    /// The watch ended: 401 when its index was compacted away.
    fn from_failure(e: Error) -> Self {
        etcdc_v2_response {
            action: etcdc_v2_action::ETCDC_V2_GET,
            node: None,
            prev_node: None,
            etcd_index: 0,
            status: e.kind.into(),
            error_code: if e.kind == ErrorKind::Compacted {
                v2::EVENT_INDEX_CLEARED
            } else {
                0
            },
            reason: super::guard::cstring(&e.message),
        }
    }
}

/// Runs one v2 request: the response to `resp_out`, or the refusal's status, message and
/// v2 code.
fn request(
    client: *const etcdc_client,
    resp_out: *mut *mut etcdc_v2_response,
    call: impl FnOnce(&Client) -> std::result::Result<V2Result, Error>,
) -> etcdc_status {
    V2_CODE.with(|c| c.set(0));
    guard(|| {
        let out = out(resp_out, "resp_out")?;
        let c = CLIENTS.get(client)?;
        match call(&c)? {
            Ok(r) => {
                out.write(Box::into_raw(Box::new(r.into())));
                Ok(())
            }
            Err(Refusal { code, error }) => {
                V2_CODE.with(|c| c.set(code));
                Err(error)
            }
        }
    })
}

fn text<'a>(p: *const c_char, name: &str) -> Result<&'a str> {
    c_str(p, name)
}

/// cetcd's `get`: a key, or a directory's children.
#[no_mangle]
pub extern "C" fn etcdc_v2_get(
    client: *const etcdc_client,
    key: *const c_char,
    resp_out: *mut *mut etcdc_v2_response,
) -> etcdc_status {
    etcdc_v2_lsdir(client, key, true, false, resp_out)
}

/// cetcd's `lsdir`: a directory's children in key order (`sort` is accepted for cetcd's
/// signature: the order is always by key), with `recursive` the whole tree.
#[no_mangle]
pub extern "C" fn etcdc_v2_lsdir(
    client: *const etcdc_client,
    key: *const c_char,
    sort: bool,
    recursive: bool,
    resp_out: *mut *mut etcdc_v2_response,
) -> etcdc_status {
    let _ = sort;
    request(client, resp_out, |c| {
        let key = text(key, "key")?;
        Ok(c.block(v2::lsdir(&*c.etcd, key, recursive, c.deadline(0)?)))
    })
}

/// cetcd's `set`: writes the key whatever it held; `ttl` seconds (0: none) before it expires
/// unless refreshed with `etcdc_v2_update`.
#[no_mangle]
pub extern "C" fn etcdc_v2_set(
    client: *const etcdc_client,
    key: *const c_char,
    value: *const c_char,
    ttl: u64,
    resp_out: *mut *mut etcdc_v2_response,
) -> etcdc_status {
    request(client, resp_out, |c| {
        let (key, value) = (text(key, "key")?, text(value, "value")?);
        Ok(c.block(v2::set(
            &*c.etcd,
            key,
            value.as_bytes(),
            ttl,
            c.deadline(0)?,
        )))
    })
}

/// cetcd's `create` (`prevExist=false`): `ETCDC_ERR_FAILED_PRECONDITION` and v2 code 105
/// when the key exists.
#[no_mangle]
pub extern "C" fn etcdc_v2_create(
    client: *const etcdc_client,
    key: *const c_char,
    value: *const c_char,
    ttl: u64,
    resp_out: *mut *mut etcdc_v2_response,
) -> etcdc_status {
    request(client, resp_out, |c| {
        let (key, value) = (text(key, "key")?, text(value, "value")?);
        Ok(c.block(v2::create(
            &*c.etcd,
            key,
            value.as_bytes(),
            ttl,
            c.deadline(0)?,
        )))
    })
}

/// cetcd's `update` (`prevExist=true`): `ETCDC_ERR_NOT_FOUND` and code 100 when the key is
/// missing. With `refresh` (v2's heartbeat; `value` may be NULL and is ignored) only the TTL
/// is renewed, without a write when the TTL is unchanged — watchers see nothing, as in v2.
#[no_mangle]
pub extern "C" fn etcdc_v2_update(
    client: *const etcdc_client,
    key: *const c_char,
    value: *const c_char,
    ttl: u64,
    refresh: bool,
    resp_out: *mut *mut etcdc_v2_response,
) -> etcdc_status {
    request(client, resp_out, |c| {
        let key = text(key, "key")?;
        let value = if refresh && value.is_null() {
            None
        } else {
            Some(text(value, "value")?.as_bytes())
        };
        Ok(c.block(v2::update(
            &*c.etcd,
            key,
            value,
            ttl,
            refresh,
            c.deadline(0)?,
        )))
    })
}

/// cetcd's `create_in_order`: a new key `<dir>/<20-digit index>`, in creation order (v2's
/// `POST`): queues and v2-style locks.
#[no_mangle]
pub extern "C" fn etcdc_v2_create_in_order(
    client: *const etcdc_client,
    dir: *const c_char,
    value: *const c_char,
    ttl: u64,
    resp_out: *mut *mut etcdc_v2_response,
) -> etcdc_status {
    request(client, resp_out, |c| {
        let (dir, value) = (text(dir, "dir")?, text(value, "value")?);
        Ok(c.block(v2::create_in_order(
            &*c.etcd,
            dir,
            value.as_bytes(),
            ttl,
            c.deadline(0)?,
        )))
    })
}

/// cetcd's `delete`: code 100 when the key is missing.
#[no_mangle]
pub extern "C" fn etcdc_v2_delete(
    client: *const etcdc_client,
    key: *const c_char,
    resp_out: *mut *mut etcdc_v2_response,
) -> etcdc_status {
    request(client, resp_out, |c| {
        let key = text(key, "key")?;
        Ok(c.block(v2::delete(&*c.etcd, key, c.deadline(0)?)))
    })
}

/// cetcd's `rmdir`: with `recursive` the whole tree under `key`; without, code 108 when the
/// directory has children (v3 keeps no empty directories: one is code 100).
#[no_mangle]
pub extern "C" fn etcdc_v2_rmdir(
    client: *const etcdc_client,
    key: *const c_char,
    recursive: bool,
    resp_out: *mut *mut etcdc_v2_response,
) -> etcdc_status {
    request(client, resp_out, |c| {
        let key = text(key, "key")?;
        Ok(c.block(v2::rmdir(&*c.etcd, key, recursive, c.deadline(0)?)))
    })
}

/// cetcd's `cmp_and_swap`: writes only if the value is `prev` (code 101 otherwise, 100 when
/// the key is missing).
#[no_mangle]
pub extern "C" fn etcdc_v2_cmp_and_swap(
    client: *const etcdc_client,
    key: *const c_char,
    value: *const c_char,
    prev: *const c_char,
    ttl: u64,
    resp_out: *mut *mut etcdc_v2_response,
) -> etcdc_status {
    request(client, resp_out, |c| {
        let (key, value, prev) = (
            text(key, "key")?,
            text(value, "value")?,
            text(prev, "prev")?,
        );
        let expect = Expect::Value(prev.as_bytes());
        Ok(c.block(v2::compare_and_swap(
            &*c.etcd,
            key,
            value.as_bytes(),
            expect,
            ttl,
            c.deadline(0)?,
        )))
    })
}

/// cetcd's `cmp_and_swap_by_index`: writes only if the key's modified index is `prev_index`.
#[no_mangle]
pub extern "C" fn etcdc_v2_cmp_and_swap_by_index(
    client: *const etcdc_client,
    key: *const c_char,
    value: *const c_char,
    prev_index: u64,
    ttl: u64,
    resp_out: *mut *mut etcdc_v2_response,
) -> etcdc_status {
    request(client, resp_out, |c| {
        let (key, value) = (text(key, "key")?, text(value, "value")?);
        let expect = Expect::Index(prev_index);
        Ok(c.block(v2::compare_and_swap(
            &*c.etcd,
            key,
            value.as_bytes(),
            expect,
            ttl,
            c.deadline(0)?,
        )))
    })
}

/// cetcd's `cmp_and_delete`: deletes only if the value is `prev`.
#[no_mangle]
pub extern "C" fn etcdc_v2_cmp_and_delete(
    client: *const etcdc_client,
    key: *const c_char,
    prev: *const c_char,
    resp_out: *mut *mut etcdc_v2_response,
) -> etcdc_status {
    request(client, resp_out, |c| {
        let (key, prev) = (text(key, "key")?, text(prev, "prev")?);
        Ok(c.block(v2::compare_and_delete(
            &*c.etcd,
            key,
            Expect::Value(prev.as_bytes()),
            c.deadline(0)?,
        )))
    })
}

/// cetcd's `cmp_and_delete_by_index`: deletes only if the key's modified index is
/// `prev_index`.
#[no_mangle]
pub extern "C" fn etcdc_v2_cmp_and_delete_by_index(
    client: *const etcdc_client,
    key: *const c_char,
    prev_index: u64,
    resp_out: *mut *mut etcdc_v2_response,
) -> etcdc_status {
    request(client, resp_out, |c| {
        let key = text(key, "key")?;
        Ok(c.block(v2::compare_and_delete(
            &*c.etcd,
            key,
            Expect::Index(prev_index),
            c.deadline(0)?,
        )))
    })
}

/// What the request did.
#[no_mangle]
pub extern "C" fn etcdc_v2_response_action(r: *const etcdc_v2_response) -> etcdc_v2_action {
    field(r, etcdc_v2_action::ETCDC_V2_GET, |r| r.action)
}

/// The node written, read or deleted; NULL when none (the last response of an ended watch).
#[no_mangle]
pub extern "C" fn etcdc_v2_response_node(r: *const etcdc_v2_response) -> *const etcdc_v2_node {
    field(r, std::ptr::null(), |r| {
        r.node.as_ref().map_or(std::ptr::null(), |n| n as *const _)
    })
}

/// The node as it was before the request; NULL when there was none.
#[no_mangle]
pub extern "C" fn etcdc_v2_response_prev_node(r: *const etcdc_v2_response) -> *const etcdc_v2_node {
    field(r, std::ptr::null(), |r| {
        r.prev_node
            .as_ref()
            .map_or(std::ptr::null(), |n| n as *const _)
    })
}

/// The store's index (revision) when the request was served: v2's `X-Etcd-Index`.
#[no_mangle]
pub extern "C" fn etcdc_v2_response_etcd_index(r: *const etcdc_v2_response) -> u64 {
    field(r, 0, |r| r.etcd_index.max(0) as u64)
}

/// For a watch's last response: `ETCDC_OK` normally, or why the watch ended.
#[no_mangle]
pub extern "C" fn etcdc_v2_response_status(r: *const etcdc_v2_response) -> etcdc_status {
    field(r, etcdc_status::ETCDC_ERR_INVALID_ARGUMENT, |r| r.status)
}

/// For a watch's last response: v2's error code (401 when the index was cleared), else 0.
#[no_mangle]
pub extern "C" fn etcdc_v2_response_error_code(r: *const etcdc_v2_response) -> c_int {
    field(r, 0, |r| r.error_code)
}

/// For a watch's last response: the message; "" otherwise.
#[no_mangle]
pub extern "C" fn etcdc_v2_response_reason(r: *const etcdc_v2_response) -> *const c_char {
    field(r, c"".as_ptr(), |r| r.reason.as_ptr())
}

/// A copy the caller owns; NULL for NULL.
#[no_mangle]
pub extern "C" fn etcdc_v2_response_clone(r: *const etcdc_v2_response) -> *mut etcdc_v2_response {
    clone_box(r)
}

/// Frees a response. NULL does nothing.
#[no_mangle]
pub extern "C" fn etcdc_v2_response_free(r: *mut etcdc_v2_response) {
    free_box(r)
}

/// The node's key.
#[no_mangle]
pub extern "C" fn etcdc_v2_node_key(n: *const etcdc_v2_node) -> *const c_char {
    field(n, c"".as_ptr(), |n| n.key.as_ptr())
}

/// The node's value (length in `*len`); empty for a directory.
#[no_mangle]
pub extern "C" fn etcdc_v2_node_value(n: *const etcdc_v2_node, len: *mut usize) -> *const u8 {
    field(n, std::ptr::null(), |n| view(&n.value, len))
}

/// True for a directory.
#[no_mangle]
pub extern "C" fn etcdc_v2_node_is_dir(n: *const etcdc_v2_node) -> bool {
    field(n, false, |n| n.dir)
}

/// Seconds left before the key expires; 0 for none.
#[no_mangle]
pub extern "C" fn etcdc_v2_node_ttl(n: *const etcdc_v2_node) -> i64 {
    field(n, 0, |n| n.ttl)
}

/// v2's `modifiedIndex`: the key's mod revision.
#[no_mangle]
pub extern "C" fn etcdc_v2_node_modified_index(n: *const etcdc_v2_node) -> u64 {
    field(n, 0, |n| n.modified_index.max(0) as u64)
}

/// v2's `createdIndex`: the key's create revision.
#[no_mangle]
pub extern "C" fn etcdc_v2_node_created_index(n: *const etcdc_v2_node) -> u64 {
    field(n, 0, |n| n.created_index.max(0) as u64)
}

/// How many children a directory node holds.
#[no_mangle]
pub extern "C" fn etcdc_v2_node_count(n: *const etcdc_v2_node) -> usize {
    field(n, 0, |n| n.nodes.len())
}

/// The `i`-th child, borrowed; NULL when out of range.
#[no_mangle]
pub extern "C" fn etcdc_v2_node_child(n: *const etcdc_v2_node, i: usize) -> *const etcdc_v2_node {
    field(n, std::ptr::null(), |n| {
        n.nodes.get(i).map_or(std::ptr::null(), |c| c as *const _)
    })
}

/// A v2 watch callback, with the same rules as `etcdc_watch_callback`.
#[repr(C)]
pub struct etcdc_v2_watch_callback {
    pub call: Option<unsafe extern "C" fn(user_data: *mut c_void, resp: *const etcdc_v2_response)>,
    pub drop: Option<unsafe extern "C" fn(user_data: *mut c_void)>,
    pub user_data: *mut c_void,
}

/// A v2 watcher (cetcd's `cetcd_watcher`, without its thread). Free with
/// `etcdc_v2_watcher_free`.
pub struct etcdc_v2_watcher {
    _opaque: [u8; 0],
}

/// Stops the forwarding task when the handle goes.
pub(crate) struct Forwarding(tokio::task::JoinHandle<()>);

impl Drop for Forwarding {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub(crate) static V2_WATCHERS: Table<StreamHandle<Response, Forwarding>> =
    Table::new(11, "v2 watcher");

/// cetcd's watchers: every change of `key` (with `recursive`, of everything under it) from
/// `index` on (0: from now), one response per change, to `callback->call` on etcdc's event
/// thread — or with a NULL `callback` queued for `etcdc_v2_watcher_next` / `_fd`. No thread
/// of the caller's runs it, watchers can be added and freed at any time, and none misses an
/// event. An index already compacted away ends it with a response whose error code is 401.
#[no_mangle]
pub extern "C" fn etcdc_v2_watch(
    client: *const etcdc_client,
    key: *const c_char,
    index: u64,
    recursive: bool,
    callback: *const etcdc_v2_watch_callback,
    watcher_out: *mut *mut etcdc_v2_watcher,
) -> etcdc_status {
    let cb = arg(callback, "callback")
        .ok()
        .map(|cb| CCallback::new(cb.call, cb.drop, cb.user_data));
    guard(|| {
        let out = out(watcher_out, "watcher_out")?;
        let key = text(key, "key")?;
        let c = CLIENTS.get(client)?;
        let (feed, stream) = stream::open::<Response, etcdc_v2_response>(cb, 256)?;
        let deadline = c.deadline(0)?;
        let task = c.block(v2::watch(
            c.etcd.clone(),
            key,
            index,
            recursive,
            feed,
            deadline,
        ))?;
        out.write(V2_WATCHERS.insert(StreamHandle::new(stream, Forwarding(task))));
        Ok(())
    })
}

/// Pull form: the next change, waiting up to `timeout_ms` (0: no wait; negative: no limit).
/// Free it with `etcdc_v2_response_free`.
#[no_mangle]
pub extern "C" fn etcdc_v2_watcher_next(
    w: *const etcdc_v2_watcher,
    timeout_ms: i64,
    resp_out: *mut *mut etcdc_v2_response,
) -> etcdc_status {
    stream::next(&V2_WATCHERS, w, timeout_ms, resp_out)
}

/// Pull form: a descriptor readable while a change is waiting.
#[no_mangle]
pub extern "C" fn etcdc_v2_watcher_fd(
    w: *const etcdc_v2_watcher,
    fd_out: *mut c_int,
) -> etcdc_status {
    stream::fd(&V2_WATCHERS, w, fd_out)
}

/// Stops and frees the watcher, with the same callback rules as `etcdc_watch_free`. NULL
/// does nothing.
#[no_mangle]
pub extern "C" fn etcdc_v2_watcher_free(w: *mut etcdc_v2_watcher) -> etcdc_status {
    stream::free(&V2_WATCHERS, w)
}

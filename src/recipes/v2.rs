//! etcd v2's key space on etcd v3, in cetcd's vocabulary, so a service ports call for call:
//! keys are paths, a directory is the prefix `<dir>/` (v3 has no directory nodes: an empty
//! directory does not exist), v2 indexes are v3 revisions (`modifiedIndex` = mod revision,
//! `createdIndex` = create revision, the etcd index = the header revision), and a TTL is a
//! lease of its own per key — it expires unless refreshed (`update` with `refresh`), as in
//! v2. v2's error codes come with every refusal: 100 key not found, 101 compare failed, 105
//! node exists, 108 directory not empty, 401 event index cleared.

use std::collections::BTreeMap;

use super::{created_at, delete_op, get_op, put_op, range_at};
use crate::api::{Deadline, Etcd};
use crate::error::{Error, ErrorKind, Result};
use crate::pb::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::pb::etcdserverpb::*;
use crate::pb::mvccpb::KeyValue;

pub const KEY_NOT_FOUND: i32 = 100;
pub const TEST_FAILED: i32 = 101;
pub const NODE_EXIST: i32 = 105;
pub const DIR_NOT_EMPTY: i32 = 108;
pub const EVENT_INDEX_CLEARED: i32 = 401;

/// What a v2 request did (cetcd's `ETCD_EVENT_ACTION`, in its order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Set,
    Get,
    Update,
    Create,
    Delete,
    Expire,
    CompareAndSwap,
    CompareAndDelete,
}

/// A v2 node: a key with its value, or a directory with its children.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Node {
    pub key: String,
    pub value: Vec<u8>,
    pub dir: bool,
    /// Seconds left before the key expires; 0 for none.
    pub ttl: i64,
    pub modified_index: i64,
    pub created_index: i64,
    pub nodes: Vec<Node>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub action: Action,
    pub node: Option<Node>,
    pub prev_node: Option<Node>,
    /// The store's revision when the request was served (v2's `X-Etcd-Index`).
    pub etcd_index: i64,
}

/// A refusal: the etcdc error and v2's error code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub code: i32,
    pub error: Error,
}

impl From<Error> for Refusal {
    fn from(error: Error) -> Self {
        Refusal { code: 0, error }
    }
}

pub type V2Result = std::result::Result<Response, Refusal>;

fn refuse(code: i32, kind: ErrorKind, text: String) -> Refusal {
    Refusal {
        code,
        error: Error::new(kind, text),
    }
}

fn not_found(key: &str) -> Refusal {
    refuse(
        KEY_NOT_FOUND,
        ErrorKind::NotFound,
        format!("Key not found ({key})"),
    )
}

fn check_key(key: &str) -> Result<()> {
    if !key.starts_with('/') {
        return Err(Error::invalid(format!(
            "a v2 key is a path starting with '/', got {key:?}"
        )));
    }
    Ok(())
}

fn node_of(kv: &KeyValue) -> Node {
    Node {
        key: String::from_utf8_lossy(&kv.key).into_owned(),
        value: kv.value.clone(),
        dir: false,
        ttl: 0,
        modified_index: kv.mod_revision,
        created_index: kv.create_revision,
        nodes: Vec::new(),
    }
}

fn revision(h: &Option<ResponseHeader>) -> i64 {
    h.as_ref().map_or(0, |h| h.revision)
}

/// A lease for `ttl` seconds (0: none).
async fn lease_for(etcd: &dyn Etcd, ttl: u64, deadline: Deadline) -> Result<i64> {
    if ttl == 0 {
        return Ok(0);
    }
    let ttl = i64::try_from(ttl).map_err(|_| Error::invalid("the TTL is too large"))?;
    Ok(etcd
        .lease_grant(LeaseGrantRequest { ttl, id: 0 }, deadline)
        .await?
        .id)
}

/// Refreshes `lease` once (v2's TTL refresh): true when the cluster still had it.
async fn keep_alive_once(etcd: &dyn Etcd, lease: i64, deadline: Deadline) -> Result<bool> {
    use crate::api::LeaseState;
    let (feed, states) = crate::stream::channel(4);
    let _keeper = etcd.keep_alive(lease, feed)?;
    loop {
        match crate::runtime::timeout_at(deadline, states.recv()).await {
            Err(_) => return Err(super::timeout()),
            Ok(None) => return Err(Error::new(ErrorKind::Closed, "the client is closed")),
            Ok(Some(u)) if u.state == LeaseState::Alive => return Ok(true),
            Ok(Some(u)) if u.state == LeaseState::Lost => return Ok(false),
            Ok(Some(_)) => {}
        }
    }
}

/// The seconds left on a key's lease (0 for none).
async fn ttl_of(etcd: &dyn Etcd, kv: &KeyValue, deadline: Deadline) -> Result<i64> {
    if kv.lease == 0 {
        return Ok(0);
    }
    let t = etcd
        .lease_time_to_live(
            LeaseTimeToLiveRequest {
                id: kv.lease,
                keys: false,
            },
            deadline,
        )
        .await?;
    Ok(t.ttl.max(0))
}

fn dir_prefix(key: &str) -> Vec<u8> {
    let mut p = key.trim_end_matches('/').as_bytes().to_vec();
    p.push(b'/');
    p
}

/// The directory tree under `prefix` from its keys: direct children, and with `recursive`
/// the whole tree (without it, a child directory comes without its children).
fn tree(prefix: &[u8], kvs: &[KeyValue], recursive: bool) -> Vec<Node> {
    let mut files: Vec<Node> = Vec::new();
    let mut dirs: BTreeMap<String, Vec<KeyValue>> = BTreeMap::new();
    for kv in kvs {
        let rest = &kv.key[prefix.len()..];
        match rest.iter().position(|b| *b == b'/') {
            None => files.push(node_of(kv)),
            Some(at) => {
                let dir = String::from_utf8_lossy(&kv.key[..prefix.len() + at]).into_owned();
                dirs.entry(dir).or_default().push(kv.clone());
            }
        }
    }
    let mut out: Vec<Node> = files;
    for (dir, kvs) in dirs {
        let mut sub = dir.clone().into_bytes();
        sub.push(b'/');
        out.push(Node {
            nodes: if recursive {
                tree(&sub, &kvs, true)
            } else {
                Vec::new()
            },
            modified_index: kvs.iter().map(|kv| kv.mod_revision).max().unwrap_or(0),
            created_index: kvs.iter().map(|kv| kv.create_revision).min().unwrap_or(0),
            key: dir,
            dir: true,
            ..Default::default()
        });
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

/// cetcd's `get` and `lsdir`: a key, or a directory's children (sorted by key; with
/// `recursive`, the whole tree).
pub async fn lsdir(etcd: &dyn Etcd, key: &str, recursive: bool, deadline: Deadline) -> V2Result {
    check_key(key)?;
    if key != "/" {
        let one = etcd
            .range(
                RangeRequest {
                    key: key.as_bytes().to_vec(),
                    ..Default::default()
                },
                deadline,
            )
            .await?;
        if let Some(kv) = one.kvs.first() {
            let mut node = node_of(kv);
            node.ttl = ttl_of(etcd, kv, deadline).await?;
            return Ok(Response {
                action: Action::Get,
                node: Some(node),
                prev_node: None,
                etcd_index: revision(&one.header),
            });
        }
    }
    let prefix = if key == "/" {
        b"/".to_vec()
    } else {
        dir_prefix(key)
    };
    let all = etcd
        .range(
            RangeRequest {
                key: prefix.clone(),
                range_end: crate::kv::prefix_end(&prefix),
                ..Default::default()
            },
            deadline,
        )
        .await?;
    if all.kvs.is_empty() && key != "/" {
        return Err(not_found(key));
    }
    Ok(Response {
        action: Action::Get,
        node: Some(Node {
            key: key.to_string(),
            dir: true,
            nodes: tree(&prefix, &all.kvs, recursive),
            ..Default::default()
        }),
        prev_node: None,
        etcd_index: revision(&all.header),
    })
}

/// A put under a guard: `compare` must hold (none: always). Returns the txn's answer with
/// the key's previous value read in the same revision.
async fn guarded_put(
    etcd: &dyn Etcd,
    key: &str,
    value: &[u8],
    lease: i64,
    compare: Vec<Compare>,
    deadline: Deadline,
) -> Result<(bool, Option<KeyValue>, i64, Option<KeyValue>)> {
    let k = key.as_bytes();
    let resp = etcd
        .txn(
            TxnRequest {
                compare,
                success: vec![get_op(k), put_op(k, value, lease), get_op(k)],
                failure: vec![get_op(k)],
            },
            deadline,
        )
        .await?;
    let prev = range_at(&resp, 0).and_then(|r| r.kvs.first().cloned());
    let now = range_at(&resp, 2).and_then(|r| r.kvs.first().cloned());
    Ok((resp.succeeded, prev, revision(&resp.header), now))
}

fn written(
    action: Action,
    now: Option<KeyValue>,
    prev: Option<KeyValue>,
    index: i64,
    ttl: u64,
) -> Response {
    Response {
        action,
        node: now.map(|kv| Node {
            ttl: ttl as i64,
            ..node_of(&kv)
        }),
        prev_node: prev.as_ref().map(node_of),
        etcd_index: index,
    }
}

/// cetcd's `set`: writes the key whatever it held, with a TTL in seconds (0: none).
pub async fn set(
    etcd: &dyn Etcd,
    key: &str,
    value: &[u8],
    ttl: u64,
    deadline: Deadline,
) -> V2Result {
    check_key(key)?;
    let lease = lease_for(etcd, ttl, deadline).await?;
    let (_, prev, index, now) = guarded_put(etcd, key, value, lease, vec![], deadline).await?;
    Ok(written(Action::Set, now, prev, index, ttl))
}

/// cetcd's `create` (`prevExist=false`): 105 when the key exists.
pub async fn create(
    etcd: &dyn Etcd,
    key: &str,
    value: &[u8],
    ttl: u64,
    deadline: Deadline,
) -> V2Result {
    check_key(key)?;
    let lease = lease_for(etcd, ttl, deadline).await?;
    let (ok, prev, index, now) = guarded_put(
        etcd,
        key,
        value,
        lease,
        vec![created_at(key.as_bytes(), 0)],
        deadline,
    )
    .await?;
    if !ok {
        revoke_unused(etcd, lease, deadline).await;
        return Err(refuse(
            NODE_EXIST,
            ErrorKind::FailedPrecondition,
            format!("Key already exists ({key})"),
        ));
    }
    Ok(written(Action::Create, now, prev, index, ttl))
}

async fn revoke_unused(etcd: &dyn Etcd, lease: i64, deadline: Deadline) {
    if lease != 0 {
        let _ = etcd
            .lease_revoke(LeaseRevokeRequest { id: lease }, deadline)
            .await;
    }
}

/// cetcd's `update` (`prevExist=true`): 100 when the key is missing. With `refresh` (v2's
/// heartbeat), `value` is ignored and only the TTL is renewed: a key whose lease has the same
/// TTL is refreshed without a write (watchers see nothing, as in v2); another TTL moves the
/// key to a new lease.
pub async fn update(
    etcd: &dyn Etcd,
    key: &str,
    value: Option<&[u8]>,
    ttl: u64,
    refresh: bool,
    deadline: Deadline,
) -> V2Result {
    check_key(key)?;
    let current = etcd
        .range(
            RangeRequest {
                key: key.as_bytes().to_vec(),
                ..Default::default()
            },
            deadline,
        )
        .await?;
    let Some(kv) = current.kvs.first().cloned() else {
        return Err(not_found(key));
    };
    if refresh && kv.lease != 0 {
        let granted = etcd
            .lease_time_to_live(
                LeaseTimeToLiveRequest {
                    id: kv.lease,
                    keys: false,
                },
                deadline,
            )
            .await?
            .granted_ttl;
        if granted as u64 == ttl {
            if keep_alive_once(etcd, kv.lease, deadline).await? {
                return Ok(Response {
                    action: Action::Update,
                    node: Some(Node {
                        ttl: ttl as i64,
                        ..node_of(&kv)
                    }),
                    prev_node: Some(node_of(&kv)),
                    etcd_index: revision(&current.header),
                });
            }
            return Err(not_found(key));
        }
    }
    let value = if refresh {
        kv.value.clone()
    } else {
        value.unwrap_or_default().to_vec()
    };
    let lease = lease_for(etcd, ttl, deadline).await?;
    // Only if the key is still the one read: otherwise it was deleted or replaced meanwhile.
    let (ok, prev, index, now) = guarded_put(
        etcd,
        key,
        &value,
        lease,
        vec![created_at(key.as_bytes(), kv.create_revision)],
        deadline,
    )
    .await?;
    if !ok {
        revoke_unused(etcd, lease, deadline).await;
        return Err(not_found(key));
    }
    Ok(written(Action::Update, now, prev, index, ttl))
}

/// cetcd's `cmp_and_swap` (by value) and `cmp_and_swap_by_index` (by modified index):
/// 100 when the key is missing, 101 when the comparison fails.
pub async fn compare_and_swap(
    etcd: &dyn Etcd,
    key: &str,
    value: &[u8],
    expect: Expect<'_>,
    ttl: u64,
    deadline: Deadline,
) -> V2Result {
    check_key(key)?;
    let lease = lease_for(etcd, ttl, deadline).await?;
    let (ok, prev, index, now) =
        guarded_put(etcd, key, value, lease, vec![expect.compare(key)], deadline).await?;
    if !ok {
        revoke_unused(etcd, lease, deadline).await;
        return Err(match prev {
            None => not_found(key),
            Some(kv) => expect.failed(key, &kv),
        });
    }
    Ok(written(Action::CompareAndSwap, now, prev, index, ttl))
}

/// What a v2 compare-and-* expects: `prevValue` or `prevIndex`.
#[derive(Clone, Copy, Debug)]
pub enum Expect<'a> {
    Value(&'a [u8]),
    Index(u64),
}

impl Expect<'_> {
    fn compare(&self, key: &str) -> Compare {
        let (target, union) = match self {
            Expect::Value(v) => (CompareTarget::Value, TargetUnion::Value(v.to_vec())),
            Expect::Index(i) => (CompareTarget::Mod, TargetUnion::ModRevision(*i as i64)),
        };
        Compare {
            result: CompareResult::Equal as i32,
            target: target as i32,
            key: key.as_bytes().to_vec(),
            range_end: Vec::new(),
            target_union: Some(union),
        }
    }

    fn failed(&self, key: &str, kv: &KeyValue) -> Refusal {
        let text = match self {
            Expect::Value(v) => format!(
                "Compare failed ([{} != {}]) ({key})",
                String::from_utf8_lossy(v),
                String::from_utf8_lossy(&kv.value)
            ),
            Expect::Index(i) => format!("Compare failed ([{i} != {}]) ({key})", kv.mod_revision),
        };
        refuse(TEST_FAILED, ErrorKind::CompareFailed, text)
    }
}

/// cetcd's `delete`: 100 when the key is missing.
pub async fn delete(etcd: &dyn Etcd, key: &str, deadline: Deadline) -> V2Result {
    compare_and_delete_inner(etcd, key, None, deadline).await
}

/// cetcd's `cmp_and_delete` / `cmp_and_delete_by_index`.
pub async fn compare_and_delete(
    etcd: &dyn Etcd,
    key: &str,
    expect: Expect<'_>,
    deadline: Deadline,
) -> V2Result {
    compare_and_delete_inner(etcd, key, Some(expect), deadline).await
}

async fn compare_and_delete_inner(
    etcd: &dyn Etcd,
    key: &str,
    expect: Option<Expect<'_>>,
    deadline: Deadline,
) -> V2Result {
    check_key(key)?;
    let k = key.as_bytes();
    let resp = etcd
        .txn(
            TxnRequest {
                compare: expect
                    .map(|e| vec![e.compare(key)])
                    .unwrap_or_else(|| vec![compare_exists(k)]),
                success: vec![get_op(k), delete_op(k)],
                failure: vec![get_op(k)],
            },
            deadline,
        )
        .await?;
    let prev = range_at(&resp, 0).and_then(|r| r.kvs.first().cloned());
    let index = revision(&resp.header);
    match (resp.succeeded, prev, expect) {
        (true, Some(prev), e) => Ok(Response {
            action: if e.is_some() {
                Action::CompareAndDelete
            } else {
                Action::Delete
            },
            node: Some(Node {
                key: key.to_string(),
                modified_index: index,
                created_index: prev.create_revision,
                ..Default::default()
            }),
            prev_node: Some(node_of(&prev)),
            etcd_index: index,
        }),
        (_, None, _) => Err(not_found(key)),
        (false, Some(kv), Some(e)) => Err(e.failed(key, &kv)),
        (_, Some(_), None) => Err(not_found(key)),
    }
}

/// "The key exists": its create revision is above 0.
fn compare_exists(key: &[u8]) -> Compare {
    Compare {
        result: CompareResult::Greater as i32,
        target: CompareTarget::Create as i32,
        key: key.to_vec(),
        range_end: Vec::new(),
        target_union: Some(TargetUnion::CreateRevision(0)),
    }
}

/// cetcd's `rmdir`: with `recursive`, deletes the directory's whole tree; without, 108 when
/// it has children (v3 has no empty directories: an empty one is 100).
pub async fn rmdir(etcd: &dyn Etcd, key: &str, recursive: bool, deadline: Deadline) -> V2Result {
    check_key(key)?;
    let prefix = dir_prefix(key);
    if !recursive {
        let any = etcd
            .range(
                RangeRequest {
                    key: prefix.clone(),
                    range_end: crate::kv::prefix_end(&prefix),
                    count_only: true,
                    ..Default::default()
                },
                deadline,
            )
            .await?;
        return Err(if any.count > 0 {
            refuse(
                DIR_NOT_EMPTY,
                ErrorKind::FailedPrecondition,
                format!("Directory not empty ({key})"),
            )
        } else {
            not_found(key)
        });
    }
    let gone = etcd
        .delete_range(
            DeleteRangeRequest {
                key: prefix.clone(),
                range_end: crate::kv::prefix_end(&prefix),
                ..Default::default()
            },
            deadline,
        )
        .await?;
    if gone.deleted == 0 {
        return Err(not_found(key));
    }
    let index = revision(&gone.header);
    Ok(Response {
        action: Action::Delete,
        node: Some(Node {
            key: key.to_string(),
            dir: true,
            modified_index: index,
            ..Default::default()
        }),
        prev_node: None,
        etcd_index: index,
    })
}

/// cetcd's `create_in_order`: a new key `<dir>/<20-digit index>` in creation order.
pub async fn create_in_order(
    etcd: &dyn Etcd,
    dir: &str,
    value: &[u8],
    ttl: u64,
    deadline: Deadline,
) -> V2Result {
    check_key(dir)?;
    let lease = lease_for(etcd, ttl, deadline).await?;
    let key = super::queue::enqueue_leased(etcd, dir, value, lease, deadline).await?;
    let now = etcd
        .range(
            RangeRequest {
                key: key.clone(),
                ..Default::default()
            },
            deadline,
        )
        .await?;
    let kv = now
        .kvs
        .first()
        .ok_or_else(|| not_found(&String::from_utf8_lossy(&key)))?;
    Ok(written(
        Action::Create,
        Some(kv.clone()),
        None,
        revision(&now.header),
        ttl,
    ))
}

/// The v2 response for one watch event.
pub fn event(e: &crate::pb::mvccpb::Event, index: i64) -> Response {
    use crate::pb::mvccpb::event::EventType;
    let kv = e.kv.clone().unwrap_or_default();
    let deleted = e.r#type == EventType::Delete as i32;
    Response {
        action: if deleted {
            Action::Delete
        } else if kv.version == 1 {
            Action::Create
        } else {
            Action::Set
        },
        node: Some(node_of(&kv)),
        prev_node: e.prev_kv.as_ref().map(node_of),
        etcd_index: index,
    }
}

/// cetcd's watchers: every change of `key` (with `recursive`, of everything under it) from
/// index `index` on (0: from now), one response per change, until the consumer closes its
/// stream. A start index already compacted ends the stream with `Compacted` (v2's 401).
pub async fn watch(
    etcd: std::sync::Arc<dyn Etcd>,
    key: &str,
    index: u64,
    recursive: bool,
    updates: crate::stream::Feed<Response>,
    deadline: Deadline,
) -> Result<tokio::task::JoinHandle<()>> {
    use crate::api::WatchUpdate;
    check_key(key)?;
    let (start, end) = if recursive {
        let start = key.trim_end_matches('/').as_bytes().to_vec();
        let end = crate::kv::prefix_end(&start);
        (start, end)
    } else {
        (key.as_bytes().to_vec(), Vec::new())
    };
    let w = etcd
        .watcher(
            WatchCreateRequest {
                key: start,
                range_end: end,
                start_revision: i64::try_from(index)
                    .map_err(|_| Error::invalid("index too large"))?,
                prev_kv: true,
                ..Default::default()
            },
            deadline,
        )
        .await?;
    Ok(tokio::spawn(async move {
        // The whole watcher, its control too (a field-wise capture would drop the control
        // here, and with it the watch).
        let w = w;
        let room = super::room_of(&updates);
        loop {
            match w.updates.recv().await {
                Some(WatchUpdate::Events { header, events }) => {
                    for e in &events {
                        if !super::send(&updates, &room, event(e, header.revision)).await {
                            return;
                        }
                    }
                }
                Some(WatchUpdate::Progress { .. }) => {}
                Some(WatchUpdate::Compacted {
                    compact_revision, ..
                }) => {
                    updates.fail(Error::new(
                        ErrorKind::Compacted,
                        format!(
                            "The event in requested index is outdated and cleared (the \
                             requested history has been cleared [{compact_revision}/{index}])"
                        ),
                    ));
                    return;
                }
                Some(WatchUpdate::Canceled { reason }) => {
                    updates.fail(Error::new(ErrorKind::Canceled, reason));
                    return;
                }
                None => {
                    updates.fail(
                        w.updates
                            .error()
                            .unwrap_or_else(|| Error::new(ErrorKind::Closed, "the watch ended")),
                    );
                    return;
                }
            }
        }
    }))
}

//! The behaviour suite: every case runs against every backend. A difference between real
//! etcd and another backend is a bug in that backend.

mod support;

use std::time::Duration;

use etcdc::api::{LeaseState, WatchUpdate};
use etcdc::pb::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use etcdc::pb::etcdserverpb::range_request::{SortOrder, SortTarget};
use etcdc::pb::etcdserverpb::request_op::Request;
use etcdc::pb::etcdserverpb::response_op::Response;
use etcdc::pb::etcdserverpb::watch_create_request::FilterType;
use etcdc::pb::etcdserverpb::*;
use etcdc::pb::mvccpb::event::EventType;
use etcdc::{ErrorKind, Etcd};
use support::{dl, put, put_rev};

fn get(key: &str) -> RangeRequest {
    RangeRequest {
        key: key.into(),
        ..Default::default()
    }
}

/// The range end that makes `key` a prefix (etcd's `GetPrefixRangeEnd`).
fn prefix_end(key: &str) -> Vec<u8> {
    etcdc::kv::prefix_end(key.as_bytes())
}

fn keys(resp: &RangeResponse) -> Vec<String> {
    resp.kvs
        .iter()
        .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
        .collect()
}

async fn next_update(w: &mut etcdc::api::Watcher) -> WatchUpdate {
    tokio::time::timeout(Duration::from_secs(10), w.updates.recv())
        .await
        .expect("a watch update within 10 s")
        .expect("watch open")
}

/// The events of the next update that carries events, skipping progress notifications.
async fn next_events(w: &mut etcdc::api::Watcher) -> Vec<etcdc::pb::mvccpb::Event> {
    loop {
        match next_update(w).await {
            WatchUpdate::Events { events, .. } => return events,
            WatchUpdate::Progress { .. } => continue,
            other => panic!("expected events, got {other:?}"),
        }
    }
}

pub async fn put_then_get_returns_value_and_revisions(e: &dyn Etcd) {
    let r1 = put_rev(e, "/a", "1").await;
    let r2 = put_rev(e, "/a", "2").await;
    assert_eq!(r2, r1 + 1);
    let g = e.range(get("/a"), dl()).await.unwrap();
    assert_eq!(g.count, 1);
    let kv = &g.kvs[0];
    assert_eq!(kv.value, b"2");
    assert_eq!(kv.create_revision, r1);
    assert_eq!(kv.mod_revision, r2);
    assert_eq!(kv.version, 2);
    assert_eq!(kv.lease, 0);
    assert_eq!(g.header.unwrap().revision, r2);
    let missing = e.range(get("/missing"), dl()).await.unwrap();
    assert!(missing.kvs.is_empty());
    assert_eq!(missing.count, 0);
}

pub async fn put_options_prev_kv_ignore_value_ignore_lease(e: &dyn Etcd) {
    let lease = e
        .lease_grant(LeaseGrantRequest { ttl: 60, id: 0 }, dl())
        .await
        .unwrap()
        .id;
    e.put(
        PutRequest {
            lease,
            ..put("/k", "v1")
        },
        dl(),
    )
    .await
    .unwrap();
    let p = e
        .put(
            PutRequest {
                prev_kv: true,
                ignore_lease: true,
                ..put("/k", "v2")
            },
            dl(),
        )
        .await
        .unwrap();
    assert_eq!(p.prev_kv.unwrap().value, b"v1");
    let p = e
        .put(
            PutRequest {
                key: "/k".into(),
                ignore_value: true,
                lease: 0,
                prev_kv: true,
                ..Default::default()
            },
            dl(),
        )
        .await
        .unwrap();
    assert_eq!(p.prev_kv.unwrap().lease, lease);
    let kv = e.range(get("/k"), dl()).await.unwrap().kvs.remove(0);
    assert_eq!(kv.value, b"v2", "ignore_value keeps the value");
    assert_eq!(kv.lease, 0, "the second put dropped the lease");
    // ignore_value on a missing key is etcd's "key not found".
    let err = e
        .put(
            PutRequest {
                key: "/nope".into(),
                ignore_value: true,
                ..Default::default()
            },
            dl(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound, "{err}");
}

pub async fn get_prefix_range_fromkey_limit_sort(e: &dyn Etcd) {
    for k in ["/p/a", "/p/b", "/p/c", "/q", "/r"] {
        e.put(put(k, k), dl()).await.unwrap();
    }
    let pre = e
        .range(
            RangeRequest {
                range_end: prefix_end("/p/"),
                ..get("/p/")
            },
            dl(),
        )
        .await
        .unwrap();
    assert_eq!(keys(&pre), ["/p/a", "/p/b", "/p/c"]);
    let range = e
        .range(
            RangeRequest {
                range_end: "/p/c".into(),
                ..get("/p/b")
            },
            dl(),
        )
        .await
        .unwrap();
    assert_eq!(keys(&range), ["/p/b"]);
    let from = e
        .range(
            RangeRequest {
                range_end: vec![0],
                ..get("/q")
            },
            dl(),
        )
        .await
        .unwrap();
    assert_eq!(keys(&from), ["/q", "/r"]);
    let limited = e
        .range(
            RangeRequest {
                range_end: prefix_end("/p/"),
                limit: 2,
                sort_order: SortOrder::Descend as i32,
                sort_target: SortTarget::Key as i32,
                ..get("/p/")
            },
            dl(),
        )
        .await
        .unwrap();
    assert_eq!(keys(&limited), ["/p/c", "/p/b"]);
    assert!(limited.more);
    assert_eq!(limited.count, 3);
    let keys_only = e
        .range(
            RangeRequest {
                range_end: prefix_end("/p/"),
                keys_only: true,
                ..get("/p/")
            },
            dl(),
        )
        .await
        .unwrap();
    assert!(keys_only.kvs.iter().all(|kv| kv.value.is_empty()));
    assert_eq!(keys_only.kvs.len(), 3);
    let count = e
        .range(
            RangeRequest {
                range_end: prefix_end("/p/"),
                count_only: true,
                ..get("/p/")
            },
            dl(),
        )
        .await
        .unwrap();
    assert!(count.kvs.is_empty());
    assert_eq!(count.count, 3);
}

pub async fn get_at_revision_and_revision_filters(e: &dyn Etcd) {
    let r1 = e
        .put(put("/h", "old"), dl())
        .await
        .unwrap()
        .header
        .unwrap()
        .revision;
    let r2 = e
        .put(put("/h", "new"), dl())
        .await
        .unwrap()
        .header
        .unwrap()
        .revision;
    e.put(put("/h2", "x"), dl()).await.unwrap();
    let old = e
        .range(
            RangeRequest {
                revision: r1,
                ..get("/h")
            },
            dl(),
        )
        .await
        .unwrap();
    assert_eq!(old.kvs[0].value, b"old");
    let future = e
        .range(
            RangeRequest {
                revision: r2 + 100,
                ..get("/h")
            },
            dl(),
        )
        .await
        .unwrap_err();
    assert_eq!(future.kind, ErrorKind::FutureRevision);
    assert_eq!(
        future.message,
        "etcdserver: mvcc: required revision is a future revision"
    );
    let modded = e
        .range(
            RangeRequest {
                range_end: prefix_end("/h"),
                min_mod_revision: r2,
                max_create_revision: r2,
                ..get("/h")
            },
            dl(),
        )
        .await
        .unwrap();
    assert_eq!(keys(&modded), ["/h"]);
}

pub async fn delete_key_prefix_and_range_with_prev_kv(e: &dyn Etcd) {
    for k in ["/d/1", "/d/2", "/d/3", "/e"] {
        e.put(put(k, "v"), dl()).await.unwrap();
    }
    let one = e
        .delete_range(
            DeleteRangeRequest {
                key: "/e".into(),
                prev_kv: true,
                ..Default::default()
            },
            dl(),
        )
        .await
        .unwrap();
    assert_eq!(one.deleted, 1);
    assert_eq!(one.prev_kvs[0].key, b"/e");
    let none = e
        .delete_range(
            DeleteRangeRequest {
                key: "/e".into(),
                ..Default::default()
            },
            dl(),
        )
        .await
        .unwrap();
    assert_eq!(none.deleted, 0);
    let range = e
        .delete_range(
            DeleteRangeRequest {
                key: "/d/1".into(),
                range_end: "/d/3".into(),
                ..Default::default()
            },
            dl(),
        )
        .await
        .unwrap();
    assert_eq!(range.deleted, 2);
    let prefix = e
        .delete_range(
            DeleteRangeRequest {
                key: "/d/".into(),
                range_end: prefix_end("/d/"),
                prev_kv: true,
            },
            dl(),
        )
        .await
        .unwrap();
    assert_eq!(prefix.deleted, 1);
    assert_eq!(prefix.prev_kvs[0].key, b"/d/3");
}

fn cmp(key: &str, target: CompareTarget, result: CompareResult, value: TargetUnion) -> Compare {
    Compare {
        key: key.into(),
        target: target as i32,
        result: result as i32,
        target_union: Some(value),
        range_end: vec![],
    }
}

fn op_put(key: &str, value: &str) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestPut(put(key, value))),
    }
}

pub async fn txn_compare_and_swap_all_targets(e: &dyn Etcd) {
    // Create-if-absent: create_revision == 0.
    let create = TxnRequest {
        compare: vec![cmp(
            "/cas",
            CompareTarget::Create,
            CompareResult::Equal,
            TargetUnion::CreateRevision(0),
        )],
        success: vec![op_put("/cas", "v1")],
        failure: vec![RequestOp {
            request: Some(Request::RequestRange(get("/cas"))),
        }],
    };
    let t = e.txn(create.clone(), dl()).await.unwrap();
    assert!(t.succeeded);
    let t = e.txn(create, dl()).await.unwrap();
    assert!(!t.succeeded);
    match &t.responses[0].response {
        Some(Response::ResponseRange(r)) => assert_eq!(r.kvs[0].value, b"v1"),
        other => panic!("expected a range response, got {other:?}"),
    }
    let swap = |from: &str, to: &str| TxnRequest {
        compare: vec![cmp(
            "/cas",
            CompareTarget::Value,
            CompareResult::Equal,
            TargetUnion::Value(from.into()),
        )],
        success: vec![op_put("/cas", to)],
        failure: vec![],
    };
    assert!(e.txn(swap("v1", "v2"), dl()).await.unwrap().succeeded);
    assert!(!e.txn(swap("v1", "v3"), dl()).await.unwrap().succeeded);
    let kv = e.range(get("/cas"), dl()).await.unwrap().kvs.remove(0);
    let checks = [
        (
            CompareTarget::Version,
            CompareResult::Equal,
            TargetUnion::Version(2),
            true,
        ),
        (
            CompareTarget::Version,
            CompareResult::Greater,
            TargetUnion::Version(2),
            false,
        ),
        (
            CompareTarget::Mod,
            CompareResult::Equal,
            TargetUnion::ModRevision(kv.mod_revision),
            true,
        ),
        (
            CompareTarget::Mod,
            CompareResult::Less,
            TargetUnion::ModRevision(kv.mod_revision),
            false,
        ),
        (
            CompareTarget::Create,
            CompareResult::Less,
            TargetUnion::CreateRevision(kv.mod_revision),
            true,
        ),
        (
            CompareTarget::Create,
            CompareResult::NotEqual,
            TargetUnion::CreateRevision(kv.create_revision),
            false,
        ),
        (
            CompareTarget::Lease,
            CompareResult::Equal,
            TargetUnion::Lease(0),
            true,
        ),
        (
            CompareTarget::Value,
            CompareResult::Greater,
            TargetUnion::Value("v1".into()),
            true,
        ),
    ];
    for (target, result, value, expect) in checks {
        let req = TxnRequest {
            compare: vec![cmp("/cas", target, result, value.clone())],
            ..Default::default()
        };
        let got = e.txn(req, dl()).await.unwrap().succeeded;
        assert_eq!(got, expect, "{target:?} {result:?} {value:?}");
    }
}

pub async fn txn_nested_and_limits(e: &dyn Etcd) {
    let inner = TxnRequest {
        compare: vec![],
        success: vec![op_put("/n/inner", "x")],
        failure: vec![],
    };
    let outer = TxnRequest {
        compare: vec![],
        success: vec![
            op_put("/n/outer", "y"),
            RequestOp {
                request: Some(Request::RequestTxn(inner)),
            },
            RequestOp {
                request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                    key: "/n/none".into(),
                    ..Default::default()
                })),
            },
        ],
        failure: vec![],
    };
    let t = e.txn(outer, dl()).await.unwrap();
    assert!(t.succeeded);
    assert!(matches!(&t.responses[1].response, Some(Response::ResponseTxn(n)) if n.succeeded));
    assert!(
        matches!(&t.responses[2].response, Some(Response::ResponseDeleteRange(d)) if d.deleted == 0)
    );
    let both = e
        .range(
            RangeRequest {
                range_end: prefix_end("/n/"),
                ..get("/n/")
            },
            dl(),
        )
        .await
        .unwrap();
    assert_eq!(keys(&both), ["/n/inner", "/n/outer"]);
    assert_eq!(
        both.kvs[0].mod_revision, both.kvs[1].mod_revision,
        "one revision for the txn"
    );

    let many = TxnRequest {
        success: (0..129)
            .map(|i| op_put(&format!("/many/{i}"), "v"))
            .collect(),
        ..Default::default()
    };
    let err = e.txn(many, dl()).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::TooManyOps);
    assert_eq!(
        err.message,
        "etcdserver: too many operations in txn request"
    );
    let dup = TxnRequest {
        success: vec![op_put("/dup", "1"), op_put("/dup", "2")],
        ..Default::default()
    };
    let err = e.txn(dup, dl()).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidArgument);
    assert_eq!(
        err.message,
        "etcdserver: duplicate key given in txn request"
    );
}

pub async fn oversize_requests_are_refused(e: &dyn Etcd) {
    let two_mib = vec![b'x'; 2 * 1024 * 1024];
    let err = e
        .put(
            PutRequest {
                key: "/big".into(),
                value: two_mib,
                ..Default::default()
            },
            dl(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::TooLarge, "{err}");
    let over_server = vec![b'x'; 1024 * 1024 * 3 / 2 + 1024];
    let err = e
        .put(
            PutRequest {
                key: "/big".into(),
                value: over_server,
                ..Default::default()
            },
            dl(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::TooLarge, "{err}");
    assert_eq!(err.message, "etcdserver: request is too large");
    assert!(e.range(get("/big"), dl()).await.unwrap().kvs.is_empty());
    let err = e.range(get(""), dl()).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidArgument);
    assert_eq!(err.message, "etcdserver: key is not provided");
}

pub async fn compaction_makes_old_revisions_unreadable(e: &dyn Etcd) {
    let r1 = e
        .put(put("/c", "1"), dl())
        .await
        .unwrap()
        .header
        .unwrap()
        .revision;
    let r2 = e
        .put(put("/c", "2"), dl())
        .await
        .unwrap()
        .header
        .unwrap()
        .revision;
    e.compact(
        CompactionRequest {
            revision: r2,
            physical: true,
        },
        dl(),
    )
    .await
    .unwrap();
    let err = e
        .range(
            RangeRequest {
                revision: r1,
                ..get("/c")
            },
            dl(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Compacted);
    assert_eq!(
        err.message,
        "etcdserver: mvcc: required revision has been compacted"
    );
    let again = e
        .compact(
            CompactionRequest {
                revision: r1,
                physical: false,
            },
            dl(),
        )
        .await
        .unwrap_err();
    assert_eq!(again.kind, ErrorKind::Compacted);
    let cur = e
        .range(
            RangeRequest {
                revision: r2,
                ..get("/c")
            },
            dl(),
        )
        .await
        .unwrap();
    assert_eq!(cur.kvs[0].value, b"2");
}

pub async fn watch_delivers_every_event_in_order(e: &dyn Etcd) {
    let mut w = e
        .watcher(
            WatchCreateRequest {
                key: "/w/".into(),
                range_end: prefix_end("/w/"),
                prev_kv: true,
                ..Default::default()
            },
            dl(),
        )
        .await
        .unwrap();
    let mut revs = Vec::new();
    for i in 0..20 {
        revs.push(put_rev(e, format!("/w/{}", i % 3), i.to_string()).await);
    }
    e.put(put("/other", "x"), dl()).await.unwrap();
    let d = e
        .delete_range(
            DeleteRangeRequest {
                key: "/w/0".into(),
                ..Default::default()
            },
            dl(),
        )
        .await
        .unwrap();
    revs.push(d.header.unwrap().revision);
    let mut seen = Vec::new();
    while seen.len() < revs.len() {
        for ev in next_events(&mut w).await {
            seen.push(ev.kv.as_ref().unwrap().mod_revision);
            if seen.len() == revs.len() {
                assert_eq!(ev.r#type, EventType::Delete as i32);
                assert_eq!(ev.prev_kv.as_ref().unwrap().value, b"18");
            } else if seen.len() > 3 {
                assert!(ev.prev_kv.is_some(), "prev_kv asked for");
            }
        }
    }
    assert_eq!(seen, revs);
}

pub async fn watch_filters_start_revision_and_txn_atomicity(e: &dyn Etcd) {
    let r0 = e
        .put(put("/f/a", "1"), dl())
        .await
        .unwrap()
        .header
        .unwrap()
        .revision;
    e.delete_range(
        DeleteRangeRequest {
            key: "/f/a".into(),
            ..Default::default()
        },
        dl(),
    )
    .await
    .unwrap();
    // From a past revision, deletes filtered out: only the first put.
    let mut w = e
        .watcher(
            WatchCreateRequest {
                key: "/f/".into(),
                range_end: prefix_end("/f/"),
                start_revision: r0,
                filters: vec![FilterType::Nodelete as i32],
                ..Default::default()
            },
            dl(),
        )
        .await
        .unwrap();
    let evs = next_events(&mut w).await;
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].kv.as_ref().unwrap().mod_revision, r0);
    // One txn of three puts arrives as one batch.
    let txn = TxnRequest {
        success: vec![
            op_put("/f/x", "1"),
            op_put("/f/y", "2"),
            op_put("/f/z", "3"),
        ],
        ..Default::default()
    };
    e.txn(txn, dl()).await.unwrap();
    let evs = next_events(&mut w).await;
    assert_eq!(evs.len(), 3);
    let rev = evs[0].kv.as_ref().unwrap().mod_revision;
    assert!(evs
        .iter()
        .all(|ev| ev.kv.as_ref().unwrap().mod_revision == rev));
}

pub async fn watch_from_compacted_revision_reports_compaction(e: &dyn Etcd) {
    let r1 = e
        .put(put("/wc", "1"), dl())
        .await
        .unwrap()
        .header
        .unwrap()
        .revision;
    let r2 = e
        .put(put("/wc", "2"), dl())
        .await
        .unwrap()
        .header
        .unwrap()
        .revision;
    e.compact(
        CompactionRequest {
            revision: r2,
            physical: true,
        },
        dl(),
    )
    .await
    .unwrap();
    let mut w = e
        .watcher(
            WatchCreateRequest {
                key: "/wc".into(),
                start_revision: r1,
                ..Default::default()
            },
            dl(),
        )
        .await
        .unwrap();
    match next_update(&mut w).await {
        WatchUpdate::Compacted {
            compact_revision, ..
        } => assert_eq!(compact_revision, r2),
        other => panic!("expected compaction, got {other:?}"),
    }
    assert!(
        w.updates.recv().await.is_none(),
        "the watch ends after a compaction"
    );
}

pub async fn watch_progress_on_request(e: &dyn Etcd) {
    let r = e
        .put(put("/prog", "1"), dl())
        .await
        .unwrap()
        .header
        .unwrap()
        .revision;
    let mut w = e
        .watcher(
            WatchCreateRequest {
                key: "/prog-none".into(),
                ..Default::default()
            },
            dl(),
        )
        .await
        .unwrap();
    w.control.request_progress();
    match next_update(&mut w).await {
        WatchUpdate::Progress { header } => assert!(header.revision >= r),
        other => panic!("expected progress, got {other:?}"),
    }
}

pub async fn watch_cancel_stops_delivery(e: &dyn Etcd) {
    let w = e
        .watcher(
            WatchCreateRequest {
                key: "/x".into(),
                ..Default::default()
            },
            dl(),
        )
        .await
        .unwrap();
    let mut w2 = e
        .watcher(
            WatchCreateRequest {
                key: "/x".into(),
                ..Default::default()
            },
            dl(),
        )
        .await
        .unwrap();
    drop(w);
    e.put(put("/x", "1"), dl()).await.unwrap();
    assert_eq!(
        next_events(&mut w2).await.len(),
        1,
        "the other watch on the stream goes on"
    );
}

pub async fn lease_grant_ttl_list_revoke(e: &dyn Etcd) {
    let g = e
        .lease_grant(LeaseGrantRequest { ttl: 30, id: 0 }, dl())
        .await
        .unwrap();
    assert!(g.id > 0);
    assert_eq!(g.ttl, 30);
    e.put(
        PutRequest {
            lease: g.id,
            ..put("/l/1", "v")
        },
        dl(),
    )
    .await
    .unwrap();
    let ttl = e
        .lease_time_to_live(
            LeaseTimeToLiveRequest {
                id: g.id,
                keys: true,
            },
            dl(),
        )
        .await
        .unwrap();
    assert_eq!(ttl.granted_ttl, 30);
    assert!(ttl.ttl > 0 && ttl.ttl <= 30);
    assert_eq!(ttl.keys, vec![b"/l/1".to_vec()]);
    // LeaseLeases is answered by one member from its own state (as in etcd), and calls go
    // round-robin: a member that has not applied the grant yet may still leave it out.
    let listed = async {
        loop {
            let list = e.lease_leases(dl()).await.unwrap();
            if list.leases.iter().any(|l| l.id == g.id) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), listed)
        .await
        .expect("every member lists the granted lease within 5 s");
    e.lease_revoke(LeaseRevokeRequest { id: g.id }, dl())
        .await
        .unwrap();
    assert!(
        e.range(get("/l/1"), dl()).await.unwrap().kvs.is_empty(),
        "revoke deletes the keys"
    );
    let gone = e
        .lease_time_to_live(
            LeaseTimeToLiveRequest {
                id: g.id,
                keys: false,
            },
            dl(),
        )
        .await
        .unwrap();
    assert_eq!(gone.ttl, -1);
    let err = e
        .lease_revoke(LeaseRevokeRequest { id: g.id }, dl())
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound);
    assert_eq!(err.message, "etcdserver: requested lease not found");
    let err = e
        .put(
            PutRequest {
                lease: 12345,
                ..put("/l/2", "v")
            },
            dl(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound);
    let fixed = e
        .lease_grant(LeaseGrantRequest { ttl: 30, id: 777 }, dl())
        .await
        .unwrap();
    assert_eq!(fixed.id, 777);
    let dup = e
        .lease_grant(LeaseGrantRequest { ttl: 30, id: 777 }, dl())
        .await
        .unwrap_err();
    assert_eq!(dup.message, "etcdserver: lease already exists");
}

pub async fn keep_alive_keeps_a_short_lease_and_reports_loss(e: &dyn Etcd) {
    let g = e
        .lease_grant(LeaseGrantRequest { ttl: 2, id: 0 }, dl())
        .await
        .unwrap();
    e.put(
        PutRequest {
            lease: g.id,
            ..put("/ka", "v")
        },
        dl(),
    )
    .await
    .unwrap();
    let (tx, rx) = etcdc::stream::channel(16);
    let guard = e.keep_alive(g.id, tx).unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.state, LeaseState::Alive);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        e.range(get("/ka"), dl()).await.unwrap().kvs.len(),
        1,
        "kept past 2x its TTL"
    );
    e.lease_revoke(LeaseRevokeRequest { id: g.id }, dl())
        .await
        .unwrap();
    // Lost follows; before it, a keep-alive may have met a passing election (Reconnecting,
    // then Alive again) — reported as it happened, not a failure.
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let update = tokio::time::timeout_at(until, rx.recv())
            .await
            .expect("Lost reported within 5 s of the revoke")
            .unwrap();
        if update.state == LeaseState::Lost {
            break;
        }
    }
    drop(guard);
}

/// Waits (bounded) until the stream's producer was refused for want of room.
async fn until_behind<T: Send + 'static>(s: &etcdc::stream::Stream<T>) {
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while !s.is_behind() {
        assert!(
            std::time::Instant::now() < until,
            "the watch never filled its queue"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub async fn slow_consumer_resumes_from_history_or_sees_compaction(e: &dyn Etcd) {
    let watch_req = WatchCreateRequest {
        key: "/sc/".into(),
        range_end: prefix_end("/sc/"),
        ..Default::default()
    };
    // A queue of 4 under 20 writes: the watch pauses, then resumes from history when drained.
    let (feed, updates) = etcdc::stream::channel(4);
    let _w = e.watch(watch_req.clone(), feed, dl()).await.unwrap();
    let mut revs = Vec::new();
    for i in 0..20 {
        revs.push(put_rev(e, format!("/sc/{i}"), "v").await);
    }
    until_behind(&updates).await;
    let mut seen = Vec::new();
    while seen.len() < revs.len() {
        match tokio::time::timeout(Duration::from_secs(10), updates.recv()).await {
            Ok(Some(WatchUpdate::Events { events, .. })) => {
                seen.extend(events.iter().map(|ev| ev.kv.as_ref().unwrap().mod_revision))
            }
            Ok(Some(WatchUpdate::Progress { .. })) => {}
            other => panic!("expected events, got {other:?} after {seen:?}"),
        }
    }
    assert_eq!(seen, revs, "every event once, in order, across the pause");

    // Paused again, and the history it would resume from is compacted meanwhile.
    let (feed, updates) = etcdc::stream::channel(4);
    let _w = e.watch(watch_req, feed, dl()).await.unwrap();
    let mut last = 0;
    for i in 0..20 {
        last = e
            .put(put(format!("/sc/{i}"), "w"), dl())
            .await
            .unwrap()
            .header
            .unwrap()
            .revision;
    }
    until_behind(&updates).await;
    e.compact(
        CompactionRequest {
            revision: last,
            physical: true,
        },
        dl(),
    )
    .await
    .unwrap();
    let mut events = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), updates.recv()).await {
            Ok(Some(WatchUpdate::Events { events: evs, .. })) => events += evs.len(),
            Ok(Some(WatchUpdate::Progress { .. })) => {}
            Ok(Some(WatchUpdate::Compacted {
                compact_revision, ..
            })) => {
                assert_eq!(compact_revision, last);
                break;
            }
            other => panic!("expected events then compaction, got {other:?}"),
        }
    }
    assert!(
        (4..20).contains(&events),
        "{events} events before the compaction"
    );
    assert!(
        updates.recv().await.is_none(),
        "the watch ends after a compaction"
    );
}

pub async fn members_and_status(e: &dyn Etcd) {
    let m = e.member_list(dl()).await.unwrap();
    assert!(!m.members.is_empty());
    assert!(m.members.iter().all(|m| !m.client_ur_ls.is_empty()));
    let s = e.status(None, dl()).await.unwrap();
    assert!(!s.version.is_empty());
    assert!(s.leader != 0);
    assert!(s.raft_index > 0);
}

/// The test functions of a set of cases against one backend.
macro_rules! behaviour_cases {
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let make = $make;
                let Some(target) = make() else { return };
                super::$case(&*target.etcd).await;
            }
        )*
    };
    (@async_cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some(target) = $make().await else { return };
                super::$case(&*target.etcd).await;
            }
        )*
    };
}

/// The cases a state machine alone can serve (keys, transactions, compaction, leases), plus
/// what a backend adds: a full etcd and a member of the embedded node serve every case.
macro_rules! behaviour_suite {
    ($backend:ident, etcd $make:expr) => {
        behaviour_suite!(@mod $backend, cases, $make;
            watch_delivers_every_event_in_order,
            watch_filters_start_revision_and_txn_atomicity,
            watch_from_compacted_revision_reports_compaction,
            watch_progress_on_request,
            watch_cancel_stops_delivery,
            slow_consumer_resumes_from_history_or_sees_compaction,
            keep_alive_keeps_a_short_lease_and_reports_loss,
            members_and_status,);
    };
    ($backend:ident, async $make:expr) => {
        behaviour_suite!(@mod $backend, async_cases, $make;);
    };
    ($backend:ident, $make:expr) => {
        behaviour_suite!(@mod $backend, cases, $make;);
    };
    // A member of the embedded node: the state machine's cases, watches and lease
    // keep-alive.
    ($backend:ident, member $make:expr) => {
        behaviour_suite!(@mod $backend, async_cases, $make;
            watch_delivers_every_event_in_order,
            watch_filters_start_revision_and_txn_atomicity,
            watch_from_compacted_revision_reports_compaction,
            watch_progress_on_request,
            watch_cancel_stops_delivery,
            slow_consumer_resumes_from_history_or_sees_compaction,
            keep_alive_keeps_a_short_lease_and_reports_loss,);
    };
    (@mod $backend:ident, $how:ident, $make:expr; $($more:ident,)*) => {
        mod $backend {
            use super::*;
            behaviour_cases!(@$how $make;
                $($more,)*
                put_then_get_returns_value_and_revisions,
                put_options_prev_kv_ignore_value_ignore_lease,
                get_prefix_range_fromkey_limit_sort,
                get_at_revision_and_revision_filters,
                delete_key_prefix_and_range_with_prev_kv,
                txn_compare_and_swap_all_targets,
                txn_nested_and_limits,
                oversize_requests_are_refused,
                compaction_makes_old_revisions_unreadable,
                lease_grant_ttl_list_revoke,
            );
        }
    };
}

behaviour_suite!(remote_etcd, etcd support::remote_etcd);
behaviour_suite!(node_mvcc, support::mvcc::mvcc_store);
behaviour_suite!(node_single, member support::node::single_target);
behaviour_suite!(node_three, member support::node::three_target);
behaviour_suite!(node_grpc, member support::node::grpc_target);
behaviour_suite!(remote_etcd_cluster, etcd support::remote_etcd_cluster);

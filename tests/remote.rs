//! Behaviour specific to the remote backend's handling of etcd's wire protocol.

mod support;

use std::time::Duration;

use etcdc::api::WatchUpdate;
use etcdc::kv::prefix_end;
use etcdc::pb::etcdserverpb::request_op::Request;
use etcdc::pb::etcdserverpb::watch_client::WatchClient;
use etcdc::pb::etcdserverpb::watch_request::RequestUnion;
use etcdc::pb::etcdserverpb::*;
use support::dl;

fn txn_of_big_puts(n: usize, size: usize, fill: u8) -> TxnRequest {
    TxnRequest {
        success: (0..n)
            .map(|i| RequestOp {
                request: Some(Request::RequestPut(PutRequest {
                    key: format!("/frag/{i}").into_bytes(),
                    value: vec![fill; size],
                    ..Default::default()
                })),
            })
            .collect(),
        ..Default::default()
    }
}

fn watch_request() -> WatchCreateRequest {
    WatchCreateRequest {
        key: b"/frag/".to_vec(),
        range_end: prefix_end(b"/frag/"),
        prev_kv: true,
        fragment: true,
        ..Default::default()
    }
}

/// A response larger than etcd's limit arrives in fragments; etcdc reassembles them and never
/// hands on part of a revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragmented_responses_are_reassembled_into_whole_revisions() {
    let Some(target) = support::remote_etcd_with(&["--max-request-bytes", "100000"]) else {
        return;
    };
    let cluster = target.cluster.as_ref().expect("a cluster");
    let e = &*target.etcd;
    // Ten revisions of ten 9 kB keys each: every request is under the 100 kB limit; a watch
    // catching up from the first gets them (and their previous values) in responses far over
    // etcd's fragmenting threshold (the limit + 512 kB).
    let mut first = 0;
    for round in 0..10u8 {
        let r = e
            .txn(txn_of_big_puts(10, 9000, b'a' + round), dl())
            .await
            .unwrap();
        if round == 0 {
            first = r.header.unwrap().revision;
        }
    }
    let from_first = WatchCreateRequest {
        start_revision: first,
        ..watch_request()
    };

    // Precondition, seen on the wire: etcd does fragment this catch-up.
    let channel = tonic::transport::Channel::from_shared(cluster.client_url(0))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tx.send(WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(from_first.clone())),
    })
    .unwrap();
    let mut raw = WatchClient::new(channel)
        .watch(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let (mut fragments, mut raw_events) = (0, 0);
    while raw_events < 100 {
        let resp = tokio::time::timeout(Duration::from_secs(10), raw.message())
            .await
            .expect("raw watch answers")
            .unwrap()
            .expect("raw stream open");
        fragments += usize::from(resp.fragment);
        raw_events += resp.events.len();
    }
    assert!(
        fragments > 0,
        "etcd did not fragment: the test would prove nothing"
    );

    let w = e.watcher(from_first, dl()).await.unwrap();
    let mut seen = 0;
    while seen < 100 {
        let update = tokio::time::timeout(Duration::from_secs(10), w.updates.recv())
            .await
            .expect("etcdc delivers")
            .expect("watch open");
        let WatchUpdate::Events { events, .. } = update else {
            continue;
        };
        let mut per_rev = std::collections::BTreeMap::new();
        for ev in &events {
            let kv = ev.kv.as_ref().unwrap();
            *per_rev.entry(kv.mod_revision).or_insert(0) += 1;
            assert_eq!(kv.value.len(), 9000);
        }
        assert!(
            per_rev.values().all(|&n| n == 10),
            "a partial revision was delivered: {per_rev:?}"
        );
        seen += events.len();
    }
    assert_eq!(seen, 100);
    drop(tx);
}

#[test]
fn an_empty_endpoint_list_is_refused() {
    let err = etcdc::remote::Remote::new(etcdc::remote::RemoteConfig {
        endpoints: vec![],
        connect_timeout: Duration::from_secs(1),
        ..Default::default()
    })
    .err()
    .expect("no client without an endpoint");
    assert_eq!(err.kind, etcdc::ErrorKind::InvalidArgument);
    assert!(etcdc::remote::parse_endpoints(" , ").is_err());
}

//! Failures of real etcd members under a live client: killed and restarted under a watch,
//! one member of three stopped under a kept lease, every member down.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcdc::api::{deadline_in, LeaseState, WatchUpdate, Watcher};
use etcdc::kv::prefix_end;
use etcdc::pb::etcdserverpb::*;
use etcdc::{ErrorKind, Etcd};
use support::{dl, etcd::Cluster, put, remote};

async fn watch_prefix(e: &dyn Etcd, prefix: &str) -> Watcher {
    e.watcher(
        WatchCreateRequest {
            key: prefix.into(),
            range_end: prefix_end(prefix.as_bytes()),
            ..Default::default()
        },
        dl(),
    )
    .await
    .unwrap()
}

/// Collects event revisions until `want` are all seen; panics on a duplicate or a gap in order.
async fn collect_until(w: &mut Watcher, seen: &mut Vec<i64>, want: &BTreeSet<i64>) {
    let give_up = Instant::now() + Duration::from_secs(30);
    while !want.iter().all(|r| seen.contains(r)) {
        let left = give_up.saturating_duration_since(Instant::now());
        let update = tokio::time::timeout(left, w.updates.recv())
            .await
            .unwrap_or_else(|_| panic!("missing events: want {want:?}, seen {seen:?}"))
            .expect("watch open");
        if let WatchUpdate::Events { events, .. } = update {
            for ev in events {
                let rev = ev.kv.unwrap().mod_revision;
                assert!(
                    seen.last().is_none_or(|&last| rev > last),
                    "revision {rev} after {seen:?}"
                );
                seen.push(rev);
            }
        } else if !matches!(update, WatchUpdate::Progress { .. }) {
            panic!("unexpected {update:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resumes_exactly_once_after_etcd_is_killed_and_restarted() {
    let Some(mut cluster) = Cluster::start(1) else {
        return;
    };
    let e = remote(&cluster.endpoints());
    let mut w = watch_prefix(&*e, "/r/").await;
    let mut want = BTreeSet::new();
    for i in 0..10 {
        want.insert(
            e.put(put(format!("/r/{i}"), "v"), dl())
                .await
                .unwrap()
                .header
                .unwrap()
                .revision,
        );
    }
    let mut seen = Vec::new();
    collect_until(&mut w, &mut seen, &want).await;
    cluster.kill(0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.restart(0);
    for i in 10..20 {
        let rev = e
            .put(put(format!("/r/{i}"), "v"), dl())
            .await
            .unwrap()
            .header
            .unwrap()
            .revision;
        want.insert(rev);
    }
    collect_until(&mut w, &mut seen, &want).await;
    assert_eq!(seen, want.into_iter().collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_moves_to_another_member_when_its_member_dies() {
    let Some(mut cluster) = Cluster::start(3) else {
        return;
    };
    let e = remote(&cluster.endpoints());
    let writer = remote(&cluster.endpoints());
    let mut w = watch_prefix(&*e, "/m/").await;
    let mut want = BTreeSet::new();
    let mut seen = Vec::new();
    // Kill each member in turn, so the one carrying the watch stream dies at some point;
    // writes go on through the others.
    for victim in 0..3 {
        cluster.kill(victim);
        for i in 0..10 {
            let key = format!("/m/{victim}/{i}");
            match writer
                .put(put(key, "v"), deadline_in(Duration::from_secs(5)))
                .await
            {
                Ok(r) => {
                    want.insert(r.header.unwrap().revision);
                }
                Err(err) => assert!(
                    matches!(
                        err.kind,
                        ErrorKind::Unavailable | ErrorKind::NoLeader | ErrorKind::Timeout
                    ),
                    "{err:?}"
                ),
            }
        }
        collect_until(&mut w, &mut seen, &want).await;
        cluster.restart(victim);
    }
    assert!(
        want.len() >= 20,
        "most writes succeed with 2 of 3 members: {}",
        want.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_survives_each_member_of_three_stopping() {
    let Some(mut cluster) = Cluster::start(3) else {
        return;
    };
    let e = remote(&cluster.endpoints());
    let lease = e
        .lease_grant(LeaseGrantRequest { ttl: 3, id: 0 }, dl())
        .await
        .unwrap()
        .id;
    let (tx, rx) = etcdc::stream::channel(16);
    let _guard = e.keep_alive(lease, tx).unwrap();
    for victim in 0..3 {
        cluster.kill(victim);
        tokio::time::sleep(Duration::from_secs(4)).await;
        let ttl = e
            .lease_time_to_live(
                LeaseTimeToLiveRequest {
                    id: lease,
                    keys: false,
                },
                dl(),
            )
            .await
            .unwrap();
        assert!(ttl.ttl > 0, "lease lost with member {victim} down: {ttl:?}");
        cluster.restart(victim);
    }
    let mut states = Vec::new();
    while let Ok(update) = rx.next(Some(Duration::ZERO)) {
        assert_ne!(update.state, LeaseState::Lost, "{update:?}");
        states.push(update.state);
    }
    // The stream's own member died at some point, so the keeper had to move.
    assert!(states.contains(&LeaseState::Reconnecting), "{states:?}");
    assert_eq!(states.last(), Some(&LeaseState::Alive), "{states:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_members_down_fails_within_the_deadline_then_recovers() {
    let Some(mut cluster) = Cluster::start(1) else {
        return;
    };
    let e: Arc<dyn Etcd> = remote(&cluster.endpoints());
    e.put(put("/up", "v"), dl()).await.unwrap();
    cluster.kill(0);
    for write in [true, false] {
        let start = Instant::now();
        let deadline = deadline_in(Duration::from_secs(2));
        let err = if write {
            e.put(put("/down", "v"), deadline).await.unwrap_err()
        } else {
            e.range(
                RangeRequest {
                    key: b"/up".to_vec(),
                    ..Default::default()
                },
                deadline,
            )
            .await
            .unwrap_err()
        };
        let took = start.elapsed();
        assert_eq!(err.kind, ErrorKind::Unavailable, "{err:?}");
        assert!(took < Duration::from_millis(2500), "took {took:?}");
    }
    let err = e
        .watcher(
            WatchCreateRequest {
                key: b"/up".to_vec(),
                ..Default::default()
            },
            deadline_in(Duration::from_secs(1)),
        )
        .await
        .err()
        .expect("no watch without a member");
    assert_eq!(err.kind, ErrorKind::Unavailable);
    // The status of one named member retries as any read does: it fails within its
    // deadline naming the member, and a call made while the member is down succeeds once
    // it is back.
    let ep = cluster.endpoints();
    let err = e
        .status(Some(&ep), deadline_in(Duration::from_secs(1)))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unavailable, "{err:?}");
    assert!(err.message.contains(&ep), "{err:?}");
    let pending = {
        let (e, ep) = (e.clone(), ep.clone());
        tokio::spawn(async move { e.status(Some(&ep), dl()).await })
    };
    cluster.restart(0);
    pending
        .await
        .unwrap()
        .expect("status retried until its member came back");
    let got = e
        .range(
            RangeRequest {
                key: b"/up".to_vec(),
                ..Default::default()
            },
            dl(),
        )
        .await
        .unwrap();
    assert_eq!(got.kvs.len(), 1);
    e.put(put("/again", "v"), dl()).await.unwrap();
}

/// A "server" that takes each connection, reads what the client sends, then hangs up: every
/// call dies mid-flight, deterministically.
fn hang_up_server() -> String {
    use std::io::Read;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut buf = [0u8; 4096];
            let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
            let _ = conn.read(&mut buf);
        }
    });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_dies_mid_call_gives_unavailable_not_a_hang() {
    let e = remote(&hang_up_server());
    let start = Instant::now();
    let err = e
        .put(put("/k", "v"), deadline_in(Duration::from_secs(2)))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unavailable, "{err:?}");
    assert!(
        err.message.contains("127.0.0.1"),
        "names the member: {err:?}"
    );
    // The put may have reached the server: it is not sent again, and the call ends at once.
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "took {:?}",
        start.elapsed()
    );
    let err = e
        .range(
            RangeRequest {
                key: b"/k".to_vec(),
                ..Default::default()
            },
            deadline_in(Duration::from_secs(1)),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unavailable, "{err:?}");
    assert!(start.elapsed() < Duration::from_millis(2500));
}

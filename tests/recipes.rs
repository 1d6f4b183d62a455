//! The recipes (session, registration, discovery, mutex, election, queue) on every
//! backend: the remote client against real etcd, and a member of the embedded node.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use etcdc::api::LeaseUpdate;
use etcdc::pb::etcdserverpb::*;
use etcdc::recipes::discovery::{Change, Discovery, Policy};
use etcdc::recipes::election::{self, Election};
use etcdc::recipes::mutex::Mutex;
use etcdc::recipes::queue;
use etcdc::recipes::registration::{RegState, RegUpdate, Registration, Spec};
use etcdc::recipes::session::Session;
use etcdc::stream::{self, Stream};
use etcdc::{ErrorKind, Etcd};
use support::dl;

async fn session(e: &Arc<dyn Etcd>, ttl: i64) -> (Session, Stream<LeaseUpdate>) {
    let (feed, updates) = stream::channel(16);
    (
        Session::new(e.clone(), ttl, feed, dl()).await.unwrap(),
        updates,
    )
}

async fn next<T: Send + 'static>(s: &Stream<T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), s.recv())
        .await
        .expect("an update within 10 s")
        .expect("stream open")
}

async fn value(e: &Arc<dyn Etcd>, key: &[u8]) -> Option<Vec<u8>> {
    let r = e
        .range(
            RangeRequest {
                key: key.to_vec(),
                ..Default::default()
            },
            dl(),
        )
        .await
        .unwrap();
    r.kvs.into_iter().next().map(|kv| kv.value)
}

pub async fn mutex_excludes_queues_and_fences(e: Arc<dyn Etcd>) {
    let (s1, _u1) = session(&e, 10).await;
    let (s2, _u2) = session(&e, 10).await;
    let mut m1 = Mutex::new(e.clone(), b"/locks/job", s1.lease()).unwrap();
    let mut m2 = Mutex::new(e.clone(), b"/locks/job", s2.lease()).unwrap();
    m1.lock(dl()).await.unwrap();
    assert_eq!(m1.key(), format!("/locks/job/{:x}", s1.lease()).as_bytes());
    assert!(m1.revision() > 0);
    let err = m2.try_lock(dl()).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::FailedPrecondition);
    assert_eq!(err.message, "mutex: Locked by another session");
    assert_eq!(value(&e, m2.key()).await, None, "try_lock leaves no key");
    // A waiter times out and gives up its place.
    let err = m2
        .lock(etcdc::api::deadline_in(Duration::from_millis(300)))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Timeout, "{err:?}");
    assert_eq!(value(&e, m2.key()).await, None);
    // A waiter gets it when the holder unlocks.
    let waiter = tokio::spawn(async move {
        m2.lock(dl()).await.unwrap();
        m2
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiter.is_finished(), "the lock is held");
    let fence = m1.revision();
    m1.unlock(dl()).await.unwrap();
    let m2 = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .unwrap()
        .unwrap();
    assert!(
        m2.revision() > fence,
        "a later holder has a larger fencing token"
    );
    // The session's lease going away releases the lock.
    s2.close(dl()).await.unwrap();
    let mut m3 = Mutex::new(e.clone(), b"/locks/job", s1.lease()).unwrap();
    m3.try_lock(dl()).await.unwrap();
    assert!(Mutex::new(e.clone(), b"", s1.lease()).is_err());
}

pub async fn election_campaign_proclaim_observe_resign(e: Arc<dyn Etcd>) {
    let err = election::leader(&*e, b"/elect/svc", dl())
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound);
    assert_eq!(err.message, "election: no leader");
    let (feed, observed) = stream::channel(16);
    let observer = election::observe(e.clone(), b"/elect/svc", feed).unwrap();
    let (s1, _u1) = session(&e, 10).await;
    let (s2, _u2) = session(&e, 10).await;
    let mut a = Election::new(e.clone(), b"/elect/svc", s1.lease()).unwrap();
    let mut b = Election::new(e.clone(), b"/elect/svc", s2.lease()).unwrap();
    a.campaign(b"node-a", dl()).await.unwrap();
    assert_eq!(next(&observed).await.value, b"node-a");
    let l = election::leader(&*e, b"/elect/svc", dl()).await.unwrap();
    assert_eq!(l.key, format!("/elect/svc/{:x}", s1.lease()).as_bytes());
    a.proclaim(b"node-a:2", dl()).await.unwrap();
    assert_eq!(next(&observed).await.value, b"node-a:2");
    let candidate = tokio::spawn(async move {
        b.campaign(b"node-b", dl()).await.unwrap();
        b
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!candidate.is_finished(), "b waits while a leads");
    a.resign(dl()).await.unwrap();
    let b = tokio::time::timeout(Duration::from_secs(10), candidate)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next(&observed).await.value, b"node-b");
    let err = a.proclaim(b"late", dl()).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::FailedPrecondition);
    // Leadership resumed from a saved key, as after a restart.
    let (key, rev) = b.key().map(|(k, r)| (k.to_vec(), r)).unwrap();
    let resumed = Election::resume(e.clone(), b"/elect/svc", s2.lease(), key, rev).unwrap();
    resumed.proclaim(b"node-b:2", dl()).await.unwrap();
    assert_eq!(next(&observed).await.value, b"node-b:2");
    observer.abort();
}

fn spec(id: &str, ttl: i64) -> Spec {
    Spec {
        dir: "/login_servers".into(),
        id: id.into(),
        addr: format!("127.0.0.1:{}", 8000 + id.len()),
        metadata: Some("{\"weight\":2}".into()),
        ttl,
    }
}

pub async fn registration_reregisters_and_refuses_duplicates(e: Arc<dyn Etcd>) {
    let (feed, updates) = stream::channel::<RegUpdate>(16);
    let r = Registration::start(e.clone(), spec("0001-0001", 3), feed, dl())
        .await
        .unwrap();
    assert_eq!(next(&updates).await.state, RegState::Registered);
    assert_eq!(r.key(), b"/login_servers/0001-0001");
    assert_eq!(
        value(&e, r.key()).await.unwrap(),
        br#"{"Op":0,"Addr":"127.0.0.1:8009","Metadata":{"weight":2}}"#
    );
    // A second live instance with the same id is refused.
    let (feed2, _u) = stream::channel::<RegUpdate>(16);
    let err = Registration::start(e.clone(), spec("0001-0001", 3), feed2, dl())
        .await
        .err()
        .unwrap();
    assert_eq!(err.kind, ErrorKind::FailedPrecondition);
    assert!(err.message.contains("another live instance"), "{err:?}");
    // The lease is lost (revoked here; expired in a partition alike): it registers again.
    let first = r.lease();
    e.lease_revoke(LeaseRevokeRequest { id: first }, dl())
        .await
        .unwrap();
    let lost = next(&updates).await;
    assert_eq!((lost.state, lost.lease), (RegState::Lost, first));
    let again = next(&updates).await;
    assert_eq!(again.state, RegState::Registered, "{again:?}");
    assert!(again.lease != first && again.lease == r.lease());
    assert!(value(&e, r.key()).await.is_some(), "the key is back");
    r.set_metadata(Some("{\"weight\":5}".into()), dl())
        .await
        .unwrap();
    assert!(String::from_utf8(value(&e, r.key()).await.unwrap())
        .unwrap()
        .contains("\"weight\":5"));
    let key = r.key().to_vec();
    r.unregister(dl()).await.unwrap();
    assert_eq!(value(&e, &key).await, None);
    // Bad input, each with its reason.
    for (bad, what) in [
        (
            Spec {
                dir: "".into(),
                ..spec("x", 3)
            },
            "directory",
        ),
        (spec("a/b", 3), "path segment"),
        (spec("", 3), "path segment"),
        (spec("x", 0), "TTL"),
        (
            Spec {
                metadata: Some("{nope".into()),
                ..spec("x", 3)
            },
            "JSON",
        ),
    ] {
        let (feed, _u) = stream::channel::<RegUpdate>(4);
        let err = Registration::start(e.clone(), bad, feed, dl())
            .await
            .err()
            .unwrap();
        assert_eq!(err.kind, ErrorKind::InvalidArgument);
        assert!(err.message.contains(what), "{err:?}");
    }
    // A TTL under the cluster's minimum is refused rather than silently raised.
    let probe = e
        .lease_grant(LeaseGrantRequest { ttl: 1, id: 0 }, dl())
        .await
        .unwrap();
    let (feed, _u) = stream::channel::<RegUpdate>(4);
    let short = Registration::start(e.clone(), spec("short", 1), feed, dl()).await;
    if probe.ttl > 1 {
        let err = short.err().unwrap();
        assert!(err.message.contains("minimum"), "{err:?}");
    } else {
        short.unwrap().unregister(dl()).await.unwrap();
    }
}

pub async fn discovery_follows_the_directory(e: Arc<dyn Etcd>) {
    // One instance before discovery starts, written as a v2-era script would (plain addr).
    e.put(
        PutRequest {
            key: b"/login_servers/legacy".to_vec(),
            value: b"10.0.0.1:7000".to_vec(),
            ..Default::default()
        },
        dl(),
    )
    .await
    .unwrap();
    let (feed, changes) = stream::channel::<Change>(64);
    let d = Discovery::start(e.clone(), "/login_servers", feed, dl())
        .await
        .unwrap();
    match next(&changes).await {
        Change::Added(i) => assert_eq!(
            (i.id.as_str(), i.addr.as_str()),
            ("legacy", "10.0.0.1:7000")
        ),
        other => panic!("{other:?}"),
    }
    let mut regs = Vec::new();
    for id in ["a", "bb", "ccc"] {
        let (feed, _u) = stream::channel::<RegUpdate>(16);
        regs.push(
            Registration::start(e.clone(), spec(id, 5), feed, dl())
                .await
                .unwrap(),
        );
        match next(&changes).await {
            Change::Added(i) => {
                assert_eq!(i.id, id);
                assert_eq!(i.weight, 2);
                assert_eq!(i.metadata, "{\"weight\":2}");
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(d.instances().len(), 4);
    // Round-robin visits every instance once per round.
    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..8 {
        *seen
            .entry(d.pick(Policy::RoundRobin).unwrap().id)
            .or_default() += 1;
    }
    assert!(seen.values().all(|n| *n == 2), "{seen:?}");
    // Least-in-flight avoids the busy ones.
    for id in ["legacy", "a", "bb"] {
        d.begin(id).unwrap();
    }
    assert_eq!(d.pick(Policy::LeastInFlight).unwrap().id, "ccc");
    for id in ["legacy", "a", "bb"] {
        d.end(id).unwrap();
    }
    assert!(d.begin("nope").is_err());
    // Weighted: weight 2 instances get about twice the legacy one's share.
    let mut w: HashMap<String, usize> = HashMap::new();
    for _ in 0..7000 {
        *w.entry(d.pick(Policy::Weighted).unwrap().id).or_default() += 1;
    }
    assert!(w["a"] > w["legacy"] * 3 / 2, "{w:?}");
    assert!(d.pick(Policy::Random).is_some());
    // Updated and removed.
    regs[0]
        .set_metadata(Some("{\"weight\":7}".into()), dl())
        .await
        .unwrap();
    match next(&changes).await {
        Change::Updated(i) => assert_eq!((i.id.as_str(), i.weight), ("a", 7)),
        other => panic!("{other:?}"),
    }
    regs.pop().unwrap().unregister(dl()).await.unwrap();
    match next(&changes).await {
        Change::Removed(i) => assert_eq!(i.id, "ccc"),
        other => panic!("{other:?}"),
    }
    assert_eq!(d.instances().len(), 3);
    assert!(Discovery::start(e.clone(), "/", stream::channel(4).0, dl())
        .await
        .is_err());
}

pub async fn queue_delivers_every_item_once_in_order(e: Arc<dyn Etcd>) {
    let err = queue::dequeue(&*e, "/jobs", false, dl()).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound);
    let err = queue::dequeue(
        &*e,
        "/jobs",
        true,
        etcdc::api::deadline_in(Duration::from_millis(200)),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Timeout);
    assert!(queue::enqueue(&*e, "", b"x", dl()).await.is_err());
    const PRODUCERS: usize = 4;
    const ITEMS: usize = 25;
    let mut tasks = Vec::new();
    for p in 0..PRODUCERS {
        let e = e.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..ITEMS {
                queue::enqueue(&*e, "/jobs", format!("{p}:{i}").as_bytes(), dl())
                    .await
                    .unwrap();
            }
        }));
    }
    let mut consumers = Vec::new();
    for _ in 0..4 {
        let e = e.clone();
        consumers.push(tokio::spawn(async move {
            let mut got = Vec::new();
            while let Ok(kv) = queue::dequeue(
                &*e,
                "/jobs",
                true,
                etcdc::api::deadline_in(Duration::from_secs(3)),
            )
            .await
            {
                got.push((kv.key, String::from_utf8(kv.value).unwrap()));
            }
            got
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut all = Vec::new();
    for c in consumers {
        all.extend(c.await.unwrap());
    }
    assert_eq!(all.len(), PRODUCERS * ITEMS, "every item once");
    all.sort();
    let keys: std::collections::HashSet<_> = all.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(keys.len(), all.len(), "no item twice");
    for p in 0..PRODUCERS {
        let mine: Vec<usize> = all
            .iter()
            .filter_map(|(_, v)| v.strip_prefix(&format!("{p}:")))
            .map(|i| i.parse().unwrap())
            .collect();
        assert_eq!(
            mine,
            (0..ITEMS).collect::<Vec<_>>(),
            "producer {p} in order"
        );
    }
}

macro_rules! recipes {
    ($backend:ident, $make:expr) => {
        mod $backend {
            #[allow(unused_imports)]
            use super::*;
            recipes!(@cases $make;
                mutex_excludes_queues_and_fences,
                election_campaign_proclaim_observe_resign,
                registration_reregisters_and_refuses_duplicates,
                discovery_follows_the_directory,
                queue_delivers_every_item_once_in_order);
        }
    };
    (@cases $make:expr; $($case:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some(target) = $make.await else { return };
                super::$case(target.etcd.clone()).await;
            }
        )*
    };
}

async fn remote_etcd() -> Option<support::Target> {
    support::remote_etcd()
}

recipes!(remote_etcd, super::remote_etcd());
recipes!(node, support::node::single_target());
recipes!(node_three, support::node::three_target());

// ---- interop with the real etcdctl, both ways ----

async fn counter(e: &Arc<dyn Etcd>) -> i64 {
    String::from_utf8(value(e, b"/counter").await.unwrap())
        .unwrap()
        .parse()
        .unwrap()
}

/// etcdc's mutex and `etcdctl lock` exclude each other (a shared counter incremented under
/// the lock by both loses nothing), and etcdc's election and `etcdctl elect` see the same
/// leader, both ways.
async fn etcdctl_interop(e: Arc<dyn Etcd>, url: String) {
    use support::etcdctl::{etcdctl, Background};
    if !support::etcdctl::available() {
        return;
    }
    const ROUNDS: i64 = 8;
    e.put(
        PutRequest {
            key: b"/counter".to_vec(),
            value: b"0".to_vec(),
            ..Default::default()
        },
        dl(),
    )
    .await
    .unwrap();
    let script = format!(
        "v=$(etcdctl --endpoints={url} get /counter --print-value-only) && \
         etcdctl --endpoints={url} put /counter $((v+1)) >/dev/null"
    );
    let theirs = {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            for _ in 0..ROUNDS {
                let (ok, out) = etcdctl(&url, &["lock", "/ctr", "--", "sh", "-c", &script], None);
                assert!(ok, "etcdctl lock: {out}");
            }
        })
    };
    let (s, _u) = session(&e, 10).await;
    let mut m = Mutex::new(e.clone(), b"/ctr", s.lease()).unwrap();
    for _ in 0..ROUNDS {
        m.lock(dl()).await.unwrap();
        let v = counter(&e).await;
        // Widen the window a lost update would need.
        tokio::time::sleep(Duration::from_millis(20)).await;
        e.put(
            PutRequest {
                key: b"/counter".to_vec(),
                value: (v + 1).to_string().into_bytes(),
                ..Default::default()
            },
            dl(),
        )
        .await
        .unwrap();
        m.unlock(dl()).await.unwrap();
    }
    theirs.await.unwrap();
    assert_eq!(counter(&e).await, 2 * ROUNDS, "no increment lost");

    // etcdctl holds: etcdc cannot take it; etcdc holds: etcdctl waits until it is released.
    let mut held = Background::start(&url, &["lock", "/ctr"]);
    assert!(held.lines(1)[0].starts_with("/ctr/"));
    assert_eq!(
        m.try_lock(dl()).await.unwrap_err().kind,
        ErrorKind::FailedPrecondition
    );
    held.interrupt();
    m.lock(dl()).await.unwrap();
    let waiting = Background::start(&url, &["lock", "/ctr"]);
    assert!(waiting.quiet_for(Duration::from_millis(500)));
    m.unlock(dl()).await.unwrap();
    assert!(waiting.lines(1)[0].starts_with("/ctr/"));
    drop(waiting);

    // Elections: etcdctl observes etcdc's leader; etcdc observes etcdctl's.
    let mut el = Election::new(e.clone(), b"/el", s.lease()).unwrap();
    el.campaign(b"etcdc-leader", dl()).await.unwrap();
    let observer = Background::start(&url, &["elect", "-l", "/el"]);
    assert_eq!(observer.lines(2)[1], "etcdc-leader");
    let candidate = Background::start(&url, &["elect", "/el", "etcdctl-leader"]);
    assert!(candidate.quiet_for(Duration::from_millis(500)));
    let (feed, observed) = stream::channel(16);
    let watch = election::observe(e.clone(), b"/el", feed).unwrap();
    assert_eq!(next(&observed).await.value, b"etcdc-leader");
    el.resign(dl()).await.unwrap();
    assert_eq!(candidate.lines(2)[1], "etcdctl-leader");
    assert_eq!(observer.lines(2)[1], "etcdctl-leader");
    assert_eq!(next(&observed).await.value, b"etcdctl-leader");
    assert_eq!(
        election::leader(&*e, b"/el", dl()).await.unwrap().value,
        b"etcdctl-leader"
    );
    watch.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_interop_on_etcd() {
    let Some(target) = support::remote_etcd() else {
        return;
    };
    let url = target.cluster.as_ref().unwrap().endpoints();
    etcdctl_interop(target.etcd.clone(), url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_interop_on_the_node() {
    let (_c, url, _stop) = support::node::serve_single().await;
    etcdctl_interop(support::remote(&url), url).await;
}

/// Runs a call again while the cluster is electing a new leader (a member was just killed).
/// The table is compared with what the cluster holds in the end, so a write that an earlier
/// attempt applied changes nothing.
async fn again<T, F, Fut>(mut call: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = etcdc::Result<T>>,
{
    for _ in 0..100 {
        match call().await {
            Ok(v) => return v,
            Err(e)
                if matches!(
                    e.kind,
                    ErrorKind::Unavailable | ErrorKind::Timeout | ErrorKind::NoLeader
                ) =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    panic!("the cluster did not recover within 10 s");
}

/// The discovery table equals the truth after 1,000 random registrations, deletions and
/// lease revocations, with a compaction and a member killed and restarted in between (the
/// watch moves to another member and resumes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_table_matches_the_truth_after_random_churn() {
    let Some(mut target) = support::remote_etcd_cluster() else {
        return;
    };
    let e = target.etcd.clone();
    let (feed, changes) = stream::channel::<Change>(64);
    let d = Discovery::start(e.clone(), "/churn", feed, dl())
        .await
        .unwrap();
    // Drain the changes as a consumer would.
    let drained = tokio::spawn(async move {
        let mut n = 0usize;
        while changes.recv().await.is_some() {
            n += 1;
        }
        n
    });
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut rand = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let lease = e
        .lease_grant(LeaseGrantRequest { ttl: 60, id: 0 }, dl())
        .await
        .unwrap()
        .id;
    let mut lease_id = lease;
    for step in 0..1000 {
        let id = format!("/churn/i{}", rand(40));
        match rand(10) {
            0..=5 => {
                let under = rand(4) == 0;
                let put = PutRequest {
                    key: id.clone().into_bytes(),
                    value: format!("{{\"Op\":0,\"Addr\":\"10.0.0.{}:1\"}}", step % 250)
                        .into_bytes(),
                    lease: if under { lease_id } else { 0 },
                    ..Default::default()
                };
                again(|| e.put(put.clone(), dl())).await;
            }
            6..=8 => {
                let del = DeleteRangeRequest {
                    key: id.into_bytes(),
                    ..Default::default()
                };
                again(|| e.delete_range(del.clone(), dl())).await;
            }
            _ => {
                // Everything under the lease expires at once.
                again(|| async {
                    match e
                        .lease_revoke(LeaseRevokeRequest { id: lease_id }, dl())
                        .await
                    {
                        // Applied by an earlier attempt.
                        Err(x) if x.kind == ErrorKind::NotFound => {
                            Ok(LeaseRevokeResponse::default())
                        }
                        other => other,
                    }
                })
                .await;
                lease_id = again(|| e.lease_grant(LeaseGrantRequest { ttl: 60, id: 0 }, dl()))
                    .await
                    .id;
            }
        }
        if step == 400 {
            let rev = e
                .range(
                    RangeRequest {
                        key: b"/churn/".to_vec(),
                        ..Default::default()
                    },
                    dl(),
                )
                .await
                .unwrap()
                .header
                .unwrap()
                .revision;
            e.compact(
                CompactionRequest {
                    revision: rev,
                    physical: false,
                },
                dl(),
            )
            .await
            .unwrap();
        }
        if step == 600 {
            target.cluster.as_mut().unwrap().kill(0);
        }
        if step == 800 {
            target.cluster.as_mut().unwrap().restart(0);
        }
    }
    let truth = e
        .range(
            RangeRequest {
                key: b"/churn/".to_vec(),
                range_end: etcdc::kv::prefix_end(b"/churn/"),
                ..Default::default()
            },
            dl(),
        )
        .await
        .unwrap();
    let want: Vec<(String, String)> = truth
        .kvs
        .iter()
        .map(|kv| {
            let id = String::from_utf8_lossy(&kv.key["/churn/".len()..]).into_owned();
            let v: serde_json::Value = serde_json::from_slice(&kv.value).unwrap();
            (id, v["Addr"].as_str().unwrap().to_string())
        })
        .collect();
    let until = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got: Vec<(String, String)> =
            d.instances().into_iter().map(|i| (i.id, i.addr)).collect();
        if got == want {
            break;
        }
        assert!(
            std::time::Instant::now() < until,
            "table {got:?} != truth {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(d);
    assert!(drained.await.unwrap() > 0);
}

/// A registration rides out a member's death and restart: its keep-alive moves to another
/// member, the key stays, and no loss is reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_survives_a_member_restart() {
    let Some(mut target) = support::remote_etcd_cluster() else {
        return;
    };
    let e = target.etcd.clone();
    let (feed, updates) = stream::channel::<RegUpdate>(16);
    let r = Registration::start(e.clone(), spec("survivor", 2), feed, dl())
        .await
        .unwrap();
    assert_eq!(next(&updates).await.state, RegState::Registered);
    let lease = r.lease();
    let cluster = target.cluster.as_mut().unwrap();
    for member in 0..2 {
        cluster.kill(member);
        // Two TTLs with the member down, then back.
        let quiet = tokio::time::timeout(Duration::from_secs(4), async {
            loop {
                let u = next(&updates).await;
                if u.state == RegState::Lost {
                    return u;
                }
            }
        })
        .await;
        assert!(quiet.is_err(), "lost with member {member} down: {quiet:?}");
        cluster.restart(member);
    }
    assert_eq!(r.lease(), lease, "the same lease all along");
    assert!(value(&e, r.key()).await.is_some());
    r.unregister(dl()).await.unwrap();
}

/// A discovery whose consumer stalls falls behind its watch; history is compacted meanwhile:
/// it lists again and reports the difference, and its table ends equal to the truth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_relists_after_a_compaction_it_missed() {
    let (m, _c) = support::node::single().await;
    let e: Arc<dyn Etcd> = m;
    let (feed, changes) = stream::channel::<Change>(1);
    let d = Discovery::start(e.clone(), "/stall", feed, dl())
        .await
        .unwrap();
    let mut last = 0;
    for i in 0..600 {
        last = e
            .put(
                PutRequest {
                    key: format!("/stall/i{}", i % 7).into_bytes(),
                    value: format!("10.0.0.{}:1", i % 200).into_bytes(),
                    ..Default::default()
                },
                dl(),
            )
            .await
            .unwrap()
            .header
            .unwrap()
            .revision;
    }
    e.delete_range(
        DeleteRangeRequest {
            key: b"/stall/i3".to_vec(),
            ..Default::default()
        },
        dl(),
    )
    .await
    .unwrap();
    e.compact(
        CompactionRequest {
            revision: last,
            physical: false,
        },
        dl(),
    )
    .await
    .unwrap();
    // The consumer wakes up: it sees a bounded number of changes, not 601.
    let mut seen = 0;
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(500), changes.recv()).await {
        seen += 1;
    }
    assert!(seen < 601, "{seen} changes: the backlog was not bounded");
    let got: Vec<(String, String)> = d.instances().into_iter().map(|i| (i.id, i.addr)).collect();
    let want: Vec<(String, String)> = [0, 1, 2, 4, 5, 6]
        .iter()
        .map(|k| {
            let i = (0..600).rev().find(|i| i % 7 == *k).unwrap();
            (format!("i{k}"), format!("10.0.0.{}:1", i % 200))
        })
        .collect();
    assert_eq!(got, want);
}

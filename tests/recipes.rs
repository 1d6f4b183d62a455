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
    assert_eq!(d.snapshot().len(), 4);
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
    assert_eq!(d.snapshot().len(), 3);
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

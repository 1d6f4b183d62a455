//! etcd's `v3lock` and `v3election` gRPC services (what etcd-cpp-apiv3 and other C++
//! clients call), on real etcd and on the node side by side: the same calls get the same
//! answers and errors, the services exclude `etcdctl lock` and etcdc's own recipes on the
//! same names, and a caller that goes away while waiting leaves no key behind.

mod support;

use std::time::Duration;

use etcdc::pb::etcdserverpb::*;
use etcdc::pb::v3electionpb::election_client::ElectionClient;
use etcdc::pb::v3electionpb::*;
use etcdc::pb::v3lockpb::lock_client::LockClient;
use etcdc::pb::v3lockpb::*;
use etcdc::Etcd;
use support::{count, dl};
use tonic::transport::Channel;

/// Everything the test saw on one server, to compare etcd's with the node's.
#[derive(Debug, Default, PartialEq)]
struct Seen(Vec<String>);

impl Seen {
    fn note(&mut self, what: impl Into<String>) {
        self.0.push(what.into());
    }
}

fn status_text(s: tonic::Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

async fn grant(etcd: &dyn Etcd, ttl: i64) -> i64 {
    etcd.lease_grant(LeaseGrantRequest { ttl, id: 0 }, dl())
        .await
        .expect("lease")
        .id
}

async fn scenario(url: &str) -> Seen {
    let mut seen = Seen::default();
    let etcd = support::remote(url);
    let channel = Channel::from_shared(url.to_string())
        .unwrap()
        .connect()
        .await
        .expect("connects");
    let mut locks = LockClient::new(channel.clone());
    let mut elections = ElectionClient::new(channel);
    let (l1, l2) = (grant(&*etcd, 60).await, grant(&*etcd, 60).await);

    // Lock: the first caller holds it; a second waits (its key is in line) until Unlock.
    let first = locks
        .lock(LockRequest {
            name: b"svc-lock".to_vec(),
            lease: l1,
        })
        .await
        .expect("lock")
        .into_inner();
    assert_eq!(first.key, format!("svc-lock/{l1:x}").into_bytes());
    seen.note("locked");
    // etcdc's recipe on the same name is excluded.
    let mut recipe = etcdc::recipes::mutex::Mutex::new(etcd.clone(), b"svc-lock", l2).unwrap();
    let err = recipe.try_lock(dl()).await.unwrap_err();
    seen.note(err.message);
    let mut waiter = locks.clone();
    let second = tokio::spawn(async move {
        waiter
            .lock(LockRequest {
                name: b"svc-lock".to_vec(),
                lease: l2,
            })
            .await
    });
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while count(&*etcd, "svc-lock/", false).await < 2 {
        assert!(std::time::Instant::now() < until, "the waiter never queued");
        tokio::task::yield_now().await;
    }
    assert!(!second.is_finished());
    locks
        .unlock(UnlockRequest { key: first.key })
        .await
        .expect("unlock");
    let second = second.await.unwrap().expect("second lock").into_inner();
    assert_eq!(second.key, format!("svc-lock/{l2:x}").into_bytes());
    seen.note("handed over");
    locks
        .unlock(UnlockRequest { key: second.key })
        .await
        .expect("unlock");
    // A caller that gives up while waiting leaves no key: hold it, wait with a timeout.
    let held = locks
        .lock(LockRequest {
            name: b"svc-lock".to_vec(),
            lease: l1,
        })
        .await
        .expect("lock")
        .into_inner();
    let mut impatient = tonic::Request::new(LockRequest {
        name: b"svc-lock".to_vec(),
        lease: l2,
    });
    impatient.set_timeout(Duration::from_millis(300));
    let err = locks.lock(impatient).await.unwrap_err();
    // Whichever comes first, on either server: the client's own timer (Cancelled) or the
    // server's answer at the deadline (etcd's handler returns the context's error: Unknown).
    seen.note(match err.code() {
        tonic::Code::Cancelled | tonic::Code::Unknown => "gave up".to_string(),
        code => format!("{code:?}"),
    });
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while count(&*etcd, "svc-lock/", false).await != 1 {
        assert!(
            std::time::Instant::now() < until,
            "the impatient waiter's key stayed"
        );
        tokio::task::yield_now().await;
    }
    locks.unlock(UnlockRequest { key: held.key }).await.unwrap();

    // Election: campaign, leader, observe, proclaim, a second candidate, resign.
    let name = b"svc-elect".to_vec();
    let err = elections
        .leader(LeaderRequest { name: name.clone() })
        .await
        .unwrap_err();
    seen.note(status_text(err));
    let a = elections
        .campaign(CampaignRequest {
            name: name.clone(),
            lease: l1,
            value: b"a".to_vec(),
        })
        .await
        .expect("campaign")
        .into_inner()
        .leader
        .expect("a leader key");
    assert_eq!(a.key, format!("svc-elect/{l1:x}").into_bytes());
    assert_eq!((a.name.as_slice(), a.lease), (&name[..], l1));
    // Observed from here (etcd answers an Observe only once there is a leader).
    let mut observed = elections
        .clone()
        .observe(LeaderRequest { name: name.clone() })
        .await
        .expect("observe")
        .into_inner();
    let leader = elections
        .leader(LeaderRequest { name: name.clone() })
        .await
        .unwrap()
        .into_inner()
        .kv
        .unwrap();
    assert_eq!(
        (leader.key.as_slice(), leader.create_revision),
        (&a.key[..], a.rev)
    );
    assert_eq!((leader.value.as_slice(), leader.lease), (&b"a"[..], l1));
    let kv = observed.message().await.unwrap().unwrap().kv.unwrap();
    seen.note(format!("observed {}", String::from_utf8_lossy(&kv.value)));
    elections
        .proclaim(ProclaimRequest {
            leader: Some(a.clone()),
            value: b"a2".to_vec(),
        })
        .await
        .expect("proclaim");
    let kv = observed.message().await.unwrap().unwrap().kv.unwrap();
    seen.note(format!(
        "observed {} version {}",
        String::from_utf8_lossy(&kv.value),
        kv.version
    ));
    let err = elections
        .proclaim(ProclaimRequest {
            leader: None,
            value: b"x".to_vec(),
        })
        .await
        .unwrap_err();
    seen.note(status_text(err));
    let mut candidate = elections.clone();
    let b = tokio::spawn({
        let name = name.clone();
        async move {
            candidate
                .campaign(CampaignRequest {
                    name,
                    lease: l2,
                    value: b"b".to_vec(),
                })
                .await
        }
    });
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while count(&*etcd, "svc-elect/", false).await < 2 {
        assert!(
            std::time::Instant::now() < until,
            "the candidate never queued"
        );
        tokio::task::yield_now().await;
    }
    elections
        .resign(ResignRequest {
            leader: Some(a.clone()),
        })
        .await
        .expect("resign");
    let b = b
        .await
        .unwrap()
        .expect("b elected")
        .into_inner()
        .leader
        .unwrap();
    let kv = observed.message().await.unwrap().unwrap().kv.unwrap();
    seen.note(format!("observed {}", String::from_utf8_lossy(&kv.value)));
    // A resigned leader proclaims no more.
    let err = elections
        .proclaim(ProclaimRequest {
            leader: Some(a),
            value: b"late".to_vec(),
        })
        .await
        .unwrap_err();
    seen.note(status_text(err));
    // etcdc's election recipe sees the same leader.
    let leader = etcdc::recipes::election::leader(&*etcd, &name, dl())
        .await
        .unwrap();
    assert_eq!((leader.key, leader.value), (b.key.clone(), b"b".to_vec()));
    elections
        .resign(ResignRequest { leader: Some(b) })
        .await
        .expect("resign");
    // A lease of 0: the service makes one (60 s, as Go's session).
    let c = elections
        .campaign(CampaignRequest {
            name: name.clone(),
            lease: 0,
            value: b"c".to_vec(),
        })
        .await
        .unwrap()
        .into_inner()
        .leader
        .unwrap();
    let ttl = etcd
        .lease_time_to_live(
            LeaseTimeToLiveRequest {
                id: c.lease,
                keys: false,
            },
            dl(),
        )
        .await
        .unwrap();
    seen.note(format!("granted {}", ttl.granted_ttl));
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_and_election_services_answer_as_etcds() {
    let Some(target) = support::remote_etcd() else {
        return;
    };
    let etcd_url = target.cluster.as_ref().unwrap().client_url(0);
    let on_etcd = scenario(&etcd_url).await;
    let (_c, url, _stop) = support::node::serve_single().await;
    let on_node = scenario(&url).await;
    assert_eq!(on_node, on_etcd);
    assert!(on_etcd.0.len() > 8, "{on_etcd:?}");
}

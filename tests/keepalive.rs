//! The lease keeper against a fake Lease service, for answers a real etcd does not give on
//! demand: a huge TTL, and a keep-alive stream that goes silent while the cluster still holds
//! the lease.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcdc::api::{Etcd, LeaseState, LeaseUpdate};
use etcdc::pb::etcdserverpb::lease_server::{Lease, LeaseServer};
use etcdc::pb::etcdserverpb::*;
use etcdc::remote::{Remote, RemoteConfig};
use etcdc::stream::{self, Stream};
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};

#[derive(Default)]
struct Knobs {
    /// TTL in keep-alive answers.
    ka_ttl: AtomicI64,
    /// Keep-alive answers still to give (then silence on an open stream).
    ka_answers: AtomicI64,
    ka_requests: AtomicUsize,
    /// Whether time-to-live says the lease exists (TTL 1) or not (-1).
    held: AtomicBool,
}

type Answers =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send>>;

/// The fake Lease service, steered by its knobs.
struct FakeLease(Arc<Knobs>);

#[tonic::async_trait]
impl Lease for FakeLease {
    async fn lease_grant(
        &self,
        _: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn lease_revoke(
        &self,
        _: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    type LeaseKeepAliveStream = Answers;
    async fn lease_keep_alive(
        &self,
        req: Request<tonic::Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Answers>, Status> {
        let me = self.0.clone();
        let answers = req.into_inner().filter_map(move |r| {
            let r = r.ok()?;
            me.ka_requests.fetch_add(1, Ordering::SeqCst);
            if me.ka_answers.fetch_sub(1, Ordering::SeqCst) <= 0 {
                return None;
            }
            Some(Ok(LeaseKeepAliveResponse {
                header: None,
                id: r.id,
                ttl: me.ka_ttl.load(Ordering::SeqCst),
            }))
        });
        Ok(Response::new(Box::pin(answers)))
    }
    async fn lease_time_to_live(
        &self,
        req: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let ttl = if self.0.held.load(Ordering::SeqCst) {
            1
        } else {
            -1
        };
        Ok(Response::new(LeaseTimeToLiveResponse {
            id: req.into_inner().id,
            ttl,
            granted_ttl: 1,
            ..Default::default()
        }))
    }
    async fn lease_leases(
        &self,
        _: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

async fn serve(fake: Arc<Knobs>) -> Remote {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(LeaseServer::new(FakeLease(fake)))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    Remote::new(RemoteConfig {
        endpoints: vec![url],
        connect_timeout: Duration::from_secs(1),
        ..Default::default()
    })
    .unwrap()
}

async fn next(rx: &Stream<LeaseUpdate>) -> LeaseUpdate {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("a lease update within 5 s")
        .expect("stream open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_ttl_from_the_server_is_kept_not_a_crash() {
    let fake = Arc::new(Knobs::default());
    fake.ka_ttl.store(i64::MAX, Ordering::SeqCst);
    fake.ka_answers.store(i64::MAX, Ordering::SeqCst);
    let e = serve(fake).await;
    let (feed, rx) = stream::channel(16);
    let _one = e.keep_alive(1, feed.clone()).unwrap();
    let first = next(&rx).await;
    assert_eq!(
        (first.id, first.state, first.ttl),
        (1, LeaseState::Alive, i64::MAX)
    );
    // The keeper is still running: a second lease is kept too.
    let _two = e.keep_alive(2, feed).unwrap();
    let second = next(&rx).await;
    assert_eq!((second.id, second.state), (2, LeaseState::Alive));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_only_when_the_cluster_says_so() {
    let fake = Arc::new(Knobs::default());
    fake.ka_ttl.store(1, Ordering::SeqCst);
    fake.ka_answers.store(1, Ordering::SeqCst);
    fake.held.store(true, Ordering::SeqCst);
    let e = serve(fake.clone()).await;
    let (feed, rx) = stream::channel(16);
    let guard = e.keep_alive(7, feed).unwrap();
    assert_eq!(next(&rx).await.state, LeaseState::Alive);
    // Refreshes go unanswered past the 1 s TTL, but the cluster still holds the lease: no
    // LOST, and the keeper goes on refreshing.
    let requests = fake.ka_requests.load(Ordering::SeqCst);
    let quiet = tokio::time::timeout(Duration::from_millis(2500), rx.recv()).await;
    assert!(
        quiet.is_err(),
        "nothing to report while the lease is held: {quiet:?}"
    );
    assert!(!guard.is_lost());
    assert!(
        fake.ka_requests.load(Ordering::SeqCst) >= requests + 3,
        "the keeper stopped refreshing"
    );
    // Now the cluster says it is gone.
    fake.held.store(false, Ordering::SeqCst);
    let lost = next(&rx).await;
    assert_eq!((lost.id, lost.state, lost.ttl), (7, LeaseState::Lost, -1));
    assert!(lost.reason.contains("the cluster says"), "{}", lost.reason);
    assert!(guard.is_lost());
}

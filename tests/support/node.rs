//! Embedded-node members for the tests: one process, members reaching each other through
//! the in-process router, each with its own temporary data dir.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use etcdc::node::member::{Member, MemberConfig, Peers, Router};

/// A cluster of `n` members (ids 1..=n) in this process.
pub struct NodeCluster {
    pub router: Router,
    pub dir: tempfile::TempDir,
    pub n: u64,
    tune: fn(&mut MemberConfig),
}

impl NodeCluster {
    pub fn config(&self, id: u64) -> MemberConfig {
        let initial: BTreeMap<u64, String> =
            (1..=self.n).map(|i| (i, format!("member-{i}"))).collect();
        let mut c = MemberConfig::new(id, self.dir.path().join(format!("m{id}")), initial);
        // Quick elections for the tests.
        c.heartbeat_ms = 50;
        c.election_ms = 600;
        (self.tune)(&mut c);
        c
    }

    /// Starts (or restarts) member `id` on its data dir.
    pub async fn start_member(&self, id: u64) -> Arc<Member> {
        self.start_member_with(id, Arc::new(self.router.clone()))
            .await
    }

    /// `start_member`, the member's own calls on the others (forwarded writes, read
    /// indexes) made through `peers`.
    pub async fn start_member_with(&self, id: u64, peers: Arc<dyn Peers>) -> Arc<Member> {
        self.start_member_on(id, self.router.clone(), peers).await
    }

    /// `start_member_with`, Raft's messages sent through `network`.
    pub async fn start_member_on(
        &self,
        id: u64,
        network: impl openraft::network::RaftNetworkFactory<etcdc::node::raft::TypeConfig>,
        peers: Arc<dyn Peers>,
    ) -> Arc<Member> {
        let m = Arc::new(
            Member::start(self.config(id), network, peers)
                .await
                .expect("member starts"),
        );
        self.router.add(m.clone());
        m
    }

    /// Stops member `id` (its data stays).
    pub async fn stop_member(&self, id: u64) {
        if let Some(m) = self.router.remove(id) {
            m.shutdown().await;
        }
    }

    pub fn member(&self, id: u64) -> Arc<Member> {
        self.router.get(id).expect("a running member")
    }

    /// Waits (at most 10 s) until member `id` knows a leader; returns it.
    pub async fn leader_seen_by(&self, id: u64) -> u64 {
        let m = self.member(id);
        let metrics = m
            .raft()
            .wait(Some(Duration::from_secs(10)))
            .metrics(|x| x.current_leader.is_some(), "a leader")
            .await
            .expect("a leader within 10 s");
        metrics.current_leader.expect("leader")
    }

    pub async fn start(n: u64) -> NodeCluster {
        Self::start_with(n, |_| {}).await
    }

    /// `n` members whose configuration `tune` adjusts, none started yet.
    pub fn empty(n: u64, tune: fn(&mut MemberConfig)) -> NodeCluster {
        NodeCluster {
            router: Router::default(),
            dir: tempfile::tempdir().expect("temp dir"),
            n,
            tune,
        }
    }

    /// Waits (at most 10 s) until every member follows one leader, then keeps any from
    /// campaigning on its own; returns the leader.
    pub async fn settled(&self) -> u64 {
        let until = tokio::time::Instant::now() + Duration::from_secs(10);
        // Every member's changes into one channel; the tasks end with the set.
        let (tx, mut changed) = tokio::sync::mpsc::unbounded_channel();
        let mut watching = tokio::task::JoinSet::new();
        for id in 1..=self.n {
            let (mut metrics, tx) = (self.member(id).raft().metrics(), tx.clone());
            watching.spawn(async move {
                while metrics.changed().await.is_ok() && tx.send(()).is_ok() {}
            });
        }
        let leader = loop {
            let leaders: Vec<_> = (1..=self.n)
                .map(|id| self.member(id).raft().metrics().borrow().current_leader)
                .collect();
            if let Some(l) = leaders[0].filter(|l| leaders.iter().all(|x| *x == Some(*l))) {
                break l;
            }
            tokio::time::timeout_at(until, changed.recv())
                .await
                .expect("all follow one leader within 10 s");
        };
        for id in 1..=self.n {
            self.member(id).raft().runtime_config().elect(false);
        }
        leader
    }

    /// Starts `n` members whose configuration `tune` adjusts.
    pub async fn start_with(n: u64, tune: fn(&mut MemberConfig)) -> NodeCluster {
        let c = NodeCluster::empty(n, tune);
        for id in 1..=n {
            c.start_member(id).await;
        }
        c.leader_seen_by(1).await;
        c
    }
}

/// One embedded member alone: the embedded default.
pub async fn single() -> (Arc<Member>, NodeCluster) {
    let c = NodeCluster::start(1).await;
    (c.member(1), c)
}

/// Three members; the client talks to member 2 (a follower or the leader, as elections go).
/// Once all three follow one leader, none campaigns on its own: these are semantics tests,
/// and a test runtime stalled past the election timeout on a loaded machine would otherwise
/// bring an election, and a write of unknown outcome, into the middle of one (failover is
/// tested where it is meant to happen).
pub async fn three() -> (Arc<Member>, NodeCluster) {
    let c = NodeCluster::start(3).await;
    c.settled().await;
    (c.member(2), c)
}

/// Behaviour-suite targets.
pub async fn single_target() -> Option<super::Target> {
    let (m, c) = single().await;
    Some(super::Target {
        etcd: m,
        cluster: None,
        keep: Some(Box::new(c)),
    })
}

pub async fn three_target() -> Option<super::Target> {
    let (m, c) = three().await;
    Some(super::Target {
        etcd: m,
        cluster: None,
        keep: Some(Box::new(c)),
    })
}

/// A single member serving etcd's gRPC API on a free loopback port, and its client URL.
pub async fn serve_single() -> (NodeCluster, String, tokio::sync::oneshot::Sender<()>) {
    let c = NodeCluster::start(1).await;
    let (url, stop) = serve(c.member(1)).await;
    (c, url, stop)
}

/// Member `m` serving etcd's gRPC API on a free loopback port: its client URL, and the
/// sender that stops it (dropping it stops it too).
pub async fn serve(m: Arc<Member>) -> (String, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let incoming = etcdc::node::nodelay(listener);
    tokio::spawn(etcdc::node::grpc::serve(
        m,
        Default::default(),
        incoming,
        async {
            let _ = stopped.await;
        },
    ));
    (url, stop)
}

/// The remote client against a member over gRPC: what `etcdctl` and other clients see.
pub async fn grpc_target() -> Option<super::Target> {
    let (c, url, stop) = serve_single().await;
    Some(super::Target {
        etcd: super::remote(&url),
        cluster: None,
        keep: Some(Box::new((c, stop))),
    })
}

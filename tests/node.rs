//! The embedded node's members through restarts and failures: data back after a restart
//! (from the log alone, and from a snapshot plus the log), a new leader when the leader
//! stops with every acknowledged write kept, a restarted member catching up by snapshot
//! after its peers purged their logs, and one process per data dir.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcdc::node::member::Member;
use etcdc::node::raft::{Command, Outcome, TypeConfig};
use etcdc::pb::etcdserverpb::*;
use etcdc::{ErrorKind, Etcd};
use openraft::error::{InstallSnapshotError, RPCError, RaftError};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, EntryPayload};
use support::node::NodeCluster;
use support::{dl, put};

async fn values(e: &dyn Etcd, prefix: &str, serializable: bool) -> Vec<(String, String)> {
    kvs(e, prefix, serializable)
        .await
        .into_iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(&kv.key).into_owned(),
                String::from_utf8_lossy(&kv.value).into_owned(),
            )
        })
        .collect()
}

async fn kvs(e: &dyn Etcd, prefix: &str, serializable: bool) -> Vec<etcdc::pb::mvccpb::KeyValue> {
    let r = e
        .range(
            RangeRequest {
                key: prefix.into(),
                range_end: etcdc::kv::prefix_end(prefix.as_bytes()),
                serializable,
                ..Default::default()
            },
            dl(),
        )
        .await
        .unwrap();
    r.kvs
}

fn expected(n: usize) -> Vec<(String, String)> {
    let mut v: Vec<_> = (0..n)
        .map(|i| (format!("/k/{i:04}"), format!("v{i}")))
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_member_has_all_its_data_from_log_and_snapshot() {
    let c = NodeCluster::start(1).await;
    let m = c.member(1);
    for i in 0..150 {
        m.put(put(format!("/k/{i:04}"), format!("v{i}")), dl())
            .await
            .unwrap();
    }
    let rev = m.status(None, dl()).await.unwrap().header.unwrap().revision;
    c.stop_member(1).await;
    drop(m);
    let m = c.start_member(1).await;
    c.leader_seen_by(1).await;
    assert_eq!(values(&*m, "/k/", false).await, expected(150));
    assert_eq!(
        m.status(None, dl()).await.unwrap().header.unwrap().revision,
        rev,
        "the same revision after a restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_snapshots_and_a_purged_log_a_restart_loses_nothing() {
    let c = NodeCluster::start_with(1, |cfg| cfg.snapshot_count = 20).await;
    let m = c.member(1);
    for i in 0..150 {
        m.put(put(format!("/k/{i:04}"), format!("v{i}")), dl())
            .await
            .unwrap();
    }
    c.stop_member(1).await;
    drop(m);
    assert!(
        c.dir.path().join("m1/snap/snapshot.snap").exists(),
        "snapshots were taken"
    );
    let m = c.start_member(1).await;
    c.leader_seen_by(1).await;
    assert_eq!(values(&*m, "/k/", false).await, expected(150));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_stops_a_new_one_is_elected_and_nothing_acknowledged_is_lost() {
    let c = NodeCluster::start_with(3, |cfg| {
        cfg.snapshot_count = 30;
        cfg.catchup_entries = 5;
    })
    .await;
    let old = c.leader_seen_by(1).await;
    let survivor = (1..=3).find(|id| *id != old).unwrap();
    let client = c.member(survivor);
    for i in 0..50 {
        client
            .put(put(format!("/k/{i:04}"), format!("v{i}")), dl())
            .await
            .unwrap();
    }
    let snapshot_before = c
        .member(old)
        .raft()
        .metrics()
        .borrow()
        .snapshot
        .map_or(0, |s| s.index);
    let stopped_at = Instant::now();
    c.stop_member(old).await;
    // Writes go on through the survivor: a new leader within three election timeouts.
    let mut acked = 50;
    loop {
        match client
            .put(put(format!("/k/{acked:04}"), format!("v{acked}")), dl())
            .await
        {
            Ok(_) => {
                acked += 1;
                if acked >= 150 {
                    break;
                }
            }
            Err(e) => panic!("write after the leader stopped: {e:?}"),
        }
    }
    let new = c.leader_seen_by(survivor).await;
    assert_ne!(new, old);
    let elapsed = stopped_at.elapsed();
    eprintln!("100 writes through a leader change took {elapsed:?}");
    for id in (1..=3).filter(|id| *id != old) {
        assert_eq!(values(&*c.member(id), "/k/", false).await, expected(150));
    }
    // The old leader comes back behind purged logs: it catches up (by snapshot).
    let back = c.start_member(old).await;
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        if values(&*back, "/k/", true).await == expected(150) {
            break;
        }
        assert!(
            Instant::now() < until,
            "the restarted member never caught up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let snapshot_after = back
        .raft()
        .metrics()
        .borrow()
        .snapshot
        .map_or(0, |s| s.index);
    assert!(
        snapshot_after > snapshot_before + 30,
        "caught up by a snapshot from the leader ({snapshot_before} -> {snapshot_after})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_member_on_the_same_data_dir_is_refused() {
    let c = NodeCluster::start(1).await;
    let err = Member::start(
        c.config(1),
        c.router.clone(),
        std::sync::Arc::new(c.router.clone()),
    )
    .await
    .err()
    .expect("the data dir is in use");
    assert_eq!(err.kind, ErrorKind::FailedPrecondition);
    assert!(
        err.message.contains("in use by another process"),
        "{}",
        err.message
    );
}

async fn lease_with_key(e: &dyn Etcd, ttl: i64, key: &str) -> i64 {
    let id = e
        .lease_grant(LeaseGrantRequest { ttl, id: 0 }, dl())
        .await
        .unwrap()
        .id;
    e.put(
        PutRequest {
            lease: id,
            ..put(key, "v")
        },
        dl(),
    )
    .await
    .unwrap();
    id
}

async fn present(e: &dyn Etcd, key: &str) -> bool {
    !values(e, key, false).await.is_empty()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_not_kept_alive_expires_and_takes_its_keys() {
    let c = NodeCluster::start(1).await;
    let m = c.member(1);
    lease_with_key(&*m, 2, "/lease/dropped").await;
    let kept = lease_with_key(&*m, 2, "/lease/kept").await;
    let (feed, states) = etcdc::stream::channel(16);
    let _guard = m.keep_alive(kept, feed).unwrap();
    let granted = Instant::now();
    let until = granted + Duration::from_secs(6);
    while present(&*m, "/lease/dropped").await {
        assert!(Instant::now() < until, "the lease never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = granted.elapsed();
    assert!(
        took >= Duration::from_millis(1900),
        "expired early: {took:?}"
    );
    assert!(present(&*m, "/lease/kept").await, "the kept lease expired");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(present(&*m, "/lease/kept").await, "the kept lease expired");
    let first = states.next(Some(Duration::from_secs(1))).unwrap();
    assert_eq!(first.state, etcdc::api::LeaseState::Alive);
    let ttl = m
        .lease_time_to_live(
            LeaseTimeToLiveRequest {
                id: kept,
                keys: false,
            },
            dl(),
        )
        .await
        .unwrap();
    assert!(
        ttl.ttl >= 1 && ttl.ttl <= 2 && ttl.granted_ttl == 2,
        "{ttl:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_change_does_not_expire_a_kept_lease() {
    let c = NodeCluster::start(3).await;
    let old = c.leader_seen_by(1).await;
    let survivor = (1..=3).find(|id| *id != old).unwrap();
    let client = c.member(survivor);
    let id = lease_with_key(&*client, 3, "/lease/session").await;
    let (feed, _states) = etcdc::stream::channel(16);
    let guard = client.keep_alive(id, feed).unwrap();
    c.stop_member(old).await;
    // Several TTLs across the leader change: the new leader extends, the keeper goes on.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        present(&*client, "/lease/session").await,
        "the lease was lost in the leader change"
    );
    assert!(!guard.is_lost());
}

/// etcd's watch fragmentation: one revision whose events pass the request limit (a delete of
/// 100 keys of 20 kB, watched with prev_kv) comes in pieces marked `fragment` but the last,
/// when the watch asked for it, and whole otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_revision_is_fragmented_when_the_watch_asks() {
    use etcdc::pb::etcdserverpb::watch_client::WatchClient;
    use etcdc::pb::etcdserverpb::watch_request::RequestUnion;
    let (_c, url, _stop) = support::node::serve_single().await;
    let e = support::remote(&url);
    for i in 0..100 {
        e.put(put(format!("/big/{i:03}"), "v".repeat(20_000)), dl())
            .await
            .unwrap();
    }
    let client = WatchClient::connect(url.clone())
        .await
        .unwrap()
        .max_decoding_message_size(usize::MAX);
    let watch = |fragment: bool| {
        let mut client = client.clone();
        async move {
            let (tx, rx) = tokio::sync::mpsc::channel(1);
            tx.send(WatchRequest {
                request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                    key: b"/big/".to_vec(),
                    range_end: etcdc::kv::prefix_end(b"/big/"),
                    prev_kv: true,
                    fragment,
                    ..Default::default()
                })),
            })
            .await
            .unwrap();
            let mut stream = client
                .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
                .unwrap()
                .into_inner();
            let created = stream.message().await.unwrap().unwrap();
            assert!(created.created);
            (tx, stream)
        }
    };
    let (_keep_whole, mut whole) = watch(false).await;
    let (_keep_pieces, mut pieces) = watch(true).await;
    let deleted = e
        .delete_range(
            DeleteRangeRequest {
                key: b"/big/".to_vec(),
                range_end: etcdc::kv::prefix_end(b"/big/"),
                ..Default::default()
            },
            dl(),
        )
        .await
        .unwrap();
    assert_eq!(deleted.deleted, 100);
    let one = whole.message().await.unwrap().unwrap();
    assert_eq!((one.events.len(), one.fragment), (100, false));
    let mut got = Vec::new();
    loop {
        let r = pieces.message().await.unwrap().unwrap();
        let more = r.fragment;
        assert!(
            prost::Message::encoded_len(&r) < 1536 * 1024,
            "a piece over the limit"
        );
        got.push(r);
        if !more {
            break;
        }
    }
    assert!(got.len() >= 2, "not fragmented: {} response", got.len());
    let events: usize = got.iter().map(|r| r.events.len()).sum();
    assert_eq!(events, 100);
    let revision = deleted.header.unwrap().revision;
    assert!(got.iter().all(|r| r
        .events
        .iter()
        .all(|ev| ev.kv.as_ref().unwrap().mod_revision == revision)));
}

/// What etcdctl's transcript diff found: a put with ignore_value on a missing key is
/// InvalidArgument, and member list's header has no revision — on real etcd and on a member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_codes_and_cluster_headers_match_etcd() {
    use etcdc::pb::etcdserverpb::cluster_client::ClusterClient;
    use etcdc::pb::etcdserverpb::kv_client::KvClient;
    use etcdc::pb::etcdserverpb::MemberListRequest;
    async fn check(url: String, who: &str) {
        let channel = tonic::transport::Endpoint::from_shared(url)
            .expect("url")
            .connect_lazy();
        let mut kv = KvClient::new(channel.clone());
        kv.put(put("/present", "v")).await.expect("put");
        let e = kv
            .put(PutRequest {
                key: b"/missing".to_vec(),
                ignore_value: true,
                ..Default::default()
            })
            .await
            .expect_err("ignore_value on a missing key");
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{who}: {e:?}");
        assert_eq!(e.message(), "etcdserver: key not found", "{who}");
        let list = ClusterClient::new(channel)
            .member_list(MemberListRequest::default())
            .await
            .expect("member list")
            .into_inner();
        let header = list.header.expect("a header");
        assert_eq!(header.revision, 0, "{who}: {header:?}");
        assert_ne!(header.member_id, 0, "{who}");
    }
    let (_c, url, _stop) = support::node::serve_single().await;
    check(url, "etcdc-node").await;
    if let Some(etcd) = support::etcd::Cluster::start(1) {
        check(etcd.client_url(0), "etcd").await;
    }
}

/// How the leader takes the writes its followers forward.
#[derive(Clone, Copy, Default)]
enum Leader {
    /// As this build does.
    #[default]
    Current,
    /// Proposes them, but its answers never come back.
    Mute,
    /// A build before tagged writes: cannot read one (as `answer_call` then answers).
    Untagged,
}

/// Members reaching each other through the router, their forwarded writes taken as
/// `Builds::leader` says, `Builds::old` answering what it reads as an earlier build.
struct Forwards(etcdc::node::member::Router, Builds);

#[async_trait::async_trait]
impl etcdc::node::member::Peers for Forwards {
    async fn forward_write(&self, leader: u64, cmd: Command) -> etcdc::Result<Outcome> {
        let how = *self.1.leader.lock().unwrap();
        match how {
            Leader::Current => self.0.forward_write(leader, cmd).await,
            Leader::Mute => {
                let _ = self.0.forward_write(leader, cmd).await;
                std::future::pending().await
            }
            Leader::Untagged => {
                if let Command::Forwarded { .. } = cmd {
                    let why = "undecodable record: unknown variant";
                    return Err(etcdc::Error::new(ErrorKind::InvalidArgument, why));
                }
                self.0.forward_write(leader, cmd).await
            }
        }
    }
    async fn read_index(&self, leader: u64) -> etcdc::Result<u64> {
        self.0.read_index(leader).await
    }
    async fn lease_ttl(&self, leader: u64, id: i64, refresh: bool) -> etcdc::Result<i64> {
        self.0.lease_ttl(leader, id, refresh).await
    }
    async fn tell_removed(&self, id: u64, addr: &str) {
        self.0.tell_removed(id, addr).await
    }
    async fn campaign(&self, id: u64) -> etcdc::Result<()> {
        self.0.campaign(id).await
    }
    async fn reads(&self, id: u64) -> etcdc::Result<u32> {
        if id == self.1.old.load(Ordering::SeqCst) {
            return Ok(0);
        }
        self.0.reads(id).await
    }
    fn last_contact(&self, id: u64) -> Option<std::time::Instant> {
        self.0.last_contact(id)
    }
}

/// Eight concurrent puts on a follower of three members whose leader takes forwarded writes
/// as `leader` does: each is answered, with the revision the leader's store gave it.
async fn follower_puts_through(leader: Leader) {
    let c = NodeCluster::empty(3, |_| {});
    let builds = Builds::default();
    for id in 1..=3 {
        let peers = Arc::new(Forwards(c.router.clone(), builds.clone()));
        let network = Counting(c.router.clone(), builds.clone());
        c.start_member_on(id, network, peers).await;
    }
    let lead = c.settled().await;
    let mut followers = (1..=3).filter(|id| *id != lead);
    let m = c.member(followers.next().unwrap());
    // Once the leader heard what every member reads, it tags this follower's writes.
    builds.to.store(followers.next().unwrap(), Ordering::SeqCst);
    until_tagged(&m, &builds, "/warm/").await;
    *builds.leader.lock().unwrap() = leader;
    let writes: Vec<_> = (0..8)
        .map(|i| {
            let m = m.clone();
            tokio::spawn(async move { m.put(put(format!("/fwd/{i}"), "v"), dl()).await })
        })
        .collect();
    let mut answers = Vec::new();
    for w in writes {
        answers.push(w.await.unwrap());
    }
    let on_leader = kvs(&*c.member(lead), "/fwd/", false).await;
    for (i, a) in answers.into_iter().enumerate() {
        let a = a.expect("the follower's write answered");
        let kv = &on_leader[i];
        assert_eq!(kv.key, format!("/fwd/{i}").as_bytes());
        assert_eq!(kv.mod_revision, a.header.unwrap().revision);
    }
    assert_eq!(m.raft().metrics().borrow().current_leader, Some(lead));
}

/// As etcd's member answers a write from its own apply: a follower's writes are answered
/// once it applied them, without the leader's answer (which here never comes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_answers_its_writes_from_its_own_apply() {
    follower_puts_through(Leader::Mute).await;
}

/// A leader of a build that cannot read a tagged write is sent it untagged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_cannot_read_tagged_writes_is_sent_them_untagged() {
    follower_puts_through(Leader::Untagged).await;
}

/// The builds of a test's members, as the others see them: how the leader takes forwarded
/// writes (`leader`); member `old` (none: 0) says it reads no tagged entry, as a build before
/// them answers; the tagged entries Raft sends member `to` are counted.
#[derive(Clone, Default)]
struct Builds {
    leader: Arc<std::sync::Mutex<Leader>>,
    old: Arc<AtomicU64>,
    to: Arc<AtomicU64>,
    tagged: Arc<AtomicU64>,
}

/// Raft's messages through the router, counting the tagged entries sent to `Builds::to`.
#[derive(Clone)]
struct Counting(etcdc::node::member::Router, Builds);

struct CountingLink(etcdc::node::member::RouterLink, Builds, u64);

impl RaftNetworkFactory<TypeConfig> for Counting {
    type Network = CountingLink;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> CountingLink {
        CountingLink(
            self.0.new_client(target, node).await,
            self.1.clone(),
            target,
        )
    }
}

impl RaftNetwork<TypeConfig> for CountingLink {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        if self.2 == self.1.to.load(Ordering::SeqCst) {
            let tagged = rpc
                .entries
                .iter()
                .filter(|e| matches!(e.payload, EntryPayload::Normal(Command::Forwarded { .. })));
            self.1
                .tagged
                .fetch_add(tagged.count() as u64, Ordering::SeqCst);
        }
        self.0.append_entries(rpc, option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        self.0.install_snapshot(rpc, option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.0.vote(rpc, option).await
    }
}

/// While a member's build cannot read a tagged write (an earlier one, in a rolling upgrade),
/// the leader puts its followers' writes into the log untagged, and answers them itself;
/// once the member is upgraded, tagged again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_member_is_sent_a_tagged_write_before_its_build_reads_one() {
    let c = NodeCluster::empty(3, |_| {});
    // Member 3 is the earlier build, a follower: started once 1 and 2 chose a leader.
    let (old, builds) = (3, Builds::default());
    builds.old.store(old, Ordering::SeqCst);
    builds.to.store(old, Ordering::SeqCst);
    for id in 1..=3 {
        if id == old {
            c.leader_seen_by(1).await;
        }
        let peers = Arc::new(Forwards(c.router.clone(), builds.clone()));
        let network = Counting(c.router.clone(), builds.clone());
        c.start_member_on(id, network, peers).await;
    }
    let lead = c.settled().await;
    assert_ne!(lead, old);
    let w = c.member(if lead == 1 { 2 } else { 1 });
    for i in 0..20 {
        let answer = w.put(put(format!("/old/{i}"), "v"), dl()).await;
        answer.expect("the follower's write answered");
    }
    assert_eq!(builds.tagged.load(Ordering::SeqCst), 0);
    assert_eq!(kvs(&*c.member(old), "/old/", false).await.len(), 20);
    // Upgraded: asked again, it reads them.
    builds.old.store(0, Ordering::SeqCst);
    until_tagged(&w, &builds, "/new/").await;
}

/// Puts through follower `m` (keys under `prefix`) until a tagged entry went to `Builds::to`
/// (at most 10 s).
async fn until_tagged(m: &Member, builds: &Builds, prefix: &str) {
    let until = Instant::now() + Duration::from_secs(10);
    let mut i = 0;
    while builds.tagged.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < until, "no tagged write within 10 s");
        m.put(put(format!("{prefix}{i}"), "v"), dl()).await.unwrap();
        i += 1;
    }
}

/// One member in `dir`, serving clients on a free loopback port: it and its URL.
async fn one_member_serving(dir: &std::path::Path) -> (etcdc::node::launch::RunningNode, String) {
    let url = format!("http://127.0.0.1:{}", support::etcd::free_port());
    let node = etcdc::node::launch::start(etcdc::node::launch::NodeOptions {
        data_dir: Some(dir.join("data")),
        listen_client_urls: vec![url.clone()],
        advertise_client_urls: vec![url.clone()],
        listen_peer_urls: Vec::new(),
        ..Default::default()
    })
    .await
    .unwrap();
    (node, url)
}

/// A member stops while remote clients hold streams open — a watch that reads (told at once
/// that the server stopped), and a watch whose client has stopped reading (cut at the grace's
/// end): the stop ends within its grace (it waited on them for ever: tonic's graceful
/// shutdown waits for every connection to close).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_stops_while_remote_clients_watch() {
    use etcdc::pb::etcdserverpb::watch_client::WatchClient;
    use etcdc::remote::{parse_endpoints, Remote, RemoteConfig};

    let dir = tempfile::tempdir().unwrap();
    let (node, url) = one_member_serving(dir.path()).await;
    let remote = Remote::new(RemoteConfig {
        endpoints: parse_endpoints(&url).unwrap(),
        ..Default::default()
    })
    .unwrap();
    let reading = remote
        .watcher(
            WatchCreateRequest {
                key: b"w".to_vec(),
                ..Default::default()
            },
            dl(),
        )
        .await
        .unwrap();
    // A raw stream: its watch is created, then nothing reads its answers.
    let mut raw = WatchClient::connect(url.clone()).await.unwrap();
    let (requests, rx) = tokio::sync::mpsc::channel(1);
    requests
        .send(WatchRequest {
            request_union: Some(watch_request::RequestUnion::CreateRequest(
                WatchCreateRequest {
                    key: b"w".to_vec(),
                    ..Default::default()
                },
            )),
        })
        .await
        .unwrap();
    let mut unread = raw
        .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    assert!(unread.message().await.unwrap().unwrap().created);
    for i in 0..100 {
        remote
            .put(put("w", format!("{i:0>1000}")), dl())
            .await
            .unwrap();
    }
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), node.stop())
        .await
        .expect("the member stopped within 10 s");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // The reading watch had every event put before the stop.
    let mut events = 0;
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(u) = reading.updates.recv().await {
            match u {
                etcdc::api::WatchUpdate::Events { events: e, .. } => events += e.len(),
                other => return Some(other),
            }
            if events == 100 {
                return None;
            }
        }
        None
    })
    .await
    .expect("the watch delivered within 10 s");
    assert!(ended.is_none() && events == 100, "{ended:?} after {events}");
    drop((requests, unread));
}

/// A member that stops ends its never-ending streams — a watch, a keep-alive, an
/// observation — with etcd's "server stopped" (Unavailable), so their clients move on at
/// once instead of holding the stop until its grace cuts the connection.
#[tokio::test]
async fn a_stopping_member_ends_its_streams_with_server_stopped() {
    use etcdc::pb::etcdserverpb::lease_client::LeaseClient;
    use etcdc::pb::etcdserverpb::watch_client::WatchClient;
    use etcdc::pb::v3electionpb::{election_client::ElectionClient, LeaderRequest};

    let dir = tempfile::tempdir().unwrap();
    let (node, url) = one_member_serving(dir.path()).await;
    let watch = WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(
            WatchCreateRequest {
                key: b"w".to_vec(),
                ..Default::default()
            },
        )),
    };
    let mut watching = WatchClient::connect(url.clone())
        .await
        .unwrap()
        .watch(tokio_stream::iter([watch]))
        .await
        .unwrap()
        .into_inner();
    assert!(watching.message().await.unwrap().unwrap().created);

    let mut leases = LeaseClient::connect(url.clone()).await.unwrap();
    let id = leases
        .lease_grant(LeaseGrantRequest { ttl: 60, id: 0 })
        .await
        .unwrap()
        .into_inner()
        .id;
    let (refresh, refreshes) = tokio::sync::mpsc::channel(1);
    refresh.send(LeaseKeepAliveRequest { id }).await.unwrap();
    let mut keeping = leases
        .lease_keep_alive(tokio_stream::wrappers::ReceiverStream::new(refreshes))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(keeping.message().await.unwrap().unwrap().ttl, 60);

    let mut observing = ElectionClient::connect(url.clone())
        .await
        .unwrap()
        .observe(LeaderRequest {
            name: b"e".to_vec(),
        })
        .await
        .unwrap()
        .into_inner();

    let stopped = tokio::spawn(node.stop());
    fn ended<T: std::fmt::Debug>(what: &str, end: Result<Option<T>, tonic::Status>) {
        match end {
            Err(s) => assert!(
                s.code() == tonic::Code::Unavailable && s.message() == "etcdserver: server stopped",
                "{what}: {s:?}"
            ),
            Ok(other) => panic!("{what}: {other:?}"),
        }
    }
    ended("watch", watching.message().await);
    ended("keep-alive", keeping.message().await);
    ended("observe", observing.message().await);
    tokio::time::timeout(Duration::from_secs(10), stopped)
        .await
        .expect("the member stopped within 10 s")
        .unwrap();
    drop(refresh);
}

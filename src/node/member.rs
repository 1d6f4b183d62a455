//! A running member: openraft over the node's storage, serving `trait Etcd` in process.
//! Writes are proposed through Raft (on a follower, forwarded to the leader); linearizable
//! reads wait for a read index confirmed by the leader, serializable reads are local.
//!
//! Members reach each other through `Peers` — Raft's messages and forwarded client calls.
//! `Router` is the in-process implementation (several members in one process, as the tests
//! run them); the peer transport over the network is the next step.
//!
//! Watches are served by the member's own hub (`watch.rs`), from its applied state.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::{
    CheckIsLeaderError, ClientWriteError, InstallSnapshotError, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Config, SnapshotPolicy};
use prost::Message;
use tokio::sync::{mpsc, oneshot};

use super::check_request_size;
use super::raft::{
    Command, LogStore, MemberChange, NodeId, Outcome, Raft, StateMachine, TypeConfig,
};
use crate::api::{Deadline, Etcd, KeepAliveGuard, LeaseUpdate, WatchControl, WatchUpdate};
use crate::error::{Error, ErrorKind, Result};
use crate::pb::etcdserverpb::request_op::Request;
use crate::pb::etcdserverpb::*;
use crate::stream::Feed;

/// How a member is set up.
#[derive(Clone, Debug)]
pub struct MemberConfig {
    pub id: NodeId,
    /// Where its log and snapshots live.
    pub dir: PathBuf,
    /// Every member of the initial cluster: id → peer address.
    pub initial: BTreeMap<NodeId, String>,
    pub heartbeat_ms: u64,
    pub election_ms: u64,
    /// Applied requests between snapshots (etcd's `--snapshot-count`).
    pub snapshot_count: u64,
    /// Requests kept behind a snapshot for slow followers (etcd's
    /// `--snapshot-catchup-entries`, taken as a tenth as many entries, which pack several
    /// requests); a member further behind gets the snapshot.
    pub catchup_entries: u64,
    /// Joining a running cluster (`--initial-cluster-state existing`): wait to be replicated
    /// to instead of proposing the initial membership.
    pub join: bool,
    /// The cluster token: members added later get their ids from it, as the first ones did.
    pub token: String,
    /// The space quota in bytes (etcd's `--quota-backend-bytes`).
    pub quota_bytes: u64,
    /// The member's name and the client URLs it advertises, published to the cluster.
    pub name: String,
    pub client_urls: Vec<String>,
}

impl MemberConfig {
    /// A member of a new cluster with etcd's default timing.
    pub fn new(id: NodeId, dir: PathBuf, initial: BTreeMap<NodeId, String>) -> Self {
        MemberConfig {
            id,
            dir,
            initial,
            heartbeat_ms: 100,
            election_ms: 1000,
            snapshot_count: 10_000,
            catchup_entries: 5000,
            join: false,
            token: "etcd-cluster".into(),
            quota_bytes: DEFAULT_QUOTA_BYTES,
            name: format!("{id:x}"),
            client_urls: Vec::new(),
        }
    }
}

/// How members reach each other: Raft's messages and forwarded client calls.
#[async_trait::async_trait]
pub trait Peers: Send + Sync + 'static {
    /// Proposes `cmd` on `leader`.
    async fn forward_write(&self, leader: NodeId, cmd: Command) -> Result<Outcome>;
    /// A read index confirmed by `leader`: the log index a linearizable read must wait for.
    async fn read_index(&self, leader: NodeId) -> Result<u64>;
    /// Lease `id`'s remaining TTL on `leader` (refreshed first when `refresh`); 0 if gone.
    async fn lease_ttl(&self, leader: NodeId, id: i64, refresh: bool) -> Result<i64>;
    /// Tells member `id` (at `addr`) that it was removed from the cluster; best effort.
    async fn tell_removed(&self, id: NodeId, addr: &str);
}

/// The lease clocks. Every member has one; only the leader's runs: it gives each lease its
/// TTL when it first sees it (so a new leader extends every live lease by its TTL, as etcd's
/// does), moves a lease's deadline on each keep-alive, and proposes the revocation of a lease
/// whose deadline passed (its keys are deleted in one revision).
#[derive(Clone)]
pub(crate) struct Lessor {
    id: NodeId,
    raft: Raft,
    sm: StateMachine,
    peers: Arc<dyn Peers>,
    deadlines: Arc<Mutex<HashMap<i64, Instant>>>,
}

impl Lessor {
    fn deadlines(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Instant>> {
        self.deadlines.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().current_leader == Some(self.id)
    }

    /// On the leader: lease `id`'s remaining TTL in whole seconds (refreshed first when
    /// `refresh`); 0 if it does not exist.
    pub async fn local_ttl(&self, id: i64, refresh: bool) -> Result<i64> {
        if !self.is_leader() {
            return Err(unavailable("etcdserver: not the leader"));
        }
        let Some((granted, _)) = self.sm.state.read().await.mvcc.lease(id) else {
            return Ok(0);
        };
        let now = Instant::now();
        let full = now + Duration::from_secs(granted.clamp(0, 365 * 24 * 3600) as u64);
        let mut deadlines = self.deadlines();
        let deadline = deadlines.entry(id).or_insert(full);
        if refresh {
            *deadline = full;
        }
        let left = deadline.saturating_duration_since(now);
        Ok((left.as_millis() as i64 + 999) / 1000)
    }

    /// Lease `id`'s remaining TTL from the leader, wherever it is.
    pub async fn ttl(&self, id: i64, refresh: bool) -> Result<i64> {
        let leader = self.raft.metrics().borrow().current_leader;
        match leader {
            Some(l) if l == self.id => self.local_ttl(id, refresh).await,
            Some(l) => self.peers.lease_ttl(l, id, refresh).await,
            None => Err(Error::new(ErrorKind::NoLeader, "etcdserver: no leader")),
        }
    }

    /// The clock: every 100 ms on the leader, expired leases are proposed for revocation.
    async fn run(self, proposals: mpsc::WeakUnboundedSender<(Command, Waiter)>) {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let Some(proposals) = proposals.upgrade() else {
                return;
            };
            if !self.is_leader() {
                self.deadlines().clear();
                continue;
            }
            let leases = self.sm.state.read().await.mvcc.lease_ttls();
            let now = Instant::now();
            let mut expired = Vec::new();
            {
                let mut deadlines = self.deadlines();
                deadlines.retain(|id, _| leases.iter().any(|(l, _)| l == id));
                for (id, ttl) in leases {
                    let d = deadlines
                        .entry(id)
                        .or_insert(now + Duration::from_secs(ttl.clamp(0, 365 * 24 * 3600) as u64));
                    if now >= *d {
                        expired.push(id);
                        // Not again before the revocation has had time to apply.
                        *d = now + Duration::from_secs(1);
                    }
                }
            }
            for id in expired {
                let (answer, _) = oneshot::channel();
                let _ = proposals.send((Command::LeaseRevoke(id), answer));
            }
        }
    }
}

/// Linearizable reads share leadership confirmations: one round runs at a time, and it
/// serves every read that was waiting when it started; reads that arrive during a round
/// wait for the next one, which starts after them, as linearizability requires. So a burst
/// of reads costs one heartbeat round to a quorum, not one each.
#[derive(Clone)]
struct ReadGate {
    id: NodeId,
    raft: Raft,
    peers: Arc<dyn Peers>,
    waiting: Arc<Mutex<Waiting>>,
}

/// Whether a confirmation round is running, and the reads waiting for the next one.
type Waiting = (bool, Vec<oneshot::Sender<Result<()>>>);

impl ReadGate {
    async fn barrier(&self, deadline: Deadline) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut w = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
            w.1.push(tx);
            !std::mem::replace(&mut w.0, true)
        };
        if start {
            tokio::spawn(self.clone().rounds());
        }
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(Error::new(ErrorKind::Closed, "the member is stopping")),
            // The caller's deadline, as the remote client reports it.
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                "deadline exceeded (the read was not confirmed by a leader in time)",
            )),
        }
    }

    async fn rounds(self) {
        loop {
            let waiters = {
                let mut w = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
                if w.1.is_empty() {
                    w.0 = false;
                    return;
                }
                std::mem::take(&mut w.1)
            };
            let answer = self.confirm().await;
            for w in waiters {
                let _ = w.send(answer.clone());
            }
        }
    }

    /// One confirmation: on the leader a heartbeat round to a quorum; on a follower the
    /// leader's read index; then this member's apply catches up to it.
    async fn confirm(&self) -> Result<()> {
        let attempt = async {
            loop {
                match self.raft.ensure_linearizable().await {
                    Ok(_) => return Ok(()),
                    Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                        if let Some(leader) = f.leader_id.filter(|l| *l != self.id) {
                            if let Ok(index) = self.peers.read_index(leader).await {
                                self.raft
                                    .wait(None)
                                    .applied_index_at_least(Some(index), "read index")
                                    .await
                                    .map_err(|e| unavailable(e.to_string()))?;
                                return Ok(());
                            }
                        }
                    }
                    Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_))) => {}
                    Err(e) => return Err(unavailable(format!("etcdserver: {e}"))),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(PROPOSAL_TIMEOUT, attempt)
            .await
            .unwrap_or_else(|_| {
                Err(Error::new(
                    ErrorKind::Unavailable,
                    "etcdserver: request timed out (no leader to confirm the read)",
                ))
            })
    }
}

fn unavailable(what: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::Unavailable, what.to_string())
}

/// A running member.
pub struct Member {
    id: NodeId,
    raft: Raft,
    sm: StateMachine,
    /// Writes waiting to be packed into the next entry.
    proposals: mpsc::UnboundedSender<(Command, Waiter)>,
    lessor: Lessor,
    reads: ReadGate,
    cluster_id: u64,
    /// etcd's minimum lease TTL: 1.5 election timeouts, in whole seconds.
    min_lease_ttl: i64,
    lease_seq: AtomicI64,
    /// The runtime the member runs on: for tasks started from a caller's own thread.
    rt: tokio::runtime::Handle,
    peers: Arc<dyn Peers>,
    token: String,
    quota_bytes: u64,
    /// The log waiting for disk space: new writes are refused at once meanwhile.
    stall: Arc<super::wal::Stall>,
    /// Set once the cluster's leader said it removed this member (`member remove`).
    removed: tokio::sync::watch::Sender<bool>,
    /// For `/metrics`: the log's sync latencies, and the leader changes this member saw.
    sync_latency: Arc<super::metrics::Histogram>,
    leader_changes: Arc<std::sync::atomic::AtomicU64>,
}

impl Member {
    /// Starts a member: restores its log and state machine from its directory, joins Raft
    /// and, on first start, proposes the initial membership (every member proposes the same
    /// one, which Raft accepts once).
    pub async fn start(
        config: MemberConfig,
        network: impl RaftNetworkFactory<TypeConfig>,
        peers: Arc<dyn Peers>,
    ) -> Result<Member> {
        let log = LogStore::open(&config.dir.join("wal"))?;
        let stall = log.stall.clone();
        let sync_latency = log.sync_latency.clone();
        let sm = StateMachine::open(&config.dir.join("snap"))?;
        let raft_config = Config {
            cluster_name: "etcdc".into(),
            heartbeat_interval: config.heartbeat_ms,
            election_timeout_min: config.election_ms,
            election_timeout_max: config.election_ms * 2,
            // `SnapshotDue` counts requests; this counts entries (one request or a batch of
            // them), a backstop.
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_count),
            // Entries, not requests: each may pack many.
            max_in_snapshot_log_to_keep: config.catchup_entries.div_ceil(10),
            install_snapshot_timeout: 5000,
            ..Default::default()
        }
        .validate()
        .map_err(|e| Error::invalid(format!("invalid timing: {e}")))?;
        let raft = Raft::new(config.id, Arc::new(raft_config), network, log, sm.clone())
            .await
            .map_err(|e| Error::new(ErrorKind::Internal, format!("cannot start Raft: {e}")))?;
        if !config.join
            && !raft
                .is_initialized()
                .await
                .map_err(|e| Error::new(ErrorKind::Internal, e.to_string()))?
        {
            let members: BTreeMap<NodeId, BasicNode> = config
                .initial
                .iter()
                .map(|(id, addr)| (*id, BasicNode { addr: addr.clone() }))
                .collect();
            // Another member may have done it first: that is the same membership.
            let _ = raft.initialize(members).await;
        }
        // From the founding members: a member that joined later leaves itself out.
        let cluster_id = config
            .initial
            .keys()
            .filter(|id| !config.join || **id != config.id)
            .fold(0xcbf2_9ce4_8422_2325u64, |h, id| {
                (h ^ id).wrapping_mul(0x100_0000_01b3)
            });
        sm.hub.set_identity(cluster_id, config.id, raft.clone());
        tokio::spawn(sm.due.clone().run(config.snapshot_count, raft.clone()));
        let (removed, _) = tokio::sync::watch::channel(false);
        let leader_changes = Arc::new(std::sync::atomic::AtomicU64::new(0));
        tokio::spawn(count_leader_changes(raft.metrics(), leader_changes.clone()));
        let (proposals, queue) = mpsc::unbounded_channel();
        let lessor = Lessor {
            id: config.id,
            raft: raft.clone(),
            sm: sm.clone(),
            peers: peers.clone(),
            deadlines: Arc::default(),
        };
        tokio::spawn(lessor.clone().run(proposals.downgrade()));
        let reads = ReadGate {
            id: config.id,
            raft: raft.clone(),
            peers: peers.clone(),
            waiting: Arc::default(),
        };
        let attributes = super::mvcc::Attributes {
            name: config.name,
            client_urls: config.client_urls,
        };
        tokio::spawn(publish(
            sm.clone(),
            config.id,
            attributes,
            proposals.downgrade(),
        ));
        tokio::spawn(batch_proposals(
            raft.clone(),
            peers.clone(),
            config.id,
            queue,
        ));
        Ok(Member {
            id: config.id,
            raft,
            sm,
            proposals,
            lessor,
            reads,
            cluster_id,
            min_lease_ttl: ((config.election_ms * 3 / 2).div_ceil(1000)) as i64,
            lease_seq: AtomicI64::new(1),
            rt: tokio::runtime::Handle::current(),
            peers,
            token: config.token,
            quota_bytes: config.quota_bytes,
            stall,
            removed,
            sync_latency,
            leader_changes,
        })
    }

    /// `/metrics`: this member's state under etcd's metric names.
    pub fn metrics_text(&self) -> String {
        let m = self.raft.metrics().borrow().clone();
        let db_size = self.sm.size.load(Ordering::Relaxed);
        super::metrics::render(&super::metrics::Snapshot {
            id: self.id,
            has_leader: m.current_leader.is_some(),
            is_leader: m.current_leader == Some(self.id),
            leader_changes: self.leader_changes.load(Ordering::Relaxed),
            applied_index: m.last_applied.map_or(0, |l| l.index),
            db_size,
            quota: self.quota_bytes,
            wal_fsync: &self.sync_latency,
        })
    }

    /// The Raft handle, for the peer transport.
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// Stops the member (its data stays for a restart).
    pub async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
        self.sm.due.close();
        self.sm.hub.close();
    }

    /// Starts a watch; also returns the revision it was registered at (etcd's `created`
    /// header: a watch from revision 0 delivers everything after it).
    pub async fn watch_at(
        &self,
        req: &WatchCreateRequest,
        updates: Feed<WatchUpdate>,
    ) -> Result<(Box<dyn WatchControl>, i64)> {
        super::watch::start(&self.sm.hub, &self.sm.state, req, updates).await
    }

    /// The leader this member knows of.
    pub fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    /// A response header at the store's current revision.
    pub async fn header_now(&self) -> ResponseHeader {
        let revision = self.sm.state.read().await.mvcc.revision();
        self.header(revision).unwrap_or_default()
    }

    fn header(&self, revision: i64) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.id,
            revision,
            raft_term: self.raft.metrics().borrow().current_term,
        })
    }

    /// Proposes `cmd` through the batcher and waits for its answer until the deadline.
    async fn propose(&self, cmd: Command, deadline: Deadline) -> Result<Vec<u8>> {
        self.check_removed()?;
        if let Some(e) = self.stall.error() {
            return Err(e);
        }
        let (tx, rx) = oneshot::channel();
        self.proposals
            .send((cmd, tx))
            .map_err(|_| Error::new(ErrorKind::Closed, "the member is stopping"))?;
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(Error::new(ErrorKind::Closed, "the member is stopping")),
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                "deadline exceeded (the write was not committed in time)",
            )),
        }
    }

    /// etcd's quota check before a write that adds `cost` bytes: past the quota, the
    /// NOSPACE alarm is raised for the whole cluster and the write refused.
    async fn check_quota(&self, cost: u64, deadline: Deadline) -> Result<()> {
        let size = self.sm.size.load(Ordering::Relaxed);
        if size.saturating_add(cost) <= self.quota_bytes {
            return Ok(());
        }
        // Raised already: refused without another proposal.
        if self.sm.state.read().await.mvcc.out_of_space() {
            return Err(super::mvcc::no_space());
        }
        let raise = Command::Alarm {
            member: self.id,
            alarm: super::mvcc::ALARM_NOSPACE,
            on: true,
        };
        let _ = self.propose(raise, deadline).await;
        Err(super::mvcc::no_space())
    }

    /// The store now, as `Maintenance.Snapshot` streams it (see `raft::restore`).
    pub async fn backup(&self) -> Result<super::raft::Backup> {
        self.sm.backup().await
    }

    /// etcd's HashKV of this member's store at `revision` (0: now).
    pub async fn hash_kv(&self, revision: i64) -> Result<HashKvResponse> {
        let state = self.sm.state.read().await;
        let (hash, compact_revision) = state.mvcc.hash_kv(revision)?;
        let hash_revision = if revision == 0 {
            state.mvcc.revision()
        } else {
            revision
        };
        Ok(HashKvResponse {
            header: self.header(state.mvcc.revision()),
            hash,
            compact_revision,
            hash_revision,
        })
    }

    /// etcd's Alarm: list, raise or disarm.
    pub async fn alarm(&self, req: AlarmRequest, deadline: Deadline) -> Result<AlarmResponse> {
        use alarm_request::AlarmAction;
        let on = match AlarmAction::try_from(req.action) {
            Ok(AlarmAction::Get) => None,
            Ok(AlarmAction::Activate) => Some(true),
            Ok(AlarmAction::Deactivate) => Some(false),
            Err(_) => return Err(Error::invalid("unknown alarm action")),
        };
        if let Some(on) = on {
            let change = Command::Alarm {
                member: req.member_id,
                alarm: req.alarm,
                on,
            };
            self.propose(change, deadline).await?;
        } else {
            self.read_barrier(deadline).await?;
        }
        let state = self.sm.state.read().await;
        let alarms = match on {
            None => state
                .mvcc
                .alarms()
                .iter()
                .filter(|&&(_, a)| req.alarm == 0 || a == req.alarm)
                .map(|&(member_id, alarm)| AlarmMember { member_id, alarm })
                .collect(),
            Some(_) => vec![AlarmMember {
                member_id: req.member_id,
                alarm: req.alarm,
            }],
        };
        Ok(AlarmResponse {
            header: self.header(state.mvcc.revision()),
            alarms,
        })
    }

    /// etcd's answer once the member was removed from its cluster.
    fn check_removed(&self) -> Result<()> {
        if *self.removed.borrow() {
            return Err(Error::new(ErrorKind::FailedPrecondition, REMOVED));
        }
        Ok(())
    }

    /// Refuses a peer's call from member `from` if the cluster removed it (a member removed
    /// while it was down learns so when it asks for votes on its return).
    pub async fn refuse_removed(&self, from: NodeId) -> Result<()> {
        if self.sm.state.read().await.mvcc.is_removed(from) {
            return Err(Error::new(ErrorKind::FailedPrecondition, REMOVED));
        }
        Ok(())
    }

    /// Takes a peer's word that the cluster removed this member.
    pub fn mark_removed(&self) {
        self.removed.send_replace(true);
    }

    /// Resolves once the cluster has removed this member (etcd's removed member stops; the
    /// `etcdc-node` launcher exits, an embedded member refuses every call).
    pub async fn removed(&self) {
        let mut removed = self.removed.subscribe();
        let _ = removed.wait_for(|r| *r).await;
    }

    /// Waits until this member has applied everything committed when the call began,
    /// as confirmed by the leader: what a linearizable read needs.
    async fn read_barrier(&self, deadline: Deadline) -> Result<()> {
        self.check_removed()?;
        self.reads.barrier(deadline).await
    }

    /// This member's read index, when it is the leader.
    pub async fn local_read_index(&self) -> Result<u64> {
        match self.raft.ensure_linearizable().await {
            Ok(log_id) => Ok(log_id.map_or(0, |l| l.index)),
            Err(e) => Err(unavailable(e.to_string())),
        }
    }

    /// Lease `id`'s remaining TTL on this member, the leader (for a peer's call).
    pub async fn local_lease_ttl(&self, id: i64, refresh: bool) -> Result<i64> {
        self.lessor.local_ttl(id, refresh).await
    }

    /// Refreshes lease `id` on the leader: its TTL, or 0 once it is gone (etcd's answer).
    pub async fn lease_keep_alive_once(&self, id: i64) -> Result<i64> {
        self.lessor.ttl(id, true).await
    }

    /// Proposes `cmd` on this member (for a forwarded call).
    pub async fn local_write(&self, cmd: Command) -> Result<Outcome> {
        match cmd {
            Command::Membership(MemberChange::Removed(id)) => {
                if id == self.id {
                    self.removed.send_replace(true);
                }
                return Ok(Outcome(Some(Ok(Vec::new()))));
            }
            Command::Membership(change) => {
                return Ok(Outcome(Some(self.lead_change(change).await)));
            }
            _ => {}
        }
        self.raft
            .client_write(cmd)
            .await
            .map(|r| r.data)
            .map_err(|e| unavailable(e.to_string()))
    }
}

impl Member {
    /// etcd's MemberAdd / MemberRemove / MemberPromote, carried out by the leader (forwarded
    /// there from a follower); the member list after the change.
    pub async fn change_members(
        &self,
        change: MemberChange,
        deadline: Deadline,
    ) -> Result<Vec<crate::pb::etcdserverpb::Member>> {
        let attempt = async {
            loop {
                let answer = match self.raft.current_leader().await {
                    Some(l) if l == self.id => self.lead_change(change.clone()).await,
                    Some(l) => match self
                        .peers
                        .forward_write(l, Command::Membership(change.clone()))
                        .await
                    {
                        Ok(Outcome(Some(answer))) => answer,
                        Ok(Outcome(None)) => Err(unavailable("a change without an answer")),
                        Err(e) => Err(e),
                    },
                    None => Err(unavailable("no leader")),
                };
                match answer {
                    Err(e) if e.kind == ErrorKind::Unavailable => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(e) => return Err(e),
                    Ok(bytes) => {
                        return MemberListResponse::decode(&*bytes)
                            .map(|r| r.members)
                            .map_err(|e| Error::new(ErrorKind::Internal, e.to_string()));
                    }
                }
            }
        };
        tokio::time::timeout_at(deadline, attempt)
            .await
            .map_err(|_| {
                Error::new(
                    ErrorKind::Timeout,
                    "etcdserver: request timed out (no leader took the member change)",
                )
            })?
    }

    /// A membership change on the leader. A member added as a voter joins as a learner
    /// and is promoted in the background: Raft's joint consensus needs the new member's
    /// vote for that, so a cluster of one waits until it runs — as etcd's quorum does.
    async fn lead_change(&self, change: MemberChange) -> Result<Vec<u8>> {
        use openraft::ChangeMembers;
        let membership = self.raft.metrics().borrow().membership_config.clone();
        let membership = membership.membership();
        let is_voter = |id: NodeId| membership.voter_ids().any(|v| v == id);
        let known = |id: NodeId| membership.nodes().any(|(n, _)| *n == id);
        let not_found = || Error::new(ErrorKind::NotFound, "etcdserver: member not found");
        let changed = match change {
            MemberChange::Add { peer_urls, learner } => {
                let Some(first) = peer_urls.first() else {
                    return Err(Error::invalid("a member needs at least one peer URL"));
                };
                if membership.nodes().any(|(_, n)| peer_urls.contains(&n.addr)) {
                    return Err(Error::new(
                        ErrorKind::FailedPrecondition,
                        "etcdserver: Peer URLs already exists",
                    ));
                }
                let id = super::launch::member_id(&peer_urls, &self.token);
                let node = BasicNode {
                    addr: first.clone(),
                };
                self.raft
                    .add_learner(id, node, false)
                    .await
                    .map_err(change_error)?;
                if !learner {
                    let raft = self.raft.clone();
                    tokio::spawn(async move {
                        let change = ChangeMembers::AddVoterIds([id].into());
                        if let Err(e) = raft.change_membership(change, false).await {
                            crate::observe::log(crate::observe::Level::Warn, || {
                                format!(
                                    "member {id:x} stays a learner (etcdctl member promote): {e}"
                                )
                            });
                        }
                    });
                }
                Ok(())
            }
            MemberChange::Remove(id) if !known(id) => Err(not_found()),
            MemberChange::Remove(id) if is_voter(id) && membership.voter_ids().count() == 1 => {
                Err(Error::new(
                    ErrorKind::FailedPrecondition,
                    "etcdserver: re-configuration failed due to not enough started members",
                ))
            }
            MemberChange::Remove(id) => {
                let addr = membership.get_node(&id).map(|n| n.addr.clone());
                let change = if is_voter(id) {
                    ChangeMembers::RemoveVoters([id].into())
                } else {
                    ChangeMembers::RemoveNodes([id].into())
                };
                let done = self
                    .raft
                    .change_membership(change, false)
                    .await
                    .map(drop)
                    .map_err(change_error);
                if done.is_ok() {
                    // Raft stops replicating to it: tell it, so it stops as etcd's does.
                    if id == self.id {
                        self.removed.send_replace(true);
                    } else if let Some(addr) = addr {
                        let peers = self.peers.clone();
                        tokio::spawn(async move { peers.tell_removed(id, &addr).await });
                    }
                }
                done
            }
            MemberChange::Promote(id) if !known(id) => Err(not_found()),
            MemberChange::Promote(id) if is_voter(id) => Err(Error::new(
                ErrorKind::FailedPrecondition,
                "etcdserver: can only promote a learner member",
            )),
            MemberChange::Removed(_) => Ok(()),
            MemberChange::Promote(id) => self
                .raft
                .change_membership(ChangeMembers::AddVoterIds([id].into()), false)
                .await
                .map(drop)
                .map_err(change_error),
        };
        changed?;
        Ok(MemberListResponse {
            header: None,
            members: self.members().await,
        }
        .encode_to_vec())
    }

    /// The members as Raft's latest membership has them.
    async fn members(&self) -> Vec<crate::pb::etcdserverpb::Member> {
        let stored = self.raft.metrics().borrow().membership_config.clone();
        members_of(stored.membership(), &self.sm.state.read().await.mvcc)
    }
}

/// Counts the times this member saw a new leader (etcd's
/// `etcd_server_leader_changes_seen_total`); ends with Raft.
async fn count_leader_changes(
    mut metrics: tokio::sync::watch::Receiver<openraft::RaftMetrics<NodeId, BasicNode>>,
    changes: Arc<std::sync::atomic::AtomicU64>,
) {
    let mut seen = None;
    loop {
        let leader = metrics.borrow_and_update().current_leader;
        if leader.is_some() && leader != seen {
            changes.fetch_add(1, Ordering::Relaxed);
            seen = leader;
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// Publishes member `id`'s name and client URLs through Raft until the cluster has them
/// (etcd's `publish`); stops once they are there or the member stops.
async fn publish(
    sm: StateMachine,
    id: NodeId,
    wanted: super::mvcc::Attributes,
    proposals: mpsc::WeakUnboundedSender<(Command, Waiter)>,
) {
    loop {
        if sm.state.read().await.mvcc.attributes(id) == Some(&wanted) {
            return;
        }
        let Some(proposals) = proposals.upgrade() else {
            return;
        };
        let (answer, answered) = oneshot::channel();
        let cmd = Command::Publish {
            member: id,
            name: wanted.name.clone(),
            client_urls: wanted.client_urls.clone(),
        };
        if proposals.send((cmd, answer)).is_err() {
            return;
        }
        drop(proposals);
        let _ = tokio::time::timeout(PROPOSAL_TIMEOUT, answered).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// etcd's member list: peer URLs from Raft's membership, name and client URLs as each
/// member published them (a member that never ran has none: etcdctl shows it "unstarted").
fn members_of(
    m: &openraft::Membership<NodeId, BasicNode>,
    mvcc: &super::mvcc::Mvcc,
) -> Vec<crate::pb::etcdserverpb::Member> {
    let voters: std::collections::BTreeSet<NodeId> = m.voter_ids().collect();
    m.nodes()
        .map(|(id, node)| {
            let published = mvcc.attributes(*id).cloned().unwrap_or_default();
            crate::pb::etcdserverpb::Member {
                id: *id,
                name: published.name,
                peer_ur_ls: vec![node.addr.clone()],
                client_ur_ls: published.client_urls,
                is_learner: !voters.contains(id),
            }
        })
        .collect()
}

/// A refused membership change: not the leader (any more) is worth a retry.
fn change_error(
    e: openraft::error::RaftError<NodeId, openraft::error::ClientWriteError<NodeId, BasicNode>>,
) -> Error {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => unavailable("not the leader"),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => Error::new(
            ErrorKind::FailedPrecondition,
            format!("etcdserver: re-configuration failed: {e}"),
        ),
        e => unavailable(format!("etcdserver: {e}")),
    }
}

/// etcd's text for a member the cluster removed.
pub const REMOVED: &str = "etcdserver: the member has been permanently removed from the cluster";

/// etcd's default space quota (`DefaultQuotaBytes`).
pub const DEFAULT_QUOTA_BYTES: u64 = 2 << 30;
/// What a lease costs against the quota (etcd's `leaseOverhead`).
const LEASE_COST: u64 = 64;

/// What a put adds to the store, as `Mvcc` counts it.
fn put_cost(req: &PutRequest) -> u64 {
    req.key.len() as u64 + req.value.len() as u64 + 64
}

/// What a transaction's puts add (the larger branch counts, as etcd's `costTxn`).
fn txn_cost(ops: &[RequestOp]) -> u64 {
    ops.iter()
        .map(|op| match &op.request {
            Some(Request::RequestPut(p)) => put_cost(p),
            Some(Request::RequestTxn(t)) => txn_cost(&t.success).max(txn_cost(&t.failure)),
            _ => 0,
        })
        .sum()
}

/// How long a proposal may wait for a leader before its waiters are told so.
const PROPOSAL_TIMEOUT: Duration = Duration::from_secs(7);
/// Commands packed into one entry at most.
const MAX_BATCH: usize = 512;
/// One batch in flight: the next one gathers everything that queued meanwhile. Measured
/// (scripts/bench-node.sh, 2 cores): 1 in flight gave 16.6k puts/s at 16 callers, 2 gave
/// 12.4k, 4 gave 8.8k — more batches in flight split the same writes over more syncs.
const BATCHES_IN_FLIGHT: usize = 1;

/// A batch's answers go out this many at a time, the runtime let run between chunks. On
/// `etcdc-node`'s current-thread runtime every woken answer runs before the connection task
/// writes them, so a chunk leaves in one `writev`; chunks let the first callers of a large
/// batch have their answers (and send their next request) while the rest are encoded.
/// Measured (paired A/B, 2 cores): all of a batch at once had 17 % fewer puts/s at 256
/// callers than the multi-thread runtime's one write per answer; chunks of 16 matched it
/// with 15-25 % less CPU per put, and at 16 callers gave 17 % more puts/s, 22 % less CPU.
const ANSWER_CHUNK: usize = 16;

type Waiter = oneshot::Sender<Result<Vec<u8>>>;

/// Proposes `cmd` here, or on the leader, until it is applied or the proposal times out.
async fn submit(raft: &Raft, peers: &dyn Peers, me: NodeId, cmd: Command) -> Result<Vec<u8>> {
    let attempt = async {
        loop {
            let outcome = match raft.client_write(cmd.clone()).await {
                Ok(resp) => resp.data,
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                    match f.leader_id.filter(|l| *l != me) {
                        Some(leader) => match peers.forward_write(leader, cmd.clone()).await {
                            Ok(o) => o,
                            Err(e) if e.kind == ErrorKind::Unavailable => {
                                tokio::time::sleep(Duration::from_millis(20)).await;
                                continue;
                            }
                            Err(e) => return Err(e),
                        },
                        None => {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            continue;
                        }
                    }
                }
                Err(e) => return Err(unavailable(format!("etcdserver: {e}"))),
            };
            return match outcome.0 {
                Some(r) => r,
                None => Err(Error::new(ErrorKind::Internal, "a write without an answer")),
            };
        }
    };
    tokio::time::timeout(PROPOSAL_TIMEOUT, attempt)
        .await
        .unwrap_or_else(|_| {
            Err(Error::new(
                ErrorKind::Unavailable,
                "etcdserver: request timed out (no leader to commit it)",
            ))
        })
}

/// Packs the writes that queue up while earlier ones are in flight into one entry, so
/// concurrent writers share an append and a sync instead of paying one each.
async fn batch_proposals(
    raft: Raft,
    peers: Arc<dyn Peers>,
    me: NodeId,
    mut queue: mpsc::UnboundedReceiver<(Command, Waiter)>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(BATCHES_IN_FLIGHT));
    while let Some(first) = queue.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let (raft, peers) = (raft.clone(), peers.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let (cmds, waiters): (Vec<Command>, Vec<Waiter>) = batch.into_iter().unzip();
            let n = cmds.len();
            let answers: Vec<Result<Vec<u8>>> = if n == 1 {
                let cmd = cmds.into_iter().next().expect("one command");
                vec![submit(&raft, &*peers, me, cmd).await]
            } else {
                match submit(&raft, &*peers, me, Command::Batch(cmds)).await {
                    Ok(bytes) => super::raft::decode::<Vec<Result<Vec<u8>>>>(&bytes)
                        .unwrap_or_else(|e| vec![Err(e); n]),
                    Err(e) => vec![Err(e); n],
                }
            };
            for (i, (w, a)) in waiters.into_iter().zip(answers).enumerate() {
                let _ = w.send(a);
                if (i + 1) % ANSWER_CHUNK == 0 {
                    tokio::task::yield_now().await;
                }
            }
        });
    }
}

fn decode<T: Message + Default>(bytes: &[u8]) -> Result<T> {
    T::decode(bytes)
        .map_err(|e| Error::new(ErrorKind::Internal, format!("undecodable answer: {e}")))
}

fn is_read_only(ops: &[RequestOp]) -> bool {
    ops.iter().all(|op| match &op.request {
        Some(Request::RequestRange(_)) | None => true,
        Some(Request::RequestTxn(t)) => is_read_only(&t.success) && is_read_only(&t.failure),
        _ => false,
    })
}

#[async_trait::async_trait]
impl Etcd for Member {
    async fn range(&self, req: RangeRequest, deadline: Deadline) -> Result<RangeResponse> {
        check_request_size(&req)?;
        super::mvcc::check_range(&req)?;
        if !req.serializable {
            self.read_barrier(deadline).await?;
        }
        let state = self.sm.state.read().await;
        let mut resp = state.mvcc.range(&req)?;
        resp.header = self.header(state.mvcc.revision());
        Ok(resp)
    }

    async fn put(&self, req: PutRequest, deadline: Deadline) -> Result<PutResponse> {
        check_request_size(&req)?;
        super::mvcc::check_put(&req)?;
        self.check_quota(put_cost(&req), deadline).await?;
        let mut resp: PutResponse = decode(
            &self
                .propose(Command::Put(req.encode_to_vec()), deadline)
                .await?,
        )?;
        resp.header = self.header(resp.header.map_or(0, |h| h.revision));
        Ok(resp)
    }

    async fn delete_range(
        &self,
        req: DeleteRangeRequest,
        deadline: Deadline,
    ) -> Result<DeleteRangeResponse> {
        check_request_size(&req)?;
        super::mvcc::check_delete(&req)?;
        let mut resp: DeleteRangeResponse = decode(
            &self
                .propose(Command::DeleteRange(req.encode_to_vec()), deadline)
                .await?,
        )?;
        resp.header = self.header(resp.header.map_or(0, |h| h.revision));
        Ok(resp)
    }

    async fn txn(&self, req: TxnRequest, deadline: Deadline) -> Result<TxnResponse> {
        check_request_size(&req)?;
        super::mvcc::check_txn(&req)?;
        let mut resp: TxnResponse = if is_read_only(&req.success) && is_read_only(&req.failure) {
            // As etcd: a read-only transaction is a read, not a proposal.
            self.read_barrier(deadline).await?;
            let mut state = self.sm.state.write().await;
            state.mvcc.txn(req)?.0
        } else {
            self.check_quota(txn_cost(&req.success) + txn_cost(&req.failure), deadline)
                .await?;
            decode(
                &self
                    .propose(Command::Txn(req.encode_to_vec()), deadline)
                    .await?,
            )?
        };
        resp.header = self.header(resp.header.map_or(0, |h| h.revision));
        Ok(resp)
    }

    async fn compact(
        &self,
        req: CompactionRequest,
        deadline: Deadline,
    ) -> Result<CompactionResponse> {
        let mut resp: CompactionResponse = decode(
            &self
                .propose(Command::Compact(req.revision), deadline)
                .await?,
        )?;
        resp.header = self.header(resp.header.map_or(0, |h| h.revision));
        Ok(resp)
    }

    async fn lease_grant(
        &self,
        req: LeaseGrantRequest,
        deadline: Deadline,
    ) -> Result<LeaseGrantResponse> {
        if req.id < 0 {
            return Err(Error::invalid("lease id must not be negative"));
        }
        let id = if req.id != 0 {
            req.id
        } else {
            // Unique per member: the member id in the high bits, a counter below.
            ((self.id << 40) as i64 ^ self.lease_seq.fetch_add(1, Ordering::Relaxed)) & i64::MAX
        };
        let ttl = req.ttl.max(self.min_lease_ttl);
        self.check_quota(LEASE_COST, deadline).await?;
        let mut resp: LeaseGrantResponse = decode(
            &self
                .propose(Command::LeaseGrant { id, ttl }, deadline)
                .await?,
        )?;
        resp.header = self.header(resp.header.map_or(0, |h| h.revision));
        Ok(resp)
    }

    async fn lease_revoke(
        &self,
        req: LeaseRevokeRequest,
        deadline: Deadline,
    ) -> Result<LeaseRevokeResponse> {
        let mut resp: LeaseRevokeResponse =
            decode(&self.propose(Command::LeaseRevoke(req.id), deadline).await?)?;
        resp.header = self.header(resp.header.map_or(0, |h| h.revision));
        Ok(resp)
    }

    async fn lease_time_to_live(
        &self,
        req: LeaseTimeToLiveRequest,
        deadline: Deadline,
    ) -> Result<LeaseTimeToLiveResponse> {
        self.read_barrier(deadline).await?;
        let remaining = self.lessor.ttl(req.id, false).await?;
        let state = self.sm.state.read().await;
        let Some((granted, keys)) = state.mvcc.lease(req.id) else {
            return Ok(LeaseTimeToLiveResponse {
                header: self.header(state.mvcc.revision()),
                id: req.id,
                ttl: -1,
                granted_ttl: 0,
                keys: Vec::new(),
            });
        };
        Ok(LeaseTimeToLiveResponse {
            header: self.header(state.mvcc.revision()),
            id: req.id,
            ttl: remaining,
            granted_ttl: granted,
            keys: if req.keys { keys } else { Vec::new() },
        })
    }

    async fn lease_leases(&self, deadline: Deadline) -> Result<LeaseLeasesResponse> {
        self.read_barrier(deadline).await?;
        let state = self.sm.state.read().await;
        Ok(LeaseLeasesResponse {
            header: self.header(state.mvcc.revision()),
            leases: state
                .mvcc
                .lease_ids()
                .into_iter()
                .map(|id| LeaseStatus { id })
                .collect(),
        })
    }

    async fn member_list(&self, _deadline: Deadline) -> Result<MemberListResponse> {
        let state = self.sm.state.read().await;
        let members = members_of(state.membership.membership(), &state.mvcc);
        Ok(MemberListResponse {
            header: self.header(state.mvcc.revision()),
            members,
        })
    }

    async fn status(&self, _endpoint: Option<&str>, _deadline: Deadline) -> Result<StatusResponse> {
        let metrics = self.raft.metrics().borrow().clone();
        let state = self.sm.state.read().await;
        let size = state.mvcc.size() as i64;
        // etcd's texts, which `etcdctl endpoint status` shows under ERRORS.
        let errors = state
            .mvcc
            .alarms()
            .iter()
            .map(|&(member, alarm)| {
                let kind = if alarm == super::mvcc::ALARM_NOSPACE {
                    "NOSPACE"
                } else {
                    "CORRUPT"
                };
                format!("memberID:{member} alarm:{kind} ")
            })
            .collect();
        let voter = metrics
            .membership_config
            .membership()
            .voter_ids()
            .any(|v| v == self.id);
        Ok(StatusResponse {
            header: self.header(state.mvcc.revision()),
            version: super::ETCD_VERSION.into(),
            db_size: size,
            leader: metrics.current_leader.unwrap_or(0),
            raft_index: metrics.last_log_index.unwrap_or(0),
            raft_term: metrics.current_term,
            raft_applied_index: metrics.last_applied.map_or(0, |l| l.index),
            errors,
            db_size_in_use: size,
            is_learner: !voter,
            ..Default::default()
        })
    }

    async fn watch(
        &self,
        req: WatchCreateRequest,
        updates: Feed<WatchUpdate>,
        _deadline: Deadline,
    ) -> Result<Box<dyn WatchControl>> {
        Ok(self.watch_at(&req, updates).await?.0)
    }

    fn keep_alive(&self, id: i64, updates: Feed<LeaseUpdate>) -> Result<Box<dyn KeepAliveGuard>> {
        if id <= 0 {
            return Err(Error::invalid(format!(
                "lease id {id} is not a valid lease"
            )));
        }
        let lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let task = self
            .rt
            .spawn(keep_lease(self.lessor.clone(), id, updates, lost.clone()));
        Ok(Box::new(LeaseGuard { task, lost }))
    }
}

/// Keeps one lease of an in-process client alive: refreshed on the leader at a third of its
/// TTL; LOST when the leader says it is gone, or when no leader confirmed it for a TTL.
async fn keep_lease(
    lessor: Lessor,
    id: i64,
    updates: Feed<LeaseUpdate>,
    lost: Arc<std::sync::atomic::AtomicBool>,
) {
    use crate::api::LeaseState;
    let mut state: Option<LeaseState> = None;
    let mut ttl = 0i64;
    let mut confirmed = Instant::now();
    let report = |state: &mut Option<LeaseState>, new: LeaseState, ttl: i64, reason: &str| {
        if *state != Some(new) {
            *state = Some(new);
            let update = LeaseUpdate {
                id,
                state: new,
                ttl,
                reason: reason.to_string(),
            };
            if new == LeaseState::Lost {
                updates.send_anyway(update);
            } else {
                let _ = updates.try_send(update);
            }
        }
    };
    loop {
        match lessor.ttl(id, true).await {
            Ok(t) if t > 0 => {
                ttl = t;
                confirmed = Instant::now();
                report(&mut state, LeaseState::Alive, ttl, "");
                tokio::time::sleep(Duration::from_millis((t as u64 * 1000 / 3).max(100))).await;
            }
            Ok(_) => {
                lost.store(true, std::sync::atomic::Ordering::Release);
                report(
                    &mut state,
                    LeaseState::Lost,
                    -1,
                    "etcdserver: requested lease not found",
                );
                return;
            }
            Err(e) => {
                if state.is_some() && confirmed.elapsed() > Duration::from_secs(ttl.max(1) as u64) {
                    lost.store(true, std::sync::atomic::Ordering::Release);
                    let reason = format!(
                        "assumed lost: no leader confirmed the lease for its TTL ({})",
                        e.message
                    );
                    report(&mut state, LeaseState::Lost, -1, &reason);
                    return;
                }
                // A refresh overdue (not a passing election) is a lost connection to the
                // leader, as a broken keep-alive stream is to the remote client.
                let overdue = Duration::from_millis(ttl.max(1) as u64 * 1000 / 3 + 500);
                if state.is_some() && confirmed.elapsed() > overdue {
                    report(&mut state, LeaseState::Reconnecting, ttl, &e.message);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

struct LeaseGuard {
    task: tokio::task::JoinHandle<()>,
    lost: Arc<std::sync::atomic::AtomicBool>,
}

impl KeepAliveGuard for LeaseGuard {
    fn is_lost(&self) -> bool {
        self.lost.load(std::sync::atomic::Ordering::Acquire)
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---- several members in one process ----

/// Members of one process reaching each other directly: Raft's messages and forwarded
/// client calls are function calls. A member that is not registered (stopped) is
/// unreachable, as over a network.
#[derive(Clone, Default)]
pub struct Router {
    members: Arc<Mutex<HashMap<NodeId, Arc<Member>>>>,
}

impl Router {
    pub fn add(&self, member: Arc<Member>) {
        self.lock().insert(member.id, member);
    }

    pub fn remove(&self, id: NodeId) -> Option<Arc<Member>> {
        self.lock().remove(&id)
    }

    fn leader(&self, id: NodeId) -> Result<Arc<Member>> {
        self.get(id)
            .ok_or_else(|| unavailable(format!("leader {id:x} is down")))
    }

    pub fn get(&self, id: NodeId) -> Option<Arc<Member>> {
        self.lock().get(&id).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, Arc<Member>>> {
        self.members.lock().unwrap_or_else(|p| p.into_inner())
    }

    // The error type is openraft's, as the network trait returns it.
    #[allow(clippy::result_large_err)]
    fn target<E: std::error::Error>(
        &self,
        id: NodeId,
    ) -> std::result::Result<Arc<Member>, RPCError<NodeId, BasicNode, E>> {
        self.get(id).ok_or_else(|| {
            RPCError::Unreachable(Unreachable::new(&unavailable(format!(
                "member {id:x} is down"
            ))))
        })
    }
}

#[async_trait::async_trait]
impl Peers for Router {
    async fn forward_write(&self, leader: NodeId, cmd: Command) -> Result<Outcome> {
        self.leader(leader)?.local_write(cmd).await
    }

    async fn read_index(&self, leader: NodeId) -> Result<u64> {
        self.leader(leader)?.local_read_index().await
    }

    async fn lease_ttl(&self, leader: NodeId, id: i64, refresh: bool) -> Result<i64> {
        self.leader(leader)?.local_lease_ttl(id, refresh).await
    }

    async fn tell_removed(&self, id: NodeId, _addr: &str) {
        if let Some(m) = self.get(id) {
            let _ = m
                .local_write(Command::Membership(MemberChange::Removed(id)))
                .await;
        }
    }
}

/// One member's connection to another through the router.
pub struct RouterLink {
    router: Router,
    target: NodeId,
}

impl RaftNetworkFactory<TypeConfig> for Router {
    type Network = RouterLink;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> RouterLink {
        RouterLink {
            router: self.clone(),
            target,
        }
    }
}

impl RaftNetwork<TypeConfig> for RouterLink {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> std::result::Result<
        AppendEntriesResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId>>,
    > {
        let m = self.router.target(self.target)?;
        m.raft
            .append_entries(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> std::result::Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        let m = self.router.target(self.target)?;
        m.raft
            .install_snapshot(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> std::result::Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>>
    {
        let m = self.router.target(self.target)?;
        m.raft
            .vote(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

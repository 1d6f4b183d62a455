//! A running member: openraft over the node's storage, serving `trait Etcd` in process.
//! Writes are proposed through Raft (on a follower, forwarded to the leader); linearizable
//! reads wait for a read index confirmed by the leader, serializable reads are local.
//!
//! Members reach each other through `Peers` — Raft's messages and forwarded client calls:
//! `Router` (router.rs) between members in one process, as the tests run them, and
//! `peer.rs` over gRPC between processes.
//!
//! Here: the member's configuration, start and stop. Beside it: `proposal` (batching,
//! forwarding, a write applied at most once), `read` (the read gate), `lessor` (lease
//! clocks on the leader), `membership` (add / remove / promote), `etcd` (`trait Etcd`).
//! Watches are served by the member's own hub (`watch.rs`), from its applied state.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use openraft::network::RaftNetworkFactory;
use openraft::{BasicNode, Config, SnapshotPolicy};
use tokio::sync::{mpsc, oneshot};

use super::raft::{
    Command, LeaderAppend, LogStore, MemberChange, NodeId, Outcome, Raft, StateMachine, TypeConfig,
    ENTRY_VERSION,
};
use crate::api::{Deadline, WatchControl, WatchUpdate};
use crate::error::{Error, ErrorKind, Result};
use crate::pb::etcdserverpb::*;
use crate::stream::Feed;

mod etcd;
mod lessor;
mod membership;
mod peers;
mod proposal;
mod read;
mod router;
mod transfer;

pub(crate) use etcd::txn_is_read_only;
pub use etcd::DEFAULT_QUOTA_BYTES;
use lessor::Lessor;
use membership::{count_leader_changes, publish};
pub use membership::{member_id, REMOVED};
use peers::unavailable;
pub use peers::Peers;
pub(crate) use proposal::not_proposed;
use proposal::{batch_proposals, Waiter};
use read::ReadGate;
pub use router::{Router, RouterLink};

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
    /// The write-ahead log is not synced (etcd's `--unsafe-no-fsync`): acknowledged writes
    /// are lost if the machine loses power. For tests.
    pub unsafe_no_fsync: bool,
    /// The member's name and the client URLs it advertises, published to the cluster.
    pub name: String,
    pub client_urls: Vec<String>,
    /// How users authenticate: token TTL, bcrypt cost.
    pub auth: crate::node::auth::AuthSettings,
    /// `--max-request-bytes`, `--max-txn-ops`.
    pub limits: crate::node::Limits,
    /// etcd's `--strict-reconfig-check` (on by default, as etcd): a member change that
    /// would leave fewer started or reachable voters than a quorum is refused.
    pub strict_reconfig: bool,
    /// How the mirror reaches its source (`node::mirror`), when this store mirrors one.
    pub mirror_access: crate::node::mirror::SourceAccess,
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
            unsafe_no_fsync: false,
            name: format!("{id:x}"),
            client_urls: Vec::new(),
            auth: Default::default(),
            limits: Default::default(),
            strict_reconfig: true,
            mirror_access: Default::default(),
        }
    }
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
    /// The log, for `on_leader_append`.
    log: LogStore,
    /// Set once the cluster's leader said it removed this member (`member remove`).
    removed: tokio::sync::watch::Sender<bool>,
    /// For `/metrics`: the log's sync latencies, and the leader changes this member saw.
    sync_latency: Arc<super::metrics::Histogram>,
    leader_changes: Arc<std::sync::atomic::AtomicU64>,
    /// For `/metrics`: the calls on the gRPC API (counted by the client servers).
    pub grpc_counters: Arc<super::metrics::GrpcCounters>,
    pub auth_settings: crate::node::auth::AuthSettings,
    pub limits: crate::node::Limits,
    strict_reconfig: bool,
    mirror_access: crate::node::mirror::SourceAccess,
    /// Held shared while a batch or a forwarded write is proposed; a leader transfer holds
    /// it alone, so writes wait (and are not refused) while leadership moves.
    proposing: Arc<tokio::sync::RwLock<()>>,
    election_ms: u64,
    /// What the members' builds read (`Command::Forwarded`'s entries or not).
    readers: Arc<proposal::Readers>,
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
        if config.unsafe_no_fsync {
            log.unsafe_no_fsync().await;
        }
        let stall = log.stall.clone();
        let log_handle = log.clone();
        let sync_latency = log.sync_latency.clone();
        let sm = StateMachine::open(&config.dir.join("snap"))?;
        let raft_config = Config {
            cluster_name: "etcdc".into(),
            heartbeat_interval: config.heartbeat_ms,
            // etcd's follower campaigns after [E, 2E) without a leader. openraft's waits
            // its leader lease (the maximum) plus a draw from [min, max); one that voted for
            // a candidate not yet leading waits the draw alone. [E/2, E): a campaign after
            // [1.5E, 2E), votes refused for E after the leader's last word (etcd's
            // CheckQuorum), a voter patient for [E/2, E). Why not shorter or longer:
            // DESIGN.md, "Election timing".
            election_timeout_min: config.election_ms / 2,
            election_timeout_max: config.election_ms,
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
        // etcd's cluster id from the founding members (a member that joined later leaves
        // itself out): the first 8 bytes of SHA-1 over their sorted ids, big-endian.
        let cluster_id = {
            use sha1::{Digest, Sha1};
            let mut h = Sha1::new();
            for id in config.initial.keys() {
                if !config.join || *id != config.id {
                    h.update(id.to_be_bytes());
                }
            }
            let digest = h.finalize();
            u64::from_be_bytes(digest[..8].try_into().unwrap_or_default())
        };
        let metrics = raft.metrics();
        sm.hub
            .set_identity(cluster_id, config.id, move || metrics.borrow().current_term);
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
        let proposing = Arc::new(tokio::sync::RwLock::new(()));
        let proposer = proposal::Proposer {
            raft: raft.clone(),
            peers: peers.clone(),
            me: config.id,
            awaited: sm.awaited.clone(),
            untagged: Arc::default(),
        };
        tokio::spawn(batch_proposals(proposer, queue, proposing.clone()));
        let readers = Arc::new(proposal::Readers::new(
            raft.clone(),
            peers.clone(),
            config.id,
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
            log: log_handle,
            removed,
            sync_latency,
            leader_changes,
            grpc_counters: Arc::default(),
            auth_settings: config.auth,
            limits: config.limits,
            strict_reconfig: config.strict_reconfig,
            mirror_access: config.mirror_access,
            proposing,
            election_ms: config.election_ms,
            readers,
        })
    }

    /// Has `f` told of the entries this member appends as the leader, before they are
    /// synced (`PeerNetwork::send_early`); `f` says whether the leader has followers.
    pub fn on_leader_append(&self, f: impl Fn(LeaderAppend<'_>) -> bool + Send + Sync + 'static) {
        self.log.on_append(self.id, Box::new(f));
    }

    /// Proposes a change to the auth store; answers once this member applied it.
    pub async fn auth_change(
        &self,
        change: crate::node::auth::AuthCommand,
        deadline: Deadline,
    ) -> Result<ResponseHeader> {
        self.propose(Command::Auth(change), deadline).await?;
        Ok(self.header_now().await)
    }

    /// Whether authentication is on, as this member last applied it (no lock).
    pub fn auth_enabled(&self) -> bool {
        self.sm
            .auth_enabled
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Reads the auth store as this member applied it (`linearizable`: after a read barrier,
    /// so it has applied every change acknowledged before).
    pub async fn auth_read<R>(
        &self,
        linearizable: Option<Deadline>,
        f: impl FnOnce(&crate::node::auth::AuthStore) -> R,
    ) -> Result<R> {
        if let Some(deadline) = linearizable {
            self.read_barrier(deadline).await?;
        }
        Ok(f(&self.sm.state.read().await.mvcc.auth))
    }

    /// `/metrics`: this member's state under etcd's metric names.
    pub async fn metrics_text(&self) -> String {
        let m = self.raft.metrics().borrow().clone();
        let db_size = self.sm.size.load(Ordering::Relaxed);
        let (ops, live_keys) = {
            let state = self.sm.state.read().await;
            (state.mvcc.counters.clone(), state.mvcc.live_keys())
        };
        super::metrics::render(&super::metrics::Reading {
            id: self.id,
            has_leader: m.current_leader.is_some(),
            is_leader: m.current_leader == Some(self.id),
            leader_changes: self.leader_changes.load(Ordering::Relaxed),
            applied_index: m.last_applied.map_or(0, |l| l.index),
            db_size,
            quota: self.quota_bytes,
            wal_fsync: &self.sync_latency,
            ops: &ops,
            live_keys,
            grpc: &self.grpc_counters,
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

    /// The client URLs every other member published, by member.
    pub async fn peer_client_urls(&self) -> Vec<(NodeId, Vec<String>)> {
        let config = self.raft.metrics().borrow().membership_config.clone();
        let members: Vec<NodeId> = config.membership().nodes().map(|(id, _)| *id).collect();
        let state = self.sm.state.read().await;
        members
            .into_iter()
            .filter(|&id| id != self.id)
            .filter_map(|id| Some((id, state.mvcc.attributes(id)?.client_urls.clone())))
            .collect()
    }

    /// Whether this member's name and client URLs went through Raft (etcd's `publish`).
    pub async fn published(&self) -> bool {
        self.sm
            .state
            .read()
            .await
            .mvcc
            .attributes(self.id)
            .is_some()
    }

    /// The client URLs of the etcd cluster this member's store mirrors, while it does.
    pub async fn mirror_source(&self) -> Option<String> {
        self.sm.state.read().await.mvcc.mirror.clone()
    }

    /// How this member reaches the cluster its store mirrors.
    pub fn mirror_access(&self) -> &crate::node::mirror::SourceAccess {
        &self.mirror_access
    }

    /// Of `ids`, the leases this member's store does not have.
    pub async fn unknown_leases(&self, ids: &[i64]) -> Vec<i64> {
        let state = self.sm.state.read().await;
        ids.iter()
            .copied()
            .filter(|&id| state.mvcc.lease(id).is_none())
            .collect()
    }

    /// Applies one revision of the mirrored cluster (on the leader, by `node::mirror`).
    pub async fn mirror_revision(
        &self,
        revision: i64,
        events: &[crate::pb::mvccpb::Event],
        leases: Vec<(i64, i64)>,
        deadline: Deadline,
    ) -> Result<()> {
        use prost::Message;
        let events = events.iter().map(|e| e.encode_to_vec()).collect();
        let cmd = Command::Mirror {
            revision,
            events,
            leases,
        };
        self.propose(cmd, deadline).await.map(drop)
    }

    /// Ends the mirror (`node::mirror::promote` checks there is one): the store takes
    /// client writes from the next revision on.
    pub async fn promote(&self, deadline: Deadline) -> Result<i64> {
        self.propose(Command::Promote, deadline).await?;
        Ok(self.header_now().await.revision)
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

    /// The types of the alarms raised in the cluster, as this member has applied them.
    pub async fn raised_alarms(&self) -> Vec<i32> {
        let state = self.sm.state.read().await;
        state.mvcc.alarms().iter().map(|&(_, a)| a).collect()
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
    pub(crate) async fn read_barrier(&self, deadline: Deadline) -> Result<()> {
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
        let cmd = match cmd {
            Command::Forwarded { cmd, .. } if !self.readers.all_read(ENTRY_VERSION) => *cmd,
            cmd => cmd,
        };
        let _open = self.proposing.read().await;
        match proposal::propose_here(&self.raft, self.id, cmd).await {
            proposal::Proposed::Done(outcome) => outcome,
            proposal::Proposed::NotLeader(..) => {
                Err(proposal::not_proposed("the member is not the leader"))
            }
        }
    }
}

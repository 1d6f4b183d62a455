//! Writes on their way into the log: batched into one entry, proposed here or forwarded
//! to the leader.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::peers::Peers;
use crate::error::{Error, ErrorKind, Result};
use crate::node::raft::{Awaited, Command, NodeId, Outcome, Raft, ENTRY_VERSION};
use crate::observe::{log, Level};

/// How long a proposal may wait for a leader before its waiters are told so.
pub(super) const PROPOSAL_TIMEOUT: Duration = Duration::from_secs(7);
/// Commands packed into one entry at most.
const MAX_BATCH: usize = 512;
/// One batch in flight: the next one gathers everything that queued meanwhile. Measured
/// (scripts/bench-node.sh, 2 cores): 1 in flight gave 16.6k puts/s at 16 callers, 2 gave
/// 12.4k, 4 gave 8.8k — more batches in flight split the same writes over more syncs.
/// A batch forwarded to a leader that then changed gives up its slot (`batch_proposals`).
const BATCHES_IN_FLIGHT: usize = 1;

/// A batch's answers go out this many at a time, the runtime let run between chunks. On
/// `etcdc-node`'s current-thread runtime every woken answer runs before the connection task
/// writes them, so a chunk leaves in one `writev`; chunks let the first callers of a large
/// batch have their answers (and send their next request) while the rest are encoded.
/// Measured (paired A/B, 2 cores): all of a batch at once had 17 % fewer puts/s at 256
/// callers than the multi-thread runtime's one write per answer; chunks of 16 matched it
/// with 15-25 % less CPU per put, and at 16 callers gave 17 % more puts/s, 22 % less CPU.
const ANSWER_CHUNK: usize = 16;

pub(super) type Waiter = oneshot::Sender<Result<Vec<u8>>>;

/// Proposes `cmd` here, or on the leader, until it is applied or the proposal times out.
///
/// A write is proposed again only when it provably never reached a leader's log: no member
/// called Raft with it (each proposes only while it sees itself as the leader, see
/// `propose_here`), or the forward never connected. Any other failure leaves its fate
/// unknown — the leader may have appended it and died, and the next leader commit it — so
/// the caller gets etcd's error for that instead of a second application (etcd never
/// re-proposes).
async fn submit(proposer: &Proposer, mut cmd: Command) -> Result<Vec<u8>> {
    let attempt = async {
        loop {
            let outcome = match propose_here(&proposer.raft, proposer.me, cmd).await {
                Proposed::Done(o) => o?,
                Proposed::NotLeader(leader, back) => {
                    cmd = back;
                    let Some(leader) = leader else {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    };
                    match proposer.forward(leader, &cmd).await {
                        Ok(o) => o,
                        Err(e) if e.kind == ErrorKind::NoLeader => {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            continue;
                        }
                        Err(e) if e.kind == ErrorKind::Unavailable => {
                            return Err(unknown_outcome());
                        }
                        Err(e) => return Err(e),
                    }
                }
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
                "etcdserver: request timed out",
            ))
        })
}

/// What a member needs to propose its writes.
#[derive(Clone)]
pub(super) struct Proposer {
    pub raft: Raft,
    pub peers: Arc<dyn Peers>,
    pub me: NodeId,
    pub awaited: Arc<Awaited>,
    /// Leaders that could not read a tagged write (a build before `Command::Forwarded`):
    /// they are sent the write untagged, and answer it themselves.
    pub untagged: Arc<Mutex<HashSet<NodeId>>>,
}

impl Proposer {
    /// `cmd` forwarded to `leader`, tagged: answered by this member's own apply of it, or by
    /// the leader's answer (or error) when that comes first — when this member got the
    /// entry in a snapshot instead, or is behind. The forward runs on to its end either way:
    /// dropped half-way, its stream to the leader would be closed, not reused.
    async fn forward(&self, leader: NodeId, cmd: &Command) -> Result<Outcome> {
        let untagged = || self.untagged.lock().unwrap_or_else(|p| p.into_inner());
        if untagged().contains(&leader) {
            return self.peers.forward_write(leader, cmd.clone()).await;
        }
        let (tagged, _tag, mut heard) = self.awaited.tag(self.me, cmd.clone());
        let (answered, answer) = oneshot::channel();
        let peers = self.peers.clone();
        tokio::spawn(async move {
            let _ = answered.send(peers.forward_write(leader, tagged).await);
        });
        let outcome = tokio::select! {
            Ok(heard) = &mut heard => Ok(Outcome(Some(heard))),
            answer = answer => answer.unwrap_or_else(|_| Err(unknown_outcome())),
        };
        match outcome {
            // Not read, so not proposed: the same write, as that build knows it.
            Err(e) if e.kind == ErrorKind::InvalidArgument => {
                untagged().insert(leader);
                self.peers.forward_write(leader, cmd.clone()).await
            }
            outcome => outcome,
        }
    }
}

/// What the members' builds read, as this member last asked them (`Peers::reads`). While
/// it leads, a follower's tagged write goes into the log tagged only once every member reads
/// tagged entries; until then it goes in untagged and the leader's answer is the follower's.
pub(super) struct Readers {
    raft: Raft,
    peers: Arc<dyn Peers>,
    me: NodeId,
    /// What each member answered when last asked.
    known: Mutex<HashMap<NodeId, Asked>>,
    /// Members are being asked.
    asking: AtomicBool,
}

/// A member's answer to what it reads.
pub(super) struct Asked {
    /// The address it was asked at (a member with another address is asked again).
    addr: String,
    /// None: it was not reached.
    reads: Option<u32>,
    at: Instant,
}

/// How long an answer that a member does not read an entry kind (or no answer) stands
/// before the member is asked again: it may have been upgraded, or come back, meanwhile.
const ASK_AGAIN: Duration = Duration::from_secs(2);

impl Readers {
    /// `me`'s view of what its cluster's members read; nobody asked yet.
    pub fn new(raft: Raft, peers: Arc<dyn Peers>, me: NodeId) -> Self {
        Readers {
            raft,
            peers,
            me,
            known: Mutex::default(),
            asking: AtomicBool::default(),
        }
    }

    /// Whether every member reads entries of kind `version`; false while some are being
    /// asked (in the background: a write does not wait for the answers).
    pub fn all_read(self: &Arc<Self>, version: u32) -> bool {
        let membership = self.raft.metrics().borrow().membership_config.clone();
        let mut all = true;
        let mut ask = Vec::new();
        {
            let known = self.known.lock().unwrap_or_else(|p| p.into_inner());
            for (&id, node) in membership.membership().nodes() {
                match known.get(&id) {
                    _ if id == self.me => continue,
                    Some(a) if a.addr == node.addr && a.reads >= Some(version) => continue,
                    Some(a) if a.addr == node.addr && a.at.elapsed() < ASK_AGAIN => {}
                    _ => ask.push((id, node.addr.clone())),
                }
                all = false;
            }
        }
        if !ask.is_empty() && !self.asking.swap(true, Ordering::AcqRel) {
            let this = self.clone();
            tokio::spawn(async move {
                for (id, addr) in ask {
                    let reads = this.peers.reads(id).await.ok();
                    let before = {
                        let mut known = this.known.lock().unwrap_or_else(|p| p.into_inner());
                        let at = Instant::now();
                        known.insert(id, Asked { addr, reads, at })
                    };
                    let old = reads.filter(|v| *v < ENTRY_VERSION);
                    if let Some(v) = old.filter(|_| before.map(|b| b.reads) != Some(reads)) {
                        log(Level::Warn, || {
                            format!(
                                "member {id:x} runs an earlier build (it reads log entries \
                                 up to version {v}, this one {ENTRY_VERSION}): followers' \
                                 writes go into the log untagged until it is upgraded"
                            )
                        });
                    }
                }
                this.asking.store(false, Ordering::Release);
            });
        }
        all
    }
}

/// What `propose_here` did with a write.
pub(super) enum Proposed {
    /// Raft was given the write: its outcome, or an error when that is unknown.
    Done(Result<Outcome>),
    /// Not proposed: this member does not see itself as the leader; the leader it knows of
    /// (never itself), and the write back.
    NotLeader(Option<NodeId>, Command),
}

/// Gives `cmd` to this member's Raft if the member sees itself as the leader, and to no one
/// otherwise. openraft's "forward to the leader" does not tell a write it refused before
/// appending from one it appended and then cut from the log when a newer leader's entries
/// replaced it — and such an entry may still be committed by a later leader that holds it
/// (in clusters of five or more). So once Raft was given the write, every refusal is an
/// unknown outcome, and only a write that Raft was never given may go elsewhere.
pub(super) async fn propose_here(raft: &Raft, me: NodeId, cmd: Command) -> Proposed {
    let leader = raft.metrics().borrow().current_leader;
    if leader != Some(me) {
        return Proposed::NotLeader(leader, cmd);
    }
    Proposed::Done(match raft.client_write(cmd).await {
        Ok(r) => Ok(r.data),
        // Stopped being the leader before the write was committed, or Raft stopped.
        Err(_) => Err(unknown_outcome()),
    })
}

/// Resolves once this member sees a leader other than `from` (or none), or Raft stopped.
async fn leader_changed(raft: &Raft, from: Option<NodeId>) {
    let mut metrics = raft.metrics();
    while metrics.borrow_and_update().current_leader == from {
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// What a member answers for a write it was forwarded but did not put in its log (it is
/// not the leader): the forwarding member may propose it again.
pub(crate) fn not_proposed(why: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::NoLeader,
        format!("etcdserver: not proposed: {why}"),
    )
}

/// A write whose leader went away before it answered: it may or may not be applied, and is
/// not proposed again. etcd's text exactly (`ErrTimeoutDueToLeaderFail`): Go's client turns
/// the text into its typed error, and does not retry it.
fn unknown_outcome() -> Error {
    Error::new(
        ErrorKind::Unavailable,
        "etcdserver: request timed out, possibly due to previous leader failure",
    )
}

/// Packs the writes that queue up while earlier ones are in flight into one entry, so
/// concurrent writers share an append and a sync instead of paying one each.
pub(super) async fn batch_proposals(
    proposer: Proposer,
    mut queue: mpsc::UnboundedReceiver<(Command, Waiter)>,
    gate: Arc<tokio::sync::RwLock<()>>,
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
        let (proposer, gate) = (proposer.clone(), gate.clone());
        tokio::spawn(async move {
            let mut slot = Some(slot);
            let _open = gate.read().await;
            let (raft, me) = (&proposer.raft, proposer.me);
            let leader = raft.metrics().borrow().current_leader;
            let (cmds, waiters): (Vec<Command>, Vec<Waiter>) = batch.into_iter().unzip();
            let n = cmds.len();
            let submitted = async {
                if n == 1 {
                    let cmd = cmds.into_iter().next().expect("one command");
                    vec![submit(&proposer, cmd).await]
                } else {
                    match submit(&proposer, Command::Batch(cmds)).await {
                        Ok(bytes) => crate::node::raft::unpack::<Vec<Result<Vec<u8>>>>(&bytes)
                            .unwrap_or_else(|e| vec![Err(e); n]),
                        Err(e) => vec![Err(e); n],
                    }
                }
            };
            tokio::pin!(submitted);
            // A forwarded batch gives up the slot once the leader changes: one that waits on
            // a leader that stopped answering (paused, cut off) holds back no later write,
            // which goes to the new leader. Its own outcome stays what the old leader makes
            // of it. (While this member leads, there is no other leader to go to.)
            let mut watch = leader != Some(me);
            let answers: Vec<Result<Vec<u8>>> = loop {
                tokio::select! {
                    answers = &mut submitted => break answers,
                    _ = leader_changed(raft, leader), if watch => {
                        slot = None;
                        watch = false;
                    }
                }
            };
            for (i, (w, a)) in waiters.into_iter().zip(answers).enumerate() {
                let _ = w.send(a);
                if (i + 1) % ANSWER_CHUNK == 0 {
                    tokio::task::yield_now().await;
                }
            }
            drop(slot);
        });
    }
}

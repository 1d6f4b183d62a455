//! etcd's MoveLeader (`etcdctl move-leader`): the leader hands leadership to another voting
//! member. openraft 0.9 has no transfer call, so it is done from outside, as etcd's raft does
//! it inside: the target catches up, the leader stops proposing (its own and forwarded
//! writes wait for the new leader, none is refused), and the target is asked to campaign — its log then as long as
//! anyone's and its term the highest, it wins — until the leader sees it lead or the
//! deadline passes.

use std::time::Duration;

use super::Member;
use crate::api::Deadline;
use crate::error::{Error, ErrorKind, Result};
use crate::node::raft::NodeId;

fn not_leader() -> Error {
    Error::new(ErrorKind::FailedPrecondition, "etcdserver: not leader")
}

fn bad_transferee() -> Error {
    Error::new(
        ErrorKind::FailedPrecondition,
        "etcdserver: bad leader transferee",
    )
}

fn too_long() -> Error {
    Error::new(
        ErrorKind::Timeout,
        "etcdserver: request timed out, leader transfer took too long",
    )
}

/// Keeps a member from running for leader until dropped.
struct NoElections<'a>(&'a crate::node::raft::Raft);

impl<'a> NoElections<'a> {
    fn new(raft: &'a crate::node::raft::Raft) -> Self {
        raft.runtime_config().elect(false);
        NoElections(raft)
    }
}

impl Drop for NoElections<'_> {
    fn drop(&mut self) {
        self.0.runtime_config().elect(true);
    }
}

impl Member {
    /// Makes voting member `target` the leader; called on the leader (etcd's "not leader"
    /// elsewhere). A learner or an unknown member is etcd's "bad leader transferee".
    pub async fn move_leader(&self, target: NodeId, deadline: Deadline) -> Result<()> {
        let metrics = self.raft.metrics().borrow().clone();
        if metrics.current_leader != Some(self.id) {
            return Err(not_leader());
        }
        let voter = metrics
            .membership_config
            .membership()
            .voter_ids()
            .any(|v| v == target);
        if !voter {
            return Err(bad_transferee());
        }
        if target == self.id {
            return Ok(());
        }
        // Nothing proposed here until leadership moved: the target's log stays the longest.
        let _paused = tokio::time::timeout_at(deadline, self.proposing.write())
            .await
            .map_err(|_| too_long())?;
        // Nor does this member run for leader meanwhile: having voted for the target, it
        // would campaign against it if the target's first heartbeat came late (etcd's old
        // leader sends `MsgTimeoutNow` and steps down; it does not campaign either).
        let _calm = NoElections::new(&self.raft);
        let mut metrics_rx = self.raft.metrics();
        let mut asked: Option<tokio::time::Instant> = None;
        loop {
            let m = metrics_rx.borrow_and_update().clone();
            if m.current_leader == Some(target) {
                return Ok(());
            }
            let caught_up = m
                .replication
                .as_ref()
                .and_then(|r| r.get(&target).cloned().flatten())
                .map(|log_id| log_id.index)
                >= m.last_log_index;
            // Asked again each election timeout until it leads: a vote it lost (a peer's
            // leader lease not yet run out) is followed by another at a higher term.
            let again =
                asked.is_none_or(|at| at.elapsed() >= Duration::from_millis(self.election_ms));
            let still_leader = m.current_leader == Some(self.id);
            if again && (caught_up || !still_leader) {
                asked = Some(tokio::time::Instant::now());
                // A refusal (the target restarting) is retried like a lost vote.
                let _ = self.peers.campaign(target).await;
            }
            let wake = (asked.unwrap_or_else(tokio::time::Instant::now)
                + Duration::from_millis(self.election_ms))
            .min(deadline);
            tokio::select! {
                changed = metrics_rx.changed() => {
                    if changed.is_err() {
                        return Err(Error::new(ErrorKind::Closed, "the member stopped"));
                    }
                }
                _ = tokio::time::sleep_until(wake) => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(too_long());
            }
        }
    }

    /// Called as a member stops: a leader of several voters hands leadership to the one
    /// with the longest log among those that answered it within an election timeout, so
    /// the others go on at once instead of waiting out an election (etcd's
    /// `TransferLeadership` in `Stop`). With none in touch (the last of a cluster stopping),
    /// nothing is waited for. A transfer takes a round trip or two, unless this member was
    /// elected less than an election timeout ago: then its voters refuse the target until
    /// their leader lease runs out (openraft 0.9 has no raft `MsgTimeoutNow` to waive it),
    /// and waiting for that would only delay the stop — so a quarter of an election
    /// timeout at most; a transfer that fails is logged and the stop goes on.
    pub async fn hand_over(&self) {
        let m = self.raft.metrics().borrow().clone();
        if m.current_leader != Some(self.id) {
            return;
        }
        let election = Duration::from_millis(self.election_ms);
        let in_touch = |v: &NodeId| {
            *v != self.id
                && self
                    .peers
                    .last_contact(*v)
                    .is_some_and(|at| at.elapsed() < election)
        };
        let matched = |v: &NodeId| {
            m.replication
                .as_ref()
                .and_then(|r| r.get(v).cloned().flatten())
                .map(|log_id| log_id.index)
        };
        let longest = m
            .membership_config
            .membership()
            .voter_ids()
            .filter(in_touch)
            .max_by_key(matched);
        let Some(target) = longest else {
            return;
        };
        use crate::observe::{log, Level};
        match self
            .move_leader(target, crate::api::deadline_in(election / 4))
            .await
        {
            Ok(()) => log(Level::Info, || {
                format!("stopping: leadership transferred to {target:x}")
            }),
            Err(e) => log(Level::Warn, || {
                format!("stopping: leadership not transferred to {target:x}: {e}")
            }),
        }
    }

    /// Runs for leader now (a peer's `campaign`).
    pub async fn local_campaign(&self) -> Result<()> {
        self.raft
            .trigger()
            .elect()
            .await
            .map_err(|e| Error::new(ErrorKind::Unavailable, format!("cannot campaign: {e}")))
    }
}

//! etcd's member calls on Raft's membership: add, remove, promote, list, and each
//! member's published name.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::BasicNode;
use prost::Message;
use sha1::{Digest, Sha1};
use tokio::sync::{mpsc, oneshot};

use super::peers::unavailable;
use super::proposal::{Waiter, PROPOSAL_TIMEOUT};
use super::Member;
use crate::api::Deadline;
use crate::error::{Error, ErrorKind, Result};
use crate::node::raft::{Command, MemberChange, NodeId, Outcome, StateMachine};
use crate::pb::etcdserverpb::*;

/// etcd's member id: the first 8 bytes of SHA-1 over the sorted peer URLs and the token.
pub fn member_id(peer_urls: &[String], token: &str) -> NodeId {
    let mut urls = peer_urls.to_vec();
    urls.sort();
    let mut h = Sha1::new();
    h.update(urls.concat().as_bytes());
    h.update(token.as_bytes());
    let digest = h.finalize();
    u64::from_be_bytes(digest[..8].try_into().unwrap_or_default())
}

impl Member {
    /// etcd's MemberAdd / MemberRemove / MemberPromote / MemberUpdate, carried out by the
    /// leader (forwarded
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
                    Err(e) if matches!(e.kind, ErrorKind::Unavailable | ErrorKind::NoLeader) => {
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

    /// etcd's `--strict-reconfig-check` on the leader: adding or promoting a voter needs a
    /// quorum of the new voters started (published; the second member of a cluster of one
    /// excepted); removing one needs a quorum of the rest started, and — unless the member
    /// removed is down already (no answer for `HEALTH_INTERVAL`), which is safe — a quorum
    /// of the rest reachable.
    async fn strict_check(&self, change: &MemberChange, voters: &[NodeId]) -> Result<()> {
        const HEALTH_INTERVAL: Duration = Duration::from_secs(5);
        let not_enough = || {
            Error::new(
                ErrorKind::FailedPrecondition,
                "etcdserver: re-configuration failed due to not enough started members",
            )
        };
        let started: Vec<NodeId> = {
            let state = self.sm.state.read().await;
            voters
                .iter()
                .copied()
                .chain(match change {
                    MemberChange::Promote(id) => Some(*id),
                    _ => None,
                })
                .filter(|&v| state.mvcc.attributes(v).is_some())
                .collect()
        };
        let active = |v: NodeId| {
            v == self.id
                || self
                    .peers
                    .last_contact(v)
                    .is_some_and(|t| t.elapsed() < HEALTH_INTERVAL)
        };
        match change {
            MemberChange::Add { learner: false, .. } | MemberChange::Promote(_) => {
                let (n, s) = (voters.len() + 1, started.len());
                if !(s == 1 && n == 2) && s < n / 2 + 1 {
                    return Err(not_enough());
                }
            }
            MemberChange::Remove(id) if voters.contains(id) => {
                let n = voters.len() - 1;
                if started.iter().filter(|&v| v != id).count() < n / 2 + 1 {
                    return Err(not_enough());
                }
                if *id != self.id && !active(*id) {
                    return Ok(());
                }
                let reachable = voters.iter().filter(|&&v| active(v)).count();
                if reachable.saturating_sub(1) < 1 + (voters.len() - 1) / 2 {
                    return Err(Error::new(
                        ErrorKind::FailedPrecondition,
                        "etcdserver: unhealthy cluster",
                    ));
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// A membership change on the leader. A member added as a voter joins as a learner
    /// and is promoted in the background: Raft's joint consensus needs the new member's
    /// vote for that, so a cluster of one waits until it runs — as etcd's quorum does.
    pub(super) async fn lead_change(&self, change: MemberChange) -> Result<Vec<u8>> {
        use openraft::ChangeMembers;
        let membership = self.raft.metrics().borrow().membership_config.clone();
        let membership = membership.membership();
        if self.strict_reconfig {
            let voters: Vec<NodeId> = membership.voter_ids().collect();
            self.strict_check(&change, &voters).await?;
        }
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
                let id = member_id(&peer_urls, &self.token);
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
            MemberChange::Update { id, .. } if !known(id) => Err(not_found()),
            MemberChange::Update { id, peer_urls } => {
                let Some(first) = peer_urls.first() else {
                    return Err(Error::invalid("a member needs at least one peer URL"));
                };
                if membership
                    .nodes()
                    .any(|(n, node)| *n != id && peer_urls.contains(&node.addr))
                {
                    return Err(Error::new(
                        ErrorKind::FailedPrecondition,
                        "etcdserver: Peer URLs already exists",
                    ));
                }
                let node = BasicNode {
                    addr: first.clone(),
                };
                self.raft
                    .change_membership(ChangeMembers::SetNodes([(id, node)].into()), false)
                    .await
                    .map(drop)
                    .map_err(change_error)
            }
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
pub(super) async fn count_leader_changes(
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
pub(super) async fn publish(
    sm: StateMachine,
    id: NodeId,
    wanted: crate::node::mvcc::Attributes,
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
pub(super) fn members_of(
    m: &openraft::Membership<NodeId, BasicNode>,
    mvcc: &crate::node::mvcc::Mvcc,
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

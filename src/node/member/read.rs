//! Linearizable reads: leadership confirmations shared by the reads that wait for them.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{CheckIsLeaderError, RaftError};
use tokio::sync::oneshot;

use super::peers::{unavailable, Peers};
use super::proposal::PROPOSAL_TIMEOUT;
use crate::api::Deadline;
use crate::error::{Error, ErrorKind, Result};
use crate::node::raft::{NodeId, Raft};

/// Linearizable reads share leadership confirmations: one round runs at a time, and it
/// serves every read that was waiting when it started; reads that arrive during a round
/// wait for the next one, which starts after them, as linearizability requires. So a burst
/// of reads costs one heartbeat round to a quorum, not one each.
#[derive(Clone)]
pub(super) struct ReadGate {
    pub(super) id: NodeId,
    pub(super) raft: Raft,
    pub(super) peers: Arc<dyn Peers>,
    pub(super) waiting: Arc<Mutex<Waiting>>,
}

/// Whether a confirmation round is running, and the reads waiting for the next one.
type Waiting = (bool, Vec<oneshot::Sender<Result<()>>>);

impl ReadGate {
    pub(super) async fn barrier(&self, deadline: Deadline) -> Result<()> {
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

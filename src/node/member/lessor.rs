//! The lease clocks, and the keeper of an in-process client's lease.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::peers::{unavailable, Peers};
use super::proposal::Waiter;
use crate::api::{KeepAliveGuard, LeaseUpdate};
use crate::error::{Error, ErrorKind, Result};
use crate::lease::ttl_duration;
use crate::node::raft::{Command, NodeId, Raft, StateMachine};
use crate::stream::Feed;

/// The lease clocks. Every member has one; only the leader's runs: it gives each lease its
/// TTL when it first sees it (so a new leader extends every live lease by its TTL, as etcd's
/// does), moves a lease's deadline on each keep-alive, and proposes the revocation of a lease
/// whose deadline passed (its keys are deleted in one revision).
#[derive(Clone)]
pub(crate) struct Lessor {
    pub(super) id: NodeId,
    pub(super) raft: Raft,
    pub(super) sm: StateMachine,
    pub(super) peers: Arc<dyn Peers>,
    pub(super) deadlines: Arc<Mutex<HashMap<i64, Instant>>>,
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
        let granted = {
            let state = self.sm.state.read().await;
            // A mirror's leases are its source's to keep alive (`node::mirror`).
            if let (true, Some(source)) = (refresh, &state.mvcc.mirror) {
                return Err(crate::node::mirror::read_only(source));
            }
            match state.mvcc.lease(id) {
                Some((granted, _)) => granted,
                None => return Ok(0),
            }
        };
        let now = Instant::now();
        let full = now + ttl_duration(granted);
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
    pub(super) async fn run(self, proposals: mpsc::WeakUnboundedSender<(Command, Waiter)>) {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let Some(proposals) = proposals.upgrade() else {
                return;
            };
            if !self.is_leader() {
                self.deadlines().clear();
                continue;
            }
            let leases = {
                let state = self.sm.state.read().await;
                // A mirror's leases are its source's to expire: their clocks start at the
                // promote, each with its full TTL.
                if state.mvcc.mirror.is_some() {
                    self.deadlines().clear();
                    continue;
                }
                state.mvcc.lease_ttls()
            };
            let now = Instant::now();
            let mut expired = Vec::new();
            {
                let mut deadlines = self.deadlines();
                deadlines.retain(|id, _| leases.iter().any(|(l, _)| l == id));
                for (id, ttl) in leases {
                    let d = deadlines.entry(id).or_insert(now + ttl_duration(ttl));
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

/// Keeps one lease of an in-process client alive: refreshed on the leader at a third of its
/// TTL; LOST when the leader says it is gone, or when no leader confirmed it for a TTL.
pub(super) async fn keep_lease(
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

pub(super) struct LeaseGuard {
    pub(super) task: tokio::task::JoinHandle<()>,
    pub(super) lost: Arc<std::sync::atomic::AtomicBool>,
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

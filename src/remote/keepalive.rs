//! One LeaseKeepAlive stream per client refreshes every kept lease at a third of its TTL,
//! moves to the next member at once when the stream breaks, and reports each lease's state
//! changes. LOST means lost: when a lease's TTL runs out without a confirmed refresh, the
//! cluster is asked (time-to-live) and the lease is kept while the cluster still holds it —
//! a new leader extends every lease, so a leader change must not lose one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::{require_leader, Pool};
use crate::api::{KeepAliveGuard, LeaseState, LeaseUpdate};
use crate::error::{Error, ErrorKind, Result};
use crate::lease::ttl_duration;
use crate::observe::{self, Counters, Level};
use crate::pb::etcdserverpb::lease_client::LeaseClient;
use crate::pb::etcdserverpb::{LeaseKeepAliveRequest, LeaseTimeToLiveRequest};
use crate::stream::{Feed, SendError};

/// How long a lease may go unconfirmed before its first answer (Go: `firstKeepAliveTimeout`).
const FIRST_ANSWER: Duration = Duration::from_secs(5);
/// How long one time-to-live question may take, and the pause before asking again.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
const PROBE_RETRY: Duration = Duration::from_millis(250);

enum KeepCmd {
    Add {
        id: i64,
        token: u64,
        feed: Feed<LeaseUpdate>,
        lost: Arc<AtomicBool>,
    },
    Remove {
        id: i64,
        token: u64,
    },
    /// A consumer that was full has room again.
    Room,
}

pub(crate) struct Keeper {
    cmds: mpsc::UnboundedSender<KeepCmd>,
    tokens: AtomicU64,
}

impl Keeper {
    pub fn start(pool: Arc<Pool>) -> Self {
        let (cmds, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(pool, rx));
        Keeper {
            cmds,
            tokens: AtomicU64::new(1),
        }
    }

    pub fn add(&self, id: i64, feed: Feed<LeaseUpdate>) -> Result<Box<dyn KeepAliveGuard>> {
        if id <= 0 {
            return Err(Error::invalid(format!(
                "lease id {id} is not a valid lease"
            )));
        }
        let token = self.tokens.fetch_add(1, Ordering::Relaxed);
        let weak = self.cmds.downgrade();
        feed.on_room(move || {
            if let Some(cmds) = weak.upgrade() {
                let _ = cmds.send(KeepCmd::Room);
            }
        });
        let lost = Arc::new(AtomicBool::new(false));
        self.cmds
            .send(KeepCmd::Add {
                id,
                token,
                feed,
                lost: lost.clone(),
            })
            .map_err(|_| Error::new(ErrorKind::Closed, "the client is closed"))?;
        Ok(Box::new(Guard {
            id,
            token,
            lost,
            cmds: self.cmds.clone(),
        }))
    }
}

struct Guard {
    id: i64,
    token: u64,
    lost: Arc<AtomicBool>,
    cmds: mpsc::UnboundedSender<KeepCmd>,
}

impl KeepAliveGuard for Guard {
    fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Acquire)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.cmds.send(KeepCmd::Remove {
            id: self.id,
            token: self.token,
        });
    }
}

struct Listener {
    token: u64,
    feed: Feed<LeaseUpdate>,
    lost: Arc<AtomicBool>,
    /// A state change found the consumer full: send the current state when it has room.
    behind: bool,
}

struct KeptLease {
    ttl: i64,
    state: Option<LeaseState>,
    next_send: Instant,
    /// When the TTL runs out unless a refresh is confirmed; then the cluster is asked.
    deadline: Instant,
    /// A time-to-live question is in flight.
    probing: bool,
    listeners: Vec<Listener>,
}

/// `now + secs`, saturating at a year: a server may grant any TTL.
fn after(now: Instant, secs: i64) -> Instant {
    now + ttl_duration(secs)
}

impl KeptLease {
    fn update(&self, id: i64, reason: &str) -> Option<LeaseUpdate> {
        Some(LeaseUpdate {
            id,
            state: self.state?,
            ttl: self.ttl,
            reason: reason.to_string(),
        })
    }

    fn report(&mut self, id: i64, state: LeaseState, reason: &str) {
        if self.state == Some(state) {
            return;
        }
        self.state = Some(state);
        let Some(update) = self.update(id, reason) else {
            return;
        };
        for l in &mut self.listeners {
            if state == LeaseState::Lost {
                // Once per lease, so it may pass the consumer's capacity.
                l.lost.store(true, Ordering::Release);
                l.feed.send_anyway(update.clone());
                continue;
            }
            l.behind = matches!(l.feed.try_send(update.clone()), Err(SendError::Full(_)));
        }
    }

    fn lost(&mut self, id: i64, reason: &str) {
        self.ttl = -1;
        self.report(id, LeaseState::Lost, reason);
    }

    /// The cluster confirmed the lease with `ttl` seconds left.
    fn confirmed(&mut self, ttl: i64, refresh: bool) {
        let now = Instant::now();
        self.ttl = ttl;
        self.deadline = after(now, ttl);
        self.next_send = if refresh {
            now + (ttl_duration(ttl) / 3).max(Duration::from_millis(500))
        } else {
            now
        };
    }
}

type Probe = (i64, Result<i64>);

struct KeeperState {
    leases: HashMap<i64, KeptLease>,
    pool: Arc<Pool>,
    probes: mpsc::UnboundedSender<Probe>,
}

impl KeeperState {
    fn handle(
        &mut self,
        cmd: KeepCmd,
        stream: Option<&mpsc::UnboundedSender<LeaseKeepAliveRequest>>,
    ) {
        match cmd {
            KeepCmd::Add {
                id,
                token,
                feed,
                lost,
            } => {
                let now = Instant::now();
                let kept = self.leases.entry(id).or_insert_with(|| KeptLease {
                    ttl: 0,
                    state: None,
                    next_send: now,
                    deadline: now + FIRST_ANSWER,
                    probing: false,
                    listeners: Vec::new(),
                });
                let mut listener = Listener {
                    token,
                    feed,
                    lost,
                    behind: false,
                };
                if let Some(update) = kept.update(id, "") {
                    listener.behind =
                        matches!(listener.feed.try_send(update), Err(SendError::Full(_)));
                }
                kept.listeners.push(listener);
                if let Some(tx) = stream {
                    let _ = tx.send(LeaseKeepAliveRequest { id });
                }
            }
            KeepCmd::Remove { id, token } => {
                if let Some(kept) = self.leases.get_mut(&id) {
                    kept.listeners.retain(|l| l.token != token);
                    if kept.listeners.is_empty() {
                        self.leases.remove(&id);
                    }
                }
            }
            KeepCmd::Room => {
                for (&id, kept) in &mut self.leases {
                    let Some(update) = kept.update(id, "") else {
                        continue;
                    };
                    for l in kept.listeners.iter_mut().filter(|l| l.behind) {
                        l.behind =
                            matches!(l.feed.try_send(update.clone()), Err(SendError::Full(_)));
                    }
                }
            }
        }
    }

    /// Sends due refreshes and asks the cluster about leases past their deadline; returns
    /// when to wake.
    fn tick(&mut self, tx: Option<&mpsc::UnboundedSender<LeaseKeepAliveRequest>>) -> Instant {
        let now = Instant::now();
        let mut wake = now + Duration::from_secs(1);
        for (&id, kept) in &mut self.leases {
            if now >= kept.deadline && !kept.probing {
                kept.probing = true;
                let (pool, probes) = (self.pool.clone(), self.probes.clone());
                tokio::spawn(async move {
                    let answer = pool
                        .unary(true, Instant::now() + PROBE_TIMEOUT, |ch| async move {
                            LeaseClient::new(ch)
                                .lease_time_to_live(LeaseTimeToLiveRequest { id, keys: false })
                                .await
                        })
                        .await
                        .map(|r| r.ttl);
                    let _ = probes.send((id, answer));
                });
            }
            if let Some(tx) = tx {
                if now >= kept.next_send {
                    let _ = tx.send(LeaseKeepAliveRequest { id });
                    // Until answered, ask again every 500 ms.
                    kept.next_send = now + Duration::from_millis(500);
                }
                wake = wake.min(kept.next_send);
            }
            if !kept.probing {
                wake = wake.min(kept.deadline);
            }
        }
        wake
    }

    /// The cluster's answer about a lease whose TTL ran out locally.
    fn on_probe(&mut self, id: i64, answer: Result<i64>) {
        let Some(kept) = self.leases.get_mut(&id) else {
            return;
        };
        kept.probing = false;
        match answer {
            Ok(ttl) if ttl > 0 => kept.confirmed(ttl, false),
            Ok(_) => kept.lost(
                id,
                "the cluster says the lease is gone (expired or revoked): its keys are deleted",
            ),
            Err(e) => {
                let silent = Instant::now().saturating_duration_since(kept.deadline);
                let grace = ttl_duration(kept.ttl).max(FIRST_ANSWER);
                if silent >= grace {
                    let reason = format!(
                        "assumed lost: no member could confirm the lease for {} s after its TTL ran out; its keys are deleted or will be ({})",
                        silent.as_secs(),
                        e.message
                    );
                    kept.lost(id, &reason);
                } else {
                    kept.deadline = Instant::now() + PROBE_RETRY;
                }
            }
        }
        if kept.state == Some(LeaseState::Lost) {
            self.leases.remove(&id);
        }
    }

    fn on_answer(&mut self, id: i64, ttl: i64) {
        let Some(kept) = self.leases.get_mut(&id) else {
            return;
        };
        if ttl <= 0 {
            kept.lost(id, "etcdserver: requested lease not found");
            self.leases.remove(&id);
            return;
        }
        kept.confirmed(ttl, true);
        kept.report(id, LeaseState::Alive, "");
    }

    fn disconnected(&mut self, reason: &str) {
        for (&id, kept) in self.leases.iter_mut() {
            if kept.state.is_some() {
                kept.report(id, LeaseState::Reconnecting, reason);
            }
        }
    }
}

async fn run(pool: Arc<Pool>, mut cmds: mpsc::UnboundedReceiver<KeepCmd>) {
    let (probes, mut probe_answers) = mpsc::unbounded_channel();
    let mut state = KeeperState {
        leases: HashMap::new(),
        pool: pool.clone(),
        probes,
    };
    let mut failures = 0u32;
    let mut members = pool.rotation();
    loop {
        while state.leases.is_empty() {
            match cmds.recv().await {
                Some(cmd) => state.handle(cmd, None),
                None => return,
            }
        }
        let member = members.next().expect("rotation is endless");
        let (tx, rx) = mpsc::unbounded_channel();
        // Queue the refreshes before opening: the server sends its response headers, which
        // the open waits for, only once it has something to answer.
        for kept in state.leases.values_mut() {
            kept.next_send = Instant::now();
        }
        state.tick(Some(&tx));
        let opened = match pool.stream_stamp(member).await {
            Ok(stamp) => {
                let mut client = LeaseClient::new(member.stamped(stamp.clone()));
                tokio::select! {
                    r = client.lease_keep_alive(require_leader(UnboundedReceiverStream::new(rx))) => r.map(|r| (stamp, r)),
                    _ = crate::runtime::sleep(Duration::from_secs(5)) => Err(tonic::Status::unavailable("keep-alive stream did not open in 5 s")),
                }
            }
            Err(s) => Err(s),
        };
        let reason = match opened {
            Ok((stamp, resp)) => {
                let mut answers = resp.into_inner();
                loop {
                    let wake = state.tick(Some(&tx));
                    if state.leases.is_empty() {
                        break String::new();
                    }
                    tokio::select! {
                        cmd = cmds.recv() => match cmd {
                            Some(cmd) => state.handle(cmd, Some(&tx)),
                            None => return,
                        },
                        Some((id, answer)) = probe_answers.recv() => state.on_probe(id, answer),
                        msg = answers.message() => match msg {
                            Ok(Some(a)) => {
                                failures = 0;
                                state.on_answer(a.id, a.ttl);
                            }
                            Ok(None) => break format!("{}: keep-alive stream closed", member.url),
                            Err(e) => {
                                pool.auth.renew_after(&e, &stamp);
                                break format!("{}: {}", member.url, Error::from(e));
                            }
                        },
                        _ = crate::runtime::sleep_until(wake) => {}
                    }
                }
            }
            Err(e) => format!("{}: {}", member.url, Error::from(e)),
        };
        if state.leases.is_empty() {
            continue;
        }
        state.disconnected(&reason);
        failures += 1;
        Counters::add(&pool.counters.keepalive_failures, 1);
        Counters::add(&pool.counters.reconnects, 1);
        observe::log(Level::Warn, || {
            format!("keep-alive stream broke ({reason}); moving to the next member")
        });
        // Deadlines keep running (and the cluster is asked) while waiting to reconnect.
        let until = Instant::now() + pool.reconnect_pause(failures);
        while Instant::now() < until && !state.leases.is_empty() {
            let wake = state.tick(None).min(until);
            tokio::select! {
                cmd = cmds.recv() => match cmd {
                    Some(cmd) => state.handle(cmd, None),
                    None => return,
                },
                Some((id, answer)) = probe_answers.recv() => state.on_probe(id, answer),
                _ = crate::runtime::sleep_until(wake) => {}
            }
        }
    }
}

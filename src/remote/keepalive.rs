//! One LeaseKeepAlive stream per client refreshes every kept lease at a third of its TTL,
//! moves to the next member when the stream breaks, and reports each lease's state changes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::{require_leader, stream_backoff, Inner};
use crate::api::{KeepAliveGuard, LeaseState, LeaseUpdate};
use crate::error::{Error, ErrorKind, Result};
use crate::pb::etcdserverpb::lease_client::LeaseClient;
use crate::pb::etcdserverpb::LeaseKeepAliveRequest;

/// How long a lease may go unconfirmed before its first answer (Go: `firstKeepAliveTimeout`).
const FIRST_ANSWER: Duration = Duration::from_secs(5);

enum Cmd {
    Add {
        id: i64,
        token: u64,
        updates: mpsc::UnboundedSender<LeaseUpdate>,
    },
    Remove {
        id: i64,
        token: u64,
    },
}

pub(crate) struct Keeper {
    cmds: mpsc::UnboundedSender<Cmd>,
    tokens: AtomicU64,
}

impl Keeper {
    pub fn start(inner: Arc<Inner>) -> Self {
        let (cmds, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(inner, rx));
        Keeper {
            cmds,
            tokens: AtomicU64::new(1),
        }
    }

    pub fn add(
        &self,
        id: i64,
        updates: mpsc::UnboundedSender<LeaseUpdate>,
    ) -> Result<Box<dyn KeepAliveGuard>> {
        if id <= 0 {
            return Err(Error::invalid(format!(
                "lease id {id} is not a valid lease"
            )));
        }
        let token = self.tokens.fetch_add(1, Ordering::Relaxed);
        self.cmds
            .send(Cmd::Add { id, token, updates })
            .map_err(|_| Error::new(ErrorKind::Closed, "the client is closed"))?;
        Ok(Box::new(Guard {
            id,
            token,
            cmds: self.cmds.clone(),
        }))
    }
}

struct Guard {
    id: i64,
    token: u64,
    cmds: mpsc::UnboundedSender<Cmd>,
}

impl KeepAliveGuard for Guard {}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.cmds.send(Cmd::Remove {
            id: self.id,
            token: self.token,
        });
    }
}

struct Kept {
    ttl: i64,
    state: Option<LeaseState>,
    next_send: Instant,
    deadline: Instant,
    listeners: Vec<(u64, mpsc::UnboundedSender<LeaseUpdate>)>,
}

impl Kept {
    fn report(&mut self, id: i64, state: LeaseState, reason: &str) {
        if self.state == Some(state) {
            return;
        }
        self.state = Some(state);
        let update = LeaseUpdate {
            id,
            state,
            ttl: self.ttl,
            reason: reason.to_string(),
        };
        self.listeners
            .retain(|(_, tx)| tx.send(update.clone()).is_ok());
    }
}

#[derive(Default)]
struct State {
    leases: HashMap<i64, Kept>,
}

impl State {
    fn handle(&mut self, cmd: Cmd, stream: Option<&mpsc::UnboundedSender<LeaseKeepAliveRequest>>) {
        match cmd {
            Cmd::Add { id, token, updates } => {
                let now = Instant::now();
                let kept = self.leases.entry(id).or_insert_with(|| Kept {
                    ttl: 0,
                    state: None,
                    next_send: now,
                    deadline: now + FIRST_ANSWER,
                    listeners: Vec::new(),
                });
                if let Some(state) = kept.state {
                    let _ = updates.send(LeaseUpdate {
                        id,
                        state,
                        ttl: kept.ttl,
                        reason: String::new(),
                    });
                }
                kept.listeners.push((token, updates));
                if let Some(tx) = stream {
                    let _ = tx.send(LeaseKeepAliveRequest { id });
                }
            }
            Cmd::Remove { id, token } => {
                if let Some(kept) = self.leases.get_mut(&id) {
                    kept.listeners.retain(|(t, _)| *t != token);
                    if kept.listeners.is_empty() {
                        self.leases.remove(&id);
                    }
                }
            }
        }
    }

    /// Sends due refreshes and gives up on leases past their deadline; returns when to wake.
    fn tick(&mut self, tx: Option<&mpsc::UnboundedSender<LeaseKeepAliveRequest>>) -> Instant {
        let now = Instant::now();
        let mut wake = now + Duration::from_secs(1);
        self.leases.retain(|&id, kept| {
            if now >= kept.deadline {
                kept.ttl = -1;
                kept.report(
                    id,
                    LeaseState::Lost,
                    "keep-alive deadline passed: no refresh was confirmed within the lease's TTL",
                );
                return false;
            }
            if let Some(tx) = tx {
                if now >= kept.next_send {
                    let _ = tx.send(LeaseKeepAliveRequest { id });
                    // Until answered, ask again every 500 ms.
                    kept.next_send = now + Duration::from_millis(500);
                }
                wake = wake.min(kept.next_send);
            }
            wake = wake.min(kept.deadline);
            true
        });
        wake
    }

    fn on_answer(&mut self, id: i64, ttl: i64) {
        let Some(kept) = self.leases.get_mut(&id) else {
            return;
        };
        if ttl <= 0 {
            kept.ttl = -1;
            kept.report(
                id,
                LeaseState::Lost,
                "etcdserver: requested lease not found",
            );
            self.leases.remove(&id);
            return;
        }
        let now = Instant::now();
        kept.ttl = ttl;
        kept.deadline = now + Duration::from_secs(ttl as u64);
        kept.next_send = now + Duration::from_millis((ttl as u64 * 1000 / 3).max(500));
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

async fn run(inner: Arc<Inner>, mut cmds: mpsc::UnboundedReceiver<Cmd>) {
    let mut state = State::default();
    let mut failures = 0u32;
    let mut members = inner.rotation();
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
        let mut client = LeaseClient::new(member.channel.clone());
        let opened = tokio::select! {
            r = client.lease_keep_alive(require_leader(UnboundedReceiverStream::new(rx))) => r,
            _ = tokio::time::sleep(Duration::from_secs(5)) => Err(tonic::Status::unavailable("keep-alive stream did not open in 5 s")),
        };
        let reason = match opened {
            Ok(resp) => {
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
                        msg = answers.message() => match msg {
                            Ok(Some(a)) => {
                                failures = 0;
                                state.on_answer(a.id, a.ttl);
                            }
                            Ok(None) => break format!("{}: keep-alive stream closed", member.url),
                            Err(e) => break format!("{}: {}", member.url, Error::from(e)),
                        },
                        _ = tokio::time::sleep_until(wake) => {}
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
        // Keep deadlines running while waiting to reconnect.
        let until = Instant::now() + stream_backoff(failures).max(Duration::from_millis(500));
        while Instant::now() < until && !state.leases.is_empty() {
            let wake = state.tick(None).min(until);
            tokio::select! {
                cmd = cmds.recv() => match cmd {
                    Some(cmd) => state.handle(cmd, None),
                    None => return,
                },
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }
}

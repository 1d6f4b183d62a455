//! One Watch stream per client, shared by all its watches. When the stream breaks (a member
//! dies, loses its leader, or restarts) every watch is re-created on the next member from
//! its last delivered revision + 1, so no event is lost and none is delivered twice.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::{require_leader, stream_backoff, Inner};
use crate::api::{Deadline, WatchControl, WatchUpdate, Watcher};
use crate::error::{Error, ErrorKind, Result};
use crate::pb::etcdserverpb::watch_client::WatchClient;
use crate::pb::etcdserverpb::watch_request::RequestUnion;
use crate::pb::etcdserverpb::*;
use crate::pb::mvccpb::Event;

enum Cmd {
    Create {
        id: u64,
        req: WatchCreateRequest,
        updates: mpsc::UnboundedSender<WatchUpdate>,
        created: oneshot::Sender<Result<()>>,
    },
    Cancel(u64),
    Progress,
}

pub(crate) struct Mux {
    cmds: mpsc::UnboundedSender<Cmd>,
    next_id: std::sync::atomic::AtomicU64,
}

impl Mux {
    pub fn start(inner: Arc<Inner>) -> Self {
        let (cmds, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(inner, rx));
        Mux {
            cmds,
            next_id: std::sync::atomic::AtomicU64::new(1),
        }
    }

    pub async fn create(&self, req: WatchCreateRequest, deadline: Deadline) -> Result<Watcher> {
        if req.start_revision < 0 {
            return Err(Error::invalid("watch start revision must not be negative"));
        }
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (updates, rx) = mpsc::unbounded_channel();
        let (created, created_rx) = oneshot::channel();
        let control = Control {
            id,
            cmds: self.cmds.clone(),
        };
        self.cmds
            .send(Cmd::Create {
                id,
                req,
                updates,
                created,
            })
            .map_err(|_| closed())?;
        // On a timeout `control` drops here and cancels the half-made watch.
        match tokio::time::timeout_at(deadline, created_rx).await {
            Ok(Ok(Ok(()))) => Ok(Watcher {
                updates: rx,
                control: Box::new(control),
            }),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(closed()),
            Err(_) => Err(Error::new(
                ErrorKind::Unavailable,
                "deadline exceeded before the watch was created: no member answered",
            )),
        }
    }
}

fn closed() -> Error {
    Error::new(ErrorKind::Closed, "the client is closed")
}

struct Control {
    id: u64,
    cmds: mpsc::UnboundedSender<Cmd>,
}

impl WatchControl for Control {
    fn request_progress(&self) {
        let _ = self.cmds.send(Cmd::Progress);
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        let _ = self.cmds.send(Cmd::Cancel(self.id));
    }
}

struct Watch {
    req: WatchCreateRequest,
    /// The first revision not yet delivered; 0 until the server has told us "now".
    next_rev: i64,
    updates: mpsc::UnboundedSender<WatchUpdate>,
    created: Option<oneshot::Sender<Result<()>>>,
    server_id: Option<i64>,
    fragments: Vec<Event>,
}

impl Watch {
    fn create_request(&self) -> WatchRequest {
        let mut req = self.req.clone();
        if self.next_rev > 0 {
            req.start_revision = self.next_rev;
        }
        req.fragment = true;
        req.watch_id = 0;
        WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(req)),
        }
    }
}

#[derive(Default)]
struct State {
    watches: HashMap<u64, Watch>,
    /// Local ids whose create request is on the current stream and not yet answered; etcd
    /// answers creates in the order they were sent.
    pending: VecDeque<u64>,
    by_server: HashMap<i64, u64>,
}

type Sender = mpsc::UnboundedSender<WatchRequest>;

impl State {
    fn handle(&mut self, cmd: Cmd, stream: Option<&Sender>) {
        match cmd {
            Cmd::Create {
                id,
                req,
                updates,
                created,
            } => {
                let w = Watch {
                    next_rev: req.start_revision,
                    req,
                    updates,
                    created: Some(created),
                    server_id: None,
                    fragments: Vec::new(),
                };
                if let Some(tx) = stream {
                    if tx.send(w.create_request()).is_ok() {
                        self.pending.push_back(id);
                    }
                }
                self.watches.insert(id, w);
            }
            Cmd::Cancel(id) => {
                if let Some(w) = self.watches.remove(&id) {
                    if let (Some(sid), Some(tx)) = (w.server_id, stream) {
                        self.by_server.remove(&sid);
                        let _ = tx.send(cancel_request(sid));
                    }
                }
            }
            Cmd::Progress => {
                if let Some(tx) = stream {
                    let _ = tx.send(WatchRequest {
                        request_union: Some(RequestUnion::ProgressRequest(WatchProgressRequest {})),
                    });
                }
            }
        }
    }

    /// Re-creates every watch on a fresh stream.
    fn resubscribe(&mut self, tx: &Sender) {
        self.pending.clear();
        self.by_server.clear();
        // In the order they were first created, so answers pair up with `pending`.
        let mut watches: Vec<(&u64, &mut Watch)> = self.watches.iter_mut().collect();
        watches.sort_unstable_by_key(|(id, _)| **id);
        for (&id, w) in watches {
            w.server_id = None;
            w.fragments.clear();
            if tx.send(w.create_request()).is_ok() {
                self.pending.push_back(id);
            }
        }
    }

    fn end(&mut self, id: u64, last: WatchUpdate) {
        let Some(w) = self.watches.remove(&id) else {
            return;
        };
        if let Some(sid) = w.server_id {
            self.by_server.remove(&sid);
        }
        match (w.created, last) {
            // Refused before it was ever confirmed: the starter gets the reason.
            (Some(created), WatchUpdate::Canceled { reason }) => {
                let _ = created.send(Err(Error::new(ErrorKind::Canceled, reason)));
            }
            (created, last) => {
                if let Some(created) = created {
                    let _ = created.send(Ok(()));
                }
                let _ = w.updates.send(last);
            }
        }
    }

    fn on_response(&mut self, resp: WatchResponse, tx: &Sender) {
        let header = resp.header.unwrap_or_default();
        let rev = header.revision;
        if resp.created {
            let Some(id) = self.pending.pop_front() else {
                return;
            };
            let Some(w) = self.watches.get_mut(&id) else {
                // Canceled while its create was in flight.
                if resp.watch_id >= 0 && !resp.canceled {
                    let _ = tx.send(cancel_request(resp.watch_id));
                }
                return;
            };
            if resp.canceled || resp.watch_id < 0 {
                let reason = if resp.cancel_reason.is_empty() {
                    "etcdserver: watch was refused".to_string()
                } else {
                    resp.cancel_reason
                };
                if resp.compact_revision > 0 {
                    let compact_revision = resp.compact_revision;
                    self.end(
                        id,
                        WatchUpdate::Compacted {
                            header,
                            compact_revision,
                        },
                    );
                } else {
                    self.end(id, WatchUpdate::Canceled { reason });
                }
                return;
            }
            w.server_id = Some(resp.watch_id);
            if w.next_rev == 0 {
                w.next_rev = rev + 1;
            }
            if let Some(created) = w.created.take() {
                let _ = created.send(Ok(()));
            }
            self.by_server.insert(resp.watch_id, id);
            return;
        }
        if resp.watch_id == -1 && resp.events.is_empty() && !resp.canceled {
            // A progress answer for the whole stream (etcd 3.5+).
            for w in self.watches.values_mut().filter(|w| w.server_id.is_some()) {
                w.next_rev = w.next_rev.max(rev + 1);
                let _ = w.updates.send(WatchUpdate::Progress { header });
            }
            return;
        }
        let Some(&id) = self.by_server.get(&resp.watch_id) else {
            return;
        };
        if resp.canceled {
            if resp.compact_revision > 0 {
                let compact_revision = resp.compact_revision;
                self.end(
                    id,
                    WatchUpdate::Compacted {
                        header,
                        compact_revision,
                    },
                );
            } else {
                let reason = if resp.cancel_reason.is_empty() {
                    "etcdserver: watch canceled by the server".to_string()
                } else {
                    resp.cancel_reason
                };
                self.end(id, WatchUpdate::Canceled { reason });
            }
            return;
        }
        let Some(w) = self.watches.get_mut(&id) else {
            return;
        };
        if resp.fragment {
            w.fragments.extend(resp.events);
            return;
        }
        let mut events = std::mem::take(&mut w.fragments);
        events.extend(resp.events);
        // After a resume the server may repeat what was already delivered: drop it.
        let next = w.next_rev;
        events.retain(|e| e.kv.as_ref().is_some_and(|kv| kv.mod_revision >= next));
        let update = match events.last() {
            Some(last) => {
                w.next_rev = last.kv.as_ref().map_or(next, |kv| kv.mod_revision + 1);
                WatchUpdate::Events { header, events }
            }
            None => {
                w.next_rev = w.next_rev.max(rev + 1);
                WatchUpdate::Progress { header }
            }
        };
        if w.updates.send(update).is_err() {
            // The consumer is gone without a cancel: stop the server side too.
            self.watches.remove(&id);
            self.by_server.remove(&resp.watch_id);
            let _ = tx.send(cancel_request(resp.watch_id));
        }
    }
}

fn cancel_request(watch_id: i64) -> WatchRequest {
    WatchRequest {
        request_union: Some(RequestUnion::CancelRequest(WatchCancelRequest { watch_id })),
    }
}

async fn run(inner: Arc<Inner>, mut cmds: mpsc::UnboundedReceiver<Cmd>) {
    let mut state = State::default();
    let mut failures = 0u32;
    let mut members = inner.rotation();
    loop {
        // No watch, no stream: an idle client keeps no stream (and sends no pings) open.
        while state.watches.is_empty() {
            match cmds.recv().await {
                Some(cmd) => state.handle(cmd, None),
                None => return,
            }
        }
        let member = members.next().expect("rotation is endless");
        let (tx, rx) = mpsc::unbounded_channel();
        state.resubscribe(&tx);
        let mut client =
            WatchClient::new(member.channel.clone()).max_decoding_message_size(usize::MAX);
        let opened = tokio::select! {
            r = client.watch(require_leader(UnboundedReceiverStream::new(rx))) => r,
            _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => Err(tonic::Status::unavailable("watch stream did not open in 5 s")),
        };
        let mut responses = match opened {
            Ok(r) => r.into_inner(),
            Err(_) => {
                failures += 1;
                if !pause(&mut state, &mut cmds, failures).await {
                    return;
                }
                continue;
            }
        };
        loop {
            tokio::select! {
                cmd = cmds.recv() => match cmd {
                    Some(cmd) => state.handle(cmd, Some(&tx)),
                    None => return,
                },
                msg = responses.message() => match msg {
                    Ok(Some(resp)) => {
                        failures = 0;
                        state.on_response(resp, &tx);
                    }
                    Ok(None) | Err(_) => break,
                },
            }
            if state.watches.is_empty() {
                break;
            }
        }
        if !state.watches.is_empty() {
            failures += 1;
            if !pause(&mut state, &mut cmds, failures).await {
                return;
            }
        }
    }
}

/// Waits out the reconnect backoff while still taking commands. False when the client is gone.
async fn pause(state: &mut State, cmds: &mut mpsc::UnboundedReceiver<Cmd>, failures: u32) -> bool {
    let sleep = tokio::time::sleep(stream_backoff(failures));
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            _ = &mut sleep => return true,
            cmd = cmds.recv() => match cmd {
                Some(cmd) => state.handle(cmd, None),
                None => return false,
            },
        }
    }
}

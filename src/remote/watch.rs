//! One Watch stream per client, shared by all its watches. When the stream breaks (a member
//! dies, loses its leader, or restarts) every watch is re-created on the next member from
//! its last delivered revision + 1, so no event is lost and none is delivered twice. A watch
//! whose consumer is full is paused the same way: canceled on the server, and re-created
//! from its next revision once the consumer has room.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::{require_leader, Pool};
use crate::api::{event_rev, pieces, Deadline, WatchControl, WatchUpdate};
use crate::error::{kind_by_text, Error, ErrorKind, Result};
use crate::observe::{self, Counters, Level};
use crate::pb::etcdserverpb::watch_client::WatchClient;
use crate::pb::etcdserverpb::watch_request::RequestUnion;
use crate::pb::etcdserverpb::*;
use crate::pb::mvccpb::Event;
use crate::stream::{Feed, SendError};

enum WatchCmd {
    Create {
        id: u64,
        req: WatchCreateRequest,
        feed: Feed<WatchUpdate>,
        created: oneshot::Sender<Result<()>>,
    },
    Cancel(u64),
    /// The consumer of a paused watch has room again.
    Resume(u64),
    Progress,
}

pub(crate) struct Mux {
    cmds: mpsc::UnboundedSender<WatchCmd>,
    next_id: AtomicU64,
}

impl Mux {
    pub fn start(pool: Arc<Pool>) -> Self {
        let (cmds, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(pool, rx));
        Mux {
            cmds,
            next_id: AtomicU64::new(1),
        }
    }

    pub async fn create(
        &self,
        req: WatchCreateRequest,
        feed: Feed<WatchUpdate>,
        deadline: Deadline,
    ) -> Result<Box<dyn WatchControl>> {
        if req.start_revision < 0 {
            return Err(Error::invalid("watch start revision must not be negative"));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let weak = self.cmds.downgrade();
        feed.on_room(move || {
            if let Some(cmds) = weak.upgrade() {
                let _ = cmds.send(WatchCmd::Resume(id));
            }
        });
        let (created, created_rx) = oneshot::channel();
        let control = Control {
            id,
            cmds: self.cmds.clone(),
        };
        self.cmds
            .send(WatchCmd::Create {
                id,
                req,
                feed,
                created,
            })
            .map_err(|_| closed())?;
        // On a timeout `control` drops here and cancels the half-made watch.
        match crate::runtime::timeout_at(deadline, created_rx).await {
            Ok(Ok(Ok(()))) => Ok(Box::new(control)),
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
    cmds: mpsc::UnboundedSender<WatchCmd>,
}

impl WatchControl for Control {
    fn request_progress(&self) {
        let _ = self.cmds.send(WatchCmd::Progress);
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        let _ = self.cmds.send(WatchCmd::Cancel(self.id));
    }
}

struct WatchEntry {
    req: WatchCreateRequest,
    /// The first revision not yet delivered; 0 until the server has told us "now".
    next_rev: i64,
    feed: Feed<WatchUpdate>,
    created: Option<oneshot::Sender<Result<()>>>,
    server_id: Option<i64>,
    fragments: Vec<Event>,
    /// Its consumer was full: not on the server until `Resume`.
    paused: bool,
}

impl WatchEntry {
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
struct MuxState {
    watches: HashMap<u64, WatchEntry>,
    /// Local ids whose create request is on the current stream and not yet answered; etcd
    /// answers creates in the order they were sent.
    pending: VecDeque<u64>,
    by_server: HashMap<i64, u64>,
}

type Sender = mpsc::UnboundedSender<WatchRequest>;

impl MuxState {
    fn handle(&mut self, cmd: WatchCmd, stream: Option<&Sender>) {
        match cmd {
            WatchCmd::Create {
                id,
                req,
                feed,
                created,
            } => {
                let w = WatchEntry {
                    next_rev: req.start_revision,
                    req,
                    feed,
                    created: Some(created),
                    server_id: None,
                    fragments: Vec::new(),
                    paused: false,
                };
                self.watches.insert(id, w);
                self.subscribe(id, stream);
            }
            WatchCmd::Cancel(id) => {
                if let Some(w) = self.watches.remove(&id) {
                    self.unsubscribe(w.server_id, stream);
                }
            }
            WatchCmd::Resume(id) => {
                if let Some(w) = self.watches.get_mut(&id).filter(|w| w.paused) {
                    w.paused = false;
                    self.subscribe(id, stream);
                }
            }
            WatchCmd::Progress => {
                if let Some(tx) = stream {
                    let _ = tx.send(WatchRequest {
                        request_union: Some(RequestUnion::ProgressRequest(WatchProgressRequest {})),
                    });
                }
            }
        }
    }

    /// Sends the create request of watch `id` from its next revision on the stream, if any
    /// (without one, the next `resubscribe` does it).
    fn subscribe(&mut self, id: u64, stream: Option<&Sender>) {
        let (Some(w), Some(tx)) = (self.watches.get(&id), stream) else {
            return;
        };
        if tx.send(w.create_request()).is_ok() {
            self.pending.push_back(id);
        }
    }

    fn unsubscribe(&mut self, server_id: Option<i64>, stream: Option<&Sender>) {
        if let Some(sid) = server_id {
            self.by_server.remove(&sid);
            if let Some(tx) = stream {
                let _ = tx.send(cancel_request(sid));
            }
        }
    }

    /// Re-creates every watch that is not paused on a fresh stream; returns how many.
    fn resubscribe(&mut self, tx: &Sender) -> u64 {
        let mut n = 0;
        self.pending.clear();
        self.by_server.clear();
        // In the order they were first created, so answers pair up with `pending`.
        let mut ids: Vec<u64> = self.watches.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let Some(w) = self.watches.get_mut(&id) else {
                continue;
            };
            w.server_id = None;
            w.fragments.clear();
            if !w.paused {
                self.subscribe(id, Some(tx));
                n += 1;
            }
        }
        n
    }

    /// Fails every watch not yet created with `err`.
    fn refuse(&mut self, err: &Error) {
        self.watches.retain(|_, w| match w.created.take() {
            Some(created) => {
                let _ = created.send(Err(err.clone()));
                false
            }
            None => true,
        });
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
                let kind = kind_by_text(&reason).unwrap_or(ErrorKind::Canceled);
                let _ = created.send(Err(Error::new(kind, reason)));
            }
            (created, last) => {
                if let Some(created) = created {
                    let _ = created.send(Ok(()));
                }
                w.feed.finish(Some(last));
            }
        }
    }

    /// Hands `update` to watch `id`'s consumer, moving its next revision to `next_rev` once
    /// delivered. A full consumer pauses the watch: it leaves the server and resumes from
    /// its next undelivered revision on `Resume`. A gone consumer cancels it.
    /// True when the update was taken.
    fn deliver(&mut self, id: u64, update: WatchUpdate, next_rev: i64, tx: &Sender) -> bool {
        let Some(w) = self.watches.get_mut(&id) else {
            return false;
        };
        let progress = matches!(update, WatchUpdate::Progress { .. });
        match w.feed.try_send(update) {
            Ok(()) => {
                w.next_rev = w.next_rev.max(next_rev);
                true
            }
            // A progress note that finds no room is dropped: nothing was missed.
            Err(SendError::Full(_)) if progress => {
                w.next_rev = w.next_rev.max(next_rev);
                true
            }
            Err(SendError::Full(_)) => {
                w.paused = true;
                w.fragments.clear();
                let sid = w.server_id.take();
                self.unsubscribe(sid, Some(tx));
                false
            }
            Err(SendError::Closed(_)) => {
                if let Some(w) = self.watches.remove(&id) {
                    self.unsubscribe(w.server_id, Some(tx));
                }
                false
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
            let live = self.watches.get(&id).is_some_and(|w| !w.paused);
            if !live {
                // Canceled or paused while its create was in flight.
                if resp.watch_id >= 0 && !resp.canceled {
                    let _ = tx.send(cancel_request(resp.watch_id));
                }
                return;
            }
            if resp.canceled || resp.watch_id < 0 {
                self.end(id, ended(header, resp, "etcdserver: watch was refused"));
                return;
            }
            let Some(w) = self.watches.get_mut(&id) else {
                return;
            };
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
            let ids: Vec<u64> = self.by_server.values().copied().collect();
            for id in ids {
                self.deliver(id, WatchUpdate::Progress { header }, rev + 1, tx);
            }
            return;
        }
        let Some(&id) = self.by_server.get(&resp.watch_id) else {
            return;
        };
        if resp.canceled {
            self.end(
                id,
                ended(header, resp, "etcdserver: watch canceled by the server"),
            );
            return;
        }
        let Some(w) = self.watches.get_mut(&id) else {
            return;
        };
        w.fragments.extend(resp.events);
        let mut events = if resp.fragment {
            // More of this response follows. Every revision but the last one seen is whole
            // already: hand those on now, so a large catch-up is never held in full.
            let last = w.fragments.last().map(event_rev);
            let whole = w
                .fragments
                .iter()
                .position(|e| Some(event_rev(e)) == last)
                .unwrap_or(0);
            w.fragments.drain(..whole).collect()
        } else {
            std::mem::take(&mut w.fragments)
        };
        // After a resume the server may repeat what was already delivered: drop it.
        let next = w.next_rev;
        events.retain(|e| event_rev(e) >= next);
        if events.is_empty() {
            if !resp.fragment {
                self.deliver(id, WatchUpdate::Progress { header }, rev + 1, tx);
            }
            return;
        }
        // A catch-up from history can carry thousands of revisions in one response: hand it
        // on in pieces of whole revisions, so a full consumer holds a bounded number of bytes.
        for piece in pieces(events) {
            let next_rev = piece
                .last()
                .and_then(|e| e.kv.as_ref())
                .map_or(next, |kv| kv.mod_revision + 1);
            let update = WatchUpdate::Events {
                header,
                events: piece,
            };
            if !self.deliver(id, update, next_rev, tx) {
                return;
            }
        }
    }
}

/// The last update of a watch the server ended: compacted, or canceled with its reason.
fn ended(header: ResponseHeader, resp: WatchResponse, default_reason: &str) -> WatchUpdate {
    if resp.compact_revision > 0 {
        return WatchUpdate::Compacted {
            header,
            compact_revision: resp.compact_revision,
        };
    }
    let reason = if resp.cancel_reason.is_empty() {
        default_reason.to_string()
    } else {
        resp.cancel_reason
    };
    WatchUpdate::Canceled { reason }
}

fn cancel_request(watch_id: i64) -> WatchRequest {
    WatchRequest {
        request_union: Some(RequestUnion::CancelRequest(WatchCancelRequest { watch_id })),
    }
}

async fn run(pool: Arc<Pool>, mut cmds: mpsc::UnboundedReceiver<WatchCmd>) {
    let mut state = MuxState::default();
    let mut failures = 0u32;
    let mut members = pool.rotation();
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
        let resumed = state.resubscribe(&tx);
        if failures > 0 {
            Counters::add(&pool.counters.reconnects, 1);
            Counters::add(&pool.counters.watch_resumes, resumed);
            observe::log(Level::Info, || {
                format!("watch stream: resuming {resumed} watches on {}", member.url)
            });
        }
        let opened = match pool.stream_stamp(member).await {
            Ok(stamp) => {
                let mut client = WatchClient::new(member.stamped(stamp.clone()))
                    .max_decoding_message_size(usize::MAX);
                tokio::select! {
                    r = client.watch(require_leader(UnboundedReceiverStream::new(rx))) => r.map(|r| (stamp, r)),
                    _ = crate::runtime::sleep(std::time::Duration::from_secs(5)) => Err(tonic::Status::unavailable("watch stream did not open in 5 s")),
                }
            }
            Err(s) => Err(s),
        };
        match opened {
            Ok((stamp, responses)) => {
                let mut responses = responses.into_inner();
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
                            Ok(None) => break,
                            Err(s) => {
                                pool.auth.renew_after(&s, &stamp);
                                break;
                            }
                        },
                    }
                    if state.watches.is_empty() {
                        break;
                    }
                }
            }
            // Wrong credentials: no member will take the stream; watches waiting to be
            // created are told so, the others wait for a stream.
            Err(s) if super::refused(&s) => state.refuse(&Error::from(s)),
            Err(_) => {}
        }
        if !state.watches.is_empty() {
            failures += 1;
            observe::log(Level::Warn, || {
                format!(
                    "watch stream to {} broke; moving to the next member",
                    member.url
                )
            });
            if !pause(&mut state, &mut cmds, pool.reconnect_pause(failures)).await {
                return;
            }
        }
    }
}

/// Waits out the reconnect pause while still taking commands. False when the client is gone.
async fn pause(
    state: &mut MuxState,
    cmds: &mut mpsc::UnboundedReceiver<WatchCmd>,
    pause: std::time::Duration,
) -> bool {
    let sleep = crate::runtime::sleep(pause);
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

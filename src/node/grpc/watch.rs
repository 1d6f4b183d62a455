//! etcd's `Watch` service: one bidirectional stream carries many watches; each response is
//! fragmented as etcd does when asked, and a slow reader pauses its watches instead of
//! growing a queue.

use tonic::{Request, Response, Status, Streaming};

use super::{Api, BoxStream, Caller, Need};
use crate::api::{WatchControl, WatchUpdate};
use crate::node::member::Member;
use crate::pb::etcdserverpb::watch_request::RequestUnion;
use crate::pb::etcdserverpb::watch_server::Watch;
use crate::pb::etcdserverpb::*;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, Notify};
use tokio_stream::{Stream, StreamExt};

/// Updates a watch of a gRPC stream may hold before the hub pauses it: with pieces of at
/// most ~64 KiB, a slow client costs at most a couple of MiB per watch.
const WATCH_QUEUE: usize = 32;

/// One Watch stream: its watches by id, and the one task that forwards their updates.
struct WatchStream {
    member: Arc<Member>,
    /// The stream's service, and who opened it: each watch is checked when created.
    api: Api,
    caller: Caller,
    out: mpsc::Sender<Result<WatchResponse, Status>>,
    /// Every watch the stream created, by id, until the stream ends or the watch is
    /// canceled (one that ended by itself keeps its id, as in etcd).
    watches: HashMap<i64, Box<dyn WatchControl>>,
    /// What the forwarder serves.
    forwarded: Arc<Mutex<HashMap<i64, Arc<Forwarded>>>>,
    ready: Arc<Ready>,
    forwarder: tokio::task::JoinHandle<()>,
    /// etcd's next automatic watch id: the smallest unused from here on.
    next_id: i64,
}

/// A watch as the forwarder sees it.
struct Forwarded {
    updates: crate::stream::Stream<WatchUpdate>,
    /// Cut responses into pieces of this size (etcd's `fragment`).
    fragment: Option<usize>,
    /// Canceled by the client: the forwarder answers so, after nothing more.
    canceled: AtomicBool,
}

/// The watches that have something to forward, in the order they got it. One task per
/// stream forwards for all its watches: with a task per watch, every event woke as many
/// tasks as there were watchers (10,000 watchers: a third of the member's time).
#[derive(Default)]
struct Ready {
    queue: Mutex<(VecDeque<i64>, HashSet<i64>)>,
    wake: Notify,
}

impl Ready {
    fn schedule(&self, id: i64) {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if q.1.insert(id) {
            q.0.push_back(id);
            self.wake.notify_one();
        }
    }

    async fn next(&self) -> i64 {
        loop {
            {
                let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(id) = q.0.pop_front() {
                    q.1.remove(&id);
                    return id;
                }
            }
            self.wake.notified().await;
        }
    }
}

/// Forwards the updates of the stream's watches, in the order they became ready, each
/// watch's in its own order, until the client is gone.
async fn forward(
    member: Arc<Member>,
    ready: Arc<Ready>,
    forwarded: Arc<Mutex<HashMap<i64, Arc<Forwarded>>>>,
    out: mpsc::Sender<Result<WatchResponse, Status>>,
) {
    loop {
        let id = ready.next().await;
        let Some(w) = forwarded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
        else {
            // Not created yet (scheduled again once it is), or gone.
            continue;
        };
        let forget = || {
            forwarded
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id)
        };
        if w.canceled.load(Ordering::Acquire) {
            forget();
            if out.send(Ok(canceled(&member, id).await)).await.is_err() {
                return;
            }
            continue;
        }
        // A cancel meanwhile stops the watch's updates here (it scheduled the watch again).
        while !w.canceled.load(Ordering::Acquire) {
            let update = match w.updates.try_next() {
                Ok(Some(update)) => update,
                Ok(None) => break,
                // The member let go of the watch (it stops).
                Err(_) => {
                    forget();
                    break;
                }
            };
            let (resp, last) = watch_response(id, update);
            let pieces = match w.fragment {
                Some(limit) => fragments(resp, limit),
                None => vec![resp],
            };
            for piece in pieces {
                if out.send(Ok(piece)).await.is_err() {
                    return;
                }
            }
            if last {
                forget();
                break;
            }
        }
    }
}

/// etcd's answer to a client's cancel of watch `id`.
async fn canceled(member: &Member, id: i64) -> WatchResponse {
    WatchResponse {
        header: Some(member.header_now().await),
        watch_id: id,
        canceled: true,
        ..Default::default()
    }
}

impl WatchStream {
    async fn send(&self, resp: WatchResponse) -> bool {
        self.out.send(Ok(resp)).await.is_ok()
    }

    async fn create(&mut self, mut req: WatchCreateRequest) -> bool {
        let id = if req.watch_id != 0 {
            req.watch_id
        } else {
            while self.watches.contains_key(&self.next_id) {
                self.next_id += 1;
            }
            self.next_id
        };
        let refused = |header, reason: String| WatchResponse {
            header: Some(header),
            watch_id: -1,
            created: true,
            canceled: true,
            cancel_reason: reason,
            ..Default::default()
        };
        if self.watches.contains_key(&id) || id < 0 {
            let header = self.member.header_now().await;
            return self
                .send(refused(header, "mvcc: duplicate watch ID".into()))
                .await;
        }
        let need = [Need::Read(&req.key, &req.range_end)];
        if let Err(e) = self.api.allow(&self.caller, &need).await {
            // As etcd: a watch the user may not read is refused with the reason.
            let header = self.member.header_now().await;
            return self.send(refused(header, e.message().to_string())).await;
        }
        req.watch_id = id;
        let (feed, updates) = crate::stream::channel(WATCH_QUEUE);
        let ready = self.ready.clone();
        updates.on_ready(move || ready.schedule(id));
        let (control, revision) = match self.member.watch_at(&req, feed).await {
            Ok(started) => started,
            Err(e) => {
                let header = self.member.header_now().await;
                return self.send(refused(header, e.message)).await;
            }
        };
        let mut header = self.member.header_now().await;
        header.revision = revision;
        if !self
            .send(WatchResponse {
                header: Some(header),
                watch_id: id,
                created: true,
                ..Default::default()
            })
            .await
        {
            return false;
        }
        if req.watch_id == self.next_id {
            self.next_id += 1;
        }
        // Forwarded only from here on, after `created`; what arrived meanwhile waits.
        let forwarded = Forwarded {
            updates,
            fragment: req.fragment.then_some(self.member.limits.max_request_bytes),
            canceled: AtomicBool::new(false),
        };
        self.forwarded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, Arc::new(forwarded));
        self.ready.schedule(id);
        self.watches.insert(id, control);
        true
    }

    async fn cancel(&mut self, id: i64) -> bool {
        if self.watches.remove(&id).is_none() {
            return true;
        }
        let forwarded = self
            .forwarded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned();
        match forwarded {
            // The forwarder answers, after whatever it is sending for the watch now.
            Some(w) => {
                w.canceled.store(true, Ordering::Release);
                self.ready.schedule(id);
                true
            }
            // It had ended by itself (and said so).
            None => self.send(canceled(&self.member, id).await).await,
        }
    }

    /// Serves the stream's requests. A client that closes its side keeps its watches until
    /// it goes (etcd's `recvLoop` ends without ending the stream): a gateway client sends
    /// its requests as one body, then reads.
    async fn run(
        mut self,
        mut input: impl Stream<Item = Result<WatchRequest, Status>> + Send + Unpin,
    ) {
        loop {
            let req = tokio::select! {
                req = input.next() => req,
                _ = self.out.closed() => break,
            };
            let req = match req {
                Some(Ok(req)) => req,
                Some(Err(_)) => break,
                None => {
                    self.out.closed().await;
                    break;
                }
            };
            let go_on = match req.request_union {
                Some(RequestUnion::CreateRequest(c)) => self.create(c).await,
                Some(RequestUnion::CancelRequest(c)) => self.cancel(c.watch_id).await,
                Some(RequestUnion::ProgressRequest(_)) => {
                    // Answered on each watch's own stream, after what it has delivered.
                    self.watches.values().for_each(|c| c.request_progress());
                    true
                }
                None => true,
            };
            if !go_on {
                break;
            }
        }
        self.forwarder.abort();
        self.forwarded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.watches.clear();
    }
}

/// etcd's `sendFragments`, for a watch created with `fragment`: a response of `limit` bytes
/// or more with several events goes as pieces under `limit` (one event may exceed it alone),
/// each marked `fragment` but the last; the client joins them.
fn fragments(resp: WatchResponse, limit: usize) -> Vec<WatchResponse> {
    use prost::Message;
    if resp.events.len() < 2 || resp.encoded_len() < limit {
        return vec![resp];
    }
    let mut rest = resp.events.into_iter().peekable();
    let base = WatchResponse {
        events: Vec::new(),
        fragment: true,
        ..resp
    };
    let mut out = Vec::new();
    while rest.peek().is_some() {
        let mut piece = base.clone();
        let mut size = piece.encoded_len();
        while let Some(ev) = rest.peek() {
            // An event's share of the response: its bytes plus its field's tag and length.
            let len = ev.encoded_len();
            let add = len + 1 + prost::encoding::encoded_len_varint(len as u64);
            if !piece.events.is_empty() && size + add >= limit {
                break;
            }
            size += add;
            piece.events.extend(rest.next());
        }
        piece.fragment = rest.peek().is_some();
        out.push(piece);
    }
    out
}

/// etcd's response for one update of watch `id`; true when it is the watch's last.
fn watch_response(id: i64, update: WatchUpdate) -> (WatchResponse, bool) {
    let base = WatchResponse {
        watch_id: id,
        ..Default::default()
    };
    match update {
        WatchUpdate::Events { header, events } => (
            WatchResponse {
                header: Some(header),
                events,
                ..base
            },
            false,
        ),
        WatchUpdate::Progress { header } => (
            WatchResponse {
                header: Some(header),
                ..base
            },
            false,
        ),
        // etcd's answer to a compacted watch carries no revision in its header.
        WatchUpdate::Compacted {
            header,
            compact_revision,
        } => (
            WatchResponse {
                header: Some(ResponseHeader {
                    revision: 0,
                    ..header
                }),
                compact_revision,
                canceled: true,
                ..base
            },
            true,
        ),
        WatchUpdate::Canceled { reason } => (
            WatchResponse {
                canceled: true,
                cancel_reason: reason,
                ..base
            },
            true,
        ),
    }
}

#[tonic::async_trait]
impl Watch for Api {
    type WatchStream = BoxStream<WatchResponse>;

    async fn watch(
        &self,
        r: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let caller = Caller::of(&r);
        Ok(Response::new(self.watch_stream(caller, r.into_inner())))
    }
}

impl Api {
    /// A Watch stream serving `input`'s requests for `caller`: the gRPC service's, and the
    /// JSON gateway's.
    pub(super) fn watch_stream(
        &self,
        caller: Caller,
        input: impl Stream<Item = Result<WatchRequest, Status>> + Send + Unpin + 'static,
    ) -> BoxStream<WatchResponse> {
        let (out, rx) = mpsc::channel(16);
        let (ready, forwarded) = (Arc::<Ready>::default(), Arc::<Mutex<_>>::default());
        let forwarder = tokio::spawn(forward(
            self.0.clone(),
            ready.clone(),
            forwarded.clone(),
            out.clone(),
        ));
        let stream = WatchStream {
            member: self.0.clone(),
            api: self.clone(),
            caller,
            out,
            watches: HashMap::new(),
            forwarded,
            ready,
            forwarder,
            next_id: 0,
        };
        tokio::spawn(stream.run(input));
        self.until_stop(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }
}

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
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt};

/// Updates a watch of a gRPC stream may hold before the hub pauses it: with pieces of at
/// most ~64 KiB, a slow client costs at most a couple of MiB per watch.
const WATCH_QUEUE: usize = 32;

/// One Watch stream: its watches by id, each forwarding its member watch's updates.
struct WatchStream {
    member: Arc<Member>,
    /// The stream's service, and who opened it: each watch is checked when created.
    api: Api,
    caller: Caller,
    out: mpsc::Sender<Result<WatchResponse, Status>>,
    watches: HashMap<i64, (Box<dyn WatchControl>, tokio::task::JoinHandle<()>)>,
    /// etcd's next automatic watch id: the smallest unused from here on.
    next_id: i64,
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
        let out = self.out.clone();
        let fragment = req.fragment.then_some(self.member.limits.max_request_bytes);
        let forward = tokio::spawn(async move {
            while let Some(update) = updates.recv().await {
                let (resp, last) = watch_response(id, update);
                let pieces = if let Some(limit) = fragment {
                    fragments(resp, limit)
                } else {
                    vec![resp]
                };
                for piece in pieces {
                    if out.send(Ok(piece)).await.is_err() {
                        return;
                    }
                }
                if last {
                    return;
                }
            }
        });
        self.watches.insert(id, (control, forward));
        true
    }

    async fn cancel(&mut self, id: i64) -> bool {
        if let Some((control, forward)) = self.watches.remove(&id) {
            forward.abort();
            drop(control);
            let header = self.member.header_now().await;
            return self
                .send(WatchResponse {
                    header: Some(header),
                    watch_id: id,
                    canceled: true,
                    ..Default::default()
                })
                .await;
        }
        true
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
                    self.watches
                        .values()
                        .for_each(|(c, _)| c.request_progress());
                    true
                }
                None => true,
            };
            if !go_on {
                break;
            }
        }
        for (_, (_, forward)) in self.watches.drain() {
            forward.abort();
        }
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
        let stream = WatchStream {
            member: self.0.clone(),
            api: self.clone(),
            caller,
            out,
            watches: HashMap::new(),
            next_id: 0,
        };
        tokio::spawn(stream.run(input));
        Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
    }
}

//! etcd's v3 gRPC API on a member's client URL, so `etcdctl`, etcdc's remote client and any
//! other etcd client use the node as they use etcd: a thin adapter from tonic to the member's
//! `trait Etcd`. Errors keep etcd's texts and gRPC codes. What the node does not serve yet
//! (move-leader, downgrade, auth) answers `Unimplemented` with a clear text,
//! never a hang.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::member::Member;
use super::raft::MemberChange;
use crate::api::{deadline_in, Deadline, Etcd, WatchControl, WatchUpdate};
use crate::error::{Error, ErrorKind};
use crate::pb::etcdserverpb::cluster_server::{Cluster, ClusterServer};
use crate::pb::etcdserverpb::kv_server::{Kv, KvServer};
use crate::pb::etcdserverpb::lease_server::{Lease, LeaseServer};
use crate::pb::etcdserverpb::maintenance_server::{Maintenance, MaintenanceServer};
use crate::pb::etcdserverpb::watch_request::RequestUnion;
use crate::pb::etcdserverpb::watch_server::{Watch, WatchServer};
use crate::pb::etcdserverpb::*;

/// How long a call may take on the server (etcd's request timeout is of the same order).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(7);

fn deadline() -> Deadline {
    deadline_in(REQUEST_TIMEOUT)
}

/// etcd's gRPC code for each kind, with etcd's text as the message.
fn status(e: Error) -> Status {
    use tonic::Code;
    let code = match e.kind {
        ErrorKind::InvalidArgument | ErrorKind::TooLarge | ErrorKind::TooManyOps => {
            Code::InvalidArgument
        }
        // etcd's ErrGRPCKeyNotFound (a put with ignore_value or ignore_lease on a missing
        // key) is InvalidArgument; its other "not found" errors are NotFound.
        ErrorKind::NotFound if e.message == "etcdserver: key not found" => Code::InvalidArgument,
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::Compacted | ErrorKind::FutureRevision => Code::OutOfRange,
        ErrorKind::FailedPrecondition | ErrorKind::CompareFailed => Code::FailedPrecondition,
        ErrorKind::Unavailable | ErrorKind::NoLeader | ErrorKind::Timeout => Code::Unavailable,
        ErrorKind::NoSpace | ErrorKind::TooManyRequests => Code::ResourceExhausted,
        ErrorKind::PermissionDenied => Code::PermissionDenied,
        ErrorKind::Auth => Code::Unauthenticated,
        ErrorKind::Unsupported => Code::Unimplemented,
        ErrorKind::DataLoss => Code::DataLoss,
        ErrorKind::Canceled | ErrorKind::Closed => Code::Cancelled,
        ErrorKind::Internal => Code::Internal,
    };
    Status::new(code, e.message)
}

fn unimplemented(what: &str) -> Status {
    Status::unimplemented(format!("etcdc-node does not serve {what} yet"))
}

/// The member behind every service.
#[derive(Clone)]
pub struct Api(pub Arc<Member>);

impl Api {
    async fn change_members(
        &self,
        change: MemberChange,
    ) -> Result<Vec<crate::pb::etcdserverpb::Member>, Status> {
        self.0
            .change_members(change, deadline())
            .await
            .map_err(status)
    }

    /// The header of a cluster call (member add, remove, promote): etcd's has no revision.
    async fn cluster_header(&self) -> Result<Option<ResponseHeader>, Status> {
        Ok(self
            .header()
            .await?
            .map(|h| ResponseHeader { revision: 0, ..h }))
    }

    /// A response header at this member's current revision.
    async fn header(&self) -> Result<Option<ResponseHeader>, Status> {
        Ok(self
            .0
            .status(None, deadline())
            .await
            .map_err(status)?
            .header)
    }
}

#[tonic::async_trait]
impl Kv for Api {
    async fn range(&self, r: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        self.0
            .range(r.into_inner(), deadline())
            .await
            .map(Response::new)
            .map_err(status)
    }
    async fn put(&self, r: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        self.0
            .put(r.into_inner(), deadline())
            .await
            .map(Response::new)
            .map_err(status)
    }
    async fn delete_range(
        &self,
        r: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        self.0
            .delete_range(r.into_inner(), deadline())
            .await
            .map(Response::new)
            .map_err(status)
    }
    async fn txn(&self, r: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        self.0
            .txn(r.into_inner(), deadline())
            .await
            .map(Response::new)
            .map_err(status)
    }
    async fn compact(
        &self,
        r: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        self.0
            .compact(r.into_inner(), deadline())
            .await
            .map(Response::new)
            .map_err(status)
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Lease for Api {
    async fn lease_grant(
        &self,
        r: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        self.0
            .lease_grant(r.into_inner(), deadline())
            .await
            .map(Response::new)
            .map_err(status)
    }
    async fn lease_revoke(
        &self,
        r: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        self.0
            .lease_revoke(r.into_inner(), deadline())
            .await
            .map(Response::new)
            .map_err(status)
    }

    type LeaseKeepAliveStream = BoxStream<LeaseKeepAliveResponse>;

    /// Each refresh moves the lease's deadline on the leader and is answered with its TTL,
    /// or TTL 0 once it is gone (etcd's answer).
    async fn lease_keep_alive(
        &self,
        r: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let member = self.0.clone();
        let answers = r.into_inner().then(move |req| {
            let member = member.clone();
            async move {
                let id = req?.id;
                let ttl = member.lease_keep_alive_once(id).await.map_err(status)?;
                let header = member
                    .status(None, deadline())
                    .await
                    .map_err(status)?
                    .header;
                Ok(LeaseKeepAliveResponse { header, id, ttl })
            }
        });
        Ok(Response::new(Box::pin(answers)))
    }

    async fn lease_time_to_live(
        &self,
        r: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        self.0
            .lease_time_to_live(r.into_inner(), deadline())
            .await
            .map(Response::new)
            .map_err(status)
    }
    async fn lease_leases(
        &self,
        _r: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        self.0
            .lease_leases(deadline())
            .await
            .map(Response::new)
            .map_err(status)
    }
}

#[tonic::async_trait]
impl Cluster for Api {
    async fn member_add(
        &self,
        r: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        let r = r.into_inner();
        let change = MemberChange::Add {
            peer_urls: r.peer_ur_ls.clone(),
            learner: r.is_learner,
        };
        let members = self.change_members(change).await?;
        let member = members
            .iter()
            .find(|m| m.peer_ur_ls.iter().any(|u| r.peer_ur_ls.contains(u)))
            .cloned()
            .map(|m| crate::pb::etcdserverpb::Member {
                is_learner: r.is_learner,
                ..m
            });
        Ok(Response::new(MemberAddResponse {
            header: self.cluster_header().await?,
            member,
            members,
        }))
    }
    async fn member_remove(
        &self,
        r: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        let members = self
            .change_members(MemberChange::Remove(r.into_inner().id))
            .await?;
        Ok(Response::new(MemberRemoveResponse {
            header: self.cluster_header().await?,
            members,
        }))
    }
    async fn member_update(
        &self,
        _r: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        Err(unimplemented("member update"))
    }
    async fn member_list(
        &self,
        _r: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        self.0
            .member_list(deadline())
            .await
            .map(Response::new)
            .map_err(status)
    }
    async fn member_promote(
        &self,
        r: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        let members = self
            .change_members(MemberChange::Promote(r.into_inner().id))
            .await?;
        Ok(Response::new(MemberPromoteResponse {
            header: self.cluster_header().await?,
            members,
        }))
    }
}

#[tonic::async_trait]
impl Maintenance for Api {
    async fn alarm(&self, r: Request<AlarmRequest>) -> Result<Response<AlarmResponse>, Status> {
        self.0
            .alarm(r.into_inner(), deadline())
            .await
            .map(Response::new)
            .map_err(status)
    }
    async fn status(&self, _r: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        self.0
            .status(None, deadline())
            .await
            .map(Response::new)
            .map_err(status)
    }
    /// The store lives in memory with snapshot files: there is nothing to defragment.
    async fn defragment(
        &self,
        _r: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        Ok(Response::new(DefragmentResponse {
            header: self.header().await?,
        }))
    }
    /// etcd hashes its whole backend file here; the node's store has no file to hash, so
    /// this is HashKV of the current revision.
    async fn hash(&self, _r: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        let r = self.0.hash_kv(0).await.map_err(status)?;
        Ok(Response::new(HashResponse {
            header: r.header,
            hash: r.hash,
        }))
    }
    async fn hash_kv(&self, r: Request<HashKvRequest>) -> Result<Response<HashKvResponse>, Status> {
        self.0
            .hash_kv(r.into_inner().revision)
            .await
            .map(Response::new)
            .map_err(status)
    }

    type SnapshotStream = BoxStream<SnapshotResponse>;

    /// The store as a snapshot file of the node's own format (not etcd's bbolt file):
    /// `etcdctl snapshot save` stores it; `etcdc-node --restore-snapshot` starts a new member
    /// (or cluster) from it. Sent in 32 KiB pieces, as etcd does.
    async fn snapshot(
        &self,
        _r: Request<SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        const PIECE: usize = 32 * 1024;
        let header = self.header().await?;
        let backup = self.0.backup().await.map_err(status)?;
        // Read from its file as the client takes it: a few pieces ahead, never all of it.
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::task::spawn_blocking(move || {
            let sent = backup.send(PIECE, |blob, remaining_bytes| {
                let piece = SnapshotResponse {
                    header,
                    remaining_bytes,
                    blob,
                    version: super::ETCD_VERSION.into(),
                };
                tx.blocking_send(Ok(piece)).is_ok()
            });
            if let Err(e) = sent {
                let _ = tx.blocking_send(Err(status(e)));
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
    async fn move_leader(
        &self,
        _r: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        Err(unimplemented("move-leader"))
    }
    async fn downgrade(
        &self,
        _r: Request<DowngradeRequest>,
    ) -> Result<Response<DowngradeResponse>, Status> {
        Err(unimplemented("downgrade"))
    }
}

/// Updates a watch of a gRPC stream may hold before the hub pauses it: with pieces of at
/// most ~64 KiB, a slow client costs at most a couple of MiB per watch.
const WATCH_QUEUE: usize = 32;

/// One Watch stream: its watches by id, each forwarding its member watch's updates.
struct WatchStream {
    member: Arc<Member>,
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
        let fragment = req.fragment;
        let forward = tokio::spawn(async move {
            while let Some(update) = updates.recv().await {
                let (resp, last) = watch_response(id, update);
                let pieces = if fragment {
                    fragments(resp, super::MAX_REQUEST_BYTES)
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

    async fn run(mut self, mut input: Streaming<WatchRequest>) {
        loop {
            let req = tokio::select! {
                req = input.message() => req,
                _ = self.out.closed() => break,
            };
            let Ok(Some(req)) = req else { break };
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
        WatchUpdate::Compacted {
            header,
            compact_revision,
        } => (
            WatchResponse {
                header: Some(header),
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
        let (out, rx) = mpsc::channel(16);
        let stream = WatchStream {
            member: self.0.clone(),
            out,
            watches: HashMap::new(),
            next_id: 0,
        };
        tokio::spawn(stream.run(r.into_inner()));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// Serves etcd's API for `member` on `listener` until `shutdown` resolves: the gRPC services
/// and, over HTTP/1.1 as etcd does, `GET /health`, `GET /version` and `GET /metrics`.
pub async fn serve(
    member: Arc<Member>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> crate::error::Result<()> {
    let api = Api(member.clone());
    let mut routes =
        tonic::service::Routes::new(KvServer::new(api.clone()).max_decoding_message_size(4 << 20))
            .add_service(LeaseServer::new(api.clone()))
            .add_service(ClusterServer::new(api.clone()))
            .add_service(MaintenanceServer::new(api.clone()))
            .add_service(WatchServer::new(api));
    let health_member = member.clone();
    let metrics_member = member.clone();
    let router = std::mem::take(routes.axum_router_mut())
        .route(
            "/health",
            axum::routing::get(move || health(health_member.clone())),
        )
        .route(
            "/metrics",
            axum::routing::get(move || {
                let text = metrics_member.metrics_text();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        text,
                    )
                }
            }),
        )
        .route(
            "/version",
            axum::routing::get(|| async {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    format!(
                        "{{\"etcdserver\":\"{v}\",\"etcdcluster\":\"{v}\"}}",
                        v = super::ETCD_VERSION
                    ),
                )
            }),
        );
    *routes.axum_router_mut() = router;
    tonic::transport::Server::builder()
        .accept_http1(true)
        .add_routes(routes)
        .serve_with_incoming_shutdown(super::nodelay(listener), shutdown)
        .await
        .map_err(|e| Error::new(ErrorKind::Internal, format!("the gRPC server stopped: {e}")))
}

/// etcd's `/health`: true when the member has a leader and a linearizable read through it
/// succeeds within a second; 503 and false otherwise.
async fn health(member: Arc<Member>) -> impl axum::response::IntoResponse {
    use axum::http::StatusCode;
    let read = member.range(
        RangeRequest {
            key: b"health".to_vec(),
            ..Default::default()
        },
        deadline_in(Duration::from_secs(1)),
    );
    let (code, body) = match (member.leader(), read.await) {
        (Some(_), Ok(_)) => (StatusCode::OK, r#"{"health":"true"}"#),
        _ => (StatusCode::SERVICE_UNAVAILABLE, r#"{"health":"false"}"#),
    };
    (
        code,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
}

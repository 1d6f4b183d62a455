//! etcd's v3 gRPC API on a member's client URL, so `etcdctl`, etcdc's remote client and any
//! other etcd client use the node as they use etcd: a thin adapter from tonic to the member's
//! `trait Etcd`. Errors keep etcd's texts and gRPC codes. What the node does not serve yet
//! (downgrade) answers `Unimplemented` with a clear text,
//! never a hang. One file per service, as etcd's `v3rpc`: `kv`, `lease`, `cluster`,
//! `maintenance`, `watch`, `auth`, and etcd's `lock` and `election` services (on the
//! recipes); `gateway` serves them all as etcd's JSON gateway; `authority` takes Go's URL
//! authorities; this file holds what they share (the permission check
//! every request passes when authentication is on) and the server itself.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio_stream::Stream;
use tonic::Status;

use super::member::Member;
use crate::api::{deadline_in, Deadline, Etcd};
use crate::error::{Error, ErrorKind};
use crate::pb::etcdserverpb::auth_server::AuthServer;
use crate::pb::etcdserverpb::cluster_server::ClusterServer;
use crate::pb::etcdserverpb::kv_server::KvServer;
use crate::pb::etcdserverpb::lease_server::LeaseServer;
use crate::pb::etcdserverpb::maintenance_server::MaintenanceServer;
use crate::pb::etcdserverpb::watch_server::WatchServer;
use crate::pb::etcdserverpb::*;
use crate::pb::v3electionpb::election_server::ElectionServer;
use crate::pb::v3lockpb::lock_server::LockServer;

mod auth;
mod authority;
mod cluster;
mod election;
mod gateway;
mod kv;
mod lease;
mod lock;
mod maintenance;
mod sever;
mod watch;

pub(crate) use sever::Until;

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
        // etcd's ErrGRPCUnhealthy (a member removal the reachable members could not
        // survive, --strict-reconfig-check) is Unavailable.
        ErrorKind::FailedPrecondition if e.message == "etcdserver: unhealthy cluster" => {
            Code::Unavailable
        }
        ErrorKind::FailedPrecondition | ErrorKind::CompareFailed => Code::FailedPrecondition,
        ErrorKind::Unavailable | ErrorKind::NoLeader | ErrorKind::Timeout => Code::Unavailable,
        ErrorKind::NoSpace | ErrorKind::TooManyRequests => Code::ResourceExhausted,
        ErrorKind::PermissionDenied => Code::PermissionDenied,
        // etcd's ErrGRPCInvalidAuthToken is Unauthenticated; its other auth errors (user
        // name empty, authentication failed, old auth revision) are InvalidArgument.
        ErrorKind::Auth if e.message.ends_with("invalid auth token") => Code::Unauthenticated,
        ErrorKind::Auth => Code::InvalidArgument,
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

/// What a request needs of its caller when authentication is on.
pub(super) enum Need<'a> {
    /// Any user (a valid token or certificate).
    User,
    /// Reading or writing the keys `[key, range_end)` (etcd's range conventions).
    Read(&'a [u8], &'a [u8]),
    Write(&'a [u8], &'a [u8]),
    /// The root role.
    Admin,
}

impl Need<'_> {
    /// What a transaction needs: its compares read, its operations read or write, nested
    /// transactions included.
    fn of_txn<'a>(t: &'a TxnRequest, out: &mut Vec<Need<'a>>) {
        use request_op::Request as Op;
        for c in &t.compare {
            out.push(Need::Read(&c.key, &c.range_end));
        }
        for op in t.success.iter().chain(&t.failure) {
            match &op.request {
                Some(Op::RequestRange(r)) => out.push(Need::Read(&r.key, &r.range_end)),
                Some(Op::RequestPut(p)) => {
                    out.push(Need::Write(&p.key, &[]));
                    if p.prev_kv {
                        out.push(Need::Read(&p.key, &[]));
                    }
                }
                Some(Op::RequestDeleteRange(d)) => {
                    out.push(Need::Write(&d.key, &d.range_end));
                    if d.prev_kv {
                        out.push(Need::Read(&d.key, &d.range_end));
                    }
                }
                Some(Op::RequestTxn(t)) => Need::of_txn(t, out),
                None => {}
            }
        }
    }
}

/// The user a request comes from: its token, else (with `--client-cert-auth`) its client
/// certificate's common name.
pub(super) struct Caller {
    token: Option<String>,
    common_name: Option<String>,
}

impl Caller {
    pub(super) fn of<T>(r: &tonic::Request<T>) -> Caller {
        Caller {
            // etcd reads `token`, else `authorization` (what grpc-gateway forwards).
            token: ["token", "authorization"]
                .iter()
                .find_map(|key| r.metadata().get(*key))
                .and_then(|t| t.to_str().ok())
                .map(str::to_string),
            common_name: r
                .peer_certs()
                .and_then(|certs| certs.first().and_then(|c| crate::tls::common_name(c))),
        }
    }
}

/// A request allowed with authentication on: its user, and the auth store's revision the
/// permissions were checked at (a write carries it into the log: `Command::Checked`).
pub(super) struct Checked {
    pub user: String,
    pub revision: u64,
}

/// The auth revision a write was checked at, if it was.
pub(super) fn auth_revision(checked: &Option<Checked>) -> Option<u64> {
    checked.as_ref().map(|c| c.revision)
}

impl Api {
    /// Checks `needs` for `caller` against the auth store as this member applied it; with
    /// authentication off, everything is allowed. Returns who was checked (None: auth is off). A
    /// refusal may come from this member being behind: a token another member just issued
    /// (tokens are given out through the log), a user, role or permission just granted. It
    /// is looked at again once this member applied everything the leader had committed, so
    /// what the cluster acknowledged holds on every member (etcd checks after such a
    /// barrier). The barrier is paid only by refusals; without a leader the refusal stands.
    pub(super) async fn allow(
        &self,
        caller: &Caller,
        needs: &[Need<'_>],
    ) -> Result<Option<Checked>, Status> {
        if !self.0.auth_enabled() {
            return Ok(None);
        }
        match self.check(caller, needs).await {
            Err(e) if self.may_be_behind(caller, &e) => {
                if self.0.read_barrier(deadline()).await.is_err() {
                    return Err(status(e));
                }
                self.check(caller, needs).await.map_err(status)
            }
            other => other.map_err(status),
        }
    }

    /// Whether refusal `e` of `caller` could turn around on an up-to-date auth store.
    fn may_be_behind(&self, caller: &Caller, e: &crate::error::Error) -> bool {
        use crate::node::auth;
        e.message == auth::denied().message
            // (A JWT carries all it needs: one invalid here is invalid everywhere.)
            || (caller.token.is_some()
                && self.0.auth_settings.jwt.is_none()
                && e.message == auth::invalid_token().message)
    }

    async fn check(
        &self,
        caller: &Caller,
        needs: &[Need<'_>],
    ) -> crate::error::Result<Option<Checked>> {
        let ttl = self.0.auth_settings.token_ttl;
        let jwt = self.0.auth_settings.jwt.as_deref();
        self.0
            .auth_read(None, |a| {
                if !a.enabled {
                    return Ok(None);
                }
                let user = match (&caller.token, &caller.common_name, jwt) {
                    (Some(token), _, Some(jwt)) => {
                        let (user, revision) = jwt
                            .verify(token)
                            .map_err(|_| crate::node::auth::invalid_token())?;
                        // As etcd: a token from before users or roles last changed.
                        if revision < a.revision {
                            return Err(crate::node::auth::old_revision());
                        }
                        user
                    }
                    (Some(token), _, None) => a.tokens.user(token, ttl)?,
                    (None, Some(cn), _) => cn.clone(),
                    (None, None, _) => return Err(crate::node::auth::user_empty()),
                };
                for need in needs {
                    match need {
                        Need::User => {
                            if !a.users.contains_key(&user) {
                                return Err(crate::node::auth::denied());
                            }
                        }
                        Need::Read(key, end) => a.check(&user, key, end, false)?,
                        Need::Write(key, end) => a.check(&user, key, end, true)?,
                        Need::Admin => {
                            if !a.is_root(&user) {
                                return Err(crate::node::auth::denied());
                            }
                        }
                    }
                }
                Ok(Some(Checked {
                    user,
                    revision: a.revision,
                }))
            })
            .await
            .and_then(|r| r)
    }

    /// `allow` for a request `r` needing `needs`.
    pub(super) async fn allow_request<T>(
        &self,
        r: &tonic::Request<T>,
        needs: &[Need<'_>],
    ) -> Result<Option<Checked>, Status> {
        self.allow(&Caller::of(r), needs).await
    }

    /// `allow_request` for a read. With authentication on, a `linearizable` one is confirmed
    /// (a read barrier) before it is checked, as etcd does, so the check sees every grant and
    /// revocation the cluster acknowledged before the read (and needs no second barrier on a
    /// refusal). True when it was confirmed: the read needs no other round.
    pub(super) async fn allow_read<T>(
        &self,
        r: &tonic::Request<T>,
        needs: &[Need<'_>],
        linearizable: bool,
    ) -> Result<bool, Status> {
        if !linearizable || !self.0.auth_enabled() {
            self.allow_request(r, needs).await?;
            return Ok(false);
        }
        self.0.read_barrier(deadline()).await.map_err(status)?;
        self.check(&Caller::of(r), needs).await.map_err(status)?;
        Ok(true)
    }
}

/// A server stream of a service.
pub(super) type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The member behind every service, and the stop of the server serving them.
#[derive(Clone)]
pub struct Api(pub Arc<Member>, sever::Stopping);

impl Api {
    /// `stream` until the server stops, then etcd's "server stopped" (Unavailable): a
    /// watch, keep-alive or observation never ends by itself, and would hold the stop for
    /// its grace; so told, the client moves to another member at once.
    fn until_stop<T: Unpin + Send + 'static>(&self, stream: BoxStream<T>) -> BoxStream<T> {
        let stopped = Status::unavailable("etcdserver: server stopped");
        Box::pin(Until::new(stream, self.1.clone(), Some(Err(stopped))))
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

/// The HTTP/2 settings of the client port (etcd's flags and defaults).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerSettings {
    /// `--grpc-keepalive-interval`: a ping after this long without activity (2 h).
    pub keepalive_interval: Duration,
    /// `--grpc-keepalive-timeout`: the connection is closed when the ping is not answered
    /// within this (20 s).
    pub keepalive_timeout: Duration,
    /// `--max-concurrent-streams` per connection (unlimited: 2^32 - 1).
    pub max_concurrent_streams: u32,
    /// `--enable-grpc-gateway`: the JSON gateway (`POST /v3/...`) on the client URLs (on).
    pub gateway: bool,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            keepalive_interval: Duration::from_secs(2 * 3600),
            keepalive_timeout: Duration::from_secs(20),
            max_concurrent_streams: u32::MAX,
            gateway: true,
        }
    }
}

/// What etcd allows a gRPC message beyond `--max-request-bytes` (its `grpcOverheadBytes`):
/// a request between the two is refused with "request is too large", a larger one by gRPC.
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// etcd's HTTP endpoints over HTTP/1.1: `GET /health`, `GET /metrics` and `GET /version`;
/// and etcdc's `POST /etcdc/promote` (`node::mirror::promote`).
fn http_routes(member: Arc<Member>) -> axum::Router {
    let health_member = member.clone();
    let promote_member = member.clone();
    axum::Router::new()
        .route(
            "/etcdc/promote",
            axum::routing::post(move || {
                let member = promote_member.clone();
                async move {
                    use axum::http::StatusCode;
                    let (code, body) = match crate::node::mirror::promote(&member).await {
                        Ok(revision) => {
                            (StatusCode::OK, format!("{{\"revision\":\"{revision}\"}}"))
                        }
                        Err(e) => {
                            let s = status(e);
                            let m = serde_json::Value::from(s.message()).to_string();
                            (
                                StatusCode::PRECONDITION_FAILED,
                                format!("{{\"error\":{m},\"code\":{}}}", s.code() as i32),
                            )
                        }
                    };
                    (
                        code,
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        body,
                    )
                }
            }),
        )
        .route(
            "/health",
            axum::routing::get(move |axum::extract::RawQuery(query)| {
                health(health_member.clone(), query)
            }),
        )
        .route(
            "/metrics",
            axum::routing::get(move || {
                let member = member.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        member.metrics_text().await,
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
                        "{{\"etcdserver\":\"{}\",\"etcdcluster\":\"{}\"}}",
                        super::ETCD_VERSION,
                        super::ETCD_CLUSTER_VERSION
                    ),
                )
            }),
        )
}

/// How long a stopping member's client server waits for its connections to close before it
/// cuts them: calls in flight are answered within it; a client that does not read holds its
/// connection open.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Serves etcd's API for `member` on the connections of `incoming` until `shutdown`
/// resolves and its connections have closed (or been cut a grace later): the gRPC services
/// and, over HTTP/1.1 as etcd does, `http_routes` and the JSON gateway.
pub async fn serve<IO>(
    member: Arc<Member>,
    settings: ServerSettings,
    incoming: impl tokio_stream::Stream<Item = std::io::Result<IO>> + Send,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> crate::error::Result<()>
where
    IO: super::Connection,
{
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let api = Api(member.clone(), stopping);
    let mut http = http_routes(member.clone());
    if settings.gateway {
        http = http.merge(gateway::routes(
            api.clone(),
            member.limits.max_request_bytes,
            settings.max_concurrent_streams,
        ));
    }
    let max = member.limits.max_request_bytes + GRPC_OVERHEAD_BYTES;
    let mut routes =
        tonic::service::Routes::new(KvServer::new(api.clone()).max_decoding_message_size(max))
            .add_service(LeaseServer::new(api.clone()).max_decoding_message_size(max))
            .add_service(ClusterServer::new(api.clone()).max_decoding_message_size(max))
            .add_service(MaintenanceServer::new(api.clone()).max_decoding_message_size(max))
            .add_service(AuthServer::new(api.clone()).max_decoding_message_size(max))
            .add_service(LockServer::new(api.clone()).max_decoding_message_size(max))
            .add_service(ElectionServer::new(api.clone()).max_decoding_message_size(max))
            .add_service(WatchServer::new(api).max_decoding_message_size(max));
    let counters = member.grpc_counters.clone();
    let router =
        std::mem::take(routes.axum_router_mut())
            .merge(http)
            .layer(axum::middleware::from_fn(move |req, next| {
                counters.clone().observe(req, next)
            }));
    *routes.axum_router_mut() = router;
    // What a graceful stop has not closed within its grace is cut (sever.rs).
    let connections = Arc::new(sever::Connections::default());
    let cut = connections.clone();
    let shutdown = async move {
        shutdown.await;
        stop.send_replace(true);
        tokio::spawn(async move {
            tokio::time::sleep(STOP_GRACE).await;
            cut.cut();
        });
    };
    let incoming = tokio_stream::StreamExt::map(incoming, move |conn| {
        conn.map(|io| authority::Authority::new(connections.track(io)))
    });
    tonic::transport::Server::builder()
        .accept_http1(true)
        .http2_keepalive_interval(Some(settings.keepalive_interval))
        .http2_keepalive_timeout(Some(settings.keepalive_timeout))
        .max_concurrent_streams(Some(settings.max_concurrent_streams))
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| Error::new(ErrorKind::Internal, format!("the gRPC server stopped: {e}")))
}

/// `--listen-metrics-urls`: `http_routes` alone, over HTTP/1.1 and HTTP/2.
pub async fn serve_metrics<IO>(
    member: Arc<Member>,
    incoming: impl tokio_stream::Stream<Item = std::io::Result<IO>> + Send,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> crate::error::Result<()>
where
    IO: super::Connection,
{
    tonic::transport::Server::builder()
        .accept_http1(true)
        .add_routes(tonic::service::Routes::from(http_routes(member)))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| {
            Error::new(
                ErrorKind::Internal,
                format!("the metrics server stopped: {e}"),
            )
        })
}

/// etcd's `/health`: true when no alarm is raised (but those named by `?exclude=NOSPACE`
/// or `CORRUPT`), the member has a leader and a linearizable read through it succeeds
/// within a second; 503 and false otherwise.
async fn health(member: Arc<Member>, query: Option<String>) -> impl axum::response::IntoResponse {
    use crate::pb::etcdserverpb::AlarmType;
    use axum::http::StatusCode;
    let query = query.unwrap_or_default();
    let excluded: Vec<&str> = query
        .split('&')
        .filter_map(|p| p.strip_prefix("exclude="))
        .collect();
    let alarmed = member
        .raised_alarms()
        .await
        .into_iter()
        .any(|a| AlarmType::try_from(a).map_or(true, |a| !excluded.contains(&a.as_str_name())));
    let healthy = !alarmed
        && member.leader().is_some()
        && member
            .range(
                RangeRequest {
                    key: b"health".to_vec(),
                    ..Default::default()
                },
                deadline_in(Duration::from_secs(1)),
            )
            .await
            .is_ok();
    let (code, body) = if healthy {
        (StatusCode::OK, r#"{"health":"true"}"#)
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, r#"{"health":"false"}"#)
    };
    (
        code,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
}

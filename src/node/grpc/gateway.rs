//! etcd's gRPC gateway on the client URL: every service's calls as `POST /v3/...` (and the
//! `/v3beta/...` aliases etcd 3.4 keeps) with JSON bodies, as grpc-gateway serves them for
//! etcd — proto field names, 64-bit integers as strings, bytes as base64, enums by name,
//! default values left out (`pbjson`'s serde code for the protos, `build.rs`). This is how
//! curl and libcurl users speak v3 without gRPC.
//!
//! Each request is decoded and handed to the same service method the gRPC server calls,
//! in-process, with the `Authorization` header as the token and the connection's details
//! (a TLS client certificate) as gRPC would see them: every check and every error is the
//! gRPC API's. Errors are grpc-gateway's body (`{"error", "message", "code"}`) with its
//! HTTP status for the gRPC code. Streams (`/v3/watch`, `/v3/lease/keepalive`,
//! `/v3/election/observe`, `/v3/maintenance/snapshot`) answer one JSON object per line,
//! `{"result": ...}` or, at the end, `{"error": ...}`; a watch stream reads its requests
//! from the body as they come and, as on etcd, lives on after the body ends, until the
//! client goes.

use std::future::Future;

use axum::body::{Body, Bytes};
use axum::http::{header, StatusCode};
use axum::response::Response;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_stream::StreamExt;
use tonic::{Code, Status};

use super::{Api, BoxStream, Caller};
use crate::pb::etcdserverpb::auth_server::Auth;
use crate::pb::etcdserverpb::cluster_server::Cluster;
use crate::pb::etcdserverpb::kv_server::Kv;
use crate::pb::etcdserverpb::lease_server::Lease;
use crate::pb::etcdserverpb::maintenance_server::Maintenance;
use crate::pb::v3electionpb::election_server::Election;
use crate::pb::v3lockpb::lock_server::Lock;

/// grpc-gateway's HTTP status for a gRPC code (`runtime.HTTPStatusFromCode`).
fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn respond(code: StatusCode, body: impl Into<Body>) -> Response {
    let mut r = Response::new(body.into());
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

/// A JSON string literal.
fn quoted(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// grpc-gateway's error body for a failed call.
fn error(s: &Status) -> Response {
    let m = quoted(s.message());
    respond(
        http_status(s.code()),
        format!(
            "{{\"error\":{m},\"message\":{m},\"code\":{}}}",
            s.code() as i32
        ),
    )
}

fn encoded<T: Serialize>(msg: &T) -> Result<String, Status> {
    serde_json::to_string(msg).map_err(|e| Status::internal(format!("cannot encode JSON: {e}")))
}

/// One line of a stream's answer: `{"result": ...}`, or the error that ends it.
fn chunk<T: Serialize>(item: Result<T, Status>) -> (String, Option<Code>) {
    let item = item.and_then(|m| encoded(&m));
    match item {
        Ok(json) => (format!("{{\"result\":{json}}}\n"), None),
        Err(s) => {
            let http = http_status(s.code());
            let line = format!(
                "{{\"error\":{{\"grpc_code\":{},\"http_code\":{},\"message\":{},\"http_status\":{}}}}}\n",
                s.code() as i32,
                http.as_u16(),
                quoted(s.message()),
                quoted(http.canonical_reason().unwrap_or_default()),
            );
            (line, Some(s.code()))
        }
    }
}

/// A request's message: the first JSON value of the body; an empty body is the default
/// message (grpc-gateway's decoder takes an empty body as EOF).
fn decode<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, Status> {
    let mut values = serde_json::Deserializer::from_slice(body).into_iter::<T>();
    match values.next() {
        None => Ok(T::default()),
        Some(Ok(msg)) => Ok(msg),
        // Go's decoder says this of a cut body.
        Some(Err(e)) if e.is_eof() => Err(Status::invalid_argument("unexpected EOF")),
        Some(Err(e)) => Err(Status::invalid_argument(e.to_string())),
    }
}

/// The gRPC request a service method takes: the message, the token of the `Authorization`
/// header (etcd reads it as gRPC's `authorization` metadata) and the connection's details.
fn grpc_request<T>(parts: axum::http::request::Parts, msg: T) -> tonic::Request<T> {
    let mut metadata = tonic::metadata::MetadataMap::new();
    if let Some(token) = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| tonic::metadata::MetadataValue::try_from(v.as_bytes()).ok())
    {
        metadata.insert("token", token);
    }
    tonic::Request::from_parts(metadata, parts.extensions, msg)
}

/// How much of a body is read: a message at `--max-request-bytes` and its base64.
#[derive(Clone, Copy)]
struct Limit(usize);

async fn body_of(
    req: axum::extract::Request,
    limit: Limit,
) -> Result<(axum::http::request::Parts, Bytes), Status> {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, limit.0)
        .await
        .map_err(|e| Status::invalid_argument(format!("cannot read the request: {e}")))?;
    Ok((parts, bytes))
}

/// A unary call: the body's message to `call`, its answer as JSON.
async fn unary<Req, Resp, F, Fut>(req: axum::extract::Request, limit: Limit, call: F) -> Response
where
    Req: DeserializeOwned + Default,
    Resp: Serialize,
    F: FnOnce(tonic::Request<Req>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
{
    let answer = async {
        let (parts, body) = body_of(req, limit).await?;
        let msg = decode(&body)?;
        let resp = call(grpc_request(parts, msg)).await?;
        encoded(resp.get_ref())
    };
    match answer.await {
        Ok(json) => respond(StatusCode::OK, json),
        Err(s) => error(&s),
    }
}

/// A stream's answer: one line per message, the HTTP status given by the first (as
/// grpc-gateway writes its header with the first chunk), ended by the first error.
async fn streamed<T: Serialize + Send + 'static>(stream: Result<BoxStream<T>, Status>) -> Response {
    let mut stream = match stream {
        Ok(stream) => stream,
        Err(s) => return error(&s),
    };
    let (first, failed) = match stream.next().await {
        Some(item) => chunk(item),
        None => return respond(StatusCode::OK, Body::empty()),
    };
    if let Some(code) = failed {
        return respond(http_status(code), first);
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::spawn(async move {
        if tx.send(Ok(first.into())).await.is_err() {
            return;
        }
        loop {
            // A client that went away ends the stream (and so its watches) at once, not at
            // the next message.
            let item = tokio::select! {
                item = stream.next() => item,
                _ = tx.closed() => return,
            };
            let Some(item) = item else { return };
            let (line, failed) = chunk(item);
            if tx.send(Ok(line.into())).await.is_err() || failed.is_some() {
                return;
            }
        }
    });
    respond(
        StatusCode::OK,
        Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
}

/// The messages of a body, decoded as they arrive (JSON values one after another); the
/// input ends with the body or at the first value that does not decode, as grpc-gateway's
/// sending loop does.
fn messages<T: DeserializeOwned + Send + 'static>(
    body: Body,
) -> tokio_stream::wrappers::ReceiverStream<Result<T, Status>> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        let mut data = body.into_data_stream();
        let mut buf = Vec::new();
        while let Some(Ok(piece)) = data.next().await {
            buf.extend_from_slice(&piece);
            let mut values = serde_json::Deserializer::from_slice(&buf).into_iter::<T>();
            let mut ready = Vec::new();
            let mut broken = false;
            for value in values.by_ref() {
                match value {
                    Ok(msg) => ready.push(msg),
                    Err(e) => {
                        broken = !e.is_eof();
                        break;
                    }
                }
            }
            let used = values.byte_offset();
            buf.drain(..used);
            for msg in ready {
                if tx.send(Ok(msg)).await.is_err() {
                    return;
                }
            }
            if broken {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// `POST /v3/...` for a unary method of a service implemented by `Api`.
macro_rules! unary {
    ($api:expr, $limit:expr, $service:ident :: $method:ident) => {{
        let (api, limit) = ($api.clone(), $limit);
        axum::routing::post(move |req: axum::extract::Request| {
            let api = api.clone();
            async move {
                unary(req, limit, move |r| async move {
                    <Api as $service>::$method(&api, r).await
                })
                .await
            }
        })
    }};
}

/// `POST /v3/...` for a method that answers a stream of messages.
macro_rules! server_stream {
    ($api:expr, $limit:expr, $service:ident :: $method:ident) => {{
        let (api, limit) = ($api.clone(), $limit);
        axum::routing::post(move |req: axum::extract::Request| {
            let api = api.clone();
            async move {
                let call = async {
                    let (parts, body) = body_of(req, limit).await?;
                    let r = grpc_request(parts, decode(&body)?);
                    <Api as $service>::$method(&api, r)
                        .await
                        .map(|r| r.into_inner())
                };
                streamed(call.await).await
            }
        })
    }};
}

/// The gateway's routes for `api`, with bodies up to `max_request` bytes of message.
/// `max_streams`: `--max-concurrent-streams`. etcd's gateway is one gRPC client of its
/// server, so its calls in progress (a watch or a keep-alive until it ends) share that
/// limit, and a call beyond it waits for one to end; here they hold one of as many permits.
pub(super) fn routes(api: Api, max_request: usize, max_streams: u32) -> axum::Router {
    // A message's bytes travel as base64 (4/3), with JSON around them.
    let limit = Limit(max_request * 2 + 64 * 1024);
    let watch = {
        let api = api.clone();
        axum::routing::post(move |req: axum::extract::Request| {
            let api = api.clone();
            async move {
                let (parts, body) = req.into_parts();
                let caller = Caller::of(&grpc_request(parts, ()));
                streamed(Ok(api.watch_stream(caller, messages(body)))).await
            }
        })
    };
    let keepalive = {
        let api = api.clone();
        axum::routing::post(move |req: axum::extract::Request| {
            let api = api.clone();
            async move {
                let body = req.into_body();
                streamed(Ok(api.keep_alive_answers(messages(body)))).await
            }
        })
    };
    let calls = [
        ("kv/range", unary!(api, limit, Kv::range)),
        ("kv/put", unary!(api, limit, Kv::put)),
        ("kv/deleterange", unary!(api, limit, Kv::delete_range)),
        ("kv/txn", unary!(api, limit, Kv::txn)),
        ("kv/compaction", unary!(api, limit, Kv::compact)),
        ("watch", watch),
        ("lease/grant", unary!(api, limit, Lease::lease_grant)),
        ("lease/revoke", unary!(api, limit, Lease::lease_revoke)),
        ("kv/lease/revoke", unary!(api, limit, Lease::lease_revoke)),
        ("lease/keepalive", keepalive),
        (
            "lease/timetolive",
            unary!(api, limit, Lease::lease_time_to_live),
        ),
        (
            "kv/lease/timetolive",
            unary!(api, limit, Lease::lease_time_to_live),
        ),
        ("lease/leases", unary!(api, limit, Lease::lease_leases)),
        ("kv/lease/leases", unary!(api, limit, Lease::lease_leases)),
        (
            "cluster/member/add",
            unary!(api, limit, Cluster::member_add),
        ),
        (
            "cluster/member/remove",
            unary!(api, limit, Cluster::member_remove),
        ),
        (
            "cluster/member/update",
            unary!(api, limit, Cluster::member_update),
        ),
        (
            "cluster/member/list",
            unary!(api, limit, Cluster::member_list),
        ),
        (
            "cluster/member/promote",
            unary!(api, limit, Cluster::member_promote),
        ),
        ("maintenance/alarm", unary!(api, limit, Maintenance::alarm)),
        (
            "maintenance/status",
            unary!(api, limit, Maintenance::status),
        ),
        (
            "maintenance/defragment",
            unary!(api, limit, Maintenance::defragment),
        ),
        // etcd maps Hash and HashKV to this one path; grpc-gateway takes the first: Hash.
        ("maintenance/hash", unary!(api, limit, Maintenance::hash)),
        (
            "maintenance/snapshot",
            server_stream!(api, limit, Maintenance::snapshot),
        ),
        (
            "maintenance/transfer-leadership",
            unary!(api, limit, Maintenance::move_leader),
        ),
        ("auth/enable", unary!(api, limit, Auth::auth_enable)),
        ("auth/disable", unary!(api, limit, Auth::auth_disable)),
        ("auth/authenticate", unary!(api, limit, Auth::authenticate)),
        ("auth/user/add", unary!(api, limit, Auth::user_add)),
        ("auth/user/get", unary!(api, limit, Auth::user_get)),
        ("auth/user/list", unary!(api, limit, Auth::user_list)),
        ("auth/user/delete", unary!(api, limit, Auth::user_delete)),
        (
            "auth/user/changepw",
            unary!(api, limit, Auth::user_change_password),
        ),
        ("auth/user/grant", unary!(api, limit, Auth::user_grant_role)),
        (
            "auth/user/revoke",
            unary!(api, limit, Auth::user_revoke_role),
        ),
        ("auth/role/add", unary!(api, limit, Auth::role_add)),
        ("auth/role/get", unary!(api, limit, Auth::role_get)),
        ("auth/role/list", unary!(api, limit, Auth::role_list)),
        ("auth/role/delete", unary!(api, limit, Auth::role_delete)),
        (
            "auth/role/grant",
            unary!(api, limit, Auth::role_grant_permission),
        ),
        (
            "auth/role/revoke",
            unary!(api, limit, Auth::role_revoke_permission),
        ),
        ("lock/lock", unary!(api, limit, Lock::lock)),
        ("lock/unlock", unary!(api, limit, Lock::unlock)),
        ("election/campaign", unary!(api, limit, Election::campaign)),
        ("election/proclaim", unary!(api, limit, Election::proclaim)),
        ("election/leader", unary!(api, limit, Election::leader)),
        (
            "election/observe",
            server_stream!(api, limit, Election::observe),
        ),
        ("election/resign", unary!(api, limit, Election::resign)),
    ];
    // Any other path under the gateway: grpc-gateway's plain "Not Found".
    let not_found = axum::routing::any(|| async {
        (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "Not Found\n",
        )
    });
    let mut router = axum::Router::new();
    for prefix in ["v3", "v3beta"] {
        router = router.route(&format!("/{prefix}/{{*rest}}"), not_found.clone());
        for (path, route) in &calls {
            router = router.route(&format!("/{prefix}/{path}"), route.clone());
        }
    }
    if max_streams == u32::MAX {
        return router;
    }
    let streams = std::sync::Arc::new(tokio::sync::Semaphore::new(
        (max_streams as usize).min(tokio::sync::Semaphore::MAX_PERMITS),
    ));
    router.layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            let streams = streams.clone();
            async move {
                let Ok(permit) = streams.acquire_owned().await else {
                    return axum::response::IntoResponse::into_response(
                        StatusCode::SERVICE_UNAVAILABLE,
                    );
                };
                next.run(req).await.map(|inner| {
                    axum::body::Body::new(Holding {
                        inner,
                        _permit: permit,
                    })
                })
            }
        },
    ))
}

/// A response body that holds a permit until it is dropped.
struct Holding {
    inner: axum::body::Body,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl http_body::Body for Holding {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

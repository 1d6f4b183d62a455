//! etcd's v3 gRPC API on a member's client URL, so `etcdctl`, etcdc's remote client and any
//! other etcd client use the node as they use etcd: a thin adapter from tonic to the member's
//! `trait Etcd`. Errors keep etcd's texts and gRPC codes. What the node does not serve yet
//! (move-leader, downgrade, auth) answers `Unimplemented` with a clear text,
//! never a hang. One file per service, as etcd's `v3rpc`: `kv`, `lease`, `cluster`,
//! `maintenance`, `watch`; this file holds what they share and the server itself.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio_stream::Stream;
use tonic::Status;

use super::member::Member;
use crate::api::{deadline_in, Deadline, Etcd};
use crate::error::{Error, ErrorKind};
use crate::pb::etcdserverpb::cluster_server::ClusterServer;
use crate::pb::etcdserverpb::kv_server::KvServer;
use crate::pb::etcdserverpb::lease_server::LeaseServer;
use crate::pb::etcdserverpb::maintenance_server::MaintenanceServer;
use crate::pb::etcdserverpb::watch_server::WatchServer;
use crate::pb::etcdserverpb::*;

mod cluster;
mod kv;
mod lease;
mod maintenance;
mod watch;

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

/// A server stream of a service.
pub(super) type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The member behind every service.
#[derive(Clone)]
pub struct Api(pub Arc<Member>);

impl Api {
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

/// Serves etcd's API for `member` on the connections of `incoming` until `shutdown`
/// resolves: the gRPC services and, over HTTP/1.1 as etcd does, `GET /health`,
/// `GET /version` and `GET /metrics`.
pub async fn serve<IO>(
    member: Arc<Member>,
    incoming: impl tokio_stream::Stream<Item = std::io::Result<IO>> + Send,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> crate::error::Result<()>
where
    IO: super::Connection,
{
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
        .serve_with_incoming_shutdown(incoming, shutdown)
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

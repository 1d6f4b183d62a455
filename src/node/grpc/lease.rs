//! etcd's `Lease` service: grant, revoke, keep-alive streams, time-to-live, leases.

use tonic::{Request, Response, Status, Streaming};

use super::{auth_revision, deadline, status, Api, BoxStream, Need};
use crate::api::Etcd;
use crate::pb::etcdserverpb::lease_server::Lease;
use crate::pb::etcdserverpb::*;
use tokio_stream::StreamExt;

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
        // As etcd: revoking deletes the lease's keys, so it needs write on each of them.
        let mut checked = self.allow_request(&r, &[]).await?;
        if checked.is_some() {
            let keys = self
                .0
                .lease_time_to_live(
                    LeaseTimeToLiveRequest {
                        id: r.get_ref().id,
                        keys: true,
                    },
                    deadline(),
                )
                .await
                .map_err(status)?
                .keys;
            let needs: Vec<Need> = keys.iter().map(|k| Need::Write(k, &[])).collect();
            checked = self.allow_request(&r, &needs).await?;
        }
        self.0
            .lease_revoke_checked(r.into_inner(), deadline(), auth_revision(&checked))
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
        Ok(Response::new(self.keep_alive_answers(r.into_inner())))
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

impl Api {
    /// Each keep-alive request of `input` answered in turn, until `input` ends or the server
    /// stops: the gRPC service's stream, and the JSON gateway's.
    pub(super) fn keep_alive_answers(
        &self,
        input: impl tokio_stream::Stream<Item = Result<LeaseKeepAliveRequest, Status>> + Send + 'static,
    ) -> BoxStream<LeaseKeepAliveResponse> {
        let member = self.0.clone();
        self.until_stop(Box::pin(input.then(move |req| {
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
        })))
    }
}

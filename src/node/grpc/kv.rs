//! etcd's `KV` service: range, put, delete, txn, compact.

use tonic::{Request, Response, Status};

use super::{auth_revision, deadline, status, Api, Need};
use crate::api::Etcd;
use crate::node::member::txn_is_read_only;
use crate::pb::etcdserverpb::kv_server::Kv;
use crate::pb::etcdserverpb::*;

#[tonic::async_trait]
impl Kv for Api {
    async fn range(&self, r: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        let req = r.get_ref();
        let need = [Need::Read(&req.key, &req.range_end)];
        let confirmed = self.allow_read(&r, &need, !req.serializable).await?;
        let mut req = r.into_inner();
        // Confirmed already: read this member's store as it is now, without a second round.
        req.serializable |= confirmed;
        self.0
            .range(req, deadline())
            .await
            .map(Response::new)
            .map_err(status)
    }
    async fn put(&self, r: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let req = r.get_ref();
        let mut needs = vec![Need::Write(&req.key, &[])];
        if req.prev_kv {
            needs.push(Need::Read(&req.key, &[]));
        }
        let checked = self.allow_request(&r, &needs).await?;
        self.0
            .put_checked(r.into_inner(), deadline(), auth_revision(&checked))
            .await
            .map(Response::new)
            .map_err(status)
    }
    async fn delete_range(
        &self,
        r: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let req = r.get_ref();
        let mut needs = vec![Need::Write(&req.key, &req.range_end)];
        if req.prev_kv {
            needs.push(Need::Read(&req.key, &req.range_end));
        }
        let checked = self.allow_request(&r, &needs).await?;
        self.0
            .delete_range_checked(r.into_inner(), deadline(), auth_revision(&checked))
            .await
            .map(Response::new)
            .map_err(status)
    }
    async fn txn(&self, r: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let mut needs = Vec::new();
        Need::of_txn(r.get_ref(), &mut needs);
        let (confirmed, checked) = if txn_is_read_only(r.get_ref()) {
            (self.allow_read(&r, &needs, true).await?, None)
        } else {
            (false, self.allow_request(&r, &needs).await?)
        };
        self.0
            .txn_with(
                r.into_inner(),
                deadline(),
                confirmed,
                auth_revision(&checked),
            )
            .await
            .map(Response::new)
            .map_err(status)
    }
    async fn compact(
        &self,
        r: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        self.allow_request(&r, &[Need::User]).await?;
        self.0
            .compact(r.into_inner(), deadline())
            .await
            .map(Response::new)
            .map_err(status)
    }
}

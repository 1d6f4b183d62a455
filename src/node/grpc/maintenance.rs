//! etcd's `Maintenance` service: status, alarms, defragment, hash, snapshot, move-leader,
//! and the call the node refuses with a clear text (downgrade).

use tonic::{Request, Response, Status};

use super::{deadline, status, unimplemented, Api, BoxStream, Need};
use crate::api::Etcd;
use crate::pb::etcdserverpb::maintenance_server::Maintenance;
use crate::pb::etcdserverpb::*;

#[tonic::async_trait]
impl Maintenance for Api {
    /// etcd answers alarms without a header.
    async fn alarm(&self, r: Request<AlarmRequest>) -> Result<Response<AlarmResponse>, Status> {
        let mut resp = self
            .0
            .alarm(r.into_inner(), deadline())
            .await
            .map_err(status)?;
        resp.header = None;
        Ok(Response::new(resp))
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
        r: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        self.allow_request(&r, &[Need::Admin]).await?;
        Ok(Response::new(DefragmentResponse {
            header: self.header().await?,
        }))
    }
    /// etcd hashes its whole backend file here; the node's store has no file to hash, so
    /// this is HashKV of the current revision.
    async fn hash(&self, r: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        self.allow_request(&r, &[Need::Admin]).await?;
        let r = self.0.hash_kv(0).await.map_err(status)?;
        Ok(Response::new(HashResponse {
            header: r.header,
            hash: r.hash,
        }))
    }
    async fn hash_kv(&self, r: Request<HashKvRequest>) -> Result<Response<HashKvResponse>, Status> {
        self.allow_request(&r, &[Need::Admin]).await?;
        self.0
            .hash_kv(r.into_inner().revision)
            .await
            .map(Response::new)
            .map_err(status)
    }

    type SnapshotStream = BoxStream<SnapshotResponse>;

    /// The store as etcd's snapshot file (its bbolt backend file, then the SHA-256):
    /// `etcdctl snapshot save` stores it; `etcdctl snapshot restore` makes an etcd data dir
    /// of it and `etcdc-node --restore-snapshot` a new member (or cluster). Sent in 32 KiB
    /// pieces, each with the file's bytes still to come, then its SHA-256 — as etcd 3.4
    /// sends it (no header).
    async fn snapshot(
        &self,
        r: Request<SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        self.allow_request(&r, &[Need::Admin]).await?;
        const PIECE: usize = 32 * 1024;
        let backup = self.0.backup().await.map_err(status)?;
        // Read from its file as the client takes it: a few pieces ahead, never all of it.
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::task::spawn_blocking(move || {
            let sent = backup.send(PIECE, |blob, remaining_bytes| {
                let piece = SnapshotResponse {
                    remaining_bytes,
                    blob,
                    ..Default::default()
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
    /// etcd's MoveLeader, on the leader (`Member::move_leader`).
    async fn move_leader(
        &self,
        r: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        self.0
            .move_leader(r.into_inner().target_id, deadline())
            .await
            .map_err(status)?;
        Ok(Response::new(MoveLeaderResponse {
            header: self.header().await?,
        }))
    }
    async fn downgrade(
        &self,
        _r: Request<DowngradeRequest>,
    ) -> Result<Response<DowngradeResponse>, Status> {
        Err(unimplemented("downgrade"))
    }
}

//! etcd's `v3lockpb.Lock` service, as etcd's `v3lock` serves it: `Lock` takes Go's
//! `concurrency.Mutex` on the name for the caller's lease (a lease of 0 gets a new one of
//! 60 s, as Go's session makes, which nobody keeps alive), so it excludes `etcdctl lock`,
//! Go's and etcdc's recipes on the same name; `Unlock` deletes the key `Lock` returned. A
//! caller that goes away while waiting leaves no key behind.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{status, Api, Need};
use crate::api::{deadline_in, Etcd};
use crate::pb::etcdserverpb::{DeleteRangeRequest, LeaseGrantRequest};
use crate::pb::v3lockpb::lock_server::Lock;
use crate::pb::v3lockpb::*;
use crate::recipes::mutex::Mutex;

/// The TTL of the lease Go's session grants when the caller gives none.
pub(super) const SESSION_TTL: i64 = 60;

/// Far enough to mean "until the caller gives up", which it does by going away.
pub(super) fn until_canceled() -> crate::api::Deadline {
    deadline_in(std::time::Duration::from_secs(3600 * 24 * 365))
}

/// Error texts as Go's handlers return them: plain errors, which gRPC sends as `Unknown`;
/// etcd's own errors keep their codes.
pub(super) fn recipe_status(e: crate::error::Error) -> Status {
    use crate::error::ErrorKind;
    match e.kind {
        ErrorKind::FailedPrecondition | ErrorKind::NotFound
            if e.message.starts_with("election:") =>
        {
            Status::unknown(
                e.message
                    .split(" (")
                    .next()
                    .unwrap_or(&e.message)
                    .to_string(),
            )
        }
        _ => status(e),
    }
}

impl Api {
    /// The caller's lease, or a new one of `SESSION_TTL` for a lease of 0.
    pub(super) async fn session_lease(&self, lease: i64) -> Result<i64, Status> {
        if lease != 0 {
            return Ok(lease);
        }
        let req = LeaseGrantRequest {
            ttl: SESSION_TTL,
            id: 0,
        };
        Ok(self
            .0
            .lease_grant(req, super::deadline())
            .await
            .map_err(status)?
            .id)
    }

    fn etcd(&self) -> Arc<dyn Etcd> {
        self.0.clone()
    }
}

#[tonic::async_trait]
impl Lock for Api {
    async fn lock(&self, r: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        let prefix = crate::recipes::name_prefix("lock", &r.get_ref().name).map_err(status)?;
        let end = crate::kv::prefix_end(&prefix);
        self.allow_request(&r, &[Need::Write(&prefix, &end), Need::Read(&prefix, &end)])
            .await?;
        let req = r.into_inner();
        let lease = self.session_lease(req.lease).await?;
        let mut mutex = Mutex::new(self.etcd(), &req.name, lease).map_err(status)?;
        // The wait runs on its own task: when the caller goes away, `gone` fires and the
        // task gives up its place in line (deletes its key), as Go's handler does.
        let (_caller, gone) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let locked = tokio::select! {
                r = mutex.lock(until_canceled()) => Some(r),
                _ = gone => None,
            };
            match locked {
                Some(r) => r.map(|()| mutex.key().to_vec()),
                None => {
                    let _ = mutex
                        .unlock(deadline_in(std::time::Duration::from_secs(5)))
                        .await;
                    Err(crate::error::Error::new(
                        crate::error::ErrorKind::Canceled,
                        "context canceled",
                    ))
                }
            }
        });
        let key = task
            .await
            .map_err(|e| Status::internal(format!("the lock task failed: {e}")))?
            .map_err(status)?;
        Ok(Response::new(LockResponse {
            header: self.header().await?,
            key,
        }))
    }

    async fn unlock(&self, r: Request<UnlockRequest>) -> Result<Response<UnlockResponse>, Status> {
        let key = r.get_ref().key.clone();
        self.allow_request(&r, &[Need::Write(&key, &[])]).await?;
        let resp = self
            .0
            .delete_range(
                DeleteRangeRequest {
                    key,
                    ..Default::default()
                },
                super::deadline(),
            )
            .await
            .map_err(status)?;
        Ok(Response::new(UnlockResponse {
            header: resp.header,
        }))
    }
}

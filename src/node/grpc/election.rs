//! etcd's `v3electionpb.Election` service, as etcd's `v3election` serves it, on Go's
//! `concurrency.Election` keys (`<name>/<lease hex>`): `Campaign` waits until elected (a
//! lease of 0 gets a new one of 60 s, as Go's session makes), `Proclaim` and `Resign` act
//! on the `LeaderKey` it returned, `Leader` answers the current leader's key-value and
//! `Observe` streams each leader and proclamation. Interoperates with `etcdctl elect`, Go's
//! and etcdc's recipes on the same name. A campaigner that goes away while waiting
//! withdraws its candidacy.

use tonic::{Request, Response, Status};

use super::lock::{recipe_status, until_canceled};
use super::{status, Api, BoxStream, Need};
use crate::api::deadline_in;
use crate::pb::v3electionpb::election_server::Election as ElectionService;
use crate::pb::v3electionpb::*;
use crate::recipes::election::{self, Election};

/// etcd's answer to a Proclaim or Resign without its leader key.
fn missing_leader() -> Status {
    Status::unknown("\"leader\" field must be provided")
}

impl Api {
    /// The election of `leader`, resumed as its campaign left it.
    async fn resume(&self, leader: &LeaderKey) -> Result<Election, Status> {
        Election::resume(
            self.0.clone(),
            &leader.name,
            leader.lease,
            leader.key.clone(),
            leader.rev,
        )
        .map_err(status)
    }

    /// What an election `name` needs of the caller: to read and write its keys.
    async fn allow_election<T>(&self, r: &Request<T>, name: &[u8]) -> Result<(), Status> {
        let prefix = crate::recipes::name_prefix("election", name).map_err(status)?;
        let end = crate::kv::prefix_end(&prefix);
        self.allow_request(r, &[Need::Write(&prefix, &end), Need::Read(&prefix, &end)])
            .await
            .map(|_| ())
    }
}

#[tonic::async_trait]
impl ElectionService for Api {
    async fn campaign(
        &self,
        r: Request<CampaignRequest>,
    ) -> Result<Response<CampaignResponse>, Status> {
        self.allow_election(&r, &r.get_ref().name).await?;
        let req = r.into_inner();
        let lease = self.session_lease(req.lease).await?;
        let mut e = Election::new(self.0.clone(), &req.name, lease).map_err(status)?;
        // As `Lock`: the wait is a task that withdraws the candidacy if the caller goes.
        let (_caller, gone) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let elected = tokio::select! {
                r = e.campaign(&req.value, until_canceled()) => Some(r),
                _ = gone => None,
            };
            match elected {
                Some(r) => r.map(|()| e.key().map(|(k, rev)| (k.to_vec(), rev))),
                None => {
                    let _ = e
                        .resign(deadline_in(std::time::Duration::from_secs(5)))
                        .await;
                    Err(crate::error::Error::new(
                        crate::error::ErrorKind::Canceled,
                        "context canceled",
                    ))
                }
            }
        });
        let (key, rev) = task
            .await
            .map_err(|e| Status::internal(format!("the campaign task failed: {e}")))?
            .map_err(recipe_status)?
            .unwrap_or_default();
        Ok(Response::new(CampaignResponse {
            header: self.header().await?,
            leader: Some(LeaderKey {
                name: req.name,
                key,
                rev,
                lease,
            }),
        }))
    }

    async fn proclaim(
        &self,
        r: Request<ProclaimRequest>,
    ) -> Result<Response<ProclaimResponse>, Status> {
        let leader = r.get_ref().leader.clone().ok_or_else(missing_leader)?;
        self.allow_election(&r, &leader.name).await?;
        let e = self.resume(&leader).await?;
        e.proclaim(&r.get_ref().value, super::deadline())
            .await
            .map_err(recipe_status)?;
        Ok(Response::new(ProclaimResponse {
            header: self.header().await?,
        }))
    }

    async fn leader(&self, r: Request<LeaderRequest>) -> Result<Response<LeaderResponse>, Status> {
        self.allow_election(&r, &r.get_ref().name).await?;
        let leader = election::leader(&*self.0, &r.get_ref().name, super::deadline())
            .await
            .map_err(recipe_status)?;
        Ok(Response::new(LeaderResponse {
            header: self.header().await?,
            kv: Some(leader.kv()),
        }))
    }

    type ObserveStream = BoxStream<LeaderResponse>;

    async fn observe(
        &self,
        r: Request<LeaderRequest>,
    ) -> Result<Response<Self::ObserveStream>, Status> {
        self.allow_election(&r, &r.get_ref().name).await?;
        let (feed, updates) = crate::stream::channel(64);
        let observer =
            election::observe(self.0.clone(), &r.get_ref().name, feed).map_err(status)?;
        // Forwards each leader until the caller goes away, then stops the observer.
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let api = self.clone();
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    _ = tx.closed() => break,
                    next = updates.recv() => next,
                };
                let item = match next {
                    Some(leader) => Ok(LeaderResponse {
                        header: api.header().await.ok().flatten(),
                        kv: Some(leader.kv()),
                    }),
                    None => match updates.error() {
                        Some(e) => Err(recipe_status(e)),
                        None => break,
                    },
                };
                let last = item.is_err();
                if tx.send(item).await.is_err() || last {
                    break;
                }
            }
            observer.abort();
        });
        Ok(Response::new(self.until_stop(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))))
    }

    async fn resign(&self, r: Request<ResignRequest>) -> Result<Response<ResignResponse>, Status> {
        let leader = r.get_ref().leader.clone().ok_or_else(missing_leader)?;
        self.allow_election(&r, &leader.name).await?;
        let mut e = self.resume(&leader).await?;
        e.resign(super::deadline()).await.map_err(recipe_status)?;
        Ok(Response::new(ResignResponse {
            header: self.header().await?,
        }))
    }
}

//! etcd's `Cluster` service: member list, add, remove, update, promote.

use tonic::{Request, Response, Status};

use super::{deadline, status, Api, Need};
use crate::api::Etcd;
use crate::node::raft::MemberChange;
use crate::pb::etcdserverpb::cluster_server::Cluster;
use crate::pb::etcdserverpb::*;

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
}

#[tonic::async_trait]
impl Cluster for Api {
    async fn member_add(
        &self,
        r: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        self.allow_request(&r, &[Need::Admin]).await?;
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
        self.allow_request(&r, &[Need::Admin]).await?;
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
        r: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        self.allow_request(&r, &[Need::Admin]).await?;
        let r = r.into_inner();
        let change = MemberChange::Update {
            id: r.id,
            peer_urls: r.peer_ur_ls,
        };
        let members = self.change_members(change).await?;
        Ok(Response::new(MemberUpdateResponse {
            header: self.cluster_header().await?,
            members,
        }))
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
        self.allow_request(&r, &[Need::Admin]).await?;
        let members = self
            .change_members(MemberChange::Promote(r.into_inner().id))
            .await?;
        Ok(Response::new(MemberPromoteResponse {
            header: self.cluster_header().await?,
            members,
        }))
    }
}

//! Several members in one process: Raft's messages and forwarded calls as function calls.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use openraft::error::{InstallSnapshotError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;

use super::peers::{unavailable, Peers};
use super::Member;
use crate::error::Result;
use crate::node::raft::{Command, MemberChange, NodeId, Outcome, TypeConfig};

/// Members of one process reaching each other directly: Raft's messages and forwarded
/// client calls are function calls. A member that is not registered (stopped) is
/// unreachable, as over a network.
#[derive(Clone, Default)]
pub struct Router {
    members: Arc<Mutex<HashMap<NodeId, Arc<Member>>>>,
    /// When each member last answered a Raft message.
    contact: Arc<Mutex<HashMap<NodeId, std::time::Instant>>>,
}

impl Router {
    pub fn add(&self, member: Arc<Member>) {
        self.lock().insert(member.id, member);
    }

    pub fn remove(&self, id: NodeId) -> Option<Arc<Member>> {
        self.lock().remove(&id)
    }

    fn leader(&self, id: NodeId) -> Result<Arc<Member>> {
        self.get(id)
            .ok_or_else(|| unavailable(format!("leader {id:x} is down")))
    }

    pub fn get(&self, id: NodeId) -> Option<Arc<Member>> {
        self.lock().get(&id).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, Arc<Member>>> {
        self.members.lock().unwrap_or_else(|p| p.into_inner())
    }

    // The error type is openraft's, as the network trait returns it.
    #[allow(clippy::result_large_err)]
    fn target<E: std::error::Error>(
        &self,
        id: NodeId,
    ) -> std::result::Result<Arc<Member>, RPCError<NodeId, BasicNode, E>> {
        self.get(id).ok_or_else(|| {
            RPCError::Unreachable(Unreachable::new(&unavailable(format!(
                "member {id:x} is down"
            ))))
        })
    }
}

#[async_trait::async_trait]
impl Peers for Router {
    async fn forward_write(&self, leader: NodeId, cmd: Command) -> Result<Outcome> {
        match self.get(leader) {
            Some(m) => m.local_write(cmd).await,
            None => Err(super::proposal::not_proposed(format!(
                "leader {leader:x} is down"
            ))),
        }
    }

    async fn read_index(&self, leader: NodeId) -> Result<u64> {
        self.leader(leader)?.local_read_index().await
    }

    async fn lease_ttl(&self, leader: NodeId, id: i64, refresh: bool) -> Result<i64> {
        self.leader(leader)?.local_lease_ttl(id, refresh).await
    }

    fn last_contact(&self, id: NodeId) -> Option<std::time::Instant> {
        let contact = self.contact.lock().unwrap_or_else(|p| p.into_inner());
        contact.get(&id).copied()
    }

    async fn tell_removed(&self, id: NodeId, _addr: &str) {
        if let Some(m) = self.get(id) {
            let _ = m
                .local_write(Command::Membership(MemberChange::Removed(id)))
                .await;
        }
    }

    async fn reads(&self, id: NodeId) -> Result<u32> {
        match self.get(id) {
            Some(_) => Ok(crate::node::raft::ENTRY_VERSION),
            None => Err(unavailable(format!("member {id:x} is down"))),
        }
    }

    async fn campaign(&self, id: NodeId) -> Result<()> {
        match self.get(id) {
            Some(m) => m.local_campaign().await,
            None => Err(unavailable(format!("member {id:x} is down"))),
        }
    }
}

/// One member's connection to another through the router.
pub struct RouterLink {
    router: Router,
    target: NodeId,
}

impl RaftNetworkFactory<TypeConfig> for Router {
    type Network = RouterLink;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> RouterLink {
        RouterLink {
            router: self.clone(),
            target,
        }
    }
}

impl RaftNetwork<TypeConfig> for RouterLink {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> std::result::Result<
        AppendEntriesResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId>>,
    > {
        let m = self.router.target(self.target);
        {
            let mut contact = self
                .router
                .contact
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            match &m {
                Ok(_) => contact.insert(self.target, std::time::Instant::now()),
                Err(_) => contact.remove(&self.target),
            };
        }
        m?.raft
            .append_entries(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> std::result::Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        let m = self.router.target(self.target)?;
        m.raft
            .install_snapshot(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> std::result::Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>>
    {
        let m = self.router.target(self.target)?;
        m.raft
            .vote(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

//! etcd's `Auth` service: `etcdctl auth / user / role`. Changes go through Raft as
//! `Command::Auth` (passwords hashed here first, so every member applies the same hash);
//! reads come from this member's store after a read barrier. Everything but authenticating
//! and enabling needs the root role once authentication is on.

use std::sync::OnceLock;

use tokio::sync::Semaphore;
use tonic::{Request, Response, Status};

use super::{deadline, status, Api, Caller, Need};
use crate::error::{Error, ErrorKind};
use crate::node::auth::{self, AuthCommand, Perm};
use crate::pb::authpb;
use crate::pb::etcdserverpb::auth_server::Auth;
use crate::pb::etcdserverpb::*;

/// bcrypt checks, one at a time per process (as etcd's): a flood of wrong passwords waits
/// its turn instead of taking every core.
fn bcrypt_turn() -> &'static Semaphore {
    static TURN: OnceLock<Semaphore> = OnceLock::new();
    TURN.get_or_init(|| Semaphore::new(1))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("bcrypt task failed: {e}")))
}

impl Api {
    /// Applies `change` once `r`'s caller may make it (root, with auth on).
    async fn change<T>(
        &self,
        r: &Request<T>,
        change: AuthCommand,
    ) -> Result<ResponseHeader, Status> {
        self.allow_request(r, &[Need::Admin]).await?;
        self.0.auth_change(change, deadline()).await.map_err(status)
    }

    async fn hash(&self, password: String) -> Result<String, Status> {
        let cost = self.0.auth_settings.bcrypt_cost;
        blocking(move || bcrypt::hash(password, cost))
            .await?
            .map_err(|e| Status::internal(format!("bcrypt: {e}")))
    }

    /// The auth store after a read barrier, through `f`.
    async fn read<R>(&self, f: impl FnOnce(&auth::AuthStore) -> R) -> Result<R, Status> {
        self.0.auth_read(Some(deadline()), f).await.map_err(status)
    }
}

fn not_found(text: &str) -> Status {
    status(Error::new(ErrorKind::FailedPrecondition, text))
}

#[tonic::async_trait]
impl Auth for Api {
    async fn auth_enable(
        &self,
        _: Request<AuthEnableRequest>,
    ) -> Result<Response<AuthEnableResponse>, Status> {
        let header = self
            .0
            .auth_change(AuthCommand::Enable, deadline())
            .await
            .map_err(status)?;
        Ok(Response::new(AuthEnableResponse {
            header: Some(header),
        }))
    }

    async fn auth_disable(
        &self,
        r: Request<AuthDisableRequest>,
    ) -> Result<Response<AuthDisableResponse>, Status> {
        let header = self.change(&r, AuthCommand::Disable).await?;
        Ok(Response::new(AuthDisableResponse {
            header: Some(header),
        }))
    }

    async fn auth_status(
        &self,
        _: Request<AuthStatusRequest>,
    ) -> Result<Response<AuthStatusResponse>, Status> {
        let (enabled, auth_revision) = self.read(|a| (a.enabled, a.revision)).await?;
        Ok(Response::new(AuthStatusResponse {
            header: self.header().await?,
            enabled,
            auth_revision,
        }))
    }

    async fn authenticate(
        &self,
        r: Request<AuthenticateRequest>,
    ) -> Result<Response<AuthenticateResponse>, Status> {
        let AuthenticateRequest { name, password } = r.into_inner();
        // As etcd, after a read barrier: a member that has not applied `auth enable` (or a
        // new user) yet must not answer "not enabled" (or refuse the user) once the cluster
        // has acknowledged it — a client told "not enabled" goes on without a token.
        let (enabled, hash, revision) = self
            .0
            .auth_read(Some(deadline()), |a| {
                (
                    a.enabled,
                    a.users.get(&name).map(|u| u.password.clone()),
                    a.revision,
                )
            })
            .await
            .map_err(status)?;
        if !enabled {
            return Err(status(auth::not_enabled()));
        }
        // A user without a password (certificate only) cannot log in with one.
        let hash = hash.filter(|h| !h.is_empty()).unwrap_or_default();
        let ok = {
            let _turn = bcrypt_turn()
                .acquire()
                .await
                .map_err(|_| Status::internal("bcrypt closed"))?;
            blocking(move || !hash.is_empty() && bcrypt::verify(password, &hash).unwrap_or(false))
                .await?
        };
        if !ok {
            return Err(status(auth::auth_failed()));
        }
        if let Some(jwt) = &self.0.auth_settings.jwt {
            // A signed token names the auth revision as the cluster had it at the barrier
            // (a member behind would hand out one the others call old); nothing to replicate.
            let token = jwt.sign(&name, revision).ok_or_else(|| {
                Status::unknown("auth: token signing attempted with verify-only key")
            })?;
            return Ok(Response::new(AuthenticateResponse {
                header: self.header().await?,
                token,
            }));
        }
        let token = auth::new_token(revision);
        let header = self
            .0
            .auth_change(
                AuthCommand::Authenticate {
                    user: name,
                    token: token.clone(),
                },
                deadline(),
            )
            .await
            .map_err(status)?;
        Ok(Response::new(AuthenticateResponse {
            header: Some(header),
            token,
        }))
    }

    async fn user_add(
        &self,
        r: Request<AuthUserAddRequest>,
    ) -> Result<Response<AuthUserAddResponse>, Status> {
        self.allow_request(&r, &[Need::Admin]).await?;
        let no_password = r.get_ref().options.is_some_and(|o| o.no_password);
        let name = r.get_ref().name.clone();
        let hash = if no_password {
            String::new()
        } else {
            self.hash(r.get_ref().password.clone()).await?
        };
        let header = self.change(&r, AuthCommand::UserAdd { name, hash }).await?;
        Ok(Response::new(AuthUserAddResponse {
            header: Some(header),
        }))
    }

    async fn user_get(
        &self,
        r: Request<AuthUserGetRequest>,
    ) -> Result<Response<AuthUserGetResponse>, Status> {
        let name = r.get_ref().name.clone();
        // Root, or the user asking about itself.
        let caller = Caller::of(&r);
        if let Some(checked) = self.allow(&caller, &[Need::User]).await? {
            if checked.user != name {
                self.allow(&caller, &[Need::Admin]).await?;
            }
        }
        let roles = self
            .read(|a| {
                a.users
                    .get(&name)
                    .map(|u| u.roles.iter().cloned().collect())
            })
            .await?
            .ok_or_else(|| not_found("etcdserver: user name not found"))?;
        Ok(Response::new(AuthUserGetResponse {
            header: self.header().await?,
            roles,
        }))
    }

    async fn user_list(
        &self,
        r: Request<AuthUserListRequest>,
    ) -> Result<Response<AuthUserListResponse>, Status> {
        self.allow_request(&r, &[Need::Admin]).await?;
        let users = self.read(|a| a.users.keys().cloned().collect()).await?;
        Ok(Response::new(AuthUserListResponse {
            header: self.header().await?,
            users,
        }))
    }

    async fn user_delete(
        &self,
        r: Request<AuthUserDeleteRequest>,
    ) -> Result<Response<AuthUserDeleteResponse>, Status> {
        let change = AuthCommand::UserDelete(r.get_ref().name.clone());
        let header = self.change(&r, change).await?;
        Ok(Response::new(AuthUserDeleteResponse {
            header: Some(header),
        }))
    }

    async fn user_change_password(
        &self,
        r: Request<AuthUserChangePasswordRequest>,
    ) -> Result<Response<AuthUserChangePasswordResponse>, Status> {
        self.allow_request(&r, &[Need::Admin]).await?;
        let req = r.get_ref();
        let hash = if req.hashed_password.is_empty() {
            self.hash(req.password.clone()).await?
        } else {
            req.hashed_password.clone()
        };
        let change = AuthCommand::UserChangePassword {
            name: req.name.clone(),
            hash,
        };
        let header = self.change(&r, change).await?;
        Ok(Response::new(AuthUserChangePasswordResponse {
            header: Some(header),
        }))
    }

    async fn user_grant_role(
        &self,
        r: Request<AuthUserGrantRoleRequest>,
    ) -> Result<Response<AuthUserGrantRoleResponse>, Status> {
        let req = r.get_ref();
        let change = AuthCommand::UserGrantRole {
            user: req.user.clone(),
            role: req.role.clone(),
        };
        let header = self.change(&r, change).await?;
        Ok(Response::new(AuthUserGrantRoleResponse {
            header: Some(header),
        }))
    }

    async fn user_revoke_role(
        &self,
        r: Request<AuthUserRevokeRoleRequest>,
    ) -> Result<Response<AuthUserRevokeRoleResponse>, Status> {
        let req = r.get_ref();
        let change = AuthCommand::UserRevokeRole {
            user: req.name.clone(),
            role: req.role.clone(),
        };
        let header = self.change(&r, change).await?;
        Ok(Response::new(AuthUserRevokeRoleResponse {
            header: Some(header),
        }))
    }

    async fn role_add(
        &self,
        r: Request<AuthRoleAddRequest>,
    ) -> Result<Response<AuthRoleAddResponse>, Status> {
        let change = AuthCommand::RoleAdd(r.get_ref().name.clone());
        let header = self.change(&r, change).await?;
        Ok(Response::new(AuthRoleAddResponse {
            header: Some(header),
        }))
    }

    async fn role_get(
        &self,
        r: Request<AuthRoleGetRequest>,
    ) -> Result<Response<AuthRoleGetResponse>, Status> {
        let role = r.get_ref().role.clone();
        // Root, or a user that has the role.
        let caller = Caller::of(&r);
        if let Some(checked) = self.allow(&caller, &[Need::User]).await? {
            let has = self
                .read(|a| {
                    a.users
                        .get(&checked.user)
                        .is_some_and(|u| u.roles.contains(&role))
                })
                .await?;
            if !has {
                self.allow(&caller, &[Need::Admin]).await?;
            }
        }
        let perm = self
            .read(|a| {
                a.roles.get(&role).map(|perms| {
                    perms
                        .iter()
                        .map(|p| authpb::Permission {
                            perm_type: p.kind,
                            key: p.key.clone(),
                            range_end: p.range_end.clone(),
                        })
                        .collect()
                })
            })
            .await?
            .ok_or_else(|| not_found("etcdserver: role name not found"))?;
        Ok(Response::new(AuthRoleGetResponse {
            header: self.header().await?,
            perm,
        }))
    }

    async fn role_list(
        &self,
        r: Request<AuthRoleListRequest>,
    ) -> Result<Response<AuthRoleListResponse>, Status> {
        self.allow_request(&r, &[Need::Admin]).await?;
        let roles = self.read(|a| a.roles.keys().cloned().collect()).await?;
        Ok(Response::new(AuthRoleListResponse {
            header: self.header().await?,
            roles,
        }))
    }

    async fn role_delete(
        &self,
        r: Request<AuthRoleDeleteRequest>,
    ) -> Result<Response<AuthRoleDeleteResponse>, Status> {
        let change = AuthCommand::RoleDelete(r.get_ref().role.clone());
        let header = self.change(&r, change).await?;
        Ok(Response::new(AuthRoleDeleteResponse {
            header: Some(header),
        }))
    }

    async fn role_grant_permission(
        &self,
        r: Request<AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<AuthRoleGrantPermissionResponse>, Status> {
        let req = r.get_ref();
        let perm = req
            .perm
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("etcdserver: permission not given"))?;
        let change = AuthCommand::RoleGrantPermission {
            role: req.name.clone(),
            perm: Perm {
                kind: perm.perm_type,
                key: perm.key.clone(),
                range_end: perm.range_end.clone(),
            },
        };
        let header = self.change(&r, change).await?;
        Ok(Response::new(AuthRoleGrantPermissionResponse {
            header: Some(header),
        }))
    }

    async fn role_revoke_permission(
        &self,
        r: Request<AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<AuthRoleRevokePermissionResponse>, Status> {
        let req = r.get_ref();
        let change = AuthCommand::RoleRevokePermission {
            role: req.role.clone(),
            key: req.key.clone(),
            range_end: req.range_end.clone(),
        };
        let header = self.change(&r, change).await?;
        Ok(Response::new(AuthRoleRevokePermissionResponse {
            header: Some(header),
        }))
    }
}

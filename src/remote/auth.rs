//! etcd's authentication, as Go's clientv3 does it: a user name and password are exchanged
//! for a token (`Authenticate`) before the first call; the token rides on every request and
//! stream as the `token` metadata; a token the cluster no longer takes (expired, the auth
//! store changed, or auth enabled since) is renewed once and the request sent again — safe
//! for writes too, as etcd refuses such a request before it is proposed. A cluster with
//! authentication off takes calls without a token, and the client goes on without one.

use std::sync::RwLock;

use tonic::metadata::AsciiMetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Request, Status};

use super::Conn;
use crate::api::Deadline;
use crate::pb::etcdserverpb::auth_client::AuthClient;
use crate::pb::etcdserverpb::AuthenticateRequest;

/// A user name and password for clusters with authentication on.
#[derive(Clone)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password, in logs or panics.
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// The channel every call goes through: stamps the current token on each request.
pub(crate) type Stamped = InterceptedService<Channel, Stamp>;

/// The token a request carries (none before authentication, or when auth is off).
#[derive(Clone, Default, PartialEq)]
pub(crate) struct Stamp(Option<AsciiMetadataValue>);

impl tonic::service::Interceptor for Stamp {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(token) = &self.0 {
            req.metadata_mut().insert("token", token.clone());
        }
        Ok(req)
    }
}

/// Where a client stands with the cluster's authentication.
#[derive(Clone, PartialEq)]
enum State {
    /// Not asked yet, or the last token was refused.
    Unknown,
    /// Authenticated (a token), or authentication is off (none).
    Known(Stamp),
}

pub(crate) struct Auth {
    credentials: Option<Credentials>,
    state: RwLock<State>,
    /// One authentication at a time: calls that find the token refused together renew it once.
    renewing: tokio::sync::Mutex<()>,
}

impl Auth {
    pub fn new(credentials: Option<Credentials>) -> Self {
        Auth {
            credentials,
            state: RwLock::new(State::Unknown),
            renewing: tokio::sync::Mutex::new(()),
        }
    }

    fn state(&self) -> State {
        self.state.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The token to send to `member`, authenticating there first when there is none.
    /// A failure is the member's answer (wrong password, unavailable) for the caller to
    /// classify like any call's.
    pub async fn stamp(&self, member: &Conn, deadline: Deadline) -> Result<Stamp, Status> {
        let Some(creds) = &self.credentials else {
            return Ok(Stamp::default());
        };
        if let State::Known(stamp) = self.state() {
            return Ok(stamp);
        }
        let _one = self.renewing.lock().await;
        if let State::Known(stamp) = self.state() {
            return Ok(stamp); // another call authenticated meanwhile
        }
        let req = AuthenticateRequest {
            name: creds.user.clone(),
            password: creds.password.clone(),
        };
        let answer = crate::runtime::timeout_at(
            deadline,
            AuthClient::new(member.channel.clone()).authenticate(req),
        )
        .await
        .map_err(|_| Status::deadline_exceeded("deadline exceeded while authenticating"))?;
        let stamp = match answer {
            Ok(resp) => {
                let token = resp.into_inner().token;
                Stamp(Some(token.parse().map_err(|_| {
                    Status::internal(format!(
                        "the cluster gave a token that is not ASCII: {token:?}"
                    ))
                })?))
            }
            Err(s) if s.message().contains("authentication is not enabled") => Stamp::default(),
            Err(s) => return Err(s),
        };
        *self.state.write().unwrap_or_else(|p| p.into_inner()) = State::Known(stamp.clone());
        Ok(stamp)
    }

    /// Whether a call refused with `status` should get a new token and go again: the token
    /// was refused, or (with credentials) the cluster turned authentication on. A request
    /// checked against an auth store that changed before it was applied ("revision of auth
    /// store is old": nothing was applied) goes again also for a certificate's user, whose
    /// token is none (as Go's client).
    pub fn should_renew(&self, status: &Status) -> bool {
        let m = status.message();
        m.contains("revision of auth store is old")
            || (self.credentials.is_some()
                && (m.contains("invalid auth token") || m.contains("user name is empty")))
    }

    /// After a stream ended with `status`: forgets its token if that was why.
    pub fn renew_after(&self, status: &Status, stale: &Stamp) {
        if self.should_renew(status) {
            self.forget(stale);
        }
    }

    /// Forgets `stale` (the token a refused call carried) so the next `stamp` authenticates;
    /// a newer token another call already got is kept.
    pub fn forget(&self, stale: &Stamp) {
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        if *state == State::Known(stale.clone()) {
            *state = State::Unknown;
        }
    }
}

impl Conn {
    /// This member's channel, stamping `stamp` on every request.
    pub fn stamped(&self, stamp: Stamp) -> Stamped {
        InterceptedService::new(self.channel.clone(), stamp)
    }
}

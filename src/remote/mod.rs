//! The remote backend: a client of any etcd v3 cluster over gRPC. Unary calls go round-robin
//! over the members and retry the way Go's clientv3 does; one multiplexed Watch stream and
//! one LeaseKeepAlive stream per client carry every watch and every kept lease.

mod auth;
mod keepalive;
mod watch;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint, Uri};

use crate::api::{Deadline, Etcd, KeepAliveGuard, LeaseUpdate, WatchControl, WatchUpdate};
use crate::codec::SharedCodec;
use crate::error::{Error, ErrorKind, Result};
use crate::pb::etcdserverpb::cluster_client::ClusterClient;
use crate::pb::etcdserverpb::kv_client::KvClient;
use crate::pb::etcdserverpb::lease_client::LeaseClient;
use crate::pb::etcdserverpb::maintenance_client::MaintenanceClient;
use crate::pb::etcdserverpb::*;
use crate::stream::Feed;
pub use crate::tls::{ClientTls, Identity, Pem};
pub use auth::Credentials;
use auth::{Auth, Stamped};

/// The largest request the client sends, as Go's clientv3 (`defaultMaxCallSendMsgSize`).
/// etcd itself refuses requests over 1.5 MiB with "etcdserver: request is too large".
pub(crate) const MAX_SEND_BYTES: usize = 2 * 1024 * 1024;

#[derive(Clone, Debug)]
pub struct RemoteConfig {
    pub endpoints: Vec<String>,
    pub connect_timeout: Duration,
    /// TLS for `https://` endpoints; None with https: the system's roots, no client certificate.
    pub tls: Option<ClientTls>,
    /// A user for clusters with authentication on; None: no user, or the one named by the
    /// client certificate's common name (etcd's `--client-cert-auth`).
    pub credentials: Option<Credentials>,
}

impl Default for RemoteConfig {
    fn default() -> Self {
        RemoteConfig {
            endpoints: Vec::new(),
            connect_timeout: Duration::from_secs(2),
            tls: None,
            credentials: None,
        }
    }
}

/// Parses `http://host:port[,http://host:port...]` (commas, semicolons or spaces between);
/// `https://` for TLS. Every endpoint of a client has the same scheme.
pub fn parse_endpoints(list: &str) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for item in list.split([',', ';', ' ']).filter(|s| !s.is_empty()) {
        let uri: Uri = item
            .parse()
            .map_err(|e| Error::invalid(format!("malformed endpoint {item:?}: {e}")))?;
        let scheme = match uri.scheme_str() {
            Some(scheme @ ("http" | "https")) => scheme,
            _ => {
                return Err(Error::invalid(format!(
                    "malformed endpoint {item:?}: expected http://host:port"
                )))
            }
        };
        if uri.host().is_none_or(str::is_empty) || uri.port_u16().is_none() {
            return Err(Error::invalid(format!(
                "malformed endpoint {item:?}: expected http://host:port"
            )));
        }
        if uri.path() != "/" && !uri.path().is_empty() {
            return Err(Error::invalid(format!(
                "malformed endpoint {item:?}: a path is not allowed"
            )));
        }
        let url = format!("{scheme}://{}", uri.authority().map_or("", |a| a.as_str()));
        if let Some(first) = out.first() {
            if is_tls(first) != is_tls(&url) {
                return Err(Error::invalid(format!(
                    "endpoints {first:?} and {url:?} mix http and https: a client uses one"
                )));
            }
        }
        out.push(url);
    }
    if out.is_empty() {
        return Err(Error::invalid("no endpoint given"));
    }
    Ok(out)
}

/// One member's connection.
pub(crate) struct Conn {
    pub url: String,
    pub channel: Channel,
    /// The member has answered a call: its scheme is right.
    answered: std::sync::atomic::AtomicBool,
}

impl Conn {
    /// `message` (why a connection to this member failed) with what to check when the
    /// cause is a common mistake in the TLS settings.
    fn explain(&self, message: String) -> String {
        let hint = if message.contains("UnknownIssuer") {
            "the server's certificate is not signed by a CA the client trusts"
        } else if message.contains("NotValidForName") || message.contains("not valid for name") {
            "the server's certificate does not name the host the client asked for (a TLS server name can be set)"
        } else if message.contains("BadCertificate") || message.contains("CertificateRequired") {
            "the server refused the client certificate, or requires one the client did not give"
        } else if ["reset", "closed", "eof", "broken pipe", "protocol error"]
            .iter()
            .any(|m| message.contains(m))
            && !self.answered.load(Ordering::Relaxed)
        {
            // A member that ends every connection from the start most often wants what the
            // client does not give.
            if is_tls(&self.url) {
                "the member ended the connection while it was set up: it may require a client certificate the client did not give, or not speak TLS (then use http://)"
            } else {
                "the member ended the connection while it was set up: does it require TLS? then use https://"
            }
        } else {
            return message;
        };
        format!("{message} ({hint})")
    }
}

/// The connections to every member, shared by unary calls and the two streams.
pub(crate) struct Pool {
    /// Never empty (`Remote::new` refuses an empty list).
    pub members: Vec<Conn>,
    next: AtomicUsize,
    pub counters: crate::observe::Counters,
    pub auth: Auth,
}

impl Pool {
    /// The members in the order to try them for one call: round-robin start, then failover.
    pub fn rotation(&self) -> impl Iterator<Item = &Conn> + '_ {
        let n = self.members.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..).map(move |i| &self.members[(start + i) % n])
    }

    /// The pause before a stream's `failures`-th reconnect in a row: none while other members
    /// are still untried (a dead member is left at once), then a growing backoff.
    pub fn reconnect_pause(&self, failures: u32) -> Duration {
        let rounds = (failures as usize).saturating_sub(1) / self.members.len();
        if rounds == 0 {
            return Duration::ZERO;
        }
        Duration::from_millis((50u64 << rounds.min(4)).min(500))
    }

    /// Runs one unary call with failover. `idempotent` calls (reads, lease calls) are retried
    /// on any `Unavailable`; the others only when the request never left this process, so a
    /// write is never applied twice.
    pub async fn unary<T, F, Fut>(&self, idempotent: bool, deadline: Deadline, call: F) -> Result<T>
    where
        F: Fn(Stamped) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        self.attempt(
            self.rotation(),
            self.members.len(),
            idempotent,
            deadline,
            call,
        )
        .await
    }

    /// The token for a stream opened on `member` (authenticating there first if need be).
    pub async fn stream_stamp(
        &self,
        member: &Conn,
    ) -> std::result::Result<auth::Stamp, tonic::Status> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        self.auth.stamp(member, deadline).await
    }

    /// One call on `member`, with the token it needs: got first if there is none, renewed
    /// and the call sent again once if the member refuses it.
    async fn once<T, F, Fut>(
        &self,
        member: &Conn,
        deadline: Deadline,
        call: &F,
    ) -> std::result::Result<tonic::Response<T>, tonic::Status>
    where
        F: Fn(Stamped) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let stamp = self.auth.stamp(member, deadline).await?;
        match call(member.stamped(stamp.clone())).await {
            Err(s) if self.auth.should_renew(&s) => {
                self.auth.forget(&stamp);
                let stamp = self.auth.stamp(member, deadline).await?;
                call(member.stamped(stamp)).await
            }
            answer => answer,
        }
    }

    /// `unary` over the given members in turn, `n` to a round.
    async fn attempt<'a, T, F, Fut>(
        &self,
        members: impl Iterator<Item = &'a Conn>,
        n: usize,
        idempotent: bool,
        deadline: Deadline,
        call: F,
    ) -> Result<T>
    where
        F: Fn(Stamped) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut last: Option<Error> = None;
        for (attempt, member) in members.enumerate() {
            if attempt > 0 {
                crate::observe::Counters::add(&self.counters.retries, 1);
            }
            if attempt > 0 && attempt % n == 0 {
                // A full round failed: back off before the next one (25 ms steps, as Go).
                let pause = Duration::from_millis(25 * (attempt / n).min(20) as u64);
                if crate::runtime::timeout_at(deadline, crate::runtime::sleep(pause))
                    .await
                    .is_err()
                {
                    break;
                }
            }
            match crate::runtime::timeout_at(deadline, self.once(member, deadline, &call)).await {
                Ok(Ok(resp)) => {
                    member.answered.store(true, Ordering::Relaxed);
                    return Ok(resp.into_inner());
                }
                Ok(Err(status)) => {
                    let unsent = never_sent(&status);
                    let from_etcd = status.message().starts_with("etcdserver:");
                    // etcd's own Unavailable answers ("no leader", "leader changed") keep
                    // their kinds but are retried like a lost connection, as Go does.
                    let code_unavailable = status.code() == tonic::Code::Unavailable;
                    let detail = causes(&status);
                    let mut err = Error::from(status);
                    let retry = (code_unavailable || err.kind == ErrorKind::Unavailable)
                        && (idempotent || unsent);
                    if err.kind == ErrorKind::Unavailable && !from_etcd {
                        // The connection failed, not the request: say which member and why.
                        err.message =
                            member.explain(format!("{}: {}{detail}", member.url, err.message));
                    }
                    if !retry {
                        return Err(err);
                    }
                    crate::observe::log(crate::observe::Level::Debug, || {
                        format!("retrying on the next member: {}", err.message)
                    });
                    last = Some(err);
                }
                Err(_) => break,
            }
        }
        Err(match last {
            Some(e) => Error::new(
                e.kind,
                format!("deadline exceeded; last error: {}", e.message),
            ),
            None => Error::new(ErrorKind::Timeout, "deadline exceeded"),
        })
    }
}

pub struct Remote {
    pool: Arc<Pool>,
    watch: watch::Mux,
    keeper: keepalive::Keeper,
}

impl Remote {
    /// Sets up channels to every endpoint; connects lazily, so an unreachable cluster is
    /// reported by the first call, within its deadline.
    pub fn new(config: RemoteConfig) -> Result<Self> {
        if config.endpoints.is_empty() {
            return Err(Error::invalid("no endpoint given"));
        }
        let tls =
            match (config.endpoints.iter().all(|u| is_tls(u)), config.tls) {
                (true, tls) => {
                    let tls = tls.unwrap_or_default();
                    tls.check()?;
                    Some(Arc::new(tls))
                }
                (false, None) => None,
                (false, Some(_)) => return Err(Error::invalid(
                    "TLS settings given for http:// endpoints: use https:// to connect with TLS",
                )),
            };
        let connector = crate::tls::Connector {
            tls,
            timeout: config.connect_timeout,
            alerts: None,
        };
        let mut members = Vec::with_capacity(config.endpoints.len());
        for url in config.endpoints {
            let malformed = |e: &dyn std::fmt::Display| {
                Error::invalid(format!("malformed endpoint {url:?}: {e}"))
            };
            // TLS is the connector's (tonic's own reads the certificates only once), so
            // tonic connects to the plain form of the URL; requests still name the endpoint
            // as given.
            let origin: Uri = url.parse().map_err(|e| malformed(&e))?;
            let endpoint = Endpoint::from_shared(url.replacen("https://", "http://", 1))
                .map_err(|e| malformed(&e))?
                .origin(origin)
                .connect_timeout(config.connect_timeout)
                // etcd closes connections that ping more often than every 5 s, or at all
                // while no stream is open (GOAWAY too_many_pings).
                .http2_keep_alive_interval(Duration::from_secs(30))
                .keep_alive_timeout(Duration::from_secs(10))
                .keep_alive_while_idle(false);
            members.push(Conn {
                channel: endpoint.connect_with_connector_lazy(connector.clone()),
                url,
                answered: Default::default(),
            });
        }
        let pool = Arc::new(Pool {
            members,
            next: AtomicUsize::new(0),
            counters: Default::default(),
            auth: Auth::new(config.credentials),
        });
        Ok(Remote {
            watch: watch::Mux::start(pool.clone()),
            keeper: keepalive::Keeper::start(pool.clone()),
            pool,
        })
    }
}

fn is_tls(url: &str) -> bool {
    url.starts_with("https://")
}

/// True when the cluster refused who the client is (wrong password, a forbidden user):
/// another member or another try will say the same.
pub(crate) fn refused(status: &tonic::Status) -> bool {
    matches!(
        Error::from(status.clone()).kind,
        ErrorKind::Auth | ErrorKind::PermissionDenied
    )
}

/// True when a failed call provably never reached a server: the connection itself failed.
pub(crate) fn never_sent(status: &tonic::Status) -> bool {
    if status.code() != tonic::Code::Unavailable {
        return false;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(e) = source {
        let text = e.to_string();
        if text.contains("tcp connect error")
            || text.contains("client error (Connect)")
            || text.contains("error trying to connect")
        {
            return true;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return true;
            }
        }
        source = e.source();
    }
    false
}

/// The chain of underlying errors, e.g. ": Connection refused (os error 111)".
fn causes(status: &tonic::Status) -> String {
    let mut out = String::new();
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(e) = source {
        let text = e.to_string();
        if !status.message().contains(&text) && !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = e.source();
    }
    out
}

fn check_size(req: &impl prost::Message) -> Result<()> {
    let len = req.encoded_len();
    if len > MAX_SEND_BYTES {
        return Err(Error::new(
            ErrorKind::TooLarge,
            format!("request is too large: {len} bytes (the client sends at most {MAX_SEND_BYTES}; etcd's default limit is 1.5 MiB)"),
        ));
    }
    Ok(())
}

/// One attempt of a unary call whose attempts share the request (`SharedCodec`): what the
/// generated client does, less the copy of the request and the method-name extension.
async fn shared<T, U>(
    ch: Stamped,
    path: &'static str,
    req: Arc<T>,
) -> std::result::Result<tonic::Response<U>, tonic::Status>
where
    T: prost::Message + Send + Sync + 'static,
    U: prost::Message + Default + Send + Sync + 'static,
{
    let mut grpc = tonic::client::Grpc::new(ch)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unknown(format!("Service was not ready: {e}")))?;
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(path);
    grpc.unary(tonic::Request::new(req), path, SharedCodec::default())
        .await
}

fn kv(ch: Stamped) -> KvClient<Stamped> {
    KvClient::new(ch)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX)
}

#[async_trait::async_trait]
impl Etcd for Remote {
    fn counters(&self) -> crate::observe::Totals {
        self.pool.counters.totals()
    }

    async fn range(&self, req: RangeRequest, deadline: Deadline) -> Result<RangeResponse> {
        check_size(&req)?;
        let req = Arc::new(req);
        self.pool
            .unary(true, deadline, |ch| {
                shared(ch, "/etcdserverpb.KV/Range", req.clone())
            })
            .await
    }

    async fn put(&self, req: PutRequest, deadline: Deadline) -> Result<PutResponse> {
        check_size(&req)?;
        let req = Arc::new(req);
        self.pool
            .unary(false, deadline, |ch| {
                shared(ch, "/etcdserverpb.KV/Put", req.clone())
            })
            .await
    }

    async fn delete_range(
        &self,
        req: DeleteRangeRequest,
        deadline: Deadline,
    ) -> Result<DeleteRangeResponse> {
        check_size(&req)?;
        let req = Arc::new(req);
        self.pool
            .unary(false, deadline, |ch| {
                shared(ch, "/etcdserverpb.KV/DeleteRange", req.clone())
            })
            .await
    }

    async fn txn(&self, req: TxnRequest, deadline: Deadline) -> Result<TxnResponse> {
        check_size(&req)?;
        let req = Arc::new(req);
        self.pool
            .unary(false, deadline, |ch| {
                shared(ch, "/etcdserverpb.KV/Txn", req.clone())
            })
            .await
    }

    async fn compact(
        &self,
        req: CompactionRequest,
        deadline: Deadline,
    ) -> Result<CompactionResponse> {
        self.pool
            .unary(
                false,
                deadline,
                |ch| async move { kv(ch).compact(req).await },
            )
            .await
    }

    async fn lease_grant(
        &self,
        req: LeaseGrantRequest,
        deadline: Deadline,
    ) -> Result<LeaseGrantResponse> {
        let resp: LeaseGrantResponse = self
            .pool
            .unary(true, deadline, |ch| async move {
                LeaseClient::new(ch).lease_grant(req).await
            })
            .await?;
        if !resp.error.is_empty() {
            return Err(Error::new(ErrorKind::FailedPrecondition, resp.error));
        }
        Ok(resp)
    }

    async fn lease_revoke(
        &self,
        req: LeaseRevokeRequest,
        deadline: Deadline,
    ) -> Result<LeaseRevokeResponse> {
        self.pool
            .unary(true, deadline, |ch| async move {
                LeaseClient::new(ch).lease_revoke(req).await
            })
            .await
    }

    async fn lease_time_to_live(
        &self,
        req: LeaseTimeToLiveRequest,
        deadline: Deadline,
    ) -> Result<LeaseTimeToLiveResponse> {
        self.pool
            .unary(true, deadline, |ch| async move {
                LeaseClient::new(ch).lease_time_to_live(req).await
            })
            .await
    }

    async fn lease_leases(&self, deadline: Deadline) -> Result<LeaseLeasesResponse> {
        self.pool
            .unary(true, deadline, |ch| async move {
                LeaseClient::new(ch)
                    .lease_leases(LeaseLeasesRequest {})
                    .await
            })
            .await
    }

    async fn member_list(&self, deadline: Deadline) -> Result<MemberListResponse> {
        self.pool
            .unary(true, deadline, |ch| async move {
                ClusterClient::new(ch)
                    .member_list(MemberListRequest {
                        linearizable: false,
                    })
                    .await
            })
            .await
    }

    async fn status(&self, endpoint: Option<&str>, deadline: Deadline) -> Result<StatusResponse> {
        let Some(url) = endpoint else {
            return self
                .pool
                .unary(true, deadline, |ch| async move {
                    MaintenanceClient::new(ch).status(StatusRequest {}).await
                })
                .await;
        };
        let wanted = parse_endpoints(url)?;
        let member = self
            .pool
            .members
            .iter()
            .find(|m| wanted.first() == Some(&m.url))
            .ok_or_else(|| {
                Error::invalid(format!("{url:?} is not one of the client's endpoints"))
            })?;
        // The same retries as any read, but on this member only.
        self.pool
            .attempt(
                std::iter::repeat(member),
                1,
                true,
                deadline,
                |ch| async move { MaintenanceClient::new(ch).status(StatusRequest {}).await },
            )
            .await
    }

    async fn watch(
        &self,
        req: WatchCreateRequest,
        updates: Feed<WatchUpdate>,
        deadline: Deadline,
    ) -> Result<Box<dyn WatchControl>> {
        self.watch.create(req, updates, deadline).await
    }

    fn keep_alive(&self, id: i64, updates: Feed<LeaseUpdate>) -> Result<Box<dyn KeepAliveGuard>> {
        self.keeper.add(id, updates)
    }
}

/// Marks a long-lived stream `hasleader: true`, so a member that loses its leader ends the
/// stream (and the client moves to another member) instead of going silent.
pub(crate) fn require_leader<T>(msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut().insert(
        "hasleader",
        tonic::metadata::MetadataValue::from_static("true"),
    );
    req
}

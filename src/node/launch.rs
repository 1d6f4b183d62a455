//! Starting a member the way etcd is started: etcd's option names and defaults, the
//! initial cluster as `name=peer-url,...`, member ids derived from the peer URLs and the
//! cluster token as etcd derives them, the peer service on the peer URL and etcd's API on
//! the client URLs. `etcdc-node` and the C ABI's `etcdc_node_*` are built on it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use super::compactor::AutoCompaction;
pub use super::grpc::ServerSettings;
use super::member::{member_id, Member, MemberConfig};
use super::peer::{PeerNetwork, PeerService};
use super::raft::NodeId;
use crate::error::{Error, ErrorKind, Result};
pub use crate::tls::ServerTls;
use crate::tls::{ClientTls, Identity, Pem};

/// A member's options, in etcd's vocabulary and with etcd's defaults. No listen URLs means
/// no server: a one-member cluster used in process only.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    pub name: String,
    /// Default: `<name>.etcd`.
    pub data_dir: Option<PathBuf>,
    pub listen_client_urls: Vec<String>,
    pub advertise_client_urls: Vec<String>,
    pub listen_peer_urls: Vec<String>,
    pub initial_advertise_peer_urls: Vec<String>,
    /// `name=peer-url,...`; default: this member alone at its advertised peer URL.
    pub initial_cluster: Option<String>,
    /// `new` or `existing`.
    pub initial_cluster_state: String,
    pub initial_cluster_token: String,
    pub heartbeat_ms: u64,
    pub election_ms: u64,
    pub snapshot_count: u64,
    pub quota_backend_bytes: u64,
    /// A backup (`etcdctl snapshot save` of a member) to start a new data dir from; ignored
    /// when the data dir holds data already.
    pub restore_snapshot: Option<PathBuf>,
    /// The client URLs of the etcd cluster `restore_snapshot` was saved from: the new
    /// cluster mirrors it until promoted (`node::mirror`).
    pub mirror_from: Option<String>,
    /// How this member reaches that cluster: `--mirror-cacert`, `--mirror-cert`,
    /// `--mirror-key`, `--mirror-user` (the store keeps only the URLs).
    pub mirror_access: super::mirror::SourceAccess,
    /// etcd's `--force-new-cluster`: this member's data dir becomes a cluster of this member
    /// alone, with what it had committed (`raft::force_new_cluster`).
    pub force_new_cluster: bool,
    /// etcd's `--strict-reconfig-check` (on by default).
    pub strict_reconfig_check: bool,
    /// etcd's `--experimental-initial-corrupt-check` (`node::corrupt`).
    pub initial_corrupt_check: bool,
    /// etcd's `--unsafe-no-fsync`: the write-ahead log is never synced, so a power loss
    /// loses acknowledged writes. For tests only.
    pub unsafe_no_fsync: bool,
    /// TLS on `https://` client URLs: `--cert-file`, `--key-file`, `--trusted-ca-file`,
    /// `--client-cert-auth`, `--auto-tls`.
    pub client_tls: ServerTls,
    /// TLS between members at `https://` peer URLs: the `--peer-*` flags. The certificate
    /// is also the one a member shows the others when it connects to them.
    pub peer_tls: ServerTls,
    /// `--cipher-suites`: the TLS 1.2 suites allowed (Go's names); empty: rustls' defaults.
    pub cipher_suites: Vec<String>,
    /// `--auth-token-ttl` (seconds a simple token lives unused) and `--bcrypt-cost`.
    pub auth: crate::node::auth::AuthSettings,
    /// `--max-request-bytes`, `--max-txn-ops`.
    pub limits: crate::node::Limits,
    /// `--grpc-keepalive-interval`, `--grpc-keepalive-timeout`, `--max-concurrent-streams`.
    pub grpc: ServerSettings,
    /// `--auto-compaction-mode` and `--auto-compaction-retention`; None: off.
    pub auto_compaction: Option<AutoCompaction>,
    /// `--listen-metrics-urls`: more URLs serving `/metrics` and `/health` only (an
    /// `https://` one with the client certificate).
    pub listen_metrics_urls: Vec<String>,
}

impl Default for NodeOptions {
    fn default() -> Self {
        NodeOptions {
            name: "default".into(),
            data_dir: None,
            listen_client_urls: vec!["http://localhost:2379".into()],
            advertise_client_urls: vec!["http://localhost:2379".into()],
            listen_peer_urls: vec!["http://localhost:2380".into()],
            initial_advertise_peer_urls: vec!["http://localhost:2380".into()],
            initial_cluster: None,
            initial_cluster_state: "new".into(),
            initial_cluster_token: "etcd-cluster".into(),
            heartbeat_ms: 100,
            election_ms: 1000,
            snapshot_count: 100_000,
            quota_backend_bytes: 0,
            restore_snapshot: None,
            mirror_from: None,
            mirror_access: Default::default(),
            force_new_cluster: false,
            strict_reconfig_check: true,
            initial_corrupt_check: false,
            unsafe_no_fsync: false,
            client_tls: ServerTls::default(),
            peer_tls: ServerTls::default(),
            cipher_suites: Vec::new(),
            auth: Default::default(),
            limits: Default::default(),
            grpc: Default::default(),
            auto_compaction: None,
            listen_metrics_urls: Vec::new(),
        }
    }
}

/// How `parse_initial_cluster` keys a member listed without a name.
const UNNAMED: char = '\0';

/// `name=url,name=url,...` → name → its peer URLs, in order of appearance. A member without
/// a name (`=url`: what `etcdctl member add` prints for a member added but not started yet)
/// is one member per URL, keyed by a name no flag can give (`UNNAMED` and the URL).
pub fn parse_initial_cluster(spec: &str) -> Result<BTreeMap<String, Vec<String>>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, url) = item.split_once('=').ok_or_else(|| {
            Error::invalid(format!(
                "malformed initial-cluster entry {item:?}: expected name=http://host:port"
            ))
        })?;
        let scheme_ok = ["http://", "https://", "unix://"]
            .iter()
            .any(|s| url.starts_with(s) && url.len() > s.len());
        if name.starts_with(UNNAMED) || !scheme_ok {
            return Err(Error::invalid(format!(
                "malformed initial-cluster entry {item:?}: expected name=http://host:port"
            )));
        }
        let name = match name {
            "" => format!("{UNNAMED}{url}"),
            name => name.to_string(),
        };
        out.entry(name).or_default().push(url.to_string());
    }
    if out.is_empty() {
        return Err(Error::invalid("initial-cluster is empty"));
    }
    Ok(out)
}

/// A listener of one of the member's URLs, and the TLS it speaks (None: plain).
struct Listener {
    socket: Socket,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
}

/// A TCP port, or a Unix socket (etcd's `unix://PATH` URLs, plain).
enum Socket {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

/// The socket path of a `unix://` URL, as etcd takes it: everything after the scheme
/// (`unix://etcd.unix:1` is the file `etcd.unix:1` in the working directory).
pub(crate) fn unix_path(url: &str) -> Option<&str> {
    url.strip_prefix("unix://").filter(|p| !p.is_empty())
}

/// Starts the server `serve` makes on each connection stream of `socket`: TLS with `tls`
/// or plain TCP with Nagle off, or a Unix socket.
macro_rules! serve_on {
    ($socket:expr, $tls:expr, |$incoming:ident| $serve:expr) => {
        match ($socket, $tls) {
            (Socket::Tcp(tcp), Some(tls)) => {
                let $incoming = crate::tls::incoming(tcp, tls);
                tokio::spawn($serve)
            }
            (Socket::Tcp(tcp), None) => {
                let $incoming = super::nodelay(tcp);
                tokio::spawn($serve)
            }
            (Socket::Unix(unix), _) => {
                let $incoming = tokio_stream::wrappers::UnixListenerStream::new(unix);
                tokio::spawn($serve)
            }
        }
    };
}

impl Listener {
    /// Binds `url`; an `https://` one speaks TLS with `tls` (made by `config`, once).
    async fn bind(
        url: &str,
        tls: &ServerTls,
        flag: &str,
        config: &mut dyn FnMut() -> Result<Arc<tokio_rustls::rustls::ServerConfig>>,
    ) -> Result<Listener> {
        if let Some(path) = unix_path(url) {
            // As etcd: a socket file left by an earlier run is replaced.
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(Error::new(
                        ErrorKind::FailedPrecondition,
                        format!("cannot listen on {url}: {e}"),
                    ))
                }
                _ => {}
            }
            if tls.is_set() {
                crate::observe::log(crate::observe::Level::Warn, || {
                    format!(
                        "{url} is a plain Unix socket: the --{flag}* TLS flags do not apply to it"
                    )
                });
            }
            let unix = tokio::net::UnixListener::bind(path).map_err(|e| {
                Error::new(
                    ErrorKind::FailedPrecondition,
                    format!("cannot listen on {url}: {e}"),
                )
            })?;
            return Ok(Listener {
                socket: Socket::Unix(unix),
                tls: None,
            });
        }
        let (https, addr) = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
            (Some(addr), _) => (true, addr),
            (None, Some(addr)) => (false, addr),
            _ => {
                return Err(Error::invalid(format!(
                    "{url:?}: expected http://host:port, https://host:port or unix://path"
                )))
            }
        };
        let tls = match (https, tls.is_set()) {
            (true, true) => Some(config()?),
            (true, false) => {
                return Err(Error::invalid(format!(
                    "{url}: an https URL needs --{flag}cert-file and --{flag}key-file, or --{flag}auto-tls"
                )))
            }
            (false, set) => {
                if set {
                    crate::observe::log(crate::observe::Level::Warn, || {
                        format!("{url} is http: the --{flag}* TLS flags do not apply to it")
                    });
                }
                None
            }
        };
        let addr = addr.trim_end_matches('/');
        let tcp = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            Error::new(
                ErrorKind::FailedPrecondition,
                format!("cannot listen on {url}: {e}"),
            )
        })?;
        Ok(Listener {
            socket: Socket::Tcp(tcp),
            tls,
        })
    }

    /// Binds every URL of `urls`, the TLS config made once for all of them.
    async fn bind_all(
        urls: &[String],
        tls: &ServerTls,
        flag: &str,
        cipher_suites: &[String],
        auto_dir: &std::path::Path,
    ) -> Result<Vec<Listener>> {
        let hosts: Vec<String> = urls
            .iter()
            .filter_map(|u| u.split("://").nth(1))
            .filter_map(|a| {
                a.rsplit_once(':')
                    .map(|(h, _)| h.trim_matches(['[', ']']).to_string())
            })
            .collect();
        let mut made = None;
        let mut config = || -> Result<Arc<tokio_rustls::rustls::ServerConfig>> {
            if made.is_none() {
                made = Some(tls.config(flag, cipher_suites, auto_dir, &hosts)?);
            }
            Ok(made.clone().expect("made"))
        };
        let mut out = Vec::new();
        for url in urls {
            out.push(Listener::bind(url, tls, flag, &mut config).await?);
        }
        Ok(out)
    }
}

/// How a member connects to peers at `https://` URLs, from the `--peer-*` flags: it shows
/// its peer certificate and verifies theirs against `--peer-trusted-ca-file` (with
/// `--peer-auto-tls`, self-signed certificates, unverified as in etcd). None without flags.
fn peer_client_tls(tls: &ServerTls, fixtures: &std::path::Path) -> Result<Option<ClientTls>> {
    if !tls.is_set() {
        return Ok(None);
    }
    let identity = match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => Identity {
            cert: Pem::File(cert.clone()),
            key: Pem::File(key.clone()),
        },
        _ => Identity {
            cert: Pem::File(fixtures.join("peer/cert.pem")),
            key: Pem::File(fixtures.join("peer/key.pem")),
        },
    };
    Ok(Some(ClientTls {
        ca: tls.trusted_ca_file.clone().map(Pem::File),
        identity: Some(identity),
        server_name: None,
        insecure: tls.auto_tls && tls.cert_file.is_none(),
    }))
}

/// A started member with its servers.
pub struct RunningNode {
    pub member: Arc<Member>,
    pub id: NodeId,
    /// Each server's stop and task: first the peer servers, `peer_servers` of them.
    stops: Vec<oneshot::Sender<()>>,
    servers: Vec<JoinHandle<Result<()>>>,
    peer_servers: usize,
}

impl RunningNode {
    /// Stops the member as etcd does: the client servers (and the member's own tasks)
    /// first; then, on a leader, leadership handed to another voter while peers are still
    /// answered; then the peer servers and the member. Its data stays for a restart.
    pub async fn stop(mut self) {
        let others = self.stops.split_off(self.peer_servers);
        let other_servers = self.servers.split_off(self.peer_servers);
        stop_all(others, other_servers).await;
        self.member.hand_over().await;
        stop_all(self.stops, self.servers).await;
        self.member.shutdown().await;
    }
}

async fn stop_all(stops: Vec<oneshot::Sender<()>>, servers: Vec<JoinHandle<Result<()>>>) {
    for s in stops {
        let _ = s.send(());
    }
    for t in servers {
        let _ = t.await;
    }
}

/// Starts a member with `opts`: binds its URLs (failing clearly when one is taken), opens
/// (or creates) its data dir, joins or forms the cluster, serves peers and clients.
pub async fn start(opts: NodeOptions) -> Result<RunningNode> {
    if opts.initial_cluster_state != "new" && opts.initial_cluster_state != "existing" {
        return Err(Error::invalid(format!(
            "initial-cluster-state must be \"new\" or \"existing\", not {:?}",
            opts.initial_cluster_state
        )));
    }
    if let Some(tls) = &opts.mirror_access.tls {
        tls.check().map_err(|e| {
            Error::invalid(format!(
                "--mirror-cacert/--mirror-cert/--mirror-key: {}",
                e.message
            ))
        })?;
    }
    let default_cluster = format!(
        "{}={}",
        opts.name,
        opts.initial_advertise_peer_urls
            .join(&format!(",{}=", opts.name))
    );
    let cluster =
        parse_initial_cluster(opts.initial_cluster.as_deref().unwrap_or(&default_cluster))?;
    let mine = cluster.get(&opts.name).ok_or_else(|| {
        Error::invalid(format!(
            "couldn't find local name {:?} in the initial cluster configuration",
            opts.name
        ))
    })?;
    let mut advertised = opts.initial_advertise_peer_urls.clone();
    advertised.sort();
    let mut listed = mine.clone();
    listed.sort();
    if advertised != listed {
        return Err(Error::invalid(format!(
            "--initial-cluster has {}={} but --initial-advertise-peer-urls has {}",
            opts.name,
            mine.join(","),
            opts.initial_advertise_peer_urls.join(",")
        )));
    }
    let ids: BTreeMap<NodeId, String> = cluster
        .values()
        .map(|urls| {
            (
                member_id(urls, &opts.initial_cluster_token),
                urls[0].clone(),
            )
        })
        .collect();
    if ids.len() != cluster.len() {
        return Err(Error::invalid(
            "two members of initial-cluster share peer URLs",
        ));
    }
    let id = member_id(mine, &opts.initial_cluster_token);
    let dir = opts
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{}.etcd", opts.name)));

    let empty = std::fs::read_dir(&dir).map_or(true, |mut d| d.next().is_none());
    // A data dir as `etcdctl snapshot restore` makes it (or etcd 3.4 leaves it): etcd's
    // database at member/snap/db and nothing of the node's yet. The member starts from that
    // database with the members of --initial-cluster (those the restore wrote into etcd's
    // WAL, as etcd then reads them); etcd's files stay where they are.
    let etcd_db = dir.join("member").join("snap").join("db");
    let etcd_only = etcd_db.is_file()
        && std::fs::read_dir(&dir).is_ok_and(|d| d.flatten().all(|e| e.file_name() == "member"));
    if etcd_only {
        super::raft::restore(&etcd_db, &dir, ids.clone(), None)?;
        crate::observe::log(crate::observe::Level::Info, || {
            format!(
                "started from etcd's data dir {}: the store of member/snap/db, the members of --initial-cluster",
                dir.display()
            )
        });
    }
    match (&opts.restore_snapshot, &opts.mirror_from) {
        (Some(backup), mirror) if empty => {
            if let Some(source) = mirror {
                crate::remote::parse_endpoints(source)?;
            }
            super::raft::restore(backup, &dir, ids.clone(), mirror.clone())?;
        }
        (None, Some(_)) if empty => {
            return Err(Error::invalid(
                "--mirror-from starts from a snapshot of that cluster: save one with etcdctl snapshot save and give it to every member with --restore-snapshot",
            ))
        }
        _ => {}
    }
    if opts.force_new_cluster && !empty {
        let peer = ids.get(&id).cloned().unwrap_or_default();
        super::raft::force_new_cluster(&dir, id, peer)?;
        crate::observe::log(crate::observe::Level::Warn, || {
            format!("--force-new-cluster: member {id:x} is now alone in a new cluster, with the data it had committed; add members back with etcdctl member add")
        });
    }
    if opts.listen_peer_urls.is_empty() && ids.len() > 1 {
        return Err(Error::invalid(
            "a member of a cluster of several needs listen-peer-urls to reach the others",
        ));
    }
    let fixtures = dir.join("fixtures");
    let peer_listeners = Listener::bind_all(
        &opts.listen_peer_urls,
        &opts.peer_tls,
        "peer-",
        &opts.cipher_suites,
        &fixtures.join("peer"),
    )
    .await?;
    let client_listeners = Listener::bind_all(
        &opts.listen_client_urls,
        &opts.client_tls,
        "",
        &opts.cipher_suites,
        &fixtures.join("client"),
    )
    .await?;
    let metrics_listeners = Listener::bind_all(
        &opts.listen_metrics_urls,
        &opts.client_tls,
        "",
        &opts.cipher_suites,
        &fixtures.join("client"),
    )
    .await?;

    let network = PeerNetwork::new(ids.clone(), peer_client_tls(&opts.peer_tls, &fixtures)?);
    let service = PeerService::new(network.clone());
    let mut stops = Vec::new();
    let mut servers = Vec::new();
    // Each server stops when its sender is dropped or fires (`RunningNode::stop`).
    let mut stop_signal = || {
        let (stop, stopped) = oneshot::channel::<()>();
        stops.push(stop);
        async {
            let _ = stopped.await;
        }
    };
    let peer_servers = peer_listeners.len();
    for l in peer_listeners {
        let (service, stopped) = (service.clone(), stop_signal());
        servers.push(serve_on!(l.socket, l.tls, |incoming| super::peer::serve(
            service, incoming, stopped
        )));
    }
    let mut config = MemberConfig::new(id, dir, ids);
    config.heartbeat_ms = opts.heartbeat_ms;
    config.election_ms = opts.election_ms;
    config.snapshot_count = opts.snapshot_count;
    config.join = opts.initial_cluster_state == "existing";
    config.token = opts.initial_cluster_token.clone();
    config.name = opts.name.clone();
    // A member without client listeners is reached in-process only: it advertises nothing.
    if !opts.listen_client_urls.is_empty() {
        config.client_urls = opts.advertise_client_urls.clone();
    }
    if opts.quota_backend_bytes > 0 {
        config.quota_bytes = opts.quota_backend_bytes;
    }
    config.unsafe_no_fsync = opts.unsafe_no_fsync;
    config.auth = opts.auth;
    config.limits = opts.limits;
    config.strict_reconfig = opts.strict_reconfig_check;
    config.mirror_access = opts.mirror_access.clone();
    let member = Arc::new(Member::start(config, network.clone(), Arc::new(network.clone())).await?);
    network.set_member(&member);
    let early = network.clone();
    member.on_leader_append(move |a| early.send_early(a));
    service.set_member(member.clone());
    if opts.initial_corrupt_check {
        if let Err(e) = super::corrupt::initial_check(&member, id).await {
            member.shutdown().await;
            return Err(e);
        }
    }
    for l in client_listeners {
        let (member, stopped, grpc) = (member.clone(), stop_signal(), opts.grpc);
        servers.push(serve_on!(l.socket, l.tls, |incoming| super::grpc::serve(
            member, grpc, incoming, stopped
        )));
    }
    for l in metrics_listeners {
        let (member, stopped) = (member.clone(), stop_signal());
        servers.push(serve_on!(l.socket, l.tls, |incoming| {
            super::grpc::serve_metrics(member, incoming, stopped)
        }));
    }
    {
        let (member, stopped) = (member.clone(), stop_signal());
        servers.push(tokio::spawn(async move {
            super::mirror::run(member, id, stopped).await;
            Ok(())
        }));
    }
    if let Some(policy) = opts.auto_compaction {
        let (member, stopped) = (member.clone(), stop_signal());
        servers.push(tokio::spawn(async move {
            super::compactor::run(member, id, policy, stopped).await;
            Ok(())
        }));
    }
    Ok(RunningNode {
        member,
        id,
        stops,
        servers,
        peer_servers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_ids_and_initial_cluster_as_etcd() {
        // etcd's id for the default single member (etcd prints 8e9e05c52164694d).
        assert_eq!(
            format!(
                "{:x}",
                member_id(&["http://localhost:2380".into()], "etcd-cluster")
            ),
            "8e9e05c52164694d"
        );
        let c = parse_initial_cluster("a=http://127.0.0.1:1,b=http://127.0.0.1:2").unwrap();
        assert_eq!(c["b"], ["http://127.0.0.1:2"]);
        assert!(parse_initial_cluster("a:http://x").is_err());
        assert!(parse_initial_cluster("").is_err());
        assert!(parse_initial_cluster("a=ftp://x").is_err());
        // Members added but not started yet have no name: each is its own member.
        let c =
            parse_initial_cluster("a=http://127.0.0.1:1,=http://127.0.0.1:2,=http://127.0.0.1:3")
                .unwrap();
        assert_eq!(c.len(), 3);
        assert_eq!(c["\0http://127.0.0.1:3"], ["http://127.0.0.1:3"]);
    }
}

//! The embedded node: a member of etcdc's replicated store inside the calling process,
//! started with etcd's options, and clients bound to it that use every `etcdc_*` call.

use std::ffi::c_char;
use std::sync::Arc;

use super::client::{etcdc_client, etcdc_client_options, Client, CLIENTS};
use super::guard::{c_str, free_box, guard, new_boxed, opt_c_str, opts_or, out, set};
use super::handle::Table;
use super::status::etcdc_status;
use crate::error::{Error, Result};
use crate::node::launch::{self, NodeOptions, RunningNode, ServerTls};

/// A running member. Stop and free it with `etcdc_node_stop`.
pub struct etcdc_node {
    _opaque: [u8; 0],
}

/// Options for `etcdc_node_start`, in etcd's vocabulary. The defaults make a one-member
/// cluster used in process only: name "default", data dir "default.etcd", no listen URLs.
pub struct etcdc_node_options {
    opts: NodeOptions,
}

impl Default for etcdc_node_options {
    fn default() -> Self {
        etcdc_node_options {
            opts: NodeOptions {
                listen_client_urls: Vec::new(),
                advertise_client_urls: Vec::new(),
                listen_peer_urls: Vec::new(),
                ..NodeOptions::default()
            },
        }
    }
}

pub(crate) struct EmbeddedNode {
    running: std::sync::Mutex<Option<RunningNode>>,
    member: Arc<crate::node::member::Member>,
    id: u64,
    rt: tokio::runtime::Handle,
}

pub(crate) static NODES: Table<EmbeddedNode> = Table::new(4, "node");

fn urls(p: *const c_char, name: &str) -> Result<Vec<String>> {
    Ok(c_str(p, name)?
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect())
}

/// New node options with the in-process defaults. Free with `etcdc_node_options_free`.
#[no_mangle]
pub extern "C" fn etcdc_node_options_new() -> *mut etcdc_node_options {
    new_boxed()
}

/// Frees node options. NULL does nothing.
#[no_mangle]
pub extern "C" fn etcdc_node_options_free(opts: *mut etcdc_node_options) {
    free_box(opts)
}

/// The member's name (etcd's `--name`, default "default").
#[no_mangle]
pub extern "C" fn etcdc_node_options_set_name(
    opts: *mut etcdc_node_options,
    name: *const c_char,
) -> etcdc_status {
    set(opts, |o| {
        o.opts.name = c_str(name, "name")?.to_string();
        Ok(())
    })
}

/// Where the member keeps its log and snapshots (`--data-dir`, default "<name>.etcd").
/// Started again on the same dir, the member comes back with all its data.
#[no_mangle]
pub extern "C" fn etcdc_node_options_set_data_dir(
    opts: *mut etcdc_node_options,
    dir: *const c_char,
) -> etcdc_status {
    set(opts, |o| {
        o.opts.data_dir = Some(c_str(dir, "dir")?.into());
        Ok(())
    })
}

/// Where to serve etcd's gRPC API ("http://host:port,..."; "https://" with
/// `etcdc_node_options_set_client_tls` or `_auto_tls`; default: nowhere, in process only).
#[no_mangle]
pub extern "C" fn etcdc_node_options_set_listen_client_urls(
    opts: *mut etcdc_node_options,
    urls_list: *const c_char,
) -> etcdc_status {
    set(opts, |o| {
        o.opts.listen_client_urls = urls(urls_list, "urls")?;
        Ok(())
    })
}

/// The client URLs the member tells others about (`--advertise-client-urls`).
#[no_mangle]
pub extern "C" fn etcdc_node_options_set_advertise_client_urls(
    opts: *mut etcdc_node_options,
    urls_list: *const c_char,
) -> etcdc_status {
    set(opts, |o| {
        o.opts.advertise_client_urls = urls(urls_list, "urls")?;
        Ok(())
    })
}

/// Where to listen for the other members (`--listen-peer-urls`; needed in a cluster of
/// several).
#[no_mangle]
pub extern "C" fn etcdc_node_options_set_listen_peer_urls(
    opts: *mut etcdc_node_options,
    urls_list: *const c_char,
) -> etcdc_status {
    set(opts, |o| {
        o.opts.listen_peer_urls = urls(urls_list, "urls")?;
        Ok(())
    })
}

/// This member's peer URLs as the others reach them (`--initial-advertise-peer-urls`).
#[no_mangle]
pub extern "C" fn etcdc_node_options_set_initial_advertise_peer_urls(
    opts: *mut etcdc_node_options,
    urls_list: *const c_char,
) -> etcdc_status {
    set(opts, |o| {
        o.opts.initial_advertise_peer_urls = urls(urls_list, "urls")?;
        Ok(())
    })
}

/// Every member of the initial cluster, "name=http://host:port,..." (`--initial-cluster`).
/// Members started with the same list form the cluster with no further calls.
#[no_mangle]
pub extern "C" fn etcdc_node_options_set_initial_cluster(
    opts: *mut etcdc_node_options,
    cluster: *const c_char,
) -> etcdc_status {
    set(opts, |o| {
        let spec = c_str(cluster, "cluster")?;
        launch::parse_initial_cluster(spec)?;
        o.opts.initial_cluster = Some(spec.to_string());
        Ok(())
    })
}

/// "new" (the default) or "existing" (`--initial-cluster-state`): "existing" joins a running
/// cluster after `etcdctl member add` (with the initial cluster it printed), waiting for the
/// leader instead of forming a cluster.
#[no_mangle]
pub extern "C" fn etcdc_node_options_set_initial_cluster_state(
    opts: *mut etcdc_node_options,
    state: *const c_char,
) -> etcdc_status {
    set(opts, |o| {
        let state = c_str(state, "state")?;
        if state != "new" && state != "existing" {
            return Err(Error::invalid(format!(
                "initial cluster state must be \"new\" or \"existing\", not {state:?}"
            )));
        }
        o.opts.initial_cluster_state = state.to_string();
        Ok(())
    })
}

/// The cluster's token (`--initial-cluster-token`, default "etcd-cluster"): member ids
/// derive from it and the peer URLs.
#[no_mangle]
pub extern "C" fn etcdc_node_options_set_initial_cluster_token(
    opts: *mut etcdc_node_options,
    token: *const c_char,
) -> etcdc_status {
    set(opts, |o| {
        o.opts.initial_cluster_token = c_str(token, "token")?.to_string();
        Ok(())
    })
}

/// Raft's heartbeat interval and election timeout in ms (etcd's defaults: 100 and 1000;
/// the election timeout must be at least five heartbeats).
#[no_mangle]
pub extern "C" fn etcdc_node_options_set_timing_ms(
    opts: *mut etcdc_node_options,
    heartbeat_ms: u64,
    election_ms: u64,
) -> etcdc_status {
    set(opts, |o| {
        if heartbeat_ms == 0 || election_ms < 5 * heartbeat_ms {
            return Err(Error::invalid(format!(
                "the election timeout ({election_ms} ms) must be at least five heartbeats ({heartbeat_ms} ms)"
            )));
        }
        o.opts.heartbeat_ms = heartbeat_ms;
        o.opts.election_ms = election_ms;
        Ok(())
    })
}

/// Applied entries between snapshots (`--snapshot-count`, default 100000; > 0).
#[no_mangle]
pub extern "C" fn etcdc_node_options_set_snapshot_count(
    opts: *mut etcdc_node_options,
    count: u64,
) -> etcdc_status {
    set(opts, |o| {
        if count == 0 {
            return Err(Error::invalid("snapshot count must be positive"));
        }
        o.opts.snapshot_count = count;
        Ok(())
    })
}

/// The space quota (`--quota-backend-bytes`; 0, the default: etcd's 2 GiB). A write that
/// would take the store past it raises the NOSPACE alarm: from then on writes that add data
/// fail with `ETCDC_ERR_NO_SPACE` ("etcdserver: mvcc: database space exceeded") on every
/// member, deletes and compaction still work, until the alarm is disarmed (`etcdctl alarm
/// disarm`).
#[no_mangle]
pub extern "C" fn etcdc_node_options_set_quota_backend_bytes(
    opts: *mut etcdc_node_options,
    bytes: u64,
) -> etcdc_status {
    set(opts, |o| {
        o.opts.quota_backend_bytes = bytes;
        Ok(())
    })
}

/// etcd's TLS flags from C: `cert_file` and `key_file` (both or neither; NULL, NULL clears),
/// `trusted_ca_file` (may be NULL) and `client_cert_auth` (needs the CA).
fn server_tls(
    tls: &mut ServerTls,
    cert_file: *const c_char,
    key_file: *const c_char,
    trusted_ca_file: *const c_char,
    client_cert_auth: bool,
) -> Result<()> {
    let cert = opt_c_str(cert_file, "cert_file")?;
    let key = opt_c_str(key_file, "key_file")?;
    if cert.is_some() != key.is_some() {
        return Err(Error::invalid(
            "a certificate and its key go together: give both or neither",
        ));
    }
    let ca = opt_c_str(trusted_ca_file, "trusted_ca_file")?;
    if client_cert_auth && ca.is_none() {
        return Err(Error::invalid(
            "client_cert_auth needs trusted_ca_file, the CA that signs the client certificates",
        ));
    }
    tls.cert_file = cert.map(Into::into);
    tls.key_file = key.map(Into::into);
    tls.trusted_ca_file = ca.map(Into::into);
    tls.client_cert_auth = client_cert_auth;
    Ok(())
}

/// TLS on the member's `https://` client URLs (etcd's `--cert-file`, `--key-file`,
/// `--trusted-ca-file`, `--client-cert-auth`): the files are PEM, read when the member
/// starts and again whenever they change; with `client_cert_auth`, clients must present a
/// certificate signed by `trusted_ca_file`.
#[no_mangle]
pub extern "C" fn etcdc_node_options_set_client_tls(
    opts: *mut etcdc_node_options,
    cert_file: *const c_char,
    key_file: *const c_char,
    trusted_ca_file: *const c_char,
    client_cert_auth: bool,
) -> etcdc_status {
    set(opts, |o| {
        server_tls(
            &mut o.opts.client_tls,
            cert_file,
            key_file,
            trusted_ca_file,
            client_cert_auth,
        )
    })
}

/// TLS between members at `https://` peer URLs (etcd's `--peer-*` flags), as
/// `etcdc_node_options_set_client_tls`. The certificate is also what the member shows the
/// others when it connects to them; theirs are verified against `trusted_ca_file`.
#[no_mangle]
pub extern "C" fn etcdc_node_options_set_peer_tls(
    opts: *mut etcdc_node_options,
    cert_file: *const c_char,
    key_file: *const c_char,
    trusted_ca_file: *const c_char,
    client_cert_auth: bool,
) -> etcdc_status {
    set(opts, |o| {
        server_tls(
            &mut o.opts.peer_tls,
            cert_file,
            key_file,
            trusted_ca_file,
            client_cert_auth,
        )
    })
}

/// etcd's `--auto-tls` and `--peer-auto-tls`: a self-signed certificate made at the first
/// start and kept in the data dir, for https URLs without certificate files. Clients must
/// skip verification (`etcdctl --insecure-skip-tls-verify`); for tests and trusted networks.
#[no_mangle]
pub extern "C" fn etcdc_node_options_set_auto_tls(
    opts: *mut etcdc_node_options,
    client: bool,
    peer: bool,
) -> etcdc_status {
    set(opts, |o| {
        o.opts.client_tls.auto_tls = client;
        o.opts.peer_tls.auto_tls = peer;
        Ok(())
    })
}

/// The TLS 1.2 cipher suites allowed, by Go's names, comma-separated (etcd's
/// `--cipher-suites`); "" for the defaults. A name not supported fails `etcdc_node_start`.
#[no_mangle]
pub extern "C" fn etcdc_node_options_set_cipher_suites(
    opts: *mut etcdc_node_options,
    suites: *const c_char,
) -> etcdc_status {
    set(opts, |o| {
        o.opts.cipher_suites = urls(suites, "suites")?;
        Ok(())
    })
}

/// Starts a member: opens (or creates) its data dir, joins or forms its cluster, serves its
/// URLs. Returns once the member runs (a cluster of several elects its leader as its
/// members come up). `opts` may be NULL for the in-process defaults.
#[no_mangle]
pub extern "C" fn etcdc_node_start(
    opts: *const etcdc_node_options,
    node_out: *mut *mut etcdc_node,
) -> etcdc_status {
    guard(|| {
        let out = out(node_out, "node_out")?;
        let default = etcdc_node_options::default();
        let opts = opts_or(opts, &default).opts.clone();
        let rt = crate::runtime::handle()?;
        let running = rt.block_on(launch::start(opts))?;
        let member = running.member.clone();
        let id = running.id;
        out.write(NODES.insert(EmbeddedNode {
            running: std::sync::Mutex::new(Some(running)),
            member,
            id,
            rt,
        }));
        Ok(())
    })
}

/// A client bound to the member: every `etcdc_*` call works on it, in process (no socket).
/// `opts` may be NULL (only its call timeout applies). Free it with `etcdc_client_free`
/// (before or after the node). It is the service itself: etcd's authentication, which
/// checks clients over the network, does not apply to it.
#[no_mangle]
pub extern "C" fn etcdc_node_client(
    node: *const etcdc_node,
    opts: *const etcdc_client_options,
    client_out: *mut *mut etcdc_client,
) -> etcdc_status {
    guard(|| {
        let out = out(client_out, "client_out")?;
        let n = NODES.get(node)?;
        let defaults = etcdc_client_options::default();
        let opts = opts_or(opts, &defaults);
        out.write(CLIENTS.insert(Client {
            etcd: n.member.clone(),
            timeout: opts.call_timeout(),
            rt: n.rt.clone(),
            inflight: Default::default(),
            remote: None,
        }));
        Ok(())
    })
}

/// The member's view of Raft: its id (etcd's 16-hex-digit member id), the leader's id
/// (0: none known), the term, the last applied log index and whether it leads. Any output
/// pointer may be NULL.
#[no_mangle]
pub extern "C" fn etcdc_node_status(
    node: *const etcdc_node,
    member_id: *mut u64,
    leader_id: *mut u64,
    term: *mut u64,
    applied_index: *mut u64,
    is_leader: *mut bool,
) -> etcdc_status {
    guard(|| {
        let n = NODES.get(node)?;
        let m = n.member.raft().metrics().borrow().clone();
        let leader = m.current_leader.unwrap_or(0);
        let put = |p: *mut u64, v: u64| {
            if !p.is_null() {
                if let Ok(o) = out(p, "out") {
                    o.write(v);
                }
            }
        };
        put(member_id, n.id);
        put(leader_id, leader);
        put(term, m.current_term);
        put(applied_index, m.last_applied.map_or(0, |l| l.index));
        if !is_leader.is_null() {
            out(is_leader, "is_leader")?.write(leader == n.id);
        }
        Ok(())
    })
}

/// Stops the member gracefully (its servers, then Raft) and frees it; its data stays in
/// its data dir for a restart. Calls in flight are answered; remote clients' watches,
/// keep-alives and observations end at once with etcd's "server stopped" (they move to
/// another member); connections still open a second later (clients that stopped reading)
/// are cut.
/// Clients bound to it then fail with `ETCDC_ERR_UNAVAILABLE`. NULL does nothing.
#[no_mangle]
pub extern "C" fn etcdc_node_stop(node: *mut etcdc_node) -> etcdc_status {
    if node.is_null() {
        return etcdc_status::ETCDC_OK;
    }
    guard(|| {
        let n = NODES.remove(node)?;
        let running = n.running.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(r) = running {
            n.rt.block_on(r.stop());
        }
        Ok(())
    })
}

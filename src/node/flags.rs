//! `etcdc-node`'s command line, as etcd's: the same flag names, parsed as Go's flag package
//! parses them (`-flag` or `--flag`, `--flag=value` or `--flag value`, a boolean alone is
//! true), the same `ETCD_*` environment variables (a flag wins over its variable), the same
//! defaults, and etcd's YAML `--config-file` (which, as in etcd, replaces flags and
//! variables). Every etcd 3.4 flag is known: one the node does not support is refused with
//! the reason unless it is given etcd's default; one that means nothing for the node (a
//! bbolt or WAL tuning) is taken with a notice saying so — never silently.

use std::time::Duration;

use crate::node::launch::{AutoCompaction, NodeOptions};

pub const USAGE: &str = "usage: etcdc-node [flags], with etcd 3.4's flags:
  --name NAME  --data-dir DIR  --config-file FILE (etcd's YAML; flags are then ignored)
  --listen-client-urls URLS  --advertise-client-urls URLS  --listen-metrics-urls URLS
  --listen-peer-urls URLS  --initial-advertise-peer-urls URLS
  --initial-cluster NAME=URL,...  --initial-cluster-state new|existing
  --initial-cluster-token TOKEN  --heartbeat-interval MS  --election-timeout MS
  --snapshot-count N  --quota-backend-bytes N  --max-request-bytes N  --max-txn-ops N
  --auto-compaction-mode periodic|revision  --auto-compaction-retention 1h|N
  --grpc-keepalive-interval 2h  --grpc-keepalive-timeout 20s  --max-concurrent-streams N
  --cert-file FILE --key-file FILE  --trusted-ca-file FILE  --client-cert-auth  --auto-tls
  --peer-cert-file FILE --peer-key-file FILE  --peer-trusted-ca-file FILE
  --peer-client-cert-auth  --peer-auto-tls  --cipher-suites SUITE,...
  --auth-token simple|jwt,pub-key=FILE,priv-key=FILE,sign-method=ES256[,ttl=5m]
  --auth-token-ttl SECONDS  --bcrypt-cost 4..31
  --logger zap  --log-outputs stderr|stdout|FILE,...  --log-level debug|info|warn|error
  --metrics basic|extensive  --unsafe-no-fsync  --version
  --strict-reconfig-check  --force-new-cluster  --enable-grpc-gateway
  --experimental-initial-corrupt-check
  --restore-snapshot FILE (etcdc's: start a new data dir from a member's backup)
  --mirror-from URLS (etcdc's: with --restore-snapshot of that cluster, mirror it until
    POST /etcdc/promote; see docs/migrating-from-etcd.md)
  --mirror-cacert FILE --mirror-cert FILE --mirror-key FILE  --mirror-user NAME[:PASSWORD]
    --mirror-password PASSWORD (etcdc's: TLS and a user for that cluster, as etcdctl's
    --cacert, --cert, --key, --user, --password; ETCD_MIRROR_PASSWORD keeps it out of ps)
https:// client or peer URLs speak TLS with the certificate of --cert-file/--key-file (peers:
--peer-cert-file/--peer-key-file), read again when the files change; --client-cert-auth
requires client certificates signed by --trusted-ca-file; --auto-tls makes a self-signed
certificate in the data dir. Users, roles and `etcdctl auth enable` work as in etcd, with
simple tokens; with --client-cert-auth a request without a token is the certificate's
common name. --restore-snapshot is ignored when the data dir holds data already. A data dir
that `etcdctl snapshot restore` made (etcd's member/snap/db) starts from that database.
--unsafe-no-fsync (etcd's, for tests): a power loss loses acknowledged writes.
`etcdc-node gateway start --endpoints URLS --listen-addr HOST:PORT` runs etcd's TCP gateway
instead of a member (`etcdc-node gateway --help`).
etcd flags the node does not support are refused with the reason, unless given etcd's
default (--enable-v2=false, --proxy=off, ...). Each flag may also come from its etcd
environment variable (ETCD_NAME, ETCD_DATA_DIR, ...). ETCDC_NODE_THREADS sets the number of
runtime threads (default: half the cores, at least one).";

/// What the node makes of an etcd flag.
#[derive(Clone, Copy)]
enum Support {
    Yes,
    /// Taken, with a notice: it tunes something the node does not have.
    NoEffect(&'static str),
    /// Taken only with one of these values (etcd's default first); refused otherwise, and why.
    Only(&'static [&'static str], &'static str),
}

use Support::*;

/// Every flag: its name, whether it is a boolean (which takes no value), what the node
/// makes of it. etcd 3.4's, in its order, then etcdc's own.
const FLAGS: &[(&str, bool, Support)] = &[
    ("config-file", false, Yes),
    ("name", false, Yes),
    ("data-dir", false, Yes),
    (
        "wal-dir",
        false,
        Only(&[""], "the write-ahead log lives in the data dir"),
    ),
    ("snapshot-count", false, Yes),
    (
        "max-snapshots",
        false,
        NoEffect("the node keeps one snapshot"),
    ),
    (
        "max-wals",
        false,
        NoEffect("the node's log removes its segments once a snapshot covers them"),
    ),
    ("heartbeat-interval", false, Yes),
    ("election-timeout", false, Yes),
    (
        "initial-election-tick-advance",
        true,
        NoEffect("a starting member waits one election timeout"),
    ),
    ("quota-backend-bytes", false, Yes),
    (
        "backend-batch-interval",
        false,
        NoEffect("the node syncs each batch of writes before answering"),
    ),
    (
        "backend-batch-limit",
        false,
        NoEffect("the node syncs each batch of writes before answering"),
    ),
    ("max-txn-ops", false, Yes),
    ("max-request-bytes", false, Yes),
    (
        "grpc-keepalive-min-time",
        false,
        NoEffect("the node does not refuse clients that ping more often"),
    ),
    ("grpc-keepalive-interval", false, Yes),
    ("grpc-keepalive-timeout", false, Yes),
    ("max-concurrent-streams", false, Yes),
    ("listen-peer-urls", false, Yes),
    ("listen-client-urls", false, Yes),
    ("listen-metrics-urls", false, Yes),
    ("initial-advertise-peer-urls", false, Yes),
    ("advertise-client-urls", false, Yes),
    (
        "cors",
        false,
        Only(&[""], "the node serves no browser cross-origin requests"),
    ),
    (
        "host-whitelist",
        false,
        Only(&["*", ""], "the node takes any Host header"),
    ),
    ("discovery", false, Only(&[""], DISCOVERY)),
    ("discovery-fallback", false, Only(&["proxy"], DISCOVERY)),
    ("discovery-proxy", false, Only(&[""], DISCOVERY)),
    ("discovery-srv", false, Only(&[""], DISCOVERY)),
    ("discovery-srv-name", false, Only(&[""], DISCOVERY)),
    ("initial-cluster", false, Yes),
    ("initial-cluster-token", false, Yes),
    ("initial-cluster-state", false, Yes),
    ("strict-reconfig-check", true, Yes),
    (
        "enable-v2",
        true,
        Only(
            &["false"],
            "the node serves etcd's v3 API only; the v2 API is off by default in etcd 3.4 and \
             gone in 3.6 — move v2 clients to v3 (etcdc's cetcd shim, or the gRPC gateway)",
        ),
    ),
    (
        "pre-vote",
        true,
        Only(&["false"], "openraft 0.9 has no pre-vote"),
    ),
    ("proxy", false, Only(&["off"], PROXY)),
    ("proxy-failure-wait", false, Only(&["5000"], PROXY)),
    ("proxy-refresh-interval", false, Only(&["30000"], PROXY)),
    ("proxy-dial-timeout", false, Only(&["1000"], PROXY)),
    ("proxy-write-timeout", false, Only(&["5000"], PROXY)),
    ("proxy-read-timeout", false, Only(&["0"], PROXY)),
    ("cert-file", false, Yes),
    ("key-file", false, Yes),
    ("client-cert-auth", true, Yes),
    ("client-crl-file", false, Yes),
    ("client-cert-allowed-hostname", false, Yes),
    ("trusted-ca-file", false, Yes),
    ("auto-tls", true, Yes),
    ("peer-cert-file", false, Yes),
    ("peer-key-file", false, Yes),
    ("peer-client-cert-auth", true, Yes),
    ("peer-trusted-ca-file", false, Yes),
    ("peer-auto-tls", true, Yes),
    ("peer-crl-file", false, Yes),
    ("peer-cert-allowed-cn", false, Yes),
    ("peer-cert-allowed-hostname", false, Yes),
    (
        "experimental-peer-skip-client-san-verification",
        true,
        Only(&["false"], "peer certificates are always verified"),
    ),
    ("cipher-suites", false, Yes),
    ("logger", false, Yes),
    ("log-output", false, Yes),
    ("log-outputs", false, Yes),
    ("debug", true, Yes),
    ("log-level", false, Yes),
    (
        "log-package-levels",
        false,
        Only(&[""], "the node has no capnslog packages"),
    ),
    ("version", true, Yes),
    ("auto-compaction-retention", false, Yes),
    ("auto-compaction-mode", false, Yes),
    (
        "enable-pprof",
        true,
        Only(
            &["false"],
            "the node is not a Go program: profile it with perf",
        ),
    ),
    ("metrics", false, Yes),
    ("auth-token", false, Yes),
    ("bcrypt-cost", false, Yes),
    ("auth-token-ttl", false, Yes),
    ("enable-grpc-gateway", true, Yes),
    ("experimental-initial-corrupt-check", true, Yes),
    (
        "experimental-corrupt-check-time",
        false,
        Only(
            &["0s", "0"],
            "the node does not check its peers' hashes periodically yet",
        ),
    ),
    (
        "experimental-enable-v2v3",
        false,
        Only(&[""], "the node serves no v2 API"),
    ),
    (
        "experimental-backend-bbolt-freelist-type",
        false,
        NoEffect("the node's backend is not bbolt"),
    ),
    (
        "experimental-enable-lease-checkpoint",
        true,
        Only(
            &["false"],
            "the node does not checkpoint lease TTLs yet: a new leader restarts them",
        ),
    ),
    (
        "experimental-enable-lease-checkpoint-persist",
        true,
        Only(&["false"], "the node does not checkpoint lease TTLs yet"),
    ),
    (
        "experimental-compaction-batch-limit",
        false,
        NoEffect("the node compacts in memory in one step"),
    ),
    (
        "experimental-watch-progress-notify-interval",
        false,
        Only(
            &["10m0s", "10m"],
            "the node's progress notifications come every 10 minutes",
        ),
    ),
    (
        "experimental-warning-apply-duration",
        false,
        NoEffect("the node does not log slow applies"),
    ),
    ("unsafe-no-fsync", true, Yes),
    ("force-new-cluster", true, Yes),
    ("restore-snapshot", false, Yes),
    ("mirror-from", false, Yes),
    ("mirror-cacert", false, Yes),
    ("mirror-cert", false, Yes),
    ("mirror-key", false, Yes),
    ("mirror-user", false, Yes),
    ("mirror-password", false, Yes),
];

const DISCOVERY: &str = "the node does not use etcd's discovery service: list the members in \
                         --initial-cluster";
const PROXY: &str = "the node is a member, never a v2 proxy";

/// How chatty the node is, and where it writes (`--log-level`, `--log-outputs`): its lines
/// are plain text, not zap's JSON.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Log {
    /// 0 debug, 1 info, 2 warn, 3 error (etcd's names; dpanic, panic and fatal are error).
    pub level: u8,
    /// `stderr`, `stdout` or a file path.
    pub outputs: Vec<String>,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            level: 1,
            outputs: vec!["stderr".into()],
        }
    }
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Action {
    Help,
    /// `--version`: etcd's version lines.
    Version,
    Run {
        options: Box<NodeOptions>,
        log: Log,
        /// The flags given that mean nothing for the node, and why (to be logged).
        notices: Vec<String>,
    },
}

/// etcd's `--version` lines: scripts read the first.
pub fn version() -> String {
    format!(
        "etcd Version: {}\nGit SHA: Not provided (etcdc-node {})\nGo Version: none (Rust)\nGo OS/Arch: {}/{}",
        crate::node::ETCD_VERSION,
        env!("CARGO_PKG_VERSION"),
        std::env::consts::OS,
        match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        }
    )
}

fn flag(name: &str) -> Option<&'static (&'static str, bool, Support)> {
    FLAGS.iter().find(|f| f.0 == name)
}

/// Go's `strconv.ParseBool`.
fn go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// Go's `time.ParseDuration`: `300ms`, `1.5h`, `2h45m`; `0` alone.
pub fn go_duration(v: &str) -> Option<Duration> {
    if v == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = v;
    let mut total = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * seconds;
    }
    Some(Duration::from_secs_f64(total))
}

/// Flag name → value, from `args` (Go's flag syntax).
fn from_args(args: &[String]) -> Result<Vec<(String, String)>, String> {
    let mut given = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        if arg == "--help" || arg == "-h" || arg == "-help" {
            return Err(String::new());
        }
        let body = arg
            .strip_prefix("--")
            .or_else(|| arg.strip_prefix('-'))
            .filter(|b| !b.is_empty() && !b.starts_with('-'))
            .ok_or_else(|| format!("{arg:?} is not a valid flag"))?;
        let (name, value) = match body.split_once('=') {
            Some((f, v)) => (f, Some(v.to_string())),
            None => (body, None),
        };
        let &(name, boolean, _) = flag(name).ok_or_else(|| format!("unknown flag --{name}"))?;
        let value = match value {
            Some(v) => v,
            None if boolean => "true".into(),
            None => {
                i += 1;
                args.get(i)
                    .cloned()
                    .ok_or_else(|| format!("flag --{name} needs a value"))?
            }
        };
        given.push((name.to_string(), value));
        i += 1;
    }
    Ok(given)
}

/// Flag name → value, from etcd's YAML configuration file: its keys are the flag names,
/// `client-transport-security` and `peer-transport-security` hold the TLS ones.
fn from_yaml(text: &str) -> Result<Vec<(String, String)>, String> {
    use serde_norway::Value;
    let doc: Value = serde_norway::from_str(text).map_err(|e| e.to_string())?;
    let scalar = |key: &str, v: &Value| -> Result<Option<String>, String> {
        Ok(Some(match v {
            Value::Null => return Ok(None),
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => n.to_string(),
            Value::String(s) => s.clone(),
            Value::Sequence(items) => items
                .iter()
                .map(|i| match i {
                    Value::String(s) => Ok(s.clone()),
                    _ => Err(format!("{key}: expected a list of strings")),
                })
                .collect::<Result<Vec<_>, _>>()?
                .join(","),
            _ => return Err(format!("{key}: unexpected value")),
        }))
    };
    let Value::Mapping(map) = doc else {
        return Err("expected a mapping of etcd's option names".into());
    };
    let mut given = Vec::new();
    for (k, v) in &map {
        let key = k.as_str().ok_or("option names are strings")?;
        let prefix = match key {
            "client-transport-security" => Some(""),
            "peer-transport-security" => Some("peer-"),
            _ => None,
        };
        match (prefix, v) {
            (Some(prefix), Value::Mapping(inner)) => {
                for (k, v) in inner {
                    let name = k.as_str().ok_or("option names are strings")?;
                    if ![
                        "cert-file",
                        "key-file",
                        "client-cert-auth",
                        "trusted-ca-file",
                        "auto-tls",
                    ]
                    .contains(&name)
                    {
                        return Err(format!("{key}: unknown option {name:?}"));
                    }
                    if let Some(value) = scalar(name, v)? {
                        given.push((format!("{prefix}{name}"), value));
                    }
                }
            }
            (Some(_), Value::Null) => {}
            (Some(_), _) => return Err(format!("{key}: expected a mapping")),
            (None, v) => {
                flag(key).ok_or_else(|| format!("unknown option {key:?}"))?;
                if let Some(value) = scalar(key, v)? {
                    given.push((key.to_string(), value));
                }
            }
        }
    }
    Ok(given)
}

/// The command line `args` (without the program name), with `env` for etcd's variables.
pub fn parse(args: &[String], env: &dyn Fn(&str) -> Option<String>) -> Result<Action, String> {
    let mut given = match from_args(args) {
        Err(e) if e.is_empty() => return Ok(Action::Help),
        other => other?,
    };
    if given
        .iter()
        .any(|(f, v)| f == "version" && go_bool(v) == Some(true))
    {
        return Ok(Action::Version);
    }
    let config_file = given
        .iter()
        .find(|(f, _)| f == "config-file")
        .map(|(_, v)| v.clone())
        .or_else(|| env("ETCD_CONFIG_FILE"))
        .filter(|v| !v.is_empty());
    if let Some(path) = config_file {
        // As etcd: the file replaces the command line and the environment.
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read --config-file {path:?}: {e}"))?;
        given = from_yaml(&text).map_err(|e| format!("--config-file {path:?}: {e}"))?;
    } else {
        for &(name, _, _) in FLAGS {
            if !given.iter().any(|(f, _)| f == name) {
                let var = format!("ETCD_{}", name.to_uppercase().replace('-', "_"));
                if let Some(v) = env(&var) {
                    given.push((name.to_string(), v));
                }
            }
        }
    }
    let mut o = NodeOptions::default();
    let mut log = Log::default();
    let mut notices = Vec::new();
    let (mut compaction_mode, mut retention) = ("periodic".to_string(), "0".to_string());
    let mut mirror = MirrorFlags::default();
    let list = |v: &str| -> Vec<String> {
        v.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    };
    for (name, v) in &given {
        let &(name, boolean, support) =
            flag(name).ok_or_else(|| format!("unknown flag --{name}"))?;
        let v = v.as_str();
        let number = || -> Result<u64, String> {
            v.parse()
                .map_err(|_| format!("--{name} must be a number, not {v:?}"))
        };
        let boolean_value = || -> Result<bool, String> {
            go_bool(v).ok_or_else(|| format!("--{name} is true or false, not {v:?}"))
        };
        let duration = || -> Result<Duration, String> {
            go_duration(v)
                .ok_or_else(|| format!("--{name} is a duration such as 5s or 2h, not {v:?}"))
        };
        if boolean {
            boolean_value()?;
        }
        match support {
            Yes => {}
            NoEffect(why) => {
                notices.push(format!("--{name}={v} has no effect: {why}"));
                continue;
            }
            Only(allowed, why) => {
                let same = |a: &&str| match (go_bool(a), go_bool(v)) {
                    (Some(x), Some(y)) if boolean => x == y,
                    _ => *a == v,
                };
                if allowed.iter().any(same) {
                    continue;
                }
                return Err(format!("--{name}={v} is not supported: {why}"));
            }
        }
        match name {
            "config-file" | "version" => {}
            "name" => o.name = v.into(),
            "data-dir" => o.data_dir = Some(v.into()),
            "listen-client-urls" => o.listen_client_urls = list(v),
            "advertise-client-urls" => o.advertise_client_urls = list(v),
            "listen-peer-urls" => o.listen_peer_urls = list(v),
            "initial-advertise-peer-urls" => o.initial_advertise_peer_urls = list(v),
            "listen-metrics-urls" => o.listen_metrics_urls = list(v),
            "initial-cluster" => o.initial_cluster = Some(v.into()),
            "initial-cluster-state" => o.initial_cluster_state = v.into(),
            "initial-cluster-token" => o.initial_cluster_token = v.into(),
            "heartbeat-interval" => o.heartbeat_ms = number()?,
            "election-timeout" => o.election_ms = number()?,
            "snapshot-count" => o.snapshot_count = number()?,
            "quota-backend-bytes" => o.quota_backend_bytes = number()?,
            "max-request-bytes" => o.limits.max_request_bytes = number()?.max(1) as usize,
            "max-txn-ops" => o.limits.max_txn_ops = number()?.max(1) as usize,
            "grpc-keepalive-interval" => o.grpc.keepalive_interval = duration()?,
            "grpc-keepalive-timeout" => o.grpc.keepalive_timeout = duration()?,
            "enable-grpc-gateway" => o.grpc.gateway = boolean_value()?,
            "max-concurrent-streams" => {
                o.grpc.max_concurrent_streams = u32::try_from(number()?)
                    .map_err(|_| format!("--{name} is at most {}", u32::MAX))?
            }
            "auto-compaction-mode" => compaction_mode = v.into(),
            "auto-compaction-retention" => retention = v.into(),
            "restore-snapshot" => o.restore_snapshot = Some(v.into()),
            "mirror-from" => o.mirror_from = Some(v.into()),
            "mirror-cacert" => mirror.cacert = Some(v.into()),
            "mirror-cert" => mirror.cert = Some(v.into()),
            "mirror-key" => mirror.key = Some(v.into()),
            "mirror-user" => mirror.user = Some(v.into()),
            "mirror-password" => mirror.password = Some(v.into()),
            "force-new-cluster" => o.force_new_cluster = boolean_value()?,
            "strict-reconfig-check" => o.strict_reconfig_check = boolean_value()?,
            "experimental-initial-corrupt-check" => o.initial_corrupt_check = boolean_value()?,
            "unsafe-no-fsync" => o.unsafe_no_fsync = boolean_value()?,
            "cert-file" => o.client_tls.cert_file = Some(v.into()),
            "key-file" => o.client_tls.key_file = Some(v.into()),
            "trusted-ca-file" => o.client_tls.trusted_ca_file = Some(v.into()),
            "client-cert-auth" => o.client_tls.client_cert_auth = boolean_value()?,
            "auto-tls" => o.client_tls.auto_tls = boolean_value()?,
            "client-crl-file" => o.client_tls.crl_file = Some(v.into()),
            "client-cert-allowed-hostname" => o.client_tls.allowed_hostname = Some(v.into()),
            "peer-crl-file" => o.peer_tls.crl_file = Some(v.into()),
            "peer-cert-allowed-cn" => o.peer_tls.allowed_cn = Some(v.into()),
            "peer-cert-allowed-hostname" => o.peer_tls.allowed_hostname = Some(v.into()),
            "peer-cert-file" => o.peer_tls.cert_file = Some(v.into()),
            "peer-key-file" => o.peer_tls.key_file = Some(v.into()),
            "peer-trusted-ca-file" => o.peer_tls.trusted_ca_file = Some(v.into()),
            "peer-client-cert-auth" => o.peer_tls.client_cert_auth = boolean_value()?,
            "peer-auto-tls" => o.peer_tls.auto_tls = boolean_value()?,
            "cipher-suites" => o.cipher_suites = list(v),
            "auth-token" => match v.split_once(',').unwrap_or((v, "")) {
                ("simple", _) => o.auth.jwt = None,
                ("jwt", options) => {
                    let jwt = crate::node::jwt::Jwt::from_options(options)
                        .map_err(|e| format!("--auth-token: {e}"))?;
                    o.auth.jwt = Some(std::sync::Arc::new(jwt));
                }
                (other, _) => {
                    return Err(format!(
                        "--auth-token is simple or jwt,pub-key=FILE,priv-key=FILE,sign-method=NAME[,ttl=5m], not {other:?}"
                    ))
                }
            },
            "auth-token-ttl" => o.auth.token_ttl = Duration::from_secs(number()?.max(1)),
            "bcrypt-cost" => {
                let cost = number()?;
                if !(4..=31).contains(&cost) {
                    return Err(format!(
                        "--bcrypt-cost must be between 4 and 31, not {cost}"
                    ));
                }
                o.auth.bcrypt_cost = cost as u32;
            }
            "logger" if v != "zap" && v != "capnslog" => {
                return Err(format!("--logger is zap or capnslog, not {v:?}"));
            }
            "logger" => {}
            "log-output" | "log-outputs" => {
                log.outputs = list(v)
                    .into_iter()
                    .map(|o| if o == "default" { "stderr".into() } else { o })
                    .collect();
            }
            "debug" if boolean_value()? => log.level = 0,
            "debug" => {}
            "log-level" => {
                log.level = match v {
                    "debug" => 0,
                    "info" => 1,
                    "warn" => 2,
                    "error" | "dpanic" | "panic" | "fatal" => 3,
                    _ => {
                        return Err(format!(
                    "--log-level is debug, info, warn, error, dpanic, panic or fatal, not {v:?}"
                ))
                    }
                }
            }
            "metrics" if v != "basic" && v != "extensive" => {
                return Err(format!("--metrics is basic or extensive, not {v:?}"));
            }
            "metrics" => {}
            other => return Err(format!("--{other} is known but not handled")),
        }
    }
    // etcd's own rule, with its words.
    if o.heartbeat_ms == 0 || o.election_ms < 5 * o.heartbeat_ms {
        return Err(format!(
            "--election-timeout[{}ms] should be at least as 5 times as --heartbeat-interval[{}ms]",
            o.election_ms, o.heartbeat_ms
        ));
    }
    o.auto_compaction = AutoCompaction::parse(&compaction_mode, &retention)?;
    o.mirror_access = mirror.access()?;
    Ok(Action::Run {
        options: Box::new(o),
        log,
        notices,
    })
}

/// `--mirror-*`: how the mirror reaches its source, as etcdctl's `--cacert`, `--cert`,
/// `--key`, `--user` and `--password` would.
#[derive(Default)]
struct MirrorFlags {
    cacert: Option<String>,
    cert: Option<String>,
    key: Option<String>,
    user: Option<String>,
    password: Option<String>,
}

impl MirrorFlags {
    fn access(self) -> Result<crate::node::mirror::SourceAccess, String> {
        use crate::tls::{ClientTls, Identity, Pem};
        let identity = match (self.cert, self.key) {
            (Some(cert), Some(key)) => Some(Identity {
                cert: Pem::File(cert.into()),
                key: Pem::File(key.into()),
            }),
            (None, None) => None,
            _ => return Err("--mirror-cert and --mirror-key go together".into()),
        };
        let tls = (self.cacert.is_some() || identity.is_some()).then(|| ClientTls {
            ca: self.cacert.map(|f| Pem::File(f.into())),
            identity,
            ..Default::default()
        });
        // etcdctl's `--user name:password`, or the password alone in --mirror-password
        // (etcdctl would prompt for it; a member cannot).
        let credentials = match (self.user, self.password) {
            (None, None) => None,
            (None, Some(_)) => return Err("--mirror-password needs --mirror-user".into()),
            (Some(user), password) => {
                let (user, password) = match (user.split_once(':'), password) {
                    (Some((u, p)), None) => (u.to_string(), p.to_string()),
                    (None, Some(p)) => (user, p),
                    (Some(_), Some(_)) => {
                        return Err("--mirror-user has a password already: drop --mirror-password or the :PASSWORD".into())
                    }
                    (None, None) => {
                        return Err(format!("--mirror-user {user:?} needs a password: {user}:PASSWORD, or --mirror-password"))
                    }
                };
                if user.is_empty() {
                    return Err("--mirror-user needs a user name".into());
                }
                Some(crate::remote::Credentials { user, password })
            }
        };
        Ok(crate::node::mirror::SourceAccess { tls, credentials })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<NodeOptions, String> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        match parse(&args, &|_| None)? {
            Action::Run { options, .. } => Ok(*options),
            other => Err(format!("{other:?}")),
        }
    }

    #[test]
    fn booleans_and_values_parse_as_go_flags_do() {
        assert!(run(&["--peer-auto-tls"]).unwrap().peer_tls.auto_tls);
        assert!(run(&["-peer-auto-tls=true"]).unwrap().peer_tls.auto_tls);
        assert!(!run(&["--peer-auto-tls=false"]).unwrap().peer_tls.auto_tls);
        assert!(run(&["--peer-auto-tls=T"]).unwrap().peer_tls.auto_tls);
        assert_eq!(run(&["--name", "a"]).unwrap().name, "a");
        assert_eq!(run(&["-name=b"]).unwrap().name, "b");
        // A boolean takes no separate value, as in Go: "false" is then an argument.
        assert_eq!(
            run(&["--peer-auto-tls", "false"]).unwrap_err(),
            "\"false\" is not a valid flag"
        );
        assert!(run(&["--strict-reconfig-check=false"]).is_ok());
        assert!(run(&["--enable-v2=false", "--enable-v2", "false"]).is_err());
        let e = run(&["--enable-v2"]).unwrap_err();
        assert!(
            e.contains("--enable-v2=true is not supported: the node serves etcd's v3 API only"),
            "{e}"
        );
        assert!(run(&["--proxy=off", "--discovery-fallback", "proxy"]).is_ok());
        assert!(run(&["--discovery=https://discovery.etcd.io/x"])
            .unwrap_err()
            .contains("--initial-cluster"));
        assert_eq!(run(&["--nope"]).unwrap_err(), "unknown flag --nope");
        assert_eq!(
            run(&["--heartbeat-interval=100", "--election-timeout=300"]).unwrap_err(),
            "--election-timeout[300ms] should be at least as 5 times as --heartbeat-interval[100ms]"
        );
        assert_eq!(run(&["--name"]).unwrap_err(), "flag --name needs a value");
        let o = run(&[
            "--max-request-bytes=10",
            "--max-txn-ops",
            "3",
            "--grpc-keepalive-interval=1h30m",
            "--grpc-keepalive-timeout=500ms",
            "--max-concurrent-streams=9",
        ])
        .unwrap();
        assert_eq!((o.limits.max_request_bytes, o.limits.max_txn_ops), (10, 3));
        assert_eq!(o.grpc.keepalive_interval, Duration::from_secs(5400));
        assert_eq!(o.grpc.keepalive_timeout, Duration::from_millis(500));
        assert_eq!(o.grpc.max_concurrent_streams, 9);
        assert!(run(&["--grpc-keepalive-timeout=5"]).is_err());
        assert!(matches!(
            parse(&["--version".into()], &|_| None),
            Ok(Action::Version)
        ));
        assert!(version().starts_with("etcd Version: 3.4.23\n"));
    }

    #[test]
    fn the_mirrors_access_to_its_source_is_etcdctls() {
        let o = run(&["--mirror-user=root:pw", "--mirror-cacert=ca.pem"]).unwrap();
        let c = o.mirror_access.credentials.unwrap();
        assert_eq!((c.user.as_str(), c.password.as_str()), ("root", "pw"));
        let tls = o.mirror_access.tls.unwrap();
        assert!(tls.identity.is_none() && tls.ca.is_some());
        let env = |v: &str| (v == "ETCD_MIRROR_PASSWORD").then(|| "a:b".to_string());
        let Ok(Action::Run { options, .. }) = parse(&["--mirror-user=root".into()], &env) else {
            panic!()
        };
        let c = options.mirror_access.credentials.unwrap();
        assert_eq!((c.user.as_str(), c.password.as_str()), ("root", "a:b"));
        assert!(run(&[]).unwrap().mirror_access.tls.is_none());
        for (args, refusal) in [
            (&["--mirror-user=root"][..], "needs a password"),
            (&["--mirror-password=x"], "needs --mirror-user"),
            (&["--mirror-user=:x"], "needs a user name"),
            (
                &["--mirror-user=a:b", "--mirror-password=c"],
                "has a password",
            ),
            (&["--mirror-cert=c.pem"], "go together"),
        ] {
            let e = run(args).unwrap_err();
            assert!(e.contains(refusal), "{args:?}: {e}");
        }
    }

    #[test]
    fn tunings_the_node_lacks_are_taken_with_a_notice() {
        let args = vec!["--max-wals=3".to_string()];
        let Ok(Action::Run { notices, .. }) = parse(&args, &|_| None) else {
            panic!("--max-wals refused");
        };
        assert_eq!(notices.len(), 1);
        assert!(notices[0].starts_with("--max-wals=3 has no effect"));
    }

    #[test]
    fn environment_variables_fill_what_flags_do_not_give() {
        let env = |v: &str| match v {
            "ETCD_NAME" => Some("from-env".to_string()),
            "ETCD_DATA_DIR" => Some("/env".to_string()),
            _ => None,
        };
        let Ok(Action::Run { options, .. }) = parse(&["--name=flag".into()], &env) else {
            panic!()
        };
        assert_eq!(options.name, "flag");
        assert_eq!(
            options.data_dir.as_deref(),
            Some(std::path::Path::new("/env"))
        );
    }

    #[test]
    fn etcds_yaml_configuration_file_replaces_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("etcd.conf.yml");
        std::fs::write(
            &path,
            "name: 'infra1'\ndata-dir: /var/lib/etcd\nwal-dir:\nsnapshot-count: 5000\n\
             listen-client-urls: http://127.0.0.1:2379\nenable-v2: false\nproxy: 'off'\n\
             proxy-failure-wait: 5000\ndiscovery-fallback: 'proxy'\n\
             client-transport-security:\n  cert-file: /c.pem\n  client-cert-auth: true\n\
             peer-transport-security:\n  auto-tls: true\n\
             log-outputs: [stderr]\nauto-compaction-mode: revision\nauto-compaction-retention: \"1000\"\n",
        )
        .unwrap();
        let args = vec![
            "--config-file".to_string(),
            path.display().to_string(),
            "--name=ignored".into(),
        ];
        let Ok(Action::Run { options: o, .. }) = parse(&args, &|_| None) else {
            panic!("config file refused")
        };
        assert_eq!(o.name, "infra1");
        assert_eq!(o.snapshot_count, 5000);
        assert_eq!(o.listen_client_urls, ["http://127.0.0.1:2379"]);
        assert_eq!(
            o.client_tls.cert_file.as_deref(),
            Some(std::path::Path::new("/c.pem"))
        );
        assert!(o.client_tls.client_cert_auth && o.peer_tls.auto_tls);
        assert_eq!(o.auto_compaction, Some(AutoCompaction::Revisions(1000)));
        std::fs::write(&path, "enable-v2: true\n").unwrap();
        assert!(parse(&args, &|_| None)
            .unwrap_err()
            .contains("--enable-v2=true"));
    }
}

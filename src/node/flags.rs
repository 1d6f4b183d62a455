//! `etcdc-node`'s command line, as etcd's: the same flag names, the same `ETCD_*`
//! environment variables (a flag wins over its variable), the same defaults.

use crate::node::launch::NodeOptions;

pub const USAGE: &str = "usage: etcdc-node [--name NAME] [--data-dir DIR]
  [--listen-client-urls URLS] [--advertise-client-urls URLS]
  [--listen-peer-urls URLS] [--initial-advertise-peer-urls URLS]
  [--initial-cluster NAME=URL,...] [--initial-cluster-state new|existing]
  [--initial-cluster-token TOKEN] [--heartbeat-interval MS] [--election-timeout MS]
  [--snapshot-count N] [--quota-backend-bytes N] [--restore-snapshot FILE]
  [--unsafe-no-fsync]
  [--cert-file FILE --key-file FILE] [--trusted-ca-file FILE] [--client-cert-auth] [--auto-tls]
  [--peer-cert-file FILE --peer-key-file FILE] [--peer-trusted-ca-file FILE]
  [--peer-client-cert-auth] [--peer-auto-tls] [--cipher-suites SUITE,...]
  [--auth-token simple] [--auth-token-ttl SECONDS] [--bcrypt-cost 4..31]
https:// client or peer URLs speak TLS with the certificate of --cert-file/--key-file (peers:
--peer-cert-file/--peer-key-file), read again when the files change; --client-cert-auth
requires client certificates signed by --trusted-ca-file; --auto-tls makes a self-signed
certificate in the data dir. Members show their peer certificate to each other and verify
the other's against --peer-trusted-ca-file (with --peer-auto-tls, not at all, as etcd).
Users, roles and `etcdctl auth enable` work as in etcd, with simple tokens (default TTL
300 s); with --client-cert-auth a request without a token is the certificate's common name.
--restore-snapshot starts a new data dir from `etcdctl snapshot save`'s file of an etcdc-node
(ignored when the data dir holds data already).
--unsafe-no-fsync (etcd's, for tests): the write-ahead log is never synced, so a power loss
loses acknowledged writes.
Each flag may also come from its etcd environment variable (ETCD_NAME, ETCD_DATA_DIR, ...).
ETCDC_NODE_THREADS sets the number of runtime threads (default: half the cores, at least one).";

const FLAGS: &[&str] = &[
    "name",
    "data-dir",
    "listen-client-urls",
    "advertise-client-urls",
    "listen-peer-urls",
    "initial-advertise-peer-urls",
    "initial-cluster",
    "initial-cluster-state",
    "initial-cluster-token",
    "heartbeat-interval",
    "election-timeout",
    "snapshot-count",
    "quota-backend-bytes",
    "restore-snapshot",
    "unsafe-no-fsync",
    "cert-file",
    "key-file",
    "trusted-ca-file",
    "client-cert-auth",
    "auto-tls",
    "peer-cert-file",
    "peer-key-file",
    "peer-trusted-ca-file",
    "peer-client-cert-auth",
    "peer-auto-tls",
    "cipher-suites",
    "auth-token",
    "auth-token-ttl",
    "bcrypt-cost",
];

/// Flags that take no value: `--flag` is `--flag=true`, as in etcd's flag parser.
const BOOL_FLAGS: &[&str] = &[
    "unsafe-no-fsync",
    "client-cert-auth",
    "auto-tls",
    "peer-client-cert-auth",
    "peer-auto-tls",
];

pub fn parse(args: &[String]) -> Result<NodeOptions, String> {
    let mut given: std::collections::HashMap<&str, String> = std::collections::HashMap::new();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        if arg == "--help" || arg == "-h" {
            return Err(String::new());
        }
        let body = arg
            .strip_prefix("--")
            .or_else(|| arg.strip_prefix('-'))
            .ok_or_else(|| format!("unexpected argument {arg:?}"))?;
        let (flag, value) = match body.split_once('=') {
            Some((f, v)) => (f.to_string(), v.to_string()),
            None if BOOL_FLAGS.contains(&body) => (body.to_string(), "true".to_string()),
            None => {
                i += 1;
                let v = args
                    .get(i)
                    .ok_or_else(|| format!("flag --{body} needs a value"))?;
                (body.to_string(), v.clone())
            }
        };
        let known = FLAGS
            .iter()
            .find(|f| **f == flag)
            .ok_or_else(|| format!("unknown flag --{flag}"))?;
        given.insert(known, value);
        i += 1;
    }
    // etcd's environment variables for the flags not given.
    for flag in FLAGS {
        if !given.contains_key(flag) {
            let var = format!("ETCD_{}", flag.to_uppercase().replace('-', "_"));
            if let Ok(v) = std::env::var(&var) {
                given.insert(flag, v);
            }
        }
    }
    // A comma-separated list (URLs, cipher suites).
    let urls = |v: &String| -> Vec<String> {
        v.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    };
    let number = |flag: &str, v: &String| -> Result<u64, String> {
        v.parse()
            .map_err(|_| format!("--{flag} must be a number, not {v:?}"))
    };
    let boolean = |flag: &str, v: &String| -> Result<bool, String> {
        v.parse()
            .map_err(|_| format!("--{flag} is true or false, not {v:?}"))
    };
    let mut o = NodeOptions::default();
    for (flag, v) in &given {
        match *flag {
            "name" => o.name = v.clone(),
            "data-dir" => o.data_dir = Some(v.into()),
            "listen-client-urls" => o.listen_client_urls = urls(v),
            "advertise-client-urls" => o.advertise_client_urls = urls(v),
            "listen-peer-urls" => o.listen_peer_urls = urls(v),
            "initial-advertise-peer-urls" => o.initial_advertise_peer_urls = urls(v),
            "initial-cluster" => o.initial_cluster = Some(v.clone()),
            "initial-cluster-state" => o.initial_cluster_state = v.clone(),
            "initial-cluster-token" => o.initial_cluster_token = v.clone(),
            "heartbeat-interval" => o.heartbeat_ms = number(flag, v)?,
            "election-timeout" => o.election_ms = number(flag, v)?,
            "snapshot-count" => o.snapshot_count = number(flag, v)?,
            "quota-backend-bytes" => o.quota_backend_bytes = number(flag, v)?,
            "restore-snapshot" => o.restore_snapshot = Some(v.into()),
            "unsafe-no-fsync" => o.unsafe_no_fsync = boolean(flag, v)?,
            "cert-file" => o.client_tls.cert_file = Some(v.into()),
            "key-file" => o.client_tls.key_file = Some(v.into()),
            "trusted-ca-file" => o.client_tls.trusted_ca_file = Some(v.into()),
            "client-cert-auth" => o.client_tls.client_cert_auth = boolean(flag, v)?,
            "auto-tls" => o.client_tls.auto_tls = boolean(flag, v)?,
            "peer-cert-file" => o.peer_tls.cert_file = Some(v.into()),
            "peer-key-file" => o.peer_tls.key_file = Some(v.into()),
            "peer-trusted-ca-file" => o.peer_tls.trusted_ca_file = Some(v.into()),
            "peer-client-cert-auth" => o.peer_tls.client_cert_auth = boolean(flag, v)?,
            "peer-auto-tls" => o.peer_tls.auto_tls = boolean(flag, v)?,
            "cipher-suites" => o.cipher_suites = urls(v),
            "auth-token" if v.split(',').next() != Some("simple") => {
                return Err(format!(
                    "--auth-token {v:?}: only simple tokens are supported (JWT is not yet)"
                ));
            }
            "auth-token-ttl" => {
                o.auth.token_ttl = std::time::Duration::from_secs(number(flag, v)?.max(1))
            }
            "bcrypt-cost" => {
                let cost = number(flag, v)?;
                if !(4..=31).contains(&cost) {
                    return Err(format!(
                        "--bcrypt-cost must be between 4 and 31, not {cost}"
                    ));
                }
                o.auth.bcrypt_cost = cost as u32;
            }
            _ => {}
        }
    }
    Ok(o)
}

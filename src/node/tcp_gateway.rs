//! `etcdc-node gateway start`: etcd's gateway, a TCP proxy on each host in front of a
//! cluster's client URLs, so that local services dial one fixed address whatever the
//! members are. Like etcd's (`proxy/tcpproxy`), it does not look into what it carries (TLS,
//! gRPC and the JSON gateway pass through as they are): each connection goes to the next
//! endpoint in turn that accepts it; one that refuses is left out until `--retry-delay`
//! has passed, then tried again. Discovery through DNS SRV records is not supported.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};

use super::flags::go_duration;

pub const USAGE: &str = "usage: etcdc-node gateway start [flags], with etcd 3.4's gateway flags:
  --endpoints HOST:PORT,...  the cluster's client URLs (default 127.0.0.1:2379; a scheme is dropped)
  --listen-addr HOST:PORT    where to listen (default 127.0.0.1:23790)
  --retry-delay DURATION     how long an endpoint that refused a connection is left out (default 1m0s)";

/// The gateway's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct GatewayOptions {
    pub endpoints: Vec<String>,
    pub listen_addr: String,
    pub retry_delay: Duration,
}

/// What `etcdc-node gateway ...` asks for.
#[derive(Debug, PartialEq)]
pub enum GatewayAction {
    Help,
    Start(GatewayOptions),
}

/// Parses the arguments after `gateway`: `start` and etcd's gateway flags, in any order (as
/// cobra takes them), `--flag value` or `--flag=value`.
pub fn parse(args: &[String]) -> Result<GatewayAction, String> {
    let mut o = GatewayOptions {
        endpoints: vec!["127.0.0.1:2379".into()],
        listen_addr: "127.0.0.1:23790".into(),
        retry_delay: Duration::from_secs(60),
    };
    let mut start = false;
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if arg == "start" {
            start = true;
            continue;
        }
        if arg == "--help" || arg == "-h" {
            return Ok(GatewayAction::Help);
        }
        let body = arg
            .strip_prefix("--")
            .or_else(|| arg.strip_prefix('-'))
            .ok_or_else(|| format!("unknown command {arg:?} for \"etcd gateway\""))?;
        let (name, value) = match body.split_once('=') {
            Some((n, v)) => (n, v.to_string()),
            None if name_is_boolean(body) => (body, "true".to_string()),
            None => {
                let v = args
                    .get(i)
                    .cloned()
                    .ok_or_else(|| format!("flag --{body} needs a value"))?;
                i += 1;
                (body, v)
            }
        };
        match name {
            "endpoints" => {
                o.endpoints = value
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(strip_scheme)
                    .collect();
                if o.endpoints.is_empty() {
                    return Err("--endpoints is empty".into());
                }
            }
            "listen-addr" => o.listen_addr = value,
            "retry-delay" => {
                o.retry_delay = go_duration(&value).ok_or_else(|| {
                    format!("--retry-delay is a duration such as 1m0s, not {value:?}")
                })?
            }
            "discovery-srv" | "discovery-srv-name" | "insecure-discovery" | "trusted-ca-file" => {
                return Err(format!(
                    "--{name} is not supported: the gateway takes its endpoints from --endpoints, not from DNS SRV records"
                ))
            }
            _ => return Err(format!("unknown flag: --{name}")),
        }
    }
    Ok(if start {
        GatewayAction::Start(o)
    } else {
        GatewayAction::Help
    })
}

fn name_is_boolean(name: &str) -> bool {
    name == "insecure-discovery"
}

/// etcd's gateway takes URLs or `host:port`: what it dials is `host:port`.
fn strip_scheme(endpoint: &str) -> String {
    let rest = endpoint
        .strip_prefix("http://")
        .or_else(|| endpoint.strip_prefix("https://"))
        .unwrap_or(endpoint);
    rest.trim_end_matches('/').to_string()
}

/// The endpoints and when each may be tried again after it refused a connection.
struct Remotes {
    endpoints: Vec<String>,
    retry_delay: Duration,
    state: Mutex<(usize, Vec<Option<Instant>>)>,
}

impl Remotes {
    /// The endpoints to try for the next connection: from the next in turn, those not left
    /// out (all of them when every one is).
    fn order(&self) -> Vec<usize> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let n = self.endpoints.len();
        let first = state.0 % n;
        state.0 = state.0.wrapping_add(1);
        let now = Instant::now();
        let turn: Vec<usize> = (0..n).map(|k| (first + k) % n).collect();
        let active: Vec<usize> = turn
            .iter()
            .copied()
            .filter(|&k| state.1[k].is_none_or(|until| until <= now))
            .collect();
        if active.is_empty() {
            turn
        } else {
            active
        }
    }

    fn refused(&self, k: usize) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.1[k] = Some(Instant::now() + self.retry_delay);
    }

    fn accepted(&self, k: usize) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.1[k] = None;
    }

    /// A connection to the first endpoint in turn that accepts one.
    async fn dial(&self) -> Option<TcpStream> {
        for k in self.order() {
            let addr = &self.endpoints[k];
            match tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(addr)).await {
                Ok(Ok(conn)) => {
                    self.accepted(k);
                    return Some(conn);
                }
                Ok(Err(e)) => log(&format!("deactivated endpoint {addr}: {e}")),
                Err(_) => log(&format!("deactivated endpoint {addr}: connect timed out")),
            }
            self.refused(k);
        }
        None
    }
}

fn log(line: &str) {
    crate::observe::log(crate::observe::Level::Warn, || line.to_string());
}

/// Binds the listen address (the caller says it is ready once this returned).
pub async fn bind(o: &GatewayOptions) -> Result<TcpListener, String> {
    TcpListener::bind(&o.listen_addr)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", o.listen_addr))
}

/// Proxies every connection `listener` accepts until `stop` resolves.
pub async fn serve(
    listener: TcpListener,
    o: GatewayOptions,
    stop: impl std::future::Future<Output = ()>,
) {
    let remotes = std::sync::Arc::new(Remotes {
        state: Mutex::new((0, vec![None; o.endpoints.len()])),
        endpoints: o.endpoints,
        retry_delay: o.retry_delay,
    });
    tokio::pin!(stop);
    loop {
        let (mut conn, from): (TcpStream, SocketAddr) = tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    log(&format!("accept: {e}"));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let remotes = remotes.clone();
        tokio::spawn(async move {
            let _ = conn.set_nodelay(true);
            let Some(mut remote) = remotes.dial().await else {
                log(&format!(
                    "no endpoint accepted the connection of {from}: closed it"
                ));
                return;
            };
            let _ = remote.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional(&mut conn, &mut remote).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn flags_parse_as_etcds_gateway_takes_them() {
        let GatewayAction::Start(o) = parse(&args(&[
            "--endpoints=http://127.0.0.1:1,https://[::1]:2/",
            "start",
            "--listen-addr",
            "127.0.0.1:9",
            "--retry-delay=2s",
        ]))
        .unwrap() else {
            panic!("not started")
        };
        assert_eq!(o.endpoints, ["127.0.0.1:1", "[::1]:2"]);
        assert_eq!(o.listen_addr, "127.0.0.1:9");
        assert_eq!(o.retry_delay, Duration::from_secs(2));
        assert_eq!(parse(&args(&[])).unwrap(), GatewayAction::Help);
        assert!(parse(&args(&["start", "--discovery-srv=x"]))
            .unwrap_err()
            .contains("not supported"));
        assert!(parse(&args(&["stop"])).is_err());
        assert!(parse(&args(&["start", "--nope=1"])).is_err());
    }

    #[test]
    fn a_refusing_endpoint_is_left_out_until_its_retry_delay() {
        let r = Remotes {
            endpoints: vec!["a".into(), "b".into(), "c".into()],
            retry_delay: Duration::from_secs(60),
            state: Mutex::new((0, vec![None; 3])),
        };
        assert_eq!(r.order(), [0, 1, 2]);
        assert_eq!(r.order(), [1, 2, 0]);
        r.refused(0);
        assert_eq!(r.order(), [2, 1]);
        r.refused(1);
        r.refused(2);
        // Every one left out: all are tried rather than none.
        assert_eq!(r.order(), [0, 1, 2]);
        r.accepted(1);
        assert_eq!(r.order(), [1]);
    }
}

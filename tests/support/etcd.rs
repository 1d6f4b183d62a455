//! Real etcd members for the tests: Debian's `etcd` binary started on free loopback ports
//! with temporary data dirs. With `CI` set, a missing etcd fails the test instead of
//! skipping it.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn etcd_binary() -> Option<PathBuf> {
    let path = std::env::var_os("ETCD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/etcd"));
    if path.exists() {
        return Some(path);
    }
    if std::env::var_os("CI").is_some() {
        panic!("etcd is not installed at {path:?} and CI is set: run scripts/test.sh, which installs it");
    }
    eprintln!("SKIP: etcd is not installed at {path:?} (set CI to make this a failure)");
    None
}

/// A loopback port nobody listens on now, below the kernel's ephemeral range (as
/// `scripts/free-port.sh` picks them): a port from that range can be taken meanwhile as the
/// source port of any outgoing connection — the many clients of tests running in parallel —
/// and the server started on it later fails to bind. Successive calls walk the range from a
/// per-process start, so one process never hands out a port twice.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let low: u32 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .filter(|&low| low > 11_000)
        .unwrap_or(32_768);
    let span = low - 10_000;
    static START: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let seed = *START.get_or_init(|| {
        std::process::id().wrapping_mul(7919)
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
    });
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (10_000 + seed.wrapping_add(n) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port below {low}");
}

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

pub struct Cluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    members: Vec<Member>,
    extra: Vec<String>,
    /// etcdctl's TLS flags when the client port speaks TLS (then its URLs are https).
    tls: Option<Vec<String>>,
}

impl Cluster {
    /// Starts `n` members and waits until every one answers.
    pub fn start(n: usize) -> Option<Cluster> {
        Self::start_with(n, &[])
    }

    pub fn start_with(n: usize, extra: &[&str]) -> Option<Cluster> {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        Self::start_as(n, extra, None)
    }

    /// `n` members whose client ports speak TLS with `certs` (clients must present a
    /// certificate with `client_cert_auth`).
    pub fn start_tls(
        n: usize,
        certs: &super::tls::Certs,
        client_cert_auth: bool,
    ) -> Option<Cluster> {
        Self::start_as(
            n,
            certs.server_flags(client_cert_auth),
            Some(certs.etcdctl_flags()),
        )
    }

    /// One member whose data dir `etcdctl snapshot restore` made from `snapshot`, started.
    /// Panics with etcdctl's words if the restore fails.
    pub fn start_restored(snapshot: &std::path::Path) -> Option<Cluster> {
        let mut c = Self::unstarted(1, Vec::new(), None)?;
        let m = &c.members[0];
        let peer = format!("http://127.0.0.1:{}", m.peer_port);
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["snapshot", "restore"])
            .arg(snapshot)
            .args(["--name", &m.name, "--initial-cluster-token", "etcdc-test"])
            .args(["--initial-cluster", &format!("{}={peer}", m.name)])
            .args(["--initial-advertise-peer-urls", &peer])
            .arg("--data-dir")
            .arg(c.dir.path().join(&m.name))
            .output()
            .expect("run etcdctl");
        assert!(
            out.status.success(),
            "etcdctl snapshot restore: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        c.spawn(0);
        c.wait_ready(0);
        Some(c)
    }

    /// `n` members with `extra` flags; `tls`: etcdctl's flags when the client port speaks TLS.
    pub fn start_as(n: usize, extra: Vec<String>, tls: Option<Vec<String>>) -> Option<Cluster> {
        let mut c = Self::unstarted(n, extra, tls)?;
        for i in 0..n {
            c.spawn(i);
        }
        for i in 0..n {
            c.wait_ready(i);
        }
        Some(c)
    }

    fn unstarted(n: usize, extra: Vec<String>, tls: Option<Vec<String>>) -> Option<Cluster> {
        let bin = etcd_binary()?;
        let members = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: free_port(),
                peer_port: free_port(),
                child: None,
            })
            .collect();
        Some(Cluster {
            bin,
            dir: tempfile::tempdir().expect("temp dir"),
            members,
            extra,
            tls,
        })
    }

    fn spawn(&mut self, i: usize) {
        let initial: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect();
        let client = self.client_url(i);
        let m = &self.members[i];
        let peer = format!("http://127.0.0.1:{}", m.peer_port);
        let log = std::fs::File::create(self.dir.path().join(format!("{}.log", m.name)))
            .expect("log file");
        let child = Command::new(&self.bin)
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(self.dir.path().join(&m.name))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &initial.join(",")])
            .args([
                "--initial-cluster-state",
                "new",
                "--initial-cluster-token",
                "etcdc-test",
            ])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--log-level", "warn", "--logger", "zap"])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start etcd");
        self.members[i].child = Some(child);
    }

    fn wait_ready(&self, i: usize) {
        let url = self.client_url(i);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            let out = Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .args(self.tls.iter().flatten())
                .args([
                    "--endpoints",
                    &url,
                    "--command-timeout=1s",
                    "endpoint",
                    "health",
                ])
                .output();
            // With authentication on (a restored backup), the health check's get is
            // answered "user name is empty": etcd serves.
            let ok = out.is_ok_and(|o| {
                o.status.success()
                    || String::from_utf8_lossy(&o.stderr).contains("user name is empty")
            });
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("etcd member {i} at {url} did not become healthy in 30 s");
    }

    pub fn client_url(&self, i: usize) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.members[i].client_port)
    }

    /// Every member's client URL, comma-separated, as etcdc takes them.
    pub fn endpoints(&self) -> String {
        (0..self.members.len())
            .map(|i| self.client_url(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Kills member `i` at once (SIGKILL): no goodbye to its clients.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Restarts a killed member on the same ports and data dir.
    pub fn restart(&mut self, i: usize) {
        self.spawn(i);
        self.wait_ready(i);
    }

    pub fn etcdctl(&self, args: &[&str]) -> std::process::Output {
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(self.tls.iter().flatten())
            .args(["--endpoints", &self.endpoints()])
            .args(args)
            .output()
            .expect("run etcdctl")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

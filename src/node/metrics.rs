//! What a member measures about itself, served as etcd serves it: `GET /metrics` on the
//! client URL in Prometheus' text format, under etcd's metric names, so the dashboards and
//! alerts written for etcd (no leader, leader changes, slow fsyncs, database near its quota)
//! work unchanged. Only metrics whose meaning matches etcd's are served under its names.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// etcd's buckets for disk latencies: 1 ms doubling up to 8.192 s.
const BUCKETS: usize = 14;

/// A latency histogram with etcd's disk buckets; updated without a lock.
#[derive(Default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last slot counts those above 8.192 s.
    counts: [AtomicU64; BUCKETS + 1],
    count: AtomicU64,
    nanos: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, took: Duration) {
        let ms = took.as_secs_f64() * 1000.0;
        let slot = (0..BUCKETS)
            .find(|&i| ms <= (1u64 << i) as f64)
            .unwrap_or(BUCKETS);
        self.counts[slot].fetch_add(1, Ordering::Relaxed);
        self.nanos
            .fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// How many observations there were.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for i in 0..BUCKETS {
            cumulative += self.counts[i].load(Ordering::Relaxed);
            let le = (1u64 << i) as f64 / 1000.0;
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        cumulative += self.counts[BUCKETS].load(Ordering::Relaxed);
        let sum = self.nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(
            out,
            "{name}_bucket{{le=\"+Inf\"}} {cumulative}\n{name}_sum {sum}\n{name}_count {cumulative}"
        );
    }
}

/// A member's state at the moment `/metrics` is asked.
pub struct Reading<'a> {
    pub id: u64,
    pub has_leader: bool,
    pub is_leader: bool,
    pub leader_changes: u64,
    pub applied_index: u64,
    pub db_size: u64,
    pub quota: u64,
    pub wal_fsync: &'a Histogram,
    pub ops: &'a super::mvcc::OpCounters,
    pub live_keys: usize,
    pub grpc: &'a GrpcCounters,
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

/// The Prometheus text for `s`, with the process' own CPU and memory.
pub fn render(s: &Reading) -> String {
    let mut out = String::with_capacity(4096);
    let b = |v: bool| u8::from(v);
    metric(
        &mut out,
        "etcd_server_has_leader",
        "gauge",
        "Whether or not a leader exists. 1 is existence, 0 is not.",
        b(s.has_leader),
    );
    metric(
        &mut out,
        "etcd_server_is_leader",
        "gauge",
        "Whether or not this member is a leader. 1 if is, 0 otherwise.",
        b(s.is_leader),
    );
    metric(
        &mut out,
        "etcd_server_leader_changes_seen_total",
        "counter",
        "The number of leader changes seen.",
        s.leader_changes,
    );
    metric(
        &mut out,
        "etcd_server_proposals_applied_total",
        "gauge",
        "The total number of consensus proposals applied.",
        s.applied_index,
    );
    metric(
        &mut out,
        "etcd_mvcc_db_total_size_in_bytes",
        "gauge",
        "Total size of the underlying database in bytes.",
        s.db_size,
    );
    metric(
        &mut out,
        "etcd_server_quota_backend_bytes",
        "gauge",
        "Current backend storage quota size in bytes.",
        s.quota,
    );
    s.wal_fsync.render(
        "etcd_disk_wal_fsync_duration_seconds",
        "The latency distributions of fsync called by WAL.",
        &mut out,
    );
    let _ = writeln!(
        out,
        "# HELP etcd_server_id Server or member ID in hexadecimal format. 1 for 'server_id' label with current ID.\n# TYPE etcd_server_id gauge\netcd_server_id{{server_id=\"{:x}\"}} 1",
        s.id
    );
    let _ = writeln!(
        out,
        "# HELP etcd_server_version Which version is running. 1 for 'server_version' label with current version.\n# TYPE etcd_server_version gauge\netcd_server_version{{server_version=\"{}\"}} 1",
        super::ETCD_VERSION
    );
    let _ = writeln!(
        out,
        "# HELP etcd_cluster_version Which version is running. 1 for 'cluster_version' label with current cluster version\n# TYPE etcd_cluster_version gauge\netcd_cluster_version{{cluster_version=\"{}\"}} 1",
        // etcd's label is major.minor (3.4), where /version says 3.4.0.
        super::ETCD_CLUSTER_VERSION
            .rsplit_once('.')
            .map_or(super::ETCD_CLUSTER_VERSION, |(minor, _)| minor)
    );
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    for (name, help, value) in [
        (
            "etcd_mvcc_range_total",
            "Total number of ranges seen by this member.",
            load(&s.ops.ranges),
        ),
        (
            "etcd_mvcc_put_total",
            "Total number of puts seen by this member.",
            load(&s.ops.puts),
        ),
        (
            "etcd_mvcc_delete_total",
            "Total number of deletes seen by this member.",
            load(&s.ops.deletes),
        ),
        (
            "etcd_mvcc_txn_total",
            "Total number of txns seen by this member.",
            load(&s.ops.txns),
        ),
    ] {
        metric(&mut out, name, "counter", help, value);
    }
    metric(
        &mut out,
        "etcd_debugging_mvcc_keys_total",
        "gauge",
        "Total number of keys.",
        s.live_keys,
    );
    s.grpc.render(&mut out);
    process(&mut out);
    out
}

/// Prometheus' standard process metrics: CPU from getrusage, memory from /proc.
fn process(out: &mut String) {
    use nix::sys::resource::{getrusage, UsageWho};
    if let Ok(usage) = getrusage(UsageWho::RUSAGE_SELF) {
        let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
        metric(
            out,
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            secs(usage.user_time()) + secs(usage.system_time()),
        );
    }
    let rss_kb = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        });
    if let Some(kb) = rss_kb {
        metric(
            out,
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            kb * 1024,
        );
    }
}

/// The methods of etcd's gRPC API the member serves: (service, method, go-grpc-prometheus'
/// type).
const GRPC_METHODS: &[(&str, &str, &str)] = &[
    ("etcdserverpb.KV", "Range", "unary"),
    ("etcdserverpb.KV", "Put", "unary"),
    ("etcdserverpb.KV", "DeleteRange", "unary"),
    ("etcdserverpb.KV", "Txn", "unary"),
    ("etcdserverpb.KV", "Compact", "unary"),
    ("etcdserverpb.Watch", "Watch", "bidi_stream"),
    ("etcdserverpb.Lease", "LeaseGrant", "unary"),
    ("etcdserverpb.Lease", "LeaseRevoke", "unary"),
    ("etcdserverpb.Lease", "LeaseKeepAlive", "bidi_stream"),
    ("etcdserverpb.Lease", "LeaseTimeToLive", "unary"),
    ("etcdserverpb.Lease", "LeaseLeases", "unary"),
    ("etcdserverpb.Cluster", "MemberAdd", "unary"),
    ("etcdserverpb.Cluster", "MemberRemove", "unary"),
    ("etcdserverpb.Cluster", "MemberUpdate", "unary"),
    ("etcdserverpb.Cluster", "MemberList", "unary"),
    ("etcdserverpb.Cluster", "MemberPromote", "unary"),
    ("etcdserverpb.Maintenance", "Alarm", "unary"),
    ("etcdserverpb.Maintenance", "Status", "unary"),
    ("etcdserverpb.Maintenance", "Defragment", "unary"),
    ("etcdserverpb.Maintenance", "Hash", "unary"),
    ("etcdserverpb.Maintenance", "HashKV", "unary"),
    ("etcdserverpb.Maintenance", "Snapshot", "server_stream"),
    ("etcdserverpb.Maintenance", "MoveLeader", "unary"),
    ("etcdserverpb.Auth", "AuthEnable", "unary"),
    ("etcdserverpb.Auth", "AuthDisable", "unary"),
    ("etcdserverpb.Auth", "Authenticate", "unary"),
    ("etcdserverpb.Auth", "UserAdd", "unary"),
    ("etcdserverpb.Auth", "UserGet", "unary"),
    ("etcdserverpb.Auth", "UserList", "unary"),
    ("etcdserverpb.Auth", "UserDelete", "unary"),
    ("etcdserverpb.Auth", "UserChangePassword", "unary"),
    ("etcdserverpb.Auth", "UserGrantRole", "unary"),
    ("etcdserverpb.Auth", "UserRevokeRole", "unary"),
    ("etcdserverpb.Auth", "RoleAdd", "unary"),
    ("etcdserverpb.Auth", "RoleGet", "unary"),
    ("etcdserverpb.Auth", "RoleList", "unary"),
    ("etcdserverpb.Auth", "RoleDelete", "unary"),
    ("etcdserverpb.Auth", "RoleGrantPermission", "unary"),
    ("etcdserverpb.Auth", "RoleRevokePermission", "unary"),
    ("v3lockpb.Lock", "Lock", "unary"),
    ("v3lockpb.Lock", "Unlock", "unary"),
    ("v3electionpb.Election", "Campaign", "unary"),
    ("v3electionpb.Election", "Proclaim", "unary"),
    ("v3electionpb.Election", "Leader", "unary"),
    ("v3electionpb.Election", "Observe", "server_stream"),
    ("v3electionpb.Election", "Resign", "unary"),
];

/// gRPC's status codes by number, as Go names them.
const GRPC_CODES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];
const CANCELED: usize = 1;
const UNKNOWN: usize = 2;

/// go-grpc-prometheus' `grpc_server_started_total` and `grpc_server_handled_total` (by
/// status code), as etcd serves them, for every call on the gRPC API: a stream counts as
/// handled when it ends — with its status, or Canceled when the client went first.
pub struct GrpcCounters {
    index: std::collections::HashMap<String, usize>,
    started: Vec<AtomicU64>,
    handled: Vec<[AtomicU64; GRPC_CODES.len()]>,
}

impl Default for GrpcCounters {
    fn default() -> Self {
        GrpcCounters {
            index: GRPC_METHODS
                .iter()
                .enumerate()
                .map(|(i, (service, method, _))| (format!("/{service}/{method}"), i))
                .collect(),
            started: GRPC_METHODS.iter().map(|_| AtomicU64::new(0)).collect(),
            handled: GRPC_METHODS.iter().map(|_| Default::default()).collect(),
        }
    }
}

impl GrpcCounters {
    /// Counts the call `req` (if it is one of the API's) and, through its response's body,
    /// how it ends. An axum middleware.
    pub async fn observe(
        self: std::sync::Arc<Self>,
        req: axum::extract::Request,
        next: axum::middleware::Next,
    ) -> axum::response::Response {
        let Some(&method) = self.index.get(req.uri().path()) else {
            return next.run(req).await;
        };
        self.started[method].fetch_add(1, Ordering::Relaxed);
        let resp = next.run(req).await;
        // A call refused at once has its status in the headers (gRPC's trailers-only).
        if let Some(code) = grpc_status(resp.headers()) {
            self.handled[method][code].fetch_add(1, Ordering::Relaxed);
            return resp;
        }
        resp.map(|inner| {
            axum::body::Body::new(CountedBody {
                inner,
                counters: self,
                method,
                ended: false,
            })
        })
    }

    fn render(&self, out: &mut String) {
        let labels = |i: usize| {
            let (service, method, kind) = GRPC_METHODS[i];
            format!("grpc_method=\"{method}\",grpc_service=\"{service}\",grpc_type=\"{kind}\"")
        };
        let _ = writeln!(out, "# HELP grpc_server_handled_total Total number of RPCs completed on the server, regardless of success or failure.\n# TYPE grpc_server_handled_total counter");
        for (i, codes) in self.handled.iter().enumerate() {
            for (code, n) in codes.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "grpc_server_handled_total{{grpc_code=\"{}\",{}}} {}",
                    GRPC_CODES[code],
                    labels(i),
                    n.load(Ordering::Relaxed)
                );
            }
        }
        let _ = writeln!(out, "# HELP grpc_server_started_total Total number of RPCs started on the server.\n# TYPE grpc_server_started_total counter");
        for (i, n) in self.started.iter().enumerate() {
            let _ = writeln!(
                out,
                "grpc_server_started_total{{{}}} {}",
                labels(i),
                n.load(Ordering::Relaxed)
            );
        }
    }
}

/// The `grpc-status` of headers or trailers, as an index into `GRPC_CODES`.
fn grpc_status(headers: &http::HeaderMap) -> Option<usize> {
    let code = headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .parse::<usize>()
        .ok()?;
    Some(if code < GRPC_CODES.len() {
        code
    } else {
        UNKNOWN
    })
}

/// A response body that counts its call as handled when its trailers pass, or as Canceled
/// when it is dropped before (the client reset the stream or went away).
struct CountedBody {
    inner: axum::body::Body,
    counters: std::sync::Arc<GrpcCounters>,
    method: usize,
    ended: bool,
}

impl CountedBody {
    fn end(&mut self, code: usize) {
        if !std::mem::replace(&mut self.ended, true) {
            self.counters.handled[self.method][code].fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl http_body::Body for CountedBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            std::task::Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(grpc_status) {
                    self.end(code);
                }
            }
            std::task::Poll::Ready(None) => self.end(UNKNOWN),
            std::task::Poll::Ready(Some(Err(_))) => self.end(CANCELED),
            std::task::Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for CountedBody {
    fn drop(&mut self) {
        self.end(CANCELED);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_renders_cumulative_buckets() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(300));
        h.observe(Duration::from_micros(1500));
        h.observe(Duration::from_secs(20));
        let mut out = String::new();
        h.render("x", "help", &mut out);
        assert!(out.contains("x_bucket{le=\"0.001\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"0.002\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"8.192\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_count 3\n"), "{out}");
        assert_eq!(h.count(), 3);
    }
}

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

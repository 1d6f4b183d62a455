//! The real `etcdctl` (3.4, Debian's etcd-client) against an embedded-node member over
//! gRPC: what a shell script written for etcd sees.

mod support;

use support::etcdctl::{etcdctl, Background};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_works_against_a_member() {
    if !support::etcdctl::available() {
        return;
    }
    let (_c, url, _stop) = support::node::serve_single().await;
    let run = |args: &[&str]| etcdctl(&url, args, None);
    let ok = |args: &[&str]| {
        let (ok, out) = run(args);
        assert!(ok, "etcdctl {args:?} failed: {out}");
        out
    };
    assert_eq!(ok(&["put", "/svc/login/1", "10.0.0.1:8000"]).trim(), "OK");
    ok(&["put", "/svc/login/2", "10.0.0.2:8000"]);
    ok(&["put", "/svc/msg/1", "10.0.0.9:9000"]);
    assert_eq!(
        ok(&["get", "/svc/login/", "--prefix"]),
        "/svc/login/1\n10.0.0.1:8000\n/svc/login/2\n10.0.0.2:8000\n"
    );
    assert_eq!(
        ok(&[
            "get",
            "/svc/",
            "--prefix",
            "--keys-only",
            "--sort-by=KEY",
            "--order=DESCEND",
            "--limit=2"
        ]),
        "/svc/msg/1\n\n/svc/login/2\n\n"
    );
    assert!(ok(&["get", "/svc/", "--prefix", "-w", "fields"]).contains("\"Count\" : 3"));
    // A past revision, and one compacted away.
    let rev_line = ok(&["get", "/svc/login/1", "-w", "fields"]);
    assert!(rev_line.contains("\"ModRevision\" : 2"), "{rev_line}");
    ok(&["put", "/svc/login/1", "10.0.0.1:8001"]);
    assert_eq!(
        ok(&["get", "/svc/login/1", "--rev=2", "--print-value-only"]).trim(),
        "10.0.0.1:8000"
    );
    assert!(ok(&["compaction", "3"]).contains("compacted revision 3"));
    let (fine, out) = run(&["get", "/svc/login/1", "--rev=2"]);
    assert!(
        !fine && out.contains("required revision has been compacted"),
        "{out}"
    );
    // A transaction from stdin, as etcdctl's interactive form reads it.
    let (fine, out) = etcdctl(
        &url,
        &["txn"],
        Some("value(\"/svc/login/1\") = \"10.0.0.1:8001\"\n\nput /owner login-1\n\nput /owner nobody\n\n"),
    );
    assert!(fine, "{out}");
    assert!(out.starts_with("SUCCESS"), "{out}");
    assert_eq!(
        ok(&["get", "/owner", "--print-value-only"]).trim(),
        "login-1"
    );
    assert_eq!(ok(&["del", "/svc/", "--prefix"]).trim(), "3");
    // Leases.
    let granted = ok(&["lease", "grant", "60"]);
    let id = granted
        .split_whitespace()
        .nth(1)
        .expect("lease id")
        .to_string();
    ok(&["put", "/leased", "x", "--lease", &id]);
    let ttl = ok(&["lease", "timetolive", &id, "--keys"]);
    assert!(
        ttl.contains("granted with TTL(60s)") && ttl.contains("/leased"),
        "{ttl}"
    );
    assert!(ok(&["lease", "list"]).contains(&id));
    assert!(
        ok(&["lease", "keep-alive", "--once", &id]).contains("keepalived with TTL(60)"),
        "keep-alive"
    );
    assert!(ok(&["lease", "revoke", &id]).contains("revoked"));
    assert_eq!(ok(&["get", "/leased"]), "");
    // Cluster and maintenance.
    assert!(ok(&["member", "list"]).contains("member-1"));
    // etcdctl 3.4 dials `endpoint status`, `hashkv` and `defrag` per endpoint with the
    // endpoint URL as the HTTP/2 :authority ("http://host:port"), which Rust's h2 refuses as
    // malformed and Go's server accepts: the node takes it, as etcd's docs write endpoints.
    let bare = url.trim_start_matches("http://").to_string();
    let status = ok(&["endpoint", "status", "-w", "table"]);
    assert!(
        status.contains(&url) && status.contains("3.4.23") && status.contains("true"),
        "{status}"
    );
    assert!(ok(&["endpoint", "hashkv"]).contains(&url));
    assert!(ok(&["defrag"]).contains("Finished defragmenting"));
    assert!(ok(&["endpoint", "health"]).contains("is healthy"));
    // etcd's HTTP endpoints on the same port, as load balancers and scripts use them.
    let (code, body) = http_get(&bare, "/health");
    assert_eq!((code, body.as_str()), (200, r#"{"health":"true"}"#));
    let (code, body) = http_get(&bare, "/version");
    assert_eq!(code, 200);
    assert!(
        body.contains(r#"{"etcdserver":"3.4.23","etcdcluster":"3.4.0"}"#),
        "{body}"
    );
    // And etcd's metrics, under its names, for the dashboards and alerts written for etcd.
    let (code, body) = http_get(&bare, "/metrics");
    assert_eq!(code, 200);
    let value = |name: &str| -> f64 {
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /metrics:\n{body}"))
    };
    assert_eq!(value("etcd_server_has_leader"), 1.0);
    assert_eq!(value("etcd_server_is_leader"), 1.0);
    assert!(value("etcd_server_proposals_applied_total") >= 10.0);
    assert!(value("etcd_disk_wal_fsync_duration_seconds_count") >= 10.0);
    assert!(value("etcd_mvcc_db_total_size_in_bytes") > 0.0);
    assert!(value("process_resident_memory_bytes") > 0.0);
    assert!(
        body.contains(r#"etcd_cluster_version{cluster_version="3.4"} 1"#),
        "{body}"
    );
    // etcd's operation counters and go-grpc-prometheus' call counters move as etcd's do:
    // a put, a delete of one key, a watch that etcdctl leaves by going away (Canceled).
    let ok_calls = |m: &str| {
        format!(
            r#"grpc_server_handled_total{{grpc_code="OK",grpc_method="{m}",grpc_service="etcdserverpb.KV",grpc_type="unary"}}"#
        )
    };
    let watch_canceled = r#"grpc_server_handled_total{grpc_code="Canceled",grpc_method="Watch",grpc_service="etcdserverpb.Watch",grpc_type="bidi_stream"}"#;
    let counts = || {
        let (_, body) = http_get(&bare, "/metrics");
        let value = |name: &str| -> u64 {
            body.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
                .unwrap_or_else(|| panic!("no {name} in /metrics:\n{body}"))
        };
        [
            value("etcd_mvcc_put_total"),
            value("etcd_mvcc_delete_total"),
            value("etcd_debugging_mvcc_keys_total"),
            value(&ok_calls("Put")),
            value(&ok_calls("DeleteRange")),
            value(watch_canceled),
        ]
    };
    let before = counts();
    let put: serde_json::Value =
        serde_json::from_str(&ok(&["put", "/counted", "v", "-w", "json"])).unwrap();
    let rev = put["header"]["revision"].to_string();
    ok(&["put", "/counted/gone", "v"]);
    ok(&["del", "/counted/gone"]);
    // From the put's revision: its event comes at once, however late the watch starts.
    let watch = support::etcdctl::Background::start(&url, &["watch", "/counted", "--rev", &rev]);
    assert_eq!(watch.lines(1), ["PUT"]);
    drop(watch);
    let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let after = loop {
        let after = counts();
        if after[5] > before[5] || std::time::Instant::now() > until {
            break after;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let moved: Vec<u64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
    assert_eq!(
        moved,
        [2, 1, 1, 2, 1, 1],
        "put, delete, live keys, Put OK, DeleteRange OK, Watch Canceled"
    );
    assert_eq!(ok(&["alarm", "list"]), "");
    // The last member cannot be removed.
    let (fine, out) = run(&["member", "remove", "1"]);
    assert!(!fine && out.contains("not enough started members"), "{out}");
    // Leadership goes to voting members only, as on etcd.
    let (fine, out) = etcdctl(&bare, &["move-leader", "2"], None);
    assert!(
        !fine && out.contains("etcdserver: bad leader transferee"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_watch_lock_and_elect_against_a_member() {
    if !support::etcdctl::available() {
        return;
    }
    let (_c, url, _stop) = support::node::serve_single().await;
    let ok = |args: &[&str]| {
        let (ok, out) = etcdctl(&url, args, None);
        assert!(ok, "etcdctl {args:?} failed: {out}");
        out
    };

    // Watch: live events, then the same from history with --rev and --prev-kv.
    ok(&["put", "/w/0", "before"]);
    let live = Background::start(&url, &["watch", "/w/", "--prefix"]);
    // etcdctl prints nothing when its watch is created: a put repeated until the first
    // event shows up proves it is.
    let first = loop {
        ok(&["put", "/w/1", "a"]);
        if let Ok(line) = live
            .lines
            .recv_timeout(std::time::Duration::from_millis(200))
        {
            break line;
        }
    };
    assert_eq!(first, "PUT");
    ok(&["del", "/w/1"]);
    ok(&["put", "/w/2", "b"]);
    let mut tail = Vec::new();
    while !tail.ends_with(&["PUT".to_string(), "/w/2".into(), "b".into()]) {
        tail.extend(live.lines(1));
    }
    assert!(tail.windows(2).any(|w| w == ["DELETE", "/w/1"]), "{tail:?}");
    drop(live);
    let rev = ok(&["get", "/w/0", "-w", "fields"]);
    let mod_rev: String = rev
        .lines()
        .find(|l| l.contains("\"ModRevision\""))
        .and_then(|l| l.split(':').nth(1))
        .map(|v| v.trim().to_string())
        .expect("a mod revision");
    let past = Background::start(&url, &["watch", "/w/0", "--rev", &mod_rev, "--prev-kv"]);
    assert_eq!(past.lines(3), ["PUT", "/w/0", "before"]);
    drop(past);

    // Lock: a second holder waits until the first lets go.
    let mut first = Background::start(&url, &["lock", "/jobs/lock"]);
    let key = first.lines(1).remove(0);
    assert!(key.starts_with("/jobs/lock/"), "{key}");
    let second = Background::start(&url, &["lock", "/jobs/lock"]);
    assert!(
        second.quiet_for(std::time::Duration::from_millis(700)),
        "a second etcdctl lock must wait while the first holds it"
    );
    first.interrupt();
    let key2 = second.lines(1).remove(0);
    assert!(key2.starts_with("/jobs/lock/") && key2 != key, "{key2}");
    drop(second);

    // Election: the observer sees the leader's proclamation, then the next leader.
    let mut leader = Background::start(&url, &["elect", "/jobs/leader", "node-a"]);
    let lines = leader.lines(2);
    assert!(
        lines[0].starts_with("/jobs/leader/") && lines[1] == "node-a",
        "{lines:?}"
    );
    let observer = Background::start(&url, &["elect", "-l", "/jobs/leader"]);
    assert_eq!(observer.lines(2)[1], "node-a");
    let next = Background::start(&url, &["elect", "/jobs/leader", "node-b"]);
    assert!(next.quiet_for(std::time::Duration::from_millis(500)));
    leader.interrupt();
    assert_eq!(next.lines(2)[1], "node-b");
    assert_eq!(observer.lines(2)[1], "node-b");
}

/// A plain HTTP/1.1 GET: status code and body.
fn http_get(host_port: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(host_port).expect("connect");
    conn.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: {host_port}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    conn.read_to_string(&mut text).expect("an HTTP answer");
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (code, body)
}

/// `etcdc-node gateway start` (etcd's TCP gateway): etcdctl through it reaches the cluster,
/// an endpoint that refuses connections is passed over, and the gateway stops on SIGTERM.
#[test]
fn etcds_tcp_gateway_passes_over_an_endpoint_that_refuses() {
    if !support::etcdctl::available() {
        return;
    }
    let node = support::process::NodeProcess::start(None);
    let dead = format!("127.0.0.1:{}", support::etcd::free_port());
    let listen = format!("127.0.0.1:{}", support::etcd::free_port());
    let mut gateway = Stopped(
        std::process::Command::new(env!("CARGO_BIN_EXE_etcdc-node"))
            .args([
                "gateway",
                &format!("--endpoints={dead},{}", node.url),
                "start",
            ])
            .args(["--listen-addr", &listen, "--retry-delay", "1m"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("etcdc-node gateway starts"),
    );
    let mut lines =
        std::io::BufRead::lines(std::io::BufReader::new(gateway.0.stderr.take().unwrap()));
    let ready = lines.next().expect("a line").unwrap();
    assert!(ready.contains("ready to proxy client requests"), "{ready}");
    for i in 0..4 {
        let (ok, out) = etcdctl(&listen, &["put", "/through/gateway", &i.to_string()], None);
        assert!(ok && out.contains("OK"), "{out}");
    }
    let (ok, out) = etcdctl(
        &listen,
        &["get", "/through/gateway", "--print-value-only"],
        None,
    );
    assert_eq!((ok, out.trim()), (true, "3"));
    let pid = nix::unistd::Pid::from_raw(gateway.0.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    assert!(gateway.0.wait().unwrap().success());
    // The refusing endpoint was tried once, then left out for its retry delay.
    let said: Vec<String> = lines.map_while(Result::ok).collect();
    let deactivated = format!("deactivated endpoint {dead}");
    assert_eq!(
        said.iter().filter(|l| l.contains(&deactivated)).count(),
        1,
        "{said:?}"
    );
}

/// etcd's own `grpc-proxy` (the real etcd binary; `etcdc-node` has none) in front of a
/// member: keys, a watch from a past revision, leases and member listing through it.
#[test]
fn etcds_grpc_proxy_in_front_of_a_member() {
    let Some(etcd) = support::etcd::etcd_binary() else {
        return;
    };
    let node = support::process::NodeProcess::start(None);
    let listen = format!("127.0.0.1:{}", support::etcd::free_port());
    let proxy_dir = tempfile::tempdir().unwrap();
    let _proxy = Stopped(
        std::process::Command::new(etcd)
            .args(["grpc-proxy", "start", "--endpoints", &node.url])
            .args(["--listen-addr", &listen])
            .arg("--data-dir")
            .arg(proxy_dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("etcd grpc-proxy starts"),
    );
    let until = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !etcdctl(&listen, &["put", "/via/proxy", "1"], None).0 {
        assert!(std::time::Instant::now() < until, "the proxy never served");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let (ok, out) = etcdctl(&listen, &["put", "/via/proxy", "2", "-w", "json"], None);
    assert!(ok, "{out}");
    let (ok, out) = etcdctl(
        &node.url,
        &["get", "/via/proxy", "--print-value-only"],
        None,
    );
    assert_eq!((ok, out.trim()), (true, "2"));
    let mut watch = Background::start(&listen, &["watch", "/via/proxy", "--rev", "1"]);
    assert_eq!(
        watch.lines(6),
        ["PUT", "/via/proxy", "1", "PUT", "/via/proxy", "2"]
    );
    watch.interrupt();
    let (ok, out) = etcdctl(&listen, &["lease", "grant", "30"], None);
    assert!(ok && out.contains("granted with TTL(30s)"), "{out}");
    let (ok, out) = etcdctl(&listen, &["member", "list"], None);
    assert!(ok && out.contains("started"), "{out}");
}

/// A child process killed by its pid when the test ends, also when it fails.
struct Stopped(std::process::Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

//! etcd's snapshot file (`etcdctl snapshot save`: a bbolt database and its SHA-256), read and
//! written by `etcdc::node::bolt` against the real thing: a file real etcd saved reads back
//! with every revision of every key; written again, `etcdctl snapshot status` reads the same
//! hash, revision and key count from it, and `etcdctl snapshot restore` makes a data dir
//! real etcd starts from with the same keys, values, revisions and versions. And
//! `etcdc-node --restore-snapshot` starts from a file real etcd saved with the same keys,
//! revisions, compaction, leases, users and roles: the way a chat system's data moves from
//! its etcd onto an embedded cluster.

mod support;

use support::process::NodeProcess;

use etcdc::node::bolt;
use etcdc::pb::mvccpb::KeyValue;
use prost::Message;
use sha2::{Digest, Sha256};

fn ok(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `etcdctl snapshot status` of `file`: (hash, revision, total keys).
fn status(file: &std::path::Path) -> (u64, i64, i64) {
    let out = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["snapshot", "status", "-w", "json"])
        .arg(file)
        .output()
        .expect("run etcdctl");
    let v: serde_json::Value = serde_json::from_str(&ok(out)).expect("json");
    (
        v["hash"].as_u64().expect("hash"),
        v["revision"].as_i64().expect("revision"),
        v["totalKey"].as_i64().expect("totalKey"),
    )
}

/// `etcdctl` against `endpoints`.
fn ctl(endpoints: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", endpoints, "--command-timeout=5s"])
        .args(args)
        .output()
        .expect("run etcdctl")
}

/// Every live key with its revisions and version, as `etcdctl get --prefix -w json` says.
fn live(endpoints: &str) -> Vec<(String, String, i64, i64, i64)> {
    let out = ok(ctl(endpoints, &["get", "", "--prefix", "-w", "json"]));
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let text = |x: &serde_json::Value| {
        String::from_utf8(support::unbase64(x.as_str().unwrap_or_default())).expect("utf-8")
    };
    v["kvs"]
        .as_array()
        .map(|kvs| {
            kvs.iter()
                .map(|kv| {
                    (
                        text(&kv["key"]),
                        text(&kv["value"]),
                        kv["create_revision"].as_i64().unwrap_or(0),
                        kv["mod_revision"].as_i64().unwrap_or(0),
                        kv["version"].as_i64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The same history on etcd or the node, through etcdctl: puts, overwrites, a deleted
/// prefix, a compaction, a key under a lease, a user with a role. Returns the lease's id.
fn history(ctl: &dyn Fn(&[&str]) -> std::process::Output) -> String {
    for i in 0..300 {
        ok(ctl(&[
            "put",
            &format!("/chat/user/{i:03}"),
            &format!("v{i}"),
        ]));
    }
    for i in 0..50 {
        ok(ctl(&[
            "put",
            &format!("/chat/user/{i:03}"),
            &"x".repeat(3000),
        ]));
    }
    ok(ctl(&["del", "/chat/user/1", "--prefix"]));
    ok(ctl(&["compaction", "200"]));
    ok(ctl(&["put", "/chat/after", "compaction"]));
    let lease = ok(ctl(&["lease", "grant", "3000"]));
    let lease = lease
        .split_whitespace()
        .nth(1)
        .expect("a lease id")
        .to_string();
    ok(ctl(&[
        "put",
        "/chat/login/1",
        "10.0.0.1:8000",
        "--lease",
        &lease,
    ]));
    ok(ctl(&["user", "add", "alice:secret"]));
    ok(ctl(&["role", "add", "reader"]));
    ok(ctl(&[
        "role",
        "grant-permission",
        "reader",
        "read",
        "/chat/",
        "--prefix",
    ]));
    ok(ctl(&["user", "grant-role", "alice", "reader"]));
    lease
}

/// `get --prefix -w json` at a past revision, the header (cluster and member ids) aside.
fn past(endpoints: &str) -> serde_json::Value {
    let args = ["get", "/chat/user/", "--prefix", "--rev=250", "-w", "json"];
    let mut v: serde_json::Value = serde_json::from_str(&ok(ctl(endpoints, &args))).unwrap();
    v["header"] = serde_json::Value::Null;
    v
}

/// `etcdctl endpoint hashkv`'s hash.
fn hash_kv(endpoints: &str) -> u64 {
    let out = ok(ctl(endpoints, &["endpoint", "hashkv", "-w", "json"]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v[0]["HashKV"]["hash"].as_u64().expect("a hash")
}

/// What a restored copy of the history must answer as its source does.
fn same_data(copy: &str, source: &str, lease: &str) {
    assert_eq!(live(copy), live(source));
    assert_eq!(past(copy), past(source));
    for args in [["user", "get", "alice"], ["role", "get", "reader"]] {
        assert_eq!(ok(ctl(copy, &args)), ok(ctl(source, &args)), "{args:?}");
    }
    // A lease comes with its TTL and keys; its clock starts again.
    let ttl = ok(ctl(copy, &["lease", "timetolive", lease, "--keys"]));
    assert!(
        ttl.contains("granted with TTL(3000s)") && ttl.contains("attached keys([/chat/login/1])"),
        "{ttl}"
    );
    // The compaction came along: below it is gone, above it is there.
    let out = ctl(copy, &["get", "/chat/user/000", "--rev=150"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("required revision has been compacted"));
    ok(ctl(copy, &["get", "/chat/user/000", "--rev=250"]));
}

#[test]
fn etcds_snapshot_file_is_read_and_written_as_etcd_reads_and_writes_it() {
    let Some(etcd) = support::etcd::Cluster::start(1) else {
        return;
    };
    let lease = history(&|args| etcd.etcdctl(args));
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("etcd.db");
    ok(etcd.etcdctl(&["snapshot", "save", saved.to_str().unwrap()]));

    // Read: the SHA-256 at the end, then every bucket; the key bucket has each version.
    let bytes = std::fs::read(&saved).unwrap();
    let (db, sum) = bytes.split_at(bytes.len() - 32);
    assert_eq!(Sha256::digest(db).as_slice(), sum);
    let buckets = bolt::read(db).expect("etcd's file reads");
    for name in [
        "key", "meta", "lease", "members", "cluster", "alarm", "auth",
    ] {
        assert!(
            buckets.contains_key(name.as_bytes()),
            "no bucket {name}: {:?}",
            buckets.keys()
        );
    }
    let mut newest = std::collections::BTreeMap::new();
    for (rev, value) in &buckets[&b"key".to_vec()] {
        assert!(
            rev.len() == 17 || rev.len() == 18,
            "a revision key of {} bytes",
            rev.len()
        );
        let kv = KeyValue::decode(value.as_slice()).expect("a KeyValue");
        let main = i64::from_be_bytes(rev[..8].try_into().unwrap());
        if rev.len() == 18 {
            newest.remove(&kv.key);
        } else {
            assert_eq!(kv.mod_revision, main);
            newest.insert(kv.key.clone(), kv);
        }
    }
    let expected = live(&etcd.endpoints());
    let got: Vec<_> = newest
        .values()
        .map(|kv| {
            (
                String::from_utf8(kv.key.clone()).unwrap(),
                String::from_utf8(kv.value.clone()).unwrap(),
                kv.create_revision,
                kv.mod_revision,
                kv.version,
            )
        })
        .collect();
    assert_eq!(got, expected);
    assert_eq!(expected.len(), 300 - 100 + 2);

    // Written again: etcdctl reads the same content, and etcd starts from it.
    let mut written = bolt::write(&buckets);
    let digest = Sha256::digest(&written);
    written.extend_from_slice(&digest);
    let copy = dir.path().join("copy.db");
    std::fs::write(&copy, &written).unwrap();
    assert_eq!(status(&copy), status(&saved));
    let restored = support::etcd::Cluster::start_restored(&copy).expect("etcd");
    same_data(&restored.endpoints(), &etcd.endpoints(), &lease);

    // etcd's file → etcdc-node: the same answers from the node as from etcd.
    let node = NodeProcess::restored(&saved);
    same_data(&node.url, &etcd.endpoints(), &lease);
    assert_eq!(hash_kv(&node.url), hash_kv(&etcd.endpoints()));
    // A damaged file is refused, and leaves no half-made member behind.
    let cut = dir.path().join("cut.db");
    std::fs::write(&cut, &bytes[..bytes.len() - 100]).unwrap();
    let data = dir.path().join("refused");
    let mut refused = NodeProcess::command(&data, Some(&cut), &support::process::node_ports())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("etcdc-node runs");
    let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(status) = refused.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > until {
            let _ = refused.kill();
            let _ = refused.wait();
            panic!("etcdc-node started from a cut snapshot");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(!status.success());
    let mut err = String::new();
    std::io::Read::read_to_string(&mut refused.stderr.take().unwrap(), &mut err).unwrap();
    assert!(
        err.contains("not an etcd snapshot, or a damaged one"),
        "{err}"
    );
    assert!(!data.join("wal").exists() && !data.join("snap").exists());
}

/// The node's backup (`etcdctl snapshot save` against a member) is etcd's file: `etcdctl
/// snapshot status` reads it, `etcdctl snapshot restore` makes a data dir real etcd starts
/// from with the same keys, revisions, versions, compaction, lease, user and role — and
/// the same `endpoint hashkv`; a new node starts from it the same way, from the file or
/// from the data dir `etcdctl snapshot restore` made.
#[test]
fn a_node_backup_is_etcds_file_and_etcd_starts_from_it() {
    if support::etcd::etcd_binary().is_none() {
        return;
    }
    let node = NodeProcess::start(None);
    let lease = history(&|args| ctl(&node.url, args));
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("node.db");
    let out = ok(ctl(
        &node.url,
        &["snapshot", "save", saved.to_str().unwrap()],
    ));
    assert!(out.contains("Snapshot saved"), "{out}");
    let (_, revision, keys) = status(&saved);
    let now: serde_json::Value =
        serde_json::from_str(&ok(ctl(&node.url, &["endpoint", "status", "-w", "json"]))).unwrap();
    assert_eq!(
        revision,
        now[0]["Status"]["header"]["revision"].as_i64().unwrap()
    );
    assert!(keys > 200, "{keys} keys in the file");

    let etcd = support::etcd::Cluster::start_restored(&saved).expect("etcd");
    same_data(&etcd.endpoints(), &node.url, &lease);
    assert_eq!(hash_kv(&etcd.endpoints()), hash_kv(&node.url));
    // etcd takes writes from there on, at the next revision.
    let put: serde_json::Value =
        serde_json::from_str(&ok(etcd.etcdctl(&["put", "/after", "etcd", "-w", "json"]))).unwrap();
    assert_eq!(put["header"]["revision"].as_i64(), Some(revision + 1));

    let copy = NodeProcess::restored(&saved);
    same_data(&copy.url, &node.url, &lease);
    assert_eq!(hash_kv(&copy.url), hash_kv(&node.url));

    // etcd's disaster recovery as its documentation writes it — `etcdctl snapshot restore`
    // into a data dir, then the member started on that dir — with the node as the member.
    let dir = tempfile::tempdir().unwrap();
    let ports = support::process::node_ports();
    let cluster = format!("restored={}", ports.1);
    let out = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["snapshot", "restore"])
        .arg(&saved)
        .args(["--name", "restored", "--initial-cluster", &cluster])
        .args(["--initial-advertise-peer-urls", &ports.1])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let started = NodeProcess::start_in(
        dir,
        ports,
        None,
        &["--name", "restored", "--initial-cluster", &cluster],
    );
    same_data(&started.url, &node.url, &lease);
    assert_eq!(hash_kv(&started.url), hash_kv(&node.url));
    let put: serde_json::Value = serde_json::from_str(&ok(ctl(
        &started.url,
        &["put", "/after", "node", "-w", "json"],
    )))
    .unwrap();
    assert_eq!(put["header"]["revision"].as_i64(), Some(revision + 1));
}

/// Authentication on travels with a backup (etcd's `auth` bucket): a node with auth on,
/// saved and restored into etcd or into another node, still wants a user. (etcd → node with
/// auth on: `tests/mirror.rs`.)
#[test]
fn authentication_stays_on_through_a_backup() {
    if support::etcd::etcd_binary().is_none() {
        return;
    }
    let node = NodeProcess::start(None);
    for args in [
        &["user", "add", "root:rootpw"][..],
        &["role", "add", "root"],
        &["user", "grant-role", "root", "root"],
        &["auth", "enable"],
    ] {
        ok(ctl(&node.url, args));
    }
    fn root<'a>(args: &[&'a str]) -> Vec<&'a str> {
        [&["--user", "root:rootpw"][..], args].concat()
    }
    ok(ctl(&node.url, &root(&["put", "/k", "v"])));
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("node.db");
    ok(ctl(
        &node.url,
        &root(&["snapshot", "save", saved.to_str().unwrap()]),
    ));
    let etcd = support::etcd::Cluster::start_restored(&saved).expect("etcd");
    let copy = NodeProcess::restored(&saved);
    for url in [etcd.endpoints(), copy.url.clone()] {
        let refused = ctl(&url, &["get", "/k"]);
        assert!(
            !refused.status.success()
                && String::from_utf8_lossy(&refused.stderr).contains("user name is empty"),
            "{url}: {refused:?}"
        );
        assert!(ok(ctl(&url, &root(&["get", "/k"]))).contains('v'));
    }
}

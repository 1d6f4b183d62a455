//! Moving a chat system from its etcd onto an embedded cluster (docs/migrating-from-etcd.md),
//! as the procedure says: a snapshot of etcd, `etcdc-node --restore-snapshot FILE
//! --mirror-from ETCD`, the mirror following etcd at the same revisions while the servers
//! still write to etcd (a compaction on etcd in the middle), the writers stopped,
//! `POST /etcdc/promote`, and the servers' watches resumed on the node from the revision
//! they had: every revision seen exactly once. And `etcdctl make-mirror` both ways.

mod support;

use std::time::Duration;

use etcdc::api::{Etcd, WatchUpdate};
use etcdc::pb::etcdserverpb::*;
use support::etcdctl::etcdctl;
use support::process::NodeProcess;
use support::{dl, put};

/// Revision and key of every event `w` delivers until it has seen revision `upto`.
async fn events_until(w: &mut etcdc::api::Watcher, upto: i64, seen: &mut Vec<(i64, String)>) {
    while seen.last().is_none_or(|(rev, _)| *rev < upto) {
        let update = tokio::time::timeout(Duration::from_secs(10), w.updates.recv())
            .await
            .unwrap_or_else(|_| panic!("revision {upto} within 10 s; saw {:?}", seen.last()));
        match update {
            Some(WatchUpdate::Events { events, .. }) => {
                for e in events {
                    let kv = e.kv.expect("kv");
                    seen.push((kv.mod_revision, String::from_utf8(kv.key).unwrap()));
                }
            }
            Some(WatchUpdate::Progress { .. }) => {}
            other => panic!("the watch ended: {other:?}"),
        }
    }
}

async fn revision(e: &dyn Etcd) -> i64 {
    e.status(None, dl())
        .await
        .expect("status")
        .header
        .expect("header")
        .revision
}

/// `POST /etcdc/promote` on a member: its answer.
fn promote(url: &str) -> String {
    let promoted = std::process::Command::new("curl")
        .args(["-sS", "-X", "POST", "--max-time", "15"])
        .arg(format!("{url}/etcdc/promote"))
        .output()
        .expect("curl runs");
    String::from_utf8_lossy(&promoted.stdout).into_owned()
}

/// `etcdctl get --prefix -w json`'s key-values (the header aside).
fn kvs(url: &str) -> serde_json::Value {
    let (ok, out) = etcdctl(url, &["get", "/chat/", "--prefix", "-w", "json"], None);
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    v["kvs"].clone()
}

fn hash_kv(url: &str, rev: i64) -> u64 {
    let args = [
        "endpoint",
        "hashkv",
        "--rev",
        &rev.to_string(),
        "-w",
        "json",
    ];
    let (ok, out) = etcdctl(url, &args, None);
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    v[0]["HashKV"]["hash"].as_u64().expect("hash")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_system_moves_from_etcd_to_a_mirror_with_its_watches_intact() {
    let Some(etcd) = support::etcd::Cluster::start(1) else {
        return;
    };
    let source = support::remote(&etcd.endpoints());
    for i in 0..100 {
        source
            .put(put(format!("/chat/msg/{i:03}"), "hello"), dl())
            .await
            .unwrap();
    }
    // msg_server's registration: a key under a lease.
    let lease = source
        .lease_grant(LeaseGrantRequest { ttl: 300, id: 0 }, dl())
        .await
        .unwrap()
        .id;
    let mut registration = put("/chat/login/1", "10.0.0.1:8000");
    registration.lease = lease;
    source.put(registration, dl()).await.unwrap();
    // A server's watch on /chat/, from the next revision on.
    let start = revision(&*source).await + 1;
    let watch = |from: i64| WatchCreateRequest {
        key: b"/chat/".to_vec(),
        range_end: etcdc::kv::prefix_end(b"/chat/"),
        start_revision: from,
        ..Default::default()
    };
    let mut before = source.watcher(watch(start), dl()).await.unwrap();

    // The snapshot, and the mirror started from it.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("chat.db");
    let (ok, out) = etcdctl(
        &etcd.endpoints().replace("http://", ""),
        &["snapshot", "save", file.to_str().unwrap()],
        None,
    );
    assert!(ok, "{out}");
    let node = NodeProcess::start_with(Some(&file), &["--mirror-from", &etcd.endpoints()]);
    let mirror = support::remote(&node.url);

    // The servers keep writing to etcd; a compaction there in the middle.
    let mut compacted_at = 0;
    for i in 0..200 {
        let key = format!("/chat/msg/{:03}", i % 120);
        source.put(put(key, format!("v{i}")), dl()).await.unwrap();
        if i == 100 {
            // As etcd's auto-compaction would: history the mirror has read already (a
            // mirror that had not would stop with "the source compacted revision ...").
            compacted_at = revision(&*mirror).await;
            source
                .compact(
                    CompactionRequest {
                        revision: compacted_at,
                        physical: false,
                    },
                    dl(),
                )
                .await
                .unwrap();
        }
        if i == 150 {
            source
                .delete_range(
                    DeleteRangeRequest {
                        key: b"/chat/msg/000".to_vec(),
                        ..Default::default()
                    },
                    dl(),
                )
                .await
                .unwrap();
        }
    }
    // A mirror takes no writes.
    let refused = mirror.put(put("/chat/x", "y"), dl()).await.unwrap_err();
    assert!(
        refused.message.contains("mirrors") && refused.message.contains("promote"),
        "{}",
        refused.message
    );

    // The writers stopped: the mirror catches up, with the same data and the same hash.
    let last = revision(&*source).await;
    let until = std::time::Instant::now() + Duration::from_secs(20);
    while revision(&*mirror).await < last {
        assert!(
            std::time::Instant::now() < until,
            "the mirror never caught up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(kvs(&node.url), kvs(&etcd.endpoints()));
    let mut seen = Vec::new();
    events_until(&mut before, last, &mut seen).await;
    drop(before);

    // The cut-over.
    assert_eq!(promote(&node.url), format!("{{\"revision\":\"{last}\"}}"));
    // Compactions are not mirrored (a watch does not show them): the same one on the node,
    // and the two hash alike.
    let (ok, out) = etcdctl(&node.url, &["compaction", &compacted_at.to_string()], None);
    assert!(ok, "{out}");
    assert_eq!(hash_kv(&node.url, last), hash_kv(&etcd.endpoints(), last));

    // The server's watch resumes on the node from the revision it had.
    let mut after = mirror
        .watcher(watch(seen.last().unwrap().0 + 1), dl())
        .await
        .unwrap();
    for i in 0..50 {
        let rev = support::put_rev(&*mirror, format!("/chat/msg/{i:03}"), "on the node").await;
        assert_eq!(rev, last + 1 + i);
    }
    events_until(&mut after, last + 50, &mut seen).await;
    let revisions: Vec<i64> = seen.iter().map(|(rev, _)| *rev).collect();
    let expected: Vec<i64> = (start..=last + 50).collect();
    assert_eq!(revisions, expected, "every revision exactly once");

    // The registration's lease came along: its key, its TTL, kept alive on the node.
    let ttl = mirror
        .lease_time_to_live(
            LeaseTimeToLiveRequest {
                id: lease,
                keys: true,
            },
            dl(),
        )
        .await
        .unwrap();
    assert_eq!(ttl.granted_ttl, 300);
    assert_eq!(ttl.keys, vec![b"/chat/login/1".to_vec()]);
    let (ok, out) = etcdctl(
        &node.url,
        &["lease", "keep-alive", "--once", &format!("{lease:x}")],
        None,
    );
    assert!(ok && out.contains("keepalived with TTL(300)"), "{out}");
}

/// `etcdctl make-mirror` (keys, not revisions) from etcd to the node and back.
#[test]
fn etcdctl_make_mirror_works_both_ways() {
    let Some(etcd) = support::etcd::Cluster::start(1) else {
        return;
    };
    let node = NodeProcess::start(None);
    let etcd_url = etcd.endpoints();
    for (from, to, key) in [
        (&etcd_url, &node.url, "/to-node/"),
        (&node.url, &etcd_url, "/to-etcd/"),
    ] {
        let _mirror = support::etcdctl::Background::start(
            from,
            &["make-mirror", "--prefix", key, to.as_str()],
        );
        for i in 0..20 {
            let (ok, out) = etcdctl(from, &["put", &format!("{key}{i:02}"), "v"], None);
            assert!(ok, "{out}");
        }
        let until = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let (_, out) = etcdctl(to, &["get", key, "--prefix", "--keys-only"], None);
            if out.lines().filter(|l| l.starts_with(key)).count() == 20 {
                break;
            }
            assert!(
                std::time::Instant::now() < until,
                "make-mirror {from} -> {to}: {out}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A source that wants client certificates and has authentication on: every member reaches
/// it with `--mirror-cacert`, `--mirror-cert`, `--mirror-key` and `--mirror-user`. The
/// certificate is `app`'s, whose role may read nothing, so the mirror follows etcd only if
/// it reads as the user it was given (a password goes before the certificate's name).
#[test]
fn a_mirror_reaches_an_etcd_with_client_certificates_and_users() {
    let certs = support::tls::Certs::new();
    let Some(etcd) = support::etcd::Cluster::start_tls(1, &certs, true) else {
        return;
    };
    // etcdctl presents `root`'s certificate.
    let ctl = |args: &[&str]| {
        let out = etcd.etcdctl(args);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{args:?}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };
    for args in [
        &["user", "add", "root:rootpw"][..],
        &["role", "add", "root"],
        &["user", "grant-role", "root", "root"],
        &["user", "add", "app:apppw"],
        &["role", "add", "app"],
        &["user", "grant-role", "app", "app"],
        &["auth", "enable"],
    ] {
        ctl(args);
    }
    for i in 0..10 {
        ctl(&["put", &format!("/chat/msg/{i:02}"), "before"]);
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("chat.db");
    ctl(&["snapshot", "save", file.to_str().unwrap()]);
    let p = |f: &str| certs.path(f).display().to_string();
    let node = NodeProcess::start_with(
        Some(&file),
        &[
            "--mirror-from",
            &etcd.endpoints(),
            "--mirror-cacert",
            &p("ca.pem"),
            "--mirror-cert",
            &p("app.pem"),
            "--mirror-key",
            &p("app-key.pem"),
            "--mirror-user",
            "root",
            "--mirror-password",
            "rootpw",
        ],
    );
    for i in 10..30 {
        ctl(&["put", &format!("/chat/msg/{i:02}"), "after"]);
    }
    let last = revision_of(&ctl(&["endpoint", "status", "-w", "json"]));
    // The snapshot brought etcd's users along: the node wants root's password too.
    let root = ["--user", "root:rootpw"];
    let until = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (ok, out) = etcdctl(
            &node.url,
            &[&root[..], &["endpoint", "status", "-w", "json"]].concat(),
            None,
        );
        if ok && out.starts_with('[') && revision_of(&out) == last {
            break;
        }
        assert!(
            std::time::Instant::now() < until,
            "the mirror never reached revision {last}: {out}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (ok, out) = etcdctl(
        &node.url,
        &[&root[..], &["get", "/chat/msg/29"]].concat(),
        None,
    );
    assert!(ok && out.contains("after"), "{out}");
    // Authentication is on, as on etcd: no user, no keys.
    let (ok, out) = etcdctl(&node.url, &["get", "/chat/msg/29"], None);
    assert!(!ok && out.contains("user name is empty"), "{out}");

    // The cut-over asks the source its revision, through the same access.
    assert_eq!(promote(&node.url), format!("{{\"revision\":\"{last}\"}}"));
    let (ok, out) = etcdctl(
        &node.url,
        &[&root[..], &["put", "/chat/x", "on the node"]].concat(),
        None,
    );
    assert!(ok, "{out}");
}

/// The header revision in `etcdctl endpoint status -w json` (its first line).
fn revision_of(status: &str) -> i64 {
    let line = status.lines().next().unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(line).expect("json");
    v[0]["Status"]["header"]["revision"]
        .as_i64()
        .expect("revision")
}

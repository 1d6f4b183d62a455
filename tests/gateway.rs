//! etcd's JSON gateway, differentially: the same requests with curl against real etcd 3.4
//! and against an `etcdc-node` process, every answer (HTTP status and JSON body, streams
//! line by line) compared after the ids that differ between two clusters (cluster, member,
//! raft term, lease ids, tokens) are normalized. Revisions are compared as they are: the
//! same history gives the same revisions.

mod support;

use serde_json::{json, Value};
use support::process::NodeProcess;
use support::{base64 as b64, unbase64 as unb64};

/// An HTTP answer: its status and body.
struct Reply {
    status: u16,
    body: String,
}

/// `curl -X POST` of `body` to `base` + `path`, with `token` as the Authorization header;
/// a stream is read for `seconds` (curl's --max-time) and taken as it is then.
fn post(base: &str, path: &str, body: &str, token: Option<&str>, seconds: f32) -> Reply {
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-sS", "-N", "-X", "POST", "-w", "\n%{http_code}"])
        .args(["--max-time", &seconds.to_string(), "-d", body]);
    if let Some(token) = token {
        cmd.args(["-H", &format!("Authorization: {token}")]);
    }
    let out = cmd
        .arg(format!("{base}{path}"))
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    Reply {
        status: status.trim().parse().unwrap_or(0),
        body: body.to_string(),
    }
}

/// A scenario against one server, each answer recorded under a label.
struct Session<'a> {
    base: &'a str,
    /// Values that differ between clusters and are replaced by `<id>`.
    ids: Vec<String>,
    seen: Vec<(String, Value)>,
}

impl Session<'_> {
    fn call(&mut self, path: &str, body: Value, token: Option<&str>) -> Value {
        let r = post(self.base, path, &body.to_string(), token, 10.0);
        serde_json::from_str(&r.body).unwrap_or(Value::String(r.body))
    }

    /// Records the answer to `path` with `body`; returns the body as JSON.
    fn record(&mut self, label: &str, path: &str, body: &str, token: Option<&str>) -> Value {
        let r = post(self.base, path, body, token, 10.0);
        let v = serde_json::from_str(&r.body).unwrap_or(Value::String(r.body));
        self.seen
            .push((label.into(), json!({"status": r.status, "body": v.clone()})));
        v
    }

    /// Records a stream's lines read for `seconds`.
    fn stream(&mut self, label: &str, path: &str, body: &str, seconds: f32) -> Vec<Value> {
        let r = post(self.base, path, body, None, seconds);
        let lines: Vec<Value> = r
            .body
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or(Value::String(l.into())))
            .collect();
        self.seen.push((
            label.into(),
            json!({"status": r.status, "lines": lines.clone()}),
        ));
        lines
    }

    fn note(&mut self, label: &str, v: Value) {
        self.seen.push((label.into(), v));
    }

    fn id(&mut self, v: &Value) -> String {
        let id = v.as_str().expect("an id").to_string();
        self.ids.push(id.clone());
        id
    }

    /// A lease's id, and the keys the lock and the election make with it (`name/<hex id>`).
    fn lease(&mut self, v: &Value) -> String {
        let id = self.id(v);
        let hex = format!("{:x}", id.parse::<i64>().expect("a lease id"));
        for name in ["mylock", "elect"] {
            self.ids.push(b64(&format!("{name}/{hex}")));
        }
        id
    }
}

fn normalize(v: &mut Value, ids: &[String]) {
    match v {
        Value::Object(m) => {
            for drop in ["cluster_id", "member_id", "raft_term"] {
                m.remove(drop);
            }
            m.values_mut().for_each(|x| normalize(x, ids));
        }
        Value::Array(a) => a.iter_mut().for_each(|x| normalize(x, ids)),
        Value::String(s) if ids.contains(s) => *s = "<id>".into(),
        _ => {}
    }
}

/// The whole scenario against the server at `base`: what it answered, normalized.
fn scenario(base: &str) -> Vec<(String, Value)> {
    let mut s = Session {
        base,
        ids: Vec::new(),
        seen: Vec::new(),
    };
    let config = b64("/app/config");
    // KV.
    s.record(
        "put",
        "/v3/kv/put",
        &json!({"key": config, "value": b64("bar")}).to_string(),
        None,
    );
    for (k, v) in [("/chat/a", "1"), ("/chat/b", "2"), ("/chat/c", "3")] {
        s.record(
            "put chat",
            "/v3/kv/put",
            &json!({"key": b64(k), "value": b64(v)}).to_string(),
            None,
        );
    }
    s.record(
        "range",
        "/v3/kv/range",
        &json!({"key": config}).to_string(),
        None,
    );
    let chat = json!({"key": b64("/chat/"), "range_end": b64("/chat0")});
    s.record("range prefix", "/v3/kv/range", &chat.to_string(), None);
    let mut sorted = chat.clone();
    sorted["sortOrder"] = json!("DESCEND");
    sorted["sort_target"] = json!("KEY");
    sorted["limit"] = json!(2);
    s.record(
        "range sorted, camelCase and numbers",
        "/v3/kv/range",
        &sorted.to_string(),
        None,
    );
    let mut counted = chat.clone();
    counted["count_only"] = json!(true);
    s.record("range count", "/v3/kv/range", &counted.to_string(), None);
    s.record(
        "range future",
        "/v3/kv/range",
        &json!({"key": config, "revision": "100"}).to_string(),
        None,
    );
    s.record("range cut body", "/v3/kv/range", r#"{"key":"#, None);
    s.record(
        "range unknown field",
        "/v3/kv/range",
        &json!({"key": config, "bogus": 1}).to_string(),
        None,
    );
    s.record("range empty body", "/v3/kv/range", "", None);
    s.record(
        "put without key",
        "/v3/kv/put",
        &json!({"value": b64("x")}).to_string(),
        None,
    );
    s.record(
        "v3beta alias",
        "/v3beta/kv/range",
        &json!({"key": config}).to_string(),
        None,
    );
    let bad = post(base, "/v3/kv/range", r#"{"key":"!!"}"#, None, 10.0);
    s.note("bad base64", json!(bad.status));
    let txn = json!({
        "compare": [{"target": "VERSION", "key": config, "version": "1"}],
        "success": [{"requestPut": {"key": config, "value": b64("baz"), "prev_kv": true}}],
        "failure": [{"request_range": {"key": config}}],
    });
    s.record("txn success", "/v3/kv/txn", &txn.to_string(), None);
    s.record("txn failure", "/v3/kv/txn", &txn.to_string(), None);
    // An operation with no request (a field grpc-gateway does not know): etcd's "empty op".
    let empty_op = json!({"success": [{"Request": {"RequestPut": {"key": config}}}]});
    s.record("txn empty op", "/v3/kv/txn", &empty_op.to_string(), None);
    s.record(
        "delete prefix",
        "/v3/kv/deleterange",
        &json!({"key": b64("/chat/"), "range_end": b64("/chat0"), "prev_kv": true}).to_string(),
        None,
    );

    // Watch: history from revision 2, then a new put while it streams.
    let from = json!({"create_request": {"key": config, "start_revision": "2"}});
    s.stream("watch history", "/v3/watch", &from.to_string(), 1.5);

    // Leases.
    let grant = s.call("/v3/lease/grant", json!({"TTL": 60}), None);
    let lease = s.id(&grant["ID"]);
    s.note("grant", {
        let mut g = grant.clone();
        normalize(&mut g, &s.ids);
        g
    });
    s.record(
        "put with lease",
        "/v3/kv/put",
        &json!({"key": b64("/svc/1"), "value": b64("10.0.0.1"), "lease": lease}).to_string(),
        None,
    );
    let mut ttl = s.call(
        "/v3/lease/timetolive",
        json!({"ID": lease, "keys": true}),
        None,
    );
    ttl.as_object_mut().unwrap().remove("TTL");
    s.note("timetolive", ttl);
    s.record("leases", "/v3/kv/lease/leases", "{}", None);
    let twice = format!("{0}\n{0}", json!({"ID": lease}));
    s.stream("keepalive", "/v3/lease/keepalive", &twice, 5.0);
    s.stream(
        "keepalive unknown",
        "/v3/lease/keepalive",
        r#"{"ID":"123"}"#,
        5.0,
    );
    s.record(
        "revoke",
        "/v3/lease/revoke",
        &json!({"ID": lease}).to_string(),
        None,
    );
    s.record(
        "timetolive revoked",
        "/v3/lease/timetolive",
        &json!({"ID": lease}).to_string(),
        None,
    );
    s.record(
        "revoke again",
        "/v3/kv/lease/revoke",
        &json!({"ID": lease}).to_string(),
        None,
    );

    // Compaction.
    let now = s.call("/v3/kv/range", json!({"key": config}), None)["header"]["revision"].clone();
    s.record(
        "compact",
        "/v3/kv/compaction",
        &json!({"revision": now}).to_string(),
        None,
    );
    s.record(
        "range compacted",
        "/v3/kv/range",
        &json!({"key": config, "revision": "2"}).to_string(),
        None,
    );
    s.stream("watch compacted", "/v3/watch", &from.to_string(), 1.0);

    // Lock and election.
    let grant = s.call("/v3/lease/grant", json!({"TTL": 60}), None);
    let lease = s.lease(&grant["ID"]);
    let lock = json!({"name": b64("mylock"), "lease": lease});
    let lock = s.record("lock", "/v3/lock/lock", &lock.to_string(), None);
    let key = lock["key"].as_str().unwrap_or_default().to_string();
    s.record(
        "unlock",
        "/v3/lock/unlock",
        &json!({"key": key}).to_string(),
        None,
    );
    let election = b64("elect");
    let campaign = json!({"name": election, "lease": lease, "value": b64("v1")});
    let won = s.record(
        "campaign",
        "/v3/election/campaign",
        &campaign.to_string(),
        None,
    );
    let leader = won["leader"].clone();
    s.record(
        "leader",
        "/v3/election/leader",
        &json!({"name": election}).to_string(),
        None,
    );
    s.record(
        "proclaim",
        "/v3/election/proclaim",
        &json!({"leader": leader, "value": b64("v2")}).to_string(),
        None,
    );
    s.stream(
        "observe",
        "/v3/election/observe",
        &json!({"name": election}).to_string(),
        1.0,
    );
    s.record(
        "resign",
        "/v3/election/resign",
        &json!({"leader": leader}).to_string(),
        None,
    );
    s.record(
        "leader after resign",
        "/v3/election/leader",
        &json!({"name": election}).to_string(),
        None,
    );

    // Maintenance and cluster.
    let status = s.call("/v3/maintenance/status", json!({}), None);
    s.note(
        "status",
        json!([
            status["version"],
            status["leader"] == status["header"]["member_id"]
        ]),
    );
    let members = s.call("/v3/cluster/member/list", json!({}), None);
    s.note(
        "members",
        json!([
            members["members"].as_array().map(Vec::len),
            members["members"][0]["clientURLs"][0].as_str() == Some(base),
        ]),
    );
    s.record(
        "alarms",
        "/v3/maintenance/alarm",
        &json!({"action": "GET"}).to_string(),
        None,
    );
    let hash = s.call("/v3/maintenance/hash", json!({}), None);
    s.note("hash", json!(hash["hash"].is_number()));
    let backup = post(base, "/v3/maintenance/snapshot", "{}", None, 10.0);
    let blobs: Vec<Vec<u8>> = backup
        .body
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("a JSON line");
            unb64(v["result"]["blob"].as_str().expect("a blob"))
        })
        .collect();
    let total: usize = blobs.iter().map(Vec::len).sum();
    s.note(
        "snapshot",
        json!([backup.status, blobs.last().map(Vec::len), total % 512]),
    );

    // Auth.
    let root = json!({"name": "root", "password": "rootpw"});
    s.record(
        "user add root",
        "/v3/auth/user/add",
        &root.to_string(),
        None,
    );
    s.record(
        "grant root",
        "/v3/auth/user/grant",
        &json!({"user": "root", "role": "root"}).to_string(),
        None,
    );
    s.record(
        "user add alice",
        "/v3/auth/user/add",
        &json!({"name": "alice", "password": "alicepw"}).to_string(),
        None,
    );
    s.record(
        "role add",
        "/v3/auth/role/add",
        &json!({"name": "reader"}).to_string(),
        None,
    );
    let perm = json!({"name": "reader", "perm": {"permType": "READ", "key": b64("/chat/"), "range_end": b64("/chat0")}});
    s.record("role grant", "/v3/auth/role/grant", &perm.to_string(), None);
    s.record(
        "user grant",
        "/v3/auth/user/grant",
        &json!({"user": "alice", "role": "reader"}).to_string(),
        None,
    );
    s.record(
        "user get",
        "/v3/auth/user/get",
        &json!({"name": "alice"}).to_string(),
        None,
    );
    s.record(
        "role get",
        "/v3/auth/role/get",
        &json!({"role": "reader"}).to_string(),
        None,
    );
    s.record("user list", "/v3/auth/user/list", "{}", None);
    s.record("role list", "/v3/auth/role/list", "{}", None);
    s.record("auth enable", "/v3/auth/enable", "{}", None);
    s.record(
        "range without a token",
        "/v3/kv/range",
        &json!({"key": config}).to_string(),
        None,
    );
    s.record(
        "wrong password",
        "/v3/auth/authenticate",
        &json!({"name": "root", "password": "no"}).to_string(),
        None,
    );
    let token = s.call("/v3/auth/authenticate", root, None)["token"].clone();
    let token = s.id(&token);
    let alice = s.call(
        "/v3/auth/authenticate",
        json!({"name": "alice", "password": "alicepw"}),
        None,
    )["token"]
        .clone();
    let alice = s.id(&alice);
    s.record(
        "range as root",
        "/v3/kv/range",
        &json!({"key": config}).to_string(),
        Some(&token),
    );
    s.record(
        "alice reads /chat/",
        "/v3/kv/range",
        &chat.to_string(),
        Some(&alice),
    );
    s.record(
        "alice writes",
        "/v3/kv/put",
        &json!({"key": b64("/chat/x"), "value": b64("1")}).to_string(),
        Some(&alice),
    );
    s.record(
        "bad token",
        "/v3/kv/range",
        &json!({"key": config}).to_string(),
        Some("nonsense"),
    );
    s.record("auth disable", "/v3/auth/disable", "{}", Some(&token));

    // Not the gateway's.
    let missing = post(base, "/v3/kv/nothing", "{}", None, 10.0);
    s.note("unknown path", json!([missing.status, missing.body]));

    let ids = s.ids.clone();
    s.seen
        .into_iter()
        .map(|(label, mut v)| {
            normalize(&mut v, &ids);
            (label, v)
        })
        .collect()
}

#[test]
fn the_gateway_answers_as_etcds_does() {
    let Some(etcd) = support::etcd::Cluster::start(1) else {
        return;
    };
    let node = NodeProcess::start(None);
    let expected = scenario(&etcd.client_url(0));
    let got = scenario(&node.url);
    assert_eq!(got.len(), expected.len());
    let mut differ = Vec::new();
    for ((label, g), (_, e)) in got.iter().zip(&expected) {
        if g != e {
            differ.push(format!("{label}:\n  etcd: {e}\n  node: {g}"));
        }
    }
    assert!(differ.is_empty(), "{}", differ.join("\n"));
}

/// `--max-concurrent-streams 1`: etcd's gateway is one gRPC client of its server, so a watch
/// open on it holds the one stream and a put waits until the watch ends — on etcd and on
/// the node alike (etcd's TestV3Curl_MaxStreams).
#[test]
fn the_gateway_shares_max_concurrent_streams_as_etcds_does() {
    let Some(etcd) = support::etcd::Cluster::start_with(1, &["--max-concurrent-streams", "1"])
    else {
        return;
    };
    let node = NodeProcess::start_with(None, &["--max-concurrent-streams", "1"]);
    for base in [etcd.client_url(0), node.url.clone()] {
        let mut watch = std::process::Command::new("curl")
            .args(["-sS", "-N", "-X", "POST", "--max-time", "3", "-d"])
            .arg(json!({"create_request": {"key": b64("/w")}}).to_string())
            .arg(format!("{base}/v3/watch"))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("curl runs");
        let mut created = String::new();
        let mut lines = std::io::BufReader::new(watch.stdout.take().unwrap());
        std::io::BufRead::read_line(&mut lines, &mut created).unwrap();
        assert!(created.contains("\"created\":true"), "{base}: {created}");
        let put = json!({"key": b64("/k"), "value": b64("v")}).to_string();
        let waiting = post(&base, "/v3/kv/put", &put, None, 1.0);
        assert_eq!(
            waiting.status, 0,
            "{base}: answered beside the watch: {}",
            waiting.body
        );
        let _ = watch.wait();
        let after = post(&base, "/v3/kv/put", &put, None, 5.0);
        assert_eq!(after.status, 200, "{base}: {}", after.body);
    }
}

/// etcd's JWT tokens (`--auth-token jwt,...`), side by side: etcdctl works with a user on
/// both; a token etcd signed is taken by the node and one the node signed by etcd (the same
/// key, the same auth history), which shows the format is etcd's; once the users change,
/// both refuse the older tokens alike ("revision of auth store is old"). ES256 with a PKCS#8
/// key (rcgen) and its public key; RS256 with a PKCS#1 key (`openssl genrsa -traditional`,
/// as etcd's docs make one) and a certificate as the public key (as etcd's e2e tests).
#[test]
fn jwt_tokens_are_etcds_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).display().to_string();
    let key = rcgen::KeyPair::generate().unwrap();
    std::fs::write(path("es.key"), key.serialize_pem()).unwrap();
    std::fs::write(path("es.pub"), key.public_key_pem()).unwrap();
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl runs (scripts/deps.sh installs it)");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    openssl(&["genrsa", "-traditional", "-out", &path("rs.key"), "2048"]);
    openssl(&[
        "req",
        "-new",
        "-x509",
        "-key",
        &path("rs.key"),
        "-subj",
        "/CN=jwt",
        "-days",
        "1",
        "-out",
        &path("rs.crt"),
    ]);
    for (method, private, public) in [("ES256", "es.key", "es.pub"), ("RS256", "rs.key", "rs.crt")]
    {
        let flag = format!(
            "--auth-token=jwt,pub-key={},priv-key={},sign-method={method}",
            path(public),
            path(private)
        );
        jwt_side_by_side(&flag);
    }
}

fn jwt_side_by_side(flag: &str) {
    let Some(etcd) = support::etcd::Cluster::start_with(1, &[flag]) else {
        return;
    };
    let node = NodeProcess::start_with(None, &[flag]);
    let (etcd_url, node_url) = (etcd.client_url(0), node.url.clone());
    let ctl = |url: &str, args: &[&str]| {
        let (ok, out) = support::etcdctl::etcdctl(url, args, None);
        assert!(ok, "{url} {args:?}: {out}");
    };
    let root = ["--user", "root:rootpw"];
    for url in [&etcd_url, &node_url] {
        for args in [
            &["user", "add", "root:rootpw"][..],
            &["role", "add", "root"],
            &["user", "grant-role", "root", "root"],
            &["auth", "enable"],
        ] {
            ctl(url, args);
        }
        ctl(url, &[&root[..], &["put", "/k", "v"]].concat());
    }
    let token = |url: &str| {
        let r = post(
            url,
            "/v3/auth/authenticate",
            r#"{"name":"root","password":"rootpw"}"#,
            None,
            5.0,
        );
        let v: Value = serde_json::from_str(&r.body).expect("json");
        v["token"].as_str().expect("a token").to_string()
    };
    let range = |url: &str, token: &str| {
        let body = json!({"key": b64("/k")}).to_string();
        let r = post(url, "/v3/kv/range", &body, Some(token), 5.0);
        let v: Value = serde_json::from_str(&r.body).unwrap_or(Value::String(r.body));
        (r.status, v)
    };
    let (from_etcd, from_node) = (token(&etcd_url), token(&node_url));
    assert_eq!(from_etcd.split('.').count(), 3, "{from_etcd}");
    for (url, token) in [
        (&etcd_url, &from_node),
        (&node_url, &from_etcd),
        (&etcd_url, &from_etcd),
        (&node_url, &from_node),
    ] {
        let (status, v) = range(url, token);
        assert_eq!(status, 200, "{url}: {v}");
        assert_eq!(v["kvs"][0]["value"], b64("v"), "{url}: {v}");
    }
    for url in [&etcd_url, &node_url] {
        ctl(url, &[&root[..], &["user", "add", "other:pw"]].concat());
    }
    let old_on_etcd = range(&etcd_url, &from_etcd);
    assert_eq!(range(&node_url, &from_node), old_on_etcd);
    assert!(
        old_on_etcd
            .1
            .to_string()
            .contains("revision of auth store is old"),
        "{old_on_etcd:?}"
    );
    assert_eq!(
        range(&node_url, "not.a.token"),
        range(&etcd_url, "not.a.token")
    );
    // etcdctl authenticates again and goes on.
    for url in [&etcd_url, &node_url] {
        ctl(url, &[&root[..], &["get", "/k"]].concat());
    }
}

//! Authentication on both backends, through the remote client: real etcd 3.4 and an
//! embedded-node member, set up with the real `etcdctl` (users, roles, `auth enable`) — a
//! user and password exchanged for a token, the token renewed when the cluster stops taking
//! it, every refusal a clear error of its own kind, and the user named by a client
//! certificate.

mod support;

use std::sync::Arc;
use std::time::Duration;

use etcdc::pb::etcdserverpb::*;
use etcdc::remote::{parse_endpoints, ClientTls, Credentials, Identity, Pem, Remote, RemoteConfig};
use etcdc::{ErrorKind, Etcd};
use support::etcd::Cluster;
use support::tls::Certs;
use support::{dl, next_event_at, put};

fn client(
    endpoints: &str,
    credentials: Option<(&str, &str)>,
    tls: Option<ClientTls>,
) -> Arc<dyn Etcd> {
    Arc::new(
        Remote::new(RemoteConfig {
            endpoints: parse_endpoints(endpoints).unwrap(),
            connect_timeout: Duration::from_secs(1),
            tls,
            credentials: credentials.map(|(user, password)| Credentials {
                user: user.into(),
                password: password.into(),
            }),
        })
        .unwrap(),
    )
}

/// Runs etcdctl against the cluster; it must succeed.
fn ctl(cluster: &Cluster, args: &[&str]) {
    let out = cluster.etcdctl(args);
    assert!(
        out.status.success(),
        "etcdctl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs etcdctl against `url`; it must succeed.
fn ctl_at(url: &str, args: &[&str]) {
    let (ok, out) = support::etcdctl::etcdctl(url, args, None);
    assert!(ok, "etcdctl {args:?}: {out}");
}

const ROOT: &[&str] = &["--user", "root:rootpw"];

fn as_root<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut v: Vec<&str> = ROOT.to_vec();
    v.extend_from_slice(args);
    v
}

/// Users `root` and `app` (read and write under `/app/` only), then `auth enable`.
fn enable_auth(ctl: &dyn Fn(&[&str]), root_password: bool) {
    if root_password {
        ctl(&["user", "add", "root:rootpw"]);
    } else {
        ctl(&["user", "add", "root", "--no-password"]);
    }
    ctl(&["role", "add", "root"]);
    ctl(&["user", "grant-role", "root", "root"]);
    ctl(&["user", "add", "app:apppw"]);
    ctl(&["role", "add", "app"]);
    ctl(&[
        "role",
        "grant-permission",
        "app",
        "readwrite",
        "/app/",
        "--prefix",
    ]);
    ctl(&["user", "grant-role", "app", "app"]);
    ctl(&["auth", "enable"]);
}

fn range(key: &str) -> RangeRequest {
    RangeRequest {
        key: key.as_bytes().to_vec(),
        ..Default::default()
    }
}

fn watch_req(key: &str) -> WatchCreateRequest {
    WatchCreateRequest {
        key: key.as_bytes().to_vec(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_and_password_on_etcd() {
    let Some(cluster) = Cluster::start(1) else {
        return;
    };
    user_and_password(&cluster.endpoints(), &|args| ctl(&cluster, args)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_and_password_on_the_node() {
    if !support::etcdctl::available() {
        return;
    }
    let (_c, url, _stop) = support::node::serve_single().await;
    user_and_password(&url, &|args| ctl_at(&url, args)).await;
}

async fn user_and_password(url: &str, ctl: &dyn Fn(&[&str])) {
    let url = url.to_string();
    // A client with a user made while auth is still off goes on without a token, and
    // gets one when the cluster starts asking for it.
    let early = client(&url, Some(("app", "apppw")), None);
    early.put(put("/app/early", "1"), dl()).await.unwrap();
    enable_auth(ctl, true);
    early.put(put("/app/early", "2"), dl()).await.unwrap();

    let app = client(&url, Some(("app", "apppw")), None);
    let rev = app.put(put("/app/k", "v"), dl()).await.unwrap();
    let got = app.range(range("/app/k"), dl()).await.unwrap();
    assert_eq!(got.kvs[0].value, b"v");

    // Outside its permission: refused, with etcd's text.
    let err = app.put(put("/other", "v"), dl()).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::PermissionDenied, "{err}");
    assert!(err.message.contains("permission denied"), "{err}");
    let err = app.range(range("/other"), dl()).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::PermissionDenied, "{err}");
    let err = app.watcher(watch_req("/other"), dl()).await.err().unwrap();
    assert_eq!(err.kind, ErrorKind::PermissionDenied, "{err}");

    // A watch and a kept lease carry the token on their streams.
    let mut w = app.watcher(watch_req("/app/w"), dl()).await.unwrap();
    let lease = app
        .lease_grant(LeaseGrantRequest { ttl: 5, id: 0 }, dl())
        .await
        .unwrap();
    let (feed, alive) = etcdc::stream::channel(8);
    let _kept = app.keep_alive(lease.id, feed).unwrap();
    let w_rev = app
        .put(
            PutRequest {
                lease: lease.id,
                ..put("/app/w", "leased")
            },
            dl(),
        )
        .await
        .unwrap()
        .header
        .unwrap()
        .revision;
    next_event_at(&mut w, w_rev).await;
    tokio::time::timeout(Duration::from_secs(5), alive.recv())
        .await
        .expect("a keep-alive answer within 5 s")
        .expect("the keeper runs");

    // Every token dies with `auth disable`: the next call gets a new one by itself, once,
    // writes included (etcd refused the first try before proposing it).
    ctl(&as_root(&["auth", "disable"]));
    ctl(&["auth", "enable"]);
    let again = app.put(put("/app/k", "v2"), dl()).await.unwrap();
    assert_eq!(
        again.header.unwrap().revision,
        rev.header.unwrap().revision + 2,
        "the renewed write was applied once"
    );

    // Wrong password, unknown user, no user: refused, each with its own text.
    let err = client(&url, Some(("app", "wrong")), None)
        .put(put("/app/k", "v"), dl())
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Auth, "{err}");
    assert!(err.message.contains("authentication failed"), "{err}");
    let err = client(&url, Some(("nobody", "x")), None)
        .range(range("/app/k"), dl())
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Auth, "{err}");
    let err = client(&url, None, None)
        .range(range("/app/k"), dl())
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Auth, "{err}");
    assert!(err.message.contains("user name is empty"), "{err}");
    // A watch by a user with the wrong password fails at creation, within its deadline.
    let err = client(&url, Some(("app", "wrong")), None)
        .watcher(watch_req("/app/w"), dl())
        .await
        .err()
        .unwrap();
    assert_eq!(err.kind, ErrorKind::Auth, "{err}");

    // A permission revoked takes effect on the next request.
    ctl(&as_root(&[
        "role",
        "revoke-permission",
        "app",
        "/app/",
        "--prefix",
    ]));
    let err = app.range(range("/app/k"), dl()).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::PermissionDenied, "{err}");
}

/// A member that is behind (it has not applied `auth enable`, or a grant, yet) answers as
/// the cluster would, as etcd does after its read barrier: `Authenticate` never says "not
/// enabled" once `auth enable` was acknowledged (a client told so goes on without a token,
/// and with a certificate is then taken for its common name), and a permission granted
/// elsewhere is not refused, nor one revoked granted to a linearizable read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_behind_answers_as_the_cluster() {
    if !support::etcdctl::available() {
        return;
    }
    let c = support::node::NodeCluster::start(3).await;
    let leader = c.leader_seen_by(1).await;
    let behind = (1..=3).find(|&i| i != leader).unwrap();
    let (leader_url, _stop_leader) = support::node::serve(c.member(leader)).await;
    let (behind_url, _stop_behind) = support::node::serve(c.member(behind)).await;
    // Once it follows the leader, it does not campaign on its own: cut off, it would, and
    // unseat the leader in the middle of a write.
    c.member(behind)
        .raft()
        .wait(Some(Duration::from_secs(10)))
        .metrics(|m| m.current_leader == Some(leader), "following the leader")
        .await
        .unwrap();
    c.member(behind).raft().runtime_config().elect(false);

    // Cut off from the leader's appends (it can still ask the leader for a read index).
    let cut = c.router.remove(behind).unwrap();
    enable_auth(&|args| ctl_at(&leader_url, args), true);
    let mut auth = auth_client::AuthClient::connect(behind_url.clone())
        .await
        .unwrap();
    let req = AuthenticateRequest {
        name: "app".into(),
        password: "apppw".into(),
    };
    match tokio::time::timeout(Duration::from_secs(2), auth.authenticate(req)).await {
        Ok(Ok(_)) => panic!("a token from a member that has not applied the user"),
        Ok(Err(s)) => assert!(!s.message().contains("not enabled"), "{s:?}"),
        Err(_) => {} // waiting to catch up: what etcd does
    }
    c.router.add(cut.clone());
    let app = client(&behind_url, Some(("app", "apppw")), None);
    app.range(range("/app/k"), dl()).await.unwrap();

    // Behind again: a permission granted meanwhile is honoured, not refused.
    c.router.remove(behind).unwrap();
    ctl_at(
        &leader_url,
        &as_root(&[
            "role",
            "grant-permission",
            "app",
            "read",
            "/shared/",
            "--prefix",
        ]),
    );
    let read = tokio::spawn({
        let app = app.clone();
        async move { app.range(range("/shared/k"), dl()).await }
    });
    // (Whether the read arrives before or after the member catches up, it must succeed.)
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.router.add(cut.clone());
    read.await.unwrap().unwrap();

    // Behind again: a permission revoked meanwhile is refused to linearizable reads (a range,
    // a read-only txn), which etcd checks only once the read is confirmed.
    c.router.remove(behind).unwrap();
    ctl_at(
        &leader_url,
        &as_root(&["role", "revoke-permission", "app", "/shared/", "--prefix"]),
    );
    let reads = tokio::spawn({
        let app = app.clone();
        async move {
            let txn = TxnRequest {
                success: vec![RequestOp {
                    request: Some(request_op::Request::RequestRange(range("/shared/k"))),
                }],
                ..Default::default()
            };
            tokio::join!(app.range(range("/shared/k"), dl()), app.txn(txn, dl()))
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.router.add(cut.clone());
    let (range_read, txn_read) = reads.await.unwrap();
    assert_eq!(range_read.unwrap_err().kind, ErrorKind::PermissionDenied);
    assert_eq!(txn_read.unwrap_err().kind, ErrorKind::PermissionDenied);

    // Behind again: a write it allows by a permission revoked meanwhile is refused where it
    // is applied, as etcd's applier does ("revision of auth store is old"); the client then
    // checks again on the member caught up, and is refused.
    c.router.remove(behind).unwrap();
    ctl_at(
        &leader_url,
        &as_root(&["role", "revoke-permission", "app", "/app/", "--prefix"]),
    );
    let write = tokio::spawn({
        let app = app.clone();
        async move { app.put(put("/app/late", "v"), dl()).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.router.add(cut);
    let err = write.await.unwrap().unwrap_err();
    assert_eq!(err.kind, ErrorKind::PermissionDenied, "{err}");
    let root = client(&leader_url, Some(("root", "rootpw")), None);
    let got = root.range(range("/app/late"), dl()).await.unwrap();
    assert!(got.kvs.is_empty(), "a revoked user's write was applied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_from_the_client_certificate() {
    let certs = Certs::new();
    let Some(cluster) = Cluster::start_tls(1, &certs, true) else {
        return;
    };
    // etcdctl presents the certificate of `root`: no password needed.
    enable_auth(&|args| ctl(&cluster, args), false);
    let url = cluster.client_url(0);
    let tls = |name: &str| ClientTls {
        ca: Some(Pem::File(certs.path("ca.pem"))),
        identity: Some(Identity {
            cert: Pem::File(certs.path(&format!("{name}.pem"))),
            key: Pem::File(certs.path(&format!("{name}-key.pem"))),
        }),
        ..Default::default()
    };
    // The certificate's common name is the user: `root` may do anything ...
    let root = client(&url, None, Some(tls("client")));
    root.put(put("/anywhere", "v"), dl()).await.unwrap();
    // ... `app` only what its role allows.
    let app = client(&url, None, Some(tls("app")));
    app.put(put("/app/k", "v"), dl()).await.unwrap();
    let err = app.put(put("/anywhere", "v"), dl()).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::PermissionDenied, "{err}");
    // A user and password go before the certificate's name, as in etcd.
    let both = client(&url, Some(("app", "apppw")), Some(tls("client")));
    let err = both.put(put("/anywhere", "v"), dl()).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::PermissionDenied, "{err}");
}

/// etcdctl's `user`, `role` and `auth` commands against etcd and against the node: the same
/// outputs and the same errors, command for command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_user_role_auth_differential() {
    if !support::etcdctl::available() {
        return;
    }
    let Some(cluster) = Cluster::start(1) else {
        return;
    };
    let (_c, node_url, _stop) = support::node::serve_single().await;
    let script: &[(&str, Option<&str>)] = &[
        ("user add root:rootpw", None),
        ("user add root:again", None),
        ("role add root", None),
        ("user grant-role root root", None),
        ("user add alice:pw", None),
        ("user add bob --no-password", None),
        ("user list", None),
        ("role add r1", None),
        ("role add r1", None),
        ("role add r2", None),
        ("role list", None),
        ("role grant-permission r1 read /a", None),
        ("role grant-permission r1 readwrite /b/ --prefix", None),
        ("role grant-permission r1 write /c /d", None),
        ("role grant-permission r1 readwrite /a", None),
        ("role grant-permission nope read /a", None),
        ("role get r1", None),
        ("role get nope", None),
        ("user grant-role alice r1", None),
        ("user grant-role alice r2", None),
        ("user grant-role alice nope", None),
        ("user grant-role nobody r1", None),
        ("user get alice", None),
        ("user get nobody", None),
        ("role revoke-permission r1 /a", None),
        ("role revoke-permission r1 /zz", None),
        ("role get r1", None),
        ("user revoke-role alice r2", None),
        ("user revoke-role alice r2", None),
        ("user passwd alice --interactive=false", Some("newpw\n")),
        ("auth enable", None),
        ("user list", None),
        ("--user alice:pw get /b/x", None),
        ("--user alice:newpw put /b/x 1", None),
        ("--user alice:newpw get /b/x --print-value-only", None),
        ("--user alice:newpw put /a 1", None),
        ("--user alice:newpw user list", None),
        ("--user alice:newpw role get r1", None),
        ("--user alice:newpw role get root", None),
        ("--user root:rootpw user list", None),
        ("--user root:rootpw user delete root", None),
        ("--user root:rootpw user revoke-role root root", None),
        ("--user root:rootpw role delete root", None),
        ("--user root:rootpw auth disable", None),
        ("user delete alice", None),
        ("user delete alice", None),
        ("role delete r1", None),
        ("role delete r1", None),
        ("user get bob", None),
        ("user delete root", None),
        ("auth enable", None),
    ];
    // etcdctl's own retry warnings (JSON lines on stderr) are noise, not output.
    let run = |url: &str, cmd: &str, stdin: Option<&str>| {
        let args: Vec<&str> = cmd.split(' ').collect();
        let (ok, out) = support::etcdctl::etcdctl(url, &args, stdin);
        let out: Vec<&str> = out.lines().filter(|l| !l.starts_with('{')).collect();
        (ok, out.join("\n"))
    };
    for (cmd, stdin) in script {
        let etcd = run(&cluster.endpoints(), cmd, *stdin);
        let node = run(&node_url, cmd, *stdin);
        assert_eq!(
            node, etcd,
            "etcdctl {cmd}: the node answered differently from etcd"
        );
    }
}

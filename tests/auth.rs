//! The remote client against real etcd 3.4 with authentication on: a user and password
//! exchanged for a token, the token renewed when the cluster stops taking it, every refusal
//! a clear error of its own kind, and the user named by a client certificate.

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

/// Runs etcdctl against the cluster (as `root` once auth is on); it must succeed.
fn ctl(cluster: &Cluster, args: &[&str]) {
    let out = cluster.etcdctl(args);
    assert!(
        out.status.success(),
        "etcdctl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

const ROOT: &[&str] = &["--user", "root:rootpw"];

fn as_root<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut v: Vec<&str> = ROOT.to_vec();
    v.extend_from_slice(args);
    v
}

/// Users `root` and `app` (read and write under `/app/` only), then `auth enable`.
fn enable_auth(cluster: &Cluster, root_password: bool) {
    if root_password {
        ctl(cluster, &["user", "add", "root:rootpw"]);
    } else {
        ctl(cluster, &["user", "add", "root", "--no-password"]);
    }
    ctl(cluster, &["user", "add", "app:apppw"]);
    ctl(cluster, &["role", "add", "app"]);
    ctl(
        cluster,
        &[
            "role",
            "grant-permission",
            "app",
            "readwrite",
            "/app/",
            "--prefix",
        ],
    );
    ctl(cluster, &["user", "grant-role", "app", "app"]);
    ctl(cluster, &["auth", "enable"]);
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
async fn user_and_password() {
    let Some(cluster) = Cluster::start(1) else {
        return;
    };
    let url = cluster.endpoints();
    // A client with a user made while auth is still off goes on without a token, and
    // gets one when the cluster starts asking for it.
    let early = client(&url, Some(("app", "apppw")), None);
    early.put(put("/app/early", "1"), dl()).await.unwrap();
    enable_auth(&cluster, true);
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
    ctl(&cluster, &as_root(&["auth", "disable"]));
    ctl(&cluster, &["auth", "enable"]);
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
    ctl(
        &cluster,
        &as_root(&["role", "revoke-permission", "app", "/app/", "--prefix"]),
    );
    let err = app.range(range("/app/k"), dl()).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::PermissionDenied, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_from_the_client_certificate() {
    let certs = Certs::new();
    let Some(cluster) = Cluster::start_tls(1, &certs, true) else {
        return;
    };
    // etcdctl presents the certificate of `root`: no password needed.
    enable_auth(&cluster, false);
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

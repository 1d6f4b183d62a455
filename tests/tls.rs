//! The remote client over TLS against real etcd 3.4 started with TLS on its client port
//! (certificates made by the tests): server verification against a CA, a server name
//! override, mutual TLS, and the clear errors of every way it can go wrong.

mod support;

use std::sync::Arc;
use std::time::Duration;

use etcdc::pb::etcdserverpb::*;
use etcdc::remote::{parse_endpoints, ClientTls, Identity, Pem, Remote, RemoteConfig};
use etcdc::{ErrorKind, Etcd};
use support::etcd::Cluster;
use support::tls::Certs;
use support::{dl, next_event_at, put, put_rev};

fn client(endpoints: &str, tls: Option<ClientTls>) -> etcdc::Result<Arc<dyn Etcd>> {
    Ok(Arc::new(Remote::new(RemoteConfig {
        endpoints: parse_endpoints(endpoints)?,
        connect_timeout: Duration::from_secs(1),
        tls,
        ..Default::default()
    })?))
}

fn trusting(certs: &Certs, ca: &str) -> ClientTls {
    ClientTls {
        ca: Some(Pem::Text(certs.pem(ca))),
        ..Default::default()
    }
}

/// Trusting our CA, with the client certificate and key of files `name`.pem, `name`-key.pem.
fn with_identity(certs: &Certs, name: &str) -> ClientTls {
    ClientTls {
        identity: Some(Identity {
            cert: Pem::File(certs.path(&format!("{name}.pem"))),
            key: Pem::File(certs.path(&format!("{name}-key.pem"))),
        }),
        ..trusting(certs, "ca.pem")
    }
}

/// A call that could not reach a member: it fails within its deadline (the client tries
/// every member until then), saying why the last attempt failed.
fn unreachable(e: &etcdc::Error) -> bool {
    matches!(e.kind, ErrorKind::Unavailable | ErrorKind::Timeout)
}

/// A short call that must fail, and its error.
async fn fails(e: &dyn Etcd) -> etcdc::Error {
    e.range(
        RangeRequest {
            key: b"/k".to_vec(),
            ..Default::default()
        },
        etcdc::api::deadline_in(Duration::from_secs(2)),
    )
    .await
    .expect_err("the call must fail")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_verified_against_a_ca() {
    let certs = Certs::new();
    let Some(cluster) = Cluster::start_tls(1, &certs, false) else {
        return;
    };
    let url = cluster.client_url(0);
    assert!(url.starts_with("https://"));

    // Unary calls and a watch stream work through TLS.
    let e = client(&url, Some(trusting(&certs, "ca.pem"))).unwrap();
    let mut w = e
        .watcher(
            WatchCreateRequest {
                key: b"/tls".to_vec(),
                ..Default::default()
            },
            dl(),
        )
        .await
        .unwrap();
    let rev = put_rev(&*e, "/tls", "v").await;
    let got = e
        .range(
            RangeRequest {
                key: b"/tls".to_vec(),
                ..Default::default()
            },
            dl(),
        )
        .await
        .unwrap();
    assert_eq!(got.kvs[0].value, b"v");
    next_event_at(&mut w, rev).await;

    // The name in the server's certificate must match: 127.0.0.1 and localhost do, an
    // override to a name the certificate lacks does not.
    let named = ClientTls {
        server_name: Some("localhost".into()),
        ..trusting(&certs, "ca.pem")
    };
    client(&url, Some(named))
        .unwrap()
        .put(put("/n", "1"), dl())
        .await
        .unwrap();
    let wrong = ClientTls {
        server_name: Some("etcd.example.com".into()),
        ..trusting(&certs, "ca.pem")
    };
    let err = fails(&*client(&url, Some(wrong)).unwrap()).await;
    assert!(unreachable(&err), "{err}");
    assert!(
        err.message
            .contains("certificate not valid for name \"etcd.example.com\""),
        "{err}"
    );

    // A CA that did not sign the server's certificate, or the system's roots: refused.
    let err = fails(&*client(&url, Some(trusting(&certs, "other-ca.pem"))).unwrap()).await;
    assert!(
        unreachable(&err) && err.message.contains("UnknownIssuer"),
        "{err}"
    );
    assert!(
        err.message.contains("not signed by a CA the client trusts"),
        "{err}"
    );
    let err = fails(&*client(&url, None).unwrap()).await;
    assert!(
        unreachable(&err) && err.message.contains("UnknownIssuer"),
        "{err}"
    );

    // Plaintext to a TLS port fails, clearly and within the deadline.
    let plain = url.replace("https://", "http://");
    let err = fails(&*client(&plain, None).unwrap()).await;
    assert!(unreachable(&err), "{err}");
    assert!(
        err.message
            .contains("does it require TLS? then use https://"),
        "{err}"
    );
    // TLS to a plaintext port, the same.
    let plain_cluster = Cluster::start(1).unwrap();
    let tls_url = plain_cluster.client_url(0).replace("http://", "https://");
    let err = fails(&*client(&tls_url, Some(trusting(&certs, "ca.pem"))).unwrap()).await;
    assert!(unreachable(&err), "{err}");
    assert!(
        err.message.contains("not speak TLS (then use http://)"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls() {
    let certs = Certs::new();
    let Some(cluster) = Cluster::start_tls(1, &certs, true) else {
        return;
    };
    let url = cluster.client_url(0);
    let e = client(&url, Some(with_identity(&certs, "client"))).unwrap();
    e.put(put("/mtls", "v"), dl()).await.unwrap();
    let lease = e
        .lease_grant(LeaseGrantRequest { ttl: 5, id: 0 }, dl())
        .await
        .unwrap();
    assert!(lease.id > 0);

    // Without a client certificate the server refuses the handshake.
    let err = fails(&*client(&url, Some(trusting(&certs, "ca.pem"))).unwrap()).await;
    assert!(unreachable(&err), "{err}");
    assert!(err.message.contains("client certificate"), "{err}");

    // Certificates are files read for every new connection: a client whose certificate
    // the server refuses works, without being made again, once the files are replaced.
    let rotated = tempfile::tempdir().unwrap();
    let copy =
        |from: &str, to: &str| std::fs::copy(certs.path(from), rotated.path().join(to)).unwrap();
    copy("stranger.pem", "c.pem");
    copy("stranger-key.pem", "c-key.pem");
    let files = ClientTls {
        identity: Some(Identity {
            cert: Pem::File(rotated.path().join("c.pem")),
            key: Pem::File(rotated.path().join("c-key.pem")),
        }),
        ..trusting(&certs, "ca.pem")
    };
    let e = client(&url, Some(files)).unwrap();
    let err = fails(&*e).await;
    assert!(unreachable(&err), "{err}");
    copy("client.pem", "c.pem");
    copy("client-key.pem", "c-key.pem");
    // A connection the channel made again before the copy (with the old files) may still
    // be refused once; the next one reads the new files.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while let Err(err) = e.put(put("/rotated", "v"), dl()).await {
        assert!(unreachable(&err), "{err}");
        assert!(
            std::time::Instant::now() < until,
            "never took the new files: {err}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[test]
fn bad_settings_are_refused_at_creation() {
    let certs = Certs::new();
    let endpoints = "https://127.0.0.1:1";
    let not_pem = ClientTls {
        ca: Some(Pem::Text(b"not a certificate".to_vec())),
        ..Default::default()
    };
    let err = client(endpoints, Some(not_pem)).err().expect("refused");
    assert_eq!(err.kind, ErrorKind::InvalidArgument);
    assert!(err.message.contains("the CA is not PEM"), "{err}");
    let swapped = ClientTls {
        identity: Some(Identity {
            cert: Pem::Text(certs.pem("client-key.pem")),
            key: Pem::Text(certs.pem("client.pem")),
        }),
        ..trusting(&certs, "ca.pem")
    };
    let err = client(endpoints, Some(swapped)).err().expect("refused");
    assert!(
        err.message.contains("the client certificate is not PEM"),
        "{err}"
    );
    let err = client("http://127.0.0.1:1", Some(trusting(&certs, "ca.pem")))
        .err()
        .expect("refused");
    assert!(err.message.contains("use https://"), "{err}");
    let err = parse_endpoints("https://127.0.0.1:1,http://127.0.0.1:2").unwrap_err();
    assert!(err.message.contains("mix http and https"), "{err}");
}

/// The C ABI's TLS options (`etcdc_client_options_set_tls_files`, `_pem`, `_server_name`)
/// against the same servers: files read at connect, PEM copied, clear statuses.
#[test]
fn c_abi_options() {
    use etcdc::ffi::client::*;
    use etcdc::ffi::put::etcdc_put;
    use etcdc::ffi::status::etcdc_status;
    use std::ffi::CString;
    use std::ptr::{null, null_mut};

    let certs = Certs::new();
    let Some(cluster) = Cluster::start_tls(1, &certs, true) else {
        return;
    };
    let path = |f: &str| CString::new(certs.path(f).to_str().unwrap()).unwrap();
    let url = CString::new(cluster.client_url(0)).unwrap();
    let put_with = |opts: *const etcdc_client_options| {
        let mut c = null_mut();
        let status = etcdc_client_connect(url.as_ptr(), opts, &mut c);
        if status != etcdc_status::ETCDC_OK {
            return status;
        }
        let status = etcdc_put(c, b"/c".as_ptr(), 2, b"v".as_ptr(), 1, null(), null_mut());
        etcdc_client_free(c);
        status
    };
    let opts = etcdc_client_options_new();
    etcdc_client_options_set_timeout_ms(opts, 2000);

    // Files: CA, certificate and key.
    let (ca, cert, key) = (path("ca.pem"), path("client.pem"), path("client-key.pem"));
    assert_eq!(
        etcdc_client_options_set_tls_files(opts, ca.as_ptr(), cert.as_ptr(), key.as_ptr()),
        etcdc_status::ETCDC_OK
    );
    assert_eq!(put_with(opts), etcdc_status::ETCDC_OK);
    // A certificate without its key is refused when set.
    assert_eq!(
        etcdc_client_options_set_tls_files(opts, ca.as_ptr(), cert.as_ptr(), null()),
        etcdc_status::ETCDC_ERR_INVALID_ARGUMENT
    );
    // A missing file is the connect's error, naming the file.
    let missing = CString::new("/nonexistent/ca.pem").unwrap();
    etcdc_client_options_set_tls_files(opts, missing.as_ptr(), cert.as_ptr(), key.as_ptr());
    assert_eq!(put_with(opts), etcdc_status::ETCDC_ERR_INVALID_ARGUMENT);
    let message = unsafe { std::ffi::CStr::from_ptr(etcdc::ffi::status::etcdc_last_error()) };
    assert!(
        message.to_str().unwrap().contains("/nonexistent/ca.pem"),
        "{message:?}"
    );

    // PEM in memory, and a server name the certificate carries.
    let (ca, cert, key) = (
        certs.pem("ca.pem"),
        certs.pem("client.pem"),
        certs.pem("client-key.pem"),
    );
    assert_eq!(
        etcdc_client_options_set_tls_pem(
            opts,
            ca.as_ptr(),
            ca.len(),
            cert.as_ptr(),
            cert.len(),
            key.as_ptr(),
            key.len()
        ),
        etcdc_status::ETCDC_OK
    );
    let name = CString::new("localhost").unwrap();
    etcdc_client_options_set_tls_server_name(opts, name.as_ptr());
    assert_eq!(put_with(opts), etcdc_status::ETCDC_OK);
    // Without the client certificate the server refuses: unreachable within the deadline.
    etcdc_client_options_set_tls_pem(opts, ca.as_ptr(), ca.len(), null(), 0, null(), 0);
    assert!(matches!(
        put_with(opts),
        etcdc_status::ETCDC_ERR_UNAVAILABLE | etcdc_status::ETCDC_ERR_TIMEOUT
    ));
    etcdc_client_options_free(opts);
}

/// A member serving TLS reads its certificate again when the files change: new connections
/// get the new one, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_picks_up_a_rotated_server_certificate() {
    use etcdc::node::launch::{self, NodeOptions, ServerTls};
    let certs = Certs::new();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("s.pem"), dir.path().join("s-key.pem"));
    let install = |from: &str| {
        std::fs::copy(certs.path(&format!("{from}.pem")), &cert).unwrap();
        std::fs::copy(certs.path(&format!("{from}-key.pem")), &key).unwrap();
    };
    install("server");
    let url = format!("https://127.0.0.1:{}", support::etcd::free_port());
    let node = launch::start(NodeOptions {
        data_dir: Some(dir.path().join("data")),
        listen_client_urls: vec![url.clone()],
        advertise_client_urls: vec![url.clone()],
        listen_peer_urls: Vec::new(),
        client_tls: ServerTls {
            cert_file: Some(cert.clone()),
            key_file: Some(key.clone()),
            ..Default::default()
        },
        ..Default::default()
    })
    .await
    .unwrap();
    let trusting_ca = || client(&url, Some(trusting(&certs, "ca.pem"))).unwrap();
    trusting_ca().put(put("/r", "1"), dl()).await.unwrap();
    // A certificate from a CA the clients do not trust: new connections are refused.
    install("stranger");
    let err = fails(&*trusting_ca()).await;
    assert!(err.message.contains("UnknownIssuer"), "{err}");
    install("server");
    trusting_ca().put(put("/r", "2"), dl()).await.unwrap();
    node.stop().await;
}

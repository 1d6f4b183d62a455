//! A full disk under an `etcdc-node` process: the write-ahead log cannot grow (the process's
//! file-size limit stands in for the disk, set and raised from outside with prlimit), writes
//! fail with a clear "no space" error instead of hanging or killing the member, reads go on,
//! the member takes writes again by itself once there is room, and after a SIGKILL every
//! acknowledged write is there.

mod support;

use std::os::unix::process::CommandExt;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use etcdc::pb::etcdserverpb::*;
use etcdc::{ErrorKind, Etcd};
use support::etcd::free_port;
use support::{count, dl};

/// The process, stopped by its pid when the test ends (also when it fails).
struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(dir: &std::path::Path, client: &str, peer: &str, limit: Option<u64>) -> Node {
    let urls = (client.to_string(), peer.to_string());
    let mut cmd = support::process::NodeProcess::command(dir, None, &urls);
    cmd.args(["--name", "n", "--initial-cluster", &format!("n={peer}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(bytes) = limit {
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                // A write past the limit then fails with EFBIG instead of killing the process.
                libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                let lim = libc::rlimit {
                    rlim_cur: bytes,
                    rlim_max: libc::RLIM_INFINITY,
                };
                if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    Node(cmd.spawn().expect("etcdc-node starts"))
}

fn client(url: &str) -> Box<dyn Etcd> {
    Box::new(
        etcdc::remote::Remote::new(etcdc::remote::RemoteConfig {
            endpoints: vec![url.to_string()],
            connect_timeout: Duration::from_millis(300),
            ..Default::default()
        })
        .unwrap(),
    )
}

fn put(i: usize) -> PutRequest {
    PutRequest {
        key: format!("/k/{i:05}").into_bytes(),
        value: vec![b'v'; 1000],
        ..Default::default()
    }
}

async fn until_up(e: &dyn Etcd) {
    let until = Instant::now() + Duration::from_secs(15);
    while e.put(put(99_999), dl()).await.is_err() {
        assert!(Instant::now() < until, "the member never took a write");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_writes_clearly_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("n");
    let url = format!("http://127.0.0.1:{}", free_port());
    let peer = format!("http://127.0.0.1:{}", free_port());
    let node = start(&data, &url, &peer, Some(1 << 20));
    let e = client(&url);
    until_up(&*e).await;

    // Write until the log has no room: every write acknowledged before is kept.
    let mut acked = 0;
    let refused = loop {
        // A short deadline: the write caught by the full log waits for room.
        let deadline = etcdc::api::deadline_in(Duration::from_secs(2));
        match e.put(put(acked), deadline).await {
            Ok(_) => acked += 1,
            Err(err) => break err,
        }
        assert!(acked < 5000, "a 1 MiB log never filled");
    };
    assert!(acked > 100, "only {acked} writes of 1 kB fit: {refused:?}");
    // The write in flight when the log filled waits (its outcome is unknown, as for any
    // timeout); the next ones are refused at once, saying why.
    assert!(
        matches!(
            refused.kind,
            ErrorKind::NoSpace | ErrorKind::Timeout | ErrorKind::Unavailable
        ),
        "{refused:?}"
    );
    let t = Instant::now();
    let again = e.put(put(acked + 1), dl()).await.unwrap_err();
    assert_eq!(again.kind, ErrorKind::NoSpace, "{again:?}");
    assert!(again.message.contains("no space"), "{again:?}");
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "refused after {:?}",
        t.elapsed()
    );
    // Reads go on.
    assert!(count(&*e, "/k/", true).await >= acked as i64);

    // Room again: the member takes writes by itself.
    let lim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: prlimit on our own child with a valid limit; no pointers kept.
    let rc = unsafe {
        libc::prlimit(
            node.0.id() as libc::pid_t,
            libc::RLIMIT_FSIZE,
            &lim,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        match e.put(put(acked), dl()).await {
            Ok(_) => break,
            Err(err) => assert!(
                Instant::now() < until,
                "no write after room came back: {err:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    acked += 1;

    // SIGKILL and restart: every acknowledged write is there.
    drop(node);
    let _node = start(&data, &url, &peer, None);
    let e = client(&url);
    until_up(&*e).await;
    for i in 0..acked {
        let r = e
            .range(
                RangeRequest {
                    key: put(i).key,
                    ..Default::default()
                },
                dl(),
            )
            .await
            .unwrap();
        assert_eq!(r.count, 1, "acknowledged write {i} lost");
    }
}

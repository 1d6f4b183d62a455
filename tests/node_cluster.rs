//! Three `etcdc-node` processes forming one cluster from the same `--initial-cluster`, used
//! through the remote client: the leader SIGKILLed under writes (a new leader, every
//! acknowledged write on the survivors, the killed member back and caught up after a
//! restart), then the whole cluster SIGKILLed and restarted with all data back.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use etcdc::pb::etcdserverpb::*;
use etcdc::Etcd;
use support::etcd::free_port;
use support::{dl, remote};

struct Proc {
    name: String,
    client: String,
    peer: String,
    child: Option<Child>,
}

/// The processes, each stopped by its own pid when the test ends (also when it fails).
struct Cluster {
    dir: tempfile::TempDir,
    procs: Vec<Proc>,
    initial: String,
}

impl Cluster {
    fn new(n: usize) -> Cluster {
        let procs: Vec<Proc> = (0..n)
            .map(|i| Proc {
                name: format!("n{i}"),
                client: format!("http://127.0.0.1:{}", free_port()),
                peer: format!("http://127.0.0.1:{}", free_port()),
                child: None,
            })
            .collect();
        let initial = procs
            .iter()
            .map(|p| format!("{}={}", p.name, p.peer))
            .collect::<Vec<_>>()
            .join(",");
        let mut c = Cluster {
            dir: tempfile::tempdir().expect("temp dir"),
            procs,
            initial,
        };
        for i in 0..n {
            c.start(i);
        }
        c
    }

    fn start(&mut self, i: usize) {
        let p = &self.procs[i];
        let child = Command::new(env!("CARGO_BIN_EXE_etcdc-node"))
            .args(["--name", &p.name])
            .arg("--data-dir")
            .arg(self.dir.path().join(&p.name))
            .args(["--listen-client-urls", &p.client])
            .args(["--advertise-client-urls", &p.client])
            .args(["--listen-peer-urls", &p.peer])
            .args(["--initial-advertise-peer-urls", &p.peer])
            .args(["--initial-cluster", &self.initial])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcdc-node starts");
        self.procs[i].child = Some(child);
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.procs[i].child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = c.wait();
        }
    }

    fn endpoints(&self) -> String {
        self.procs
            .iter()
            .map(|p| p.client.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.procs.len() {
            self.kill(i);
        }
    }
}

/// Waits (at most 15 s) until member `i` answers a linearizable read.
async fn until_serving(c: &Cluster, i: usize) -> Box<dyn Etcd> {
    let e = Box::new(
        etcdc::remote::Remote::new(etcdc::remote::RemoteConfig {
            endpoints: vec![c.procs[i].client.clone()],
            connect_timeout: Duration::from_millis(300),
        })
        .unwrap(),
    );
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        let r = e
            .range(
                RangeRequest {
                    key: b"/ping".to_vec(),
                    ..Default::default()
                },
                etcdc::api::deadline_in(Duration::from_secs(1)),
            )
            .await;
        if r.is_ok() {
            return e;
        }
        assert!(Instant::now() < until, "member {i} never served: {r:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn put_until_acked(e: &dyn Etcd, key: String) {
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        let req = PutRequest {
            key: key.clone().into_bytes(),
            value: b"v".to_vec(),
            ..Default::default()
        };
        match e.put(req, dl()).await {
            Ok(_) => return,
            Err(err) => assert!(Instant::now() < until, "{key} never acknowledged: {err:?}"),
        }
    }
}

async fn count(e: &dyn Etcd, serializable: bool) -> i64 {
    e.range(
        RangeRequest {
            key: b"/k/".to_vec(),
            range_end: etcdc::kv::prefix_end(b"/k/"),
            count_only: true,
            serializable,
            ..Default::default()
        },
        dl(),
    )
    .await
    .map(|r| r.count)
    .unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_of_processes_survives_sigkill_of_its_leader_and_of_everyone() {
    let mut c = Cluster::new(3);
    for i in 0..3 {
        until_serving(&c, i).await;
    }
    let client = remote(&c.endpoints());
    for i in 0..100 {
        put_until_acked(&*client, format!("/k/{i:04}")).await;
    }
    // Which process leads?
    let status = client.status(None, dl()).await.unwrap();
    let leader_id = status.leader;
    let mut leader = None;
    for i in 0..3 {
        let s = until_serving(&c, i).await.status(None, dl()).await.unwrap();
        if s.header.unwrap().member_id == leader_id {
            leader = Some(i);
        }
    }
    let leader = leader.expect("the leader is one of the processes");
    let killed_at = Instant::now();
    c.kill(leader);
    let mut first_write = None;
    for i in 100..200 {
        put_until_acked(&*client, format!("/k/{i:04}")).await;
        first_write.get_or_insert_with(|| killed_at.elapsed());
    }
    eprintln!(
        "first write acknowledged {:?} after the leader's SIGKILL",
        first_write.unwrap()
    );
    for i in (0..3).filter(|i| *i != leader) {
        let e = until_serving(&c, i).await;
        assert_eq!(
            count(&*e, false).await,
            200,
            "member {i} lacks acknowledged writes"
        );
    }
    // The killed member comes back and catches up.
    c.start(leader);
    let back = until_serving(&c, leader).await;
    let until = Instant::now() + Duration::from_secs(15);
    while count(&*back, true).await != 200 {
        assert!(
            Instant::now() < until,
            "the restarted member never caught up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Everyone SIGKILLed, everyone restarted: all data back.
    for i in 0..3 {
        c.kill(i);
    }
    for i in 0..3 {
        c.start(i);
    }
    for i in 0..3 {
        let e = until_serving(&c, i).await;
        assert_eq!(
            count(&*e, false).await,
            200,
            "member {i} after the whole cluster restarted"
        );
    }
}

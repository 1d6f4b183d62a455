//! Three `etcdc-node` processes forming one cluster from the same `--initial-cluster`, used
//! through the remote client: the leader SIGKILLed under writes (a new leader, every
//! acknowledged write on the survivors, the killed member back and caught up after a
//! restart), then the whole cluster SIGKILLed and restarted with all data back; and members
//! added and removed with `etcdctl member add / remove`.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use etcdc::pb::etcdserverpb::*;
use etcdc::remote::{ClientTls, Identity, Pem};
use etcdc::Etcd;
use support::etcd::free_port;
use support::tls::Certs;
use support::{count, dl, remote};

struct Proc {
    name: String,
    client: String,
    peer: String,
    /// Joins a running cluster (`--initial-cluster-state existing`).
    join: bool,
    /// More flags for this member alone.
    flags: Vec<String>,
    child: Option<Child>,
}

impl Proc {
    /// A member at free ports, its URLs of `scheme` (http or https).
    fn new(name: String, scheme: &str) -> Proc {
        Proc {
            name,
            client: format!("{scheme}://127.0.0.1:{}", free_port()),
            peer: format!("{scheme}://127.0.0.1:{}", free_port()),
            join: false,
            flags: Vec::new(),
            child: None,
        }
    }
}

/// The processes, each stopped by its own pid when the test ends (also when it fails).
struct Cluster {
    dir: tempfile::TempDir,
    procs: Vec<Proc>,
    initial: String,
    /// More flags for every process.
    extra: Vec<String>,
    /// How clients reach the members: TLS settings for https URLs.
    client_tls: Option<ClientTls>,
}

impl Cluster {
    fn new(n: usize) -> Cluster {
        Cluster::with_flags(n, &[])
    }

    fn with_flags(n: usize, extra: &[&str]) -> Cluster {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        Cluster::start_all(n, "http", extra, None)
    }

    /// `n` members whose client and peer URLs require TLS and a certificate signed by the
    /// CA of `certs`; clients present the certificate of `root`.
    fn with_tls(n: usize, certs: &Certs) -> Cluster {
        let p = |f: &str| certs.path(f).display().to_string();
        let mut flags = Vec::new();
        for prefix in ["", "peer-"] {
            flags.extend([
                format!("--{prefix}cert-file"),
                p("server.pem"),
                format!("--{prefix}key-file"),
                p("server-key.pem"),
                format!("--{prefix}trusted-ca-file"),
                p("ca.pem"),
                format!("--{prefix}client-cert-auth"),
            ]);
        }
        let tls = ClientTls {
            ca: Some(Pem::File(certs.path("ca.pem"))),
            identity: Some(Identity {
                cert: Pem::File(certs.path("client.pem")),
                key: Pem::File(certs.path("client-key.pem")),
            }),
            ..Default::default()
        };
        Cluster::start_all(n, "https", flags, Some(tls))
    }

    fn start_all(
        n: usize,
        scheme: &str,
        extra: Vec<String>,
        client_tls: Option<ClientTls>,
    ) -> Cluster {
        let mut c = Cluster::unstarted(n, scheme, extra, client_tls);
        for i in 0..n {
            c.start(i);
        }
        c
    }

    fn unstarted(
        n: usize,
        scheme: &str,
        extra: Vec<String>,
        client_tls: Option<ClientTls>,
    ) -> Cluster {
        let procs: Vec<Proc> = (0..n).map(|i| Proc::new(format!("n{i}"), scheme)).collect();
        let mut c = Cluster {
            dir: tempfile::tempdir().expect("temp dir"),
            procs,
            initial: String::new(),
            extra,
            client_tls,
        };
        c.set_peer_urls(|_, url| url.to_string());
        c
    }

    /// Each member's peer URL made by `url` from its index and current URL, and the
    /// initial cluster that names them.
    fn set_peer_urls(&mut self, url: impl Fn(usize, &str) -> String) {
        for (i, p) in self.procs.iter_mut().enumerate() {
            p.peer = url(i, &p.peer);
        }
        self.initial = self
            .procs
            .iter()
            .map(|p| format!("{}={}", p.name, p.peer))
            .collect::<Vec<_>>()
            .join(",");
    }

    fn start(&mut self, i: usize) {
        let child = self
            .command(i)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcdc-node starts");
        self.procs[i].child = Some(child);
    }

    /// Member `i`'s command line.
    fn command(&self, i: usize) -> Command {
        let p = &self.procs[i];
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_etcdc-node"));
        cmd.args(["--name", &p.name])
            .arg("--data-dir")
            .arg(self.dir.path().join(&p.name))
            .args(["--listen-client-urls", &p.client])
            .args(["--advertise-client-urls", &p.client])
            .args(["--listen-peer-urls", &p.peer])
            .args(["--initial-advertise-peer-urls", &p.peer])
            .args(["--initial-cluster", &self.initial])
            .args([
                "--initial-cluster-state",
                if p.join { "existing" } else { "new" },
            ])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(&self.extra)
            .args(&p.flags)
            .stdin(Stdio::null());
        cmd
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

    fn signal(&self, i: usize, sig: nix::sys::signal::Signal) {
        if let Some(c) = &self.procs[i].child {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), sig);
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
            tls: c.client_tls.clone(),
            ..Default::default()
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
            count(&*e, "/k/", false).await,
            200,
            "member {i} lacks acknowledged writes"
        );
    }
    // The killed member comes back and catches up.
    c.start(leader);
    let back = until_serving(&c, leader).await;
    let until = Instant::now() + Duration::from_secs(15);
    while count(&*back, "/k/", true).await != 200 {
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
            count(&*e, "/k/", false).await,
            200,
            "member {i} after the whole cluster restarted"
        );
    }
}

/// A line of `etcdctl member list`.
#[derive(Debug)]
struct Listed {
    name: String,
    peer_urls: String,
    client_urls: String,
    learner: bool,
}

/// `etcdctl member list` against `url`.
fn member_list(url: &str) -> Vec<Listed> {
    let (ok, out) = support::etcdctl::etcdctl(url, &["member", "list"], None);
    assert!(ok, "member list: {out}");
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            // id, started, name, peer URLs, client URLs, is learner
            let fields: Vec<&str> = l.split(", ").collect();
            assert_eq!(fields.len(), 6, "{l}");
            Listed {
                name: fields[2].to_string(),
                peer_urls: fields[3].to_string(),
                client_urls: fields[4].to_string(),
                learner: fields[5] == "true",
            }
        })
        .collect()
}

/// Waits until every member's own view lists every member started (with its name), as
/// etcd's reconfiguration checks count only started members — a member serves before the
/// others have applied its publish.
async fn until_all_started(c: &Cluster) {
    let until = Instant::now() + Duration::from_secs(15);
    for p in &c.procs {
        while member_list(&p.client).iter().any(|m| m.name.is_empty()) {
            assert!(Instant::now() < until, "a member never published itself");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_are_added_and_removed_with_etcdctl() {
    if !support::etcdctl::available() {
        return;
    }
    let mut c = Cluster::new(1);
    let first = until_serving(&c, 0).await;
    for i in 0..50 {
        put_until_acked(&*first, format!("/k/{i:04}")).await;
    }
    // etcdctl builds the initial cluster it prints from the members' names: as with etcd, a
    // member lists its name once it has published it.
    let until = Instant::now() + Duration::from_secs(15);
    while member_list(&c.procs[0].client)[0].name != "n0" {
        assert!(Instant::now() < until, "n0 never published its name");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // etcdctl member add, then the new member started with what it printed.
    let mut p = Proc::new("n1".into(), "http");
    p.join = true;
    let peer = p.peer.clone();
    c.procs.push(p);
    let (ok, out) = support::etcdctl::etcdctl(
        &c.procs[0].client,
        &["member", "add", "n1", "--peer-urls", &peer],
        None,
    );
    assert!(ok, "member add: {out}");
    assert!(
        out.contains("ETCD_INITIAL_CLUSTER_STATE=\"existing\""),
        "{out}"
    );
    let initial = out
        .lines()
        .find_map(|l| l.strip_prefix("ETCD_INITIAL_CLUSTER="))
        .expect("member add prints ETCD_INITIAL_CLUSTER")
        .trim_matches('"')
        .to_string();
    assert!(initial.contains(&format!("n1={peer}")), "{initial}");
    c.initial = initial;
    c.start(1);
    let second = until_serving(&c, 1).await;
    // It caught up with what was written before it joined, and takes writes.
    let until = Instant::now() + Duration::from_secs(15);
    while count(&*second, "/k/", true).await != 50 {
        assert!(Instant::now() < until, "the new member never caught up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    put_until_acked(&*second, "/k/from-n1".into()).await;
    assert_eq!(count(&*first, "/k/", false).await, 51);
    // Both hold the same data: etcdctl endpoint hashkv agrees. (etcdctl 3.4 sends a URL
    // endpoint as the HTTP/2 :authority, which h2 refuses: host:port here.)
    let rev = first
        .status(None, dl())
        .await
        .unwrap()
        .header
        .unwrap()
        .revision;
    let bare = |url: &str| url.trim_start_matches("http://").to_string();
    let both = format!("{},{}", bare(&c.procs[0].client), bare(&c.procs[1].client));
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        let (ok, out) = support::etcdctl::etcdctl(
            &both,
            &["endpoint", "hashkv", &format!("--rev={rev}")],
            None,
        );
        let hashes: Vec<&str> = out.lines().filter_map(|l| l.split(", ").nth(1)).collect();
        if ok && hashes.len() == 2 {
            assert_eq!(hashes[0], hashes[1], "{out}");
            break;
        }
        assert!(Instant::now() < until, "hashkv: {out}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Added as a voter: promoted once it runs.
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        let members = member_list(&c.procs[0].client);
        assert_eq!(members.len(), 2, "{members:?}");
        // Each with the name and client URL it was started with, as etcd lists them.
        let named = c.procs.iter().all(|p| {
            members
                .iter()
                .any(|m| m.name == p.name && m.client_urls == p.client)
        });
        if named && members.iter().all(|m| !m.learner) {
            break;
        }
        assert!(
            Instant::now() < until,
            "never promoted and named: {members:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // etcdctl member remove: the first member carries on alone.
    let status = remote(&c.procs[1].client).status(None, dl()).await.unwrap();
    let second_id = format!("{:x}", status.header.unwrap().member_id);
    let (ok, out) =
        support::etcdctl::etcdctl(&c.procs[0].client, &["member", "remove", &second_id], None);
    assert!(ok, "member remove: {out}");
    assert!(out.contains("removed from cluster"), "{out}");
    assert_eq!(member_list(&c.procs[0].client).len(), 1);
    // As etcd's, the removed member stops by itself, with status 0 (etcd exits 0 once its
    // server stops, whatever stopped it).
    let status = stops_by_itself(c.procs[1].child.take().expect("running")).await;
    assert!(status.success(), "{status}");
    put_until_acked(&*first, "/k/after".into()).await;
    assert_eq!(count(&*first, "/k/", false).await, 52);

    // Removing it again, or a member that never was: etcd's "member not found".
    let (ok, out) =
        support::etcdctl::etcdctl(&c.procs[0].client, &["member", "remove", &second_id], None);
    assert!(!ok && out.contains("member not found"), "{out}");
    let (ok, out) = support::etcdctl::etcdctl(
        &c.procs[0].client,
        &["member", "add", "again", "--peer-urls", &c.procs[0].peer],
        None,
    );
    assert!(!ok && out.contains("Peer URLs already exists"), "{out}");
}

/// Waits (at most 15 s) for a member's process to stop by itself and gives its exit status;
/// kills it by its pid and fails if it does not.
async fn stops_by_itself(mut child: Child) -> std::process::ExitStatus {
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the member still runs");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// etcd's `--strict-reconfig-check` (on by default): with one member of three down,
/// removing a running one would leave no quorum of reachable members — refused as etcd
/// refuses it; removing the one that is down is safe and done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removal_the_cluster_could_not_survive_is_refused() {
    if !support::etcdctl::available() {
        return;
    }
    let mut c = Cluster::new(3);
    let first = until_serving(&c, 0).await;
    let id = |s: StatusResponse| format!("{:x}", s.header.unwrap().member_id);
    let running = id(until_serving(&c, 1).await.status(None, dl()).await.unwrap());
    let down = id(until_serving(&c, 2).await.status(None, dl()).await.unwrap());
    until_all_started(&c).await;
    c.kill(2);
    // The leader marks member 2 down at its first heartbeat that fails (every 50 ms here);
    // nothing outside shows that moment, so give it six heartbeats.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (ok, out) =
        support::etcdctl::etcdctl(&c.procs[0].client, &["member", "remove", &running], None);
    assert!(
        !ok && out.contains("etcdserver: unhealthy cluster"),
        "{out}"
    );
    assert_eq!(member_list(&c.procs[0].client).len(), 3);
    let (ok, out) =
        support::etcdctl::etcdctl(&c.procs[0].client, &["member", "remove", &down], None);
    assert!(ok && out.contains("removed from cluster"), "{out}");
    put_until_acked(&*first, "/k/after".into()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_removed_while_down_stops_when_it_comes_back() {
    if !support::etcdctl::available() {
        return;
    }
    let mut c = Cluster::new(3);
    let first = until_serving(&c, 0).await;
    let status = until_serving(&c, 2).await.status(None, dl()).await.unwrap();
    let gone = format!("{:x}", status.header.unwrap().member_id);
    until_all_started(&c).await;
    c.kill(2);
    let (ok, out) =
        support::etcdctl::etcdctl(&c.procs[0].client, &["member", "remove", &gone], None);
    assert!(ok, "member remove: {out}");
    // Back with its old log, it asks for votes; its former peers answer that it was removed.
    c.start(2);
    let status = stops_by_itself(c.procs[2].child.take().expect("running")).await;
    assert!(status.success(), "{status}");
    put_until_acked(&*first, "/k/after".into()).await;
    assert_eq!(member_list(&c.procs[0].client).len(), 2);
}

/// etcd's way to move a member to new peer URLs: `etcdctl member update`, then the member
/// restarted on them; the others replicate to it at the new URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_update_moves_a_member_to_new_peer_urls() {
    if !support::etcdctl::available() {
        return;
    }
    let mut c = Cluster::new(3);
    let first = until_serving(&c, 0).await;
    until_all_started(&c).await;
    // A follower moves: the others reach a leader at its peer URL (forwarded calls), so
    // a leader on a URL it does not listen on yet would leave them unable to forward.
    let mut moving = None;
    for i in 1..3 {
        let header = until_serving(&c, i).await.status(None, dl()).await.unwrap();
        let (id, leader) = (header.header.unwrap().member_id, header.leader);
        if id != leader {
            moving = Some((i, format!("{id:x}")));
        }
    }
    let (m, moved) = moving.expect("a follower among two members");
    let name = c.procs[m].name.clone();
    let update = |urls: &str| {
        support::etcdctl::etcdctl(
            &c.procs[0].client,
            &["member", "update", &moved, "--peer-urls", urls],
            None,
        )
    };
    let (ok, out) = update(&c.procs[3 - m].peer);
    assert!(!ok && out.contains("Peer URLs already exists"), "{out}");
    let new_peer = format!("http://127.0.0.1:{}", free_port());
    let (ok, out) = update(&new_peer);
    assert!(
        ok && out.contains(&format!("Member {moved:>16} updated in cluster")),
        "{out}"
    );
    let (ok, out) = support::etcdctl::etcdctl(
        &c.procs[0].client,
        &[
            "member",
            "update",
            "1234",
            "--peer-urls",
            "http://127.0.0.1:1",
        ],
        None,
    );
    assert!(!ok && out.contains("member not found"), "{out}");
    // The others list it at the new URL (the moved member itself may not hear of the
    // change: nothing reaches it at the new URL until it is restarted there).
    let until = Instant::now() + Duration::from_secs(15);
    for p in [&c.procs[0], &c.procs[3 - m]] {
        while !member_list(&p.client)
            .iter()
            .any(|l| l.name == name && l.peer_urls == new_peer)
        {
            assert!(
                Instant::now() < until,
                "{} never listed the new URL",
                p.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    c.kill(m);
    for i in 0..10 {
        put_until_acked(&*first, format!("/k/{i}")).await;
    }
    c.initial = c.initial.replace(&c.procs[m].peer, &new_peer);
    c.procs[m].peer = new_peer;
    c.start(m);
    let moved = until_serving(&c, m).await;
    while count(&*moved, "/k/", true).await != 10 {
        assert!(Instant::now() < until, "the moved member never caught up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let listed = member_list(&c.procs[m].client);
    assert!(
        listed.iter().any(|l| l.peer_urls == c.procs[m].peer),
        "{listed:?}"
    );
}

/// etcd's `--client-crl-file` and `--client-cert-allowed-hostname`: a client certificate the
/// list revokes, or one not valid for the allowed host name, is refused at the handshake;
/// the others work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_or_unallowed_client_certificates_are_refused() {
    if !support::etcdctl::available() {
        return;
    }
    let certs = Certs::new();
    let path = |f: &str| certs.path(f).display().to_string();
    let put = |url: &str, who: &str| {
        let args = [
            "--cacert",
            &path("ca.pem"),
            "--cert",
            &path(&format!("{who}.pem")),
            "--key",
            &path(&format!("{who}-key.pem")),
            "--dial-timeout=2s",
            "put",
            "/k",
            who,
        ];
        support::etcdctl::etcdctl(url, &args, None)
    };
    let tls = |extra: &[&str]| {
        let mut flags = certs.server_flags(true);
        flags.push("--peer-auto-tls".into());
        flags.extend(extra.iter().map(|s| s.to_string()));
        let c = Cluster::start_all(1, "https", flags, None);
        let url = c.procs[0].client.clone();
        let until = Instant::now() + Duration::from_secs(15);
        while !support::etcdctl::etcdctl(
            &url,
            &[
                "--cacert",
                &path("ca.pem"),
                "--cert",
                &path("server.pem"),
                "--key",
                &path("server-key.pem"),
                "endpoint",
                "health",
            ],
            None,
        )
        .0
        {
            assert!(Instant::now() < until, "the member never served");
            std::thread::sleep(Duration::from_millis(100));
        }
        (c, url)
    };

    let (_revoking, url) = tls(&["--client-crl-file", &path("crl.pem")]);
    let (ok, out) = put(&url, "client");
    assert!(ok && out.contains("OK"), "{out}");
    let (ok, out) = put(&url, "app");
    assert!(!ok, "a revoked certificate was taken: {out}");

    // client.pem names no host; server.pem is for 127.0.0.1 and localhost.
    let (_by_name, url) = tls(&["--client-cert-allowed-hostname", "localhost"]);
    let (ok, out) = put(&url, "server");
    assert!(ok && out.contains("OK"), "{out}");
    let (ok, out) = put(&url, "client");
    assert!(!ok, "a certificate for no host name was taken: {out}");

    // A host name no certificate could name is refused at start, not at each handshake.
    let mut flags = certs.server_flags(true);
    flags.extend(
        [
            "--peer-auto-tls",
            "--client-cert-allowed-hostname",
            "not a name!",
        ]
        .map(String::from),
    );
    let mut bad = Cluster::start_all(1, "https", flags, None);
    let status = stops_by_itself(bad.procs[0].child.take().expect("started")).await;
    assert!(!status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_quota_raises_nospace_until_disarmed() {
    if !support::etcdctl::available() {
        return;
    }
    let c = Cluster::with_flags(1, &["--quota-backend-bytes", "200000"]);
    let e = until_serving(&c, 0).await;
    let url = c.procs[0].client.clone();
    let put = |key: String| PutRequest {
        key: key.into_bytes(),
        value: vec![b'x'; 10_000],
        ..Default::default()
    };
    let mut stored = 0;
    let refused = loop {
        match e.put(put(format!("/k/{stored:04}")), dl()).await {
            Ok(_) => stored += 1,
            Err(err) => break err,
        }
        assert!(stored < 100, "200 kB quota never reached");
    };
    assert_eq!(refused.kind, etcdc::ErrorKind::NoSpace, "{refused:?}");
    assert_eq!(refused.message, "etcdserver: mvcc: database space exceeded");
    assert!(stored >= 15, "only {stored} puts of 10 kB fit in 200 kB");

    let (ok, out) = support::etcdctl::etcdctl(&url, &["alarm", "list"], None);
    assert!(ok && out.contains("alarm:NOSPACE"), "{out}");
    let (ok, out) = support::etcdctl::etcdctl(&url, &["put", "/more", "v"], None);
    assert!(!ok && out.contains("database space exceeded"), "{out}");
    let bare = url.trim_start_matches("http://");
    let (ok, out) = support::etcdctl::etcdctl(bare, &["endpoint", "status"], None);
    assert!(ok && out.contains("alarm:NOSPACE"), "{out}");
    // Deletes and compaction still work; writes stay refused while the alarm holds.
    let gone = e
        .delete_range(
            DeleteRangeRequest {
                key: b"/k/".to_vec(),
                range_end: etcdc::kv::prefix_end(b"/k/"),
                ..Default::default()
            },
            dl(),
        )
        .await
        .unwrap();
    assert_eq!(gone.deleted, stored);
    let rev = gone.header.unwrap().revision;
    e.compact(
        CompactionRequest {
            revision: rev,
            physical: false,
        },
        dl(),
    )
    .await
    .unwrap();
    let still = e.put(put("/k/again".into()), dl()).await.unwrap_err();
    assert_eq!(still.kind, etcdc::ErrorKind::NoSpace);

    let (ok, out) = support::etcdctl::etcdctl(&url, &["alarm", "disarm"], None);
    assert!(ok && out.contains("alarm:NOSPACE"), "{out}");
    let (ok, out) = support::etcdctl::etcdctl(&url, &["alarm", "list"], None);
    assert!(ok && out.trim().is_empty(), "{out}");
    e.put(put("/k/again".into()), dl()).await.unwrap();
}

/// etcd's disaster recovery: two of three members lost for good, the third restarted with
/// `--force-new-cluster` serves everything it had, alone, and takes writes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_new_cluster_brings_back_a_member_that_lost_its_quorum() {
    let mut c = Cluster::new(3);
    let e = until_serving(&c, 0).await;
    for i in 0..30 {
        put_until_acked(&*e, format!("/k/{i:04}")).await;
    }
    let revision = e.status(None, dl()).await.unwrap().header.unwrap().revision;
    // Every member has the writes (so the one kept has them committed), then all stop;
    // only n0 comes back, on its own.
    for i in 0..3 {
        let m = until_serving(&c, i).await;
        let until = Instant::now() + Duration::from_secs(10);
        while count(&*m, "/k/", true).await < 30 {
            assert!(Instant::now() < until, "member {i} never caught up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    for i in 0..3 {
        c.kill(i);
    }
    c.extra.push("--force-new-cluster".into());
    c.start(0);
    let e = until_serving(&c, 0).await;
    assert_eq!(count(&*e, "/k/", false).await, 30);
    let members = member_list(&c.procs[0].client);
    assert_eq!(members.len(), 1, "{members:?}");
    put_until_acked(&*e, "/k/after".into()).await;
    let now = e.status(None, dl()).await.unwrap().header.unwrap().revision;
    assert_eq!(now, revision + 1, "revisions go on from the member's");
    // Started again the same way (the flag left in place): still alone, nothing lost.
    c.kill(0);
    c.start(0);
    let e = until_serving(&c, 0).await;
    assert_eq!(count(&*e, "/k/", false).await, 31);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_saved_with_etcdctl_starts_a_new_cluster() {
    if !support::etcdctl::available() {
        return;
    }
    let c = Cluster::new(1);
    let e = until_serving(&c, 0).await;
    for i in 0..50 {
        put_until_acked(&*e, format!("/k/{i:04}")).await;
    }
    let revision = e.status(None, dl()).await.unwrap().header.unwrap().revision;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backup.db");
    let file = file.to_str().unwrap();
    let bare = c.procs[0].client.trim_start_matches("http://").to_string();
    let (ok, out) = support::etcdctl::etcdctl(&bare, &["snapshot", "save", file], None);
    assert!(ok && out.contains("Snapshot saved"), "{out}");
    drop(c);

    // A damaged copy is refused (checksum), and leaves the data dir empty for a retry.
    let damaged = dir.path().join("damaged.db");
    let mut bytes = std::fs::read(file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&damaged, bytes).unwrap();
    let mut refused = Cluster::with_flags(1, &["--restore-snapshot", damaged.to_str().unwrap()]);
    let status = stops_by_itself(refused.procs[0].child.take().unwrap()).await;
    assert!(!status.success(), "{status}");
    let left = std::fs::read_dir(refused.dir.path().join("n0")).map_or(0, |d| d.count());
    assert_eq!(left, 0, "a failed restore left files in the data dir");

    // A new member on new URLs and an empty data dir, from the file.
    let mut restored = Cluster::with_flags(1, &["--restore-snapshot", file]);
    let e = until_serving(&restored, 0).await;
    assert_eq!(count(&*e, "/k/", false).await, 50);
    let members = member_list(&restored.procs[0].client);
    assert_eq!(members.len(), 1, "{members:?}");
    put_until_acked(&*e, "/k/after".into()).await;
    let now = e.status(None, dl()).await.unwrap().header.unwrap().revision;
    assert!(
        now > revision,
        "revisions go on from the backup's: {now} after {revision}"
    );

    // Restarted on its data dir (the flag still given): its own data, not the backup's.
    restored.kill(0);
    restored.start(0);
    let e = until_serving(&restored, 0).await;
    assert_eq!(count(&*e, "/k/", false).await, 51);
}

/// `curl` on one of a member's HTTP endpoints over TLS, with the certificate of `who`
/// (None: none): (succeeded, body).
fn curl(certs: &Certs, url: &str, who: Option<&str>) -> (bool, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "5", "--cacert"])
        .arg(certs.path("ca.pem"));
    if let Some(who) = who {
        cmd.arg("--cert")
            .arg(certs.path(&format!("{who}.pem")))
            .arg("--key")
            .arg(certs.path(&format!("{who}-key.pem")));
    }
    let out = cmd.arg(url).output().expect("curl runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_that_requires_tls_and_client_certificates() {
    let certs = Certs::new();
    let c = Cluster::with_tls(3, &certs);
    // Every member answers a linearizable read: the members found a leader over TLS.
    let mut members = Vec::new();
    for i in 0..3 {
        members.push(until_serving(&c, i).await);
    }
    let client: Box<dyn Etcd> = Box::new(
        etcdc::remote::Remote::new(etcdc::remote::RemoteConfig {
            endpoints: etcdc::remote::parse_endpoints(&c.endpoints()).unwrap(),
            tls: c.client_tls.clone(),
            ..Default::default()
        })
        .unwrap(),
    );
    let mut w = client
        .watcher(
            WatchCreateRequest {
                key: b"/tls/".to_vec(),
                range_end: etcdc::kv::prefix_end(b"/tls/"),
                ..Default::default()
            },
            dl(),
        )
        .await
        .unwrap();
    let first = support::put_rev(&*client, "/tls/0", "v").await;
    support::next_event_at(&mut w, first).await;
    for i in 1..20 {
        put_until_acked(&*client, format!("/tls/{i}")).await;
    }
    for m in &members {
        assert_eq!(count(&**m, "/tls/", false).await, 20, "replicated over TLS");
    }

    // etcdctl with etcd's TLS flags.
    let url = &c.procs[1].client;
    let flags = |who: &str| {
        vec![
            "--cacert".to_string(),
            certs.path("ca.pem").display().to_string(),
            "--cert".to_string(),
            certs.path(&format!("{who}.pem")).display().to_string(),
            "--key".to_string(),
            certs.path(&format!("{who}-key.pem")).display().to_string(),
        ]
    };
    let ctl = |args: &[&str], who: &str| {
        let mut all: Vec<String> = flags(who);
        all.extend(args.iter().map(|s| s.to_string()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        support::etcdctl::etcdctl(url, &all, None)
    };
    let (ok, out) = ctl(&["get", "/tls/0", "--print-value-only"], "client");
    assert!(ok && out.trim() == "v", "{out}");
    let (ok, out) = ctl(&["member", "list"], "client");
    assert!(
        ok && out.matches("https://127.0.0.1:").count() == 6,
        "{out}"
    );
    // A certificate from a CA the members do not trust is refused.
    let (ok, out) = ctl(&["get", "/tls/0"], "stranger");
    assert!(!ok, "{out}");

    // /health and /metrics follow the client URL's TLS.
    let (ok, body) = curl(&certs, &format!("{url}/health"), Some("client"));
    assert!(ok && body.contains("\"health\":\"true\""), "{body}");
    let (ok, body) = curl(&certs, &format!("{url}/metrics"), Some("client"));
    assert!(ok && body.contains("etcd_server_has_leader 1"), "{body}");
    let (ok, _) = curl(&certs, &format!("{url}/health"), None);
    assert!(!ok, "no client certificate, no answer");

    // The remote client without a certificate, or in plaintext: clear errors.
    let no_cert = etcdc::remote::Remote::new(etcdc::remote::RemoteConfig {
        endpoints: vec![url.clone()],
        tls: Some(ClientTls {
            identity: None,
            ..c.client_tls.clone().unwrap()
        }),
        ..Default::default()
    })
    .unwrap();
    let err = no_cert
        .put(
            support::put("/x", "v"),
            etcdc::api::deadline_in(Duration::from_secs(2)),
        )
        .await
        .unwrap_err();
    assert!(err.message.contains("client certificate"), "{err}");
    let plain = remote(&url.replace("https://", "http://"));
    let err = plain
        .put(
            support::put("/x", "v"),
            etcdc::api::deadline_in(Duration::from_secs(2)),
        )
        .await
        .unwrap_err();
    assert!(err.message.contains("does it require TLS?"), "{err}");

    // Authentication on, users by their certificates' common names: `root` (etcdctl's
    // certificate) may do anything, `app` only what its role allows — on every member.
    for args in [
        &["user", "add", "root", "--no-password"][..],
        &["role", "add", "root"],
        &["user", "grant-role", "root", "root"],
        &["user", "add", "app", "--no-password"],
        &["role", "add", "app"],
        &[
            "role",
            "grant-permission",
            "app",
            "readwrite",
            "/app/",
            "--prefix",
        ],
        &["user", "grant-role", "app", "app"],
        &["auth", "enable"],
    ] {
        let (ok, out) = ctl(args, "client");
        assert!(ok, "{args:?}: {out}");
    }
    let (ok, out) = ctl(&["put", "/app/k", "v"], "app");
    assert!(ok, "{out}");
    let (ok, out) = ctl(&["put", "/tls/0", "x"], "app");
    assert!(!ok && out.contains("permission denied"), "{out}");
    let (ok, out) = ctl(&["user", "list"], "app");
    assert!(!ok && out.contains("permission denied"), "{out}");
    let (ok, out) = ctl(&["get", "/tls/0", "--print-value-only"], "client");
    assert!(ok && out.trim() == "v", "{out}");
    // The remote client, as `app` by its certificate.
    let app = etcdc::remote::Remote::new(etcdc::remote::RemoteConfig {
        endpoints: etcdc::remote::parse_endpoints(&c.endpoints()).unwrap(),
        tls: Some(ClientTls {
            identity: Some(Identity {
                cert: Pem::File(certs.path("app.pem")),
                key: Pem::File(certs.path("app-key.pem")),
            }),
            ..c.client_tls.clone().unwrap()
        }),
        ..Default::default()
    })
    .unwrap();
    app.put(support::put("/app/remote", "v"), dl())
        .await
        .unwrap();
    let err = app
        .range(
            RangeRequest {
                key: b"/tls/0".to_vec(),
                ..Default::default()
            },
            dl(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind, etcdc::ErrorKind::PermissionDenied, "{err}");
}

/// etcdc-node's stderr and exit status for `flags` on one member of a fresh data dir.
fn node_refuses(flags: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let peer = format!("http://127.0.0.1:{}", free_port());
    let out = Command::new(env!("CARGO_BIN_EXE_etcdc-node"))
        .arg("--data-dir")
        .arg(dir.path().join("d"))
        .args([
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
        ])
        .args(flags)
        .stdin(Stdio::null())
        .output()
        .expect("etcdc-node runs");
    assert!(!out.status.success(), "{flags:?} must be refused");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_tls_and_clear_refusals_of_bad_tls_flags() {
    let certs = Certs::new();
    let client = format!("https://127.0.0.1:{}", free_port());
    let client_flags = [
        "--listen-client-urls",
        &client,
        "--advertise-client-urls",
        &client,
    ];

    // An https URL without a certificate; a certificate without its key; a cipher suite
    // rustls does not have; client certificates required without a CA to check them.
    let err = node_refuses(&client_flags);
    assert!(
        err.contains("needs --cert-file and --key-file, or --auto-tls"),
        "{err}"
    );
    let cert = certs.path("server.pem").display().to_string();
    let key = certs.path("server-key.pem").display().to_string();
    let mut flags = client_flags.to_vec();
    flags.extend(["--cert-file", &cert]);
    let err = node_refuses(&flags);
    assert!(
        err.contains("--cert-file and --key-file go together"),
        "{err}"
    );
    flags.extend(["--key-file", &key]);
    let mut bad_suite = flags.clone();
    bad_suite.extend(["--cipher-suites", "TLS_RSA_WITH_RC4_128_SHA"]);
    let err = node_refuses(&bad_suite);
    assert!(
        err.contains("cipher suite \"TLS_RSA_WITH_RC4_128_SHA\" is not supported"),
        "{err}"
    );
    let mut no_ca = flags.clone();
    no_ca.push("--client-cert-auth");
    let err = node_refuses(&no_ca);
    assert!(
        err.contains("--client-cert-auth needs --trusted-ca-file"),
        "{err}"
    );

    // --auto-tls: a self-signed certificate; etcdctl talks to it skipping verification.
    let dir = tempfile::tempdir().unwrap();
    let peer = format!("http://127.0.0.1:{}", free_port());
    let _node = Stopped(
        Command::new(env!("CARGO_BIN_EXE_etcdc-node"))
            .arg("--data-dir")
            .arg(dir.path().join("d"))
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(client_flags)
            .args([
                "--auto-tls",
                "--cipher-suites",
                "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcdc-node starts"),
    );
    // (etcdctl 3.4 speaks plaintext unless given certificates or told otherwise.)
    let insecure = [
        "--insecure-transport=false",
        "--insecure-skip-tls-verify",
        "--command-timeout=2s",
    ];
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        let (ok, out) = support::etcdctl::etcdctl(
            &client,
            &[&insecure[..], &["put", "/auto", "tls"]].concat(),
            None,
        );
        if ok {
            break;
        }
        assert!(Instant::now() < until, "never served: {out}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(dir.path().join("d/fixtures/client/cert.pem").exists());
    // Verified against the system's roots it is refused: it is self-signed.
    let (ok, out) = support::etcdctl::etcdctl(
        &client,
        &[
            "--insecure-transport=false",
            "--command-timeout=2s",
            "get",
            "/auto",
        ],
        None,
    );
    assert!(!ok, "{out}");
}

/// A process killed by its pid when dropped, also when the test fails.
struct Stopped(Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// etcd's production flags with etcd's meaning, the ones the node lacks refused clearly,
/// booleans as Go parses them, `--version` as etcd prints it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_flags_mean_what_they_mean_for_etcd() {
    let out = Command::new(env!("CARGO_BIN_EXE_etcdc-node"))
        .arg("--version")
        .output()
        .expect("etcdc-node runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.starts_with("etcd Version: 3.4.23\n"),
        "{text}"
    );
    for (flags, says) in [
        (
            &["--enable-v2"][..],
            "--enable-v2=true is not supported: the node serves etcd's v3 API only",
        ),
        (&["--enable-pprof"], "--enable-pprof=true is not supported"),
        (
            &[
                "--auto-compaction-mode=hourly",
                "--auto-compaction-retention=1",
            ],
            "periodic or revision",
        ),
        (
            &["--peer-auto-tls", "false"],
            "\"false\" is not a valid flag",
        ),
    ] {
        let err = node_refuses(flags);
        assert!(err.contains(says), "{flags:?}: {err}");
    }

    let metrics = format!("http://127.0.0.1:{}", free_port());
    let c = Cluster::with_flags(
        1,
        &[
            "--listen-metrics-urls",
            &metrics,
            "--auto-compaction-mode=periodic",
            "--auto-compaction-retention=1s",
            "--max-txn-ops=2",
            "--max-request-bytes=1024",
            "--grpc-keepalive-interval=10s",
            "--grpc-keepalive-timeout",
            "2s",
            "--max-concurrent-streams=100",
            "--strict-reconfig-check=false",
            "--enable-v2=false",
            "--peer-auto-tls=false",
            "--proxy=off",
            "--max-wals=5",
            "--logger=zap",
            "--log-level=info",
            "--metrics",
            "extensive",
        ],
    );
    let e = until_serving(&c, 0).await;
    let put = |key: &str, value: usize| PutRequest {
        key: key.as_bytes().to_vec(),
        value: vec![b'v'; value],
        ..Default::default()
    };
    let first = e.put(put("/a", 1), dl()).await.unwrap();
    let first = first.header.unwrap().revision;
    // --max-request-bytes and --max-txn-ops, with etcd's texts.
    let err = e.put(put("/big", 2048), dl()).await.unwrap_err();
    assert_eq!(err.message, "etcdserver: request is too large");
    let txn = |n: usize| TxnRequest {
        success: (0..n)
            .map(|i| RequestOp {
                request: Some(request_op::Request::RequestPut(put(&format!("/t{i}"), 1))),
            })
            .collect(),
        ..Default::default()
    };
    assert!(e.txn(txn(2), dl()).await.is_ok());
    let err = e.txn(txn(3), dl()).await.unwrap_err();
    assert_eq!(
        err.message,
        "etcdserver: too many operations in txn request"
    );
    // Periodic compaction keeps 1 s of history: within a few seconds the first revision
    // is compacted away, by the leader alone.
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let old = RangeRequest {
            key: b"/a".to_vec(),
            revision: first,
            ..Default::default()
        };
        match e.range(old, dl()).await {
            Err(err) if err.kind == etcdc::ErrorKind::Compacted => break,
            r => assert!(Instant::now() < until, "never compacted: {r:?}"),
        }
        e.put(put("/tick", 1), dl()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // --listen-metrics-urls serves /metrics and /health, and no gRPC.
    let get = |path: &str| {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "5", &format!("{metrics}{path}")])
            .output()
            .expect("curl runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(get("/metrics").contains("etcd_server_version{server_version=\"3.4.23\"} 1"));
    assert_eq!(get("/health"), r#"{"health":"true"}"#);
}

/// (member id, leader id) of each member, from `etcdctl endpoint status`.
fn statuses(c: &Cluster) -> Vec<(u64, u64)> {
    statuses_at(&c.endpoints())
}

/// (member id, leader id) of the member at each of `endpoints`.
fn statuses_at(endpoints: &str) -> Vec<(u64, u64)> {
    let (ok, out) =
        support::etcdctl::etcdctl(endpoints, &["endpoint", "status", "-w", "json"], None);
    assert!(ok, "endpoint status: {out}");
    let list: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    list.as_array()
        .expect("a list")
        .iter()
        .map(|s| {
            let st = &s["Status"];
            (
                st["header"]["member_id"].as_u64().expect("member id"),
                st["leader"].as_u64().expect("leader"),
            )
        })
        .collect()
}

/// `etcdctl move-leader` hands leadership to a follower while writes go on: the follower
/// leads, every member agrees, no acknowledged write is lost; an unknown member is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn move_leader_hands_leadership_to_a_follower_under_writes() {
    if !support::etcdctl::available() {
        return;
    }
    let c = Cluster::new(3);
    let e = until_serving(&c, 0).await;
    for i in 1..3 {
        until_serving(&c, i).await;
    }
    let writer = {
        let e = until_serving(&c, 0).await;
        tokio::spawn(async move {
            for i in 0..300 {
                put_until_acked(&*e, format!("/moved/{i:03}")).await;
            }
        })
    };
    for round in 0..3 {
        let s = statuses(&c);
        let leader = s[0].1;
        let target = s
            .iter()
            .map(|m| m.0)
            .find(|&id| id != leader)
            .expect("a follower");
        let (ok, out) = support::etcdctl::etcdctl(
            &c.endpoints(),
            &["move-leader", &format!("{target:x}")],
            None,
        );
        assert!(ok, "round {round}: {out}");
        assert!(
            out.contains(&format!(
                "Leadership transferred from {leader:x} to {target:x}"
            )),
            "{out}"
        );
        let until = Instant::now() + Duration::from_secs(10);
        while statuses(&c).iter().any(|m| m.1 != target) {
            assert!(
                Instant::now() < until,
                "not every member follows {target:x}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let (ok, out) = support::etcdctl::etcdctl(&c.endpoints(), &["move-leader", "1234"], None);
    assert!(
        !ok && out.contains("etcdserver: bad leader transferee"),
        "{out}"
    );
    writer.await.unwrap();
    assert_eq!(count(&*e, "/moved/", false).await, 300);
}

/// A leader that stops (SIGTERM) first hands leadership to another member, as etcd's `Stop`
/// does: by the time its process has exited, the others follow a new leader — their writes
/// do not wait out an election timeout (they would still name the old leader here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_leader_hands_leadership_over_first() {
    if !support::etcdctl::available() {
        return;
    }
    let mut c = Cluster::new(3);
    for i in 0..3 {
        until_serving(&c, i).await;
    }
    // A leader elected less than an election timeout (500 ms here) ago cannot hand over:
    // its voters' leases have not run out (`Member::hand_over`). A wait for time itself.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let s = statuses(&c);
    let leader = s[0].1;
    let i = s
        .iter()
        .position(|m| m.0 == leader)
        .expect("a member leads");
    c.signal(i, nix::sys::signal::Signal::SIGTERM);
    let stopped = c.procs[i].child.take().expect("the leader runs");
    assert!(stops_by_itself(stopped).await.success());
    let rest: Vec<&str> = (0..3)
        .filter(|&j| j != i)
        .map(|j| c.procs[j].client.as_str())
        .collect();
    let after = statuses_at(&rest.join(","));
    let ids: Vec<u64> = after.iter().map(|m| m.0).collect();
    assert!(
        after.iter().all(|m| ids.contains(&m.1)),
        "{after:?}: the old leader was {leader:x}"
    );
}

/// etcd's `--experimental-initial-corrupt-check`: a member whose store differs from its
/// peers' at the same revision refuses to start, and says so; one that agrees with the peers
/// it reaches starts (one that is down is skipped, as etcd skips it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_data_differs_from_its_peers_refuses_to_start() {
    if !support::etcdctl::available() {
        return;
    }
    // Two backups at the same revision, one value apart: what a corrupted member looks like.
    let dir = tempfile::tempdir().unwrap();
    let backup = |value: &str| {
        let file = dir.path().join(format!("{value}.db"));
        let c = Cluster::new(1);
        let client = c.procs[0].client.clone();
        let until = Instant::now() + Duration::from_secs(15);
        while !support::etcdctl::etcdctl(&client, &["put", "/k", value], None).0 {
            assert!(Instant::now() < until, "the put never succeeded");
            std::thread::sleep(Duration::from_millis(100));
        }
        let file_arg = file.to_str().unwrap();
        let (ok, out) = support::etcdctl::etcdctl(&client, &["snapshot", "save", file_arg], None);
        assert!(ok, "{out}");
        file
    };
    let (good, bad) = (backup("good"), backup("bad"));
    let mut c = Cluster::unstarted(3, "http", Vec::new(), None);
    for (i, file) in [&good, &good, &bad].into_iter().enumerate() {
        c.procs[i].flags = vec!["--restore-snapshot".into(), file.display().to_string()];
        c.start(i);
    }
    for i in 0..3 {
        until_serving(&c, i).await;
    }
    until_all_started(&c).await;

    c.kill(2);
    let checked = |c: &Cluster, i: usize| {
        c.command(i)
            .arg("--experimental-initial-corrupt-check")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("etcdc-node starts")
    };
    let mut refused = checked(&c, 2);
    let mut stderr = refused.stderr.take().unwrap();
    let status = stops_by_itself(refused).await;
    let mut said = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut said).unwrap();
    assert!(!status.success(), "{status}");
    assert!(
        said.contains("found data inconsistency with peers"),
        "{said}"
    );

    // Member 0 agrees with member 1, the one it can reach: it starts.
    c.kill(0);
    c.procs[0].child = Some(checked(&c, 0));
    let e = until_serving(&c, 0).await;
    let got = e
        .range(
            RangeRequest {
                key: b"/k".to_vec(),
                ..Default::default()
            },
            dl(),
        )
        .await
        .unwrap();
    assert_eq!(got.kvs[0].value, b"good");
}

/// Go's x509, and so etcd, takes a certificate of the trusted CA file presented as the
/// client's own (a chain of one), where webpki refuses a CA as an end entity. etcd's own
/// tests use one self-signed certificate with common name root as CA, server and client
/// certificate at once (TestCtlV3AuthCertCNWithWithConcurrentOperation): the same against
/// etcd and the node, with authentication on; a self-signed one nobody trusts is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_ca_certificate_is_a_client_certificate_as_for_etcd() {
    if !support::etcdctl::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = |f: &str| dir.path().join(f).display().to_string();
    for name in ["root", "stranger"] {
        let key = rcgen::KeyPair::generate().unwrap();
        let hosts = vec!["127.0.0.1".to_string(), "localhost".to_string()];
        let mut p = rcgen::CertificateParams::new(hosts).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name.push(rcgen::DnType::CommonName, "root");
        let cert = p.self_signed(&key).unwrap();
        std::fs::write(path(&format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(path(&format!("{name}-key.pem")), key.serialize_pem()).unwrap();
    }
    let as_who = |who: &str| {
        vec![
            "--cacert".to_string(),
            path("root.pem"),
            "--cert".into(),
            path(&format!("{who}.pem")),
            "--key".into(),
            path(&format!("{who}-key.pem")),
        ]
    };
    let flags: Vec<String> = [
        "--cert-file",
        &path("root.pem"),
        "--key-file",
        &path("root-key.pem"),
        "--trusted-ca-file",
        &path("root.pem"),
        "--client-cert-auth",
    ]
    .map(String::from)
    .into();
    let etcd = support::etcd::Cluster::start_as(1, flags.clone(), Some(as_who("root")));
    let Some(etcd) = etcd else {
        return;
    };
    let mut node_flags = flags;
    node_flags.push("--peer-auto-tls".into());
    let node = Cluster::start_all(1, "https", node_flags, None);
    for url in [etcd.client_url(0), node.procs[0].client.clone()] {
        let ctl = |who: &str, args: &[&str]| {
            let mut all = as_who(who);
            all.extend(args.iter().map(|s| s.to_string()));
            let all: Vec<&str> = all.iter().map(String::as_str).collect();
            support::etcdctl::etcdctl(&url, &all, None)
        };
        let until = Instant::now() + Duration::from_secs(15);
        while !ctl("root", &["endpoint", "health"]).0 {
            assert!(Instant::now() < until, "{url} never served");
            std::thread::sleep(Duration::from_millis(100));
        }
        for args in [
            &["user", "add", "root:rootpw"][..],
            &["role", "add", "root"],
            &["user", "grant-role", "root", "root"],
            &["auth", "enable"],
            &["put", "/k", "v"],
        ] {
            let (ok, out) = ctl("root", args);
            assert!(ok, "{url} {args:?}: {out}");
        }
        let (ok, out) = ctl("stranger", &["--dial-timeout=2s", "get", "/k"]);
        assert!(!ok, "{url}: an untrusted certificate was taken: {out}");
    }
}

/// etcd's `unix://PATH` URLs: three members whose peers talk over Unix sockets replicate a
/// write, and a member serves clients on a Unix socket too (etcdctl reaches it there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_talk_over_unix_sockets() {
    if !support::etcdctl::available() {
        return;
    }
    let mut c = Cluster::unstarted(3, "http", Vec::new(), None);
    let socket = |name: &str| format!("unix://{}", c.dir.path().join(name).display());
    let peers: Vec<String> = (0..3).map(|i| socket(&format!("n{i}.peer"))).collect();
    let unix_client = socket("n0.client");
    c.set_peer_urls(|i, _| peers[i].clone());
    c.procs[0].flags = vec![
        "--listen-client-urls".into(),
        format!("{},{unix_client}", c.procs[0].client),
    ];
    for i in 0..3 {
        c.start(i);
    }
    let first = until_serving(&c, 0).await;
    put_until_acked(&*first, "/over/unix".into()).await;
    let third = until_serving(&c, 2).await;
    assert_eq!(count(&*third, "/over/", false).await, 1);
    let listed = member_list(&c.procs[1].client);
    let mut peer_urls: Vec<String> = listed.iter().map(|m| m.peer_urls.clone()).collect();
    peer_urls.sort();
    assert_eq!(peer_urls, peers);
    let (ok, out) = support::etcdctl::etcdctl(&unix_client, &["get", "/over/unix"], None);
    assert!(ok && out.contains("/over/unix"), "{out}");
}

/// A member that was down while large values were written catches up when it is back:
/// replication sends what it missed in pieces of at most 2 MiB, each of which is answered
/// within the time openraft gives an AppendEntries (one heartbeat interval: 50 ms here).
/// Everything at once, 40 MiB, was never answered in time, and the member never caught up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_missed_large_values_catches_up() {
    let mut c = Cluster::new(3);
    let e = until_serving(&c, 0).await;
    for i in 1..3 {
        until_serving(&c, i).await;
    }
    c.kill(2);
    let value = vec![b'v'; 1 << 20];
    for i in 0..40 {
        let until = Instant::now() + Duration::from_secs(15);
        let req = PutRequest {
            key: format!("/big/{i:02}").into_bytes(),
            value: value.clone(),
            ..Default::default()
        };
        // Member 2 may have led: the first puts may meet the election.
        while let Err(err) = e.put(req.clone(), dl()).await {
            assert!(Instant::now() < until, "put {i}: {err:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    c.start(2);
    // A linearizable read on member 2 waits until it has applied what the leader committed.
    let back = until_serving(&c, 2).await;
    assert_eq!(count(&*back, "/big/", true).await, 40);
}

/// A write forwarded to a leader that stopped answering (SIGSTOP) holds back no later write
/// on its member: once the member sees a new leader, its next write goes there (it waited
/// behind the first until the old leader answered or the forward timed out, 7 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_stuck_on_a_paused_leader_holds_back_no_other() {
    use nix::sys::signal::Signal;
    let c = Cluster::new(3);
    let mut members = Vec::new();
    for i in 0..3 {
        let e = until_serving(&c, i).await;
        let s = e.status(None, dl()).await.unwrap();
        members.push((s.header.unwrap().member_id, s.leader, e));
    }
    let old = members[0].1;
    let leader = members.iter().position(|m| m.0 == old).expect("a leader");
    let follower = (leader + 1) % 3;
    let e: std::sync::Arc<dyn Etcd> = members.swap_remove(follower).2.into();
    c.signal(leader, Signal::SIGSTOP);
    let stuck = {
        let e = e.clone();
        tokio::spawn(async move {
            e.put(
                support::put("/stuck", "v"),
                etcdc::api::deadline_in(Duration::from_secs(10)),
            )
            .await
        })
    };
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let s = e
            .status(None, etcdc::api::deadline_in(Duration::from_secs(1)))
            .await;
        if s.is_ok_and(|s| s.leader != 0 && s.leader != old) {
            break;
        }
        assert!(
            Instant::now() < until,
            "no new leader while {old:x} is stopped"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !stuck.is_finished(),
        "the first write did not wait on the stopped leader"
    );
    let at = Instant::now();
    let next = e
        .put(
            support::put("/next", "v"),
            etcdc::api::deadline_in(Duration::from_secs(3)),
        )
        .await;
    c.signal(leader, Signal::SIGCONT);
    assert!(
        next.is_ok(),
        "the next write, after {:?}: {next:?}",
        at.elapsed()
    );
    let _ = stuck.await;
}

/// etcd's peer certificate checks one way (its e2e `TestEtcdPeerNameAuth`): member 2 refuses
/// the certificate of members 0 and 1 (`--peer-cert-allowed-hostname` names a host theirs
/// does not), they accept its own. etcd answers a peer only over connections it dials, so
/// member 2 hears no answer and never leads; the node's members answer on the caller's
/// connection and so check the other way first. Members 2 and 0 alone make a majority of
/// equal logs in which only member 2's votes get answered: it must not be elected; with
/// member 1 started, 0 and 1 elect a leader and take writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_refuses_its_peers_certificates_never_leads_them() {
    let certs = Certs::new();
    let p = |f: &str| certs.path(f).display().to_string();
    let flags = [
        "--peer-cert-file",
        &p("server.pem"),
        "--peer-key-file",
        &p("server-key.pem"),
        "--peer-trusted-ca-file",
        &p("ca.pem"),
        "--peer-client-cert-auth",
    ]
    .map(String::from)
    .to_vec();
    let mut c = Cluster::unstarted(3, "http", flags, None);
    c.set_peer_urls(|_, url| url.replace("http://", "https://"));
    // server.pem names 127.0.0.1 and localhost.
    c.procs[2].flags = ["--peer-cert-allowed-hostname", "example2.com"]
        .map(String::from)
        .to_vec();
    c.start(2);
    c.start(0);
    let refusing = remote(&c.procs[2].client);
    let first = remote(&c.procs[0].client);
    // Six election timeouts: member 2 campaigns, member 0 must not elect it.
    let until = Instant::now() + Duration::from_secs(3);
    let mut answered = 0;
    while Instant::now() < until {
        for e in [&refusing, &first] {
            let s = e
                .status(None, etcdc::api::deadline_in(Duration::from_secs(1)))
                .await;
            if let Ok(s) = s {
                answered += 1;
                assert_eq!(s.leader, 0, "{:x} leads", s.leader);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        answered > 20,
        "the members answered {answered} status calls"
    );
    c.start(1);
    let e = until_serving(&c, 1).await;
    put_until_acked(&*e, "/k".into()).await;
    let mut ids = Vec::new();
    for i in 0..2 {
        let s = until_serving(&c, i).await.status(None, dl()).await.unwrap();
        ids.push(s.header.unwrap().member_id);
    }
    let s = e.status(None, dl()).await.unwrap();
    assert!(ids.contains(&s.leader), "{:x} leads", s.leader);
}

//! The fault harness: a cluster of server processes (`etcdc-node` or real etcd, started
//! with the same etcd flags on free loopback ports), a workload that records a history, a
//! nemesis that injects faults meanwhile, and the checks of `history` on the result.
//!
//! The workload: hot-key clients (puts of unique values, compare-and-swap transactions,
//! deletes and linearizable gets on three keys), writers of keys each written by exactly
//! one put, and watchers of the whole key space from revision 1 with `prev_kv`, resuming
//! on another member from their next revision when a stream fails. Clients speak etcd's
//! gRPC API directly (no retries of their own): a write whose answer did not come is of
//! unknown outcome, one that provably never left (connection refused) did not happen.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcdc::pb::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use etcdc::pb::etcdserverpb::kv_client::KvClient;
use etcdc::pb::etcdserverpb::maintenance_client::MaintenanceClient;
use etcdc::pb::etcdserverpb::request_op::Request as OpRequest;
use etcdc::pb::etcdserverpb::response_op::Response as OpResponse;
use etcdc::pb::etcdserverpb::watch_client::WatchClient;
use etcdc::pb::etcdserverpb::watch_request::RequestUnion;
use etcdc::pb::etcdserverpb::*;
use tonic::transport::{Channel, Endpoint};

use super::etcd::free_port;
use super::history::{self, Acked, Answer, Call, Op, Stored, Verdict, WatchEvent};

/// Which server the cluster runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Server {
    Node,
    Etcd,
}

/// The faults the nemesis knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// SIGKILL the leader, restart it a moment later.
    LeaderKill,
    /// SIGTERM the leader — a graceful stop, as in a rolling restart — and restart it a
    /// moment after it has exited.
    LeaderStop,
    /// SIGKILL every member at once, restart them all.
    KillAll,
    /// SIGSTOP the leader for longer than an election, then SIGCONT.
    Pause,
    /// Members cut from each other (not from clients) for longer than an election: the
    /// leader isolated, a follower isolated, or the leader cut from one follower only.
    /// Needs network namespaces (root).
    Partition,
    /// The leader loses power: killed, and restarted on what its disk held — its data
    /// dir's file system as the device had it, without what was only in the page cache.
    /// Needs loop-mounted file systems (root).
    PowerLoss,
    /// Every member loses power at once.
    PowerLossAll,
    /// `etcdctl move-leader`: the leader hands leadership to a follower (etcd's MoveLeader)
    /// while the writers go on. Counted only when the transfer succeeded.
    MoveLeader,
}

impl Fault {
    pub const ALL: [Fault; 8] = [
        Fault::LeaderKill,
        Fault::LeaderStop,
        Fault::KillAll,
        Fault::Pause,
        Fault::Partition,
        Fault::PowerLoss,
        Fault::PowerLossAll,
        Fault::MoveLeader,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::LeaderKill => "leader kill",
            Fault::LeaderStop => "leader stop",
            Fault::KillAll => "kill all",
            Fault::Pause => "pause",
            Fault::Partition => "partition",
            Fault::PowerLoss => "power loss",
            Fault::PowerLossAll => "power all",
            Fault::MoveLeader => "move leader",
        }
    }
}

struct Proc {
    name: String,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

/// Server processes, each stopped by its own PID when the cluster is dropped.
pub struct Cluster {
    server: Server,
    /// Member i runs the (i mod len)-th: one build, or a mix as in a rolling upgrade.
    bins: Vec<PathBuf>,
    dir: tempfile::TempDir,
    members: Vec<Proc>,
    /// Each member in a network namespace of its own, when the run partitions.
    net: Option<Netns>,
    /// Each member's data dir on a file system of its own, when the run cuts power.
    disks: Option<Disks>,
    /// More flags for every member.
    flags: Vec<String>,
}

/// Each member's data dir on an ext4 file system of its own, in an image file mounted
/// through a loop device, so that a power loss can be played: the member is killed and its
/// image copied at once. The copy holds what had reached the device — everything synced,
/// and whatever writeback happened to flush — but nothing that was only in the page cache
/// (a SIGKILL alone keeps that). The original is unmounted, the copy takes its place, and
/// mounting it replays the file system's journal, as a reboot would; then the member
/// restarts on it. Unmounted when dropped.
pub struct Disks {
    dir: PathBuf,
    mounted: Vec<bool>,
}

fn run_ok(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Disks {
    /// `n` file systems under `dir`, or `None` where they cannot be made (not root).
    pub fn new(dir: &std::path::Path, n: usize) -> Option<Disks> {
        let mut disks = Disks {
            dir: dir.to_path_buf(),
            mounted: vec![false; n],
        };
        for i in 0..n {
            let img = disks.image(i);
            std::fs::File::create(&img)
                .and_then(|f| f.set_len(512 << 20))
                .ok()?;
            std::fs::create_dir_all(disks.mount_point(i)).ok()?;
            run_ok("mkfs.ext4", &["-q", "-F", &img]).ok()?;
            disks.mount(i).ok()?;
        }
        Some(disks)
    }

    fn image(&self, i: usize) -> String {
        self.dir.join(format!("disk{i}.img")).display().to_string()
    }

    fn mount_point(&self, i: usize) -> PathBuf {
        self.dir.join(format!("disk{i}"))
    }

    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.mount_point(i).join("data")
    }

    fn mount(&mut self, i: usize) -> Result<(), String> {
        let at = self.mount_point(i).display().to_string();
        run_ok("mount", &["-o", "loop", &self.image(i), &at])?;
        self.mounted[i] = true;
        Ok(())
    }

    fn unmount(&mut self, i: usize) {
        if std::mem::take(&mut self.mounted[i]) {
            let _ = run_ok("umount", &[&self.mount_point(i).display().to_string()]);
        }
    }

    /// The device as it is now: call right after the member was killed.
    fn copy(&self, i: usize) -> Result<(), String> {
        let img = self.image(i);
        run_ok("cp", &["--sparse=always", &img, &format!("{img}.lost")])
    }

    /// The copy replaces the disk, mounted (journal replayed) where the old one was.
    fn swap_in_copy(&mut self, i: usize) -> Result<(), String> {
        self.unmount(i);
        let img = self.image(i);
        std::fs::rename(format!("{img}.lost"), &img).map_err(|e| e.to_string())?;
        self.mount(i)
            .map_err(|e| format!("member {i}'s disk does not mount after a power loss: {e}"))
    }
}

impl Drop for Disks {
    fn drop(&mut self) {
        for i in 0..self.mounted.len() {
            self.unmount(i);
        }
    }
}

/// Network namespaces this harness makes, one per member, joined by a bridge in the
/// caller's namespace (where the clients are): member `i` is 10.213.TAG.(i+1), the bridge
/// .254. A partition is a blackhole route in a member's namespace to another member's
/// address, so only members are cut from each other, never from their clients. Removed
/// when dropped.
pub struct Netns {
    tag: u32,
    n: usize,
    cuts: Vec<(usize, usize)>,
}

fn ip(args: &[&str]) -> bool {
    run_ok("ip", args).is_ok()
}

impl Netns {
    /// Namespaces for `n` members, or `None` where they cannot be made (not root, no `ip`).
    pub fn new(n: usize) -> Option<Netns> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        for _ in 0..200 {
            let tag = (std::process::id() * 31 + NEXT.fetch_add(1, Ordering::Relaxed)) % 200 + 20;
            let bridge = format!("ecb{tag}");
            if !ip(&["link", "add", &bridge, "type", "bridge"]) {
                if Command::new("ip").arg("-V").output().is_err() {
                    return None;
                }
                continue;
            }
            let net = Netns {
                tag,
                n,
                cuts: Vec::new(),
            };
            let ok = ip(&[
                "addr",
                "add",
                &format!("10.213.{tag}.254/24"),
                "dev",
                &bridge,
            ]) && ip(&["link", "set", &bridge, "up"])
                && (0..n).all(|i| {
                    let (ns, veth) = (net.ns(i), format!("ec{tag}v{i}"));
                    ip(&["netns", "add", &ns])
                        && ip(&[
                            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns",
                            &ns,
                        ])
                        && ip(&["link", "set", &veth, "master", &bridge])
                        && ip(&["link", "set", &veth, "up"])
                        && ip(&[
                            "-n",
                            &ns,
                            "addr",
                            "add",
                            &format!("{}/24", net.addr(i)),
                            "dev",
                            "eth0",
                        ])
                        && ip(&["-n", &ns, "link", "set", "eth0", "up"])
                        && ip(&["-n", &ns, "link", "set", "lo", "up"])
                });
            return ok.then_some(net);
        }
        None
    }

    fn ns(&self, i: usize) -> String {
        format!("ec{}m{i}", self.tag)
    }

    fn addr(&self, i: usize) -> String {
        format!("10.213.{}.{}", self.tag, i + 1)
    }

    /// Members `a` and `b` stop reaching each other.
    pub fn cut(&mut self, a: usize, b: usize) {
        for (x, y) in [(a, b), (b, a)] {
            let target = format!("{}/32", self.addr(y));
            ip(&["-n", &self.ns(x), "route", "add", "blackhole", &target]);
            self.cuts.push((x, y));
        }
    }

    pub fn heal(&mut self) {
        for (x, y) in std::mem::take(&mut self.cuts) {
            let target = format!("{}/32", self.addr(y));
            ip(&["-n", &self.ns(x), "route", "del", "blackhole", &target]);
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for i in 0..self.n {
            ip(&["netns", "del", &self.ns(i)]);
        }
        ip(&["link", "del", &format!("ecb{}", self.tag)]);
    }
}

impl Cluster {
    /// `net`: namespaces to run the members in (ports 2379 and 2380 in each), or loopback;
    /// `disks`: whether each data dir gets a file system of its own (for power losses);
    /// `flags`: more flags for every member. `None` when disks are asked for and cannot be
    /// made.
    pub fn start(
        server: Server,
        bins: Vec<PathBuf>,
        n: usize,
        net: Option<Netns>,
        disks: bool,
        flags: Vec<String>,
    ) -> Option<Cluster> {
        let dir = tempfile::tempdir().expect("temp dir");
        let disks = match disks {
            true => Some(Disks::new(dir.path(), n)?),
            false => None,
        };
        let members = (0..n)
            .map(|i| Proc {
                name: format!("m{i}"),
                client_port: if net.is_some() { 2379 } else { free_port() },
                peer_port: if net.is_some() { 2380 } else { free_port() },
                child: None,
            })
            .collect();
        let mut c = Cluster {
            server,
            bins,
            dir,
            members,
            net,
            disks,
            flags,
        };
        for i in 0..n {
            c.spawn(i);
        }
        Some(c)
    }

    fn data_dir(&self, i: usize) -> PathBuf {
        match &self.disks {
            Some(d) => d.data_dir(i),
            None => self.dir.path().join(&self.members[i].name),
        }
    }

    /// Members `ids` lose power together: killed, and their disks copied as the devices
    /// hold them now. An error names a member whose disk could not be copied.
    pub fn cut_power(&mut self, ids: &[usize]) -> Result<(), String> {
        for &i in ids {
            self.kill(i);
        }
        let disks = self.disks.as_ref().expect("a power loss needs disks");
        ids.iter().try_for_each(|&i| disks.copy(i))
    }

    /// Members `ids` come back after `cut_power`, each on what its disk held. An error
    /// names a member whose disk did not mount (it stays down).
    pub fn restore_power(&mut self, ids: &[usize]) -> Result<(), String> {
        let disks = self.disks.as_mut().expect("a power loss needs disks");
        let mounted = ids.iter().try_for_each(|&i| disks.swap_in_copy(i));
        for &i in ids {
            self.restart(i);
        }
        mounted
    }

    fn host(&self, i: usize) -> String {
        self.net
            .as_ref()
            .map_or_else(|| "127.0.0.1".to_string(), |n| n.addr(i))
    }

    fn spawn(&mut self, i: usize) {
        let initial: Vec<String> = self
            .members
            .iter()
            .enumerate()
            .map(|(j, m)| format!("{}=http://{}:{}", m.name, self.host(j), m.peer_port))
            .collect();
        let m = &self.members[i];
        let client = format!("http://{}:{}", self.host(i), m.client_port);
        let peer = format!("http://{}:{}", self.host(i), m.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{}.log", m.name)))
            .expect("log file");
        let bin = &self.bins[i % self.bins.len()];
        // `ip netns exec` execs the server: the child's PID is the server's.
        let mut cmd = match &self.net {
            Some(net) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &net.ns(i)]).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        cmd.args(["--name", &m.name])
            .arg("--data-dir")
            .arg(self.data_dir(i))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &initial.join(",")])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "etcdc-faults"])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdout(Stdio::null())
            .stderr(log);
        if self.server == Server::Etcd {
            cmd.args(["--log-level", "warn", "--logger", "zap"]);
        }
        cmd.args(&self.flags);
        self.members[i].child = Some(cmd.spawn().expect("start the server"));
    }

    pub fn url(&self, i: usize) -> String {
        format!("http://{}:{}", self.host(i), self.members[i].client_port)
    }

    /// Where the members' logs are, for a failure's message.
    pub fn logs(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    fn pid(&self, i: usize) -> Option<nix::unistd::Pid> {
        let child = self.members[i].child.as_ref()?;
        Some(nix::unistd::Pid::from_raw(child.id() as i32))
    }

    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// True once member `i` has no running process (a stop asked of it is over).
    pub fn exited(&mut self, i: usize) -> bool {
        let gone = match &mut self.members[i].child {
            Some(child) => matches!(child.try_wait(), Ok(Some(_))),
            None => true,
        };
        if gone {
            self.members[i].child = None;
        }
        gone
    }

    /// Starts member `i` again, unless it runs, or its disk did not survive a power loss.
    pub fn restart(&mut self, i: usize) {
        let disk_lost = self.disks.as_ref().is_some_and(|d| !d.mounted[i]);
        if self.members[i].child.is_none() && !disk_lost {
            self.spawn(i);
        }
    }

    /// Keeps the members' data dirs and logs after the cluster is gone (a failed run's).
    pub fn keep_dir(&mut self) -> PathBuf {
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temp dir"));
        dir.keep()
    }

    pub fn signal(&self, i: usize, sig: nix::sys::signal::Signal) {
        if let Some(pid) = self.pid(i) {
            let _ = nix::sys::signal::kill(pid, sig);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            // A stopped process dies of SIGKILL as well.
            self.kill(i);
        }
        // Then the disks are unmounted, before the temp dir under them is removed, and
        // the namespaces go (`net` drops after this).
        drop(self.disks.take());
    }
}

fn channel(url: &str) -> Channel {
    Endpoint::from_shared(url.to_string())
        .expect("a URL")
        .connect_timeout(Duration::from_millis(300))
        .tcp_nodelay(true)
        .connect_lazy()
}

/// The member that leads, if one does (by index).
async fn leader(urls: &[String]) -> Option<usize> {
    // As `etcdctl move-leader` finds it: the member that says it leads (the one with the
    // highest term, should a deposed leader not know yet), not a follower's belief.
    let mut found: Option<(u64, usize)> = None;
    for (i, url) in urls.iter().enumerate() {
        let mut req = tonic::Request::new(StatusRequest {});
        req.set_timeout(Duration::from_millis(300));
        let Ok(s) = MaintenanceClient::new(channel(url)).status(req).await else {
            continue;
        };
        let s = s.into_inner();
        if s.header.is_some_and(|h| h.member_id == s.leader) && s.leader != 0 {
            found = found.max(Some((s.raft_term, i)));
        }
    }
    found.map(|(_, i)| i)
}

/// Waits (at most `within`) until a linearizable read succeeds on every member.
pub async fn wait_ready(urls: &[String], within: Duration) -> bool {
    let end = Instant::now() + within;
    'members: for url in urls {
        while Instant::now() < end {
            let mut kv = KvClient::new(channel(url));
            let mut req = tonic::Request::new(RangeRequest {
                key: b"/ready".to_vec(),
                ..Default::default()
            });
            req.set_timeout(Duration::from_millis(500));
            if kv.range(req).await.is_ok() {
                continue 'members;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        return false;
    }
    true
}

/// A small deterministic generator (xorshift), so a run's choices follow its seed.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// What one run does.
#[derive(Clone, Debug)]
pub struct Plan {
    pub duration: Duration,
    /// The faults to take turns with, one every `interval`.
    pub faults: Vec<Fault>,
    pub interval: Duration,
    pub hot_clients: usize,
    pub unique_writers: usize,
    pub watchers: usize,
    pub seed: u64,
    /// More flags for every member (e.g. `--unsafe-no-fsync` for a negative control).
    pub flags: Vec<String>,
}

/// What one run found.
#[derive(Debug, Default)]
pub struct Report {
    pub faults: BTreeMap<Fault, usize>,
    /// How often the leader the nemesis found before a fault was not the one before the
    /// last: evidence that the faults bite.
    pub leader_changes: usize,
    pub ops: usize,
    pub acked_writes: usize,
    pub unknown: usize,
    pub lost: usize,
    pub duplicated: usize,
    /// Linearizability or revision-order violations (stale reads among them).
    pub stale: usize,
    pub watch: usize,
    pub inconclusive: usize,
    /// Members that did not come back after the faults (a disk that did not mount after
    /// a power loss, a member that refused to start or never answered again).
    pub unrecoverable: usize,
    /// The longest time in which no client had a write acknowledged: how long the worst
    /// fault kept the cluster from serving writes (liveness, not an anomaly).
    pub longest_outage: Duration,
    pub details: Vec<String>,
}

impl Report {
    pub fn anomalies(&self) -> usize {
        self.lost
            + self.duplicated
            + self.stale
            + self.watch
            + self.inconclusive
            + self.unrecoverable
    }
}

/// A clock shared by every client: nanoseconds since the run began.
#[derive(Clone, Copy)]
struct Clock(Instant);

impl Clock {
    fn now(&self) -> u64 {
        self.0.elapsed().as_nanos() as u64
    }
}

/// True when a call provably never reached a server (its connection was refused).
fn never_sent(status: &tonic::Status) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(e) = source {
        let text = e.to_string();
        if text.contains("tcp connect error") || text.contains("Connection refused") {
            return true;
        }
        source = e.source();
    }
    false
}

const CALL_TIMEOUT: Duration = Duration::from_millis(1500);
const HOT_KEYS: u64 = 3;

fn request<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(CALL_TIMEOUT);
    r
}

fn parse(v: &[u8]) -> Option<u64> {
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// One hot-key client: random operations until `end`, moving to the next member after an
/// error.
async fn hot_client(
    id: usize,
    urls: Arc<Vec<String>>,
    clock: Clock,
    end: Instant,
    seed: u64,
) -> Vec<Op> {
    let mut rng = Rng::new(seed ^ ((id as u64 + 1) * 7919));
    let mut member = id % urls.len();
    let mut kv = KvClient::new(channel(&urls[member]));
    let mut ops = Vec::new();
    let mut seq = 0u64;
    let mut last_seen: BTreeMap<u64, u64> = BTreeMap::new();
    while Instant::now() < end {
        let k = rng.below(HOT_KEYS);
        let key = format!("/hot/{k}");
        seq += 1;
        let fresh = ((id as u64 + 1) << 32) | seq;
        let pick = rng.below(100);
        let call = match pick {
            0..=34 => Call::Get,
            35..=64 => Call::Put(fresh),
            65..=89 => Call::Cas {
                from: last_seen.get(&k).copied().unwrap_or(0),
                to: fresh,
            },
            _ => Call::Delete,
        };
        let invoked = clock.now();
        let result: Result<(Answer, i64), tonic::Status> = match call {
            Call::Get => kv
                .range(request(RangeRequest {
                    key: key.clone().into_bytes(),
                    ..Default::default()
                }))
                .await
                .map(|r| {
                    let r = r.into_inner();
                    let v = r.kvs.first().and_then(|kv| parse(&kv.value));
                    (Answer::Value(v), r.header.map_or(0, |h| h.revision))
                }),
            Call::Put(v) => kv
                .put(request(PutRequest {
                    key: key.clone().into_bytes(),
                    value: v.to_string().into_bytes(),
                    ..Default::default()
                }))
                .await
                .map(|r| {
                    (
                        Answer::Done,
                        r.into_inner().header.map_or(0, |h| h.revision),
                    )
                }),
            Call::Delete => kv
                .delete_range(request(DeleteRangeRequest {
                    key: key.clone().into_bytes(),
                    ..Default::default()
                }))
                .await
                .map(|r| {
                    let r = r.into_inner();
                    (
                        Answer::Deleted(r.deleted > 0),
                        r.header.map_or(0, |h| h.revision),
                    )
                }),
            Call::Cas { from, to } => kv
                .txn(request(TxnRequest {
                    compare: vec![Compare {
                        result: CompareResult::Equal as i32,
                        target: CompareTarget::Value as i32,
                        key: key.clone().into_bytes(),
                        target_union: Some(TargetUnion::Value(from.to_string().into_bytes())),
                        range_end: Vec::new(),
                    }],
                    success: vec![RequestOp {
                        request: Some(OpRequest::RequestPut(PutRequest {
                            key: key.clone().into_bytes(),
                            value: to.to_string().into_bytes(),
                            ..Default::default()
                        })),
                    }],
                    failure: vec![RequestOp {
                        request: Some(OpRequest::RequestRange(RangeRequest {
                            key: key.clone().into_bytes(),
                            ..Default::default()
                        })),
                    }],
                }))
                .await
                .map(|r| {
                    let r = r.into_inner();
                    let seen = r.responses.first().and_then(|op| match &op.response {
                        Some(OpResponse::ResponseRange(rr)) => {
                            rr.kvs.first().and_then(|kv| parse(&kv.value))
                        }
                        _ => None,
                    });
                    (
                        Answer::Swapped(r.succeeded, seen),
                        r.header.map_or(0, |h| h.revision),
                    )
                }),
        };
        let completed = clock.now();
        match result {
            Ok((answer, revision)) => {
                match answer {
                    Answer::Value(Some(v)) | Answer::Swapped(false, Some(v)) => {
                        last_seen.insert(k, v);
                    }
                    _ => {}
                }
                ops.push(Op {
                    client: id,
                    key,
                    call,
                    answer,
                    invoked,
                    completed: Some(completed),
                    revision: Some(revision),
                });
            }
            Err(status) => {
                if !never_sent(&status) && call != Call::Get {
                    ops.push(Op {
                        client: id,
                        key,
                        call,
                        answer: Answer::Unknown,
                        invoked,
                        completed: None,
                        revision: None,
                    });
                }
                member = (member + 1) % urls.len();
                kv = KvClient::new(channel(&urls[member]));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    ops
}

/// One writer of keys that are each written by exactly one put: key → acknowledged
/// revision (`None`: unknown outcome).
async fn unique_writer(
    id: usize,
    urls: Arc<Vec<String>>,
    end: Instant,
) -> BTreeMap<String, Option<i64>> {
    let mut member = id % urls.len();
    let mut kv = KvClient::new(channel(&urls[member]));
    let mut keys = BTreeMap::new();
    let mut n = 0u64;
    while Instant::now() < end {
        n += 1;
        let key = format!("/unique/{id}/{n:08}");
        let put = kv
            .put(request(PutRequest {
                key: key.clone().into_bytes(),
                value: n.to_string().into_bytes(),
                ..Default::default()
            }))
            .await;
        match put {
            Ok(r) => {
                keys.insert(key, Some(r.into_inner().header.map_or(0, |h| h.revision)));
            }
            Err(status) => {
                if !never_sent(&status) {
                    keys.insert(key, None);
                }
                member = (member + 1) % urls.len();
                kv = KvClient::new(channel(&urls[member]));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    keys
}

/// A watcher of everything from revision 1 with `prev_kv`: its log, until it has seen
/// revision `until` (set when the run's final revision is known) or `give_up`.
async fn watcher(
    id: usize,
    urls: Arc<Vec<String>>,
    until: Arc<Mutex<Option<(i64, Instant)>>>,
) -> (Vec<WatchEvent>, Vec<String>) {
    let mut log: Vec<WatchEvent> = Vec::new();
    let mut problems = Vec::new();
    let mut next_rev = 1i64;
    let mut member = id % urls.len();
    let mut responses = 0u64;
    loop {
        let done = |next_rev: i64| match *until.lock().unwrap() {
            Some((r, give_up)) => next_rev > r || Instant::now() > give_up,
            None => false,
        };
        if done(next_rev) {
            return (log, problems);
        }
        let (tx, rx) = tokio::sync::mpsc::channel::<WatchRequest>(1);
        let _ = tx
            .send(WatchRequest {
                request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                    key: vec![0],
                    range_end: vec![0],
                    start_revision: next_rev,
                    prev_kv: true,
                    ..Default::default()
                })),
            })
            .await;
        let mut client = WatchClient::new(channel(&urls[member]));
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        let opened = tokio::time::timeout(
            Duration::from_secs(2),
            client.watch(tonic::Request::new(stream)),
        )
        .await;
        let mut answers = match opened {
            Ok(Ok(s)) => s.into_inner(),
            _ => {
                member = (member + 1) % urls.len();
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        loop {
            if done(next_rev) {
                return (log, problems);
            }
            let msg =
                match tokio::time::timeout(Duration::from_millis(500), answers.message()).await {
                    Err(_) => continue,
                    Ok(Ok(Some(m))) => m,
                    Ok(_) => break,
                };
            if msg.compact_revision != 0 {
                problems.push(format!(
                    "watcher {id}: compacted at {} resuming from {next_rev}",
                    msg.compact_revision
                ));
                return (log, problems);
            }
            if msg.canceled {
                break;
            }
            responses += 1;
            for e in msg.events {
                let Some(kv) = e.kv else { continue };
                let delete = e.r#type == 1;
                next_rev = next_rev.max(kv.mod_revision + 1);
                log.push(WatchEvent {
                    key: String::from_utf8_lossy(&kv.key).into_owned(),
                    value: (!delete).then(|| kv.value.clone()),
                    mod_revision: kv.mod_revision,
                    create_revision: if delete { 0 } else { kv.create_revision },
                    version: if delete { 0 } else { kv.version },
                    prev: e.prev_kv.map(|p| p.value),
                    response: responses,
                });
            }
        }
        drop(tx);
        member = (member + 1) % urls.len();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Injects `plan.faults` in turn, one every `plan.interval`, until `end`; returns the count
/// of each. Every fault is healed before the next (and before the run's end).
async fn nemesis(
    cluster: Arc<Mutex<Cluster>>,
    urls: Arc<Vec<String>>,
    plan: Plan,
    end: Instant,
) -> (BTreeMap<Fault, usize>, usize, Vec<String>) {
    use nix::sys::signal::Signal;
    let mut counts = BTreeMap::new();
    let (mut last_leader, mut changes) = (None, 0);
    let mut problems = Vec::new();
    let mut rng = Rng::new(plan.seed);
    let mut turn = 0usize;
    let n = urls.len();
    while !plan.faults.is_empty() {
        tokio::time::sleep(plan.interval).await;
        if Instant::now() + Duration::from_secs(3) > end {
            break;
        }
        let fault = plan.faults[turn % plan.faults.len()];
        turn += 1;
        let found = leader(&urls).await;
        if found.is_some() && last_leader.is_some() && found != last_leader {
            changes += 1;
        }
        last_leader = found.or(last_leader);
        let target = found.unwrap_or_else(|| rng.below(n as u64) as usize);
        match fault {
            Fault::LeaderKill => {
                cluster.lock().unwrap().kill(target);
                tokio::time::sleep(Duration::from_millis(500 + rng.below(1000))).await;
                cluster.lock().unwrap().restart(target);
            }
            Fault::LeaderStop => {
                cluster.lock().unwrap().signal(target, Signal::SIGTERM);
                // A stop that hangs is killed (and shows as an outage).
                let until = Instant::now() + Duration::from_secs(10);
                while !cluster.lock().unwrap().exited(target) && Instant::now() < until {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                cluster.lock().unwrap().kill(target);
                tokio::time::sleep(Duration::from_millis(500 + rng.below(1000))).await;
                cluster.lock().unwrap().restart(target);
            }
            Fault::KillAll => {
                {
                    let mut c = cluster.lock().unwrap();
                    for i in 0..n {
                        c.kill(i);
                    }
                }
                tokio::time::sleep(Duration::from_millis(200 + rng.below(500))).await;
                let mut c = cluster.lock().unwrap();
                for i in 0..n {
                    c.restart(i);
                }
            }
            Fault::Pause => {
                cluster.lock().unwrap().signal(target, Signal::SIGSTOP);
                tokio::time::sleep(Duration::from_millis(1500 + rng.below(1000))).await;
                cluster.lock().unwrap().signal(target, Signal::SIGCONT);
            }
            Fault::PowerLoss | Fault::PowerLossAll => {
                let ids: Vec<usize> = match fault {
                    Fault::PowerLoss => vec![target],
                    _ => (0..n).collect(),
                };
                // Down for as long as a leader kill keeps it down, so that the others
                // may elect a new leader meanwhile.
                let cut = cluster.lock().unwrap().cut_power(&ids);
                tokio::time::sleep(Duration::from_millis(500 + rng.below(1000))).await;
                let back = cluster.lock().unwrap().restore_power(&ids);
                problems.extend(cut.and(back).err());
            }
            Fault::MoveLeader => {
                // As an operator would: asked again (a few times) when leadership moved
                // between finding the leader and asking it.
                let mut moved = false;
                for _ in 0..3 {
                    if let Some(from) = leader(&urls).await {
                        let to = (from + 1 + rng.below(n as u64 - 1) as usize) % n;
                        match move_leader(&urls[from], &urls[to]).await {
                            Ok(()) => {
                                moved = true;
                                break;
                            }
                            Err(e) => eprintln!("move-leader {from} -> {to}: {e}"),
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                if !moved {
                    continue;
                }
            }
            Fault::Partition => {
                let other = (target + 1 + rng.below(n as u64 - 1) as usize) % n;
                {
                    let mut c = cluster.lock().unwrap();
                    let net = c
                        .net
                        .as_mut()
                        .expect("a partition needs network namespaces");
                    match (turn - 1) % 3 {
                        // The leader alone (it keeps its clients).
                        0 => (0..n)
                            .filter(|&j| j != target)
                            .for_each(|j| net.cut(target, j)),
                        // A follower alone.
                        1 => (0..n)
                            .filter(|&j| j != other)
                            .for_each(|j| net.cut(other, j)),
                        // The leader cut from one follower; the third reaches both.
                        _ => net.cut(target, other),
                    }
                }
                tokio::time::sleep(Duration::from_millis(1500 + rng.below(1500))).await;
                if let Some(net) = cluster.lock().unwrap().net.as_mut() {
                    net.heal();
                }
            }
        }
        *counts.entry(fault).or_insert(0) += 1;
    }
    (counts, changes, problems)
}

/// Asks the leader at `from` to hand leadership to the member at `to`.
async fn move_leader(from: &str, to: &str) -> Result<(), String> {
    let mut req = tonic::Request::new(StatusRequest {});
    req.set_timeout(Duration::from_millis(500));
    let status = MaintenanceClient::new(channel(to))
        .status(req)
        .await
        .map_err(|e| format!("status of the target: {e}"))?;
    let target_id = status.into_inner().header.ok_or("no header")?.member_id;
    let mut req = tonic::Request::new(MoveLeaderRequest { target_id });
    req.set_timeout(Duration::from_secs(5));
    MaintenanceClient::new(channel(from))
        .move_leader(req)
        .await
        .map(drop)
        .map_err(|e| format!("move-leader: {e}"))
}

/// The store at the end, read linearizably from any member: every key and the revision.
async fn final_state(urls: &[String]) -> Option<(BTreeMap<String, Stored>, i64)> {
    for _ in 0..100 {
        for url in urls {
            let mut kv = KvClient::new(channel(url));
            let mut req = tonic::Request::new(RangeRequest {
                key: vec![0],
                range_end: vec![0],
                ..Default::default()
            });
            req.set_timeout(Duration::from_secs(3));
            if let Ok(r) = kv.range(req).await {
                let r = r.into_inner();
                let store = r
                    .kvs
                    .into_iter()
                    .map(|kv| {
                        (
                            String::from_utf8_lossy(&kv.key).into_owned(),
                            Stored {
                                value: kv.value,
                                mod_revision: kv.mod_revision,
                                create_revision: kv.create_revision,
                                version: kv.version,
                            },
                        )
                    })
                    .collect();
                return Some((store, r.header.map_or(0, |h| h.revision)));
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// Search steps allowed per key before a history counts as inconclusive.
const SEARCH_BUDGET: usize = 20_000_000;

/// Runs `plan` against a fresh cluster of `members` and checks what it recorded. A plan
/// with partitions runs the members in network namespaces; `None` if they cannot be made.
/// Member i runs `bins[i % bins.len()]`.
pub async fn run(server: Server, bins: Vec<PathBuf>, members: usize, plan: Plan) -> Option<Report> {
    let net = if plan.faults.contains(&Fault::Partition) {
        Some(Netns::new(members)?)
    } else {
        None
    };
    let power =
        plan.faults.contains(&Fault::PowerLoss) || plan.faults.contains(&Fault::PowerLossAll);
    let cluster = Cluster::start(server, bins, members, net, power, plan.flags.clone())?;
    let urls: Arc<Vec<String>> = Arc::new((0..members).map(|i| cluster.url(i)).collect());
    let logs = cluster.logs();
    let cluster = Arc::new(Mutex::new(cluster));
    assert!(
        wait_ready(&urls, Duration::from_secs(30)).await,
        "the cluster did not start (logs in {logs:?})"
    );
    let clock = Clock(Instant::now());
    let end = Instant::now() + plan.duration;
    let until: Arc<Mutex<Option<(i64, Instant)>>> = Arc::default();
    let hot: Vec<_> = (0..plan.hot_clients)
        .map(|i| tokio::spawn(hot_client(i, urls.clone(), clock, end, plan.seed)))
        .collect();
    let unique: Vec<_> = (0..plan.unique_writers)
        .map(|i| tokio::spawn(unique_writer(i, urls.clone(), end)))
        .collect();
    let watchers: Vec<_> = (0..plan.watchers)
        .map(|i| tokio::spawn(watcher(i, urls.clone(), until.clone())))
        .collect();
    let faults = tokio::spawn(nemesis(cluster.clone(), urls.clone(), plan.clone(), end));

    let (faults, leader_changes, problems) = faults.await.expect("nemesis");
    let mut report = Report {
        faults,
        leader_changes,
        unrecoverable: problems.len(),
        details: problems,
        ..Default::default()
    };
    let mut ops: Vec<Op> = Vec::new();
    for h in hot {
        ops.extend(h.await.expect("client"));
    }
    let mut written: BTreeMap<String, Option<i64>> = BTreeMap::new();
    for u in unique {
        written.extend(u.await.expect("writer"));
    }
    // Every member back before the end is read.
    {
        let mut c = cluster.lock().unwrap();
        if let Some(net) = c.net.as_mut() {
            net.heal();
        }
        for i in 0..members {
            c.signal(i, nix::sys::signal::Signal::SIGCONT);
            c.restart(i);
        }
    }
    let final_read = match wait_ready(&urls, Duration::from_secs(30)).await {
        true => final_state(&urls).await,
        false => None,
    };
    let Some((store, revision)) = final_read else {
        report.unrecoverable += 1;
        report
            .details
            .push("the cluster did not recover after the faults".into());
        let kept = cluster.lock().unwrap().keep_dir();
        report
            .details
            .push(format!("member data and logs kept in {kept:?}"));
        *until.lock().unwrap() = Some((0, Instant::now()));
        return Some(report);
    };
    // The final values of the hot keys, read after everything else completed.
    let t = clock.now();
    for k in 0..HOT_KEYS {
        let key = format!("/hot/{k}");
        let value = store.get(&key).and_then(|s| parse(&s.value));
        ops.push(Op {
            client: usize::MAX,
            key,
            call: Call::Get,
            answer: Answer::Value(value),
            invoked: t,
            completed: Some(t + 1),
            revision: Some(revision),
        });
    }
    *until.lock().unwrap() = Some((revision, Instant::now() + Duration::from_secs(20)));
    let mut watch_logs = Vec::new();
    for w in watchers {
        let (log, problems) = w.await.expect("watcher");
        report.watch += problems.len();
        report.details.extend(problems);
        watch_logs.push(log);
    }

    report.ops = ops.len() + written.len();
    report.unknown = ops.iter().filter(|o| o.completed.is_none()).count()
        + written.values().filter(|r| r.is_none()).count();
    let mut acked: Vec<Acked> = ops
        .iter()
        .filter(|o| o.client != usize::MAX && o.writes() && o.completed.is_some())
        .map(|o| Acked {
            key: o.key.clone(),
            value: match o.call {
                Call::Put(v) | Call::Cas { to: v, .. } => Some(v.to_string().into_bytes()),
                _ => None,
            },
            revision: o.revision.unwrap_or(0),
        })
        .collect();
    acked.extend(written.iter().filter_map(|(k, r)| {
        Some(Acked {
            key: k.clone(),
            value: Some(
                k.rsplit('/')
                    .next()?
                    .trim_start_matches('0')
                    .as_bytes()
                    .to_vec(),
            ),
            revision: (*r)?,
        })
    }));
    report.acked_writes = acked.len();
    report.longest_outage = longest_outage(&ops, plan.duration.as_nanos() as u64);

    let (lost, twice, problems) = history::applied_once(&written, &store, 20);
    report.lost += lost;
    report.duplicated += twice;
    report.details.extend(problems);
    match linearizable_pruned(&ops) {
        Verdict::Linearizable => {}
        Verdict::NotLinearizable(why) => {
            report.stale += 1;
            report.details.push(format!("not linearizable: {why}"));
        }
        Verdict::Inconclusive(why) => {
            report.inconclusive += 1;
            report.details.push(format!("inconclusive: {why}"));
        }
    }
    let order = history::revisions_in_real_time(&ops, 20);
    report.stale += order.len();
    report.details.extend(order);
    let watch = history::watch_log(&watch_logs, &store, revision, &acked, 20);
    report.watch += watch.len();
    report.details.extend(watch);
    if report.anomalies() > 0 {
        let kept = cluster.lock().unwrap().keep_dir();
        report
            .details
            .push(format!("member data and logs kept in {kept:?}"));
    }
    Some(report)
}

/// The longest gap between writes acknowledged to the clients, from the run's start to `end`.
fn longest_outage(ops: &[Op], end: u64) -> Duration {
    let mut acked: Vec<u64> = ops
        .iter()
        .filter(|o| o.client != usize::MAX && o.writes())
        .filter_map(|o| o.completed)
        .collect();
    acked.push(end);
    acked.sort_unstable();
    let gaps = acked
        .iter()
        .scan(0, |last, &t| Some(t - std::mem::replace(last, t)));
    Duration::from_nanos(gaps.max().unwrap_or(end))
}

/// The search, first without the writes of unknown outcome whose value nobody saw (such a
/// write may not have happened, and leaving it out keeps the search small); only if that
/// fails, on the whole history, so that leaving them out never makes a verdict.
fn linearizable_pruned(ops: &[Op]) -> Verdict {
    let observed: std::collections::HashSet<u64> = ops
        .iter()
        .flat_map(|o| {
            let seen = match o.answer {
                Answer::Value(v) | Answer::Swapped(_, v) => v,
                _ => None,
            };
            let from = match o.call {
                Call::Cas { from, .. } => Some(from),
                _ => None,
            };
            seen.into_iter().chain(from)
        })
        .collect();
    let pruned: Vec<Op> = ops
        .iter()
        .filter(|o| match (o.call, o.answer) {
            (Call::Put(v) | Call::Cas { to: v, .. }, Answer::Unknown) => observed.contains(&v),
            _ => true,
        })
        .cloned()
        .collect();
    match history::linearizable(&pruned, SEARCH_BUDGET) {
        Verdict::Linearizable => Verdict::Linearizable,
        _ => history::linearizable(ops, SEARCH_BUDGET),
    }
}

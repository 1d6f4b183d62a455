//! The node under faults, checked by a recorded history: a short run of each fault against a
//! 3-member `etcdc-node` cluster, and the same harness on real etcd, which must pass it too.
//! `scripts/soak-node.sh MINUTES` runs the long version and prints a table.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use support::nemesis::{run, Fault, Plan, Report, Server};

fn plan(faults: Vec<Fault>, seconds: u64, seed: u64) -> Plan {
    Plan {
        duration: Duration::from_secs(seconds),
        faults,
        interval: Duration::from_millis(2500),
        hot_clients: 6,
        unique_writers: 2,
        watchers: 2,
        seed,
        flags: Vec::new(),
    }
}

fn check(what: &str, r: &Report) {
    eprintln!(
        "{what}: faults {:?}, {} leader changes, {} ops, {} acknowledged writes, {} unknown; \
         lost {}, duplicated {}, stale {}, watch {}, inconclusive {}, unrecoverable {}; \
         longest outage {:.1} s",
        r.faults,
        r.leader_changes,
        r.ops,
        r.acked_writes,
        r.unknown,
        r.lost,
        r.duplicated,
        r.stale,
        r.watch,
        r.inconclusive,
        r.unrecoverable,
        r.longest_outage.as_secs_f64()
    );
    assert!(
        r.acked_writes > 100,
        "{what}: too few writes to judge: {r:?}"
    );
    assert!(!r.faults.is_empty(), "{what}: no fault was injected");
    assert_eq!(r.anomalies(), 0, "{what}: {:#?}", r.details);
}

/// One cluster at a time: four at once on two cores would turn the faults into overload.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A run of `faults` for `seconds` on a 3-member cluster of `server`, one run at a time.
fn run_alone(server: Server, bin: PathBuf, plan: Plan) -> Option<Report> {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(run(server, vec![bin], 3, plan))
}

/// A run with partitions or power losses is `None` where network namespaces or loop-mounted
/// file systems cannot be made: skipped, or a failure when `CI` is set.
fn as_root(r: Option<Report>) -> Option<Report> {
    if r.is_none() {
        let why = "network namespaces or loop mounts cannot be made here \
                   (root, iproute2 and e2fsprogs are needed)";
        assert!(std::env::var_os("CI").is_none(), "CI is set and {why}");
        eprintln!("SKIP: {why}");
    }
    r
}

fn node() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_etcdc-node"))
}

#[test]
fn node_leader_kills_stops_pauses_and_transfers() {
    let faults = vec![
        Fault::LeaderKill,
        Fault::LeaderStop,
        Fault::Pause,
        Fault::MoveLeader,
    ];
    let r = run_alone(Server::Node, node(), plan(faults, 20, 1))
        .expect("no partitions: no namespaces needed");
    check(
        "etcdc-node, leader kills, stops, pauses and move-leader",
        &r,
    );
    assert!(
        r.faults.get(&Fault::MoveLeader).is_some_and(|&n| n > 0),
        "no leader transfer succeeded: {:?}",
        r.faults
    );
}

#[test]
fn node_kill_all() {
    let r = run_alone(Server::Node, node(), plan(vec![Fault::KillAll], 15, 2))
        .expect("no partitions: no namespaces needed");
    check("etcdc-node, kill all", &r);
}

/// Partitions need network namespaces, so root (see `as_root`).
#[test]
fn node_partitions() {
    let r = run_alone(Server::Node, node(), plan(vec![Fault::Partition], 20, 4));
    if let Some(r) = as_root(r) {
        check("etcdc-node, partitions", &r);
    }
}

/// The leader, or every member at once, loses what was not synced; loop mounts need root.
#[test]
fn node_power_losses() {
    let faults = vec![Fault::PowerLoss, Fault::PowerLossAll];
    if let Some(r) = as_root(run_alone(Server::Node, node(), plan(faults, 20, 5))) {
        check("etcdc-node, power losses", &r);
    }
}

/// The negative control of the power-loss harness: a node that never syncs its log
/// (`--unsafe-no-fsync`) must be caught losing acknowledged writes when every member loses
/// power. (The kernel writes dirty pages back after 30 s; a run is shorter.)
#[test]
fn power_losses_catch_a_node_that_does_not_sync() {
    let mut p = plan(vec![Fault::PowerLossAll], 12, 6);
    p.flags = vec!["--unsafe-no-fsync".into()];
    if let Some(r) = as_root(run_alone(Server::Node, node(), p)) {
        eprintln!(
            "etcdc-node --unsafe-no-fsync, power losses: {} acknowledged, lost {}, stale {}, \
             watch {}, down {}",
            r.acked_writes, r.lost, r.stale, r.watch, r.unrecoverable
        );
        assert!(r.faults.values().sum::<usize>() > 0, "no power loss: {r:?}");
        // Lost writes, as a rule; a member that finds its log damaged and refuses to start
        // (down) is caught too.
        assert!(
            r.anomalies() > 0,
            "nothing lost without fsync: the harness keeps the page cache"
        );
    }
}

#[test]
fn etcd_passes_the_same_harness() {
    let Some(bin) = support::etcd::etcd_binary() else {
        return;
    };
    if let Some(r) = as_root(run_alone(
        Server::Etcd,
        bin,
        plan(Fault::ALL.to_vec(), 20, 3),
    )) {
        check("etcd 3.4, every fault", &r);
    }
}

//! The fault soak (not a test): runs the fault harness of `tests/support/nemesis.rs` against
//! 3-member clusters of `etcdc-node` and of real etcd, taking turns — one run of each fault
//! on each server per round — until the time is up, then prints a table. Started by
//! `scripts/soak-node.sh MINUTES`.
//!
//!   soak MINUTES NODE_BIN [ETCD_BIN] [RUN_SECONDS]
//!
//! `SOAK_FAULTS` (e.g. `"power loss,power all"`) runs only the faults it names; an empty
//! NODE_BIN runs etcd alone; NODE_BIN `A,B,C` runs member i on the (i mod n)-th of
//! the n builds named (mixed builds, as in a rolling upgrade; restarts keep each member's). `SOAK_FLAGS` (e.g. `"--snapshot-count 1000"`): more flags for
//! every member of both servers.
#![allow(dead_code)]

#[path = "../tests/support/etcd.rs"]
mod etcd;
#[path = "../tests/support/history.rs"]
mod history;
#[path = "../tests/support/nemesis.rs"]
mod nemesis;
#[path = "../tests/support/tls.rs"]
mod tls;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nemesis::{Fault, Plan, Server};

#[derive(Default)]
struct Row {
    runs: usize,
    faults: usize,
    leader_changes: usize,
    ops: usize,
    acked: usize,
    unknown: usize,
    lost: usize,
    duplicated: usize,
    stale: usize,
    watch: usize,
    inconclusive: usize,
    unrecoverable: usize,
    outages: Vec<Duration>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: soak MINUTES NODE_BIN [ETCD_BIN] [RUN_SECONDS]");
        std::process::exit(2);
    }
    let minutes: f64 = args[1].parse().expect("MINUTES");
    let bins = |s: &String| s.split(',').map(PathBuf::from).collect::<Vec<_>>();
    let node = Some(&args[2]).filter(|s| !s.is_empty()).map(bins);
    let etcd = args.get(3).filter(|s| !s.is_empty()).map(bins);
    let seconds: u64 = args.get(4).map_or(20, |s| s.parse().expect("RUN_SECONDS"));
    let end = Instant::now() + Duration::from_secs_f64(minutes * 60.0);
    let only = std::env::var("SOAK_FAULTS").ok();
    let faults: Vec<Fault> = Fault::ALL
        .into_iter()
        .filter(|f| {
            only.as_ref()
                .is_none_or(|o| o.split(',').any(|n| n.trim() == f.name()))
        })
        .collect();
    assert!(!faults.is_empty(), "SOAK_FAULTS names no fault");
    let servers: Vec<(Server, Vec<PathBuf>)> = [(Server::Node, node), (Server::Etcd, etcd)]
        .into_iter()
        .filter_map(|(s, bin)| Some((s, bin?)))
        .collect();
    assert!(!servers.is_empty(), "neither NODE_BIN nor ETCD_BIN");
    let flags: Vec<String> = std::env::var("SOAK_FLAGS")
        .unwrap_or_default()
        .split_whitespace()
        .map(String::from)
        .collect();
    let mut rows: BTreeMap<(&'static str, Fault), Row> = BTreeMap::new();
    let mut seed = 1u64;
    let mut failed = false;
    'rounds: while Instant::now() < end {
        for &fault in &faults {
            for (server, bin) in &servers {
                if Instant::now() >= end {
                    break 'rounds;
                }
                seed += 1;
                let plan = Plan {
                    duration: Duration::from_secs(seconds),
                    faults: vec![fault],
                    interval: Duration::from_millis(2500),
                    hot_clients: 6,
                    unique_writers: 2,
                    watchers: 2,
                    seed,
                    flags: flags.clone(),
                };
                let Some(r) = nemesis::run(*server, bin.clone(), 3, plan).await else {
                    eprintln!(
                        "{}: needs root (network namespaces, loop mounts): skipped",
                        fault.name()
                    );
                    continue;
                };
                let name = match server {
                    Server::Node => "etcdc-node",
                    Server::Etcd => "etcd 3.4",
                };
                eprintln!(
                    "{name:<10} {:<11} seed {seed}: {} acked, {} unknown, {} anomalies, \
                     longest outage {:.1} s",
                    fault.name(),
                    r.acked_writes,
                    r.unknown,
                    r.anomalies(),
                    r.longest_outage.as_secs_f64()
                );
                for d in &r.details {
                    eprintln!("    {d}");
                }
                failed |= r.anomalies() > 0;
                let row = rows.entry((name, fault)).or_default();
                row.runs += 1;
                row.faults += r.faults.values().sum::<usize>();
                row.leader_changes += r.leader_changes;
                row.ops += r.ops;
                row.acked += r.acked_writes;
                row.unknown += r.unknown;
                row.lost += r.lost;
                row.duplicated += r.duplicated;
                row.stale += r.stale;
                row.watch += r.watch;
                row.inconclusive += r.inconclusive;
                row.unrecoverable += r.unrecoverable;
                row.outages.push(r.longest_outage);
            }
        }
    }
    println!(
        "\n{:<10} | {:<11} | {:>4} | {:>6} | {:>7} | {:>8} | {:>8} | {:>7} | {:>4} | {:>10} | {:>5} | {:>5} | {:>12} | {:>4} | {:>13}",
        "server", "fault", "runs", "faults", "leaders", "ops", "acked", "unknown", "lost", "duplicated", "stale", "watch", "inconclusive", "down", "outage p50/max"
    );
    println!("{}", "-".repeat(151));
    for ((name, fault), r) in &rows {
        let mut o = r.outages.clone();
        o.sort_unstable();
        let outage = format!(
            "{:.1}/{:.1} s",
            o[o.len() / 2].as_secs_f64(),
            o[o.len() - 1].as_secs_f64()
        );
        println!(
            "{:<10} | {:<11} | {:>4} | {:>6} | {:>7} | {:>8} | {:>8} | {:>7} | {:>4} | {:>10} | {:>5} | {:>5} | {:>12} | {:>4} | {:>13}",
            name, fault.name(), r.runs, r.faults, r.leader_changes, r.ops, r.acked, r.unknown, r.lost, r.duplicated,
            r.stale, r.watch, r.inconclusive, r.unrecoverable, outage
        );
    }
    println!(
        "\n3 members each, loopback, {seconds} s per run, one fault every 2.5 s; \
         down: members that did not come back; outage: the longest time in a run \
         with no write acknowledged (median and worst run); {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    if failed {
        std::process::exit(1);
    }
}

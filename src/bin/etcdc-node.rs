//! `etcdc-node`: a member of etcdc's embedded store as a process, started as etcd is — the
//! same flag names, the same `ETCD_*` environment variables (a flag wins over its variable),
//! the same defaults — so scripts and systemd units written for etcd start it unchanged.
//! SIGTERM or SIGINT stops it gracefully; removed from its cluster (`member remove`), it
//! stops with a failure status, as etcd does.

use std::process::ExitCode;

use etcdc::node::flags::{parse, USAGE};
use etcdc::node::launch;

/// mimalloc rather than glibc's malloc: the node allocates on one thread and frees on
/// another all the time (requests, responses, entries), which glibc pays for in its arenas
/// (malloc and free were 14 % of the server's samples under a put load; with mimalloc the
/// server spent 2-11 % less CPU per put).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The runtime's threads (the write-ahead log has one more of its own): half the cores, one
/// on two, unless `ETCDC_NODE_THREADS` says. Measured on 2 cores shared with the clients
/// (scripts/bench-node.sh's load): one runtime thread spent 22 % less CPU per put than two
/// at 16 callers and 13 % less at 256, with more puts and reads per second, since two
/// threads mostly woke each other. One thread is tokio's current-thread scheduler on the
/// main thread: it runs woken tasks in the order they were woken (the multi-thread one runs
/// the last woken first), so the answers of a batch are all encoded before the connection
/// task writes them, in one `writev` instead of one each (a large batch's answers go in
/// chunks: `ANSWER_CHUNK` in node/member/proposal.rs, which has the figures).
fn worker_threads() -> usize {
    std::env::var("ETCDC_NODE_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| {
            let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
            (cores / 2).clamp(1, 8)
        })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match parse(&args) {
        Ok(o) => o,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("etcdc-node: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let threads = worker_threads();
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    let runtime = match builder.thread_name("etcdc-node").enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("etcdc-node: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let clients = opts.advertise_client_urls.join(",");
        let node = match launch::start(opts).await {
            Ok(n) => n,
            Err(e) => {
                eprintln!("etcdc-node: {}", e.message);
                return ExitCode::FAILURE;
            }
        };
        eprintln!(
            "etcdc-node: member {:x} ready, serving clients on {clients}",
            node.id
        );
        let (mut term, mut int) = match (
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()),
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()),
        ) {
            (Ok(t), Ok(i)) => (t, i),
            _ => {
                eprintln!("etcdc-node: cannot watch for SIGTERM/SIGINT");
                node.stop().await;
                return ExitCode::FAILURE;
            }
        };
        let member = node.member.clone();
        let removed = tokio::select! {
            _ = term.recv() => false,
            _ = int.recv() => false,
            _ = member.removed() => true,
        };
        if removed {
            // As etcd: a removed member stops (and must not be restarted on its data dir).
            eprintln!("etcdc-node: the member has been permanently removed from the cluster");
            node.stop().await;
            return ExitCode::FAILURE;
        }
        eprintln!("etcdc-node: stopping");
        node.stop().await;
        ExitCode::SUCCESS
    })
}

//! `etcdc-node`: a member of etcdc's embedded store as a process, started as etcd is — the
//! same flag names, the same `ETCD_*` environment variables (a flag wins over its variable),
//! the same defaults — so scripts and systemd units written for etcd start it unchanged.
//! SIGTERM or SIGINT stops it gracefully; removed from its cluster (`member remove`), it
//! stops with a failure status, as etcd does.

use std::process::ExitCode;

use etcdc::node::flags::{parse, version, Action, Log, USAGE};
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

/// The node's log lines (`--log-level`, `--log-outputs`): plain text, with etcd's levels.
struct Logger {
    log: Log,
    files: Vec<std::fs::File>,
}

impl Logger {
    fn open(log: Log) -> Result<Logger, String> {
        let files = log
            .outputs
            .iter()
            .filter(|o| *o != "stderr" && *o != "stdout")
            .map(|path| {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| format!("cannot open --log-outputs {path:?}: {e}"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Logger { log, files })
    }

    /// Writes `line` at `level` (0 debug, 1 info, 2 warn, 3 error) to every output.
    fn line(&mut self, level: u8, line: &str) {
        use std::io::Write;
        if level < self.log.level {
            return;
        }
        let text = format!("etcdc-node: {line}\n");
        for output in &self.log.outputs {
            match output.as_str() {
                "stderr" => eprint!("{text}"),
                "stdout" => print!("{text}"),
                _ => {}
            }
        }
        for f in &mut self.files {
            let _ = f.write_all(text.as_bytes());
        }
    }
}

/// `etcdc-node gateway start`: etcd's TCP gateway (`node::tcp_gateway`), until SIGTERM or
/// SIGINT.
fn gateway(args: &[String]) -> ExitCode {
    use etcdc::node::tcp_gateway::{bind, parse, serve, GatewayAction, USAGE};
    let o = match parse(args) {
        Ok(GatewayAction::Start(o)) => o,
        Ok(GatewayAction::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("etcdc-node gateway: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("etcdc-node gateway: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let (feed, records) = etcdc::stream::channel(256);
        etcdc::observe::set_sink(etcdc::observe::Level::Warn, Some(feed));
        tokio::spawn(async move {
            while let Some(r) = records.recv().await {
                eprintln!("etcdc-node gateway: {}", r.message);
            }
        });
        let listener = match bind(&o).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("etcdc-node gateway: {e}");
                return ExitCode::FAILURE;
            }
        };
        let (mut term, mut int) = match (
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()),
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()),
        ) {
            (Ok(t), Ok(i)) => (t, i),
            _ => {
                eprintln!("etcdc-node gateway: cannot watch for SIGTERM/SIGINT");
                return ExitCode::FAILURE;
            }
        };
        eprintln!(
            "etcdc-node gateway: ready to proxy client requests to {:?} on {}",
            o.endpoints, o.listen_addr
        );
        let stop = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        };
        serve(listener, o, stop).await;
        ExitCode::SUCCESS
    })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("gateway") => return gateway(&args[1..]),
        Some("grpc-proxy") => {
            eprintln!(
                "etcdc-node: grpc-proxy is not part of etcdc-node: run etcd's own (`etcd grpc-proxy start --endpoints=MEMBERS`), which works in front of the node, or `etcdc-node gateway start`"
            );
            return ExitCode::from(2);
        }
        _ => {}
    }
    let (opts, log, notices) = match parse(&args, &|var| std::env::var(var).ok()) {
        Ok(Action::Run {
            options,
            log,
            notices,
        }) => (*options, log, notices),
        Ok(Action::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Action::Version) => {
            println!("{}", version());
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("etcdc-node: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let mut log = match Logger::open(log) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("etcdc-node: {e}");
            return ExitCode::from(2);
        }
    };
    for notice in &notices {
        log.line(2, notice);
    }
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
            log.line(3, &format!("cannot start the runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    // What the library logs (a mirror's source unreachable, a peer refused, ...) goes to
    // the same outputs: warnings and errors, everything with --log-level debug.
    let log = std::sync::Arc::new(std::sync::Mutex::new(log));
    let (feed, records) = etcdc::stream::channel(256);
    let min = if log.lock().map_or(1, |l| l.log.level) == 0 {
        etcdc::observe::Level::Debug
    } else {
        etcdc::observe::Level::Warn
    };
    etcdc::observe::set_sink(min, Some(feed));
    let library = log.clone();
    runtime.spawn(async move {
        while let Some(r) = records.recv().await {
            let level = match r.level {
                etcdc::observe::Level::Error => 3,
                etcdc::observe::Level::Warn => 2,
                etcdc::observe::Level::Info => 1,
                etcdc::observe::Level::Debug => 0,
            };
            if let Ok(mut l) = library.lock() {
                l.line(level, &r.message);
            }
        }
    });
    let line = std::sync::Arc::new(move |level: u8, text: &str| {
        if let Ok(mut l) = log.lock() {
            l.line(level, text);
        }
    });
    runtime.block_on(async move {
        let clients = opts.advertise_client_urls.join(",");
        let node = match launch::start(opts).await {
            Ok(n) => n,
            Err(e) => {
                line(3, &e.message);
                return ExitCode::FAILURE;
            }
        };
        line(
            1,
            &format!("member {:x} ready, serving clients on {clients}", node.id),
        );
        // etcd's lines once the member has published itself through Raft (the cluster has
        // a leader and knows this member): what scripts and etcd's own e2e tests wait for.
        let (published, id, said) = (node.member.clone(), node.id, line.clone());
        tokio::spawn(async move {
            while !published.published().await {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            let cluster = published.header_now().await.cluster_id;
            said(1, "enabled capabilities for version 3.4");
            said(
                1,
                &format!("published local member {id:x} to cluster {cluster:x} through raft"),
            );
            said(1, "ready to serve client requests");
        });
        let (mut term, mut int) = match (
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()),
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()),
        ) {
            (Ok(t), Ok(i)) => (t, i),
            _ => {
                line(3, "cannot watch for SIGTERM/SIGINT");
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
            // As etcd: a removed member stops (and must not be restarted on its data dir),
            // with status 0 — etcd exits 0 once its server stops, whatever stopped it.
            line(
                3,
                "the member has been permanently removed from the cluster",
            );
            line(2, "the data-dir used by this member must be removed");
            node.stop().await;
            return ExitCode::SUCCESS;
        }
        line(1, "stopping");
        node.stop().await;
        ExitCode::SUCCESS
    })
}

//! The benchmark's baseline: a plain tonic client of etcd, with no etcdc layer in between.
//! Prints one row like bench/bench.c: `IMPL OP CALLERS OPS QPS P50_US P99_US ERRORS
//! CPU_US_PER_OP`. Puts write 64-byte values (`BENCH_VALUE_BYTES` sets another size, and
//! then also the size of the value `range` reads). `watch`: the callers put while
//! `BENCH_WATCHERS` watches (default 1) over `BENCH_WATCH_STREAMS` streams (default 1)
//! watch their prefix; each event delivered is a sample of put → event latency.
//! `BENCH_RATE`: each caller sends at most that many requests per second. `BENCH_KEYS`:
//! each caller puts over that many keys of its own (default 1000).
//!
//! `tonic`: every caller is a tokio task (async Rust). `tonic-threads`: every caller is an OS
//! thread that blocks on each call, as a C program calling any blocking client library must;
//! the difference between the two is the cost of that threading model, not of etcdc.
//!
//! Usage: tonic_baseline tasks|threads put|range|srange|watch|badauth CALLERS SECONDS ENDPOINT
//! (`badauth`: authenticate as `app` with a wrong password, a flood of bcrypt checks.)
//!
//! An `https://` ENDPOINT: TLS with `$BENCH_TLS_DIR/ca.pem` and the client certificate
//! `$BENCH_TLS_DIR/app.pem` (scripts/make-certs.sh's names). `BENCH_USER=name:password`:
//! authenticate once and send the token on every request, as etcd's clients do.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcdc::kv::prefix_end;
use etcdc::pb::etcdserverpb::kv_client::KvClient;
use etcdc::pb::etcdserverpb::watch_client::WatchClient;
use etcdc::pb::etcdserverpb::watch_request::RequestUnion;
use etcdc::pb::etcdserverpb::*;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

type Samples = Arc<Mutex<Vec<u64>>>;

/// Stamps the auth token (if any) on every request.
#[derive(Clone)]
struct Token(Option<tonic::metadata::AsciiMetadataValue>);

impl tonic::service::Interceptor for Token {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(t) = &self.0 {
            r.metadata_mut().insert("token", t.clone());
        }
        Ok(r)
    }
}

type Ch = InterceptedService<Channel, Token>;

/// The channel to `endpoint`, with TLS for https, and the token of `$BENCH_USER`.
async fn connect(endpoint: &str) -> Result<Ch, Box<dyn std::error::Error>> {
    let mut ep = Channel::from_shared(endpoint.to_string())?;
    if endpoint.starts_with("https://") {
        let dir = std::path::PathBuf::from(std::env::var("BENCH_TLS_DIR")?);
        let pem = |f: &str| std::fs::read(dir.join(f));
        ep = ep.tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(pem("ca.pem")?))
                .identity(Identity::from_pem(pem("app.pem")?, pem("app-key.pem")?)),
        )?;
    }
    let channel = ep.connect().await?;
    let token = match std::env::var("BENCH_USER") {
        Ok(user) => {
            let (name, password) = user.split_once(':').ok_or("BENCH_USER is name:password")?;
            let resp = etcdc::pb::etcdserverpb::auth_client::AuthClient::new(channel.clone())
                .authenticate(AuthenticateRequest {
                    name: name.into(),
                    password: password.into(),
                })
                .await?;
            Some(resp.into_inner().token.parse()?)
        }
        Err(_) => None,
    };
    Ok(InterceptedService::new(channel, Token(token)))
}

struct Caller {
    kv: KvClient<Ch>,
    auth: etcdc::pb::etcdserverpb::auth_client::AuthClient<Ch>,
    op: String,
    id: usize,
    i: u64,
    origin: Instant,
    value_len: usize,
    /// Each caller puts over this many keys of its own, in turn.
    keys: u64,
}

impl Caller {
    /// One request; true on success.
    async fn call(&mut self) -> bool {
        if self.op == "badauth" {
            // A wrong password: the answer must be etcd's refusal.
            self.i += 1;
            let req = AuthenticateRequest {
                name: "app".into(),
                password: "wrong".into(),
            };
            return matches!(self.auth.authenticate(req).await, Err(s) if s.message().contains("authentication failed"));
        }
        if self.op == "range" || self.op == "srange" {
            let req = RangeRequest {
                key: b"bench/range".to_vec(),
                serializable: self.op == "srange",
                ..Default::default()
            };
            return self.kv.range(req).await.is_ok();
        }
        let key = format!("bench/{}/{}", self.id, self.i % self.keys).into_bytes();
        self.i += 1;
        let mut value = format!("{:020}", self.origin.elapsed().as_nanos()).into_bytes();
        value.resize(self.value_len.max(20), b'x');
        let req = PutRequest {
            key,
            value,
            ..Default::default()
        };
        self.kv.put(req).await.is_ok()
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, mode, op, callers, seconds, endpoint] = &args[..] else {
        return Err(
            "usage: tonic_baseline tasks|threads put|range|srange|watch|badauth CALLERS SECONDS ENDPOINT"
                .into(),
        );
    };
    let threads = mode == "threads";
    let (callers, seconds) = (callers.parse::<usize>()?, seconds.parse::<u64>()?);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let channel = rt.block_on(connect(endpoint))?;
    let mut kv = KvClient::new(channel.clone());
    let value_len = std::env::var("BENCH_VALUE_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    // The key ranges read: 16 bytes, or BENCH_VALUE_BYTES when that is set.
    let range_value = match std::env::var("BENCH_VALUE_BYTES") {
        Ok(_) => vec![b'v'; value_len],
        Err(_) => b"0123456789abcdef".to_vec(),
    };
    rt.block_on(kv.put(PutRequest {
        key: b"bench/range".to_vec(),
        value: range_value,
        ..Default::default()
    }))?;
    let origin = Instant::now();
    let samples: Samples = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let recording = Arc::new(AtomicBool::new(false));
    let record = {
        let (samples, recording) = (samples.clone(), recording.clone());
        move |ns: u64| {
            if recording.load(Ordering::Relaxed) {
                samples.lock().unwrap_or_else(|p| p.into_inner()).push(ns);
            }
        }
    };

    // `watch`: BENCH_WATCHERS watches on the callers' prefix (default 1), spread over
    // BENCH_WATCH_STREAMS streams (default 1); every event delivered is a sample (the time
    // from its put's send), so QPS is events delivered per second. Each stream records into
    // its own vector, so that 10,000 watchers do not queue on one lock.
    let mut stream_samples: Vec<Samples> = Vec::new();
    if op == "watch" {
        let env = |name: &str| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse::<usize>().ok())
        };
        let watchers = env("BENCH_WATCHERS").unwrap_or(1).max(1);
        let streams = env("BENCH_WATCH_STREAMS").unwrap_or(1).clamp(1, watchers);
        let mut created = Vec::new();
        for s in 0..streams {
            let n = watchers / streams + usize::from(s < watchers % streams);
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            for _ in 0..n {
                tx.send(WatchRequest {
                    request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                        key: b"bench/".to_vec(),
                        range_end: prefix_end(b"bench/"),
                        ..Default::default()
                    })),
                })?;
            }
            let mut stream = rt
                .block_on(
                    WatchClient::new(channel.clone())
                        .watch(tokio_stream::wrappers::UnboundedReceiverStream::new(rx)),
                )?
                .into_inner();
            let mine = Samples::default();
            stream_samples.push(mine.clone());
            let recording = recording.clone();
            let (done, all_created) = tokio::sync::oneshot::channel();
            created.push(all_created);
            rt.spawn(async move {
                let _keep_open = tx;
                let (mut pending, mut done) = (n, Some(done));
                while let Ok(Some(resp)) = stream.message().await {
                    if resp.created {
                        pending -= 1;
                        if pending == 0 {
                            done.take().map(|d| d.send(()));
                        }
                    }
                    if !recording.load(Ordering::Relaxed) {
                        continue;
                    }
                    let now = origin.elapsed().as_nanos() as u64;
                    let mut mine = mine.lock().unwrap_or_else(|p| p.into_inner());
                    for ev in resp.events {
                        let v = ev.kv.map(|kv| kv.value).unwrap_or_default();
                        let sent = std::str::from_utf8(&v[..20.min(v.len())])
                            .ok()
                            .and_then(|s| s.parse::<u64>().ok());
                        if let Some(sent) = sent {
                            mine.push(now.saturating_sub(sent));
                        }
                    }
                }
            });
        }
        for c in created {
            rt.block_on(async { tokio::time::timeout(Duration::from_secs(30), c).await })
                .map_err(|_| "the watches were not all created within 30 s")??;
        }
    }

    let keys = std::env::var("BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|k| *k > 0)
        .unwrap_or(1000);
    // With BENCH_PUTS_PER_CALLER, each caller stops after that many puts (a fixed workload,
    // the same for every server; `seconds` is then an upper bound).
    let limit = std::env::var("BENCH_PUTS_PER_CALLER")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(u64::MAX);
    let measure = op != "watch";
    // With BENCH_RATE, each caller sends at most that many requests per second (tasks only).
    let pace = std::env::var("BENCH_RATE")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .filter(|r| *r > 0)
        .map(|r| Duration::from_secs(1) / r);
    let mut task_handles = Vec::new();
    let mut thread_handles = Vec::new();
    for id in 0..callers {
        let mut caller = Caller {
            kv: KvClient::new(channel.clone()),
            auth: etcdc::pb::etcdserverpb::auth_client::AuthClient::new(channel.clone()),
            op: op.clone(),
            id,
            i: 0,
            origin,
            value_len,
            keys,
        };
        let (stop, record) = (stop.clone(), record.clone());
        if threads {
            let handle = rt.handle().clone();
            thread_handles.push(std::thread::spawn(move || {
                let mut errors = 0u64;
                while !stop.load(Ordering::Relaxed) && caller.i < limit {
                    let t0 = Instant::now();
                    if !handle.block_on(caller.call()) {
                        errors += 1;
                    } else if measure {
                        record(t0.elapsed().as_nanos() as u64);
                    }
                }
                errors
            }));
        } else {
            task_handles.push(rt.spawn(async move {
                let mut errors = 0u64;
                let (started, mut sent) = (tokio::time::Instant::now(), 0u32);
                while !stop.load(Ordering::Relaxed) && caller.i < limit {
                    if let Some(every) = pace {
                        tokio::time::sleep_until(started + every * sent).await;
                        sent += 1;
                    }
                    let t0 = Instant::now();
                    if !caller.call().await {
                        errors += 1;
                    } else if measure {
                        record(t0.elapsed().as_nanos() as u64);
                    }
                }
                errors
            }));
        }
    }
    std::thread::sleep(Duration::from_secs(1));
    recording.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    let cpu0 = cpu_us();
    let until = t0 + Duration::from_secs(seconds);
    while Instant::now() < until
        && !(task_handles.iter().all(|t| t.is_finished())
            && thread_handles.iter().all(|t| t.is_finished()))
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    recording.store(false, Ordering::Relaxed);
    let cpu = cpu_us() - cpu0;
    let elapsed = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut errors = 0;
    for t in task_handles {
        errors += rt.block_on(t).unwrap_or(0);
    }
    for t in thread_handles {
        errors += t.join().unwrap_or(0);
    }
    let mut all = std::mem::take(&mut *samples.lock().unwrap_or_else(|p| p.into_inner()));
    for mine in &stream_samples {
        all.append(&mut mine.lock().unwrap_or_else(|p| p.into_inner()));
    }
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64) * p) as usize)
            .map_or(0.0, |&ns| ns as f64 / 1e3)
    };
    let name = if threads { "tonic-threads" } else { "tonic" };
    println!(
        "{name} {op} {callers} {} {:.0} {:.0} {:.0} {errors} {:.1}",
        all.len(),
        all.len() as f64 / elapsed,
        pct(0.5),
        pct(0.99),
        if all.is_empty() {
            0.0
        } else {
            cpu / all.len() as f64
        }
    );
    Ok(())
}

/// CPU time this process has used, user + system, in microseconds.
fn cpu_us() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let u = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    };
    let us = |t: libc::timeval| t.tv_sec as f64 * 1e6 + t.tv_usec as f64;
    us(u.ru_utime) + us(u.ru_stime)
}

//! The benchmark's baseline: a plain tonic client of etcd, with no etcdc layer in between.
//! Prints one row like bench/bench.c: `tonic OP CALLERS OPS QPS P50_US P99_US ERRORS`.
//! Usage: cargo run --release --example tonic_baseline -- put|range|watch CALLERS SECONDS ENDPOINT

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcdc::api::prefix_end;
use etcdc::pb::etcdserverpb::kv_client::KvClient;
use etcdc::pb::etcdserverpb::watch_client::WatchClient;
use etcdc::pb::etcdserverpb::watch_request::RequestUnion;
use etcdc::pb::etcdserverpb::*;
use tonic::transport::Channel;

fn stamp(start: Instant) -> Vec<u8> {
    let mut v = format!("{:020}", start.elapsed().as_nanos()).into_bytes();
    v.resize(64, b'x');
    v
}

#[tokio::main(worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, op, callers, seconds, endpoint] = &args[..] else {
        return Err("usage: tonic_baseline put|range|watch CALLERS SECONDS ENDPOINT".into());
    };
    let (op, callers, seconds) = (
        op.clone(),
        callers.parse::<usize>()?,
        seconds.parse::<u64>()?,
    );
    let channel = Channel::from_shared(endpoint.clone())?.connect().await?;
    let mut kv = KvClient::new(channel.clone());
    kv.put(PutRequest {
        key: b"bench/range".to_vec(),
        value: b"0123456789abcdef".to_vec(),
        ..Default::default()
    })
    .await?;
    let origin = Instant::now();
    let latencies: Arc<Mutex<Vec<u64>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let recording = Arc::new(AtomicBool::new(false));

    if op == "watch" {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tx.send(WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                key: b"bench/".to_vec(),
                range_end: prefix_end(b"bench/"),
                ..Default::default()
            })),
        })?;
        let mut stream = WatchClient::new(channel.clone())
            .watch(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
            .await?
            .into_inner();
        let (lat, rec) = (latencies.clone(), recording.clone());
        tokio::spawn(async move {
            let _keep = tx;
            while let Ok(Some(resp)) = stream.message().await {
                let now = origin.elapsed().as_nanos() as u64;
                if !rec.load(Ordering::Relaxed) {
                    continue;
                }
                let mut l = lat.lock().unwrap_or_else(|p| p.into_inner());
                for ev in resp.events {
                    let v = ev.kv.map(|kv| kv.value).unwrap_or_default();
                    if let Some(sent) = std::str::from_utf8(&v[..20.min(v.len())])
                        .ok()
                        .and_then(|s| s.parse::<u64>().ok())
                    {
                        l.push(now.saturating_sub(sent));
                    }
                }
            }
        });
    }

    let mut tasks = Vec::new();
    for id in 0..callers {
        let (mut kv, op, lat, stop, rec) = (
            KvClient::new(channel.clone()),
            op.clone(),
            latencies.clone(),
            stop.clone(),
            recording.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut errors = 0u64;
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                let ok = if op == "range" {
                    kv.range(RangeRequest {
                        key: b"bench/range".to_vec(),
                        ..Default::default()
                    })
                    .await
                    .is_ok()
                } else {
                    let key = format!("bench/{id}/{}", i % 1000).into_bytes();
                    i += 1;
                    kv.put(PutRequest {
                        key,
                        value: stamp(origin),
                        ..Default::default()
                    })
                    .await
                    .is_ok()
                };
                if !ok {
                    errors += 1;
                    continue;
                }
                if op != "watch" && rec.load(Ordering::Relaxed) {
                    lat.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(t0.elapsed().as_nanos() as u64);
                }
            }
            errors
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    recording.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    recording.store(false, Ordering::Relaxed);
    let elapsed = t0.elapsed().as_secs_f64();
    let mut all = std::mem::take(&mut *latencies.lock().unwrap_or_else(|p| p.into_inner()));
    stop.store(true, Ordering::Relaxed);
    let mut errors = 0;
    for t in tasks {
        errors += t.await.unwrap_or(0);
    }
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64) * p) as usize)
            .map_or(0.0, |&ns| ns as f64 / 1e3)
    };
    println!(
        "tonic {op} {callers} {} {:.0} {:.0} {:.0} {errors}",
        all.len(),
        all.len() as f64 / elapsed,
        pct(0.5),
        pct(0.99)
    );
    Ok(())
}

//! A slow consumer costs bounded memory and misses nothing: a watch whose callback sleeps on
//! every event under 10,000 writes of 16 KiB. With an unbounded queue the backlog alone would
//! hold most of the 160 MB written; here the watch pauses when its queue is full and resumes
//! from history. Its own binary, so the process's peak RSS is this test's alone.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcdc::api::WatchUpdate;
use etcdc::kv::prefix_end;
use etcdc::pb::etcdserverpb::{PutRequest, WatchCreateRequest};
use etcdc::stream::{self, Delivery};
use support::dl;

const WRITES: usize = 10_000;
const WRITERS: usize = 16;
const VALUE: usize = 16 * 1024;

/// (current RSS, peak RSS) of this process in kB.
fn rss_kb() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sleeping_callback_costs_bounded_memory_and_gets_every_event_once() {
    let Some(target) = support::remote_etcd() else {
        return;
    };
    let e = target.etcd;
    let seen: Arc<Mutex<Vec<i64>>> = Arc::default();
    let failed: Arc<Mutex<Option<String>>> = Arc::default();
    let (s, f) = (seen.clone(), failed.clone());
    let handler: stream::Handler<WatchUpdate> = Box::new(move |d| match d {
        Delivery::Item(WatchUpdate::Events { events, .. }) => {
            for ev in &events {
                std::thread::sleep(Duration::from_micros(500));
                s.lock().unwrap().push(ev.kv.as_ref().unwrap().mod_revision);
            }
        }
        Delivery::Item(WatchUpdate::Progress { .. }) => {}
        Delivery::Item(other) => *f.lock().unwrap() = Some(format!("{other:?}")),
        Delivery::Failed(err) => *f.lock().unwrap() = Some(err.message),
    });
    let (feed, updates) = stream::with_handler(64, handler).unwrap();
    let _watch = e
        .watch(
            WatchCreateRequest {
                key: "/bp/".into(),
                range_end: prefix_end(b"/bp/"),
                ..Default::default()
            },
            feed,
            dl(),
        )
        .await
        .unwrap();

    let (rss_before, _) = rss_kb();
    let value = vec![b'v'; VALUE];
    // Whether the watch ever had to stop for the callback (sampled while the writers run; a
    // pause lasts until half the queue is drained, many sampling periods).
    let updates = Arc::new(updates);
    let ever_behind = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (updates, ever_behind) = (updates.clone(), ever_behind.clone());
        tokio::spawn(async move {
            loop {
                if updates.is_behind() {
                    ever_behind.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (e, value) = (e.clone(), value.clone());
            tokio::spawn(async move {
                let mut revs = Vec::new();
                for i in 0..WRITES / WRITERS {
                    let req = PutRequest {
                        key: format!("/bp/{w}/{i}").into_bytes(),
                        value: value.clone(),
                        ..Default::default()
                    };
                    revs.push(e.put(req, dl()).await.unwrap().header.unwrap().revision);
                }
                revs
            })
        })
        .collect();
    let mut written = Vec::new();
    for w in writers {
        written.extend(w.await.unwrap());
    }
    written.sort_unstable();

    let until = Instant::now() + Duration::from_secs(120);
    while seen.lock().unwrap().len() < WRITES {
        assert!(failed.lock().unwrap().is_none(), "{failed:?}");
        assert!(
            Instant::now() < until,
            "only {} events in 120 s",
            seen.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sampler.abort();
    let (_, peak) = rss_kb();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen, written, "every event exactly once, in revision order");
    assert!(
        ever_behind.load(std::sync::atomic::Ordering::Relaxed),
        "the callback never fell behind: the test proves nothing"
    );
    let growth_mb = peak.saturating_sub(rss_before) / 1024;
    eprintln!(
        "rss before {} MB, peak {} MB, growth {growth_mb} MB",
        rss_before / 1024,
        peak / 1024
    );
    // 64 queued responses of about 64 KiB each, plus the transport's buffers; the data
    // written is 160 MB.
    assert!(growth_mb < 40, "peak RSS grew by {growth_mb} MB");
}

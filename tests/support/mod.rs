#![allow(dead_code)]
pub mod etcd;
pub mod etcdctl;
pub mod history;
pub mod mvcc;
pub mod nemesis;
pub mod node;
pub mod process;
pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use etcdc::api::{deadline_in, Deadline};
use etcdc::pb::etcdserverpb::{PutRequest, RangeRequest};
use etcdc::remote::{parse_endpoints, Remote, RemoteConfig};
use etcdc::Etcd;

pub fn dl() -> Deadline {
    deadline_in(Duration::from_secs(10))
}

/// A plain put of `value` at `key`.
pub fn put(key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> PutRequest {
    PutRequest {
        key: key.as_ref().to_vec(),
        value: value.as_ref().to_vec(),
        ..Default::default()
    }
}

/// How many keys start with `prefix` (-1 when the read fails: a test waiting for a count
/// polls through a member's restart).
pub async fn count(e: &dyn Etcd, prefix: &str, serializable: bool) -> i64 {
    e.range(
        RangeRequest {
            key: prefix.as_bytes().to_vec(),
            range_end: etcdc::kv::prefix_end(prefix.as_bytes()),
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

/// Puts `value` at `key` and returns the revision it was written at.
pub async fn put_rev(e: &dyn Etcd, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> i64 {
    e.put(put(key, value), dl())
        .await
        .expect("put")
        .header
        .expect("header")
        .revision
}

/// Waits (at most 5 s) for the watch's next events, which must be at revision `rev`.
pub async fn next_event_at(w: &mut etcdc::api::Watcher, rev: i64) {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), w.updates.recv())
            .await
            .expect("the event within 5 s")
        {
            Some(etcdc::api::WatchUpdate::Events { events, .. }) => {
                assert_eq!(events[0].kv.as_ref().unwrap().mod_revision, rev);
                return;
            }
            Some(_) => continue,
            None => panic!("the watch ended"),
        }
    }
}

/// A backend under test and whatever keeps it running.
pub struct Target {
    pub etcd: Arc<dyn Etcd>,
    pub cluster: Option<etcd::Cluster>,
    /// Anything else the backend needs alive (an embedded cluster, its data dirs).
    pub keep: Option<Box<dyn std::any::Any + Send + Sync>>,
}

pub fn remote(endpoints: &str) -> Arc<dyn Etcd> {
    Arc::new(
        Remote::new(RemoteConfig {
            endpoints: parse_endpoints(endpoints).expect("endpoints"),
            connect_timeout: Duration::from_secs(1),
            ..Default::default()
        })
        .expect("remote client"),
    )
}

/// The remote client against one real etcd member.
pub fn remote_etcd() -> Option<Target> {
    remote_etcd_with(&[])
}

pub fn remote_etcd_with(extra: &[&str]) -> Option<Target> {
    let cluster = etcd::Cluster::start_with(1, extra)?;
    Some(Target {
        etcd: remote(&cluster.endpoints()),
        cluster: Some(cluster),
        keep: None,
    })
}

/// The remote client against a real 3-member etcd cluster, all members as endpoints.
pub fn remote_etcd_cluster() -> Option<Target> {
    let cluster = etcd::Cluster::start(3)?;
    Some(Target {
        etcd: remote(&cluster.endpoints()),
        cluster: Some(cluster),
        keep: None,
    })
}

/// `s` in base64 (etcd's JSON for bytes).
pub fn base64(s: &str) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = c
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &x)| n | u32::from(x) << (16 - 8 * i));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The bytes of base64 text.
pub fn unbase64(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let digits: Vec<u8> = s.bytes().filter(|&c| c != b'=').map(val).collect();
    digits
        .chunks(4)
        .flat_map(|c| {
            let n = c.iter().fold(0u32, |n, &d| n << 6 | u32::from(d)) << (6 * (4 - c.len()));
            n.to_be_bytes()[1..c.len()].to_vec()
        })
        .collect()
}

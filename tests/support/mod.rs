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

//! etcd's `--experimental-initial-corrupt-check`: before a member serves clients, it compares
//! etcd's hash of its store (HashKV at its current revision) with the hash each peer it can
//! reach gives for the same revision, and refuses to start when a peer with the same
//! compaction has another hash. As etcd's check, it is best effort: a peer that does not
//! answer (down, behind that revision, or on a TLS client URL this check does not dial) is
//! skipped with a warning.

use std::time::Duration;

use super::member::Member;
use crate::error::{Error, ErrorKind, Result};
use crate::observe::{log, Level};
use crate::pb::etcdserverpb::maintenance_client::MaintenanceClient;
use crate::pb::etcdserverpb::{HashKvRequest, HashKvResponse};

pub async fn initial_check(member: &Member, id: u64) -> Result<()> {
    let local = member.hash_kv(0).await?;
    let revision = local.hash_revision;
    for (peer, urls) in member.peer_client_urls().await {
        let Some(url) = urls.iter().find(|u| u.starts_with("http://")) else {
            log(Level::Warn, || {
                format!("initial corruption check: peer {peer:x} has no plain client URL; skipped")
            });
            continue;
        };
        let theirs = match peer_hash(url, revision).await {
            Ok(h) => h,
            Err(e) => {
                log(Level::Warn, || {
                    format!("initial corruption check: cannot fetch the hash of peer {peer:x} at revision {revision}: {e}")
                });
                continue;
            }
        };
        if theirs.compact_revision == local.compact_revision && theirs.hash != local.hash {
            return Err(Error::new(
                ErrorKind::DataLoss,
                format!(
                    "found data inconsistency with peers: member {id:x} has hash {} at revision {revision}, peer {peer:x} has {}",
                    local.hash, theirs.hash
                ),
            ));
        }
    }
    Ok(())
}

async fn peer_hash(url: &str, revision: i64) -> std::result::Result<HashKvResponse, String> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_string())
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(2))
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    MaintenanceClient::new(channel)
        .hash_kv(HashKvRequest { revision })
        .await
        .map(|r| r.into_inner())
        .map_err(|s| s.message().to_string())
}

//! A cluster that mirrors a running etcd cluster, at the same revisions, until it is
//! promoted: how a chat system moves from its etcd onto an embedded cluster with its
//! clients' watches intact (docs/migrating-from-etcd.md).
//!
//! Every member starts from one snapshot of the source (`--restore-snapshot FILE
//! --mirror-from URLS`): the store at the source's revisions, marked as a mirror
//! (`Mvcc::mirror`, replicated like the rest of the store). The leader then follows the
//! source's watch of every key from its own revision + 1 and proposes each source revision
//! as one `Command::Mirror`, applied at exactly that revision (`Mvcc::mirrored`: a revision
//! already applied is skipped, so a new leader may resume from wherever the store is).
//! Meanwhile clients read but cannot write (`read_only`), and leases do not expire here:
//! the source expires them, and its deletions arrive as events. `Command::Promote` ends it
//! (`POST /etcdc/promote`, after the source's writers stopped and the mirror caught up):
//! writes go on from the next revision, each lease's clock starting with its full TTL.
//!
//! A source with TLS client certificates or authentication is reached with each member's
//! `--mirror-cacert`, `--mirror-cert`, `--mirror-key`, `--mirror-user` (`SourceAccess`):
//! flags, not store, so that no secret is replicated or lands in a snapshot.

use std::sync::Arc;
use std::time::Duration;

use super::member::Member;
use crate::api::{deadline_in, Etcd, WatchUpdate};
use crate::error::{Error, ErrorKind, Result};
use crate::observe::{log, Level};
use crate::pb::etcdserverpb::{LeaseTimeToLiveRequest, WatchCreateRequest};
use crate::pb::mvccpb::{event::EventType, Event};

/// What a mirror answers a client's write.
pub(crate) fn read_only(source: &str) -> Error {
    Error::new(
        ErrorKind::FailedPrecondition,
        format!(
            "etcdserver: this member mirrors {source} and takes no writes until it is promoted (POST /etcdc/promote)"
        ),
    )
}

/// How this member reaches the source: TLS (CAs, a client certificate) and a user, when
/// the source asks for them. Every member needs the same, as any may lead.
#[derive(Clone, Debug, Default)]
pub struct SourceAccess {
    pub tls: Option<crate::tls::ClientTls>,
    pub credentials: Option<crate::remote::Credentials>,
}

/// A client of the source cluster.
fn source_client(member: &Member, source: &str) -> Result<crate::remote::Remote> {
    let access = member.mirror_access();
    crate::remote::Remote::new(crate::remote::RemoteConfig {
        endpoints: crate::remote::parse_endpoints(source)?,
        tls: access.tls.clone(),
        credentials: access.credentials.clone(),
        ..Default::default()
    })
}

/// Mirrors the source while `member` leads and its store is a mirror, until the store is
/// promoted or `stop` resolves. Every member runs it; only the leader follows the source.
pub async fn run(member: Arc<Member>, id: u64, stop: impl std::future::Future<Output = ()>) {
    tokio::pin!(stop);
    loop {
        let Some(source) = member.mirror_source().await else {
            return;
        };
        if member.leader() == Some(id) {
            tokio::select! {
                _ = &mut stop => return,
                followed = follow(&member, id, &source) => if let Err(e) = followed {
                    log(Level::Warn, || format!("mirror of {source}: {}", e.message));
                },
            }
        }
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// Follows the source's watch from this store's revision + 1 while this member leads and
/// the store mirrors.
async fn follow(member: &Member, id: u64, source: &str) -> Result<()> {
    let client = source_client(member, source)?;
    let from = member.header_now().await.revision + 1;
    let all = WatchCreateRequest {
        key: vec![0],
        range_end: vec![0],
        start_revision: from,
        ..Default::default()
    };
    let watch = client
        .watcher(all, deadline_in(Duration::from_secs(10)))
        .await?;
    loop {
        if member.leader() != Some(id) || member.mirror_source().await.is_none() {
            return Ok(());
        }
        let update = match tokio::time::timeout(Duration::from_secs(1), watch.updates.recv()).await
        {
            Err(_) => continue,
            Ok(None) => return Err(Error::new(ErrorKind::Closed, "the watch ended")),
            Ok(Some(update)) => update,
        };
        let events = match update {
            WatchUpdate::Events { events, .. } => events,
            WatchUpdate::Progress { .. } => continue,
            WatchUpdate::Compacted {
                compact_revision, ..
            } => {
                return Err(Error::new(
                    ErrorKind::DataLoss,
                    format!(
                        "the source compacted revision {compact_revision} before the mirror read it: start the mirror again from a new snapshot"
                    ),
                ))
            }
            WatchUpdate::Canceled { reason } => {
                return Err(Error::new(ErrorKind::Unavailable, reason))
            }
        };
        for revision in by_revision(events) {
            let leases = leases_of(member, &client, &revision).await?;
            let at = revision[0].kv.as_ref().map_or(0, |kv| kv.mod_revision);
            member
                .mirror_revision(at, &revision, leases, deadline_in(Duration::from_secs(10)))
                .await?;
        }
    }
}

/// The events of one watch update, one list per revision, in order.
fn by_revision(events: Vec<Event>) -> Vec<Vec<Event>> {
    let mut out: Vec<Vec<Event>> = Vec::new();
    for e in events {
        let rev = e.kv.as_ref().map_or(0, |kv| kv.mod_revision);
        match out.last_mut() {
            Some(last) if last[0].kv.as_ref().map_or(0, |kv| kv.mod_revision) == rev => {
                last.push(e)
            }
            _ => out.push(vec![e]),
        }
    }
    out
}

/// The leases the puts of `revision` name that the store does not have yet, with their
/// TTLs from the source (a lease already gone there gets 1 s: its keys' deletions follow).
async fn leases_of(
    member: &Member,
    client: &crate::remote::Remote,
    revision: &[Event],
) -> Result<Vec<(i64, i64)>> {
    let mut ids: Vec<i64> = revision
        .iter()
        .filter(|e| e.r#type == EventType::Put as i32)
        .filter_map(|e| e.kv.as_ref().map(|kv| kv.lease))
        .filter(|&l| l != 0)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let mut out = Vec::new();
    for id in member.unknown_leases(&ids).await {
        let ttl = client
            .lease_time_to_live(
                LeaseTimeToLiveRequest { id, keys: false },
                deadline_in(Duration::from_secs(10)),
            )
            .await?
            .granted_ttl;
        out.push((id, ttl.max(1)));
    }
    Ok(out)
}

/// `POST /etcdc/promote`: waits (10 s at most) until the store has every revision the
/// source has now — when the source still answers — then promotes. The answer is JSON:
/// the revision the cluster goes on from.
pub async fn promote(member: &Member) -> Result<i64> {
    let Some(source) = member.mirror_source().await else {
        return Err(Error::new(
            ErrorKind::FailedPrecondition,
            "etcdserver: this member is not a mirror",
        ));
    };
    let deadline = deadline_in(Duration::from_secs(10));
    let target = match source_client(member, &source)?.status(None, deadline).await {
        Ok(s) => s.header.map_or(0, |h| h.revision),
        // The source is gone (the operator stopped it first): promote what the mirror has.
        Err(_) => 0,
    };
    loop {
        let now = member.header_now().await.revision;
        if now >= target {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::new(
                ErrorKind::Timeout,
                format!("the mirror is at revision {now}, its source at {target}: promote again once it caught up"),
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    member.promote(deadline).await
}

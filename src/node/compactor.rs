//! etcd's automatic compaction (`--auto-compaction-mode`, `--auto-compaction-retention`),
//! run by the leader as etcd's v3compactor runs it: `periodic` keeps a time span of history
//! (it samples the revision every tenth of the span, at most every 6 minutes, and compacts
//! to the revision of one span ago: first after one span, then every span, at most every
//! hour); `revision` keeps the last N revisions (checked every 5 minutes).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::member::Member;
use crate::api::{deadline_in, Etcd};
use crate::error::ErrorKind;
use crate::pb::etcdserverpb::CompactionRequest;

/// How much history the leader keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AutoCompaction {
    /// etcd's `periodic` mode: this much time of history.
    Periodic(Duration),
    /// etcd's `revision` mode: this many revisions.
    Revisions(i64),
}

/// How often the revision mode looks (etcd's `revInterval`).
const REVISION_CHECK: Duration = Duration::from_secs(5 * 60);

impl AutoCompaction {
    /// etcd's flags: a retention of a whole number is hours (periodic) or revisions
    /// (revision), else a duration (`30m`, periodic only); 0 is off (None).
    pub fn parse(mode: &str, retention: &str) -> Result<Option<AutoCompaction>, String> {
        let whole: Option<u64> = retention.parse().ok();
        let policy = match mode {
            "periodic" => {
                let span = match whole {
                    Some(hours) => Duration::from_secs(hours.saturating_mul(3600)),
                    None => super::flags::go_duration(retention).ok_or_else(|| {
                        format!(
                            "--auto-compaction-retention is hours or a duration such as 30m, not {retention:?}"
                        )
                    })?,
                };
                (!span.is_zero()).then_some(AutoCompaction::Periodic(span))
            }
            "revision" => {
                let n = whole.ok_or_else(|| {
                    format!("--auto-compaction-retention is a number of revisions in revision mode, not {retention:?}")
                })?;
                (n > 0).then_some(AutoCompaction::Revisions(n.min(i64::MAX as u64) as i64))
            }
            _ => {
                return Err(format!(
                    "--auto-compaction-mode is periodic or revision, not {mode:?}"
                ))
            }
        };
        Ok(policy)
    }
}

/// Runs `policy` for `member` until `stop` resolves. Only the leader compacts; a member that
/// is not the leader keeps sampling, so it is ready when it becomes one.
pub async fn run(
    member: Arc<Member>,
    id: u64,
    policy: AutoCompaction,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    let revision = || async { member.header_now().await.revision };
    let compact = |revision: i64| {
        let member = member.clone();
        async move {
            let req = CompactionRequest {
                revision,
                physical: false,
            };
            match member
                .compact(req, deadline_in(Duration::from_secs(10)))
                .await
            {
                // Compacted already (by an operator, or by the last leader) is done too.
                Ok(_) => true,
                Err(e) => e.kind == ErrorKind::Compacted,
            }
        }
    };
    let leading = || member.leader() == Some(id);
    match policy {
        AutoCompaction::Periodic(span) => {
            let every = span.min(Duration::from_secs(3600));
            let sample = every / 10;
            let samples = (span.as_secs_f64() / sample.as_secs_f64()) as usize + 1;
            let mut revs = VecDeque::new();
            let mut last = Instant::now();
            let mut wait = span;
            loop {
                revs.push_back(revision().await);
                if revs.len() > samples {
                    revs.pop_front();
                }
                tokio::select! {
                    _ = &mut stop => return,
                    _ = tokio::time::sleep(sample) => {}
                }
                if !leading() || last.elapsed() < wait {
                    continue;
                }
                wait = every;
                if compact(revs[0]).await {
                    last = Instant::now();
                }
            }
        }
        AutoCompaction::Revisions(keep) => {
            let mut done = 0;
            loop {
                tokio::select! {
                    _ = &mut stop => return,
                    _ = tokio::time::sleep(REVISION_CHECK) => {}
                }
                let target = revision().await - keep;
                if !leading() || target <= 0 || target == done {
                    continue;
                }
                if compact(target).await {
                    done = target;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_as_etcd_reads_it() {
        let p = AutoCompaction::parse;
        assert_eq!(
            p("periodic", "1"),
            Ok(Some(AutoCompaction::Periodic(Duration::from_secs(3600))))
        );
        assert_eq!(
            p("periodic", "90m"),
            Ok(Some(AutoCompaction::Periodic(Duration::from_secs(5400))))
        );
        assert_eq!(p("periodic", "0"), Ok(None));
        assert_eq!(
            p("revision", "1000"),
            Ok(Some(AutoCompaction::Revisions(1000)))
        );
        assert!(p("revision", "1h").is_err());
        assert!(p("hourly", "1").is_err());
    }
}

//! A lease keeper: the set of leases one consumer keeps alive, all reporting into one stream.
//! A lease reported LOST is no longer kept, so it can be added again (after granting it
//! anew): the building block of sessions and registrations.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::api::{Etcd, KeepAliveGuard, LeaseUpdate};
use crate::error::{Error, ErrorKind, Result};
use crate::stream::Feed;

/// A lease TTL (seconds) as a span of time for timers: a negative one as zero, and at most a
/// year — a server may grant any TTL (etcd's go up to 9e9 s), which `Instant` arithmetic
/// would not survive.
pub(crate) fn ttl_duration(secs: i64) -> Duration {
    Duration::from_secs(secs.clamp(0, 365 * 24 * 3600) as u64)
}

pub struct LeaseKeeper {
    etcd: Arc<dyn Etcd>,
    updates: Feed<LeaseUpdate>,
    kept: Mutex<HashMap<i64, Box<dyn KeepAliveGuard>>>,
}

impl LeaseKeeper {
    pub fn new(etcd: Arc<dyn Etcd>, updates: Feed<LeaseUpdate>) -> Self {
        LeaseKeeper {
            etcd,
            updates,
            kept: Mutex::new(HashMap::new()),
        }
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Box<dyn KeepAliveGuard>>> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts keeping `id`; a no-op while it is kept, a fresh start once it was lost.
    pub fn add(&self, id: i64) -> Result<()> {
        let mut kept = self.kept();
        if kept.get(&id).is_some_and(|g| !g.is_lost()) {
            return Ok(());
        }
        let guard = self.etcd.keep_alive(id, self.updates.clone())?;
        kept.insert(id, guard);
        Ok(())
    }

    /// Stops keeping `id` (it is not revoked). `NotFound` if it is not kept (or was lost).
    pub fn remove(&self, id: i64) -> Result<()> {
        match self.kept().remove(&id) {
            Some(g) if !g.is_lost() => Ok(()),
            _ => Err(Error::new(
                ErrorKind::NotFound,
                format!("the keeper does not keep lease {id}"),
            )),
        }
    }
}

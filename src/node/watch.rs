//! The node's watches. Every member keeps its own: the state machine hands the events of
//! each applied batch to `Hub::notify` (under the store's write lock, so in revision order),
//! which queues them straight into each matching watcher's `Feed` — no task or queue in
//! between. A watcher whose consumer is full stops taking events ("unsynced") and is caught
//! up from the store's history from its first undelivered revision once the consumer has
//! drained half its queue; if that revision was compacted meanwhile it gets `Compacted`.
//! A watch created at an old revision starts unsynced and catches up the same way. Memory
//! per watcher is its consumer's bounded queue, whatever the write rate.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use tokio::sync::RwLock;

use super::mvcc::Mvcc;
use crate::api::{event_rev, pieces, WatchControl, WatchUpdate, PIECE_EVENTS};
use crate::error::{Error, ErrorKind, Result};
use crate::kv::KeyRange;
use crate::pb::etcdserverpb::watch_create_request::FilterType;
use crate::pb::etcdserverpb::{ResponseHeader, WatchCreateRequest};
use crate::pb::mvccpb::event::EventType;
use crate::pb::mvccpb::Event;
use crate::stream::{Feed, SendError};

struct HubWatch {
    key: Vec<u8>,
    /// etcd's range end: empty for one key, "\0" for every key from `key` on.
    end: Vec<u8>,
    no_put: bool,
    no_delete: bool,
    prev_kv: bool,
    /// The first revision not delivered yet.
    next_rev: i64,
    /// Takes events as they are applied; false while the consumer is full or catching up.
    synced: bool,
    feed: Feed<WatchUpdate>,
}

impl HubWatch {
    fn wants(&self, e: &Event) -> bool {
        let Some(kv) = &e.kv else {
            return false;
        };
        let key = kv.key.as_slice();
        let in_range = KeyRange::new(&self.key, &self.end).contains(key);
        let filtered = if e.r#type == EventType::Delete as i32 {
            self.no_delete
        } else {
            self.no_put
        };
        in_range && !filtered && kv.mod_revision >= self.next_rev
    }

    fn copy(&self, e: &Event) -> Event {
        Event {
            r#type: e.r#type,
            kv: e.kv.clone(),
            prev_kv: if self.prev_kv {
                e.prev_kv.clone()
            } else {
                None
            },
        }
    }
}

/// Who the member is, for response headers.
struct Identity {
    cluster_id: u64,
    member_id: u64,
    /// The member's current Raft term.
    term: Box<dyn Fn() -> u64 + Send + Sync>,
}

/// A member's watchers.
#[derive(Default)]
pub struct Hub {
    watchers: Mutex<HashMap<u64, HubWatch>>,
    next_id: AtomicU64,
    /// The store's revision as of the last apply, for progress answers.
    revision: AtomicI64,
    identity: OnceLock<Identity>,
}

impl Hub {
    /// Names the member in the headers of what its watches deliver.
    pub(crate) fn set_identity(
        &self,
        cluster_id: u64,
        member_id: u64,
        term: impl Fn() -> u64 + Send + Sync + 'static,
    ) {
        let _ = self.identity.set(Identity {
            cluster_id,
            member_id,
            term: Box::new(term),
        });
    }

    fn header(&self, revision: i64) -> ResponseHeader {
        match self.identity.get() {
            Some(i) => ResponseHeader {
                cluster_id: i.cluster_id,
                member_id: i.member_id,
                revision,
                raft_term: (i.term)(),
            },
            None => ResponseHeader {
                revision,
                ..Default::default()
            },
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, HubWatch>> {
        self.watchers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands the events of one applied batch to the synced watchers that want them;
    /// `revision` is the store's revision after it. Called under the store's write lock.
    pub(crate) fn notify(&self, events: &[Event], revision: i64) {
        self.revision.store(revision, Ordering::Release);
        let mut watchers = self.lock();
        if watchers.is_empty() {
            return;
        }
        let header = self.header(revision);
        watchers.retain(|_, w| {
            if !w.synced {
                return true;
            }
            let mine: Vec<Event> = events
                .iter()
                .filter(|e| w.wants(e))
                .map(|e| w.copy(e))
                .collect();
            let mut live = true;
            if !mine.is_empty() {
                for piece in pieces(mine) {
                    let first = piece.first().map_or(revision, event_rev);
                    match w.feed.try_send(WatchUpdate::Events {
                        header,
                        events: piece,
                    }) {
                        Ok(()) => {}
                        Err(SendError::Full(_)) => {
                            // Resumed from history at `first` when the consumer has room.
                            w.synced = false;
                            w.next_rev = first;
                            return true;
                        }
                        Err(SendError::Closed(_)) => {
                            live = false;
                            break;
                        }
                    }
                }
            }
            w.next_rev = w.next_rev.max(revision + 1);
            live && !w.feed.is_closed()
        });
    }

    /// Registers a watch on `mvcc` (read-locked by the caller, so no apply runs meanwhile)
    /// as `id` and delivers what it has from history. Returns the store's revision.
    pub(crate) fn create(
        &self,
        mvcc: &Mvcc,
        id: u64,
        req: &WatchCreateRequest,
        feed: Feed<WatchUpdate>,
    ) -> Result<i64> {
        if req.start_revision < 0 {
            return Err(Error::invalid("watch start revision must not be negative"));
        }
        let revision = mvcc.revision();
        self.revision.store(revision, Ordering::Release);
        // As etcd: an empty key is "\0", the smallest key.
        let key = if req.key.is_empty() {
            vec![0]
        } else {
            req.key.clone()
        };
        let w = HubWatch {
            key,
            end: req.range_end.clone(),
            no_put: req.filters.contains(&(FilterType::Noput as i32)),
            no_delete: req.filters.contains(&(FilterType::Nodelete as i32)),
            prev_kv: req.prev_kv,
            next_rev: if req.start_revision == 0 {
                revision + 1
            } else {
                req.start_revision
            },
            synced: false,
            feed,
        };
        let mut watchers = self.lock();
        watchers.insert(id, w);
        self.catch_up(&mut watchers, mvcc, id);
        Ok(revision)
    }

    /// Delivers watcher `id`'s events from history until it is current (then it is synced)
    /// or its consumer is full (then it waits for room).
    fn catch_up(&self, watchers: &mut HashMap<u64, HubWatch>, mvcc: &Mvcc, id: u64) {
        let Some(w) = watchers.get_mut(&id) else {
            return;
        };
        let current = mvcc.revision();
        let header = self.header(current);
        let end = loop {
            if w.next_rev > current {
                w.synced = true;
                return;
            }
            // etcd: a watch may start at the compaction revision, not below it.
            if w.next_rev < mvcc.oldest_readable() {
                break Some(WatchUpdate::Compacted {
                    header,
                    compact_revision: mvcc.compact_revision(),
                });
            }
            let batch = match mvcc.history(&w.key, &w.end, w.next_rev, PIECE_EVENTS) {
                Ok(batch) => batch,
                Err(e) => {
                    break Some(WatchUpdate::Canceled {
                        reason: e.message.to_string(),
                    })
                }
            };
            let Some(last) = batch.last().map(event_rev) else {
                w.next_rev = current + 1;
                continue;
            };
            let events: Vec<Event> = batch
                .iter()
                .filter(|e| w.wants(e))
                .map(|e| w.copy(e))
                .collect();
            if !events.is_empty() {
                match w.feed.try_send(WatchUpdate::Events { header, events }) {
                    Ok(()) => {}
                    Err(SendError::Full(_)) => return,
                    Err(SendError::Closed(_)) => break None,
                }
            }
            w.next_rev = last + 1;
        };
        if let Some(w) = watchers.remove(&id) {
            w.feed.finish(end);
        }
    }

    /// After a snapshot replaced the store: every watcher catches up from the new history.
    pub(crate) fn restored(&self, mvcc: &Mvcc) {
        self.revision.store(mvcc.revision(), Ordering::Release);
        let mut watchers = self.lock();
        let ids: Vec<u64> = watchers.keys().copied().collect();
        for id in ids {
            if let Some(w) = watchers.get_mut(&id) {
                w.synced = false;
            }
            self.catch_up(&mut watchers, mvcc, id);
        }
    }

    fn resume(&self, mvcc: &Mvcc, id: u64) {
        let mut watchers = self.lock();
        if watchers.get(&id).is_some_and(|w| !w.synced) {
            self.catch_up(&mut watchers, mvcc, id);
        }
    }

    fn cancel(&self, id: u64) {
        self.lock().remove(&id);
    }

    fn progress(&self, id: u64) {
        let header = self.header(self.revision.load(Ordering::Acquire));
        if let Some(w) = self.lock().get(&id).filter(|w| w.synced) {
            let _ = w.feed.try_send(WatchUpdate::Progress { header });
        }
    }

    /// Ends every watch: the member is stopping.
    pub(crate) fn close(&self) {
        for (_, w) in self.lock().drain() {
            w.feed
                .fail(Error::new(ErrorKind::Closed, "the member stopped"));
        }
    }
}

/// Starts a watch on a member's store (`state`, the state machine's, holds it). Returns its
/// control and the store's revision when it was registered (etcd's `created` header: a
/// watch from 0 starts right after it).
pub(crate) async fn start<S: AsRef<Mvcc> + Send + Sync + 'static>(
    hub: &Arc<Hub>,
    state: &Arc<RwLock<S>>,
    req: &WatchCreateRequest,
    feed: Feed<WatchUpdate>,
) -> Result<(Box<dyn WatchControl>, i64)> {
    let id = hub.next_id.fetch_add(1, Ordering::Relaxed);
    let (weak_hub, weak_state) = (Arc::downgrade(hub), Arc::downgrade(state));
    let runtime = tokio::runtime::Handle::current();
    // Called on the consumer's thread when it has drained half its queue.
    feed.on_room(move || {
        let (hub, state) = (weak_hub.clone(), weak_state.clone());
        runtime.spawn(async move {
            if let (Some(hub), Some(state)) = (hub.upgrade(), state.upgrade()) {
                hub.resume(state.read().await.as_ref(), id);
            }
        });
    });
    let revision = hub.create(state.read().await.as_ref(), id, req, feed)?;
    Ok((
        Box::new(Control {
            hub: Arc::downgrade(hub),
            id,
        }),
        revision,
    ))
}

struct Control {
    hub: Weak<Hub>,
    id: u64,
}

impl WatchControl for Control {
    fn request_progress(&self) {
        if let Some(hub) = self.hub.upgrade() {
            hub.progress(self.id);
        }
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        if let Some(hub) = self.hub.upgrade() {
            hub.cancel(self.id);
        }
    }
}

//! Service registration: `<dir>/<instance id>` holding Go `naming/endpoints`' value
//! `{"Op":0,"Addr":"host:port","Metadata":...}` (so a Go gRPC client resolves it with
//! `etcd:///<dir>`) under a lease kept alive at a third of its TTL. When the lease is lost —
//! expired during a partition, revoked, the cluster restored from scratch — the instance
//! registers again by itself under a new lease and says so. A live instance holding the same
//! id is reported, never overwritten.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::session::Session;
use super::{created_at, delete_op, get_op, leased_by, put_op, range_at};
use crate::api::{deadline_in, Deadline, Etcd, LeaseState, LeaseUpdate};
use crate::error::{Error, ErrorKind, Result};
use crate::pb::etcdserverpb::{LeaseRevokeRequest, TxnRequest};
use crate::stream::{self, Feed};

/// What to register.
#[derive(Clone, Debug)]
pub struct Spec {
    /// The service directory, e.g. `/login_servers`.
    pub dir: String,
    /// The instance id, e.g. `0001-0001`: one path segment.
    pub id: String,
    /// Where clients reach it, `host:port`.
    pub addr: String,
    /// Any JSON (a `weight` number in an object is what weighted picks use); None: `null`.
    pub metadata: Option<String>,
    /// Lease TTL in seconds: how soon a dead instance disappears.
    pub ttl: i64,
}

/// A registration's state changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegState {
    /// Written under a live lease (first, and again after a loss).
    Registered,
    /// The keep-alive lost its member; refreshing resumes through another one.
    Reconnecting,
    /// The lease is gone (the reason says why) and the key with it: registering again.
    Lost,
    /// Registering again found another live instance under the id: retrying until it is
    /// gone.
    Conflict,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegUpdate {
    pub state: RegState,
    /// The lease the key is (or was) under.
    pub lease: i64,
    pub reason: String,
}

/// The key of an instance: `<dir>/<id>`.
pub fn instance_key(dir: &str, id: &str) -> String {
    format!("{}/{id}", dir.trim_end_matches('/'))
}

/// Go `naming/endpoints`' value for an address and metadata.
pub fn endpoint_value(addr: &str, metadata: Option<&str>) -> String {
    format!(
        "{{\"Op\":0,\"Addr\":{},\"Metadata\":{}}}",
        serde_json::Value::String(addr.to_string()),
        metadata.unwrap_or("null")
    )
}

fn check_metadata(metadata: Option<&str>) -> Result<()> {
    if let Some(m) = metadata {
        serde_json::from_str::<serde_json::Value>(m)
            .map_err(|e| Error::invalid(format!("metadata is not JSON: {e}")))?;
    }
    Ok(())
}

struct Shared {
    etcd: Arc<dyn Etcd>,
    spec: Spec,
    key: Vec<u8>,
    metadata: Mutex<Option<String>>,
    /// The lease the key is under now (0 while re-registering).
    lease: std::sync::atomic::AtomicI64,
    updates: Feed<RegUpdate>,
}

impl Shared {
    fn value(&self) -> Vec<u8> {
        let metadata = self.metadata.lock().unwrap_or_else(|p| p.into_inner());
        endpoint_value(&self.spec.addr, metadata.as_deref()).into_bytes()
    }

    fn report(&self, state: RegState, lease: i64, reason: impl Into<String>) {
        let update = RegUpdate {
            state,
            lease,
            reason: reason.into(),
        };
        // Registered and Lost must not be lost; the others may wait for room.
        if matches!(state, RegState::Registered | RegState::Lost) {
            self.updates.send_anyway(update);
        } else {
            let _ = self.updates.try_send(update);
        }
    }

    /// One registration: a new session, then the key written unless another live
    /// instance holds it. `previous` is our own earlier lease, whose key (if the cluster
    /// still has it) is ours to take over.
    async fn register(
        &self,
        previous: i64,
        keep: Feed<LeaseUpdate>,
        deadline: Deadline,
    ) -> Result<Session> {
        let session = Session::new(self.etcd.clone(), self.spec.ttl, keep, deadline).await?;
        let lease = session.lease();
        let value = self.value();
        let resp = self
            .etcd
            .txn(
                TxnRequest {
                    compare: vec![created_at(&self.key, 0)],
                    success: vec![put_op(&self.key, &value, lease)],
                    failure: vec![get_op(&self.key)],
                },
                deadline,
            )
            .await;
        let taken_over = match resp {
            Ok(r) if r.succeeded => true,
            Ok(r) => {
                let holder = range_at(&r, 0)
                    .and_then(|r| r.kvs.first())
                    .map_or(0, |kv| kv.lease);
                if previous != 0 && holder == previous {
                    self.etcd
                        .txn(
                            TxnRequest {
                                compare: vec![leased_by(&self.key, previous)],
                                success: vec![put_op(&self.key, &value, lease)],
                                failure: vec![],
                            },
                            deadline,
                        )
                        .await
                        .map(|r| r.succeeded)
                        .unwrap_or(false)
                } else {
                    let _ = session.close(deadline).await;
                    return Err(Error::new(
                        ErrorKind::FailedPrecondition,
                        format!(
                            "{} is registered by another live instance (lease {holder:x}); \
                             the id frees when that instance unregisters or its lease expires",
                            String::from_utf8_lossy(&self.key)
                        ),
                    ));
                }
            }
            Err(e) => {
                let _ = session.close(deadline).await;
                return Err(e);
            }
        };
        if !taken_over {
            let _ = session.close(deadline).await;
            return Err(Error::new(
                ErrorKind::Unavailable,
                "the key changed while registering; retrying",
            ));
        }
        self.lease
            .store(lease, std::sync::atomic::Ordering::Release);
        Ok(session)
    }
}

/// A live registration. Dropping it stops refreshing (the key goes when the lease
/// expires); `unregister` deletes it at once.
pub struct Registration {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

/// How long one registration attempt may take before the next is tried.
const ATTEMPT: Duration = Duration::from_secs(5);

impl Registration {
    /// Registers `spec` and keeps it registered, reporting state changes to `updates`
    /// (the first is `Registered`).
    pub async fn start(
        etcd: Arc<dyn Etcd>,
        spec: Spec,
        updates: Feed<RegUpdate>,
        deadline: Deadline,
    ) -> Result<Registration> {
        if spec.dir.trim_end_matches('/').is_empty() {
            return Err(Error::invalid("the service directory is empty"));
        }
        if spec.id.is_empty() || spec.id.contains('/') {
            return Err(Error::invalid(format!(
                "the instance id {:?} must be one non-empty path segment (no '/')",
                spec.id
            )));
        }
        if spec.addr.is_empty() {
            return Err(Error::invalid("the address is empty"));
        }
        if spec.ttl <= 0 {
            return Err(Error::invalid(format!(
                "the registration TTL must be positive, got {} s",
                spec.ttl
            )));
        }
        check_metadata(spec.metadata.as_deref())?;
        let shared = Arc::new(Shared {
            etcd,
            key: instance_key(&spec.dir, &spec.id).into_bytes(),
            metadata: Mutex::new(spec.metadata.clone()),
            spec,
            lease: Default::default(),
            updates,
        });
        let (keep, states) = stream::channel(16);
        let session = shared.register(0, keep, deadline).await?;
        shared.report(RegState::Registered, session.lease(), "");
        let task = tokio::spawn(keep_registered(shared.clone(), session, states));
        Ok(Registration { shared, task })
    }

    /// The key, `<dir>/<id>`.
    pub fn key(&self) -> &[u8] {
        &self.shared.key
    }

    /// The lease the key is under now; 0 while registering again.
    pub fn lease(&self) -> i64 {
        self.shared.lease.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Replaces the metadata in place (same key, same lease). While re-registering it is
    /// kept for the next write and `Unavailable` says so.
    pub async fn set_metadata(&self, metadata: Option<String>, deadline: Deadline) -> Result<()> {
        check_metadata(metadata.as_deref())?;
        *self
            .shared
            .metadata
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = metadata;
        let lease = self.lease();
        let resp = self
            .shared
            .etcd
            .txn(
                TxnRequest {
                    compare: vec![leased_by(&self.shared.key, lease)],
                    success: vec![put_op(&self.shared.key, &self.shared.value(), lease)],
                    failure: vec![],
                },
                deadline,
            )
            .await?;
        if lease == 0 || !resp.succeeded {
            return Err(Error::new(
                ErrorKind::Unavailable,
                "not registered right now (registering again): the metadata goes with it",
            ));
        }
        Ok(())
    }

    /// Deletes the key and revokes its lease.
    pub async fn unregister(self, deadline: Deadline) -> Result<()> {
        self.task.abort();
        let lease = self.lease();
        if lease == 0 {
            return Ok(());
        }
        let deleted = self
            .shared
            .etcd
            .txn(
                TxnRequest {
                    compare: vec![leased_by(&self.shared.key, lease)],
                    success: vec![delete_op(&self.shared.key)],
                    failure: vec![],
                },
                deadline,
            )
            .await;
        let revoked = self
            .shared
            .etcd
            .lease_revoke(LeaseRevokeRequest { id: lease }, deadline)
            .await;
        deleted?;
        match revoked {
            Err(e) if e.kind != ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Follows the session's lease; on a loss, registers again until it succeeds.
async fn keep_registered(
    shared: Arc<Shared>,
    mut session: Session,
    mut states: stream::Stream<LeaseUpdate>,
) {
    let mut last = LeaseState::Alive;
    loop {
        let Some(update) = states.recv().await else {
            return;
        };
        match update.state {
            LeaseState::Alive if last != LeaseState::Alive => {
                shared.report(RegState::Registered, session.lease(), "");
            }
            LeaseState::Alive => {}
            LeaseState::Reconnecting => {
                shared.report(RegState::Reconnecting, session.lease(), &update.reason);
            }
            LeaseState::Lost => {
                let old = session.lease();
                shared.lease.store(0, std::sync::atomic::Ordering::Release);
                shared.report(RegState::Lost, old, &update.reason);
                let mut conflict = String::new();
                loop {
                    let (keep, next) = stream::channel(16);
                    match shared.register(old, keep, deadline_in(ATTEMPT)).await {
                        Ok(s) => {
                            session = s;
                            states = next;
                            shared.report(RegState::Registered, session.lease(), "");
                            break;
                        }
                        Err(e) => {
                            if e.kind == ErrorKind::FailedPrecondition && e.message != conflict {
                                shared.report(RegState::Conflict, 0, &e.message);
                                conflict = e.message;
                            }
                            crate::runtime::sleep(Duration::from_millis(500)).await;
                        }
                    }
                }
                last = LeaseState::Alive;
                continue;
            }
        }
        last = update.state;
    }
}

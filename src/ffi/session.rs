//! Sessions — Go's `concurrency.Session`: a lease kept alive that mutexes and elections
//! belong to and are lost with.

use std::ffi::{c_int, c_void};
use std::sync::Arc;

use super::client::{etcdc_client, Client, CLIENTS};
use super::completion::{etcdc_cq, etcdc_op, next_async};
use super::guard::{arg, guard, out, value};
use super::handle::Table;
use super::lease::{etcdc_lease_callback, etcdc_lease_event};
use super::status::etcdc_status;
use super::stream::{self, CCallback, StreamHandle};
use crate::api::LeaseUpdate;
use crate::error::{Error, ErrorKind, Result};
use crate::recipes::session::Session;

/// A lease kept alive for mutexes and elections (Go's `concurrency.Session`). Free with
/// `etcdc_session_free`.
pub struct etcdc_session {
    _opaque: [u8; 0],
}

/// The session behind a handle: revoked when dropped (Go's `Close`).
pub(crate) struct Held {
    session: Option<Session>,
    client: Arc<Client>,
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            let deadline = crate::api::deadline_in(self.client.timeout);
            let _ = self.client.block(s.close(deadline));
        }
    }
}

pub(crate) static SESSIONS: Table<StreamHandle<LeaseUpdate, Held>> = Table::new(7, "session");

/// Starts a session: a new lease of `ttl_seconds` (0: Go's default, 60 s) refreshed at a
/// third of its TTL. Its state changes (`etcdc_lease_event`, as a lease keeper's) go to
/// `callback->call` on etcdc's event thread, or with a NULL `callback` queue for
/// `etcdc_session_next` / `_fd`; LOST means every lock and leadership of the session is
/// gone. A TTL under the cluster's minimum is `ETCDC_ERR_INVALID_ARGUMENT`.
#[no_mangle]
pub extern "C" fn etcdc_session_start(
    client: *const etcdc_client,
    ttl_seconds: i64,
    callback: *const etcdc_lease_callback,
    session_out: *mut *mut etcdc_session,
) -> etcdc_status {
    let cb = arg(callback, "callback")
        .ok()
        .map(|cb| CCallback::new(cb.call, cb.drop, cb.user_data));
    guard(|| {
        let out = out(session_out, "session_out")?;
        let c = CLIENTS.get(client)?;
        let (feed, stream) = stream::open::<LeaseUpdate, etcdc_lease_event>(cb, 64)?;
        let deadline = c.deadline(0)?;
        let session = c.block(Session::new(c.etcd.clone(), ttl_seconds, feed, deadline))?;
        out.write(SESSIONS.insert(StreamHandle::new(
            stream,
            Held {
                session: Some(session),
                client: c,
            },
        )));
        Ok(())
    })
}

/// The session's lease id; 0 for a bad handle.
#[no_mangle]
pub extern "C" fn etcdc_session_lease(s: *const etcdc_session) -> i64 {
    value(0, || {
        SESSIONS
            .get(s)
            .and_then(|h| h.with_source(|h| Ok(h.session.as_ref().map_or(0, |s| s.lease()))))
            .unwrap_or(0)
    })
}

/// Pull form: the next state change of the session's lease, waiting up to `timeout_ms` (0:
/// no wait; negative: no limit). Free it with `etcdc_lease_event_free`.
#[no_mangle]
pub extern "C" fn etcdc_session_next(
    s: *const etcdc_session,
    timeout_ms: i64,
    event_out: *mut *mut etcdc_lease_event,
) -> etcdc_status {
    stream::next(&SESSIONS, s, timeout_ms, event_out)
}

/// `etcdc_session_next`, asynchronously (see `etcdc_watch_next_async`):
/// `etcdc_completion_lease_event`.
#[no_mangle]
pub extern "C" fn etcdc_session_next_async(
    session: *const etcdc_session,
    cq: *const etcdc_cq,
    tag: *mut c_void,
    op_out: *mut *mut etcdc_op,
) -> etcdc_status {
    next_async::<etcdc_lease_event, _, _, _>(&SESSIONS, session, cq, tag, op_out)
}

/// Pull form: a descriptor readable while a state change is waiting.
#[no_mangle]
pub extern "C" fn etcdc_session_fd(s: *const etcdc_session, fd_out: *mut c_int) -> etcdc_status {
    stream::fd(&SESSIONS, s, fd_out)
}

/// Ends the session: revokes its lease (its locks and leadership go at once) and frees it,
/// with the same callback rules as `etcdc_watch_free`. Free its mutexes and elections first.
/// NULL does nothing.
#[no_mangle]
pub extern "C" fn etcdc_session_free(s: *mut etcdc_session) -> etcdc_status {
    stream::free(&SESSIONS, s)
}

/// The client and lease of a live session.
pub(crate) fn session_of(s: *const etcdc_session) -> Result<(Arc<Client>, i64)> {
    SESSIONS.get(s)?.with_source(|h| {
        let lease = h
            .session
            .as_ref()
            .map(|s| s.lease())
            .ok_or_else(|| Error::new(ErrorKind::Closed, "the session is being freed"))?;
        Ok((h.client.clone(), lease))
    })
}

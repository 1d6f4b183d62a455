//! Cluster: members and endpoint status.

use std::ffi::{c_char, c_void, CString};
use std::future::Future;
use std::sync::Arc;

use super::client::{etcdc_client, launch, wait, Client, CLIENTS};
use super::completion::{etcdc_completion, etcdc_cq, etcdc_op, result};
use super::guard::{cstring, field, free_box, guard, opt_c_str, out};
use super::record::{etcdc_header, header};
use super::status::etcdc_status;
use crate::api::Etcd;
use crate::error::Result;

struct MemberInfo {
    id: u64,
    name: CString,
    peer_urls: Vec<CString>,
    client_urls: Vec<CString>,
    learner: bool,
}

/// The cluster's members. Free with `etcdc_member_list_free`.
pub struct etcdc_member_list {
    header: etcdc_header,
    members: Vec<MemberInfo>,
}

/// Lists the cluster's members.
#[no_mangle]
pub extern "C" fn etcdc_cluster_members(
    client: *const etcdc_client,
    timeout_ms: i64,
    list_out: *mut *mut etcdc_member_list,
) -> etcdc_status {
    guard(|| {
        let out = out(list_out, "list_out")?;
        let list = wait(client, |c, etcd| members_call(c, etcd, timeout_ms))?;
        out.write(Box::into_raw(Box::new(list)));
        Ok(())
    })
}

/// A member list: the deadline now, the call when awaited.
fn members_call(
    c: &Client,
    etcd: Arc<dyn Etcd>,
    timeout_ms: i64,
) -> Result<impl Future<Output = Result<etcdc_member_list>>> {
    let deadline = c.deadline(timeout_ms)?;
    Ok(async move { Ok(etcd.member_list(deadline).await?.into()) })
}

/// `etcdc_cluster_members`, asynchronously (see `etcdc_put_async`):
/// `etcdc_completion_member_list`.
#[no_mangle]
pub extern "C" fn etcdc_cluster_members_async(
    client: *const etcdc_client,
    timeout_ms: i64,
    cq: *const etcdc_cq,
    tag: *mut c_void,
    op_out: *mut *mut etcdc_op,
) -> etcdc_status {
    launch(client, cq, tag, op_out, |c, etcd| {
        members_call(c, etcd, timeout_ms)
    })
}

impl From<crate::pb::etcdserverpb::MemberListResponse> for etcdc_member_list {
    fn from(resp: crate::pb::etcdserverpb::MemberListResponse) -> Self {
        let members = resp
            .members
            .into_iter()
            .map(|m| MemberInfo {
                id: m.id,
                name: cstring(&m.name),
                peer_urls: m.peer_ur_ls.iter().map(|u| cstring(u)).collect(),
                client_urls: m.client_ur_ls.iter().map(|u| cstring(u)).collect(),
                learner: m.is_learner,
            })
            .collect();
        etcdc_member_list {
            header: header(resp.header),
            members,
        }
    }
}

/// Frees a member list. NULL does nothing.
#[no_mangle]
pub extern "C" fn etcdc_member_list_free(list: *mut etcdc_member_list) {
    free_box(list)
}

/// Reads the `i`-th member of a list; `default` when out of range.
fn member<R: Copy>(
    list: *const etcdc_member_list,
    i: usize,
    default: R,
    read: impl FnOnce(&MemberInfo) -> R,
) -> R {
    field(list, default, |l| l.members.get(i).map_or(default, read))
}

/// The response header, borrowed.
#[no_mangle]
pub extern "C" fn etcdc_member_list_header(list: *const etcdc_member_list) -> *const etcdc_header {
    field(list, std::ptr::null(), |l| &l.header)
}

/// How many members there are.
#[no_mangle]
pub extern "C" fn etcdc_member_list_len(list: *const etcdc_member_list) -> usize {
    field(list, 0, |l| l.members.len())
}

/// The `i`-th member's id; 0 when out of range.
#[no_mangle]
pub extern "C" fn etcdc_member_list_id(list: *const etcdc_member_list, i: usize) -> u64 {
    member(list, i, 0, |m| m.id)
}

/// The `i`-th member's name ("" for a member added but not started yet); NULL when out of
/// range. Borrowed from the list.
#[no_mangle]
pub extern "C" fn etcdc_member_list_name(
    list: *const etcdc_member_list,
    i: usize,
) -> *const c_char {
    member(list, i, std::ptr::null(), |m| m.name.as_ptr())
}

/// True if the `i`-th member is a learner (a non-voting member catching up).
#[no_mangle]
pub extern "C" fn etcdc_member_list_is_learner(list: *const etcdc_member_list, i: usize) -> bool {
    member(list, i, false, |m| m.learner)
}

/// How many client URLs the `i`-th member has.
#[no_mangle]
pub extern "C" fn etcdc_member_list_client_urls_len(
    list: *const etcdc_member_list,
    i: usize,
) -> usize {
    member(list, i, 0, |m| m.client_urls.len())
}

/// The `j`-th client URL of the `i`-th member; NULL when out of range.
#[no_mangle]
pub extern "C" fn etcdc_member_list_client_url(
    list: *const etcdc_member_list,
    i: usize,
    j: usize,
) -> *const c_char {
    member(list, i, std::ptr::null(), |m| {
        m.client_urls
            .get(j)
            .map_or(std::ptr::null(), |u| u.as_ptr())
    })
}

/// How many peer URLs the `i`-th member has.
#[no_mangle]
pub extern "C" fn etcdc_member_list_peer_urls_len(
    list: *const etcdc_member_list,
    i: usize,
) -> usize {
    member(list, i, 0, |m| m.peer_urls.len())
}

/// The `j`-th peer URL of the `i`-th member; NULL when out of range.
#[no_mangle]
pub extern "C" fn etcdc_member_list_peer_url(
    list: *const etcdc_member_list,
    i: usize,
    j: usize,
) -> *const c_char {
    member(list, i, std::ptr::null(), |m| {
        m.peer_urls.get(j).map_or(std::ptr::null(), |u| u.as_ptr())
    })
}

/// One member's status. Free with `etcdc_endpoint_status_free`.
pub struct etcdc_endpoint_status {
    header: etcdc_header,
    version: CString,
    db_size: i64,
    db_size_in_use: i64,
    leader: u64,
    raft_index: u64,
    raft_term: u64,
    raft_applied_index: u64,
    learner: bool,
}

/// The status of the member at `endpoint` (one of the client's endpoints, as given to
/// `etcdc_client_connect`), or of any member when `endpoint` is NULL.
#[no_mangle]
pub extern "C" fn etcdc_endpoint_status_get(
    client: *const etcdc_client,
    endpoint: *const c_char,
    timeout_ms: i64,
    status_out: *mut *mut etcdc_endpoint_status,
) -> etcdc_status {
    guard(|| {
        let c = CLIENTS.get(client)?;
        let out = out(status_out, "status_out")?;
        let endpoint = opt_c_str(endpoint, "endpoint")?;
        let deadline = c.deadline(timeout_ms)?;
        let s = c.block(c.etcd.status(endpoint, deadline))?;
        out.write(Box::into_raw(Box::new(s.into())));
        Ok(())
    })
}

/// `etcdc_endpoint_status_get` for any member, asynchronously (see `etcdc_put_async`):
/// `etcdc_completion_endpoint_status`.
#[no_mangle]
pub extern "C" fn etcdc_endpoint_status_async(
    client: *const etcdc_client,
    timeout_ms: i64,
    cq: *const etcdc_cq,
    tag: *mut c_void,
    op_out: *mut *mut etcdc_op,
) -> etcdc_status {
    launch(client, cq, tag, op_out, |c, etcd| {
        let deadline = c.deadline(timeout_ms)?;
        Ok(async move {
            Ok(etcdc_endpoint_status::from(
                etcd.status(None, deadline).await?,
            ))
        })
    })
}

impl From<crate::pb::etcdserverpb::StatusResponse> for etcdc_endpoint_status {
    fn from(s: crate::pb::etcdserverpb::StatusResponse) -> Self {
        etcdc_endpoint_status {
            header: header(s.header),
            version: cstring(&s.version),
            db_size: s.db_size,
            db_size_in_use: s.db_size_in_use,
            leader: s.leader,
            raft_index: s.raft_index,
            raft_term: s.raft_term,
            raft_applied_index: s.raft_applied_index,
            learner: s.is_learner,
        }
    }
}

/// Frees an endpoint status. NULL does nothing.
#[no_mangle]
pub extern "C" fn etcdc_endpoint_status_free(s: *mut etcdc_endpoint_status) {
    free_box(s)
}

/// The response header (its member id: the member that answered), borrowed.
#[no_mangle]
pub extern "C" fn etcdc_endpoint_status_header(
    s: *const etcdc_endpoint_status,
) -> *const etcdc_header {
    field(s, std::ptr::null(), |s| &s.header)
}

/// The server's version, e.g. "3.4.23". Borrowed.
#[no_mangle]
pub extern "C" fn etcdc_endpoint_status_version(s: *const etcdc_endpoint_status) -> *const c_char {
    field(s, c"".as_ptr(), |s| s.version.as_ptr())
}

/// The backend database's size in bytes.
#[no_mangle]
pub extern "C" fn etcdc_endpoint_status_db_size(s: *const etcdc_endpoint_status) -> i64 {
    field(s, 0, |s| s.db_size)
}

/// The bytes of the database in use (the rest is free space a defragment would reclaim).
#[no_mangle]
pub extern "C" fn etcdc_endpoint_status_db_size_in_use(s: *const etcdc_endpoint_status) -> i64 {
    field(s, 0, |s| s.db_size_in_use)
}

/// The member id of the current Raft leader (0: none).
#[no_mangle]
pub extern "C" fn etcdc_endpoint_status_leader(s: *const etcdc_endpoint_status) -> u64 {
    field(s, 0, |s| s.leader)
}

/// The member's Raft log index.
#[no_mangle]
pub extern "C" fn etcdc_endpoint_status_raft_index(s: *const etcdc_endpoint_status) -> u64 {
    field(s, 0, |s| s.raft_index)
}

/// The member's Raft term.
#[no_mangle]
pub extern "C" fn etcdc_endpoint_status_raft_term(s: *const etcdc_endpoint_status) -> u64 {
    field(s, 0, |s| s.raft_term)
}

/// The Raft index the member has applied.
#[no_mangle]
pub extern "C" fn etcdc_endpoint_status_raft_applied_index(s: *const etcdc_endpoint_status) -> u64 {
    field(s, 0, |s| s.raft_applied_index)
}

/// True if the member is a learner.
#[no_mangle]
pub extern "C" fn etcdc_endpoint_status_is_learner(s: *const etcdc_endpoint_status) -> bool {
    field(s, false, |s| s.learner)
}

/// A member list, borrowed; NULL for another kind or a failure.
#[no_mangle]
pub extern "C" fn etcdc_completion_member_list(
    c: *const etcdc_completion,
) -> *const etcdc_member_list {
    result::<etcdc_member_list>(c)
}

/// An endpoint status, borrowed; NULL for another kind or a failure.
#[no_mangle]
pub extern "C" fn etcdc_completion_endpoint_status(
    c: *const etcdc_completion,
) -> *const etcdc_endpoint_status {
    result::<etcdc_endpoint_status>(c)
}

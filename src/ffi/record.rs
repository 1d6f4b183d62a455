//! The records every result carries: a key-value with its revisions (`etcdc_kv`) and a
//! response header (`etcdc_header`), both borrowed from the result that holds them.

use super::guard::{field, view};
use crate::pb::etcdserverpb::ResponseHeader;
use crate::pb::mvccpb::KeyValue;

/// One key-value as stored, with its revisions. Borrowed from the result that holds it.
#[derive(Clone)]
pub struct etcdc_kv {
    pub(crate) kv: KeyValue,
}

/// The header of every response: the store's revision when the call was served, and who
/// served it.
#[derive(Clone)]
pub struct etcdc_header {
    pub(crate) h: ResponseHeader,
}

pub(crate) fn kvs(kvs: Vec<KeyValue>) -> Vec<etcdc_kv> {
    kvs.into_iter().map(|kv| etcdc_kv { kv }).collect()
}

pub(crate) fn header(h: Option<ResponseHeader>) -> etcdc_header {
    etcdc_header {
        h: h.unwrap_or_default(),
    }
}

/// The key's bytes (length in `*len` if `len` is not NULL). NULL for a NULL `kv`.
#[no_mangle]
pub extern "C" fn etcdc_kv_key(kv: *const etcdc_kv, len: *mut usize) -> *const u8 {
    field(kv, std::ptr::null(), |kv| view(&kv.kv.key, len))
}

/// The value's bytes (length in `*len` if `len` is not NULL). Empty (never NULL) for a
/// keys-only read. NULL for a NULL `kv`.
#[no_mangle]
pub extern "C" fn etcdc_kv_value(kv: *const etcdc_kv, len: *mut usize) -> *const u8 {
    field(kv, std::ptr::null(), |kv| view(&kv.kv.value, len))
}

/// The revision that created the key (since its last deletion).
#[no_mangle]
pub extern "C" fn etcdc_kv_create_revision(kv: *const etcdc_kv) -> i64 {
    field(kv, 0, |kv| kv.kv.create_revision)
}

/// The revision of the key's last modification.
#[no_mangle]
pub extern "C" fn etcdc_kv_mod_revision(kv: *const etcdc_kv) -> i64 {
    field(kv, 0, |kv| kv.kv.mod_revision)
}

/// How many times the key was written since its creation (1 after the first put).
#[no_mangle]
pub extern "C" fn etcdc_kv_version(kv: *const etcdc_kv) -> i64 {
    field(kv, 0, |kv| kv.kv.version)
}

/// The lease the key is attached to, 0 for none.
#[no_mangle]
pub extern "C" fn etcdc_kv_lease(kv: *const etcdc_kv) -> i64 {
    field(kv, 0, |kv| kv.kv.lease)
}

/// The store's revision when the call was served.
#[no_mangle]
pub extern "C" fn etcdc_header_revision(h: *const etcdc_header) -> i64 {
    field(h, 0, |h| h.h.revision)
}

/// The cluster's id.
#[no_mangle]
pub extern "C" fn etcdc_header_cluster_id(h: *const etcdc_header) -> u64 {
    field(h, 0, |h| h.h.cluster_id)
}

/// The id of the member that served the call.
#[no_mangle]
pub extern "C" fn etcdc_header_member_id(h: *const etcdc_header) -> u64 {
    field(h, 0, |h| h.h.member_id)
}

/// The Raft term when the call was served.
#[no_mangle]
pub extern "C" fn etcdc_header_raft_term(h: *const etcdc_header) -> u64 {
    field(h, 0, |h| h.h.raft_term)
}

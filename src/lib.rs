//! etcdc: etcd v3 for C and C++ services.
//!
//! One API (`trait Etcd`, in etcd's own request and response messages) over two backends:
//! the remote gRPC client of any etcd v3 cluster (`remote`) and the embedded replicated node
//! (`node`: members that run inside the service's processes, form a Raft group, keep their
//! data on disk and serve etcd's gRPC API themselves). Above the trait sit what both
//! backends share — key spans, key ranges and compare-and-swap (`kv`), the lease keeper
//! (`lease`), the recipes (`recipes`: registration, discovery, sessions, mutexes,
//! elections, queues, etcd v2's key space), the one bounded stream model (`stream`, with
//! the `events` thread for push delivery) — and the C ABI (`ffi`), which converts and
//! guards but decides nothing.
//!
//! ```text
//! C caller ─ ffi ─┬─ recipes, kv, lease, stream ─┐
//!                 └──────────── trait Etcd (api) ─┬─ remote ─ etcd cluster
//!                                                 └─ node::member ─ raft ─ mvcc, wal
//! ```
//!
//! `unsafe` is confined to `ffi`, where raw pointers cross the boundary.
#![deny(unsafe_code)]

/// cbindgen:ignore
pub mod pb {
    pub mod mvccpb {
        tonic::include_proto!("mvccpb");
        include!(concat!(env!("OUT_DIR"), "/mvccpb.serde.rs"));
    }
    pub mod authpb {
        tonic::include_proto!("authpb");
        include!(concat!(env!("OUT_DIR"), "/authpb.serde.rs"));
    }
    pub mod etcdserverpb {
        tonic::include_proto!("etcdserverpb");
        include!(concat!(env!("OUT_DIR"), "/etcdserverpb.serde.rs"));
    }
    pub mod v3lockpb {
        tonic::include_proto!("v3lockpb");
        include!(concat!(env!("OUT_DIR"), "/v3lockpb.serde.rs"));
    }
    pub mod v3electionpb {
        tonic::include_proto!("v3electionpb");
        include!(concat!(env!("OUT_DIR"), "/v3electionpb.serde.rs"));
    }
    /// The embedded node's member-to-member service.
    pub mod etcdcpeer {
        tonic::include_proto!("etcdcpeer");
    }
}

// cbindgen reads only the C ABI: every other module is ignored for the header.
/// cbindgen:ignore
pub mod api;
/// cbindgen:ignore
mod codec;
/// cbindgen:ignore
pub mod error;
/// cbindgen:ignore
mod events;
#[allow(unsafe_code)]
pub mod ffi;
/// cbindgen:ignore
pub mod kv;
/// cbindgen:ignore
pub mod lease;
/// cbindgen:ignore
pub mod node;
/// cbindgen:ignore
pub mod observe;
/// cbindgen:ignore
pub mod recipes;
/// cbindgen:ignore
pub mod remote;
/// cbindgen:ignore
pub mod runtime;
/// cbindgen:ignore
pub mod stream;
/// cbindgen:ignore
pub mod tls;

pub use api::Etcd;
pub use error::{Error, ErrorKind, Result};

//! etcdc: etcd v3 for C and C++ services.
//!
//! One API (`trait Etcd`, in etcd's own request and response messages) over backends: the
//! remote gRPC client (`remote`) today, the embedded replicated node next. Above the trait
//! sit the pieces both backends share — key spans and compare-and-swap (`kv`), the lease
//! keeper (`lease`), the one bounded stream model (`stream`, with the `events` thread for
//! push delivery) — and the C ABI (`ffi`), which converts and guards but decides nothing.
//!
//! ```text
//! C caller ─ ffi ─┬─ kv, lease, stream ─┐
//!                 └──────── trait Etcd (api) ─ remote
//! ```
//!
//! `unsafe` is confined to `ffi`, where raw pointers cross the boundary.
#![deny(unsafe_code)]

/// cbindgen:ignore
pub mod pb {
    pub mod mvccpb {
        tonic::include_proto!("mvccpb");
    }
    pub mod authpb {
        tonic::include_proto!("authpb");
    }
    pub mod etcdserverpb {
        tonic::include_proto!("etcdserverpb");
    }
    pub mod v3lockpb {
        tonic::include_proto!("v3lockpb");
    }
    pub mod v3electionpb {
        tonic::include_proto!("v3electionpb");
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

pub use api::Etcd;
pub use error::{Error, ErrorKind, Result};

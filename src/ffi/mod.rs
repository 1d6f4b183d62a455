//! The C ABI: opaque handles, status codes and callbacks over the core. No logic of its own
//! lives here: every export checks its arguments, calls down, and converts the result.
//!
//! One file per concept, in the header's reading order: status and process, client, the
//! completion queue, records, put / get / delete, transactions, watches, leases, cluster, the
//! embedded node, then the recipes: registration, discovery, sessions, mutexes, elections,
//! queues; and `v2`, the cetcd-compatible layer that goes to include/etcdc_v2.h. A concept's
//! file holds all of it: its types, its handle table, its blocking and `_async` exports and its
//! `etcdc_completion_*` accessors.
//!
//! The files form a star, not a circle: the concepts use the leaves — `guard` (argument
//! checks, panics caught), `handle` (handle tables), `stream` (the one stream model), `record`
//! (kvs and headers), `completion` (queues and operations; it knows no concept: a result is
//! an `Answer` each accessor downcasts to its own type) — and `client`; only `process` (which
//! forgets every table after fork) reaches into all of them.

#![allow(non_camel_case_types)]
// Every export checks its pointers itself (see `guard`); they stay callable from C, where
// Rust's `unsafe fn` means nothing.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

pub mod client;
pub mod cluster;
pub mod completion;
pub mod delete;
pub mod discovery;
mod driven;
pub mod election;
pub mod get;
mod guard;
mod handle;
pub mod lease;
pub mod mutex;
pub mod node;
pub mod process;
pub mod put;
pub mod queue;
pub mod record;
pub mod registration;
pub mod session;
pub mod status;
mod stream;
pub mod txn;
pub mod v2;
pub mod watch;

pub use status::etcdc_status;

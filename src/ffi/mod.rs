//! The C ABI: opaque handles, status codes and callbacks over the core. No logic of its own
//! lives here: every export checks its arguments, calls down, and converts the result.
//! Modules are in the header's reading order: status and process, client, key-values, get /
//! put / delete, transactions, watches, leases, cluster, the embedded node, then the recipes:
//! registration and discovery, sessions with mutexes and elections, queues; and `v2`, the
//! cetcd-compatible layer that goes to include/etcdc_v2.h. `completion` holds the asynchronous
//! forms and their completion queues.

#![allow(non_camel_case_types)]
// Every export checks its pointers itself (see `guard`); they stay callable from C, where
// Rust's `unsafe fn` means nothing.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

pub mod client;
pub mod cluster;
pub mod completion;
pub mod delete;
pub mod discovery;
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

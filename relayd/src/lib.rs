//! `blkkin-relayd`: the per-node relay of docs/PROTOCOL.md.
//!
//! Consumers push ring records ([`blkkin::wire`] frames); the relay persists
//! them per stream ([`store`]) and acknowledges them; readers list streams
//! and subscribe to them, each served from disk at its own pace ([`server`]).
#![warn(missing_docs)]

pub mod config;
pub mod server;
pub mod store;
#[doc(hidden)]
pub mod testutil;

pub use config::{Config, FsyncPolicy, Security, StoreConfig};
pub use server::Server;
pub use store::Store;

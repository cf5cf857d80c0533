//! # blkkin
//!
//! Dapper-style tracing for storage daemons, recording into per-CPU,
//! lock-free ring buffers in shared memory, and the reader of those rings.
//!
//! * [`trace`]: the Rust API — [`Endpoint`], [`TraceContext`], RAII [`Span`]s.
//! * [`propagation`]: the 24-byte ceph/blkin packed form and B3 headers.
//! * [`sampling`]: 1-in-N, probability and per-second caps, decided at the root.
//! * [`recorder`]: the process's rings and the record path.
//! * [`ring`]: the ring format, writer and (hostile-input-proof) reader.
//!
//! The C ABI compatible with ceph/blkin's `zipkin_c.h` lives in the
//! `blkin-capi` crate (`libblkin.so` / `libblkin.a`).
#![warn(missing_docs)]

pub mod annotation;
pub mod clock;
pub mod config;
#[cfg(feature = "daemon")]
pub mod daemon;
pub mod dump;
pub mod id;
pub mod process;
pub mod propagation;
pub mod recorder;
pub mod relay_client;
pub mod ring;
pub mod ringset;
pub mod rseq;
pub mod sampling;
#[cfg(feature = "tls")]
pub mod tls;
pub mod trace;
pub mod wire;

pub use recorder::{init, stats, InitError, ProcessStats, RecordError};
pub use trace::{Endpoint, Span, TraceContext, END, START};

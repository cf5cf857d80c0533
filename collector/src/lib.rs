//! `blkkin-collector`: reads relays live, assembles Dapper annotations into
//! Zipkin spans and delivers them to sinks (see docs/ARCHITECTURE.md).

pub mod analyze;
pub mod archive;
pub mod assemble;
pub mod cassandra;
pub mod checkpoint;
mod links;
pub mod model;
pub mod pipeline;
pub mod service;
pub mod sink;
pub mod source;
pub mod store;
pub mod tbinary;
pub mod v1;

/// The allocator the collector's binaries (`blkkin-collector`, `blkkin`)
/// install with `#[global_allocator]`: mimalloc. Assembly allocates and
/// frees many small strings per span from one thread while sink threads
/// free batches; glibc malloc spent about a third of the assembly +
/// encoding time consolidating and unlinking chunks
/// (collector/benches/throughput.rs under perf).
pub type Allocator = mimalloc::MiMalloc;

/// The [`Allocator`] value for `#[global_allocator]`.
pub const ALLOCATOR: Allocator = mimalloc::MiMalloc;

//! `blkkin-collector`: reads relays live, assembles Dapper annotations into
//! Zipkin spans and delivers them to sinks (see docs/ARCHITECTURE.md).

pub mod analyze;
pub mod archive;
pub mod assemble;
pub mod cassandra;
pub mod checkpoint;
pub mod model;
pub mod pipeline;
pub mod service;
pub mod sink;
pub mod source;
pub mod store;
pub mod tbinary;
pub mod v1;

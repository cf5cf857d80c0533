//! `blkkin-collector`: reads relays live, assembles Dapper annotations into
//! Zipkin spans and delivers them to sinks (see docs/ARCHITECTURE.md).

pub mod analyze;
pub mod archive;
pub mod model;

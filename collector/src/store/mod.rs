//! The embedded default store: spans kept in SQLite and served over HTTP
//! with Zipkin's v2 query API, so Zipkin's UI or Grafana's Zipkin data
//! source can browse traces with nothing else installed.
//!
//! ```no_run
//! # async fn demo(spans: Vec<blkkin_collector::model::Span>) -> Result<(), Box<dyn std::error::Error>> {
//! use blkkin_collector::store::{serve, Store};
//! let store = Store::open_file("/var/lib/blkkin/spans.db")?;
//! store.insert(&spans)?; // what the collector's store sink does
//! let server = serve("127.0.0.1:9411".parse()?, store).await?;
//! println!("Zipkin API on http://{}/api/v2/services", server.local_addr());
//! server.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # Why SQLite (through `rusqlite`, SQLite compiled in with `bundled`)
//!
//! - The query API is a set of lookups by service, span name, remote
//!   service, tag, time window and trace id: real SQL indexes serve each one
//!   directly, where a key/value store (redb, sled) would need hand-kept
//!   secondary indexes.
//! - WAL mode lets the query server read while the collector writes.
//! - One file, no server, no install: `bundled` compiles SQLite into the
//!   binary, so the default works on a fresh machine.
//! - Ubiquitous tooling: `sqlite3 spans.db` inspects or exports the data.
//!
//! # Semantics
//!
//! Queries follow Zipkin's in-memory storage (`QueryRequest.test`, trace
//! ordering by newest span timestamp, `DependencyLinker`). One deliberate
//! difference: reports of one span with the same (trace id, span id, kind,
//! shared, local service) are merged on insert (as Zipkin's UI merges them)
//! instead of being returned as separate fragments. See
//! docs/ARCHITECTURE.md, "Embedded store".

mod auth;
pub mod cors;
mod db;
pub mod dependencies;
mod http;
pub mod query;
mod schema;
pub mod span_ext;

pub use auth::QueryToken;
pub use cors::AllowedOrigins;
pub use db::{InsertOutcome, QueryCancel, Store, StoreConfig, StoreLocation, StoreStats};
pub use dependencies::DependencyLink;
pub use http::{
    router, router_from, router_with, serve, serve_with, ServerConfig, ServerHandle,
    DEFAULT_MAX_LIMIT, DEFAULT_MAX_LOOKBACK, DEFAULT_QUERY_TIMEOUT, MAX_BODY_BYTES,
};
pub use query::QueryRequest;

/// Errors of the embedded store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed.
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored or posted span could not be (de)serialised.
    #[error("span JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A span broke Zipkin's rules (ids).
    #[error("invalid span: {0}")]
    InvalidSpan(String),
    /// A query broke Zipkin's rules.
    #[error("{0}")]
    InvalidQuery(String),
    /// A query API token could not be read or is unusable.
    #[error("query token: {0}")]
    InvalidToken(String),
    /// The query was cancelled (it ran past the query server's timeout).
    #[error("query cancelled")]
    Cancelled,
    /// The database was written by an incompatible version.
    #[error("database schema version {0} is not supported (expected {expected})", expected = schema::SCHEMA_VERSION)]
    SchemaVersion(i64),
    /// Binding or serving the HTTP port failed.
    #[error("http server: {0}")]
    Io(#[from] std::io::Error),
}

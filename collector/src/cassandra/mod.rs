//! Cassandra store: writes spans into Zipkin's `zipkin2` keyspace
//! (`cassandra3` storage) exactly as Zipkin's own Cassandra writer does, so a
//! real Zipkin server reading that keyspace browses BlkKin traces, and
//! upserts the `dependency` table Zipkin otherwise needs a Spark job for.
//!
//! - [`rows`]: span → rows (ids, `ts_uuid`, day buckets, `annotation_query`)
//! - [`links`]: span trees → dependency link counts (Zipkin's linker rules)
//! - [`schema`]: Zipkin's schema, created or validated
//! - [`sink`]: the driver session, prepared statements, bounded concurrency
//! - [`tls`]: TLS to the native port (OpenSSL), CA and client certificate
//! - [`warnings`]: what Cassandra warns about, logged once with context
//!
//! See docs/ARCHITECTURE.md ("Cassandra store") for the guarantees.

mod links;
mod rows;
mod schema;
mod sink;
mod tls;
mod warnings;

use std::time::Duration;

pub use scylla::statement::Consistency;
pub use sink::{BlockingCassandraSink, CassandraSink, CassandraStats};
pub use tls::CassandraTls;
pub use warnings::driver_warning_filter;

/// How to reach Cassandra and what to write.
#[derive(Debug, Clone)]
pub struct CassandraConfig {
    /// `host:port` of one or more nodes (port 9042 when omitted).
    pub contact_points: Vec<String>,
    /// Keyspace holding Zipkin's tables (Zipkin's default: `zipkin2`).
    pub keyspace: String,
    /// Create the keyspace, types, tables and indexes when missing; when
    /// false an existing keyspace is validated and used as it is.
    pub ensure_schema: bool,
    /// Replication map for a keyspace this sink creates.
    pub replication: String,
    /// Consistency of every write (Zipkin's default: `LOCAL_ONE`).
    pub consistency: Consistency,
    /// Username and password for Cassandra's password authenticator.
    pub credentials: Option<(String, String)>,
    /// Speak TLS to the native port (`client_encryption_options`); `None`
    /// for plain TCP.
    pub tls: Option<CassandraTls>,
    /// Statements in flight at once, over all writes of this sink.
    pub max_in_flight: usize,
    /// Timeout of one request (the driver's retries included).
    pub request_timeout: Duration,
    /// Timeout of opening a connection.
    pub connect_timeout: Duration,
    /// Write the search columns and tables (Zipkin's `SEARCH_ENABLED`).
    pub search_enabled: bool,
    /// Keep all 32 hex characters of 128-bit trace ids in `trace_id`
    /// (Zipkin's `STRICT_TRACE_ID`, default true).
    pub strict_trace_id: bool,
    /// Tag keys whose values feed `autocomplete_tags`
    /// (Zipkin's `AUTOCOMPLETE_KEYS`; default none).
    pub autocomplete_keys: Vec<String>,
    /// Time a trace must be quiet before its dependency links are counted.
    pub link_window: Duration,
    /// Spans held for linking at most; past it the oldest traces are linked
    /// early (counted in [`CassandraStats::traces_linked_early`]).
    pub link_buffer_spans: usize,
}

impl Default for CassandraConfig {
    fn default() -> Self {
        CassandraConfig {
            contact_points: vec!["127.0.0.1:9042".to_string()],
            keyspace: "zipkin2".to_string(),
            ensure_schema: true,
            replication: "{'class': 'SimpleStrategy', 'replication_factor': '1'}".to_string(),
            consistency: Consistency::LocalOne,
            credentials: None,
            tls: None,
            max_in_flight: 256,
            request_timeout: Duration::from_secs(12),
            connect_timeout: Duration::from_secs(5),
            search_enabled: true,
            strict_trace_id: true,
            autocomplete_keys: Vec::new(),
            link_window: Duration::from_secs(10),
            link_buffer_spans: 100_000,
        }
    }
}

/// What went wrong talking to Cassandra.
#[derive(Debug, thiserror::Error)]
pub enum CassandraError {
    /// A configuration value is unusable.
    #[error("invalid Cassandra configuration: {0}")]
    Config(String),
    /// The TLS configuration is unusable (a file missing or malformed).
    #[error("Cassandra TLS: {0}")]
    Tls(String),
    /// No session could be opened to the contact points.
    #[error("cannot connect to Cassandra at {contact_points}: {source}")]
    Connect {
        /// The configured contact points.
        contact_points: String,
        /// The driver's error.
        #[source]
        source: Box<scylla::errors::NewSessionError>,
    },
    /// A schema statement failed.
    #[error("Cassandra schema statement failed: {statement}: {source}")]
    Schema {
        /// The first line of the statement.
        statement: String,
        /// The driver's error.
        #[source]
        source: Box<scylla::errors::ExecutionError>,
    },
    /// The keyspace lacks Zipkin's tables and the sink may not create them.
    #[error("keyspace {keyspace} lacks Zipkin's table {table}: create the schema (ensure_schema) or apply Zipkin's zipkin2-schema.cql and zipkin2-schema-indexes.cql")]
    MissingSchema {
        /// The keyspace.
        keyspace: String,
        /// The first missing table.
        table: String,
    },
    /// Reading the schema tables failed.
    #[error("cannot read Cassandra's schema tables: {0}")]
    SchemaRead(String),
    /// Preparing a statement failed.
    #[error("cannot prepare {statement}: {source}")]
    Prepare {
        /// The statement.
        statement: String,
        /// The driver's error.
        #[source]
        source: Box<scylla::errors::PrepareError>,
    },
    /// Some statements of a write failed (the rest were applied; writing
    /// the same spans again is safe: every span statement is idempotent).
    #[error("{failed} of {total} Cassandra writes failed, first: {first}")]
    Write {
        /// Statements that failed.
        failed: usize,
        /// Statements attempted.
        total: usize,
        /// The first failure.
        first: String,
    },
    /// Dependency links could not be stored; they stay pending and are
    /// retried with the next write or flush.
    #[error("dependency links not stored ({pending} edges pending): {reason}")]
    Dependency {
        /// Edges still pending.
        pending: usize,
        /// Why.
        reason: String,
    },
    /// The blocking wrapper could not start its runtime.
    #[error("cannot start the Cassandra sink's runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

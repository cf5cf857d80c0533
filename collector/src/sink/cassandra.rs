//! Cassandra (Zipkin's `zipkin2` keyspace) as a sink. Connects (and creates
//! the schema) when the sink starts, and again whenever it is idle or has a
//! batch while not connected, so a collector started before Cassandra waits
//! for it (retrying with the runner's backoff) instead of failing.

use crate::cassandra::{BlockingCassandraSink, CassandraConfig, CassandraError};
use crate::model::Span;
use crate::sink::{Sink, SinkError};

/// Writes every batch with a [`BlockingCassandraSink`].
pub struct CassandraSinkAdapter {
    config: CassandraConfig,
    sink: Option<BlockingCassandraSink>,
}

impl CassandraSinkAdapter {
    /// A sink that connects with `config` on its first batch.
    pub fn new(config: CassandraConfig) -> CassandraSinkAdapter {
        CassandraSinkAdapter { config, sink: None }
    }
}

impl CassandraSinkAdapter {
    /// Connects (creating the schema unless told not to) if not yet
    /// connected; `spans` is what a refusal costs.
    fn connected(&mut self, spans: usize) -> Result<&BlockingCassandraSink, SinkError> {
        if self.sink.is_none() {
            match BlockingCassandraSink::connect(self.config.clone()) {
                Ok(s) => {
                    tracing::info!(
                        keyspace = %self.config.keyspace,
                        "connected to Cassandra; keyspace {} ready ({})",
                        self.config.keyspace,
                        if self.config.ensure_schema {
                            "schema created where missing"
                        } else {
                            "schema checked"
                        }
                    );
                    self.sink = Some(s)
                }
                Err(e @ CassandraError::Config(_))
                | Err(e @ CassandraError::Tls(_))
                | Err(e @ CassandraError::MissingSchema { .. }) => {
                    return Err(SinkError::Rejected {
                        spans,
                        reason: e.to_string(),
                    })
                }
                Err(e) => return Err(SinkError::Retry(e.to_string())),
            }
        }
        Ok(self.sink.as_ref().expect("connected above"))
    }
}

impl Sink for CassandraSinkAdapter {
    /// Connects at start (so the schema exists before the first span, and
    /// a Zipkin started with CASSANDRA_ENSURE_SCHEMA=false finds it), then
    /// links the traces that have been quiet for the linking window, so
    /// dependency links appear without waiting for the next write.
    fn idle(&mut self) -> Result<(), SinkError> {
        let sink = self.connected(0)?;
        sink.link_due()
            .map_err(|e| SinkError::Retry(format!("dependency links: {e}")))
    }

    fn send(&mut self, batch: &[Span]) -> Result<(), SinkError> {
        let sink = self.connected(batch.len())?;
        // Every span statement is idempotent: a partly failed batch is
        // written again whole.
        sink.write(batch)
            .map_err(|e| SinkError::Retry(e.to_string()))
    }
}

impl Drop for CassandraSinkAdapter {
    fn drop(&mut self) {
        if let Some(s) = &self.sink {
            if let Err(e) = s.flush_links() {
                tracing::warn!("cassandra: dependency links not flushed at shutdown: {e}");
            }
        }
    }
}

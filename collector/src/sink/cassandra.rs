//! Cassandra (Zipkin's `zipkin2` keyspace) as a sink. Connects lazily, so a
//! collector started before Cassandra waits for it (retrying with the
//! runner's backoff) instead of failing.

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

impl Sink for CassandraSinkAdapter {
    fn send(&mut self, batch: &[Span]) -> Result<(), SinkError> {
        if self.sink.is_none() {
            match BlockingCassandraSink::connect(self.config.clone()) {
                Ok(s) => self.sink = Some(s),
                Err(e @ CassandraError::Config(_))
                | Err(e @ CassandraError::Tls(_))
                | Err(e @ CassandraError::MissingSchema { .. }) => {
                    return Err(SinkError::Rejected {
                        spans: batch.len(),
                        reason: e.to_string(),
                    })
                }
                Err(e) => return Err(SinkError::Retry(e.to_string())),
            }
        }
        let sink = self.sink.as_ref().expect("connected above");
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

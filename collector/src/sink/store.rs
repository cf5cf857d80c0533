//! The embedded store as a sink: spans inserted into SQLite, queryable at
//! once through the store's Zipkin API.

use crate::model::Span;
use crate::sink::{Sink, SinkError};
use crate::store::{Store, StoreError};

/// Inserts every batch into a [`Store`].
pub struct StoreSink {
    store: Store,
}

impl StoreSink {
    /// A sink writing into `store` (a clone shares the database).
    pub fn new(store: Store) -> StoreSink {
        StoreSink { store }
    }
}

impl Sink for StoreSink {
    fn send(&mut self, batch: &[Span]) -> Result<(), SinkError> {
        match self.store.insert(batch) {
            Ok(outcome) => match outcome.rejection_text() {
                None => Ok(()),
                // Spans breaking Zipkin's rules are refused one by one (never
                // retried); the rest of the batch is stored.
                Some(reason) => Err(SinkError::Rejected {
                    spans: outcome.rejected,
                    reason,
                }),
            },
            // A stored span that no longer decodes: retrying cannot help.
            Err(e @ StoreError::Json(_)) => Err(SinkError::Rejected {
                spans: batch.len(),
                reason: e.to_string(),
            }),
            // Busy or failing database: the same batch again later.
            Err(e) => Err(SinkError::Retry(e.to_string())),
        }
    }
}

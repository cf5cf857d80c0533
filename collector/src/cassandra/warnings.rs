//! Warnings Cassandra attaches to a response (a batch over its size
//! threshold, tombstones, experimental features).
//!
//! The driver logs each one at WARN (`scylla::network::connection`, field
//! `warning`) without saying which statement caused it; creating Zipkin's
//! schema alone gave three "SASI indexes are experimental" lines at the
//! default log level. [`driver_warning_filter`] drops the driver's copy and
//! [`log`] logs each warning with the statement's context: the SASI notice
//! at debug (Zipkin's schema uses SASI by design), everything else at warn.

use scylla::response::query_result::QueryResult;
use tracing::Metadata;
use tracing_subscriber::filter::FilterFn;

/// Logs the warnings of `result`, the answer to `what`.
pub(crate) fn log(result: &QueryResult, what: &str) {
    for warning in result.warnings() {
        if expected(warning) {
            tracing::debug!(
                what,
                warning,
                "Cassandra warns (expected: Zipkin's schema uses SASI indexes)"
            );
        } else {
            tracing::warn!(what, warning, "Cassandra warns");
        }
    }
}

/// Whether Cassandra says this of every schema Zipkin's way.
fn expected(warning: &str) -> bool {
    warning.contains("SASI")
}

/// Whether a log event is the driver's own copy of a response warning.
fn driver_copy(meta: &Metadata<'_>) -> bool {
    meta.target().starts_with("scylla::network::connection")
        && meta.fields().field("warning").is_some()
}

/// A global log filter (a `tracing_subscriber` layer) dropping the driver's
/// own log of response warnings; [`log`] logs them with context. Install
/// it in every program that runs the Cassandra sink.
pub fn driver_warning_filter() -> FilterFn {
    FilterFn::new((|meta| !driver_copy(meta)) as fn(&Metadata<'_>) -> bool)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn the_sasi_notice_is_expected_and_other_warnings_are_not() {
        assert!(expected(
            "SASI indexes are experimental and are not recommended for production use."
        ));
        assert!(!expected(
            "Batch for [zipkin2.span] is of size 6.1KiB, exceeding specified threshold"
        ));
    }

    /// A writer collecting what the fmt layer prints.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_filter_drops_only_the_drivers_copy_of_a_warning() {
        let buf = Buf::default();
        let w = buf.clone();
        let subscriber = tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(move || w.clone())
                    .with_ansi(false),
            )
            .with(driver_warning_filter());
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(target: "scylla::network::connection", warning = "SASI", "Response from the database contains a warning");
            tracing::warn!(target: "scylla::network::connection", "connection broken");
            tracing::warn!(what = "a batch", warning = "too big", "Cassandra warns");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert!(!text.contains("Response from the database"), "{text}");
        assert!(text.contains("connection broken"), "{text}");
        assert!(text.contains("too big"), "{text}");
    }
}

//! The store's dependency links: the traces of the queried window, linked
//! by the collector's one linker ([`crate::links`], Zipkin's
//! `DependencyLinker` rules, shared with Cassandra), counted per edge.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::model::Span;

/// One edge of the service graph, shaped like Zipkin's `DependencyLink` JSON.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DependencyLink {
    /// Calling service.
    pub parent: String,
    /// Called service.
    pub child: String,
    /// Calls seen.
    pub call_count: u64,
    /// Calls that carried an `error` tag.
    #[serde(skip_serializing_if = "is_zero")]
    pub error_count: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Accumulates links over many traces.
#[derive(Debug, Default)]
pub struct DependencyLinker {
    counts: BTreeMap<(String, String), (u64, u64)>,
}

impl DependencyLinker {
    /// Adds the links of one trace (all spans share a trace id), by the
    /// collector's one linker ([`crate::links`]).
    pub fn put_trace(&mut self, spans: &[Span]) {
        let counts = &mut self.counts;
        crate::links::link_trace(spans, |parent, child, is_error| {
            let e = counts
                .entry((parent.to_string(), child.to_string()))
                .or_default();
            e.0 += 1;
            e.1 += u64::from(is_error);
        });
    }

    /// The links counted so far, ordered by (parent, child).
    pub fn links(self) -> Vec<DependencyLink> {
        self.counts
            .into_iter()
            .map(
                |((parent, child), (call_count, error_count))| DependencyLink {
                    parent,
                    child,
                    call_count,
                    error_count,
                },
            )
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_json_is_zipkins() {
        let l = DependencyLink {
            parent: "a".into(),
            child: "b".into(),
            call_count: 3,
            error_count: 0,
        };
        assert_eq!(
            serde_json::to_string(&l).unwrap(),
            r#"{"parent":"a","child":"b","callCount":3}"#
        );
    }
}

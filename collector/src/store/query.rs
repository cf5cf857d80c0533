//! Trace queries with the semantics of Zipkin's `zipkin2.storage.QueryRequest`:
//! defaults, validation, the `annotationQuery` syntax and the per-trace test.

use std::collections::BTreeMap;

use crate::model::Span;

use super::span_ext::SpanExt;
use super::StoreError;

/// Zipkin's default query window: one day, in milliseconds.
pub const DEFAULT_LOOKBACK_MS: u64 = 86_400_000;
/// Zipkin's default number of traces returned.
pub const DEFAULT_LIMIT: usize = 10;

/// A validated `/api/v2/traces` query. Names are lower-cased; times are
/// epoch milliseconds, durations microseconds, as in Zipkin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryRequest {
    /// Local service every other criterion is evaluated against.
    pub service_name: Option<String>,
    /// Remote service of some span of `service_name`.
    pub remote_service_name: Option<String>,
    /// Span name of some span of `service_name` ("all" means any).
    pub span_name: Option<String>,
    /// Annotation values (empty map value) or tag key/values, AND-ed. Kept
    /// in query order.
    pub annotation_query: Vec<(String, String)>,
    /// Minimum span duration in microseconds.
    pub min_duration: Option<u64>,
    /// Maximum span duration in microseconds; only with `min_duration`.
    pub max_duration: Option<u64>,
    /// End of the window, epoch milliseconds.
    pub end_ts: u64,
    /// Length of the window, milliseconds.
    pub lookback: u64,
    /// Maximum number of traces.
    pub limit: usize,
}

impl QueryRequest {
    /// A query for everything in the day before `end_ts` (Zipkin's defaults).
    pub fn new(end_ts: u64) -> Self {
        QueryRequest {
            service_name: None,
            remote_service_name: None,
            span_name: None,
            annotation_query: Vec::new(),
            min_duration: None,
            max_duration: None,
            end_ts,
            lookback: DEFAULT_LOOKBACK_MS,
            limit: DEFAULT_LIMIT,
        }
    }

    /// Lower-cases names, drops empty ones (and the span name "all"), and
    /// rejects what Zipkin's `QueryRequest.Builder.build` rejects.
    pub fn validated(mut self) -> Result<Self, StoreError> {
        let clean = |s: Option<String>| s.map(|s| s.to_lowercase()).filter(|s| !s.is_empty());
        self.service_name = clean(self.service_name.take());
        self.remote_service_name = clean(self.remote_service_name.take());
        self.span_name = clean(self.span_name.take()).filter(|s| s != "all");
        let bad = |m: &str| Err(StoreError::InvalidQuery(m.to_string()));
        if self.end_ts == 0 {
            return bad("endTs <= 0");
        }
        if self.limit == 0 {
            return bad("limit <= 0");
        }
        if self.lookback == 0 {
            return bad("lookback <= 0");
        }
        match (self.min_duration, self.max_duration) {
            (Some(0), _) => return bad("minDuration <= 0"),
            (Some(min), Some(max)) if max < min => return bad("maxDuration < minDuration"),
            (None, Some(_)) => return bad("maxDuration is only valid with minDuration"),
            _ => {}
        }
        Ok(self)
    }

    /// Start of the window in epoch microseconds (Zipkin clamps nothing: a
    /// lookback past the epoch simply covers everything).
    pub fn begin_us(&self) -> u64 {
        self.end_ts
            .saturating_sub(self.lookback)
            .saturating_mul(1000)
    }

    /// End of the window in epoch microseconds.
    pub fn end_us(&self) -> u64 {
        self.end_ts.saturating_mul(1000)
    }

    /// Whether a trace (all its spans) matches, as `QueryRequest.test`: the
    /// trace's timestamp (its root's, else its earliest) lies in the window,
    /// and among the spans of `service_name` (or all spans) some span has the
    /// remote service, some the span name, some the duration, and every
    /// annotation-query term is met by some span.
    pub fn test(&self, spans: &[Span]) -> bool {
        let Some(ts) = trace_timestamp(spans) else {
            return false;
        };
        if ts < self.begin_us() || ts > self.end_us() {
            return false;
        }
        let mut service_seen = self.service_name.is_none();
        let mut remote_found = self.remote_service_name.is_none();
        let mut name_found = self.span_name.is_none();
        let mut duration_found = self.min_duration.is_none();
        let mut remaining: Vec<&(String, String)> = self.annotation_query.iter().collect();
        for span in spans {
            if let Some(svc) = &self.service_name {
                if span.local_service() != Some(svc.as_str()) {
                    continue;
                }
            }
            service_seen = true;
            remaining.retain(|(key, value)| {
                let by_annotation =
                    value.is_empty() && span.annotations.iter().any(|a| &a.value == key);
                let by_tag = span
                    .tags
                    .get(key)
                    .is_some_and(|v| value.is_empty() || v == value);
                !(by_annotation || by_tag)
            });
            if !remote_found {
                remote_found = span.remote_service() == self.remote_service_name.as_deref();
            }
            if !name_found {
                name_found = span.name == self.span_name;
            }
            if !duration_found {
                let d = span.duration.unwrap_or(0);
                duration_found = self.min_duration.is_some_and(|min| d >= min)
                    && self.max_duration.is_none_or(|max| d <= max);
            }
        }
        service_seen && remote_found && name_found && duration_found && remaining.is_empty()
    }
}

/// The timestamp Zipkin files a trace under: its root span's timestamp, or
/// the earliest span timestamp when the root has none or is missing.
pub fn trace_timestamp(spans: &[Span]) -> Option<u64> {
    let mut earliest: Option<u64> = None;
    for s in spans {
        let Some(ts) = s.timestamp else { continue };
        if s.parent_id.is_none() {
            return Some(ts);
        }
        earliest = Some(earliest.map_or(ts, |e| e.min(ts)));
    }
    earliest
}

/// Parses Zipkin's `annotationQuery` syntax, e.g. `error and http.method=GET`:
/// terms separated by ` and ` (at most 100), each `key` (an annotation value
/// or tag key) or `key=value` (a tag); keys and values trimmed. A bare key
/// never replaces a `key=value` term; a later `key=value` replaces earlier.
pub fn parse_annotation_query(query: &str) -> Vec<(String, String)> {
    let mut terms: BTreeMap<String, (usize, String)> = BTreeMap::new();
    if query.is_empty() {
        return Vec::new();
    }
    for (order, term) in query.splitn(100, " and ").enumerate() {
        match term.split_once('=') {
            None => {
                let key = term.trim().to_string();
                terms.entry(key).or_insert((order, String::new()));
            }
            Some((k, v)) => {
                let key = k.trim().to_string();
                let order = terms.get(&key).map_or(order, |e| e.0);
                terms.insert(key, (order, v.trim().to_string()));
            }
        }
    }
    let mut out: Vec<(usize, String, String)> =
        terms.into_iter().map(|(k, (o, v))| (o, k, v)).collect();
    out.sort();
    out.into_iter().map(|(_, k, v)| (k, v)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Annotation, Endpoint};

    const NOW_MS: u64 = 1_700_000_000_000;

    fn span(id: &str, parent: Option<&str>, service: &str, name: &str, ts_ms: u64) -> Span {
        Span {
            trace_id: "00000000000000aa".into(),
            id: id.into(),
            parent_id: parent.map(Into::into),
            name: Some(name.into()),
            timestamp: Some(ts_ms * 1000),
            duration: Some(100),
            local_endpoint: Some(Endpoint {
                service_name: Some(service.into()),
                ..Endpoint::default()
            }),
            ..Span::default()
        }
    }

    fn trace() -> Vec<Span> {
        let mut root = span("0000000000000001", None, "client", "get", NOW_MS - 1000);
        root.remote_endpoint = Some(Endpoint {
            service_name: Some("volume".into()),
            ..Endpoint::default()
        });
        root.tags.insert("http.method".into(), "GET".into());
        let mut child = span(
            "0000000000000002",
            Some("0000000000000001"),
            "volume",
            "write",
            NOW_MS - 900,
        );
        child.duration = Some(5000);
        child.tags.insert("error".into(), "disk".into());
        child.annotations.push(Annotation {
            timestamp: (NOW_MS - 800) * 1000,
            value: "journal".into(),
        });
        vec![root, child]
    }

    fn query() -> QueryRequest {
        QueryRequest::new(NOW_MS)
    }

    #[test]
    fn defaults_are_zipkins() {
        let q = query().validated().unwrap();
        assert_eq!((q.lookback, q.limit), (86_400_000, 10));
        assert!(q.test(&trace()));
    }

    #[test]
    fn names_are_lowercased_and_all_means_any() {
        let q = QueryRequest {
            service_name: Some("VOLUME".into()),
            span_name: Some("Write".into()),
            ..query()
        }
        .validated()
        .unwrap();
        assert_eq!(q.service_name.as_deref(), Some("volume"));
        assert!(q.test(&trace()));
        let q = QueryRequest {
            span_name: Some("ALL".into()),
            service_name: Some(String::new()),
            ..query()
        }
        .validated()
        .unwrap();
        assert_eq!((q.span_name, q.service_name), (None, None));
    }

    #[test]
    fn service_name_constrains_the_other_criteria() {
        // "write" is a span of volume, not of client.
        let q = QueryRequest {
            service_name: Some("client".into()),
            span_name: Some("write".into()),
            ..query()
        };
        assert!(!q.test(&trace()));
        let q = QueryRequest {
            service_name: Some("client".into()),
            remote_service_name: Some("volume".into()),
            ..query()
        };
        assert!(q.test(&trace()));
        let q = QueryRequest {
            service_name: Some("nobody".into()),
            ..query()
        };
        assert!(!q.test(&trace()));
    }

    #[test]
    fn criteria_may_be_met_by_different_spans() {
        // Zipkin's test: span name from one span, tag from another.
        let q = QueryRequest {
            span_name: Some("get".into()),
            annotation_query: parse_annotation_query("error"),
            ..query()
        };
        assert!(q.test(&trace()));
    }

    #[test]
    fn lookback_window_uses_the_root_timestamp() {
        let t = trace();
        let inside = QueryRequest {
            lookback: 1000,
            ..query()
        };
        assert!(inside.test(&t));
        let outside = QueryRequest {
            lookback: 999,
            ..query()
        };
        assert!(
            !outside.test(&t),
            "root at now-1000 ms is before the window"
        );
        let ended = QueryRequest {
            end_ts: NOW_MS - 1001,
            ..query()
        };
        assert!(!ended.test(&t));
        // Without a root, the earliest timestamp counts.
        let headless = vec![t[1].clone()];
        let q = QueryRequest {
            lookback: 900,
            ..query()
        };
        assert!(q.test(&headless));
        assert!(!QueryRequest {
            lookback: 899,
            ..query()
        }
        .test(&headless));
        // No timestamp at all: never matches.
        let mut untimed = t.clone();
        untimed.iter_mut().for_each(|s| s.timestamp = None);
        assert!(!query().test(&untimed));
    }

    #[test]
    fn annotation_query_syntax() {
        assert_eq!(
            parse_annotation_query("error and http.method=GET"),
            vec![
                ("error".into(), "".into()),
                ("http.method".into(), "GET".into())
            ]
        );
        assert_eq!(
            parse_annotation_query(" a = b  and c"),
            vec![("a".into(), "b".into()), ("c".into(), "".into())]
        );
        // A later bare key does not override a tag term; a later tag does.
        assert_eq!(
            parse_annotation_query("k=1 and k and k=2"),
            vec![("k".into(), "2".into())]
        );
        assert_eq!(parse_annotation_query("k="), vec![("k".into(), "".into())]);
        assert!(parse_annotation_query("").is_empty());
    }

    #[test]
    fn annotation_query_matches_annotations_and_tags() {
        let t = trace();
        let q = |s: &str| QueryRequest {
            annotation_query: parse_annotation_query(s),
            ..query()
        };
        assert!(q("journal").test(&t), "annotation value");
        assert!(q("error").test(&t), "tag key alone");
        assert!(q("error=disk and http.method=GET").test(&t));
        assert!(!q("error=net").test(&t));
        assert!(
            !q("journal=x").test(&t),
            "annotations match only bare terms"
        );
        assert!(!q("journal and missing").test(&t));
    }

    #[test]
    fn duration_bounds() {
        let t = trace();
        let q = |min, max| QueryRequest {
            min_duration: min,
            max_duration: max,
            ..query()
        };
        assert!(q(Some(5000), None).test(&t));
        assert!(!q(Some(5001), None).test(&t));
        assert!(q(Some(100), Some(100)).test(&t));
        assert!(!q(Some(101), Some(4999)).test(&t));
        assert!(q(None, Some(10)).validated().is_err());
        assert!(q(Some(0), None).validated().is_err());
        assert!(q(Some(10), Some(9)).validated().is_err());
    }

    #[test]
    fn invalid_windows_are_rejected() {
        assert!(QueryRequest {
            limit: 0,
            ..query()
        }
        .validated()
        .is_err());
        assert!(QueryRequest {
            lookback: 0,
            ..query()
        }
        .validated()
        .is_err());
        assert!(QueryRequest::new(0).validated().is_err());
    }
}

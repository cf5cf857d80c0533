//! Zipkin's rules for accepting and merging v2 spans, applied before a span
//! is stored: ids validated and normalised as `zipkin2.Span.Builder` does,
//! names lower-cased, and two reports of one span merged into one.

use crate::model::{Endpoint, Span, SpanKind};

use super::StoreError;

/// Normalises `id` to 16 or 32 lower-case hex characters as Zipkin's
/// `Span.normalizeTraceId` does: shorter ids are left-padded, a 128-bit id
/// whose high half is zero becomes 64-bit, all-zero ids are rejected.
pub fn normalize_trace_id(id: &str) -> Result<String, StoreError> {
    let id = validate_hex("traceId", id, 32)?;
    let padded = if id.len() <= 16 {
        format!("{id:0>16}")
    } else {
        format!("{id:0>32}")
    };
    if padded.len() == 32 && padded.starts_with("0000000000000000") {
        return Ok(padded[16..].to_string());
    }
    Ok(padded)
}

/// Normalises a span or parent id to 16 lower-case hex characters.
pub fn normalize_span_id(field: &str, id: &str) -> Result<String, StoreError> {
    Ok(format!("{:0>16}", validate_hex(field, id, 16)?))
}

fn validate_hex<'a>(field: &str, id: &'a str, max: usize) -> Result<&'a str, StoreError> {
    let bad = |why: &str| StoreError::InvalidSpan(format!("{field} {id:?} {why}"));
    if id.is_empty() {
        return Err(bad("is empty"));
    }
    if id.len() > max {
        return Err(bad(&format!("is longer than {max} hex characters")));
    }
    if !id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(bad("should be lower-hex encoded with no prefix"));
    }
    if id.bytes().all(|b| b == b'0') {
        return Err(bad("is all zeros"));
    }
    Ok(id)
}

/// Zipkin-side clean-up and merging of one span, as the query API expects it.
pub trait SpanExt {
    /// Validates ids and applies Zipkin's normalisation: ids padded, names
    /// and service names lower-cased, empty strings and zero times dropped,
    /// annotations sorted and de-duplicated, a zero parent id removed.
    fn normalized(self) -> Result<Span, StoreError>;
    /// The local endpoint's service name, if any.
    fn local_service(&self) -> Option<&str>;
    /// The remote endpoint's service name, if any.
    fn remote_service(&self) -> Option<&str>;
    /// Folds a second report of the same span into this one like
    /// `zipkin2.Span.Builder.merge`: missing fields filled in, annotations
    /// unioned, tags of the later report win, flags OR-ed.
    fn merge(&mut self, other: Span);
}

impl SpanExt for Span {
    fn normalized(mut self) -> Result<Span, StoreError> {
        self.trace_id = normalize_trace_id(&self.trace_id)?;
        self.id = normalize_span_id("id", &self.id)?;
        self.parent_id = match self.parent_id.take() {
            Some(p) if !p.is_empty() && !p.bytes().all(|b| b == b'0') => {
                Some(normalize_span_id("parentId", &p)?)
            }
            _ => None,
        };
        self.name = non_empty(self.name.take()).map(|n| n.to_lowercase());
        self.timestamp = self.timestamp.filter(|&t| t != 0);
        self.duration = self.duration.filter(|&d| d != 0);
        self.local_endpoint = self.local_endpoint.take().and_then(normalize_endpoint);
        self.remote_endpoint = self.remote_endpoint.take().and_then(normalize_endpoint);
        self.annotations
            .sort_by(|a, b| (a.timestamp, a.value.as_str()).cmp(&(b.timestamp, b.value.as_str())));
        self.annotations.dedup();
        self.debug = self.debug.filter(|&d| d);
        self.shared = self.shared.filter(|&s| s);
        Ok(self)
    }

    fn local_service(&self) -> Option<&str> {
        self.local_endpoint.as_ref()?.service_name.as_deref()
    }

    fn remote_service(&self) -> Option<&str> {
        self.remote_endpoint.as_ref()?.service_name.as_deref()
    }

    fn merge(&mut self, other: Span) {
        self.parent_id = self.parent_id.take().or(other.parent_id);
        self.kind = self.kind.or(other.kind);
        // Zipkin prefers a real name over the placeholder "unknown".
        if self.name.is_none() || self.name.as_deref() == Some("unknown") {
            self.name = other.name.or(self.name.take());
        }
        // A client's timestamp and duration win over a server's for a shared span.
        if self.timestamp.is_none()
            || (other.kind == Some(SpanKind::Client)
                && other.timestamp.is_some()
                && self.kind != Some(SpanKind::Client))
        {
            self.timestamp = other.timestamp.or(self.timestamp);
        }
        self.duration = self.duration.or(other.duration);
        self.local_endpoint = merge_endpoint(self.local_endpoint.take(), other.local_endpoint);
        self.remote_endpoint = merge_endpoint(self.remote_endpoint.take(), other.remote_endpoint);
        self.annotations.extend(other.annotations);
        self.annotations
            .sort_by(|a, b| (a.timestamp, a.value.as_str()).cmp(&(b.timestamp, b.value.as_str())));
        self.annotations.dedup();
        self.tags.extend(other.tags);
        self.debug = flag(self.debug, other.debug);
        self.shared = flag(self.shared, other.shared);
    }
}

fn flag(a: Option<bool>, b: Option<bool>) -> Option<bool> {
    (a == Some(true) || b == Some(true)).then_some(true)
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

fn normalize_endpoint(mut e: Endpoint) -> Option<Endpoint> {
    e.service_name = non_empty(e.service_name.take()).map(|s| s.to_lowercase());
    e.ipv4 = non_empty(e.ipv4.take());
    e.ipv6 = non_empty(e.ipv6.take());
    e.port = e.port.filter(|&p| p != 0);
    (e != Endpoint::default()).then_some(e)
}

fn merge_endpoint(a: Option<Endpoint>, b: Option<Endpoint>) -> Option<Endpoint> {
    match (a, b) {
        (Some(mut a), Some(b)) => {
            a.service_name = a.service_name.or(b.service_name);
            a.ipv4 = a.ipv4.or(b.ipv4);
            a.ipv6 = a.ipv6.or(b.ipv6);
            a.port = a.port.or(b.port);
            Some(a)
        }
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Annotation;

    #[test]
    fn trace_ids_are_normalised_like_zipkin() {
        assert_eq!(normalize_trace_id("abc").unwrap(), "0000000000000abc");
        assert_eq!(
            normalize_trace_id("00000000000000000000000000000abc").unwrap(),
            "0000000000000abc"
        );
        assert_eq!(
            normalize_trace_id("1000000000000000000000000000abc").unwrap(),
            "01000000000000000000000000000abc"
        );
        for bad in ["", "0000", "ABC", "0xabc", &"a".repeat(33), "zz"] {
            assert!(normalize_trace_id(bad).is_err(), "{bad:?} accepted");
        }
        assert!(normalize_span_id("id", &"a".repeat(17)).is_err());
    }

    #[test]
    fn normalisation_lowercases_names_and_drops_empties() {
        let s = Span {
            trace_id: "a".into(),
            id: "b".into(),
            parent_id: Some("0000000000000000".into()),
            name: Some("GET /Foo".into()),
            timestamp: Some(0),
            local_endpoint: Some(Endpoint {
                service_name: Some("OSD".into()),
                port: Some(0),
                ..Endpoint::default()
            }),
            remote_endpoint: Some(Endpoint {
                service_name: Some(String::new()),
                ..Endpoint::default()
            }),
            annotations: vec![
                Annotation {
                    timestamp: 2,
                    value: "b".into(),
                },
                Annotation {
                    timestamp: 1,
                    value: "a".into(),
                },
                Annotation {
                    timestamp: 2,
                    value: "b".into(),
                },
            ],
            ..Span::default()
        }
        .normalized()
        .unwrap();
        assert_eq!(s.parent_id, None);
        assert_eq!(s.name.as_deref(), Some("get /foo"));
        assert_eq!(s.timestamp, None);
        assert_eq!(s.local_service(), Some("osd"));
        assert_eq!(s.local_endpoint.as_ref().unwrap().port, None);
        assert_eq!(s.remote_endpoint, None);
        assert_eq!(s.annotations.len(), 2);
        assert_eq!(s.annotations[0].value, "a");
    }

    #[test]
    fn merge_fills_gaps_and_unions_annotations() {
        let mut a = Span {
            trace_id: "0000000000000001".into(),
            id: "0000000000000002".into(),
            name: Some("unknown".into()),
            annotations: vec![Annotation {
                timestamp: 1,
                value: "start".into(),
            }],
            tags: [("k".to_string(), "1".to_string())].into(),
            ..Span::default()
        };
        let b = Span {
            name: Some("read".into()),
            timestamp: Some(10),
            duration: Some(5),
            annotations: vec![
                Annotation {
                    timestamp: 1,
                    value: "start".into(),
                },
                Annotation {
                    timestamp: 9,
                    value: "end".into(),
                },
            ],
            tags: [("k".to_string(), "2".to_string())].into(),
            debug: Some(true),
            ..a.clone()
        };
        a.merge(b);
        assert_eq!(a.name.as_deref(), Some("read"));
        assert_eq!((a.timestamp, a.duration), (Some(10), Some(5)));
        assert_eq!(a.annotations.len(), 2);
        assert_eq!(a.tags["k"], "2");
        assert_eq!(a.debug, Some(true));
    }
}

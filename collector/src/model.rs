//! The Zipkin v2 span model (openzipkin/zipkin-api `zipkin2-api.yaml`) that
//! span assembly produces and every sink and the embedded store consume.
//!
//! Serialises to Zipkin's v2 JSON exactly: ids as lower-case hex, absent
//! fields omitted, `kind` in upper case.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// What a span is from the point of view of its local endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SpanKind {
    /// The client side of an RPC (v1 `cs`/`cr`).
    Client,
    /// The server side of an RPC (v1 `sr`/`ss`).
    Server,
    /// A message producer (v1 `ms`).
    Producer,
    /// A message consumer (v1 `mr`).
    Consumer,
}

/// A network endpoint: the service and where it runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// Lower-case service name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    /// Dotted IPv4 address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<String>,
    /// IPv6 address text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<String>,
    /// Port, absent when 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

/// A timestamped event inside a span.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Annotation {
    /// Epoch microseconds.
    pub timestamp: u64,
    /// What happened.
    pub value: String,
}

/// One Zipkin v2 span.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Span {
    /// 16 or 32 lower-case hex characters.
    pub trace_id: String,
    /// 16 lower-case hex characters, absent for a root span.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<String>,
    /// 16 lower-case hex characters.
    pub id: String,
    /// Absent for a local span.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<SpanKind>,
    /// Lower-case span name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Epoch microseconds of the start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<u64>,
    /// Microseconds, at least 1 when present.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration: Option<u64>,
    /// Where the span was recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_endpoint: Option<Endpoint>,
    /// The other side of an RPC, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_endpoint: Option<Endpoint>,
    /// Events, sorted by timestamp.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub annotations: Vec<Annotation>,
    /// Key/value tags.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Forced sampling.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub debug: Option<bool>,
    /// The server side of a span whose id the client created.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared: Option<bool>,
    /// Keys of `tags` whose value was recorded as an integer (its decimal
    /// text is the tag value). Not part of the v2 JSON; the v1 Thrift
    /// encoder writes these as `I64` binary annotations.
    #[serde(skip)]
    pub integer_tags: BTreeSet<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_like_zipkin_v2_json() {
        let s = Span {
            trace_id: "00000000000000aa".into(),
            id: "00000000000000bb".into(),
            kind: Some(SpanKind::Server),
            name: Some("read".into()),
            timestamp: Some(1_700_000_000_000_000),
            duration: Some(42),
            local_endpoint: Some(Endpoint {
                service_name: Some("osd".into()),
                ipv4: Some("10.0.0.1".into()),
                port: Some(6800),
                ..Endpoint::default()
            }),
            annotations: vec![Annotation {
                timestamp: 1_700_000_000_000_001,
                value: "journal".into(),
            }],
            tags: [("bytes".to_string(), "4096".to_string())].into(),
            shared: Some(true),
            ..Span::default()
        };
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(
            json,
            r#"{"traceId":"00000000000000aa","id":"00000000000000bb","kind":"SERVER","name":"read","timestamp":1700000000000000,"duration":42,"localEndpoint":{"serviceName":"osd","ipv4":"10.0.0.1","port":6800},"annotations":[{"timestamp":1700000000000001,"value":"journal"}],"tags":{"bytes":"4096"},"shared":true}"#
        );
        let back: Span = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
    }
}

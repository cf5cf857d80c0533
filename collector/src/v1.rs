//! The Zipkin v1 span model (openzipkin/zipkin-api `thrift/zipkinCore.thrift`)
//! and the conversion of a v2 span to it, with the rules of Zipkin's own
//! `zipkin2.v1.V2SpanConverter`:
//!
//! - the span kind becomes a begin/end annotation pair at `timestamp` and
//!   `timestamp + duration`: CLIENT `cs`/`cr`, SERVER `sr`/`ss`, PRODUCER
//!   `ms`/`ws`, CONSUMER `wr`/`mr` (or only `mr` without a duration);
//! - a `shared` span carries neither `timestamp` nor `duration` (that is how
//!   v1 tells Zipkin the server joined the client's span);
//! - tags become binary annotations recorded by the local endpoint: `STRING`,
//!   or, with [`IntegerTags::I64`], `I64` for tags recorded as integers
//!   (Zipkin's own v1 Thrift reader keeps only `STRING` and address
//!   annotations and silently drops `I64` ones, so the Zipkin sinks send the
//!   decimal text: [`IntegerTags::String`], the default);
//! - the remote endpoint becomes an address annotation (`BOOL` true): `sa`
//!   for a client (or no kind), `ca` for a server, `ma` for messaging;
//! - a span with nothing else gets an empty `lc` binary annotation, so its
//!   local endpoint is not lost.

use std::borrow::Cow;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use crate::model::{Endpoint, Span, SpanKind};

/// Why a v2 span cannot be expressed in v1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// An id is not 16 (or, for trace ids, 32) hex digits.
    #[error("{field} {value:?} is not a valid hex id")]
    BadId {
        /// Which id.
        field: &'static str,
        /// Its text.
        value: String,
    },
}

/// How tags recorded as integers are written as binary annotations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum IntegerTags {
    /// `STRING` with the decimal text (what Zipkin servers read).
    #[default]
    String,
    /// `I64`, 8 bytes big-endian (for v1 consumers that read typed values).
    I64,
}

/// `zipkinCore.thrift` `AnnotationType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum AnnotationType {
    /// One byte, 1 for true (address annotations).
    Bool = 0,
    /// Opaque bytes.
    Bytes = 1,
    /// Big-endian 16-bit integer.
    I16 = 2,
    /// Big-endian 32-bit integer.
    I32 = 3,
    /// Big-endian 64-bit integer.
    I64 = 4,
    /// Big-endian IEEE double.
    Double = 5,
    /// UTF-8 text.
    String = 6,
}

impl AnnotationType {
    /// From its Thrift enum value.
    pub fn from_i32(v: i32) -> Option<AnnotationType> {
        use AnnotationType::*;
        [Bool, Bytes, I16, I32, I64, Double, String]
            .into_iter()
            .find(|t| *t as i32 == v)
    }
}

/// `zipkinCore.thrift` `Endpoint`. Text borrows from the v2 span it was
/// converted from where it can (the v1 model only lives to be encoded).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct V1Endpoint<'a> {
    /// IPv4 address as a big-endian integer, 0 if unknown.
    pub ipv4: i32,
    /// Port (unsigned on the wire despite the type), 0 if unknown.
    pub port: i16,
    /// Lower-case service name, "" if unknown.
    pub service_name: Cow<'a, str>,
    /// IPv6 address, if known.
    pub ipv6: Option<[u8; 16]>,
}

/// `s` in lower case, borrowed when it already is.
fn lower(s: &str) -> Cow<'_, str> {
    if s.chars().any(char::is_uppercase) {
        Cow::Owned(s.to_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}

impl<'a> V1Endpoint<'a> {
    /// From a v2 endpoint (unparsable addresses are left out).
    pub fn from_v2(e: &'a Endpoint) -> V1Endpoint<'a> {
        V1Endpoint {
            ipv4: e
                .ipv4
                .as_deref()
                .and_then(|a| a.parse::<Ipv4Addr>().ok())
                .map_or(0, |a| u32::from(a) as i32),
            port: e.port.unwrap_or(0) as i16,
            service_name: lower(e.service_name.as_deref().unwrap_or("")),
            ipv6: e
                .ipv6
                .as_deref()
                .and_then(|a| a.parse::<Ipv6Addr>().ok())
                .map(|a| a.octets()),
        }
    }
}

/// `zipkinCore.thrift` `Annotation`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Annotation<'a> {
    /// Epoch microseconds.
    pub timestamp: i64,
    /// The event.
    pub value: Cow<'a, str>,
    /// Who recorded it (shared by the annotations of one span).
    pub host: Option<Arc<V1Endpoint<'a>>>,
}

/// `zipkinCore.thrift` `BinaryAnnotation`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1BinaryAnnotation<'a> {
    /// The key.
    pub key: Cow<'a, str>,
    /// The value, encoded per `annotation_type` (big-endian numbers).
    pub value: Cow<'a, [u8]>,
    /// How `value` is encoded.
    pub annotation_type: AnnotationType,
    /// Who recorded it (for `ca`/`sa`/`ma`: the remote address).
    pub host: Option<Arc<V1Endpoint<'a>>>,
}

/// `zipkinCore.thrift` `Span`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct V1Span<'a> {
    /// Low 64 bits of the trace id.
    pub trace_id: i64,
    /// High 64 bits of a 128-bit trace id.
    pub trace_id_high: Option<i64>,
    /// Lower-case name, "" if unknown.
    pub name: Cow<'a, str>,
    /// Span id.
    pub id: i64,
    /// Parent span id; absent for a root span.
    pub parent_id: Option<i64>,
    /// Timestamped events, core annotations included.
    pub annotations: Vec<V1Annotation<'a>>,
    /// Key/values and address annotations.
    pub binary_annotations: Vec<V1BinaryAnnotation<'a>>,
    /// Forced sampling.
    pub debug: Option<bool>,
    /// Epoch microseconds of the start (absent on shared spans).
    pub timestamp: Option<i64>,
    /// Microseconds (absent on shared spans).
    pub duration: Option<i64>,
}

fn parse_id(field: &'static str, value: &str) -> Result<i64, ConvertError> {
    let bad = || ConvertError::BadId {
        field,
        value: value.to_string(),
    };
    if value.is_empty() || value.len() > 16 {
        return Err(bad());
    }
    u64::from_str_radix(value, 16)
        .map(|v| v as i64)
        .map_err(|_| bad())
}

/// Splits a 16- or 32-digit hex trace id into (high, low).
fn parse_trace_id(value: &str) -> Result<(Option<i64>, i64), ConvertError> {
    if value.len() > 16 {
        let (high, low) = value.split_at(value.len() - 16);
        Ok((Some(parse_id("traceId", high)?), parse_id("traceId", low)?))
    } else {
        Ok((None, parse_id("traceId", value)?))
    }
}

/// Begin and end annotations and the address key of a kind
/// (`V2SpanConverter.V1SpanMetadata`).
struct Metadata {
    start: u64,
    end: u64,
    begin: Option<&'static str>,
    finish: Option<&'static str>,
    addr: Option<&'static str>,
}

impl Metadata {
    fn of(s: &Span) -> Metadata {
        let mut start = s.timestamp.unwrap_or(0);
        let mut end = match (start, s.duration.unwrap_or(0)) {
            (0, _) | (_, 0) => 0,
            (t, d) => t + d,
        };
        let mut kind = s.kind;
        let (mut ms, mut ws, mut wr, mut mr) = (0, 0, 0, 0);
        // Core annotations already in the list may refine the times or kind.
        for a in &s.annotations {
            match a.value.as_str() {
                "cs" | "sr" => {
                    kind = Some(if a.value == "cs" {
                        SpanKind::Client
                    } else {
                        SpanKind::Server
                    });
                    if a.timestamp < start {
                        start = a.timestamp;
                    }
                }
                "ss" | "cr" => {
                    kind = Some(if a.value == "cr" {
                        SpanKind::Client
                    } else {
                        SpanKind::Server
                    });
                    end = end.max(a.timestamp);
                }
                "ms" => {
                    kind = Some(SpanKind::Producer);
                    ms = a.timestamp;
                }
                "mr" => {
                    kind = Some(SpanKind::Consumer);
                    mr = a.timestamp;
                }
                "ws" => ws = a.timestamp,
                "wr" => wr = a.timestamp,
                _ => {}
            }
        }
        let mut md = Metadata {
            start,
            end,
            begin: None,
            finish: None,
            addr: s.remote_endpoint.as_ref().map(|_| "sa"),
        };
        let Some(kind) = kind else { return md };
        match kind {
            SpanKind::Client => {
                (md.addr, md.begin, md.finish) = (Some("sa"), Some("cs"), Some("cr"))
            }
            SpanKind::Server => {
                (md.addr, md.begin, md.finish) = (Some("ca"), Some("sr"), Some("ss"))
            }
            SpanKind::Producer => {
                (md.addr, md.begin, md.finish) = (Some("ma"), Some("ms"), Some("ws"));
                if md.start == 0 || (ms != 0 && ms < md.start) {
                    md.start = ms;
                }
                if md.end == 0 || (ws != 0 && ws > md.end) {
                    md.end = ws;
                }
            }
            SpanKind::Consumer => {
                md.addr = Some("ma");
                if md.start == 0 || (wr != 0 && wr < md.start) {
                    md.start = wr;
                }
                if md.end == 0 || (mr != 0 && mr > md.end) {
                    md.end = mr;
                }
                if md.end != 0 || wr != 0 {
                    (md.begin, md.finish) = (Some("wr"), Some("mr"));
                } else {
                    md.begin = Some("mr");
                }
            }
        }
        if s.remote_endpoint.is_none() {
            md.addr = None;
        }
        md
    }
}

impl<'a> V1Span<'a> {
    /// Converts a v2 span (see the module documentation for the rules),
    /// integer tags as `STRING`.
    pub fn from_v2(s: &'a Span) -> Result<V1Span<'a>, ConvertError> {
        V1Span::from_v2_with(s, IntegerTags::String)
    }

    /// Converts a v2 span, writing integer tags as `integers` says.
    pub fn from_v2_with(s: &'a Span, integers: IntegerTags) -> Result<V1Span<'a>, ConvertError> {
        let (trace_id_high, trace_id) = parse_trace_id(&s.trace_id)?;
        let md = Metadata::of(s);
        // One endpoint shared by every annotation of the span (no copy each).
        let ep = s
            .local_endpoint
            .as_ref()
            .map(|e| Arc::new(V1Endpoint::from_v2(e)));
        let shared = s.shared == Some(true);
        let mut out = V1Span {
            trace_id,
            trace_id_high,
            name: lower(s.name.as_deref().unwrap_or("")),
            id: parse_id("id", &s.id)?,
            parent_id: s
                .parent_id
                .as_deref()
                .map(|p| parse_id("parentId", p))
                .transpose()?,
            debug: s.debug,
            timestamp: s.timestamp.filter(|_| !shared).map(|t| t as i64),
            duration: s.duration.filter(|_| !shared).map(|d| d as i64),
            ..V1Span::default()
        };
        let ann = |timestamp: u64, value: &'a str| V1Annotation {
            timestamp: timestamp as i64,
            value: Cow::Borrowed(value),
            host: ep.clone(),
        };
        out.annotations.reserve_exact(s.annotations.len() + 2);
        out.binary_annotations.reserve_exact(s.tags.len() + 1);
        let begin = md.begin.filter(|_| md.start != 0);
        let finish = md.finish.filter(|_| md.end != 0);
        if let Some(b) = begin {
            out.annotations.push(ann(md.start, b));
        }
        for a in &s.annotations {
            if Some(a.value.as_str()) == begin || Some(a.value.as_str()) == finish {
                continue;
            }
            out.annotations.push(ann(a.timestamp, &a.value));
        }
        if let Some(f) = finish {
            out.annotations.push(ann(md.end, f));
        }
        for (k, v) in &s.tags {
            let int = (integers == IntegerTags::I64 && s.integer_tags.contains(k))
                .then(|| v.parse::<i64>().ok())
                .flatten();
            out.binary_annotations.push(match int {
                Some(i) => V1BinaryAnnotation {
                    key: Cow::Borrowed(k),
                    value: Cow::Owned(i.to_be_bytes().to_vec()),
                    annotation_type: AnnotationType::I64,
                    host: ep.clone(),
                },
                None => V1BinaryAnnotation {
                    key: Cow::Borrowed(k),
                    value: Cow::Borrowed(v.as_bytes()),
                    annotation_type: AnnotationType::String,
                    host: ep.clone(),
                },
            });
        }
        if out.annotations.is_empty() && ep.is_some() && s.tags.is_empty() {
            out.binary_annotations.push(V1BinaryAnnotation {
                key: Cow::Borrowed("lc"),
                value: Cow::Borrowed(&[]),
                annotation_type: AnnotationType::String,
                host: ep.clone(),
            });
        }
        if let (Some(addr), Some(remote)) = (md.addr, &s.remote_endpoint) {
            out.binary_annotations.push(V1BinaryAnnotation {
                key: Cow::Borrowed(addr),
                value: Cow::Borrowed(&[1]),
                annotation_type: AnnotationType::Bool,
                host: Some(Arc::new(V1Endpoint::from_v2(remote))),
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Annotation;

    fn ep(service: &str, ip: &str, port: u16) -> Endpoint {
        Endpoint {
            service_name: Some(service.into()),
            ipv4: Some(ip.into()),
            port: Some(port),
            ..Endpoint::default()
        }
    }

    fn client() -> Span {
        Span {
            trace_id: "463ac35c9f6413ad48485a3953bb6124".into(),
            parent_id: Some("0000000000000001".into()),
            id: "00000000000000bb".into(),
            kind: Some(SpanKind::Client),
            name: Some("Read".into()),
            timestamp: Some(1000),
            duration: Some(30),
            local_endpoint: Some(ep("client", "10.0.0.1", 5000)),
            remote_endpoint: Some(ep("osd", "10.0.0.2", 6800)),
            annotations: vec![Annotation {
                timestamp: 1010,
                value: "sent".into(),
            }],
            tags: [
                ("bytes".to_string(), "4096".to_string()),
                ("object".to_string(), "obj".to_string()),
            ]
            .into(),
            debug: Some(true),
            integer_tags: ["bytes".to_string()].into(),
            ..Span::default()
        }
    }

    #[test]
    fn client_span_gets_cs_cr_sa_and_typed_binary_annotations() {
        let c = client();
        let v1 = V1Span::from_v2_with(&c, IntegerTags::I64).unwrap();
        assert_eq!(v1.trace_id_high, Some(0x463ac35c9f6413ad));
        assert_eq!(v1.trace_id, 0x48485a3953bb6124);
        assert_eq!((v1.id, v1.parent_id), (0xbb, Some(1)));
        assert_eq!(v1.name, "read");
        assert_eq!((v1.timestamp, v1.duration), (Some(1000), Some(30)));
        assert_eq!(v1.debug, Some(true));
        let anns: Vec<(i64, &str)> = v1
            .annotations
            .iter()
            .map(|a| (a.timestamp, &*a.value))
            .collect();
        assert_eq!(anns, [(1000, "cs"), (1010, "sent"), (1030, "cr")]);
        let host = v1.annotations[0].host.as_ref().unwrap();
        assert_eq!(host.ipv4, 0x0a000001);
        assert_eq!((host.port, &*host.service_name), (5000, "client"));
        let b = &v1.binary_annotations;
        assert_eq!(b.len(), 3);
        assert_eq!(
            (&*b[0].key, b[0].annotation_type),
            ("bytes", AnnotationType::I64)
        );
        assert_eq!(*b[0].value, 4096i64.to_be_bytes());
        assert_eq!(
            (&*b[1].key, b[1].annotation_type),
            ("object", AnnotationType::String)
        );
        assert_eq!(*b[1].value, *b"obj");
        assert_eq!(
            (&*b[2].key, b[2].annotation_type),
            ("sa", AnnotationType::Bool)
        );
        assert_eq!(*b[2].value, [1]);
        assert_eq!(b[2].host.as_ref().unwrap().service_name, "osd");
    }

    #[test]
    fn integer_tags_are_decimal_strings_by_default() {
        let c = client();
        let v1 = V1Span::from_v2(&c).unwrap();
        let b = &v1.binary_annotations[0];
        assert_eq!(
            (&*b.key, b.annotation_type),
            ("bytes", AnnotationType::String)
        );
        assert_eq!(*b.value, *b"4096");
    }

    #[test]
    fn shared_server_span_has_no_timestamp_and_ca_address() {
        let mut s = client();
        s.kind = Some(SpanKind::Server);
        s.shared = Some(true);
        s.trace_id = "48485a3953bb6124".into();
        let v1 = V1Span::from_v2(&s).unwrap();
        assert_eq!(v1.trace_id_high, None);
        assert_eq!((v1.timestamp, v1.duration), (None, None));
        let values: Vec<&str> = v1.annotations.iter().map(|a| &*a.value).collect();
        assert_eq!(values, ["sr", "sent", "ss"]);
        assert_eq!(v1.annotations[2].timestamp, 1030);
        assert_eq!(v1.binary_annotations.last().unwrap().key, "ca");
    }

    #[test]
    fn local_span_without_annotations_gets_lc() {
        let s = Span {
            trace_id: "00000000000000aa".into(),
            id: "00000000000000ab".into(),
            timestamp: Some(5),
            duration: Some(1),
            local_endpoint: Some(ep("mapper", "10.0.0.3", 0)),
            ..Span::default()
        };
        let v1 = V1Span::from_v2(&s).unwrap();
        assert!(v1.annotations.is_empty());
        assert_eq!(v1.binary_annotations.len(), 1);
        assert_eq!(v1.binary_annotations[0].key, "lc");
        assert!(v1.binary_annotations[0].value.is_empty());
        assert_eq!((v1.timestamp, v1.duration), (Some(5), Some(1)));
    }

    #[test]
    fn consumer_without_duration_gets_only_mr_and_ipv6_is_kept() {
        let mut e = ep("q", "1.2.3.4", 1);
        e.ipv6 = Some("2001:db8::1".into());
        let s = Span {
            trace_id: "00000000000000aa".into(),
            id: "00000000000000ac".into(),
            kind: Some(SpanKind::Consumer),
            timestamp: Some(7),
            local_endpoint: Some(e),
            ..Span::default()
        };
        let v1 = V1Span::from_v2(&s).unwrap();
        let values: Vec<&str> = v1.annotations.iter().map(|a| &*a.value).collect();
        assert_eq!(values, ["mr"]);
        let host = v1.annotations[0].host.as_ref().unwrap();
        assert_eq!(host.ipv6.unwrap()[..2], [0x20, 0x01]);
        assert_eq!(host.ipv4, 0x01020304);
    }

    #[test]
    fn bad_ids_are_errors() {
        for (field, mut s) in [
            ("traceId", client()),
            ("id", client()),
            ("parentId", client()),
        ] {
            match field {
                "traceId" => s.trace_id = "xyz".into(),
                "id" => s.id = "".into(),
                _ => s.parent_id = Some("00000000000000000001".into()),
            }
            let e = V1Span::from_v2(&s).unwrap_err();
            assert!(
                matches!(e, ConvertError::BadId { field: f, .. } if f == field),
                "{e}"
            );
        }
    }
}

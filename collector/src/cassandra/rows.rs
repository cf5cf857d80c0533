//! From a Zipkin v2 span to the rows Zipkin's Cassandra writer
//! (`CassandraSpanConsumer`, `InsertSpan`, `InsertTraceByService*`) would
//! write for it: pure functions, no I/O.

use std::collections::BTreeMap;
use std::net::IpAddr;

use scylla::value::{CqlTimeuuid, MaybeUnset};
use scylla::{SerializeRow, SerializeValue};

use crate::model::{Endpoint, Span};

/// Values longer than this (in UTF-16 units, as Java counts) stay out of
/// `annotation_query` (Zipkin's `RecyclableBuffers.SHORT_STRING_LENGTH`).
const SHORT_STRING_LENGTH: usize = 256;

/// The delimiter of `annotation_query` and of its SASI analyzer.
const QUERY_DELIMITER: char = '░';

/// Microseconds in one bucket of the `trace_by_service_*` tables (one day,
/// Zipkin's default `durationIndexBucket`).
const BUCKET_MICROS: u64 = 86_400 * 1_000_000;

/// The `endpoint` user-defined type.
#[derive(Debug, Clone, PartialEq, Eq, SerializeValue)]
pub(crate) struct EndpointUdt {
    service: Option<String>,
    ipv4: Option<IpAddr>,
    ipv6: Option<IpAddr>,
    port: i32,
}

/// The `annotation` user-defined type.
#[derive(Debug, Clone, PartialEq, Eq, SerializeValue)]
pub(crate) struct AnnotationUdt {
    ts: i64,
    v: String,
}

/// One row of the `span` table; absent values are unset, never null (a
/// null is a tombstone).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SpanRow {
    pub trace_id: String,
    pub trace_id_high: Option<String>,
    pub ts_uuid: CqlTimeuuid,
    pub parent_id: Option<String>,
    pub id: String,
    pub kind: Option<&'static str>,
    pub span: Option<String>,
    pub ts: u64,
    pub duration: u64,
    pub l_ep: Option<EndpointUdt>,
    pub r_ep: Option<EndpointUdt>,
    pub annotations: Vec<AnnotationUdt>,
    pub tags: BTreeMap<String, String>,
    pub debug: bool,
    pub shared: bool,
    pub l_service: Option<String>,
    pub annotation_query: Option<String>,
}

/// The bind values of the span insert, matched to its columns by name.
#[derive(SerializeRow)]
pub(crate) struct SpanValues<'a> {
    trace_id: &'a str,
    trace_id_high: MaybeUnset<&'a str>,
    ts_uuid: CqlTimeuuid,
    parent_id: MaybeUnset<&'a str>,
    id: &'a str,
    kind: MaybeUnset<&'static str>,
    span: MaybeUnset<&'a str>,
    ts: MaybeUnset<i64>,
    duration: MaybeUnset<i64>,
    l_ep: MaybeUnset<&'a EndpointUdt>,
    r_ep: MaybeUnset<&'a EndpointUdt>,
    annotations: MaybeUnset<&'a [AnnotationUdt]>,
    tags: MaybeUnset<&'a BTreeMap<String, String>>,
    debug: MaybeUnset<bool>,
    shared: MaybeUnset<bool>,
    l_service: MaybeUnset<&'a str>,
    annotation_query: MaybeUnset<&'a str>,
}

fn unset_none<T>(v: Option<T>) -> MaybeUnset<T> {
    v.map_or(MaybeUnset::Unset, MaybeUnset::Set)
}

fn unset_zero(v: u64) -> MaybeUnset<i64> {
    if v == 0 {
        MaybeUnset::Unset
    } else {
        MaybeUnset::Set(i64::try_from(v).unwrap_or(i64::MAX))
    }
}

impl SpanRow {
    /// The values to bind, with every absent column unset.
    pub(crate) fn values(&self) -> SpanValues<'_> {
        SpanValues {
            trace_id: &self.trace_id,
            trace_id_high: unset_none(self.trace_id_high.as_deref()),
            ts_uuid: self.ts_uuid,
            parent_id: unset_none(self.parent_id.as_deref()),
            id: &self.id,
            kind: unset_none(self.kind),
            span: unset_none(self.span.as_deref()),
            ts: unset_zero(self.ts),
            duration: unset_zero(self.duration),
            l_ep: unset_none(self.l_ep.as_ref()),
            r_ep: unset_none(self.r_ep.as_ref()),
            annotations: unset_none(
                (!self.annotations.is_empty()).then_some(&self.annotations[..]),
            ),
            tags: unset_none((!self.tags.is_empty()).then_some(&self.tags)),
            debug: unset_none(self.debug.then_some(true)),
            shared: unset_none(self.shared.then_some(true)),
            l_service: unset_none(self.l_service.as_deref()),
            annotation_query: unset_none(self.annotation_query.as_deref()),
        }
    }
}

/// One row of `trace_by_service_span` (`span` empty: the row that finds the
/// trace by service alone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TraceByServiceSpan {
    pub service: String,
    pub span: String,
    pub bucket: i32,
    pub ts: CqlTimeuuid,
    pub trace_id: String,
    /// Milliseconds; 0 (under a millisecond or unknown) is left unset.
    pub duration_ms: u64,
}

/// One row of `trace_by_service_remote_service`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TraceByServiceRemoteService {
    pub service: String,
    pub remote_service: String,
    pub bucket: i32,
    pub ts: CqlTimeuuid,
    pub trace_id: String,
}

/// Everything one span contributes; the `*_by_service` and autocomplete
/// entries are `(key, value)` pairs deduplicated by the writer.
#[derive(Debug, Default)]
pub(crate) struct SpanRows {
    pub span: Option<SpanRow>,
    pub trace_by_service_span: Vec<TraceByServiceSpan>,
    pub trace_by_service_remote_service: Option<TraceByServiceRemoteService>,
    pub service_span: Option<(String, String)>,
    pub service_remote_service: Option<(String, String)>,
    pub autocomplete_tags: Vec<(String, String)>,
}

/// Lower-cases `s` (Zipkin's span and service names are lower case) and
/// maps an empty string to absent, as Zipkin's builders do.
fn name(s: Option<&str>) -> Option<String> {
    s.filter(|s| !s.is_empty()).map(str::to_lowercase)
}

fn endpoint(ep: Option<&Endpoint>) -> Option<EndpointUdt> {
    let ep = ep?;
    let service = name(ep.service_name.as_deref());
    let ipv4 = ep.ipv4.as_deref().and_then(|s| s.parse::<IpAddr>().ok());
    let ipv6 = ep.ipv6.as_deref().and_then(|s| s.parse::<IpAddr>().ok());
    let port = ep.port.filter(|p| *p != 0);
    if service.is_none() && ipv4.is_none() && ipv6.is_none() && port.is_none() {
        return None; // Zipkin drops empty endpoints
    }
    Some(EndpointUdt {
        service,
        ipv4,
        ipv6,
        port: port.map_or(0, i32::from),
    })
}

fn kind_name(span: &Span) -> Option<&'static str> {
    use crate::model::SpanKind::*;
    span.kind.map(|k| match k {
        Client => "CLIENT",
        Server => "SERVER",
        Producer => "PRODUCER",
        Consumer => "CONSUMER",
    })
}

/// Zipkin's `CassandraUtil.annotationQuery`: `░` then every annotation value,
/// every tag key and every `key=value`, each followed by `░`; values over
/// 256 characters are skipped; absent when nothing is left.
pub(crate) fn annotation_query(span: &Span) -> Option<String> {
    let short = |s: &str| s.encode_utf16().count() <= SHORT_STRING_LENGTH;
    let mut q = String::new();
    q.push(QUERY_DELIMITER);
    for a in span.annotations.iter().filter(|a| short(&a.value)) {
        q.push_str(&a.value);
        q.push(QUERY_DELIMITER);
    }
    for (k, v) in span.tags.iter().filter(|(_, v)| short(v)) {
        q.push_str(k);
        q.push(QUERY_DELIMITER);
        q.push_str(k);
        q.push('=');
        q.push_str(v);
        q.push(QUERY_DELIMITER);
    }
    (q.chars().count() > 1).then_some(q)
}

/// 100-ns intervals between the UUID epoch (1582-10-15) and the Unix epoch.
const UUID_EPOCH_OFFSET_100NS: u64 = 0x01B2_1DD2_1381_4000;

/// A version-1 UUID whose time is `millis` (as the Java driver's
/// `Uuids.startOf`) and whose clock-sequence/node half is a hash of the
/// span's identity. Zipkin uses random low bits; a hash keeps the two halves
/// of a shared RPC span apart the same way while making a re-sent span
/// overwrite its own rows, so retries are idempotent.
pub(crate) fn ts_uuid(millis: u64, identity: u64) -> CqlTimeuuid {
    let t = millis
        .saturating_mul(10_000)
        .saturating_add(UUID_EPOCH_OFFSET_100NS);
    let time_low = (t & 0xFFFF_FFFF) as u32;
    let time_mid = ((t >> 32) & 0xFFFF) as u16;
    let time_hi = ((t >> 48) & 0x0FFF) as u16 | 0x1000; // version 1
    let mut b = [0u8; 16];
    b[0..4].copy_from_slice(&time_low.to_be_bytes());
    b[4..6].copy_from_slice(&time_mid.to_be_bytes());
    b[6..8].copy_from_slice(&time_hi.to_be_bytes());
    // IETF variant (10xx xxxx) in the clock sequence's first byte.
    let lsb = (identity & 0x3FFF_FFFF_FFFF_FFFF) | 0x8000_0000_0000_0000;
    b[8..16].copy_from_slice(&lsb.to_be_bytes());
    CqlTimeuuid::from_bytes(b)
}

/// FNV-1a over the fields that tell the rows of one span apart.
fn span_identity(span: &Span) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes.iter().chain(&[0xff]) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    eat(span.trace_id.as_bytes());
    eat(span.id.as_bytes());
    eat(kind_name(span).unwrap_or("").as_bytes());
    eat(&[u8::from(span.shared == Some(true))]);
    let local = span.local_endpoint.as_ref();
    eat(local
        .and_then(|e| e.service_name.as_deref())
        .unwrap_or("")
        .as_bytes());
    eat(local
        .and_then(|e| e.ipv4.as_deref())
        .unwrap_or("")
        .as_bytes());
    eat(&local.and_then(|e| e.port).unwrap_or(0).to_be_bytes());
    h
}

/// The span's timestamp, else its first annotation's (Zipkin's
/// `guessTimestamp`), else 0.
pub(crate) fn span_timestamp(span: &Span) -> u64 {
    match span.timestamp.filter(|t| *t != 0) {
        Some(t) => t,
        None => span
            .annotations
            .iter()
            .map(|a| a.timestamp)
            .find(|t| *t > 0)
            .unwrap_or(0),
    }
}

/// What the writer stores for `span`. `now_millis` stands in for a missing
/// timestamp in `ts_uuid` (so the row still says when it was written), as in
/// Zipkin. `strict_trace_id` false keeps only the low 64 bits of a 128-bit
/// trace id in `trace_id` (the high half goes to `trace_id_high`).
pub(crate) fn span_rows(
    span: &Span,
    now_millis: u64,
    strict_trace_id: bool,
    search: bool,
    autocomplete_keys: &[String],
) -> SpanRows {
    let ts_micro = span_timestamp(span);
    let millis = if ts_micro != 0 {
        ts_micro / 1000
    } else {
        now_millis
    };
    let ts_uuid = ts_uuid(millis, span_identity(span));
    let trace_id = span.trace_id.to_ascii_lowercase();
    let (trace_id_high, trace_id_low) = if !strict_trace_id && trace_id.len() == 32 {
        (Some(trace_id[..16].to_string()), trace_id[16..].to_string())
    } else {
        (None, trace_id.clone())
    };
    let index_trace_id = trace_id_low.clone();
    let l_ep = endpoint(span.local_endpoint.as_ref());
    let r_ep = endpoint(span.remote_endpoint.as_ref());
    let local_service = l_ep.as_ref().and_then(|e| e.service.clone());
    let remote_service = r_ep.as_ref().and_then(|e| e.service.clone());
    let span_name = name(span.name.as_deref());
    let mut rows = SpanRows {
        span: Some(SpanRow {
            trace_id: trace_id_low,
            trace_id_high,
            ts_uuid,
            parent_id: span.parent_id.clone(),
            id: span.id.clone(),
            kind: kind_name(span),
            span: span_name.clone(),
            ts: span.timestamp.unwrap_or(0),
            duration: span.duration.unwrap_or(0),
            l_ep,
            r_ep,
            annotations: span
                .annotations
                .iter()
                .map(|a| AnnotationUdt {
                    ts: i64::try_from(a.timestamp).unwrap_or(i64::MAX),
                    v: a.value.clone(),
                })
                .collect(),
            tags: span.tags.clone(),
            debug: span.debug == Some(true),
            shared: span.shared == Some(true),
            l_service: if search { local_service.clone() } else { None },
            annotation_query: if search { annotation_query(span) } else { None },
        }),
        ..SpanRows::default()
    };
    if !search {
        return rows;
    }
    // Index rows exactly as CassandraSpanConsumer.accept: nothing without a
    // local service, no trace lookups without a timestamp.
    let Some(service) = local_service else {
        return rows;
    };
    let span_name = span_name.unwrap_or_default();
    if let Some(remote) = &remote_service {
        rows.service_remote_service = Some((service.clone(), remote.clone()));
    }
    rows.service_span = Some((service.clone(), span_name.clone()));
    if ts_micro == 0 {
        return rows;
    }
    let bucket = i32::try_from(ts_micro / BUCKET_MICROS).unwrap_or(i32::MAX);
    let duration_ms = span.duration.unwrap_or(0) / 1000;
    let by_span = |span: String| TraceByServiceSpan {
        service: service.clone(),
        span,
        bucket,
        ts: ts_uuid,
        trace_id: index_trace_id.clone(),
        duration_ms,
    };
    rows.trace_by_service_span.push(by_span(span_name.clone()));
    if span_name.is_empty() {
        return rows;
    }
    if let Some(remote) = remote_service {
        rows.trace_by_service_remote_service = Some(TraceByServiceRemoteService {
            service: service.clone(),
            remote_service: remote,
            bucket,
            ts: ts_uuid,
            trace_id: index_trace_id.clone(),
        });
    }
    rows.trace_by_service_span.push(by_span(String::new()));
    rows.autocomplete_tags = span
        .tags
        .iter()
        .filter(|(k, _)| autocomplete_keys.iter().any(|a| a == *k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Annotation, SpanKind};

    fn span() -> Span {
        Span {
            trace_id: "463ac35c9f6413ad48485a3953bb6124".into(),
            parent_id: Some("0000000000000001".into()),
            id: "0000000000000002".into(),
            kind: Some(SpanKind::Client),
            name: Some("Read".into()),
            timestamp: Some(1_700_000_000_123_456),
            duration: Some(2_500),
            local_endpoint: Some(Endpoint {
                service_name: Some("Volume".into()),
                ipv4: Some("10.0.0.1".into()),
                port: Some(6800),
                ..Endpoint::default()
            }),
            remote_endpoint: Some(Endpoint {
                service_name: Some("mapper".into()),
                ..Endpoint::default()
            }),
            annotations: vec![Annotation {
                timestamp: 1_700_000_000_123_500,
                value: "queued".into(),
            }],
            tags: [
                ("error".to_string(), "timeout".to_string()),
                ("big".to_string(), "x".repeat(300)),
            ]
            .into(),
            ..Span::default()
        }
    }

    #[test]
    fn annotation_query_is_zipkins() {
        assert_eq!(
            annotation_query(&span()).as_deref(),
            Some("░queued░error░error=timeout░")
        );
        let bare = Span {
            annotations: vec![],
            tags: BTreeMap::new(),
            ..span()
        };
        assert_eq!(annotation_query(&bare), None);
    }

    #[test]
    fn ts_uuid_is_a_version_1_uuid_of_the_millisecond() {
        let u = ts_uuid(1_700_000_000_123, 42);
        let b = u.as_bytes();
        assert_eq!(b[6] >> 4, 1, "version 1");
        assert_eq!(b[8] >> 6, 0b10, "IETF variant");
        // Decode the 60-bit time back.
        let hi = u64::from(u16::from_be_bytes([b[6], b[7]]) & 0x0FFF);
        let mid = u64::from(u16::from_be_bytes([b[4], b[5]]));
        let low = u64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        let t = (hi << 48) | (mid << 32) | low;
        assert_eq!((t - UUID_EPOCH_OFFSET_100NS) / 10_000, 1_700_000_000_123);
    }

    #[test]
    fn rows_follow_zipkins_consumer() {
        let rows = span_rows(&span(), 0, false, true, &["error".to_string()]);
        let s = rows.span.as_ref().unwrap();
        assert_eq!(s.trace_id, "48485a3953bb6124");
        assert_eq!(s.trace_id_high.as_deref(), Some("463ac35c9f6413ad"));
        assert_eq!(s.span.as_deref(), Some("read"));
        assert_eq!(s.kind, Some("CLIENT"));
        assert_eq!(s.l_service.as_deref(), Some("volume"));
        assert_eq!(s.l_ep.as_ref().unwrap().port, 6800);
        assert_eq!(rows.service_span, Some(("volume".into(), "read".into())));
        assert_eq!(
            rows.service_remote_service,
            Some(("volume".into(), "mapper".into()))
        );
        let by_span: Vec<_> = rows
            .trace_by_service_span
            .iter()
            .map(|r| {
                (
                    r.span.as_str(),
                    r.bucket,
                    r.duration_ms,
                    r.trace_id.as_str(),
                )
            })
            .collect();
        assert_eq!(
            by_span,
            [
                ("read", 19675, 2, "48485a3953bb6124"),
                ("", 19675, 2, "48485a3953bb6124")
            ]
        );
        assert_eq!(
            rows.trace_by_service_remote_service
                .as_ref()
                .unwrap()
                .remote_service,
            "mapper"
        );
        assert_eq!(rows.autocomplete_tags, [("error".into(), "timeout".into())]);

        // Strict trace ids keep all 32 characters in trace_id.
        let strict = span_rows(&span(), 0, true, true, &[]);
        assert_eq!(
            strict.span.unwrap().trace_id,
            "463ac35c9f6413ad48485a3953bb6124"
        );
    }

    #[test]
    fn no_index_rows_without_service_or_timestamp() {
        let no_service = Span {
            local_endpoint: None,
            ..span()
        };
        let rows = span_rows(&no_service, 0, true, true, &[]);
        assert!(rows.span.is_some());
        assert!(rows.service_span.is_none() && rows.trace_by_service_span.is_empty());

        let no_ts = Span {
            timestamp: None,
            annotations: vec![],
            ..span()
        };
        let rows = span_rows(&no_ts, 1_234, true, true, &[]);
        assert!(rows.service_span.is_some());
        assert!(rows.trace_by_service_span.is_empty());
        assert_eq!(rows.span.unwrap().ts, 0);
    }

    #[test]
    fn halves_of_a_shared_span_get_distinct_ts_uuids_and_resends_the_same() {
        let client = span();
        let server = Span {
            kind: Some(SpanKind::Server),
            shared: Some(true),
            local_endpoint: Some(Endpoint {
                service_name: Some("mapper".into()),
                ..Endpoint::default()
            }),
            ..span()
        };
        let a = span_rows(&client, 0, true, true, &[]).span.unwrap().ts_uuid;
        let b = span_rows(&server, 0, true, true, &[]).span.unwrap().ts_uuid;
        let again = span_rows(&client, 0, true, true, &[]).span.unwrap().ts_uuid;
        assert_ne!(a, b);
        assert_eq!(a, again);
    }
}

//! The embedded store through its Rust API: merging, Zipkin's query
//! semantics over real SQLite, retention and persistence.

mod support;

use std::time::Duration;

use blkkin_collector::assemble::SpanLimits;
use blkkin_collector::model::{Annotation, SpanKind};
use blkkin_collector::store::query::parse_annotation_query;
use blkkin_collector::store::{QueryRequest, Store, StoreConfig, StoreLocation};
use support::{now_ms, rpc, span};

fn ids(traces: &[Vec<blkkin_collector::model::Span>]) -> Vec<String> {
    traces.iter().map(|t| t[0].trace_id.clone()).collect()
}

#[test]
fn reinserting_is_idempotent_and_late_reports_merge() {
    let store = Store::open_in_memory().unwrap();
    let now = now_ms();
    let mut first = span("a", "1", None, "OSD", "Write", now);
    first.duration = None;
    store.insert(&[first.clone()]).unwrap();
    store.insert(&[first.clone()]).unwrap();
    let mut late = first.clone();
    late.duration = Some(70);
    late.annotations.push(Annotation {
        timestamp: now * 1000 + 5,
        value: "journal".into(),
    });
    late.tags.insert("bytes".into(), "4096".into());
    store.insert(&[late]).unwrap();

    let trace = store
        .trace("000000000000000A".to_lowercase().as_str())
        .unwrap();
    assert_eq!(trace.len(), 1, "{trace:?}");
    let s = &trace[0];
    assert_eq!(s.trace_id, "000000000000000a");
    assert_eq!(s.id, "0000000000000001");
    assert_eq!(s.name.as_deref(), Some("write"));
    assert_eq!(
        s.local_endpoint.as_ref().unwrap().service_name.as_deref(),
        Some("osd")
    );
    assert_eq!(s.duration, Some(70));
    assert_eq!(s.annotations.len(), 1);
    assert_eq!(s.tags["bytes"], "4096");
    let stats = store.stats();
    assert_eq!((stats.spans_inserted, stats.spans_merged), (1, 2));

    // Client and shared server halves of one RPC stay two spans.
    let client = rpc(
        span("b", "2", None, "client", "get", now),
        SpanKind::Client,
        Some("osd"),
    );
    let mut server = rpc(
        span("b", "2", None, "osd", "get", now),
        SpanKind::Server,
        None,
    );
    server.shared = Some(true);
    store.insert(&[client, server]).unwrap();
    assert_eq!(store.trace("b").unwrap().len(), 2);
}

#[test]
fn a_zero_id_span_is_refused_alone_and_its_499_neighbours_are_stored() {
    let store = Store::open_in_memory().unwrap();
    let now = now_ms();
    let mut spans: Vec<_> = (1..=499)
        .map(|i| span("a", &format!("{i:x}"), None, "osd", "x", now))
        .collect();
    spans.insert(250, span("a", "0", None, "osd", "x", now));
    let outcome = store.insert(&spans).unwrap();
    assert_eq!((outcome.stored, outcome.rejected), (499, 1));
    let why = outcome.rejection_text().unwrap();
    assert!(
        why.starts_with("span 250:") && why.contains("all zeros"),
        "{why}"
    );
    assert_eq!(store.span_count().unwrap(), 499);
    assert_eq!(store.trace("a").unwrap().len(), 499);
    assert_eq!(store.stats().spans_rejected, 1);
    assert_eq!(store.stats().spans_inserted, 499);
}

#[test]
fn invalid_spans_are_refused_and_counted_one_by_one() {
    let store = Store::open_in_memory().unwrap();
    let good = span("a", "1", None, "osd", "x", now_ms());
    let bad = span("xyz", "1", None, "osd", "x", now_ms());
    let zero_trace = span("0000", "2", None, "osd", "x", now_ms());
    let outcome = store.insert(&[good, bad, zero_trace]).unwrap();
    let why = outcome.rejection_text().unwrap();
    assert!(why.contains("traceId \"xyz\""), "{why}");
    assert!(why.contains("and 1 more"), "{why}");
    assert_eq!(store.span_count().unwrap(), 1, "the good span is stored");
    assert_eq!(store.stats().spans_rejected, 2);
    assert!(store.trace("not-hex").is_err());
}

/// Posted spans (and merges of reports) are held to the same per-span caps
/// as assembled ones: before, a span could grow without bound.
#[test]
fn stored_spans_are_capped_and_the_cuts_counted() {
    let store = Store::open_with(
        StoreLocation::Memory,
        StoreConfig {
            limits: SpanLimits {
                max_annotations: 2,
                max_tags: 2,
                max_value_bytes: 4,
            },
            ..StoreConfig::default()
        },
    )
    .unwrap();
    let now = now_ms();
    let mut s = span("a", "1", None, "osd", "x", now);
    for (i, v) in ["e1", "e2", "e3"].iter().enumerate() {
        s.annotations.push(Annotation {
            timestamp: now * 1000 + i as u64,
            value: v.to_string(),
        });
    }
    s.tags.insert("a".into(), "123456".into());
    s.tags.insert("b".into(), "1".into());
    s.tags.insert("c".into(), "1".into());
    store.insert(&[s]).unwrap();
    let mut late = span("a", "1", None, "osd", "x", now);
    late.tags.insert("0".into(), "late".into());
    store.insert(&[late]).unwrap();
    let got = &store.trace("a").unwrap()[0];
    let values: Vec<&str> = got.annotations.iter().map(|a| a.value.as_str()).collect();
    assert_eq!(values, ["e1", "e2"]);
    let tags: Vec<(&str, &str)> = got
        .tags
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(tags, [("0", "late"), ("a", "1234")]);
    let st = store.stats();
    assert_eq!(
        (st.annotations_dropped, st.tags_dropped, st.values_truncated),
        (1, 2, 1),
        "one tag cut at insert, one after the merge"
    );
}

#[test]
fn names_are_indexed_lowercase() {
    let store = Store::open_in_memory().unwrap();
    let now = now_ms();
    store
        .insert(&[
            rpc(
                span("a", "1", None, "Client", "GET", now),
                SpanKind::Client,
                Some("Volume"),
            ),
            span("a", "2", Some("1"), "Volume", "Write", now),
            span("c", "3", None, "volume", "read", now),
        ])
        .unwrap();
    assert_eq!(store.service_names().unwrap(), ["client", "volume"]);
    assert_eq!(store.span_names("VOLUME").unwrap(), ["read", "write"]);
    assert_eq!(store.remote_service_names("client").unwrap(), ["volume"]);
    assert!(store.span_names("nobody").unwrap().is_empty());
}

#[test]
fn traces_newest_first_with_limit_and_lookback() {
    let store = Store::open_in_memory().unwrap();
    let now = now_ms();
    let spans: Vec<_> = (1..=5u64)
        .map(|i| span(&format!("{i:x}"), "1", None, "osd", "op", now - i * 60_000))
        .collect();
    store.insert(&spans).unwrap();
    let q = QueryRequest::new(now);
    assert_eq!(
        ids(&store.traces(&q).unwrap()),
        [
            "0000000000000001",
            "0000000000000002",
            "0000000000000003",
            "0000000000000004",
            "0000000000000005"
        ]
    );
    let limited = QueryRequest {
        limit: 2,
        ..q.clone()
    };
    assert_eq!(
        ids(&store.traces(&limited).unwrap()),
        ["0000000000000001", "0000000000000002"]
    );
    // A window of 2.5 minutes ending now holds traces 1 and 2.
    let window = QueryRequest {
        lookback: 150_000,
        ..q.clone()
    };
    assert_eq!(store.traces(&window).unwrap().len(), 2);
    // Ending 3.5 minutes ago: traces 4 and 5 (3 is 3 minutes ago).
    let earlier = QueryRequest {
        end_ts: now - 210_000,
        ..q
    };
    assert_eq!(
        ids(&store.traces(&earlier).unwrap()),
        ["0000000000000004", "0000000000000005"]
    );
}

#[test]
fn trace_queries_apply_every_criterion() {
    let store = Store::open_in_memory().unwrap();
    let now = now_ms();
    let mut slow = rpc(
        span("a", "1", None, "client", "get", now - 10),
        SpanKind::Client,
        Some("volume"),
    );
    slow.duration = Some(900_000);
    slow.tags.insert("http.method".into(), "GET".into());
    let mut failed = span("a", "2", Some("1"), "volume", "write", now - 9);
    failed.tags.insert("error".into(), "EIO".into());
    failed.annotations.push(Annotation {
        timestamp: (now - 9) * 1000,
        value: "journal".into(),
    });
    let other = span("b", "3", None, "client", "put", now - 5);
    store.insert(&[slow, failed, other]).unwrap();

    let q = |f: &dyn Fn(&mut QueryRequest)| {
        let mut q = QueryRequest::new(now);
        f(&mut q);
        ids(&store.traces(&q.validated().unwrap()).unwrap())
    };
    let a = vec!["000000000000000a".to_string()];
    assert_eq!(q(&|_| {}).len(), 2);
    assert_eq!(q(&|q| q.service_name = Some("VOLUME".into())), a);
    assert_eq!(q(&|q| q.span_name = Some("Write".into())), a);
    assert!(q(&|q| {
        q.service_name = Some("client".into());
        q.span_name = Some("write".into());
    })
    .is_empty());
    assert_eq!(q(&|q| q.remote_service_name = Some("volume".into())), a);
    assert_eq!(
        q(&|q| q.annotation_query = parse_annotation_query("error and http.method=GET")),
        a
    );
    assert_eq!(
        q(&|q| q.annotation_query = parse_annotation_query("journal")),
        a
    );
    assert!(q(&|q| q.annotation_query = parse_annotation_query("error=ENOSPC")).is_empty());
    assert!(q(&|q| {
        q.service_name = Some("client".into());
        q.annotation_query = parse_annotation_query("error");
    })
    .is_empty());
    assert_eq!(q(&|q| q.min_duration = Some(500_000)), a);
    assert_eq!(
        q(&|q| {
            q.min_duration = Some(1000);
            q.max_duration = Some(1000);
        })
        .len(),
        2
    );
    assert!(q(&|q| {
        q.min_duration = Some(1001);
        q.max_duration = Some(899_999);
    })
    .is_empty());
}

#[test]
fn dependencies_within_the_window() {
    let store = Store::open_in_memory().unwrap();
    let now = now_ms();
    let client = rpc(
        span("a", "1", None, "client", "get", now - 1000),
        SpanKind::Client,
        Some("volume"),
    );
    let mut server = rpc(
        span("a", "1", None, "volume", "get", now - 1000),
        SpanKind::Server,
        Some("client"),
    );
    server.shared = Some(true);
    server.tags.insert("error".into(), "EIO".into());
    let old_client = rpc(
        span("b", "1", None, "client", "get", now - 3_600_000),
        SpanKind::Client,
        Some("mapper"),
    );
    store.insert(&[client, server, old_client]).unwrap();
    let links = store.dependencies(now, 60_000).unwrap();
    assert_eq!(links.len(), 1);
    assert_eq!(
        (links[0].parent.as_str(), links[0].child.as_str()),
        ("client", "volume")
    );
    assert_eq!((links[0].call_count, links[0].error_count), (1, 1));
    assert_eq!(store.dependencies(now, 86_400_000).unwrap().len(), 2);
    assert!(store.dependencies(now, 0).is_err());
}

#[test]
fn retention_deletes_old_traces_and_bounds_size() {
    let config = StoreConfig {
        retention: Duration::from_secs(3600),
        max_spans: 3,
        autocomplete_keys: Some(vec!["error".into()]),
        ..StoreConfig::default()
    };
    let store = Store::open_with(StoreLocation::Memory, config).unwrap();
    let now = now_ms();
    let mut old = span("1", "1", None, "osd", "old", now - 7_200_000);
    old.tags.insert("error".into(), "stale".into());
    let mut fresh: Vec<_> = (2..=5u64)
        .map(|i| span(&format!("{i:x}"), "1", None, "osd", "new", now - 100 + i))
        .collect();
    fresh[0].tags.insert("error".into(), "EIO".into());
    fresh[0].tags.insert("host".into(), "n1".into());
    store.insert(&[old]).unwrap();
    store.insert(&fresh).unwrap();
    assert_eq!(
        store.autocomplete_values("error").unwrap(),
        ["EIO", "stale"]
    );
    assert!(
        store.autocomplete_values("host").unwrap().is_empty(),
        "not a configured key"
    );

    let (traces, spans) = store.enforce_retention(now * 1000).unwrap();
    assert_eq!(
        (traces, spans),
        (2, 2),
        "the expired trace and the oldest fresh one"
    );
    assert!(store.trace("1").unwrap().is_empty());
    assert!(store.trace("2").unwrap().is_empty());
    assert_eq!(store.span_count().unwrap(), 3);
    assert_eq!(store.autocomplete_values("error").unwrap(), ["EIO"]);
    let stats = store.stats();
    assert_eq!((stats.traces_expired, stats.spans_expired), (2, 2));
}

#[test]
fn file_store_persists_and_serves_a_second_reader() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spans.db");
    let now = now_ms();
    {
        let store = Store::open_file(&path).unwrap();
        store
            .insert(&[span("a", "1", None, "osd", "op", now)])
            .unwrap();
        // Visible through the reader connection as soon as insert returns.
        assert_eq!(store.trace("a").unwrap().len(), 1);
    }
    let reopened = Store::open_file(&path).unwrap();
    assert_eq!(reopened.service_names().unwrap(), ["osd"]);
    assert_eq!(reopened.traces(&QueryRequest::new(now)).unwrap().len(), 1);
}

#[test]
fn traces_are_ordered_by_their_newest_span_then_trace_id() {
    let store = Store::open_in_memory().unwrap();
    let now = now_ms();
    store
        .insert(&[
            // Trace 1's root is oldest, but its child is the newest span.
            span("1", "1", None, "osd", "op", now - 5000),
            span("1", "2", Some("1"), "osd", "op", now - 100),
            // Traces 3 and 2 share their millisecond: trace id decides.
            span("3", "1", None, "osd", "op", now - 2000),
            span("2", "1", None, "osd", "op", now - 2000),
            span("4", "1", None, "osd", "op", now - 3000),
        ])
        .unwrap();
    let all = store.traces(&QueryRequest::new(now)).unwrap();
    assert_eq!(
        ids(&all),
        [
            "0000000000000001",
            "0000000000000002",
            "0000000000000003",
            "0000000000000004"
        ]
    );
    assert_eq!(all[0].len(), 2, "whole traces are returned");
    // A window ending before trace 1's child still finds trace 1 by its root.
    let earlier = QueryRequest {
        end_ts: now - 1000,
        ..QueryRequest::new(now)
    };
    let found = store.traces(&earlier).unwrap();
    assert_eq!(
        ids(&found),
        [
            "0000000000000002",
            "0000000000000003",
            "0000000000000004",
            "0000000000000001"
        ]
    );
}

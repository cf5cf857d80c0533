//! The same spans posted to the embedded store and to the real Zipkin
//! server (3.6.1, in-memory storage): the same queries must return the same
//! traces (ids, order and spans), names, dependency links and statuses.
//!
//! Needs Java 17 and the Zipkin jar (fetched once with `mvn` by
//! scripts/zipkin.sh into `$BLKKIN_CACHE/zipkin`, default
//! `~/.cache/blkkin/zipkin`); fails without them unless BLKKIN_SKIP_ZIPKIN=1
//! is set.

mod support;

use std::time::{Duration, Instant};

use blkkin_collector::model::{Annotation, Span, SpanKind};
use blkkin_collector::store::{Store, StoreConfig, StoreLocation};
use serde_json::Value;
use support::{cors, get, now_ms, post, rpc, span, Answer, StoreServer, Zipkin};

const AUTOCOMPLETE: &str = "http.method,error";
const T1: &str = "1000000000000001";
const T2: &str = "463ac35c9f6413ad48485a3953bb6124";
const T3: &str = "3000000000000003";
const T4: &str = "4000000000000004";
const T5: &str = "5000000000000005";
const T6: &str = "6000000000000006";

fn shared(mut s: Span) -> Span {
    s.shared = Some(true);
    s
}

/// Six traces: an RPC chain with shared server spans and a local span, a
/// 128-bit trace, messaging, one two days old, a headless one, a root with
/// an annotation. Names in mixed case (both lower-case them).
fn dataset(now: u64) -> Vec<Span> {
    let mut a_client = rpc(
        span(T1, "a", None, "Client", "GET", now - 10_000),
        SpanKind::Client,
        Some("Volume"),
    );
    a_client.duration = Some(5000);
    a_client.tags.insert("http.method".into(), "GET".into());
    let mut a_server = shared(rpc(
        span(T1, "a", None, "volume", "get", now - 9_990),
        SpanKind::Server,
        Some("client"),
    ));
    a_server.duration = Some(4000);
    a_server.annotations.push(Annotation {
        timestamp: (now - 9_985) * 1000,
        value: "journal".into(),
    });
    let mut b_client = rpc(
        span(T1, "b", Some("a"), "volume", "map", now - 9_980),
        SpanKind::Client,
        Some("mapper"),
    );
    b_client.duration = Some(3000);
    let mut b_server = shared(rpc(
        span(T1, "b", Some("a"), "mapper", "MAP", now - 9_979),
        SpanKind::Server,
        None,
    ));
    b_server.tags.insert("error".into(), "EIO".into());
    let mut c_local = span(T1, "c", Some("b"), "mapper", "compute", now - 9_970);
    c_local.duration = Some(10);

    let mut read = rpc(
        span(T2, "d", None, "OSD", "read", now - 20_000),
        SpanKind::Server,
        Some("client"),
    );
    read.duration = Some(200_000);
    read.tags.insert("error".into(), "timeout".into());

    let mut produce = rpc(
        span(T3, "e", None, "writer", "send", now - 30_000),
        SpanKind::Producer,
        Some("kafka"),
    );
    produce.tags.insert("http.method".into(), "POST".into());
    let consume = rpc(
        span(T3, "f", Some("e"), "reader", "receive", now - 29_990),
        SpanKind::Consumer,
        Some("kafka"),
    );

    let old = rpc(
        span(T4, "1", None, "client", "old", now - 2 * 86_400_000),
        SpanKind::Client,
        Some("volume"),
    );

    let mut orphan = span(
        T5,
        "2",
        Some("deadbeef00000000"),
        "volume",
        "orphan",
        now - 40_000,
    );
    orphan.duration = Some(100);

    let mut put = span(T6, "3", None, "Client", "put", now - 50_000);
    put.duration = Some(7);
    put.annotations.push(Annotation {
        timestamp: (now - 49_999) * 1000,
        value: "retry".into(),
    });

    vec![
        a_client, a_server, b_client, b_server, c_local, read, produce, consume, old, orphan, put,
    ]
}

/// A trace answer as (trace id, spans sorted) for order-insensitive span
/// comparison within a trace.
fn canonical_traces(v: &Value) -> Vec<(String, Vec<String>)> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list of traces: {v}"))
        .iter()
        .map(|t| {
            (
                t[0]["traceId"].as_str().unwrap().to_string(),
                canonical_spans(t),
            )
        })
        .collect()
}

fn canonical_spans(v: &Value) -> Vec<String> {
    let mut spans: Vec<String> = v
        .as_array()
        .unwrap_or_else(|| panic!("not a span list: {v}"))
        .iter()
        .map(|s| serde_json::to_string(s).unwrap())
        .collect();
    spans.sort();
    spans
}

fn sorted(v: &Value) -> Vec<Value> {
    let mut items = v
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .clone();
    items.sort_by_key(|i| i.to_string());
    items
}

fn both(ours: &str, zipkin: &str, path: &str) -> (Answer, Answer) {
    (
        get(&format!("{ours}{path}")),
        get(&format!("{zipkin}{path}")),
    )
}

#[test]
fn same_queries_return_the_same_traces_as_real_zipkin() {
    let Some(zipkin) = Zipkin::start(AUTOCOMPLETE) else {
        return;
    };
    let config = StoreConfig {
        autocomplete_keys: Some(AUTOCOMPLETE.split(',').map(String::from).collect()),
        ..StoreConfig::default()
    };
    let ours = StoreServer::start(Store::open_with(StoreLocation::Memory, config).unwrap());
    let (o, z) = (ours.base.as_str(), zipkin.base.as_str());

    let now = now_ms();
    let body = serde_json::to_vec(&dataset(now)).unwrap();
    for base in [o, z] {
        let r = post(&format!("{base}/api/v2/spans"), "application/json", &body);
        assert_eq!(r.status, 202, "{base}: {}", r.body);
    }
    // Zipkin may store asynchronously: wait until every trace is readable.
    let deadline = Instant::now() + Duration::from_secs(30);
    for t in [T1, T2, T3, T4, T5, T6] {
        while get(&format!("{z}/api/v2/trace/{t}")).status != 200 {
            assert!(Instant::now() < deadline, "Zipkin never stored trace {t}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    let names = [
        "/api/v2/services".to_string(),
        "/api/v2/spans?serviceName=volume".into(),
        "/api/v2/spans?serviceName=MAPPER".into(),
        "/api/v2/spans?serviceName=nobody".into(),
        "/api/v2/spans?serviceName=".into(),
        "/api/v2/remoteServices?serviceName=client".into(),
        "/api/v2/remoteServices?serviceName=volume".into(),
        "/api/v2/autocompleteKeys".into(),
        "/api/v2/autocompleteValues?key=http.method".into(),
        "/api/v2/autocompleteValues?key=error".into(),
    ];
    for path in &names {
        let (a, b) = both(o, z, path);
        assert_eq!((a.status, b.status), (200, 200), "{path}");
        assert_eq!(sorted(&a.json()), sorted(&b.json()), "{path}");
    }

    let end = now;
    let queries = [
        String::new(),
        "?limit=2".into(),
        "?limit=3&lookback=35000".into(),
        "?serviceName=volume".into(),
        "?serviceName=VOLUME&spanName=MAP".into(),
        "?spanName=map".into(),
        "?spanName=all".into(),
        "?serviceName=volume&remoteServiceName=mapper".into(),
        "?serviceName=client&remoteServiceName=mapper".into(),
        "?annotationQuery=error".into(),
        "?annotationQuery=error%3DEIO".into(),
        "?annotationQuery=http.method%3DGET%20and%20journal".into(),
        "?annotationQuery=retry".into(),
        "?serviceName=client&annotationQuery=error".into(),
        "?minDuration=100000".into(),
        "?minDuration=3000&maxDuration=4000".into(),
        format!("?endTs={}", end - 15_000),
        format!("?endTs={}&lookback=10000", end - 15_000),
        format!("?endTs={end}&lookback={}", 3 * 86_400_000u64),
        format!(
            "?endTs={end}&lookback={}&serviceName=client&limit=1",
            3 * 86_400_000u64
        ),
    ];
    let mut non_empty = 0;
    for q in &queries {
        let path = format!("/api/v2/traces{q}");
        let (a, b) = both(o, z, &path);
        assert_eq!(
            (a.status, b.status),
            (200, 200),
            "{path}: {} / {}",
            a.body,
            b.body
        );
        let (a, b) = (canonical_traces(&a.json()), canonical_traces(&b.json()));
        assert_eq!(a, b, "{path}");
        non_empty += usize::from(!a.is_empty());
    }
    assert!(
        non_empty >= queries.len() - 3,
        "the queries must mostly find something"
    );

    for t in [T1, T2, T3, T4, T5, T6, "00000000000000001000000000000001"] {
        let path = format!("/api/v2/trace/{t}");
        let (a, b) = both(o, z, &path);
        assert_eq!((a.status, b.status), (200, 200), "{path}");
        assert_eq!(
            canonical_spans(&a.json()),
            canonical_spans(&b.json()),
            "{path}"
        );
    }
    let path = format!("/api/v2/traceMany?traceIds={T1},{T2},00000000000000ff");
    let (a, b) = both(o, z, &path);
    assert_eq!(
        canonical_traces(&a.json()),
        canonical_traces(&b.json()),
        "{path}"
    );

    for q in [
        format!("?endTs={end}"),
        format!("?endTs={end}&lookback={}", 3 * 86_400_000u64),
    ] {
        let path = format!("/api/v2/dependencies{q}");
        let (a, b) = both(o, z, &path);
        assert_eq!((a.status, b.status), (200, 200), "{path}");
        assert_eq!(sorted(&a.json()), sorted(&b.json()), "{path}");
        assert!(!a.json().as_array().unwrap().is_empty());
    }

    // Statuses agree on what is absent or malformed.
    for path in [
        "/api/v2/trace/00000000000000ff",
        "/api/v2/trace/100000000000000A",
        "/api/v2/trace/xyz",
        "/api/v2/traceMany?traceIds=1000000000000001",
        "/api/v2/traceMany?traceIds=",
        "/api/v2/remoteServices",
        "/api/v2/autocompleteValues",
        "/api/v2/traces?limit=0",
        "/api/v2/traces?lookback=-1",
        "/api/v2/traces?maxDuration=5",
        "/api/v2/traces?minDuration=5&maxDuration=4",
        "/api/v2/traces?limit=abc",
        "/api/v2/spans",
        "/api/v2/dependencies",
    ] {
        let (a, b) = both(o, z, path);
        assert_eq!(
            a.status, b.status,
            "{path}: ours {:?}, zipkin {:?}",
            a.body, b.body
        );
    }
    for bad in [
        &br#"[{"traceId":"a","id":"b""#[..],
        br#"[{"traceId":"A","id":"b"}]"#,
        br#"{"traceId":"a","id":"b"}"#,
    ] {
        let statuses: Vec<u16> = [o, z]
            .iter()
            .map(|base| post(&format!("{base}/api/v2/spans"), "application/json", bad).status)
            .collect();
        assert_eq!(statuses, [400, 400], "{}", String::from_utf8_lossy(bad));
    }

    // CORS: a browser UI on another origin gets the same answers from both
    // (Zipkin's grpc-web expose-headers aside: the store serves no gRPC).
    for (method, path, preflight) in [
        ("OPTIONS", "/api/v2/services", true),
        ("OPTIONS", "/api/v2/spans", true),
        ("GET", "/api/v2/services", false),
    ] {
        let ui = "http://grafana.example:3000";
        let a = cors(method, &format!("{o}{path}"), ui, preflight);
        let mut b = cors(method, &format!("{z}{path}"), ui, preflight);
        b.headers.remove("access-control-expose-headers");
        assert_eq!(a, b, "{method} {path}");
    }
}

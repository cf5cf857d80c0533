//! The embedded store's Zipkin v2 HTTP API with a real client on an
//! ephemeral port: shapes, semantics, and 4xx answers to bad input.

mod support;

use blkkin_collector::model::SpanKind;
use std::time::{Duration, Instant};

use blkkin_collector::store::{
    AllowedOrigins, ServerConfig, Store, StoreConfig, StoreLocation, MAX_BODY_BYTES,
};
use serde_json::json;
use support::{cors, get, now_ms, post, rpc, span, StoreServer};

fn server_with_trace() -> (StoreServer, u64) {
    let server = StoreServer::start(Store::open_in_memory().unwrap());
    let now = now_ms();
    let mut client = rpc(
        span("a", "1", None, "Client", "GET", now - 50),
        SpanKind::Client,
        Some("volume"),
    );
    client.tags.insert("http.method".into(), "GET".into());
    let mut srv = rpc(
        span("a", "1", None, "volume", "get", now - 49),
        SpanKind::Server,
        None,
    );
    srv.shared = Some(true);
    srv.tags.insert("error".into(), "EIO".into());
    let body = serde_json::to_vec(&[client, srv]).unwrap();
    let r = post(
        &format!("{}/api/v2/spans", server.base),
        "application/json",
        &body,
    );
    assert_eq!((r.status, r.body.as_str()), (202, ""));
    (server, now)
}

#[test]
fn query_api_answers_with_zipkin_shapes() {
    let (s, now) = server_with_trace();
    let b = &s.base;
    assert_eq!(
        get(&format!("{b}/api/v2/services")).json(),
        json!(["client", "volume"])
    );
    assert_eq!(
        get(&format!("{b}/api/v2/spans?serviceName=CLIENT")).json(),
        json!(["get"])
    );
    assert_eq!(
        get(&format!("{b}/api/v2/remoteServices?serviceName=client")).json(),
        json!(["volume"])
    );
    assert_eq!(
        get(&format!("{b}/api/v2/autocompleteKeys")).json(),
        json!(["error", "http.method"])
    );
    assert_eq!(
        get(&format!("{b}/api/v2/autocompleteValues?key=error")).json(),
        json!(["EIO"])
    );

    let trace = get(&format!("{b}/api/v2/trace/000000000000000a"));
    assert_eq!(trace.status, 200);
    let spans = trace.json();
    assert_eq!(spans.as_array().unwrap().len(), 2);
    assert_eq!(spans[0]["traceId"], "000000000000000a");
    assert_eq!(spans[0]["localEndpoint"]["serviceName"], "client");
    assert_eq!(spans[0]["kind"], "CLIENT");
    // 32-hex form of a 64-bit id finds the same trace.
    let long = get(&format!(
        "{b}/api/v2/trace/0000000000000000000000000000000a"
    ));
    assert_eq!(long.json(), spans);

    let traces = get(&format!("{b}/api/v2/traces?serviceName=Volume&annotationQuery=error%3DEIO&endTs={now}&lookback=60000"));
    assert_eq!(traces.status, 200);
    assert_eq!(traces.json().as_array().unwrap().len(), 1);
    assert_eq!(traces.json()[0].as_array().unwrap().len(), 2);
    let none = get(&format!(
        "{b}/api/v2/traces?serviceName=client&annotationQuery=error"
    ));
    assert_eq!(none.json(), json!([]), "error tag is on volume's span");
    let many = get(&format!("{b}/api/v2/traceMany?traceIds=a,00000000000000ff"));
    assert_eq!(many.json().as_array().unwrap().len(), 1);

    let deps = get(&format!("{b}/api/v2/dependencies?endTs={now}"));
    assert_eq!(
        deps.json(),
        json!([{"parent":"client","child":"volume","callCount":1,"errorCount":1}])
    );

    assert_eq!(
        cors(
            "GET",
            &format!("{b}/api/v2/services"),
            "http://ui:3000",
            false
        )
        .headers["access-control-allow-origin"],
        "*"
    );
    let health = get(&format!("{b}/health"));
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["status"], "UP");
    assert_eq!(health.json()["store"]["spansInserted"], 2);
}

#[test]
fn absent_trace_is_404() {
    let (s, _) = server_with_trace();
    let r = get(&format!("{}/api/v2/trace/00000000000000ff", s.base));
    assert_eq!(r.status, 404);
    assert!(r.body.contains("00000000000000ff not found"), "{}", r.body);
}

#[test]
fn bad_query_parameters_are_400_with_a_message() {
    let (s, _) = server_with_trace();
    let b = &s.base;
    let cases = [
        ("/api/v2/traces?limit=ten", "limit"),
        ("/api/v2/traces?limit=0", "limit <= 0"),
        ("/api/v2/traces?endTs=-5", "endTs <= 0"),
        ("/api/v2/traces?lookback=1e9", "lookback"),
        (
            "/api/v2/traces?maxDuration=10",
            "maxDuration is only valid with minDuration",
        ),
        (
            "/api/v2/traces?minDuration=10&maxDuration=5",
            "maxDuration < minDuration",
        ),
        (
            "/api/v2/traces?minDuration=99999999999999999999",
            "minDuration",
        ),
        ("/api/v2/trace/xyz", "lower-hex"),
        ("/api/v2/trace/0000000000000000", "all zeros"),
        (
            "/api/v2/trace/123456789012345678901234567890123",
            "longer than 32",
        ),
        ("/api/v2/traceMany?traceIds=a,zz", "lower-hex"),
        ("/api/v2/traceMany?traceIds=", "empty"),
        (
            "/api/v2/traceMany?traceIds=a,000000000000000a",
            "single trace",
        ),
        ("/api/v2/trace/000000000000000A", "lower-hex"),
        ("/api/v2/traceMany", "traceIds"),
        ("/api/v2/spans", "serviceName"),
        ("/api/v2/remoteServices", "serviceName"),
        ("/api/v2/autocompleteValues", "key"),
        ("/api/v2/dependencies", "endTs"),
        ("/api/v2/dependencies?endTs=1&lookback=0", "lookback <= 0"),
    ];
    for (path, needle) in cases {
        let r = get(&format!("{b}{path}"));
        assert_eq!(r.status, 400, "{path}: {}", r.body);
        assert!(
            r.body.contains(needle),
            "{path}: {:?} lacks {needle:?}",
            r.body
        );
    }
    // Unknown parameters are ignored, as Zipkin does.
    assert_eq!(get(&format!("{b}/api/v2/traces?bogus=1")).status, 200);
    // Still serving after all that.
    assert_eq!(get(&format!("{b}/api/v2/services")).status, 200);
}

#[test]
fn bad_posts_are_rejected_and_store_nothing() {
    let (s, _) = server_with_trace();
    let url = format!("{}/api/v2/spans", s.base);
    let json = "application/json";
    let cases: [(&str, &[u8], u16, &str); 8] = [
        (json, b"", 400, "empty body"),
        (json, b"[{\"traceId\":", 400, "malformed JSON"),
        (
            json,
            b"{\"traceId\":\"a\",\"id\":\"b\"}",
            400,
            "malformed JSON",
        ),
        (
            json,
            br#"[{"traceId":"a","id":"b","timestamp":-1}]"#,
            400,
            "malformed JSON",
        ),
        (
            json,
            br#"[{"traceId":"a","id":"b","kind":"SIDEWAYS"}]"#,
            400,
            "malformed JSON",
        ),
        (json, br#"[{"traceId":"XYZ","id":"b"}]"#, 400, "traceId"),
        (
            json,
            br#"[{"traceId":"a","id":"00000000000000000"}]"#,
            400,
            "id",
        ),
        ("application/x-thrift", b"\x0c", 415, "application/json"),
    ];
    for (ct, body, status, needle) in cases {
        let r = post(&url, ct, body);
        assert_eq!(
            r.status,
            status,
            "{:?}: {}",
            String::from_utf8_lossy(body),
            r.body
        );
        assert!(
            r.body.contains(needle),
            "{:?}: {:?} lacks {needle:?}",
            String::from_utf8_lossy(body),
            r.body
        );
    }
    let huge = vec![b' '; MAX_BODY_BYTES + 1];
    assert_eq!(post(&url, json, &huge).status, 413);
    assert_eq!(s.store.span_count().unwrap(), 2, "only the fixture's spans");
    assert_eq!(s.store.stats().spans_rejected, 2);
    // An empty list is accepted like Zipkin does.
    assert_eq!(post(&url, json, b"[]").status, 202);
}

/// A body without a Content-Type is refused, not guessed at: before, such
/// a POST overwrote a stored span's tag.
#[test]
fn a_post_without_content_type_is_refused_with_415() {
    let (s, now) = server_with_trace();
    let url = format!("{}/api/v2/spans", s.base);
    let mut changed = span("a", "1", None, "Client", "GET", now - 50);
    changed.tags.insert("http.method".into(), "DELETE".into());
    let body = serde_json::to_vec(&[changed]).unwrap();
    let r = support::post_without_content_type(&url, &body);
    assert_eq!(r.status, 415, "{}", r.body);
    assert!(r.body.contains("Content-Type"), "{}", r.body);
    for ct in ["text/plain", "application/x-www-form-urlencoded"] {
        assert_eq!(post(&url, ct, &body).status, 415, "{ct}");
    }
    let trace = get(&format!("{}/api/v2/trace/000000000000000a", s.base)).json();
    assert_eq!(trace[0]["tags"]["http.method"], "GET", "nothing was stored");
    assert_eq!(s.store.span_count().unwrap(), 2);
}

/// One invalid span of a POST is refused (400, named); its valid
/// neighbours are stored.
#[test]
fn a_post_with_one_invalid_span_stores_the_others() {
    let (s, now) = server_with_trace();
    let url = format!("{}/api/v2/spans", s.base);
    let good = span("b", "1", None, "osd", "read", now);
    let zero = span("b", "0", None, "osd", "read", now);
    let r = post(
        &url,
        "application/json",
        &serde_json::to_vec(&[good, zero]).unwrap(),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("stored 1 of 2 spans"), "{}", r.body);
    assert!(r.body.contains("span 1:"), "{}", r.body);
    assert_eq!(s.store.span_count().unwrap(), 3);
    assert_eq!(s.store.stats().spans_rejected, 1);
}

#[test]
fn retention_runs_in_the_background() {
    let config = StoreConfig {
        retention: Duration::from_secs(60),
        ..StoreConfig::default()
    };
    let store = Store::open_with(StoreLocation::Memory, config).unwrap();
    let server = StoreServer::start_with(
        store,
        ServerConfig {
            retention_interval: Duration::from_millis(100),
            ..ServerConfig::default()
        },
    );
    let now = now_ms();
    let spans = [
        span("1", "1", None, "osd", "old", now - 120_000),
        span("2", "1", None, "osd", "new", now),
    ];
    let body = serde_json::to_vec(&spans).unwrap();
    assert_eq!(
        post(
            &format!("{}/api/v2/spans", server.base),
            "application/json",
            &body
        )
        .status,
        202
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(&format!("{}/api/v2/trace/0000000000000001", server.base)).status != 404 {
        assert!(Instant::now() < deadline, "the old trace was never deleted");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        get(&format!("{}/api/v2/trace/0000000000000002", server.base)).status,
        200
    );
    let health = get(&format!("{}/health", server.base)).json();
    assert_eq!(health["store"]["tracesExpired"], 1);
}

#[test]
fn cors_preflight_and_answers_allow_any_origin_by_default() {
    let (server, _) = server_with_trace();
    let b = &server.base;
    let ui = "http://grafana.example:3000";
    for path in ["/api/v2/services", "/api/v2/traces", "/api/v2/spans"] {
        let pre = cors("OPTIONS", &format!("{b}{path}"), ui, true);
        assert_eq!(pre.status, 200, "{path}");
        assert_eq!(pre.headers["access-control-allow-origin"], "*");
        assert_eq!(pre.headers["access-control-allow-methods"], "GET,POST");
        assert_eq!(
            pre.headers["access-control-allow-headers"],
            "content-type,x-grpc-web"
        );
    }
    let ans = cors("GET", &format!("{b}/api/v2/services"), ui, false);
    assert_eq!(ans.status, 200);
    assert_eq!(ans.headers["access-control-allow-origin"], "*");
    // Not a CORS request (no Origin): no CORS headers, as Zipkin.
    assert_eq!(get(&format!("{b}/api/v2/services")).allow_origin, None);
}

#[test]
fn cors_with_listed_origins_echoes_them_and_ignores_others() {
    let server = StoreServer::start_with(
        Store::open_in_memory().unwrap(),
        ServerConfig {
            allowed_origins: AllowedOrigins::parse("http://ui.example,http://grafana:3000"),
            ..ServerConfig::default()
        },
    );
    let url = format!("{}/api/v2/services", server.base);
    let ok = cors("OPTIONS", &url, "http://grafana:3000", true);
    assert_eq!(ok.status, 200);
    assert_eq!(
        ok.headers["access-control-allow-origin"],
        "http://grafana:3000"
    );
    assert_eq!(ok.headers["vary"], "origin");
    let ans = cors("GET", &url, "http://UI.example", false);
    assert_eq!(ans.status, 200);
    assert_eq!(
        ans.headers["access-control-allow-origin"],
        "http://UI.example"
    );
    // Another origin: answered, but without CORS headers (the browser refuses).
    for preflight in [true, false] {
        let method = if preflight { "OPTIONS" } else { "GET" };
        let other = cors(method, &url, "http://evil.example", preflight);
        assert_eq!(other.status, 200);
        assert!(other.headers.is_empty(), "{:?}", other.headers);
    }
}

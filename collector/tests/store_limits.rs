//! The query API's server-side bounds: heavy queries (a huge
//! `/api/v2/dependencies`) are capped in number and time, and never stall
//! the light ones (`/api/v2/services`); `limit` is clamped; an optional
//! bearer token.

mod support;

use std::time::{Duration, Instant};

use blkkin_collector::model::SpanKind;
use blkkin_collector::store::{QueryToken, ServerConfig, Store, StoreConfig, StoreLocation};
use support::{get, get_with, now_ms, rpc, span, StoreServer};

/// `traces` traces of a client span and a shared server span each, over
/// `services` service pairs, inserted in large batches.
fn fill(store: &Store, traces: usize, services: usize, now: u64) {
    let mut batch = Vec::with_capacity(2000);
    for t in 1..=traces {
        let trace = format!("{t:x}");
        let (c, s) = (format!("c{}", t % services), format!("s{}", t % services));
        let ts = now - 60_000 + (t as u64 % 50_000);
        batch.push(rpc(
            span(&trace, "1", None, &c, "get", ts),
            SpanKind::Client,
            Some(&s),
        ));
        let mut server = rpc(
            span(&trace, "1", None, &s, "get", ts),
            SpanKind::Server,
            None,
        );
        server.shared = Some(true);
        batch.push(server);
        if batch.len() >= 2000 {
            let outcome = store.insert(&batch).unwrap();
            assert_eq!(outcome.rejected, 0);
            batch.clear();
        }
    }
    store.insert(&batch).unwrap();
}

/// Before: four concurrent huge `/api/v2/dependencies` queries held the
/// store's one read connection in turn and `/api/v2/services` waited for
/// all of them (34 s on a large store). Now at most two run (the others are
/// answered 503 at once), each for at most the query timeout, and
/// `/api/v2/services` is answered promptly throughout.
#[test]
fn huge_dependency_queries_do_not_stall_services() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(
        StoreLocation::File(dir.path().join("spans.db")),
        StoreConfig {
            read_connections: 4,
            ..StoreConfig::default()
        },
    )
    .unwrap();
    let now = now_ms();
    fill(&store, 40_000, 20, now);
    let timeout = Duration::from_millis(1500);
    let server = StoreServer::start_with(
        store,
        ServerConfig {
            query_timeout: timeout,
            max_heavy_queries: 2,
            ..ServerConfig::default()
        },
    );
    let base = server.base.clone();
    let deps = format!(
        "{base}/api/v2/dependencies?endTs={}&lookback=9999999999999",
        now + 1000
    );
    // One huge query alone runs past the timeout: it is heavy enough for
    // the rest of the test to mean something.
    let t0 = Instant::now();
    let alone = get(&deps);
    assert_eq!(alone.status, 503, "{}", alone.body);
    assert!(alone.body.contains("query timeout"), "{}", alone.body);
    assert!(t0.elapsed() < timeout * 3, "{:?}", t0.elapsed());
    // Let the cancelled query stop and free its slot.
    std::thread::sleep(Duration::from_millis(300));

    let huge: Vec<_> = (0..4)
        .map(|_| {
            let url = deps.clone();
            std::thread::spawn(move || get(&url))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let mut slowest = Duration::ZERO;
    for _ in 0..10 {
        let t = Instant::now();
        let r = get(&format!("{base}/api/v2/services"));
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json().as_array().unwrap().len(), 40);
        slowest = slowest.max(t.elapsed());
        std::thread::sleep(Duration::from_millis(50));
    }
    let answers: Vec<_> = huge.into_iter().map(|h| h.join().unwrap()).collect();
    // Half the query timeout: a /services waiting for a heavy query's
    // connection (one reader, as before) waits most of a timeout (and before
    // there was no timeout: the whole query); alone it takes ~0.1 s here.
    assert!(
        slowest < timeout / 2,
        "/api/v2/services took {slowest:?} while heavy queries ran"
    );
    let busy = answers
        .iter()
        .filter(|a| a.status == 503 && a.body.contains("too many heavy queries"))
        .count();
    let timed_out = answers
        .iter()
        .filter(|a| a.status == 503 && a.body.contains("query timeout"))
        .count();
    assert_eq!((busy, timed_out), (2, 2), "{answers:?}");
    // The store still answers a reasonable dependencies query.
    let small = get(&format!(
        "{base}/api/v2/dependencies?endTs={}&lookback=1",
        now - 60_000
    ));
    assert_eq!(small.status, 200, "{}", small.body);
}

/// `limit` beyond the server's maximum is clamped, not obeyed.
#[test]
fn a_huge_limit_is_clamped_to_the_servers_maximum() {
    let store = Store::open_in_memory().unwrap();
    let now = now_ms();
    let spans: Vec<_> = (1..=30)
        .map(|t| span(&format!("{t:x}"), "1", None, "osd", "op", now - t))
        .collect();
    store.insert(&spans).unwrap();
    let server = StoreServer::start_with(
        store,
        ServerConfig {
            max_limit: 5,
            ..ServerConfig::default()
        },
    );
    let r = get(&format!(
        "{}/api/v2/traces?limit=1000000&endTs={}&lookback=86400000",
        server.base,
        now + 1
    ));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json().as_array().unwrap().len(), 5);
    let ids: Vec<String> = (1..=6).map(|t| format!("{t:016x}")).collect();
    let many = get(&format!(
        "{}/api/v2/traceMany?traceIds={}",
        server.base,
        ids.join(",")
    ));
    assert_eq!(many.status, 400, "{}", many.body);
    assert!(many.body.contains("too many traceIds"), "{}", many.body);
}

/// With `--query-token-file`, the API answers 401 without the token (it
/// answered anyone before), and serves who presents it; `/health` stays open.
#[test]
fn a_query_token_is_required_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "s3cret-token\n").unwrap();
    let server = StoreServer::start_with(
        Store::open_in_memory().unwrap(),
        ServerConfig {
            token: Some(QueryToken::from_file(&file).unwrap()),
            ..ServerConfig::default()
        },
    );
    let services = format!("{}/api/v2/services", server.base);
    let none = get(&services);
    assert_eq!(none.status, 401, "{}", none.body);
    assert!(none.body.contains("bearer token"), "{}", none.body);
    let wrong = get_with(&services, &[("Authorization", "Bearer s3cret-toke")]);
    assert_eq!(wrong.status, 401);
    let right = get_with(&services, &[("Authorization", "Bearer s3cret-token")]);
    assert_eq!((right.status, right.body.as_str()), (200, "[]"));
    let post = support::post(&services, "application/json", b"[]");
    assert_eq!(post.status, 401, "writes need the token too");
    assert_eq!(get(&format!("{}/health", server.base)).status, 200);
}

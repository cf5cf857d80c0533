//! The Cassandra store against real servers: spans shaped like the demo
//! workload written by `CassandraSink` into a real Cassandra 5.0 node
//! (scripts/cassandra.sh), then read back through the real Zipkin server's
//! API (`STORAGE_TYPE=cassandra3`), and writes across a Cassandra restart.
//!
//! Needs java and mvn; fails when Cassandra cannot start unless
//! BLKKIN_SKIP_CASSANDRA=1 is set (then it logs a skip).

mod cassandra_support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use blkkin_collector::cassandra::{BlockingCassandraSink, CassandraConfig, CassandraError};
use blkkin_collector::model::{Annotation, Endpoint, Span, SpanKind};
use cassandra_support::{free_port, skip_cassandra, Cassandra, Zipkin};
use serde_json::Value;

const KEYSPACE: &str = "zipkin2";
const TRACES: usize = 12;
/// The storage tiers of the demo workload, caller first.
const SERVICES: [&str; 4] = ["client", "volume", "mapper", "blocker"];
/// The RPC each tier makes to the next.
const RPCS: [&str; 3] = ["write", "map", "block"];

fn endpoint(service: &str, port: u16) -> Option<Endpoint> {
    Some(Endpoint {
        service_name: Some(service.into()),
        ipv4: Some("127.0.0.1".into()),
        port: Some(port),
        ..Endpoint::default()
    })
}

fn is_slow(trace: usize) -> bool {
    trace % 4 == 1
}

fn fails(trace: usize) -> bool {
    trace % 3 == 2
}

/// One request through the stack: for each tier a CLIENT span and the
/// callee's SERVER half sharing its id (Zipkin v1 style), an annotation on
/// every server span, tags, and an `error` tag on the blocker when it fails.
fn demo_trace(trace: usize, start_us: u64) -> Vec<Span> {
    let trace_id = format!("{:016x}", 0xb1c0_0000_0000_0000u64 + trace as u64);
    let total = if is_slow(trace) { 250_000 } else { 3_000 };
    let mut spans = Vec::new();
    let mut parent: Option<String> = None;
    for (tier, rpc) in RPCS.iter().enumerate() {
        let id = format!("{:016x}", (trace as u64) << 8 | (tier as u64 + 1));
        let ts = start_us + tier as u64 * 100;
        let duration = total - tier as u64 * 200;
        let client = Span {
            trace_id: trace_id.clone(),
            parent_id: parent.clone(),
            id: id.clone(),
            kind: Some(SpanKind::Client),
            name: Some((*rpc).into()),
            timestamp: Some(ts),
            duration: Some(duration),
            local_endpoint: endpoint(SERVICES[tier], 7000 + tier as u16),
            remote_endpoint: endpoint(SERVICES[tier + 1], 7001 + tier as u16),
            tags: [("object".to_string(), format!("rbd_data.{trace}"))].into(),
            ..Span::default()
        };
        let mut server = Span {
            kind: Some(SpanKind::Server),
            shared: Some(true),
            timestamp: Some(ts + 20),
            duration: Some(duration - 40),
            local_endpoint: endpoint(SERVICES[tier + 1], 7001 + tier as u16),
            remote_endpoint: endpoint(SERVICES[tier], 7000 + tier as u16),
            annotations: vec![Annotation {
                timestamp: ts + 30,
                value: "queued".into(),
            }],
            tags: [("bytes".to_string(), "4096".to_string())].into(),
            ..client.clone()
        };
        if tier == 2 && fails(trace) {
            server.tags.insert("error".into(), "EIO".into());
        }
        spans.push(client);
        spans.push(server);
        parent = Some(id);
    }
    spans
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_micros() as u64
}

fn trace_ids(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .expect("a list of traces")
        .iter()
        .map(|t| t[0]["traceId"].as_str().expect("traceId").to_string())
        .collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("a list")
        .iter()
        .map(|s| s.as_str().expect("a string").to_string())
        .collect()
}

fn config(port: u16) -> CassandraConfig {
    CassandraConfig {
        contact_points: vec![format!("127.0.0.1:{port}")],
        keyspace: KEYSPACE.into(),
        request_timeout: Duration::from_secs(5),
        ..CassandraConfig::default()
    }
}

/// Nothing listens: connecting fails with a clear error, no panic.
#[test]
fn connect_fails_clearly_when_cassandra_is_down() {
    let port = free_port();
    let err = match BlockingCassandraSink::connect(config(port)) {
        Ok(_) => panic!("connected to a port nobody listens on"),
        Err(e) => e,
    };
    assert!(matches!(err, CassandraError::Connect { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("127.0.0.1:{port}")),
        "message names the contact point: {msg}"
    );
}

/// One Cassandra and one Zipkin for every scenario (they take tens of
/// seconds to start on a small machine).
#[test]
fn zipkin_browses_what_the_cassandra_sink_wrote() {
    if skip_cassandra() {
        return;
    }
    let t0 = Instant::now();
    let cassandra = Cassandra::start();
    let sink = BlockingCassandraSink::connect(config(cassandra.port))
        .expect("connect and create the schema");

    // Using an existing keyspace that lacks Zipkin's tables is refused.
    let missing = BlockingCassandraSink::connect(CassandraConfig {
        keyspace: "no_such_keyspace".into(),
        ensure_schema: false,
        ..config(cassandra.port)
    });
    match missing {
        Err(CassandraError::MissingSchema { keyspace, table }) => {
            assert_eq!(
                (keyspace.as_str(), table.as_str()),
                ("no_such_keyspace", "span")
            );
        }
        Err(e) => panic!("wrong error for a missing schema: {e}"),
        Ok(_) => panic!("a keyspace without Zipkin's tables was accepted"),
    }

    // Two collectors share the keyspace; each writes half of the workload
    // and both store their dependency counts into the same rows at once.
    let other = BlockingCassandraSink::connect(config(cassandra.port))
        .expect("a second collector uses the existing schema");
    let start = now_us() - 60_000_000;
    let traces: Vec<Vec<Span>> = (0..TRACES)
        .map(|t| demo_trace(t, start + t as u64 * 1_000))
        .collect();
    let (mine, theirs) = traces.split_at(TRACES / 2);
    let mine: Vec<Span> = mine.iter().flatten().cloned().collect();
    let theirs: Vec<Span> = theirs.iter().flatten().cloned().collect();
    std::thread::scope(|s| {
        s.spawn(|| {
            // Two batches that split a trace, and a re-sent batch (a retry),
            // which must not duplicate rows or links.
            let (first, second) = mine.split_at(mine.len() / 2 + 1);
            sink.write(first).expect("write the first batch");
            sink.write(second).expect("write the second batch");
            sink.write(second).expect("write the second batch again");
            sink.flush_links().expect("store the dependency links");
        });
        s.spawn(|| {
            other.write(&theirs).expect("the other collector writes");
            other
                .flush_links()
                .expect("the other collector stores links");
        });
    });
    eprintln!("collector 1: {:?}", sink.stats());
    eprintln!("collector 2: {:?}", other.stats());
    drop(other);

    let zipkin = Zipkin::start(cassandra.port, KEYSPACE, cassandra.dir.path());
    check_zipkin_reads(&zipkin, &traces);
    eprintln!(
        "memory: cassandra {:?} MiB, zipkin {:?} MiB RSS; {:.1}s so far",
        cassandra.rss_mib(),
        zipkin.rss_mib(),
        t0.elapsed().as_secs_f64()
    );

    check_writes_across_a_restart(&cassandra, &sink, &zipkin, &traces[0]);
    eprintln!("total {:.1}s", t0.elapsed().as_secs_f64());
}

fn check_zipkin_reads(zipkin: &Zipkin, traces: &[Vec<Span>]) {
    // Every trace, whole, with each span exactly once.
    for spans in traces {
        let id = &spans[0].trace_id;
        let got = zipkin.json(&format!("/api/v2/trace/{id}"));
        let got = got.as_array().expect("a trace is a list of spans");
        assert_eq!(got.len(), spans.len(), "trace {id}: {got:?}");
        let names: BTreeSet<&str> = got.iter().filter_map(|s| s["name"].as_str()).collect();
        assert_eq!(names, RPCS.iter().copied().collect(), "trace {id}");
        let kinds = got.iter().filter(|s| s["kind"] == "SERVER").count();
        assert_eq!(kinds, RPCS.len(), "trace {id}: server halves");
    }
    let all: BTreeSet<String> = traces.iter().map(|t| t[0].trace_id.clone()).collect();
    let query = |q: &str| trace_ids(&zipkin.json(&format!("/api/v2/traces?limit=100&{q}")));

    assert_eq!(query("serviceName=mapper"), all, "by service");
    assert_eq!(
        query("serviceName=blocker&spanName=block"),
        all,
        "by span name"
    );
    assert!(query("serviceName=blocker&spanName=write").is_empty());
    let slow: BTreeSet<String> = traces
        .iter()
        .enumerate()
        .filter(|(i, _)| is_slow(*i))
        .map(|(_, t)| t[0].trace_id.clone())
        .collect();
    assert!(!slow.is_empty() && slow.len() < all.len());
    assert_eq!(
        query("serviceName=client&minDuration=100000"),
        slow,
        "by minDuration"
    );
    let failing: BTreeSet<String> = traces
        .iter()
        .enumerate()
        .filter(|(i, _)| fails(*i))
        .map(|(_, t)| t[0].trace_id.clone())
        .collect();
    assert_eq!(
        query("serviceName=blocker&annotationQuery=error"),
        failing,
        "by tag key"
    );
    assert_eq!(
        query("serviceName=volume&annotationQuery=object%3Drbd_data.3"),
        BTreeSet::from([traces[3][0].trace_id.clone()]),
        "by tag value"
    );
    assert_eq!(
        query("serviceName=mapper&annotationQuery=queued"),
        all,
        "by annotation"
    );

    let services = strings(&zipkin.json("/api/v2/services"));
    assert_eq!(services, ["blocker", "client", "mapper", "volume"]);
    let spans = strings(&zipkin.json("/api/v2/spans?serviceName=volume"));
    assert_eq!(spans, ["map", "write"]);
    let remote = strings(&zipkin.json("/api/v2/remoteServices?serviceName=volume"));
    assert_eq!(remote, ["client", "mapper"]);

    let end = now_us() / 1000 + 60_000;
    let deps = zipkin.json(&format!(
        "/api/v2/dependencies?endTs={end}&lookback=172800000"
    ));
    let edges: BTreeMap<(String, String), (u64, u64)> = deps
        .as_array()
        .expect("a list of links")
        .iter()
        .map(|l| {
            (
                (
                    l["parent"].as_str().unwrap_or_default().to_string(),
                    l["child"].as_str().unwrap_or_default().to_string(),
                ),
                (
                    l["callCount"].as_u64().unwrap_or(0),
                    l["errorCount"].as_u64().unwrap_or(0),
                ),
            )
        })
        .collect();
    let n = traces.len() as u64;
    let errors = failing.len() as u64;
    let want: BTreeMap<(String, String), (u64, u64)> = [
        (("client", "volume"), (n, 0)),
        (("volume", "mapper"), (n, 0)),
        (("mapper", "blocker"), (n, errors)),
    ]
    .into_iter()
    .map(|((p, c), v)| ((p.to_string(), c.to_string()), v))
    .collect();
    assert_eq!(edges, want, "dependency links: {deps}");
}

/// Cassandra goes away: a write fails with a clear error (no panic, no
/// hang); once it is back the same write succeeds and everything written
/// before the restart is still there.
fn check_writes_across_a_restart(
    cassandra: &Cassandra,
    sink: &BlockingCassandraSink,
    zipkin: &Zipkin,
    earlier: &[Span],
) {
    cassandra.stop();
    let late = demo_trace(TRACES + 1, now_us() - 1_000_000);
    let err = sink
        .write(&late)
        .expect_err("a write while Cassandra is down must fail");
    eprintln!("write while down: {err}");
    assert!(matches!(err, CassandraError::Write { .. }), "{err:?}");
    assert!(err.to_string().contains("Cassandra writes failed"), "{err}");

    cassandra.restart();
    let t = Instant::now();
    loop {
        match sink.write(&late) {
            Ok(()) => break,
            Err(e) if t.elapsed() < Duration::from_secs(90) => {
                eprintln!("write after restart not yet: {e}");
                std::thread::sleep(Duration::from_secs(2));
            }
            Err(e) => panic!("writes still fail 90s after Cassandra came back: {e}"),
        }
    }
    eprintln!(
        "writes succeed {:.1}s after Cassandra came back",
        t.elapsed().as_secs_f64()
    );
    for spans in [&late[..], earlier] {
        let id = &spans[0].trace_id;
        let t = Instant::now();
        loop {
            // Zipkin's own driver reconnects too; give it time.
            match zipkin.get(&format!("/api/v2/trace/{id}")) {
                Ok((200, body)) => {
                    let v: Value = serde_json::from_str(&body).expect("json");
                    assert_eq!(v.as_array().map(Vec::len), Some(spans.len()), "{id}");
                    break;
                }
                other if t.elapsed() < Duration::from_secs(90) => {
                    eprintln!("zipkin not reading {id} yet: {other:?}");
                    std::thread::sleep(Duration::from_secs(2));
                }
                other => panic!("Zipkin does not return {id}: {other:?}"),
            }
        }
    }
}

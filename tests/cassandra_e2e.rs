//! The demo workload all the way into the real Zipkin UI through Cassandra:
//! `blkkin workload` (four traced processes, C ABI) → rings → consumer →
//! relay → `blkkin-collector --cassandra` → a real Cassandra 5.0 node
//! (scripts/cassandra.sh) → the real Zipkin server (`STORAGE_TYPE=cassandra3`)
//! → Zipkin's UI page of one trace rendered by headless Chromium
//! (scripts/chromium.sh).
//!
//! The collector starts before Cassandra is up: it must wait, retry and then
//! deliver every span. The collector also writes JSON lines, the reference
//! each trace Zipkin returns is compared with. Then, mid-stream of a second
//! workload, the collector is killed (SIGKILL) and Cassandra stopped; a new
//! collector on the same `--state-dir` resumes from the checkpoint and
//! delivers every span once Cassandra is back.
//!
//! Needs java, mvn and chromium; fails when one is missing unless
//! BLKKIN_SKIP_CASSANDRA=1 (whole test) or BLKKIN_SKIP_CHROMIUM=1 (the UI
//! check) is set, which logs the skip.

#[path = "../collector/tests/cassandra_support/mod.rs"]
mod cassandra_support;
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cassandra_support::{skip_cassandra, Cassandra, Zipkin};
use common::collector::{Collector, NodeStack};
use serde_json::Value;

const REQUESTS: usize = 50;
/// Spans per request: client (client), volume (server + client), mapper
/// (server + client), blocker (server + local disk_io).
const SPANS_PER_TRACE: usize = 7;
const KEYSPACE: &str = "zipkin2";

fn read_jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("every line is a JSON span"))
        .collect()
}

fn wait_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A span's identity within its trace: (id, kind).
fn span_key(s: &Value) -> (String, String) {
    (
        s["id"].as_str().unwrap_or_default().to_string(),
        s["kind"].as_str().unwrap_or("LOCAL").to_string(),
    )
}

fn service(s: &Value) -> &str {
    s["localEndpoint"]["serviceName"].as_str().unwrap_or("")
}

#[test]
fn demo_workload_through_cassandra_into_zipkin_and_its_ui() {
    if skip_cassandra() {
        return;
    }
    let t0 = Instant::now();
    let node = NodeStack::start();
    // Cassandra's port is chosen now; the node starts only after the
    // collector has tried and failed to reach it.
    let cassandra = Cassandra::unstarted();
    let contact = format!("127.0.0.1:{}", cassandra.port);
    let jsonl = node.tmp.path().join("spans.jsonl");
    let log = node.tmp.path().join("collector.log");
    let state = node.tmp.path().join("state");
    // The embedded store beside Cassandra: the two must draw the same
    // service graph from the same traces.
    let store_port = cassandra_support::free_port();
    let store_listen = format!("127.0.0.1:{store_port}");
    let store_db = node.tmp.path().join("spans.db");
    let collector = Collector::start(
        &[&node.relay],
        &[
            &cassandra_args(&contact, &state)[..],
            &["--jsonl", jsonl.to_str().expect("utf-8 path")],
            &["--store", store_db.to_str().expect("utf-8 path")],
            &["--listen", &store_listen],
        ]
        .concat(),
        &log,
    );

    let out = Command::new(env!("CARGO_BIN_EXE_blkkin"))
        .args(["workload", "-n", &REQUESTS.to_string()])
        .env("BLKIN_SHM_DIR", &node.rings)
        .env_remove("BLKIN_RATE")
        .env_remove("RATE")
        .output()
        .expect("run blkkin workload");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "requests=50 ok=48 failed=2 slow=5"
    );
    let want_spans = REQUESTS * SPANS_PER_TRACE;
    wait_until("the JSON lines sink", Duration::from_secs(60), || {
        (read_jsonl(&jsonl).len() >= want_spans).then_some(())
    });
    // Cassandra is still down: the Cassandra sink is retrying, not dropping.
    wait_until(
        "the collector to report Cassandra unreachable",
        Duration::from_secs(30),
        || {
            let l = collector.log();
            (l.contains("delivery failed; retrying with backoff")
                && l.contains("cannot connect to Cassandra"))
            .then_some(())
        },
    );
    eprintln!(
        "collector holds {want_spans} spans for Cassandra, which is down ({:.1}s)",
        t0.elapsed().as_secs_f64()
    );

    cassandra.launch();
    wait_until(
        "the collector to deliver to Cassandra",
        Duration::from_secs(120),
        || collector.log().contains("delivering again").then_some(()),
    );
    eprintln!(
        "collector delivers to Cassandra ({:.1}s)",
        t0.elapsed().as_secs_f64()
    );
    let zipkin = Zipkin::start(cassandra.port, KEYSPACE, cassandra.dir.path());

    let reference = read_jsonl(&jsonl);
    assert_eq!(reference.len(), want_spans, "JSON lines sink");
    let mut by_trace: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for s in reference {
        let id = s["traceId"].as_str().expect("traceId").to_string();
        by_trace.entry(id).or_default().push(s);
    }
    assert_eq!(by_trace.len(), REQUESTS, "one trace per request");
    let all: BTreeSet<String> = by_trace.keys().cloned().collect();
    let query = |q: &str| zipkin.trace_ids(q);
    // Cassandra has every span once the collector's retried batches land.
    wait_until(
        "Zipkin to find every trace",
        Duration::from_secs(60),
        || (query("serviceName=client") == all).then_some(()),
    );

    eprintln!(
        "zipkin finds all {REQUESTS} traces ({:.1}s)",
        t0.elapsed().as_secs_f64()
    );
    // The dependency links come on the collector's timer (10 s of quiet),
    // with no later write and without stopping it.
    let links_from = Instant::now();
    wait_until(
        "dependency links without a later write",
        Duration::from_secs(20),
        || (dependency_edges(&zipkin) == expected_edges(&by_trace)).then_some(()),
    );
    eprintln!(
        "dependency links in Zipkin {:.1}s after every trace was ({:.1}s)",
        links_from.elapsed().as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
    // The embedded store links at query time, Cassandra on the collector's
    // timer into its day table; one linker, one graph.
    let (status, body) = cassandra_support::http_get(
        store_port,
        &cassandra_support::dependencies_path(now_ms() + 60_000),
    )
    .expect("the store's dependencies");
    assert_eq!(status, 200, "{body}");
    let store_edges = cassandra_support::parse_edges(&serde_json::from_str(&body).unwrap());
    assert_eq!(
        store_edges,
        dependency_edges(&zipkin),
        "the embedded store and Cassandra link the same traces alike"
    );
    let log_text = collector.stop();
    let totals = log_text
        .lines()
        .find(|l| l.contains("sink totals") && l.contains("cassandra"))
        .unwrap_or_else(|| panic!("no Cassandra sink totals in {log_text}"));
    for want in [
        format!("sent={want_spans}"),
        "dropped_full=0".into(),
        "rejected=0".into(),
        "dropped_shutdown=0".into(),
    ] {
        assert!(totals.contains(&want), "{want}: {totals}");
    }
    assert!(
        !totals.contains("retries=0"),
        "the sink retried while Cassandra was down: {totals}"
    );

    check_traces(&zipkin, &by_trace, 0);
    eprintln!("every trace read back ({:.1}s)", t0.elapsed().as_secs_f64());
    check_queries(&zipkin, &by_trace, &all);
    eprintln!("queries checked ({:.1}s)", t0.elapsed().as_secs_f64());
    check_dependencies(&zipkin, &by_trace);
    eprintln!(
        "zipkin checks done in {:.1}s; memory: cassandra {:?} MiB, zipkin {:?} MiB",
        t0.elapsed().as_secs_f64(),
        cassandra.rss_mib(),
        zipkin.rss_mib()
    );
    let (id, spans) = by_trace
        .iter()
        .find(|(_, s)| s.iter().any(|s| s["tags"]["error"].is_string()))
        .expect("a failed request");
    check_ui(&zipkin, id, spans);

    check_a_collector_kill_and_a_cassandra_restart(&node, &cassandra, &zipkin, &state);
    eprintln!(
        "kill and restart checked ({:.1}s)",
        t0.elapsed().as_secs_f64()
    );
    let fresh = check_schema_at_start(&cassandra, node.tmp.path());
    eprintln!(
        "schema at start checked ({:.1}s)",
        t0.elapsed().as_secs_f64()
    );
    check_keyval_at_the_parent_endpoint(&cassandra, &zipkin, &fresh);
    eprintln!(
        "keyval at the parent's endpoint checked ({:.1}s)",
        t0.elapsed().as_secs_f64()
    );
}

/// ztracer's `child.keyval("seq", i, &parent_endpoint)` (a key/value the
/// client records at its own endpoint inside the child span the OSD times)
/// with the collector's default assembly options, into four sinks at once:
/// the embedded store, the real Zipkin (`--zipkin-url`, the full endpoint),
/// Cassandra (keyspace `zipkin_fresh`, read back through the Zipkin on it)
/// and the archive. Every span, the client endpoint's key/value side
/// included, is complete in each within 3 s of the program's end (the
/// archive rolls every second here: its default, 60 s, is a batching
/// choice, not assembly).
fn check_keyval_at_the_parent_endpoint(cassandra: &Cassandra, zipkin: &Zipkin, fresh: &Zipkin) {
    const N: usize = 20;
    const WITHIN: Duration = Duration::from_secs(3);
    let node = NodeStack::start();
    let dir = node.tmp.path();
    let store_port = cassandra_support::free_port();
    let db = dir.join("spans.db");
    let archive = dir.join("archive");
    let contact = format!("127.0.0.1:{}", cassandra.port);
    let listen = format!("127.0.0.1:{store_port}");
    let zipkin_url = format!("http://127.0.0.1:{}/api/v2/spans", zipkin.port);
    let collector = Collector::start(
        &[&node.relay],
        &[
            "--store",
            db.to_str().expect("utf-8 path"),
            "--listen",
            &listen,
            "--zipkin-url",
            &zipkin_url,
            "--cassandra",
            &contact,
            "--cassandra-keyspace",
            "zipkin_fresh",
            "--archive",
            archive.to_str().expect("utf-8 path"),
            "--archive-roll-interval",
            "1",
        ],
        &dir.join("collector.log"),
    );
    wait_until("the collector's sinks", Duration::from_secs(60), || {
        let up = cassandra_support::http_get(store_port, "/health").is_ok_and(|(s, _)| s == 200);
        (up && collector.log().contains("keyspace zipkin_fresh ready")).then_some(())
    });
    let libs = common::lib_dir(dir);
    let exe = common::compile(dir, &libs, "ztracer_keyval.cpp", "ztracer_keyval", false);
    let out = common::run_traced(&exe, &[&N.to_string()], &node.rings, &[]);
    let ended = Instant::now();
    let ids: Vec<[String; 3]> = out
        .lines()
        .map(|l| {
            let v: Vec<String> = l.split_whitespace().map(String::from).collect();
            v.try_into().expect("three ids per line")
        })
        .collect();
    assert_eq!(ids.len(), N);
    let traces = ids
        .iter()
        .map(|i| i[0].as_str())
        .collect::<Vec<_>>()
        .join(",");
    let many = format!("/api/v2/traceMany?traceIds={traces}");
    let from_api = |port: u16| {
        let (status, body) = cassandra_support::http_get(port, &many).ok()?;
        let v: Value = serde_json::from_str(&body).ok().filter(|_| status == 200)?;
        Some(
            v.as_array()?
                .iter()
                .flat_map(|t| t.as_array().cloned().unwrap_or_default())
                .collect::<Vec<_>>(),
        )
    };
    let from_archive = || Some(common::archived_spans(&archive));
    let mut pending: Vec<(&str, SpanReader)> = vec![
        ("the embedded store", Box::new(move || from_api(store_port))),
        ("Zipkin", Box::new(move || from_api(zipkin.port))),
        ("Cassandra", Box::new(move || from_api(fresh.port))),
        ("the archive", Box::new(from_archive)),
    ];
    let mut last = BTreeMap::new();
    while !pending.is_empty() {
        pending.retain(|(sink, read)| {
            let spans = read().unwrap_or_default();
            match keyval_traces_complete(&ids, &spans) {
                Ok(()) => {
                    eprintln!(
                        "every span complete in {sink} {:.2}s after the program ended",
                        ended.elapsed().as_secs_f64()
                    );
                    false
                }
                Err(why) => {
                    last.insert(*sink, why);
                    true
                }
            }
        });
        assert!(
            pending.is_empty() || ended.elapsed() < WITHIN,
            "not complete within {WITHIN:?} of the program's end: {last:?}\n{}",
            collector.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = collector.stop();
    assert_eq!(
        common::collector::counter(&log, "collector totals", "incomplete"),
        Some(0),
        "{log}"
    );
}

/// Reads the spans a sink holds (None: not answering yet).
type SpanReader<'a> = Box<dyn Fn() -> Option<Vec<Value>> + 'a>;

/// Whether `spans` hold, for each (trace, root, child) of `ids`, exactly
/// the three spans ztracer_keyval records: the client's "write" (CLIENT,
/// with a duration), the OSD's "osd_op" (SERVER, with a duration, child of
/// "write") and the client's side of "osd_op" (its `seq` tag).
fn keyval_traces_complete(ids: &[[String; 3]], spans: &[Value]) -> Result<(), String> {
    for (seq, [trace, root, child]) in ids.iter().enumerate() {
        let mine: Vec<&Value> = spans.iter().filter(|s| s["traceId"] == *trace).collect();
        if mine.len() != 3 {
            return Err(format!("trace {trace}: {} of 3 spans", mine.len()));
        }
        let find = |id: &str, svc: &str| {
            mine.iter()
                .find(|s| s["id"] == id && service(s) == svc)
                .ok_or_else(|| format!("trace {trace}: no span {id} at {svc}: {mine:?}"))
        };
        let write = find(root, "kv_client")?;
        let osd = find(child, "kv_osd")?;
        let kv = find(child, "kv_client")?;
        let ok = write["kind"] == "CLIENT"
            && write["duration"].is_u64()
            && osd["kind"] == "SERVER"
            && osd["duration"].is_u64()
            && osd["parentId"] == root.as_str()
            && kv["parentId"] == root.as_str()
            && kv["tags"]["seq"] == seq.to_string().as_str();
        if !ok {
            return Err(format!("trace {trace}: not complete: {mine:?}"));
        }
    }
    Ok(())
}

/// A collector that never received a span has created Zipkin's schema in
/// a fresh keyspace when it started: a Zipkin with
/// CASSANDRA_ENSURE_SCHEMA=false started then is healthy and answers.
/// Returns that Zipkin (the keyspace is then used by the key/value check).
fn check_schema_at_start(cassandra: &Cassandra, dir: &Path) -> Zipkin {
    let ks = "zipkin_fresh";
    let contact = format!("127.0.0.1:{}", cassandra.port);
    // No relay listens on port 1: not a span will come.
    let collector = Collector::start(
        &["127.0.0.1:1"],
        &["--cassandra", &contact, "--cassandra-keyspace", ks],
        &dir.join("fresh-collector.log"),
    );
    wait_until(
        "the collector to create the schema at start",
        Duration::from_secs(120),
        || {
            collector
                .log()
                .contains("keyspace zipkin_fresh ready")
                .then_some(())
        },
    );
    let zdir = dir.join("fresh-zipkin");
    std::fs::create_dir_all(&zdir).unwrap();
    let zipkin = Zipkin::start(cassandra.port, ks, &zdir);
    let (status, body) = zipkin.get("/api/v2/services").expect("services");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body.trim(), "[]");
    let log = collector.stop();
    // Creating the schema makes Cassandra warn that SASI indexes are
    // experimental, once per index: expected, so not at the default level.
    assert!(
        !log.contains("SASI") && !log.contains("contains a warning"),
        "{log}"
    );
    zipkin
}

/// The collector's arguments: Cassandra at `contact`, checkpoints in
/// `state` (so relay positions move only after Cassandra acknowledged).
fn cassandra_args<'a>(contact: &'a str, state: &'a Path) -> Vec<&'a str> {
    vec![
        "--cassandra",
        contact,
        "--cassandra-keyspace",
        KEYSPACE,
        "--state-dir",
        state.to_str().expect("utf-8 path"),
        "--checkpoint-interval",
        "0.3",
        // The other side of a shared span (the source of a CLIENT span's
        // remote endpoint) comes from another process's stream; under the
        // load of this test (two JVMs, Chromium) 100 ms was not always
        // enough, and the comparison with the reference includes `remote`.
        "--linger",
        "1500ms",
    ]
}

/// Faults mid-stream: while a second workload runs, the collector is killed
/// with SIGKILL, Cassandra is stopped, a new collector starts on the same
/// `--state-dir` while Cassandra is down, then Cassandra comes back. Every
/// span of the second workload reaches Zipkin, whole (compared with a
/// reference collector that reads the same relay into JSON lines).
fn check_a_collector_kill_and_a_cassandra_restart(
    node: &NodeStack,
    cassandra: &Cassandra,
    zipkin: &Zipkin,
    state: &Path,
) {
    const REQUESTS: usize = 200;
    let dir = node.tmp.path();
    let contact = format!("127.0.0.1:{}", cassandra.port);
    let reference_out = dir.join("reference.jsonl");
    let reference = Collector::reference(node, &reference_out);
    let first = Collector::start(
        &[&node.relay],
        &cassandra_args(&contact, state),
        &dir.join("collector-2.log"),
    );
    // 200 requests at 40 a second: 5 s of traffic.
    let mut workload = Command::new(env!("CARGO_BIN_EXE_blkkin"))
        .args(["workload", "-n", &REQUESTS.to_string(), "-r", "40"])
        .env("BLKIN_SHM_DIR", &node.rings)
        .env_remove("BLKIN_RATE")
        .env_remove("RATE")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("run blkkin workload");
    let phase1: BTreeSet<String> = read_jsonl(&node.tmp.path().join("spans.jsonl"))
        .iter()
        .map(|s| s["traceId"].as_str().unwrap().to_string())
        .collect();
    let new_traces = || -> BTreeMap<String, Vec<Value>> {
        let mut by_trace: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for s in read_jsonl(&reference_out) {
            let id = s["traceId"].as_str().unwrap().to_string();
            if !phase1.contains(&id) {
                by_trace.entry(id).or_default().push(s);
            }
        }
        by_trace
    };
    // Mid-stream: a fifth of the traces assembled.
    wait_until(
        "the second workload under way",
        Duration::from_secs(60),
        || (new_traces().len() >= REQUESTS / 5).then_some(()),
    );
    let mut log = first.kill9();
    cassandra.stop();
    let second = Collector::start(
        &[&node.relay],
        &cassandra_args(&contact, state),
        &dir.join("collector-3.log"),
    );
    assert!(workload.wait().unwrap().success(), "the workload failed");
    wait_until("the reference collector", Duration::from_secs(60), || {
        let t = new_traces();
        (t.len() == REQUESTS && t.values().all(|s| s.len() == SPANS_PER_TRACE)).then_some(())
    });
    cassandra.restart();
    let want = new_traces();
    let ids: BTreeSet<String> = want.keys().cloned().collect();
    // Zipkin's driver reconnects by itself; until then queries fail.
    wait_until(
        "Zipkin to find every trace of the second workload",
        Duration::from_secs(180),
        || {
            let (status, body) = zipkin
                .get("/api/v2/traces?serviceName=client&limit=1000&lookback=86400000")
                .ok()?;
            let found: BTreeSet<String> = (status == 200)
                .then(|| serde_json::from_str::<Value>(&body).ok())??
                .as_array()?
                .iter()
                .filter_map(|t| t[0]["traceId"].as_str().map(str::to_string))
                .collect();
            ids.is_subset(&found).then_some(())
        },
    );
    log.push_str(&second.stop());
    reference.stop();
    assert!(log.contains("resuming from checkpoint"), "{log}");
    // The reference read every record live, with the clock calibration
    // it had then; the restarted collector with a later one (see
    // TIME_TOLERANCE_US in tests/checkpoint.rs).
    check_traces(zipkin, &want, 3);
}

/// A span's fields without its times, and its times (timestamp, duration,
/// annotation timestamps).
type SpanFields = (Value, Vec<Option<i64>>);

/// Every trace comes back whole: the same spans (id, kind, name, service,
/// timestamp, duration, tags, annotations) as the JSON lines sink wrote;
/// times may differ by `tol_us` (a collector started later converts ring
/// ticks with the relay's latest clock calibration).
fn check_traces(zipkin: &Zipkin, by_trace: &BTreeMap<String, Vec<Value>>, tol_us: i64) {
    // (the fields without times, the times)
    let fields = |s: &Value| {
        let anns = s["annotations"].as_array().cloned().unwrap_or_default();
        let mut times = vec![s["timestamp"].as_i64(), s["duration"].as_i64()];
        times.extend(anns.iter().map(|a| a["timestamp"].as_i64()));
        let values: Vec<&Value> = anns.iter().map(|a| &a["value"]).collect();
        let f = serde_json::json!({
            "parentId": s["parentId"], "name": s["name"], "service": service(s),
            "remote": s["remoteEndpoint"]["serviceName"], "tags": s["tags"],
            "annotations": values, "shared": s["shared"].as_bool().unwrap_or(false),
        });
        (f, times)
    };
    for (id, want) in by_trace {
        let got = zipkin.json(&format!("/api/v2/trace/{id}"));
        let got = got.as_array().expect("a trace is a list of spans");
        let index = |spans: &[Value]| -> BTreeMap<(String, String), SpanFields> {
            spans.iter().map(|s| (span_key(s), fields(s))).collect()
        };
        assert_eq!(got.len(), want.len(), "trace {id}: {got:?}");
        let (got_ix, want_ix) = (index(got), index(want));
        assert_eq!(
            got_ix.keys().collect::<Vec<_>>(),
            want_ix.keys().collect::<Vec<_>>(),
            "trace {id}"
        );
        for (k, (wf, wt)) in &want_ix {
            let (gf, gt) = &got_ix[k];
            assert_eq!(gf, wf, "trace {id} span {k:?}");
            let close = wt.len() == gt.len()
                && wt.iter().zip(gt).all(|(w, g)| match (w, g) {
                    (Some(w), Some(g)) => (w - g).abs() <= tol_us,
                    _ => w == g,
                });
            assert!(close, "trace {id} span {k:?}: times {gt:?}, want {wt:?}");
        }
    }
}

fn check_queries(zipkin: &Zipkin, by_trace: &BTreeMap<String, Vec<Value>>, all: &BTreeSet<String>) {
    let query = |q: &str| zipkin.trace_ids(q);
    let having = |pred: &dyn Fn(&Value) -> bool| -> BTreeSet<String> {
        by_trace
            .iter()
            .filter(|(_, spans)| spans.iter().any(pred))
            .map(|(id, _)| id.clone())
            .collect()
    };

    for svc in ["client", "volume", "mapper", "blocker"] {
        assert_eq!(&query(&format!("serviceName={svc}")), all, "by {svc}");
    }
    assert_eq!(
        &query("serviceName=blocker&spanName=disk_io"),
        all,
        "by span name"
    );
    assert!(query("serviceName=client&spanName=disk_io").is_empty());
    let writes = having(&|s| service(s) == "client" && s["name"] == "write");
    assert!(!writes.is_empty() && writes.len() < all.len());
    assert_eq!(query("serviceName=client&spanName=write"), writes);

    // The 5 slow requests spend ≥ 20 ms in the blocker's disk_io.
    let slow = having(&|s| s["name"] == "disk_io" && s["duration"].as_u64().unwrap_or(0) >= 20_000);
    assert_eq!(slow.len(), 5, "slow requests");
    assert_eq!(
        query("serviceName=blocker&spanName=disk_io&minDuration=20000"),
        slow,
        "by minDuration"
    );
    let slow_path = having(&|s| {
        s["annotations"]
            .as_array()
            .is_some_and(|a| a.iter().any(|a| a["value"] == "slow_path"))
    });
    assert_eq!(slow_path, slow, "slow_path events mark the slow requests");
    assert_eq!(
        query("serviceName=blocker&annotationQuery=slow_path"),
        slow,
        "by annotation"
    );

    let failed = having(&|s| s["tags"]["error"].is_string());
    assert_eq!(failed.len(), 2, "failed requests");
    assert_eq!(
        query("serviceName=blocker&annotationQuery=error"),
        failed,
        "by tag key"
    );
    assert_eq!(
        query("serviceName=blocker&annotationQuery=error%3DInput%2Foutput%20error"),
        failed,
        "by tag value"
    );

    assert_eq!(
        zipkin.names("/api/v2/services"),
        ["blocker", "client", "mapper", "volume"]
    );
    assert_eq!(
        zipkin.names("/api/v2/spans?serviceName=blocker"),
        ["block_io", "disk_io"]
    );
    assert_eq!(
        zipkin.names("/api/v2/spans?serviceName=client"),
        ["read", "write"]
    );
    // blkin records no remote endpoints, so Zipkin knows remote services
    // only where spans name one: the same (possibly empty) lists as the
    // reference spans give.
    for svc in ["client", "volume", "mapper", "blocker"] {
        let want: BTreeSet<String> = by_trace
            .values()
            .flatten()
            .filter(|s| service(s) == svc)
            .filter_map(|s| s["remoteEndpoint"]["serviceName"].as_str())
            .map(str::to_string)
            .collect();
        let got = zipkin.names(&format!("/api/v2/remoteServices?serviceName={svc}"));
        assert_eq!(
            got,
            want.into_iter().collect::<Vec<_>>(),
            "remote services of {svc}"
        );
    }
}

/// The edges client → volume → mapper → blocker, one call per request
/// each, errors where a failed request's spans carry `error`.
/// The edges Zipkin shows now (ending a minute from now).
fn dependency_edges(zipkin: &Zipkin) -> BTreeMap<(String, String), (u64, u64)> {
    zipkin.dependency_edges(now_ms() + 60_000).1
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

/// The demo's service graph: one call per trace on each edge.
fn expected_edges(
    by_trace: &BTreeMap<String, Vec<Value>>,
) -> BTreeMap<(String, String), (u64, u64)> {
    // Zipkin's linker counts an error on an edge when the callee's span
    // (the server side) has an `error` tag.
    let errors_at = |callee: &str| -> u64 {
        by_trace
            .values()
            .filter(|spans| {
                spans.iter().any(|s| {
                    service(s) == callee && s["kind"] == "SERVER" && s["tags"]["error"].is_string()
                })
            })
            .count() as u64
    };
    let n = by_trace.len() as u64;
    [
        ("client", "volume"),
        ("volume", "mapper"),
        ("mapper", "blocker"),
    ]
    .into_iter()
    .map(|(p, c)| ((p.to_string(), c.to_string()), (n, errors_at(c))))
    .collect()
}

fn check_dependencies(zipkin: &Zipkin, by_trace: &BTreeMap<String, Vec<Value>>) {
    let want = expected_edges(by_trace);
    assert_eq!(dependency_edges(zipkin), want, "dependency links");
    assert!(want.values().any(|(_, e)| *e > 0), "some edge has errors");
}

/// Where test artifacts go: target/test-artifacts/.
fn artifacts_dir() -> PathBuf {
    let dir = common::profile_dir()
        .parent()
        .expect("target/ holds the profile directory")
        .join("test-artifacts");
    std::fs::create_dir_all(&dir).expect("create target/test-artifacts");
    dir
}

/// Zipkin's own UI page of the trace, rendered by headless Chromium: its
/// DOM names every span of the trace; a screenshot is kept.
fn check_ui(zipkin: &Zipkin, id: &str, spans: &[Value]) {
    if std::env::var("BLKKIN_SKIP_CHROMIUM").as_deref() == Ok("1") {
        eprintln!("BLKKIN_SKIP_CHROMIUM=1: SKIPPING the Zipkin UI check in headless Chromium");
        return;
    }
    let chromium = which("chromium").unwrap_or_else(|| {
        panic!(
            "chromium not found: run `bash scripts/chromium.sh install` (or set BLKKIN_SKIP_CHROMIUM=1)"
        )
    });
    let url = format!("http://127.0.0.1:{}/zipkin/traces/{id}", zipkin.port);
    let profile = tempfile::tempdir().expect("chromium profile dir");
    let run = |extra: &[&str]| {
        let out = Command::new(&chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
                "--window-size=1400,900",
                "--virtual-time-budget=20000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(extra)
            .arg(&url)
            .output()
            .expect("run chromium");
        assert!(
            out.status.success(),
            "chromium failed on {url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    };
    let dom = String::from_utf8_lossy(&run(&["--dump-dom"]).stdout).into_owned();
    let artifacts = artifacts_dir();
    std::fs::write(artifacts.join(format!("zipkin-trace-{id}.html")), &dom).expect("save the DOM");
    // The trace view lists each span (a shared client/server span once) as
    // "service: name".
    let mut by_id: BTreeMap<&str, (BTreeSet<String>, &str)> = BTreeMap::new();
    for s in spans {
        let e = by_id
            .entry(s["id"].as_str().unwrap_or_default())
            .or_insert_with(|| (BTreeSet::new(), s["name"].as_str().unwrap_or_default()));
        e.0.insert(format!(">{}: {}<", service(s), e.1));
    }
    assert_eq!(by_id.len(), 4, "root, map, block_io, disk_io: {by_id:?}");
    for (id, (labels, name)) in &by_id {
        assert!(
            labels.iter().any(|l| dom.contains(l.as_str())),
            "the Zipkin UI page {url} does not show span {id} ({name}) as any of {labels:?}; DOM saved under {}",
            artifacts.display()
        );
    }
    let names: BTreeSet<&str> = by_id.values().map(|(_, n)| *n).collect();
    let shot = artifacts.join(format!("zipkin-trace-{id}.png"));
    let _ = std::fs::remove_file(&shot);
    run(&[&format!("--screenshot={}", shot.display())]);
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 10_000,
        "screenshot {} missing or empty",
        shot.display()
    );
    eprintln!(
        "zipkin UI: {url} shows spans {names:?}; screenshot {} ({size} bytes), DOM beside it",
        shot.display()
    );
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

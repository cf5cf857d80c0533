//! End to end against the real Zipkin server (scripts/zipkin.sh): a traced C
//! client and server (tests/c/rpc_tree.c) → blkkin-consumerd →
//! blkkin-relayd → blkkin-collector → Zipkin, over HTTP v2 JSON, HTTP v1
//! Thrift and Scribe; every span, parent link, endpoint, annotation and tag
//! is checked through Zipkin's query API. Also: Zipkin down at the start,
//! then up, with a queue bound small enough to drop (counted).
//!
//! Needs Java 17 and Maven (the jar is fetched by `scripts/zipkin.sh fetch`).
//! Set BLKKIN_SKIP_ZIPKIN=1 to skip explicitly; otherwise a missing Zipkin
//! fails the tests.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::collector::{counter, Collector, NodeStack};
use common::{free_port, Daemon};
use serde_json::Value;

fn skip() -> bool {
    if std::env::var("BLKKIN_SKIP_ZIPKIN").is_ok_and(|v| v == "1") {
        eprintln!("SKIPPED: BLKKIN_SKIP_ZIPKIN=1 (real Zipkin tests not run)");
        return true;
    }
    false
}

fn zipkin_script() -> PathBuf {
    common::root().join("scripts/zipkin.sh")
}

/// A real Zipkin on 127.0.0.1 (in-memory storage, Scribe enabled).
struct Zipkin {
    _proc: Daemon,
    base: String,
    scribe: String,
}

fn fetch_zipkin() {
    let out = Command::new("bash")
        .arg(zipkin_script())
        .arg("fetch")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "scripts/zipkin.sh fetch failed (set BLKKIN_SKIP_ZIPKIN=1 to skip): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn start_zipkin(http: u16, scribe: u16, log: &Path) -> Zipkin {
    let log = std::fs::File::create(log).unwrap();
    let child = Command::new("bash")
        .arg(zipkin_script())
        .args(["run", &http.to_string(), &scribe.to_string()])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let z = Zipkin {
        _proc: Daemon(child),
        base: format!("http://127.0.0.1:{http}"),
        scribe: format!("127.0.0.1:{scribe}"),
    };
    let deadline = Instant::now() + Duration::from_secs(180);
    while ureq::get(&format!("{}/health", z.base)).call().is_err() {
        assert!(Instant::now() < deadline, "zipkin did not become healthy");
        std::thread::sleep(Duration::from_millis(250));
    }
    z
}

fn get_json(url: &str) -> Value {
    let resp = ureq::get(url)
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    serde_json::from_reader(resp.into_reader()).unwrap()
}

/// `GET /api/v2/trace/{id}`: its spans, none if Zipkin answers 404.
fn trace_spans(z: &Zipkin, trace: &str) -> Vec<Value> {
    let url = format!("{}/api/v2/trace/{trace}", z.base);
    match ureq::get(&url).call() {
        Ok(r) => serde_json::from_reader(r.into_reader()).unwrap(),
        Err(ureq::Error::Status(404, _)) => Vec::new(),
        Err(e) => panic!("GET {url}: {e}"),
    }
}

/// Polls `GET /api/v2/trace/{id}` until it holds `n` spans.
fn wait_for_trace(z: &Zipkin, trace: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = trace_spans(z, trace);
        if got.len() >= n || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn endpoint(s: &Value) -> (String, String, u64) {
    let e = &s["localEndpoint"];
    (
        e["serviceName"].as_str().unwrap_or_default().to_string(),
        e["ipv4"].as_str().unwrap_or_default().to_string(),
        e["port"].as_u64().unwrap_or(0),
    )
}

fn tags(s: &Value) -> BTreeMap<String, String> {
    s["tags"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

fn annotation_values(s: &Value) -> Vec<String> {
    s["annotations"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| x["value"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Checks one request's trace as Zipkin returns it.
fn check_trace(i: usize, ids: &[String; 4], spans: &[Value], via: &str) {
    let [trace, root, rpc, journal] = ids;
    let ctx = format!("{via}, request {i}: {spans:#?}");
    assert_eq!(spans.len(), 4, "{ctx}");
    for s in spans {
        assert_eq!(s["traceId"], trace.as_str(), "{ctx}");
        assert!(
            s["timestamp"].as_u64().unwrap() > 1_600_000_000_000_000,
            "{ctx}"
        );
        assert!(s["duration"].as_u64().unwrap() >= 1, "{ctx}");
    }
    let find = |id: &str, kind: Option<&str>| {
        spans
            .iter()
            .find(|s| s["id"] == id && s["kind"].as_str() == kind)
            .unwrap_or_else(|| panic!("no span {id} kind {kind:?}: {ctx}"))
    };
    let client_ep = ("client".to_string(), "10.0.0.1".to_string(), 5000);
    let osd_ep = ("osd".to_string(), "10.0.0.2".to_string(), 6800);

    let r = find(root, None);
    assert_eq!(r.get("parentId"), None, "{ctx}");
    assert_eq!(r["name"], "rbd_read");
    assert_eq!(endpoint(r), client_ep);
    assert_eq!(tags(r), [("result".into(), "ok".into())].into());
    assert!(
        annotation_values(r).is_empty(),
        "start/end became timestamp/duration"
    );

    let c = find(rpc, Some("CLIENT"));
    assert_eq!(c["parentId"], root.as_str());
    assert_eq!(c["name"], "osd_op");
    assert_eq!(endpoint(c), client_ep);
    assert!(tags(c).is_empty(), "{ctx}");

    let sv = find(rpc, Some("SERVER"));
    assert_eq!(sv["parentId"], root.as_str());
    assert_eq!(sv["name"], "osd_op");
    assert_eq!(sv["shared"], true, "{ctx}");
    assert_eq!(endpoint(sv), osd_ep);
    let want: BTreeMap<String, String> = [
        ("object".into(), format!("obj_{i}")),
        ("bytes".into(), (-4096 * i as i64).to_string()),
    ]
    .into();
    assert_eq!(tags(sv), want, "{ctx}");
    assert_eq!(annotation_values(sv), ["journaled"], "{ctx}");
    // The server ran inside the client's call (each process converts its own
    // clock readings: allow 100 µs of calibration difference).
    let (cts, cdur) = (
        c["timestamp"].as_u64().unwrap(),
        c["duration"].as_u64().unwrap(),
    );
    let (sts, sdur) = (
        sv["timestamp"].as_u64().unwrap(),
        sv["duration"].as_u64().unwrap(),
    );
    assert!(cts <= sts + 100 && sts + sdur <= cts + cdur + 100, "{ctx}");

    let j = find(journal, None);
    assert_eq!(j["parentId"], rpc.as_str());
    assert_eq!(j["name"], "journal");
    assert_eq!(endpoint(j), osd_ep);
    assert_eq!(tags(j), [("len".into(), i.to_string())].into(), "{ctx}");
    assert!(
        j["duration"].as_u64().unwrap() >= 200,
        "usleep(200) inside: {ctx}"
    );
}

#[test]
fn traces_reach_real_zipkin_intact_over_json_thrift_and_scribe() {
    if skip() {
        return;
    }
    fetch_zipkin();
    let tmp = tempfile::tempdir().unwrap();
    let z = start_zipkin(free_port(), free_port(), &tmp.path().join("zipkin.log"));
    let n = 6;
    let mut all_traces = HashSet::new();
    for via in ["json", "thrift", "scribe"] {
        let args: Vec<String> = match via {
            "scribe" => vec![
                "--linger-ms".into(),
                "300".into(),
                "--scribe".into(),
                z.scribe.clone(),
            ],
            f => vec![
                "--linger-ms".into(),
                "300".into(),
                "--zipkin-url".into(),
                z.base.clone(),
                "--zipkin-format".into(),
                f.into(),
            ],
        };
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let node = NodeStack::start();
        let coll = Collector::start(
            &[&node.relay],
            &args,
            &node.tmp.path().join("collector.log"),
        );
        let requests = node.run_rpc_tree(n);
        assert_eq!(requests.len(), n);
        for (i, ids) in requests.iter().enumerate() {
            let spans = wait_for_trace(&z, &ids[0], 4);
            check_trace(i, ids, &spans, via);
            all_traces.insert(ids[0].clone());
        }
        let log = coll.stop();
        assert_eq!(
            counter(&log, "sink totals", "sent"),
            Some(4 * n as u64),
            "{log}"
        );
        assert_eq!(
            counter(&log, "sink totals", "dropped_full"),
            Some(0),
            "{log}"
        );
        assert_eq!(
            counter(&log, "collector totals", "updates"),
            Some(0),
            "{log}"
        );
    }
    // The search API finds every trace by service, and lists both services.
    for service in ["client", "osd"] {
        let traces = get_json(&format!(
            "{}/api/v2/traces?serviceName={service}&limit=1000&lookback=3600000",
            z.base
        ));
        let found: HashSet<String> = traces
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t[0]["traceId"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(found, all_traces, "traces of {service}");
    }
    let services = get_json(&format!("{}/api/v2/services", z.base));
    assert_eq!(services, serde_json::json!(["client", "osd"]));
    let names = get_json(&format!("{}/api/v2/spans?serviceName=osd", z.base));
    assert_eq!(names, serde_json::json!(["journal", "osd_op"]));
}

#[test]
fn zipkin_down_at_start_then_up_gets_what_was_not_dropped_and_drops_are_counted() {
    if skip() {
        return;
    }
    fetch_zipkin();
    let (http, scribe) = (free_port(), free_port());
    let base = format!("http://127.0.0.1:{http}");
    let node = NodeStack::start();
    let args = [
        "--linger-ms",
        "300",
        "--zipkin-url",
        &base,
        "--queue-spans",
        "8",
        "--batch-spans",
        "4",
        "--max-backoff",
        "0.5",
        "--stats-interval",
        "0.2",
    ];
    let coll = Collector::start(
        &[&node.relay],
        &args,
        &node.tmp.path().join("collector.log"),
    );
    let n = 10;
    let requests = node.run_rpc_tree(n);
    // Every span is assembled; with Zipkin down the queue overflows.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = coll.log();
        let spans = counter(&log, "collector counters", "spans").unwrap_or(0);
        let retries = counter(&log, "sink counters", "retries").unwrap_or(0);
        if spans == 4 * n as u64 && retries > 0 {
            assert!(
                counter(&log, "sink counters", "dropped_full").unwrap() > 0,
                "{log}"
            );
            assert_eq!(counter(&log, "sink counters", "sent"), Some(0), "{log}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "collector did not assemble: {log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let z = start_zipkin(http, scribe, &node.tmp.path().join("zipkin.log"));
    // What was queued is delivered once Zipkin is up.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let log = coll.log();
        let pending = counter(&log, "sink counters", "pending");
        let sent = counter(&log, "sink counters", "sent").unwrap_or(0);
        if pending == Some(0) && sent > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not delivered after Zipkin came up: {log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = coll.stop();
    let sent = counter(&log, "sink totals", "sent").unwrap();
    let dropped = counter(&log, "sink totals", "dropped_full").unwrap();
    assert_eq!(
        sent + dropped,
        4 * n as u64,
        "every span delivered or counted: {log}"
    );
    assert!(dropped > 0 && sent >= 8, "{log}");
    assert!(counter(&log, "sink totals", "retries").unwrap() > 0);
    // Zipkin holds exactly the spans reported sent.
    let mut stored = 0;
    for ids in &requests {
        stored += trace_spans(&z, &ids[0]).len();
    }
    assert_eq!(stored as u64, sent, "{log}");
}

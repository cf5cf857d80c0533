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
    endpoint_at(s, "localEndpoint")
}

fn endpoint_at(s: &Value, field: &str) -> (String, String, u64) {
    let e = &s[field];
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
    assert_eq!(endpoint_at(c, "remoteEndpoint"), osd_ep, "{ctx}");
    assert!(tags(c).is_empty(), "{ctx}");

    let sv = find(rpc, Some("SERVER"));
    assert_eq!(sv["parentId"], root.as_str());
    assert_eq!(sv["name"], "osd_op");
    assert_eq!(sv["shared"], true, "{ctx}");
    assert_eq!(endpoint(sv), osd_ep);
    assert_eq!(endpoint_at(sv, "remoteEndpoint"), client_ep, "{ctx}");
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
                "--linger".into(),
                "300ms".into(),
                "--scribe".into(),
                z.scribe.clone(),
            ],
            f => vec![
                "--linger".into(),
                "300ms".into(),
                "--zipkin-url".into(),
                // JSON through the full endpoint (the form OpenTelemetry's
                // Zipkin exporter takes), Thrift through the base URL.
                if f == "json" {
                    format!("{}/api/v2/spans", z.base)
                } else {
                    z.base.clone()
                },
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
    // Remote endpoints: each side of the shared RPC names the other.
    for (service, remote) in [("client", "osd"), ("osd", "client")] {
        let remotes = get_json(&format!(
            "{}/api/v2/remoteServices?serviceName={service}",
            z.base
        ));
        assert_eq!(remotes, serde_json::json!([remote]), "{service}");
        let traces = get_json(&format!(
            "{}/api/v2/traces?serviceName={service}&remoteServiceName={remote}&limit=1000&lookback=3600000",
            z.base
        ));
        assert_eq!(
            traces.as_array().unwrap().len(),
            all_traces.len(),
            "{service} → {remote}"
        );
    }
    let services = get_json(&format!("{}/api/v2/services", z.base));
    assert_eq!(services, serde_json::json!(["client", "osd"]));
    let names = get_json(&format!("{}/api/v2/spans?serviceName=osd", z.base));
    assert_eq!(names, serde_json::json!(["journal", "osd_op"]));
}

/// A collector on `node` sending v2 JSON to `url` through a queue of
/// `queue` spans in batches of 4, quick backoff and counters every 0.2 s.
fn small_queue_collector(node: &NodeStack, url: &str, queue: usize) -> Collector {
    let queue = queue.to_string();
    let args = [
        "--linger",
        "300ms",
        "--zipkin-url",
        url,
        "--queue-spans",
        &queue,
        "--batch-spans",
        "4",
        "--max-backoff",
        "0.5",
        "--stats-interval",
        "0.2",
    ];
    Collector::start(
        &[&node.relay],
        &args,
        &node.tmp.path().join("collector.log"),
    )
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
    let coll = small_queue_collector(&node, &base, 8);
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

/// What the [`FaultyProxy`] does with the next request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Answers 500 and 503 alternately without forwarding.
    ServerErrors,
    /// Forwards after this delay.
    Slow(Duration),
}

/// A small HTTP proxy in front of the real Zipkin that answers 5xx or
/// forwards slowly; counts the spans Zipkin accepted through it.
struct FaultyProxy {
    addr: String,
    fault: std::sync::Arc<std::sync::Mutex<Fault>>,
    /// Spans in requests Zipkin answered 2xx.
    forwarded: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Requests answered with a 5xx by the proxy itself.
    failed: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl FaultyProxy {
    fn start(upstream: &str, fault: Fault) -> FaultyProxy {
        use std::sync::atomic::AtomicU64;
        use std::sync::{Arc, Mutex};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let fault = Arc::new(Mutex::new(fault));
        let forwarded = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let (f, fw, fl) = (fault.clone(), forwarded.clone(), failed.clone());
        let upstream = upstream.trim_start_matches("http://").to_string();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (f, fw, fl, up) = (f.clone(), fw.clone(), fl.clone(), upstream.clone());
                std::thread::spawn(move || {
                    let _ = proxy_one(conn, &up, &f, &fw, &fl);
                });
            }
        });
        FaultyProxy {
            addr: format!("http://{addr}"),
            fault,
            forwarded,
            failed,
        }
    }

    fn set(&self, fault: Fault) {
        *self.fault.lock().unwrap() = fault;
    }

    fn forwarded(&self) -> u64 {
        self.forwarded.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn failed(&self) -> u64 {
        self.failed.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Serves one request (then closes): reads it whole, answers a 5xx or
/// forwards it (after a delay) with `Connection: close`.
fn proxy_one(
    mut conn: std::net::TcpStream,
    upstream: &str,
    fault: &std::sync::Mutex<Fault>,
    forwarded: &std::sync::atomic::AtomicU64,
    failed: &std::sync::atomic::AtomicU64,
) -> std::io::Result<()> {
    use std::io::{Read, Write};
    use std::sync::atomic::Ordering;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    let head_end = loop {
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = &buf[head_end..head_end + length];
    let current = *fault.lock().unwrap();
    match current {
        Fault::ServerErrors => {
            let n = failed.fetch_add(1, Ordering::SeqCst);
            let status = if n.is_multiple_of(2) {
                "500 Internal Server Error"
            } else {
                "503 Service Unavailable"
            };
            write!(
                conn,
                "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )?;
        }
        Fault::Slow(delay) => {
            std::thread::sleep(delay);
            let mut up = std::net::TcpStream::connect(upstream)?;
            for line in head.split("\r\n").filter(|l| !l.is_empty()) {
                if !line.to_ascii_lowercase().starts_with("connection:") {
                    write!(up, "{line}\r\n")?;
                }
            }
            write!(up, "Connection: close\r\n\r\n")?;
            up.write_all(body)?;
            let mut answer = Vec::new();
            up.read_to_end(&mut answer)?;
            if answer.starts_with(b"HTTP/1.1 2") {
                let spans: Vec<Value> = serde_json::from_slice(body).unwrap_or_default();
                forwarded.fetch_add(spans.len() as u64, Ordering::SeqCst);
            }
            conn.write_all(&answer)?;
        }
    }
    Ok(())
}

/// Polls the collector's log until `done` holds for it (60 s at most).
fn wait_log(coll: &Collector, what: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let log = coll.log();
        if done(&log) {
            return log;
        }
        assert!(Instant::now() < deadline, "{what}: {log}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn zipkin_answering_5xx_then_slow_gets_every_span_once_and_overflow_is_counted() {
    if skip() {
        return;
    }
    fetch_zipkin();
    let node = NodeStack::start();
    let z = start_zipkin(
        free_port(),
        free_port(),
        &node.tmp.path().join("zipkin.log"),
    );
    let proxy = FaultyProxy::start(&z.base, Fault::ServerErrors);
    let coll = small_queue_collector(&node, &proxy.addr, 24);
    let sink = |log: &str, key| counter(log, "sink counters", key).unwrap_or(0);

    // 1. Zipkin answers 500/503: spans wait in the queue (within its bound),
    //    retried with backoff; nothing is sent or dropped.
    let first = node.run_rpc_tree(5);
    let log = wait_log(&coll, "retries while Zipkin fails", |log| {
        counter(log, "collector counters", "spans") == Some(20) && sink(log, "retries") >= 3
    });
    assert_eq!(sink(&log, "sent"), 0, "{log}");
    assert_eq!(sink(&log, "dropped_full"), 0, "{log}");
    assert!(proxy.failed() >= 3);

    // 2. Zipkin slow (1 s per request): all of them arrive, each once.
    proxy.set(Fault::Slow(Duration::from_secs(1)));
    let log = wait_log(&coll, "delivery once Zipkin answers", |log| {
        sink(log, "sent") == 20 && counter(log, "sink counters", "pending") == Some(0)
    });
    assert_eq!(sink(&log, "dropped_full"), 0, "{log}");
    assert_eq!(proxy.forwarded(), 20, "every span forwarded exactly once");
    for ids in &first {
        assert_eq!(wait_for_trace(&z, &ids[0], 4).len(), 4, "{log}");
    }

    // 3. Still slow, and more than the queue holds arrives at once: the
    //    overflow is dropped and counted, the rest delivered; no crash.
    let second = node.run_rpc_tree(15);
    wait_log(&coll, "overflow counted and the rest delivered", |log| {
        counter(log, "collector counters", "spans") == Some(80)
            && counter(log, "sink counters", "pending") == Some(0)
    });
    let log = coll.stop();
    let sent = counter(&log, "sink totals", "sent").unwrap();
    let dropped = counter(&log, "sink totals", "dropped_full").unwrap();
    assert!(dropped > 0, "60 spans at once into a queue of 24: {log}");
    assert_eq!(sent + dropped, 80, "every span delivered or counted: {log}");
    assert_eq!(proxy.forwarded(), sent, "nothing sent twice: {log}");
    let stored: usize = first
        .iter()
        .chain(&second)
        .map(|ids| trace_spans(&z, &ids[0]).len())
        .sum();
    assert_eq!(stored as u64, sent, "Zipkin holds what was sent: {log}");
}

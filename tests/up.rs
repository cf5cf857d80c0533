//! `blkkin up` end to end: the one-process node stack drains a traced
//! workload's rings into its relay, a live reader gets every annotation,
//! and Ctrl-C stops it cleanly after draining.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const BLKKIN: &str = env!("CARGO_BIN_EXE_blkkin");

#[test]
fn up_drains_the_workload_into_its_relay_and_stops_on_ctrl_c() {
    let rings = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let mut up = Command::new(BLKKIN)
        .args([
            "up",
            "--relay-listen",
            "127.0.0.1:0",
            "--listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(state.path())
        .env("BLKIN_SHM_DIR", rings.path())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(up.stderr.take().unwrap());
    let mut banner = String::new();
    err.read_line(&mut banner).unwrap();
    let relay = banner
        .split("relay on ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("no relay address in {banner:?}"))
        .to_string();

    // 20 requests, no failures (the 25th fails): 20 annotations each, 2 slow.
    run_workload(rings.path(), 20);
    let expected = 20 * 20 + 2;
    let tail = Command::new(BLKKIN)
        .args(["tail", &relay, "--json", "--from-oldest", "--count"])
        .arg(expected.to_string())
        .output()
        .unwrap();
    assert!(
        tail.status.success(),
        "{}",
        String::from_utf8_lossy(&tail.stderr)
    );
    let lines = String::from_utf8_lossy(&tail.stdout);
    let mut seen = std::collections::HashSet::new();
    for l in lines.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        if v.get("traceId").is_some() {
            assert!(seen.insert(l.to_string()), "duplicate annotation {l}");
        }
    }
    assert_eq!(seen.len(), expected);

    // The workload's processes exited and were drained: the consumer
    // removes their rings.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let left = loop {
        let left: Vec<_> = std::fs::read_dir(rings.path()).unwrap().collect();
        if left.is_empty() || std::time::Instant::now() > deadline {
            break left;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(left.is_empty(), "rings left behind: {left:?}");

    // SAFETY: signalling our own child.
    unsafe { libc::kill(up.id() as i32, libc::SIGINT) };
    let status = up.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut err, &mut rest).unwrap();
    assert!(status.success(), "blkkin up: {status}: {rest}");
}

/// Runs `blkkin workload -n N` (every request traced) into `rings`.
fn run_workload(rings: &std::path::Path, n: usize) {
    let out = Command::new(BLKKIN)
        .args(["workload", "-n", &n.to_string()])
        .env("BLKIN_SHM_DIR", rings)
        .env_remove("BLKIN_RATE")
        .output()
        .unwrap();
    assert!(out.status.success());
}

/// Spans the embedded store at `api` holds for the last hour (0 when it
/// does not answer).
fn stored_spans(api: &str) -> usize {
    let url = format!("{api}/api/v2/traces?limit=1000&lookback=3600000");
    match ureq::get(&url).call() {
        Ok(r) => {
            let traces: Vec<Vec<serde_json::Value>> =
                serde_json::from_str(&r.into_string().unwrap()).unwrap();
            traces.iter().map(Vec::len).sum()
        }
        Err(_) => 0,
    }
}

/// `blkkin up` with its store API on `listen`; its log goes to `log`.
fn start_up(
    state: &std::path::Path,
    rings: &std::path::Path,
    listen: &str,
    log: &std::path::Path,
    extra: &[&str],
) -> std::process::Child {
    Command::new(BLKKIN)
        .args([
            "up",
            "--relay-listen",
            "127.0.0.1:0",
            "--listen",
            listen,
            "--data-dir",
        ])
        .arg(state)
        .args(extra)
        .env("BLKIN_SHM_DIR", rings)
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// The spans of the JSON lines file `path` (none when it is missing).
fn jsonl_spans(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A span's identity: trace, id, kind and endpoint (the sides of a shared
/// span are separate v2 spans).
fn span_key(s: &serde_json::Value) -> String {
    format!(
        "{} {} {} {}",
        s["traceId"], s["id"], s["kind"], s["localEndpoint"]["serviceName"]
    )
}

/// Asserts `spans` holds no span twice and returns their identities.
fn unique(what: &str, spans: &[serde_json::Value]) -> std::collections::BTreeSet<String> {
    let keys: std::collections::BTreeSet<String> = spans.iter().map(span_key).collect();
    assert_eq!(keys.len(), spans.len(), "a span twice in {what}");
    keys
}

#[test]
fn ctrl_c_right_after_a_burst_delivers_what_closed_keeps_what_is_open_and_the_next_start_delivers_it(
) {
    let rings = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let api = format!("http://{listen}");
    let log = state.path().join("up.log");
    let jsonl = state.path().join("spans.jsonl");
    let archive = state.path().join("archive");
    let sinks = |jsonl: &std::path::Path| {
        vec![
            "--jsonl".to_string(),
            jsonl.display().to_string(),
            "--archive".to_string(),
            archive.display().to_string(),
        ]
    };
    // A long linger: at Ctrl-C the closed sides of the second burst still
    // wait, so some are open when the stack stops.
    let mut args = sinks(&jsonl);
    args.extend(["--linger".to_string(), "5000ms".to_string()]);
    let mut up = start_up(
        state.path(),
        rings.path(),
        &listen,
        &log,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !std::fs::read_to_string(&log)
        .unwrap()
        .contains("Ctrl-C stops")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "blkkin up did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    // A first burst (20 traces of 7 spans), delivered once its linger passed…
    run_workload(rings.path(), 20);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while jsonl_spans(&jsonl).len() < 140 {
        assert!(std::time::Instant::now() < deadline, "first burst");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // …then a second one, and Ctrl-C at once.
    run_workload(rings.path(), 20);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(up.id() as i32, libc::SIGINT) };
    let status = up.wait().unwrap();
    let rest = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "blkkin up: {status}: {rest}");
    // What --help promises: every completed span delivered to every sink,
    // open ones kept, and their count said at stop.
    let help = Command::new(BLKKIN)
        .args(["up", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("deliver every span it completed to its sinks"),
        "{help}"
    );
    assert!(help.contains("kept in the"), "{help}");
    // …and describes up's own defaults, not the standalone collector's.
    assert!(help.contains("[default: DATA_DIR/collector]"), "{help}");
    assert!(help.contains("[default: DATA_DIR/spans.db"), "{help}");
    assert!(!help.contains("nothing is kept"), "{help}");
    let kept: usize = rest
        .split("kept ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count of kept sides at stop: {rest}"));
    assert!(kept > 0, "the long linger left sides open: {rest}");
    assert!(stored_spans(&api) == 0, "the store is stopped");
    let delivered = unique("the JSON lines at stop", &jsonl_spans(&jsonl));
    assert_eq!(
        delivered.len() + kept,
        280,
        "delivered at stop + kept = both bursts: {rest}"
    );
    assert_eq!(
        unique("the archive at stop", &common::archived_spans(&archive)),
        delivered,
        "the archive committed at stop what the JSON lines got"
    );

    // The next start on the same data directory delivers the kept sides,
    // each once, to every sink.
    let jsonl2 = state.path().join("spans-again.jsonl");
    let args = sinks(&jsonl2);
    let mut again = start_up(
        state.path(),
        rings.path(),
        &listen,
        &state.path().join("again.log"),
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut n = 0;
    while n < 280 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(200));
        n = stored_spans(&api);
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(again.id() as i32, libc::SIGINT) };
    again.wait().unwrap();
    assert_eq!(n, 280, "every span of both bursts in the store, once");
    let later = unique("the JSON lines of the next start", &jsonl_spans(&jsonl2));
    assert_eq!(
        later.len(),
        kept,
        "the kept sides, no more: {rest}\n{}",
        std::fs::read_to_string(state.path().join("again.log")).unwrap()
    );
    assert!(later.is_disjoint(&delivered), "nothing delivered twice");
    let archived = unique("the archive", &common::archived_spans(&archive));
    assert_eq!(archived, &delivered | &later);
}

#[test]
fn a_store_port_in_use_stops_up_at_once_naming_the_flags() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = held.local_addr().unwrap().to_string();
    let state = tempfile::tempdir().unwrap();
    let rings = tempfile::tempdir().unwrap();
    let out = Command::new(BLKKIN)
        .args([
            "up",
            "--relay-listen",
            "127.0.0.1:0",
            "--listen",
            &listen,
            "--data-dir",
        ])
        .arg(state.path())
        .env("BLKIN_SHM_DIR", rings.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("cannot listen").count(), 1, "{err}");
    assert!(
        err.contains("--no-store") && err.contains("--listen"),
        "{err}"
    );
    // Nothing was started: no relay data.
    assert!(!state.path().join("relay").exists(), "{err}");
}

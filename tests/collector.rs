//! `blkkin-collector` end to end without Zipkin: two nodes (each rings →
//! consumer → relay) read by one collector into JSON lines, every span
//! exactly once across a SIGKILL of one relay; and its command-line errors.

mod common;

use std::collections::HashSet;
use std::process::Command;
use std::time::{Duration, Instant};

use common::collector::{counter, Collector, NodeStack};
use serde_json::Value;

fn read_spans(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("every line is a JSON span"))
        .collect()
}

#[test]
fn two_relays_into_json_lines_exactly_once_across_a_relay_kill() {
    let mut a = NodeStack::start();
    let b = NodeStack::start();
    let out = a.tmp.path().join("spans.jsonl");
    let coll = Collector::start(
        &[&a.relay, &b.relay],
        &["--jsonl", out.to_str().unwrap(), "--linger", "100ms"],
        &a.tmp.path().join("collector.log"),
    );
    let mut traces: HashSet<String> = HashSet::new();
    for ids in a.run_rpc_tree(20).into_iter().chain(b.run_rpc_tree(20)) {
        traces.insert(ids[0].clone());
    }
    let wait_for = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while read_spans(&out).len() < n {
            assert!(
                Instant::now() < deadline,
                "only {} of {n} spans",
                read_spans(&out).len()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_for(40 * 4);
    a.restart_relay_hard();
    for ids in a.run_rpc_tree(10) {
        traces.insert(ids[0].clone());
    }
    wait_for(50 * 4);
    let log = coll.stop();

    let spans = read_spans(&out);
    assert_eq!(spans.len(), 50 * 4, "{log}");
    let mut seen = HashSet::new();
    for s in &spans {
        assert!(traces.contains(s["traceId"].as_str().unwrap()));
        let key = (s["id"].to_string(), s["kind"].to_string());
        assert!(seen.insert(key), "span emitted twice: {s}");
    }
    assert_eq!(
        counter(&log, "collector totals", "spans"),
        Some(200),
        "{log}"
    );
    assert_eq!(
        counter(&log, "collector totals", "updates"),
        Some(0),
        "{log}"
    );
    assert_eq!(
        counter(&log, "collector totals", "incomplete"),
        Some(0),
        "{log}"
    );
    assert_eq!(counter(&log, "sink totals", "sent"), Some(200), "{log}");
    assert!(
        log.contains("relay connection lost"),
        "the relay kill was noticed: {log}"
    );
}

#[test]
fn command_line_errors_are_clear() {
    let exe = common::bin("blkkin-collector");
    let no_sink = Command::new(&exe)
        .args(["--relay", "127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(!no_sink.status.success());
    let err = String::from_utf8_lossy(&no_sink.stderr);
    assert!(err.contains("no sink given"), "{err}");

    let bad = Command::new(&exe)
        .args([
            "--relay",
            "127.0.0.1:1",
            "--jsonl",
            "-",
            "--idle-timeout=-1",
        ])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("--idle-timeout"), "{err}");

    // Unusable TLS files stop the start, naming the file.
    let tls = Command::new(&exe)
        .args(["--relay", "127.0.0.1:1", "--cassandra", "127.0.0.1:1"])
        .args(["--cassandra-ca", "/nonexistent/blkkin-ca.pem"])
        .output()
        .unwrap();
    assert!(!tls.status.success());
    let err = String::from_utf8_lossy(&tls.stderr);
    assert!(
        err.contains("CA file") && err.contains("/nonexistent/blkkin-ca.pem"),
        "{err}"
    );

    // The full endpoint is accepted; the other format's, or another API
    // path, is refused at start (nothing posted to a 404 forever).
    let wrong = Command::new(&exe)
        .args(["--relay", "127.0.0.1:1"])
        .args(["--zipkin-url", "http://127.0.0.1:1/api/v1/spans"])
        .output()
        .unwrap();
    assert!(!wrong.status.success());
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        err.contains("--zipkin-url") && err.contains("other format"),
        "{err}"
    );

    let help = Command::new(&exe).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--relay",
        "--zipkin-url",
        "--zipkin-format",
        "--scribe",
        "--jsonl",
        "--cassandra",
        "--cassandra-tls",
        "--cassandra-ca",
    ] {
        assert!(text.contains(flag), "--help mentions {flag}");
    }
}

//! Collector checkpoints and the archive sink end to end: the traced
//! storage-stack workload (`blkkin workload`, four C processes) → rings →
//! consumer → relay → `blkkin-collector`. A collector killed with SIGKILL
//! and restarted on the same `--state-dir` resumes every relay stream where
//! its last checkpoint was cut (it does not read the relay from the oldest
//! record again), and the archive it writes holds every span exactly once,
//! checked against a second collector reading the same relay into JSON
//! lines — in a local directory, and on a real HDFS (scripts/hdfs.sh) whose
//! NameNode also restarts mid-stream (that test fails when HDFS cannot
//! start, unless BLKKIN_SKIP_HDFS=1 is set), read back through hdfs-native
//! and WebHDFS; `blkkin analyze` over either archive agrees with the
//! reference spans (counts, errors, durations computed here).

#[path = "../collector/tests/archive_support/mod.rs"]
mod archive_support;
mod common;
#[path = "../collector/tests/hdfs_support/mod.rs"]
mod hdfs_support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use archive_support::check_analyze_json;
use blkkin_collector::archive::{
    encode, layout, ArchiveError, ArchiveFs, FileEntry, HdfsConfig, HdfsFs, LocalFs,
};
use blkkin_collector::model::Span;
use common::collector::{counter, Collector, NodeStack};
use serde_json::Value;

/// Starts `blkkin workload` on the node's rings.
fn workload(node: &NodeStack, requests: u64, rate: u64) -> Child {
    Command::new(env!("CARGO_BIN_EXE_blkkin"))
        .args(["workload", "-n", &requests.to_string()])
        .args(["-r", &rate.to_string()])
        .env("BLKIN_SHM_DIR", &node.rings)
        .env_remove("BLKIN_RATE")
        .env_remove("RATE")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

fn finish(mut w: Child) {
    assert!(w.wait().unwrap().success(), "the workload failed");
}

/// Records the relay holds once the consumer drained every ring (the
/// count stopped moving).
fn relay_records(relay: &str) -> u64 {
    let mut last = relay_records_now(relay);
    loop {
        std::thread::sleep(Duration::from_millis(700));
        let now = relay_records_now(relay);
        if now == last {
            return now;
        }
        last = now;
    }
}

/// Records the relay holds (sum of every stream's next position).
fn relay_records_now(relay: &str) -> u64 {
    let s = common::daemons::status_json(relay, None);
    s["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|st| st["next"].as_u64().unwrap())
        .sum()
}

/// The checkpoint in `state`, if written yet.
fn checkpoint(state: &Path) -> Option<Value> {
    let text = std::fs::read(state.join("checkpoint.json")).ok()?;
    Some(serde_json::from_slice(&text).unwrap())
}

/// Records covered by the checkpoint in `state` (sum of its positions).
fn checkpointed(state: &Path) -> Option<u64> {
    let c = checkpoint(state)?;
    let sum = c["relays"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|v| v.as_array().unwrap())
        .map(|p| p["next"].as_u64().unwrap())
        .sum();
    Some(sum)
}

fn wait(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A span's identity: (trace id, span id, kind) — a shared span id is a
/// CLIENT and a SERVER span.
type Key = (String, String, String);

fn key(s: &Value) -> Key {
    let f = |k: &str| s[k].as_str().unwrap_or("").to_string();
    (f("traceId"), f("id"), f("kind"))
}

/// Every span line of the visible files of an archive.
fn archived<F: ArchiveFs>(fs: &F) -> Result<Vec<Value>, ArchiveError> {
    let mut out = Vec::new();
    for FileEntry { path, .. } in fs.list_files("")? {
        if !layout::is_visible(&path) {
            continue;
        }
        let c = layout::compression_of(&path).unwrap();
        let text = encode::decode(c, &fs.read(&path)?)?;
        for l in String::from_utf8(text).unwrap().lines() {
            out.push(serde_json::from_str(l).unwrap());
        }
    }
    Ok(out)
}

fn jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// How far a time (µs) in the archive may be from the reference
/// collector's. Readers convert ring ticks with the clock calibration they
/// hold when they read a record: the restarted collector re-reads records
/// with the relay's newer calibration, the reference read them live
/// (docs/ARCHITECTURE.md, "Time"). Seen here: up to 1 µs; more than 10 µs
/// before writers refreshed their calibration at doubling intervals.
const TIME_TOLERANCE_US: i64 = 3;

/// The same span, but for times that may differ by TIME_TOLERANCE_US;
/// records the largest difference seen in `max_diff`.
fn same_span(want: &Value, got: &Value, max_diff: &mut i64) -> bool {
    let times = |s: &Value| -> (Value, Vec<i64>) {
        let mut s = s.clone();
        let mut t = Vec::new();
        let mut take = |v: &mut Value| t.push(v.take().as_i64().unwrap_or(-1));
        take(&mut s["timestamp"]);
        take(&mut s["duration"]);
        if let Some(anns) = s["annotations"].as_array_mut() {
            for a in anns {
                take(&mut a["timestamp"]);
            }
        }
        (s, t)
    };
    let ((w, wt), (g, gt)) = (times(want), times(got));
    let diff = wt.iter().zip(&gt).map(|(a, b)| (a - b).abs()).max();
    *max_diff = (*max_diff).max(diff.unwrap_or(0));
    w == g && wt.len() == gt.len() && diff.unwrap_or(0) <= TIME_TOLERANCE_US
}

/// Asserts every span of `want_spans` is in `got` exactly once, equal to
/// it, and nothing else.
fn assert_exactly_once(want_spans: &[Value], got: &[Value], log: &str) {
    let mut counts: BTreeMap<Key, usize> = BTreeMap::new();
    for s in got {
        *counts.entry(key(s)).or_default() += 1;
    }
    let dups: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        dups.is_empty(),
        "{} duplicated: {:?}\n{log}",
        dups.len(),
        dups.first()
    );
    let want: BTreeSet<Key> = want_spans.iter().map(key).collect();
    let got_keys: BTreeSet<Key> = counts.into_keys().collect();
    let missing: Vec<_> = want.difference(&got_keys).collect();
    let extra: Vec<_> = got_keys.difference(&want).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{} missing (e.g. {:?}), {} unexpected (e.g. {:?})\n{log}",
        missing.len(),
        missing.first(),
        extra.len(),
        extra.first()
    );
    // And each is the span the reference collector assembled, field for
    // field (times within TIME_TOLERANCE_US).
    let by_key: BTreeMap<Key, &Value> = got.iter().map(|s| (key(s), s)).collect();
    let mut max_diff = 0;
    let differ: Vec<(&Value, &Value)> = want_spans
        .iter()
        .map(|w| (w, by_key[&key(w)]))
        .filter(|(w, g)| !same_span(w, g, &mut max_diff))
        .collect();
    eprintln!("times differ from the reference's by up to {max_diff} µs");
    assert!(
        differ.is_empty(),
        "{} spans differ from the reference's, e.g.\n{:?}\n{log}",
        differ.len(),
        differ.first()
    );
}

/// `blkkin analyze --format json` over `archive` agrees with statistics
/// computed here from `want` (the reference collector's spans).
fn assert_analyze_agrees(archive: &str, want: &[Value]) {
    let out = Command::new(env!("CARGO_BIN_EXE_blkkin"))
        .args(["analyze", archive, "--hdfs-user", "blkkin"])
        .args(["--format", "json", "--slowest", "20"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "blkkin analyze {archive}: {stderr}");
    let spans: Vec<Span> = want
        .iter()
        .map(|v| serde_json::from_value(v.clone()).unwrap())
        .collect();
    let json = String::from_utf8(out.stdout).unwrap();
    check_analyze_json(&json, &spans, None, None, 20, TIME_TOLERANCE_US as f64);
    // A request's root is the client's span, not the volume's server half
    // that shares its id.
    let v: Value = serde_json::from_str(&json).unwrap();
    for t in v["slowest"].as_array().unwrap() {
        assert_eq!(t["root_service"], "client", "{t}");
    }
}

fn traces(spans: &[Value]) -> usize {
    spans
        .iter()
        .map(|s| key(s).0)
        .collect::<BTreeSet<_>>()
        .len()
}

#[test]
fn a_killed_collector_resumes_from_its_checkpoint_not_from_the_oldest_record() {
    let node = NodeStack::start();
    let dir = node.tmp.path();
    let state = dir.join("state");
    let db = dir.join("spans.db");
    let args: Vec<String> = [
        "--store",
        db.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--state-dir",
        state.to_str().unwrap(),
        "--checkpoint-interval",
        "0.3",
        // Pairing the two sides of a shared span (the remote endpoint the
        // comparison checks) needs both within the linger; 100 ms failed
        // under the load of the full test run.
        "--linger",
        "1500ms",
        "--stats-interval",
        "0.2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let first = Collector::start(&[&node.relay], &args, &dir.join("c1.log"));
    finish(workload(&node, 100, 0));
    let total1 = relay_records(&node.relay);
    assert!(total1 > 1000, "{total1} records");
    // A checkpoint of every record with nothing left to emit.
    wait(
        "a checkpoint of every record",
        Duration::from_secs(60),
        || {
            checkpointed(&state) == Some(total1)
                && checkpoint(&state).unwrap()["assembler"]["spans"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .flat_map(|s| s["sides"].as_array().unwrap())
                    .all(|side| side["pending"] == false)
        },
    );
    wait("the first run's counters", Duration::from_secs(10), || {
        counter(&first.log(), "relay counters", "annotations") == Some(total1)
    });
    let log1 = first.kill9();
    assert_eq!(
        counter(&log1, "relay counters", "annotations"),
        Some(total1)
    );

    // More records while it is down, then a restart on the same state.
    finish(workload(&node, 20, 0));
    let total2 = relay_records(&node.relay);
    let second = Collector::start(&[&node.relay], &args, &dir.join("c2.log"));
    wait("the new records", Duration::from_secs(60), || {
        counter(&second.log(), "relay counters", "annotations") >= Some(total2 - total1)
    });
    // The store holds both runs' traces, complete (once the second run's
    // sides have lingered and been emitted).
    let log = second.log();
    let api = log
        .split("Zipkin API of the embedded store on ")
        .nth(1)
        .and_then(|r| r.split("/api/").next())
        .expect("the store's address in the log")
        .to_string();
    let url = format!("{api}/api/v2/traces?limit=100000&lookback=86400000");
    let traces = || -> Vec<Value> {
        let body = ureq::get(&url).call().unwrap().into_string().unwrap();
        let v: Value = serde_json::from_str(&body).unwrap();
        v.as_array().unwrap().clone()
    };
    wait(
        "both runs' traces in the store",
        Duration::from_secs(30),
        || {
            let t = traces();
            t.len() >= 120 && t.iter().all(|t| t.as_array().unwrap().len() == 7)
        },
    );
    let stored = traces();
    assert_eq!(stored.len(), 120, "traces in the store");
    assert!(stored.iter().all(|t| t.as_array().unwrap().len() == 7));
    let log2 = second.stop();
    assert!(log2.contains("resuming from checkpoint"), "{log2}");
    // Exactly the records after the checkpoint were read again: none of
    // the first run's.
    assert_eq!(
        counter(&log2, "relay counters", "annotations"),
        Some(total2 - total1),
        "{log2}"
    );
    // Its spans are new ones (the first run's were all emitted before the
    // checkpoint): 7 v2 spans per request of the storage stack.
    let spans = counter(&log2, "collector totals", "spans").unwrap();
    assert_eq!(spans, 20 * 7, "{log2}");
    assert_eq!(counter(&log2, "collector totals", "updates"), Some(0));
}

/// Arguments of a collector archiving into `archive` with checkpoints in
/// `state`.
fn archive_args(archive: &str, state: &Path) -> Vec<String> {
    [
        "--archive",
        archive,
        "--archive-roll-interval",
        "0.5",
        "--archive-user",
        "blkkin",
        "--state-dir",
        state.to_str().unwrap(),
        // Pairing the two sides of a shared span (the remote endpoint the
        // comparison checks) needs both within the linger; 100 ms failed
        // under the load of the full test run.
        "--linger",
        "1500ms",
        "--stats-interval",
        "0.5",
        "--name",
        "ckpt-test",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Runs a workload of `requests` while a collector archives into `archive`,
/// kills that collector with SIGKILL mid-stream, restarts it (calling
/// `during` while it runs, e.g. to restart the NameNode), and returns
/// (archived spans read by `read`, the reference collector's spans, logs).
pub fn archive_across_a_kill(
    archive: &str,
    requests: u64,
    read: impl Fn() -> Vec<Value>,
    during: impl FnOnce(),
) -> (Vec<Value>, Vec<Value>, String) {
    let node = NodeStack::start();
    let dir = node.tmp.path();
    let state = dir.join("state");
    let reference_out = dir.join("reference.jsonl");
    let reference = Collector::reference(&node, &reference_out);
    let args = archive_args(archive, &state);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let first = Collector::start(&[&node.relay], &args, &dir.join("c1.log"));
    let w = workload(&node, requests, requests / 3);
    // Mid-stream: after a first commit, while the workload still runs.
    wait("a first commit", Duration::from_secs(60), || {
        checkpointed(&state).is_some_and(|n| n > 0)
    });
    std::thread::sleep(Duration::from_millis(700));
    let mut log = first.kill9();
    let second = Collector::start(&[&node.relay], &args, &dir.join("c2.log"));
    during();
    finish(w);
    let want_traces = requests as usize;
    wait(
        "every trace in the reference",
        Duration::from_secs(60),
        || traces(&jsonl(&reference_out)) == want_traces,
    );
    let want = jsonl(&reference_out).len();
    wait(
        "every span in the archive",
        Duration::from_secs(120),
        || read().len() >= want,
    );
    log.push_str(&second.stop());
    log.push_str(&reference.stop());
    (read(), jsonl(&reference_out), log)
}

#[test]
fn archive_holds_every_span_once_across_a_collector_kill() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("archive");
    let fs = LocalFs::new(&root).unwrap();
    let (got, want, log) = archive_across_a_kill(
        root.to_str().unwrap(),
        300,
        || archived(&fs).unwrap(),
        || {},
    );
    assert_eq!(traces(&want), 300);
    assert_eq!(want.len(), 300 * 7, "{log}");
    assert_exactly_once(&want, &got, &log);
    assert!(log.contains("resuming from checkpoint"), "{log}");
    assert_analyze_agrees(root.to_str().unwrap(), &want);
}

#[test]
fn hdfs_archive_holds_every_span_once_across_a_collector_kill_and_a_namenode_restart() {
    if hdfs_support::skip_hdfs("the real-HDFS checkpoint test") {
        return;
    }
    let mut hdfs = hdfs_support::Hdfs::start();
    let root = "/blkkin/ckpt";
    let config = HdfsConfig {
        namenode_url: hdfs.url(),
        root: root.into(),
        user: Some("blkkin".into()),
    };
    // While the NameNode restarts, reading fails: nothing read yet.
    let read = || {
        HdfsFs::connect(config.clone())
            .and_then(|fs| archived(&fs))
            .unwrap_or_default()
    };
    let url = format!("{}{root}", hdfs.url());
    let (got, want, log) = archive_across_a_kill(&url, 300, read, || {
        std::thread::sleep(Duration::from_millis(500));
        hdfs.restart_namenode();
    });
    assert_eq!(traces(&want), 300);
    assert_eq!(want.len(), 300 * 7, "{log}");
    assert_exactly_once(&want, &got, &log);
    assert!(log.contains("resuming from checkpoint"), "{log}");
    // The restart did hit the collector: its writer failed and was reopened.
    assert!(log.contains("archive reopened"), "{log}");
    // The same files through WebHDFS: every span once, nothing in progress.
    let mut via_http = Vec::new();
    for (rel, text) in hdfs.webhdfs_archive(root) {
        assert!(!rel.starts_with("_tmp/"), "left in progress: {rel}");
        for line in text.iter().flat_map(|t| t.split(|&b| b == b'\n')) {
            if !line.is_empty() {
                via_http.push(serde_json::from_slice(line).unwrap());
            }
        }
    }
    assert_exactly_once(&want, &via_http, &log);
    // `blkkin analyze` straight from HDFS agrees with the spans sent.
    assert_analyze_agrees(&url, &want);
}

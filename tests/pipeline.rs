//! End to end: a traced C program → blkkin-consumerd → blkkin-relayd →
//! `blkkin tail`, every annotation exactly once.

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::daemons::*;

/// Collects what `blkkin tail` prints (it exits after its --count), failing
/// after `timeout`; checks that no annotation arrives twice.
fn tail_lines(tail: &mut Daemon, timeout: Duration) -> Vec<String> {
    let stdout = tail.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let lines: Vec<String> = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect();
        tx.send(lines).unwrap();
    });
    let lines = rx
        .recv_timeout(timeout)
        .expect("tail received every annotation in time");
    let mut seen = HashSet::new();
    for l in &lines {
        let a: serde_json::Value = serde_json::from_str(l).unwrap();
        let key = (
            a["id"].to_string(),
            a["value"].to_string(),
            a["timestamp"].to_string(),
        );
        assert!(seen.insert(key), "duplicate annotation {l}");
    }
    lines
}

#[test]
fn traced_program_to_live_reader_exactly_once() {
    let tmp = tempfile::tempdir().unwrap();
    let rings = tmp.path().join("rings");
    std::fs::create_dir_all(&rings).unwrap();
    let port = free_port();
    let _relay = start_relay(&tmp.path().join("relay"), port);
    let relay = format!("127.0.0.1:{port}");
    let _consumer = start_consumer(&rings, &relay);
    let n = 200; // requests; 6 annotations each
    let mut tail = start_tail(&relay, Some(n * 6));
    let libs = common::lib_dir(tmp.path());
    let exe = common::compile(tmp.path(), &libs, "pingpong.c", "pingpong", false);
    let requests = common::run_traced(&exe, &[&n.to_string()], &rings, &[]);
    assert_eq!(requests.lines().count(), n);

    let lines = tail_lines(&mut tail, Duration::from_secs(30));
    assert_eq!(lines.len(), n * 6);
    let traces: HashSet<&str> = requests.lines().map(|l| &l[..16]).collect();
    assert_eq!(traces.len(), n);
    for l in &lines {
        let a: serde_json::Value = serde_json::from_str(l).unwrap();
        assert!(traces.contains(a["traceId"].as_str().unwrap()));
    }
    // Once acknowledged and the writers gone, the consumer removes the rings.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_dir(&rings).unwrap().count() > 0 {
        assert!(
            Instant::now() < deadline,
            "ring files of exited writers were not removed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn kill_9_of_consumer_and_relay_loses_and_duplicates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let rings = tmp.path().join("rings");
    std::fs::create_dir_all(&rings).unwrap();
    let data = tmp.path().join("relay");
    let port = free_port();
    let relay = format!("127.0.0.1:{port}");
    let mut relay_d = start_relay(&data, port);
    let mut consumer = start_consumer(&rings, &relay);
    let libs = common::lib_dir(tmp.path());
    let exe = common::compile(tmp.path(), &libs, "pingpong.c", "pingpong", false);
    let n = 40_000usize;
    // Big rings: while the consumer is down nothing may overflow.
    let mut writer = Command::new(&exe)
        .arg(n.to_string())
        .env("BLKIN_SHM_DIR", &rings)
        .env("BLKIN_RING_SIZE", "64M")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(150));
    kill9(consumer);
    std::thread::sleep(Duration::from_millis(150));
    consumer = start_consumer(&rings, &relay);
    std::thread::sleep(Duration::from_millis(150));
    kill9(relay_d);
    std::thread::sleep(Duration::from_millis(150));
    relay_d = start_relay(&data, port);
    assert!(writer.wait().unwrap().success());
    let mut tail = start_tail(&relay, Some(n * 6));
    let lines = tail_lines(&mut tail, Duration::from_secs(60));
    assert_eq!(lines.len(), n * 6, "every annotation reached the reader");
    drop((consumer, relay_d));
}

/// Runs tests/c/stress.c: `procs` processes of `threads` threads, each
/// process killing itself with SIGKILL once every thread recorded `kill`
/// annotations (mid-burst).
fn run_stress_killed(node: &Node, procs: u64, threads: u64, kill: u64) {
    let exe = node.compile("stress.c");
    let out = Command::new(&exe)
        .args([procs, threads, 10_000_000, kill].map(|n| n.to_string()))
        .env("BLKIN_SHM_DIR", &node.rings)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let killed = text
        .lines()
        .filter(|l| l.starts_with("child ") && l.ends_with("signal 9"))
        .count() as u64;
    assert_eq!(killed, procs, "every writer process was killed: {text}");
}

#[test]
fn kill_9_of_a_traced_process_mid_burst_counts_its_torn_records() {
    const PROCS: u64 = 2;
    const THREADS: u64 = 2;
    let node = Node::start();
    let relay = &node.relay;
    let _consumer = start_consumer(&node.rings, relay);
    let mut tail = start_tail(relay, None);
    let printed = TailOutput::collect(&mut tail);
    run_stress_killed(&node, PROCS, THREADS, 20_000);

    // The consumer drains the dead writers' rings, reports their final
    // counters and closes their streams.
    let status = wait_for_status(relay, Duration::from_secs(90), |s| {
        let streams = s["streams"].as_array().unwrap();
        !streams.is_empty() && streams.iter().all(|st| st["closed"] == true)
    });
    let mut read = 0;
    let mut torn_and_gap = 0;
    for st in status["streams"].as_array().unwrap() {
        let c = &st["counters"];
        let n = |v: &serde_json::Value| v.as_u64().unwrap();
        let (r, w) = (&c["reader"], &c["writer"]);
        // Every reservation a writer made is a record that arrived or a
        // counted loss: nothing vanished silently.
        assert_eq!(
            n(&w["written"]),
            n(&r["read"]) + n(&r["torn"]) + n(&r["corrupt"]) + n(&r["gap"]),
            "{st:#}"
        );
        assert_eq!(n(&r["corrupt"]), 0, "{st:#}");
        assert_eq!(n(&c["relay_gap"]), 0, "{st:#}");
        // Positions are ring sequence numbers: the relay holds every record read.
        assert_eq!(n(&st["next"]) - n(&st["first"]), n(&r["read"]), "{st:#}");
        read += n(&r["read"]);
        torn_and_gap += n(&r["torn"]) + n(&r["gap"]);
    }
    eprintln!("killed writers: {read} records read, {torn_and_gap} torn or missing");
    assert!(
        torn_and_gap <= PROCS * THREADS,
        "at most one record in flight per killed thread: {torn_and_gap}"
    );
    // The live reader got every committed record exactly once.
    let got = printed.wait_for(read as usize, Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(300));
    let got_after = printed.annotations();
    assert_eq!(got_after.len(), got.len(), "no more than the records read");
    assert_eq!(got.len() as u64, read);
    let mut seen = HashSet::new();
    for a in &got {
        assert!(
            seen.insert((a["id"].to_string(), a["value"].to_string())),
            "duplicate {a}"
        );
    }
    // Whatever loss was counted was shown by tail too.
    if torn_and_gap > 0 {
        let shown: u64 = printed
            .counters()
            .iter()
            .fold(std::collections::HashMap::new(), |mut m, c| {
                m.insert(
                    (c["pid"].as_u64(), c["cpu"].as_u64()),
                    c["lost"].as_u64().unwrap(),
                );
                m
            })
            .values()
            .sum();
        assert!(shown >= torn_and_gap, "tail showed {shown} lost");
    }
}

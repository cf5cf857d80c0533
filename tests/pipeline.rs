//! End to end: a traced C program → blkkin-consumerd → blkkin-relayd →
//! `blkkin tail`, every annotation exactly once.

mod common;

use common::{free_port, start_consumer, start_relay, Daemon};

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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
    let mut tail = start_tail(&relay, n * 6);
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

/// `blkkin tail --json --from-oldest`, exiting after `count` annotations.
fn start_tail(relay: &str, count: usize) -> Daemon {
    Daemon(
        Command::new(env!("CARGO_BIN_EXE_blkkin"))
            .args([
                "tail",
                "--json",
                "--from-oldest",
                "--count",
                &count.to_string(),
                relay,
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

fn kill9(d: Daemon) {
    let pid = d.0.id() as i32;
    // SAFETY: signalling a child we own.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    drop(d); // reaps
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
    let mut tail = start_tail(&relay, n * 6);
    let lines = tail_lines(&mut tail, Duration::from_secs(60));
    assert_eq!(lines.len(), n * 6, "every annotation reached the reader");
    drop((consumer, relay_d));
}

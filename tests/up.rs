//! `blkkin up` end to end: the one-process node stack drains a traced
//! workload's rings into its relay, a live reader gets every annotation,
//! and Ctrl-C stops it cleanly after draining.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const BLKKIN: &str = env!("CARGO_BIN_EXE_blkkin");

#[test]
fn up_drains_the_workload_into_its_relay_and_stops_on_ctrl_c() {
    let rings = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let mut up = Command::new(BLKKIN)
        .args(["up", "--relay-listen", "127.0.0.1:0", "--data-dir"])
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
    let out = Command::new(BLKKIN)
        .args(["workload", "-n", "20"])
        .env("BLKIN_SHM_DIR", rings.path())
        .env_remove("BLKIN_RATE")
        .output()
        .unwrap();
    assert!(out.status.success());
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

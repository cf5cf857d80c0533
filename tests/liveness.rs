//! Writer liveness as readers see it: a process whose main thread exited
//! while another thread records is alive; once it is gone, it is dead.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use blkkin::ring::{file, ReadMode, RingReader};

#[test]
fn zombie_leader_with_a_live_thread_counts_as_alive() {
    let tmp = tempfile::tempdir().unwrap();
    let libs = common::lib_dir(tmp.path());
    let exe = common::compile(tmp.path(), &libs, "zombie_leader.c", "zombie_leader", false);
    let rings = tmp.path().join("rings");
    let mut child = Command::new(&exe)
        .env("BLKIN_SHM_DIR", &rings)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    // The leader becomes a zombie once its main has called pthread_exit
    // (which may come after the worker's "ready" on a busy machine).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap();
        let state = blkkin::process::parse_state(&stat);
        if state == Some('Z') {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "leader never became a zombie: {stat}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let path = file::list_rings(&rings).unwrap().remove(0);
    let mut reader = RingReader::open(&path, ReadMode::Peek).unwrap();
    assert!(
        reader.writer_alive(),
        "a live thread keeps the process alive"
    );
    // It still records.
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"x").unwrap();
    drop(stdin); // ends the worker, and with it the process
    child.wait().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(250)); // liveness is cached 200 ms
    assert!(!reader.writer_alive());
    let (mut annotations, summary) = common::dump_json(&rings);
    assert_eq!(summary["read"], 2);
    annotations.sort_by_key(|a| a["timestamp"].as_u64());
    assert_eq!(annotations[1]["value"], "tick");
}

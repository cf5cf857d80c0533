//! The binary: help, clear startup errors, graceful shutdown on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_blkkin-relayd");

#[test]
fn help_explains_every_option() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for opt in [
        "--listen",
        "--data-dir",
        "--segment-size",
        "--retain-bytes",
        "--fsync",
        "--max-frame",
        "--idle-timeout",
        "--frame-timeout",
        "127.0.0.1:7420",
        "64M",
    ] {
        assert!(help.contains(opt), "--help lacks {opt}:\n{help}");
    }
}

#[test]
fn an_unusable_data_dir_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let out = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot create data directory"), "{err}");
}

/// Kills the daemon if the test fails half-way.
struct Daemon(std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn sigterm_shuts_down_gracefully() {
    let tmp = tempfile::tempdir().unwrap();
    let mut child = Daemon(
        Command::new(BIN)
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(tmp.path())
            .env("BLKKIN_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // stderr lines through a channel, so every wait has a deadline.
    let (tx, rx) = mpsc::channel();
    let stderr = child.0.stderr.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let step = Duration::from_secs(4);
    let addr = loop {
        let l = rx.recv_timeout(step).expect("the listening line");
        if let Some(i) = l.find("addr=") {
            break l[i + 5..].split_whitespace().next().unwrap().to_string();
        }
    };
    let _conn = std::net::TcpStream::connect(&addr).expect("listening");
    let st = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let mut rest = Vec::new();
    let t0 = Instant::now();
    while let Ok(l) = rx.recv_timeout(step) {
        rest.push(l);
        assert!(t0.elapsed() < step, "{rest:?}");
    }
    let status = child.0.wait().unwrap();
    assert!(status.success(), "{status:?}: {rest:?}");
    assert!(rest.iter().any(|l| l.contains("SIGTERM")), "{rest:?}");
    assert!(rest.iter().any(|l| l.contains("stopped")), "{rest:?}");
}

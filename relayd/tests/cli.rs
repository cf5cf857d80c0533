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
    let data = tmp.path().to_str().unwrap();
    let (mut child, addr, rx) = start_logged(&["--listen", "127.0.0.1:0", "--data-dir", data]);
    let step = Duration::from_secs(4);
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

/// Starts the relay with `args`; returns it, the address it logged and its
/// further stderr lines.
fn start_logged(args: &[&str]) -> (Daemon, String, mpsc::Receiver<String>) {
    let mut child = Daemon(
        Command::new(BIN)
            .args(args)
            .env("BLKKIN_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = child.0.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let addr = loop {
        let l = rx
            .recv_timeout(Duration::from_secs(4))
            .expect("the listening line");
        if let Some(i) = l.find("addr=") {
            break l[i + 5..].split_whitespace().next().unwrap().to_string();
        }
    };
    (child, addr, rx)
}

#[test]
fn config_file_sets_options_and_the_command_line_wins() {
    use blkkin::wire::{Frame, FrameBuffer, Role, DEFAULT_MAX_FRAME, VERSION};
    use std::io::{Read, Write};
    let tmp = tempfile::tempdir().unwrap();
    let conf = tmp.path().join("relayd.toml");
    std::fs::write(
        &conf,
        format!(
            "listen = \"127.0.0.1:0\"\ndata-dir = {:?}\nname = \"from-file\"\nidle-timeout = \"1h\"\n",
            tmp.path().join("data")
        ),
    )
    .unwrap();
    let (_relay, addr, _) =
        start_logged(&["--config", conf.to_str().unwrap(), "--name", "from-cli"]);
    let mut sock = std::net::TcpStream::connect(&addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(4))).unwrap();
    let mut out = Vec::new();
    Frame::Hello {
        version: VERSION,
        role: Role::Reader,
        name: "t".into(),
        token: None,
    }
    .encode(&mut out);
    sock.write_all(&out).unwrap();
    let mut fb = FrameBuffer::new(DEFAULT_MAX_FRAME);
    let welcome = loop {
        if let Some(f) = fb.next_frame().unwrap() {
            break f;
        }
        let mut buf = [0u8; 4096];
        let n = sock.read(&mut buf).unwrap();
        assert!(n > 0, "closed before Welcome");
        fb.extend(&buf[..n]);
    };
    match welcome {
        Frame::Welcome {
            name,
            idle_timeout_ms,
            ..
        } => {
            assert_eq!(name, "from-cli", "the command line wins");
            assert_eq!(idle_timeout_ms, 3_600_000, "the file's setting");
        }
        other => panic!("expected Welcome, got {other:?}"),
    }
}

#[test]
fn unknown_config_keys_are_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let conf = tmp.path().join("relayd.toml");
    std::fs::write(&conf, "data-dir = \"/tmp\"\nretain-days = 7\n").unwrap();
    let out = Command::new(BIN)
        .args(["--config", conf.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown field `retain-days`"), "{err}");
    assert!(err.contains("relayd.toml"), "{err}");
}

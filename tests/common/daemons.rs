//! Starting the per-node daemons and the relay clients of the `blkkin`
//! binary for end-to-end tests, each on a free loopback port.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Kills the child when dropped (a failing test leaves no daemon behind).
pub struct Daemon(pub Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Daemon {
    /// Sends `signal` to the process.
    pub fn signal(&self, signal: i32) {
        // SAFETY: signalling a child we own (not yet reaped).
        unsafe { libc::kill(self.0.id() as i32, signal) };
    }

    /// Its stderr lines, through a channel (so every wait has a deadline).
    pub fn stderr_lines(&mut self) -> mpsc::Receiver<String> {
        let stderr = self.0.stderr.take().expect("stderr piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        rx
    }
}

/// SIGKILL, then reap.
pub fn kill9(d: Daemon) {
    d.signal(libc::SIGKILL);
    drop(d);
}

/// A port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A binary of the workspace (built by `cargo test --workspace`).
pub fn bin(name: &str) -> PathBuf {
    let p = super::profile_dir().join(name);
    assert!(
        p.exists(),
        "{} not built; run `cargo test --workspace`",
        p.display()
    );
    p
}

/// Waits (up to 10 s) until something listens on 127.0.0.1:`port`.
pub fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on port {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `blkkin-relayd` on `port` with its data in `data` and extra `args`.
pub fn start_relay_with(data: &Path, port: u16, args: &[&str]) -> Daemon {
    let child = Command::new(bin("blkkin-relayd"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(data)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_port(port);
    Daemon(child)
}

/// `blkkin-relayd` on 127.0.0.1:`port`, storing in `data`.
pub fn start_relay(data: &Path, port: u16) -> Daemon {
    start_relay_with(data, port, &[])
}

/// `blkkin-consumerd` as node "node-a"; stderr piped when `logs`.
pub fn start_consumer_logged(rings: &Path, relay: &str, logs: bool) -> Daemon {
    Daemon(
        Command::new(bin("blkkin-consumerd"))
            .args(["--relay", relay, "--node", "node-a", "--dir"])
            .arg(rings)
            .env("BLKKIN_LOG", "info")
            .stderr(if logs { Stdio::piped() } else { Stdio::null() })
            .spawn()
            .unwrap(),
    )
}

/// `blkkin-consumerd` draining `rings` into `relay` as node `node-a`.
pub fn start_consumer(rings: &Path, relay: &str) -> Daemon {
    start_consumer_logged(rings, relay, false)
}

/// `blkkin tail --json --from-oldest`, exiting after `count` annotations
/// (or never).
pub fn start_tail(relay: &str, count: Option<usize>) -> Daemon {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_blkkin"));
    cmd.args(["tail", "--json", "--from-oldest"]);
    if let Some(n) = count {
        cmd.args(["--count", &n.to_string()]);
    }
    Daemon(cmd.arg(relay).stdout(Stdio::piped()).spawn().unwrap())
}

/// `blkkin status --json` (one sample unless `interval` is given).
pub fn status_json(relay: &str, interval: Option<&str>) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_blkkin"))
        .args([
            "status",
            "--json",
            "--interval",
            interval.unwrap_or("0"),
            relay,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("status prints one JSON object")
}

/// Polls `blkkin status` until `done` holds, failing after `timeout`.
pub fn wait_for_status(relay: &str, timeout: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let s = status_json(relay, None);
        if done(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "status never got there: {s:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Collects what a `blkkin tail --json` prints, as it prints it.
pub struct TailOutput(std::sync::Arc<std::sync::Mutex<Vec<Value>>>);

impl TailOutput {
    pub fn collect(tail: &mut Daemon) -> TailOutput {
        let stdout = tail.0.stdout.take().expect("stdout piped");
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines().map_while(Result::ok) {
                let v: Value = serde_json::from_str(&l).expect("every line is JSON");
                sink.lock().unwrap().push(v);
            }
        });
        TailOutput(lines)
    }

    /// Annotations (objects without a "type").
    pub fn annotations(&self) -> Vec<Value> {
        let g = self.0.lock().unwrap();
        g.iter()
            .filter(|v| v.get("type").is_none())
            .cloned()
            .collect()
    }

    /// The loss objects ("type": "counters").
    pub fn counters(&self) -> Vec<Value> {
        let g = self.0.lock().unwrap();
        g.iter()
            .filter(|v| v["type"] == "counters")
            .cloned()
            .collect()
    }

    /// Waits until at least `n` annotations arrived.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let a = self.annotations();
            if a.len() >= n {
                return a;
            }
            assert!(
                Instant::now() < deadline,
                "tail printed {} of {n} annotations",
                a.len()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A node for a test: a temporary directory with an empty ring directory
/// and a relay on a free port (its data in the same temporary directory).
pub struct Node {
    pub tmp: tempfile::TempDir,
    pub rings: PathBuf,
    /// The relay's address.
    pub relay: String,
    pub relay_d: Daemon,
}

impl Node {
    pub fn start() -> Node {
        let tmp = tempfile::tempdir().unwrap();
        let rings = tmp.path().join("rings");
        std::fs::create_dir_all(&rings).unwrap();
        let port = free_port();
        let relay_d = start_relay(&tmp.path().join("relay"), port);
        Node {
            rings,
            relay: format!("127.0.0.1:{port}"),
            relay_d,
            tmp,
        }
    }

    /// Compiles tests/c/<src> against the freshly built library.
    pub fn compile(&self, src: &str) -> PathBuf {
        let libs = super::lib_dir(self.tmp.path());
        super::compile(
            self.tmp.path(),
            &libs,
            src,
            src.trim_end_matches(".c"),
            false,
        )
    }
}

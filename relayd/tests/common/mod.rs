//! A fake consumer and reader speaking the wire protocol, and a relay on port 0.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use blkkin::ring::header::Calibration;
use blkkin::wire::{self, Frame, FrameBuffer, Role, StreamCounters, StreamKey};
use blkkin_relayd::store::split_records;
use blkkin_relayd::{Config, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use blkkin_relayd::testutil::{record_at, records};

/// Longest any single step of a test may wait.
pub const STEP: Duration = Duration::from_secs(4);

pub struct Relay {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Relay {
    pub async fn start(dir: &Path) -> Relay {
        Relay::start_with(dir, |_| {}).await
    }

    pub async fn start_with(dir: &Path, tweak: impl FnOnce(&mut Config)) -> Relay {
        let mut cfg = Config::new("127.0.0.1:0".parse().unwrap(), dir);
        tweak(&mut cfg);
        let server = Server::bind(cfg).await.expect("relay starts");
        let addr = server.local_addr();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = rx.await;
        }));
        Relay {
            addr,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Graceful shutdown; waits for it.
    pub async fn stop(mut self) {
        self.stop.take().unwrap().send(()).ok();
        tokio::time::timeout(STEP, self.task.take().unwrap())
            .await
            .expect("relay stops in time")
            .expect("relay task")
            .expect("relay result");
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

pub fn key(node: &str, cpu: u32) -> StreamKey {
    StreamKey {
        node: node.into(),
        pid: 1234,
        start_time: 5678,
        cpu,
    }
}

pub fn cal() -> Calibration {
    Calibration {
        raw0: 10,
        ns0: 20,
        raw1: 30,
        ns1: 40,
    }
}

pub struct Client {
    pub sock: TcpStream,
    fb: FrameBuffer,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let sock = TcpStream::connect(addr).await.expect("connect");
        sock.set_nodelay(true).unwrap();
        Client {
            sock,
            fb: FrameBuffer::new(wire::DEFAULT_MAX_FRAME),
        }
    }

    /// Connects and says Hello as `role`; checks the Welcome.
    pub async fn hello(addr: SocketAddr, role: Role) -> Client {
        let mut c = Client::connect(addr).await;
        c.send(&Frame::Hello {
            version: wire::VERSION,
            role,
            name: "test".into(),
            token: None,
        })
        .await;
        match c.recv().await {
            Some(Frame::Welcome { version, .. }) => assert_eq!(version, wire::VERSION),
            other => panic!("expected Welcome, got {other:?}"),
        }
        c
    }

    pub async fn send(&mut self, f: &Frame) {
        let mut b = Vec::new();
        f.encode(&mut b);
        self.sock.write_all(&b).await.expect("send");
    }

    pub async fn send_raw(&mut self, b: &[u8]) {
        self.sock.write_all(b).await.expect("send");
    }

    /// The next frame, None at end of stream (or a reset).
    pub async fn recv(&mut self) -> Option<Frame> {
        tokio::time::timeout(STEP, self.recv_inner())
            .await
            .expect("a frame or a close in time")
    }

    async fn recv_inner(&mut self) -> Option<Frame> {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            if let Some(f) = self.fb.next_frame().expect("relay sends valid frames") {
                return Some(f);
            }
            match self.sock.read(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.fb.extend(&buf[..n]),
            }
        }
    }

    /// Opens a stream and returns the relay's next position for it.
    pub async fn open(&mut self, handle: u32, key: &StreamKey) -> u64 {
        self.send(&Frame::OpenStream {
            handle,
            key: key.clone(),
            calibration: cal(),
        })
        .await;
        self.ack(handle).await
    }

    pub async fn ack(&mut self, handle: u32) -> u64 {
        match self.recv().await {
            Some(Frame::Ack { handle: h, next }) => {
                assert_eq!(h, handle);
                next
            }
            other => panic!("expected Ack, got {other:?}"),
        }
    }

    /// Sends records `from..to` and returns the acknowledged next position.
    pub async fn push(&mut self, handle: u32, from: u64, to: u64) -> u64 {
        self.send(&Frame::Records {
            handle,
            first: from,
            records: records(from, to),
        })
        .await;
        self.ack(handle).await
    }

    /// `List`, its pages gathered (the last page is empty).
    pub async fn list(&mut self) -> Vec<wire::StreamSummary> {
        self.send(&Frame::List).await;
        let mut all = Vec::new();
        loop {
            match self.recv().await {
                Some(Frame::Streams(page)) if page.is_empty() => return all,
                Some(Frame::Streams(page)) => all.extend(page),
                other => panic!("expected Streams, got {other:?}"),
            }
        }
    }

    /// `Status`, its pages gathered (until one without streams).
    pub async fn status(&mut self) -> wire::StatusReport {
        self.send(&Frame::Status).await;
        let mut report: Option<wire::StatusReport> = None;
        loop {
            match self.recv().await {
                Some(Frame::StatusReport(page)) => {
                    let last = page.streams.is_empty();
                    match report.as_mut() {
                        None => report = Some(page),
                        Some(r) => {
                            assert!(page.consumers.is_empty() && page.readers.is_empty());
                            r.streams.extend(page.streams);
                        }
                    }
                    if last {
                        return report.unwrap();
                    }
                }
                other => panic!("expected StatusReport, got {other:?}"),
            }
        }
    }

    /// A reader's subscription to every stream, current and future, from `start`.
    pub async fn subscribe_all(&mut self, start: wire::Start) {
        self.send(&Frame::Subscribe { key: None, start }).await;
    }

    /// Expects an Error frame with `code` and then the close.
    pub async fn expect_error_close(&mut self, code: wire::ErrorCode) {
        match self.recv().await {
            Some(Frame::Error { code: c, .. }) => assert_eq!(c, code),
            other => panic!("expected Error {code:?}, got {other:?}"),
        }
        assert_eq!(self.recv().await, None, "closed after the Error");
    }
}

/// What a reader received: per handle, the key and (position, record) in arrival order.
#[derive(Default, Debug)]
pub struct Received {
    pub streams: Vec<(u32, StreamKey)>,
    pub records: Vec<(u32, u64, Vec<u8>)>,
    /// Every StreamCounters frame, in arrival order.
    pub counters: Vec<(u32, StreamCounters)>,
    /// Every Calibrate frame, with the number of records received before it.
    pub calibrations: Vec<(u32, Calibration, usize)>,
}

impl Received {
    pub fn handle_of(&self, key: &StreamKey) -> Option<u32> {
        self.streams.iter().find(|(_, k)| k == key).map(|(h, _)| *h)
    }

    pub fn positions(&self, key: &StreamKey) -> Vec<u64> {
        let Some(h) = self.handle_of(key) else {
            return Vec::new();
        };
        self.records
            .iter()
            .filter(|r| r.0 == h)
            .map(|r| r.1)
            .collect()
    }

    /// Checks every record of `key` is the one built for its position.
    pub fn check_contents(&self, key: &StreamKey) {
        let h = self.handle_of(key).expect("announced");
        for (_, pos, rec) in self.records.iter().filter(|r| r.0 == h) {
            assert_eq!(rec, &record_at(*pos), "record at {pos}");
        }
    }
}

/// Reads frames until `done` says so.
pub async fn read_until(c: &mut Client, got: &mut Received, done: impl Fn(&Received) -> bool) {
    while !done(got) {
        match c.recv().await {
            Some(Frame::Announce {
                handle,
                key,
                calibration,
            }) => {
                assert_eq!(calibration, cal());
                assert!(got.handle_of(&key).is_none(), "announced once");
                got.streams.push((handle, key));
            }
            Some(Frame::Records {
                handle,
                first,
                records,
            }) => {
                assert!(got.streams.iter().any(|s| s.0 == handle), "announced first");
                for (i, r) in split_records(&records).into_iter().enumerate() {
                    got.records.push((handle, first + i as u64, r.to_vec()));
                }
            }
            Some(Frame::StreamCounters { handle, counters }) => {
                assert!(got.streams.iter().any(|s| s.0 == handle), "announced first");
                got.counters.push((handle, counters));
            }
            Some(Frame::Calibrate {
                handle,
                calibration,
            }) => {
                assert!(got.streams.iter().any(|s| s.0 == handle), "announced first");
                got.calibrations
                    .push((handle, calibration, got.records.len()));
            }
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

/// The relay binary, killed (SIGKILL) when dropped, and its address.
pub struct Daemon(pub std::process::Child, pub SocketAddr);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Daemon {
    /// A line of /proc/PID/status in kB (e.g. "VmHWM", the peak resident size).
    pub fn status_kb(&self, field: &str) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.0.id())).unwrap();
        let line = s.lines().find(|l| l.starts_with(field)).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }
}

/// Starts the relay binary on `data` with `extra` arguments and `env` set;
/// waits until it listens. Its log goes to the test's stderr.
pub fn start_binary(data: &Path, env: &[(&str, &Path)], extra: &[&str]) -> Daemon {
    use std::process::{Command, Stdio};
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_blkkin-relayd"));
    cmd.args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .args(extra)
        .env("BLKKIN_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for l in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            eprintln!("relay: {l}");
            let _ = tx.send(l);
        }
    });
    let addr = loop {
        let l = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the relay logs its address");
        if let Some(i) = l.find("addr=") {
            break l[i + 5..]
                .split_whitespace()
                .next()
                .unwrap()
                .parse()
                .unwrap();
        }
    };
    Daemon(child, addr)
}

pub fn range(from: u64, to: u64) -> Vec<u64> {
    (from..to).collect()
}

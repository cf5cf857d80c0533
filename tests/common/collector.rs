//! A node stack (rings → consumer → relay) and a `blkkin-collector`
//! reading relays, for the collector's end-to-end tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{bin, free_port, start_consumer, start_relay, Daemon};

/// One node: a ring directory drained by a consumer into a relay.
pub struct NodeStack {
    /// Holds rings, relay data, programs and logs.
    pub tmp: tempfile::TempDir,
    /// The ring directory (BLKIN_SHM_DIR of traced programs).
    pub rings: PathBuf,
    /// The relay's address.
    pub relay: String,
    relay_port: u16,
    relay_d: Option<Daemon>,
    _consumer: Daemon,
}

impl NodeStack {
    /// Starts relay and consumer on fresh directories.
    pub fn start() -> NodeStack {
        let tmp = tempfile::tempdir().unwrap();
        let rings = tmp.path().join("rings");
        std::fs::create_dir_all(&rings).unwrap();
        let relay_port = free_port();
        let relay_d = start_relay(&tmp.path().join("relay"), relay_port);
        let relay = format!("127.0.0.1:{relay_port}");
        let consumer = start_consumer(&rings, &relay);
        NodeStack {
            tmp,
            rings,
            relay,
            relay_port,
            relay_d: Some(relay_d),
            _consumer: consumer,
        }
    }

    /// Kills the relay with SIGKILL and starts it again on the same port
    /// and data.
    pub fn restart_relay_hard(&mut self) {
        let d = self.relay_d.take().unwrap();
        // SAFETY: signalling a child we own.
        unsafe { libc::kill(d.0.id() as i32, libc::SIGKILL) };
        drop(d); // reaps
        self.relay_d = Some(start_relay(&self.tmp.path().join("relay"), self.relay_port));
    }

    /// Runs tests/c/rpc_tree.c with `n` requests on this node: the
    /// (trace, root span, rpc span, journal span) ids of each.
    pub fn run_rpc_tree(&self, n: usize) -> Vec<[String; 4]> {
        let exe = self.tmp.path().join("rpc_tree");
        if !exe.exists() {
            let libs = super::lib_dir(self.tmp.path());
            super::compile(self.tmp.path(), &libs, "rpc_tree.c", "rpc_tree", false);
        }
        let out = super::run_traced(&exe, &[&n.to_string()], &self.rings, &[]);
        out.lines()
            .map(|l| {
                let ids: Vec<String> = l.split_whitespace().map(String::from).collect();
                ids.try_into().expect("four ids per line")
            })
            .collect()
    }
}

/// A running `blkkin-collector` whose log (stderr) goes to a file.
pub struct Collector {
    d: Option<Daemon>,
    log: PathBuf,
}

impl Collector {
    /// Starts it on `relays` with `args` (sinks and knobs), logging to `log`.
    pub fn start(relays: &[&str], args: &[&str], log: &Path) -> Collector {
        let mut cmd = Command::new(bin("blkkin-collector"));
        for r in relays {
            cmd.args(["--relay", r]);
        }
        let d = cmd
            .args(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        Collector {
            d: Some(Daemon(d)),
            log: log.to_path_buf(),
        }
    }

    /// A reference collector: reads `node`'s relay into JSON lines at
    /// `out` (never killed; what other collectors are compared with).
    pub fn reference(node: &NodeStack, out: &Path) -> Collector {
        let dir = node.tmp.path();
        Collector::start(
            &[&node.relay],
            // A generous linger: the reference must pair the two sides of
            // every shared span (their streams are read independently).
            &["--jsonl", out.to_str().unwrap(), "--linger", "1500ms"],
            &dir.join("reference.log"),
        )
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL (no flush, no last checkpoint); returns its log.
    pub fn kill9(mut self) -> String {
        super::kill9(self.d.take().unwrap());
        self.log()
    }

    /// SIGTERM; it must flush and exit 0 within 30 s. Returns its log.
    pub fn stop(mut self) -> String {
        let mut d = self.d.take().unwrap();
        // SAFETY: signalling a child we own.
        unsafe { libc::kill(d.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = d.0.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "collector ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        };
        let log = self.log();
        assert!(status.success(), "collector failed: {log}");
        log
    }
}

/// The value of `key=` on the last log line containing `what`.
pub fn counter(log: &str, what: &str, key: &str) -> Option<u64> {
    log.lines()
        .rev()
        .filter(|l| l.contains(what))
        .find_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{key}=")))
                .and_then(|v| v.parse().ok())
        })
}

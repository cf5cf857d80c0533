//! Real servers for the Cassandra store's tests: a Cassandra node started by
//! scripts/cassandra.sh and the real Zipkin server reading its keyspace,
//! both on free loopback ports, plus a tiny HTTP client for Zipkin's API.

#![allow(dead_code)] // each including test binary uses a different subset

#[path = "../zipkin_fetch/mod.rs"]
mod zipkin_fetch;

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use zipkin_fetch::zipkin_jar;

/// The repository root, from either package that includes this module (the
/// collector's tests, or the root package's end-to-end tests).
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    if manifest.join("scripts/cassandra.sh").exists() {
        return manifest.to_path_buf();
    }
    manifest
        .parent()
        .expect("collector/ sits in the repository")
        .to_path_buf()
}

/// The cache scripts/cassandra.sh uses too.
pub fn cache_dir() -> PathBuf {
    match std::env::var_os("BLKKIN_CACHE") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/blkkin"),
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local address").port()
}

/// True when the test was told to skip Cassandra (logged).
pub fn skip_cassandra() -> bool {
    if std::env::var("BLKKIN_SKIP_CASSANDRA").as_deref() == Ok("1") {
        eprintln!(
            "BLKKIN_SKIP_CASSANDRA=1: SKIPPING the Cassandra store test against real servers"
        );
        return true;
    }
    false
}

/// One Cassandra node, stopped on drop.
pub struct Cassandra {
    pub dir: tempfile::TempDir,
    pub port: u16,
    storage_port: u16,
    /// Appended to the node's cassandra.yaml (CASSANDRA_EXTRA_YAML).
    extra_yaml: Option<PathBuf>,
}

impl Cassandra {
    /// Starts a node (scripts/cassandra.sh fetches it when needed); panics
    /// with the script's output when it cannot.
    pub fn start() -> Cassandra {
        let c = Cassandra::unstarted();
        c.launch();
        c
    }

    /// A node with its directory and ports chosen but not running yet (so a
    /// client can be pointed at it before it is up); [`Cassandra::launch`]
    /// starts it.
    pub fn unstarted() -> Cassandra {
        Cassandra {
            dir: tempfile::tempdir().expect("temp dir"),
            port: free_port(),
            storage_port: free_port(),
            extra_yaml: None,
        }
    }

    /// Starts a node whose cassandra.yaml ends with `extra_yaml` (kept
    /// under the node's directory, also for restarts).
    pub fn start_with_yaml(extra_yaml: &str) -> Cassandra {
        let mut c = Cassandra::unstarted();
        let path = c.dir.path().join("extra.yaml");
        std::fs::write(&path, extra_yaml).expect("write the extra yaml");
        c.extra_yaml = Some(path);
        c.launch();
        c
    }

    /// Starts the node and waits for its CQL port.
    pub fn launch(&self) {
        self.run_start();
    }

    fn script(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = Command::new("bash");
        cmd.arg(repo_root().join("scripts/cassandra.sh")).args(args);
        if let Some(y) = &self.extra_yaml {
            cmd.env("CASSANDRA_EXTRA_YAML", y);
        }
        cmd.output().expect("run scripts/cassandra.sh")
    }

    fn run_start(&self) {
        let t = Instant::now();
        let dir = self.dir.path().to_str().expect("utf-8 temp dir");
        let out = self.script(&[
            "start",
            dir,
            &self.port.to_string(),
            &self.storage_port.to_string(),
        ]);
        assert!(
            out.status.success(),
            "Cassandra did not start (set BLKKIN_SKIP_CASSANDRA=1 to skip): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!(
            "cassandra: up on 127.0.0.1:{} in {:.1}s",
            self.port,
            t.elapsed().as_secs_f64()
        );
    }

    /// Stops the node (graceful: non-durable tables are flushed).
    pub fn stop(&self) {
        let out = self.script(&["stop", self.dir.path().to_str().expect("utf-8")]);
        assert!(out.status.success(), "stop: {out:?}");
    }

    /// Starts the stopped node again on the same ports and data.
    pub fn restart(&self) {
        self.run_start();
    }

    /// Resident memory of the node, in MiB (for the report).
    pub fn rss_mib(&self) -> Option<u64> {
        let pid = std::fs::read_to_string(self.dir.path().join("cassandra.pid")).ok()?;
        rss_mib(pid.trim())
    }
}

impl Drop for Cassandra {
    fn drop(&mut self) {
        self.stop();
    }
}

fn rss_mib(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024)
}

/// Dependency edges: (parent, child) → (calls, errors).
pub type Edges = BTreeMap<(String, String), (u64, u64)>;

/// `/api/v2/dependencies` of the two days before `end_ms`.
pub fn dependencies_path(end_ms: u64) -> String {
    format!("/api/v2/dependencies?endTs={end_ms}&lookback=172800000")
}

/// The edges of a `/api/v2/dependencies` answer (Zipkin's or the store's).
pub fn parse_edges(deps: &Value) -> Edges {
    deps.as_array()
        .expect("a list of links")
        .iter()
        .map(|l| {
            let s = |k: &str| l[k].as_str().unwrap_or_default().to_string();
            let n = |k: &str| l[k].as_u64().unwrap_or(0);
            ((s("parent"), s("child")), (n("callCount"), n("errorCount")))
        })
        .collect()
}

/// The real Zipkin server with `STORAGE_TYPE=cassandra3`, killed on drop.
pub struct Zipkin {
    child: Child,
    pub port: u16,
    log: PathBuf,
}

impl Zipkin {
    /// Starts Zipkin on the keyspace our sink created and waits for its API.
    pub fn start(cassandra_port: u16, keyspace: &str, log_dir: &Path) -> Zipkin {
        let port = free_port();
        let log = log_dir.join("zipkin.log");
        let out = std::fs::File::create(&log).expect("zipkin log");
        let child = Command::new("java")
            .args(["-Xms128m", "-Xmx384m", "-XX:ActiveProcessorCount=2", "-jar"])
            .arg(zipkin_jar())
            .env("STORAGE_TYPE", "cassandra3")
            .env(
                "CASSANDRA_CONTACT_POINTS",
                format!("127.0.0.1:{cassandra_port}"),
            )
            .env("CASSANDRA_LOCAL_DC", "datacenter1")
            .env("CASSANDRA_KEYSPACE", keyspace)
            .env("CASSANDRA_ENSURE_SCHEMA", "false")
            .env("QUERY_PORT", port.to_string())
            .env("COLLECTOR_SCRIBE_ENABLED", "false")
            .stdout(Stdio::from(out.try_clone().expect("dup log")))
            .stderr(Stdio::from(out))
            .spawn()
            .expect("start java -jar zipkin-server");
        let mut z = Zipkin { child, port, log };
        let t = Instant::now();
        loop {
            if let Ok((200, _)) = z.get("/health") {
                break;
            }
            if let Ok(Some(status)) = z.child.try_wait() {
                panic!("Zipkin exited ({status}): {}", z.log_tail());
            }
            assert!(
                t.elapsed() < Duration::from_secs(180),
                "Zipkin not healthy after 180s: {}",
                z.log_tail()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        eprintln!(
            "zipkin: up on 127.0.0.1:{port} in {:.1}s",
            t.elapsed().as_secs_f64()
        );
        z
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// GET `path`; returns the status and body.
    pub fn get(&self, path: &str) -> std::io::Result<(u16, String)> {
        http_get(self.port, path)
    }

    /// GET `path`, expecting 200 and JSON.
    pub fn json(&self, path: &str) -> serde_json::Value {
        let (status, body) = self.get(path).unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert_eq!(status, 200, "GET {path}: {body}\n{}", self.log_tail());
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    /// Resident memory of the server, in MiB.
    pub fn rss_mib(&self) -> Option<u64> {
        rss_mib(&self.child.id().to_string())
    }

    /// GET `path`, expecting a JSON list of strings (services, span names).
    pub fn names(&self, path: &str) -> Vec<String> {
        self.json(path)
            .as_array()
            .unwrap_or_else(|| panic!("GET {path}: not a list"))
            .iter()
            .map(|s| s.as_str().expect("a string").to_string())
            .collect()
    }

    /// The ids of the traces `/api/v2/traces?{query}` finds (up to 1000).
    pub fn trace_ids(&self, query: &str) -> BTreeSet<String> {
        self.json(&format!("/api/v2/traces?limit=1000&{query}"))
            .as_array()
            .expect("a list of traces")
            .iter()
            .map(|t| t[0]["traceId"].as_str().expect("traceId").to_string())
            .collect()
    }

    /// `/api/v2/dependencies` of the two days before `end_ms`: the raw
    /// answer and (parent, child) → (calls, errors).
    pub fn dependency_edges(&self, end_ms: u64) -> (Value, Edges) {
        let deps = self.json(&dependencies_path(end_ms));
        let edges = parse_edges(&deps);
        (deps, edges)
    }
}

impl Drop for Zipkin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET `http://127.0.0.1:port{path}`: the status and body, for any status.
/// (A hand-rolled `Connection: close` client waited seconds per request for
/// Zipkin's server to close the connection.)
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let url = format!("http://127.0.0.1:{port}{path}");
    let res = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .build()
        .get(&url)
        .set("Accept", "application/json")
        .call();
    let res = match res {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => return Err(std::io::Error::other(e.to_string())),
    };
    let status = res.status();
    let body = res.into_string()?;
    Ok((status, body))
}

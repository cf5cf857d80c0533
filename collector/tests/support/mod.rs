//! Helpers shared by the embedded store's integration tests: span builders,
//! a store server on an ephemeral port, a small blocking HTTP client, and a
//! launcher for the real Zipkin server.

#![allow(dead_code)] // each test file uses a different subset

#[path = "../zipkin_fetch/mod.rs"]
mod zipkin_fetch;

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use blkkin_collector::model::{Endpoint, Span, SpanKind};
use blkkin_collector::store::{serve_with, ServerConfig, ServerHandle, Store};
use zipkin_fetch::zipkin_jar;

/// Epoch milliseconds now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A span of `service` named `name` starting at `ts_ms` (epoch ms).
pub fn span(
    trace: &str,
    id: &str,
    parent: Option<&str>,
    service: &str,
    name: &str,
    ts_ms: u64,
) -> Span {
    Span {
        trace_id: trace.into(),
        id: id.into(),
        parent_id: parent.map(Into::into),
        name: Some(name.into()),
        timestamp: Some(ts_ms * 1000),
        duration: Some(1000),
        local_endpoint: Some(endpoint(service)),
        ..Span::default()
    }
}

/// An endpoint with only a service name.
pub fn endpoint(service: &str) -> Endpoint {
    Endpoint {
        service_name: Some(service.into()),
        ipv4: Some("127.0.0.1".into()),
        ..Endpoint::default()
    }
}

/// Sets kind and remote service.
pub fn rpc(mut s: Span, kind: SpanKind, remote: Option<&str>) -> Span {
    s.kind = Some(kind);
    s.remote_endpoint = remote.map(endpoint);
    s
}

/// The embedded store served on an ephemeral loopback port, with its own
/// runtime so tests can use a blocking client.
pub struct StoreServer {
    pub store: Store,
    pub base: String,
    rt: tokio::runtime::Runtime,
    handle: Option<ServerHandle>,
}

impl StoreServer {
    /// Serves `store` on 127.0.0.1:0.
    pub fn start(store: Store) -> Self {
        Self::start_with(store, ServerConfig::default())
    }

    /// Serves `store` on 127.0.0.1:0 with `config`.
    pub fn start_with(store: Store, config: ServerConfig) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let handle = rt
            .block_on(serve_with(addr, store.clone(), config))
            .unwrap();
        let base = format!("http://{}", handle.local_addr());
        StoreServer {
            store,
            base,
            rt,
            handle: Some(handle),
        }
    }
}

impl Drop for StoreServer {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            self.rt.block_on(h.shutdown());
        }
    }
}

/// An HTTP answer: status and body text.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: String,
    /// The Access-Control-Allow-Origin header, if any.
    pub allow_origin: Option<String>,
}

impl Answer {
    /// The body as JSON (panics with the body when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .build()
}

fn answer(r: Result<ureq::Response, ureq::Error>) -> Answer {
    match r {
        Ok(resp) | Err(ureq::Error::Status(_, resp)) => {
            let status = resp.status();
            let allow_origin = resp.header("access-control-allow-origin").map(String::from);
            let mut body = String::new();
            resp.into_reader()
                .take(64 << 20)
                .read_to_string(&mut body)
                .unwrap();
            Answer {
                status,
                body,
                allow_origin,
            }
        }
        Err(e) => panic!("request failed: {e}"),
    }
}

/// GET `url`.
pub fn get(url: &str) -> Answer {
    answer(agent().get(url).call())
}

/// POST `body` to `url` with `content_type`.
pub fn post(url: &str, content_type: &str, body: &[u8]) -> Answer {
    answer(
        agent()
            .post(url)
            .set("Content-Type", content_type)
            .send_bytes(body),
    )
}

/// GET `url` with extra request headers.
pub fn get_with(url: &str, headers: &[(&str, &str)]) -> Answer {
    let mut req = agent().get(url);
    for (name, value) in headers {
        req = req.set(name, value);
    }
    answer(req.call())
}

/// POST `body` to `url` with no Content-Type header at all.
pub fn post_without_content_type(url: &str, body: &[u8]) -> Answer {
    answer(agent().post(url).send_bytes(body))
}

/// The CORS headers of an answer (lower-case names), and its status.
#[derive(Debug, PartialEq, Eq)]
pub struct Cors {
    pub status: u16,
    pub headers: std::collections::BTreeMap<String, String>,
}

/// Sends `method url` with `Origin: origin` (and, for a preflight, the
/// requested method and headers) and returns the status and CORS headers.
pub fn cors(method: &str, url: &str, origin: &str, preflight: bool) -> Cors {
    let mut req = agent().request(method, url).set("Origin", origin);
    if preflight {
        req = req
            .set("Access-Control-Request-Method", "GET")
            .set("Access-Control-Request-Headers", "content-type");
    }
    let resp = match req.call() {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {url}: {e}"),
    };
    let headers = resp
        .headers_names()
        .into_iter()
        .filter(|n| n.starts_with("access-control-") || n == "vary")
        .map(|n| {
            let v = resp.all(&n).join(",");
            (n, v)
        })
        .collect();
    Cors {
        status: resp.status(),
        headers,
    }
}

/// A real Zipkin server (in-memory storage) on a free loopback port,
/// killed when dropped.
pub struct Zipkin {
    pub base: String,
    child: Child,
    log: PathBuf,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Zipkin {
    /// Starts Zipkin with `autocomplete_keys`; `None` when the test is
    /// explicitly skipped with BLKKIN_SKIP_ZIPKIN=1 (it fails otherwise).
    pub fn start(autocomplete_keys: &str) -> Option<Zipkin> {
        if std::env::var("BLKKIN_SKIP_ZIPKIN").as_deref() == Ok("1") {
            eprintln!("SKIPPED: real Zipkin parity test (BLKKIN_SKIP_ZIPKIN=1)");
            return None;
        }
        let jar = zipkin_jar();
        let port = free_port();
        let log = std::env::temp_dir().join(format!("blkkin-zipkin-{port}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new("java")
            .args(["-Xms128m", "-Xmx512m", "-XX:TieredStopAtLevel=1", "-jar"])
            .arg(&jar)
            // Loopback only: the port list is given whole (QUERY_PORT alone
            // would bind every interface).
            .arg(format!("--armeria.ports[0].port={port}"))
            .arg("--armeria.ports[0].ip=127.0.0.1")
            .arg("--armeria.ports[0].protocols[0]=http")
            .env("QUERY_PORT", port.to_string())
            .env("STORAGE_TYPE", "mem")
            .env("AUTOCOMPLETE_KEYS", autocomplete_keys)
            .env("COLLECTOR_SCRIBE_ENABLED", "false")
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run java (need Java 17): {e}"));
        let z = Zipkin {
            base: format!("http://127.0.0.1:{port}"),
            child,
            log,
        };
        z.wait_healthy();
        Some(z)
    }

    fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(180);
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(2))
            .build();
        while Instant::now() < deadline {
            if agent.get(&format!("{}/health", self.base)).call().is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        panic!("Zipkin did not become healthy in 180 s; log:\n{log}");
    }
}

impl Drop for Zipkin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

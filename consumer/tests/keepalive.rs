//! An idle consumer against a real relay (in process) with a short idle
//! timeout: heartbeats keep its one connection open.

use std::time::{Duration, Instant};

use blkkin_consumerd::{Config, Consumer};
use blkkin_relayd::Server;

/// A relay with `idle` as idle timeout, on a runtime of its own.
struct Relay {
    addr: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    rt: tokio::runtime::Runtime,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Relay {
    fn start(data: &std::path::Path, idle: Duration) -> Relay {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let mut cfg = blkkin_relayd::Config::new("127.0.0.1:0".parse().unwrap(), data);
        cfg.idle_timeout = idle;
        let server = rt.block_on(Server::bind(cfg)).unwrap();
        let addr = server.local_addr().to_string();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = rt.spawn(server.run(async {
            let _ = rx.await;
        }));
        Relay {
            addr,
            stop: Some(tx),
            rt,
            task: Some(task),
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.take().unwrap().send(()).ok();
        let task = self.task.take().unwrap();
        let _ = self
            .rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(5), task).await });
    }
}

/// Steps an idle consumer for `run_for`; returns how often it connected.
fn connects_while_idle(heartbeat: Option<Duration>, run_for: Duration) -> u64 {
    let tmp = tempfile::tempdir().unwrap();
    let rings = tmp.path().join("rings");
    std::fs::create_dir_all(&rings).unwrap();
    let relay = Relay::start(&tmp.path().join("relay"), Duration::from_millis(300));
    let mut cfg = Config::new(rings, relay.addr.clone());
    cfg.heartbeat = heartbeat;
    cfg.max_backoff = Duration::from_millis(100);
    let mut consumer = Consumer::new(cfg);
    let t0 = Instant::now();
    while t0.elapsed() < run_for {
        let d = consumer.step().unwrap();
        std::thread::sleep(d.min(Duration::from_millis(20)));
    }
    consumer.stats().connects
}

#[test]
fn an_idle_consumer_stays_connected_through_heartbeats() {
    // Heartbeat every 100 ms (a third of the announced 300 ms): one connection.
    assert_eq!(connects_while_idle(None, Duration::from_millis(1500)), 1);
}

#[test]
fn without_heartbeats_the_relay_closes_an_idle_consumer() {
    // The control: a heartbeat interval beyond the idle timeout makes the
    // relay close the connection and the consumer reconnect.
    let n = connects_while_idle(Some(Duration::from_secs(60)), Duration::from_millis(1500));
    assert!(n >= 2, "expected reconnects, got {n} connection(s)");
}

//! A cross-node deployment with mutual TLS: relay and consumer "on" one
//! node, the collector "on" another, each in a network namespace of its own
//! joined by a veth pair (where `ip netns` works: root; loopback otherwise).
//! Every span arrives; a reader without a valid certificate is refused; the
//! relay will not listen on the node's address without protection.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::collector::counter;
use common::daemons::{bin, Daemon};
use serde_json::Value;

/// Two network namespaces joined by a veth pair, removed when dropped; or,
/// where they cannot be made, nothing (every address is loopback).
struct Net {
    /// Namespace of the storage node (relay, consumer), and its address.
    node: Option<String>,
    node_ip: String,
    /// Namespace of the collector's machine.
    other: Option<String>,
}

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Net {
    fn make() -> Net {
        let id = std::process::id();
        let (a, b) = (format!("bk-node-{id}"), format!("bk-coll-{id}"));
        let subnet = format!("10.{}.{}", 100 + (id >> 8) % 100, id % 250);
        let (node_ip, other_ip) = (format!("{subnet}.1"), format!("{subnet}.2"));
        let (va, vb) = (
            format!("bkva{}", id % 100_000),
            format!("bkvb{}", id % 100_000),
        );
        if !ip(&["netns", "add", &a]) {
            eprintln!(
                "NOTE: `ip netns add` failed (not root?): the cross-node test runs on loopback"
            );
            return Net {
                node: None,
                node_ip: "127.0.0.1".into(),
                other: None,
            };
        }
        let net = Net {
            node: Some(a.clone()),
            node_ip: node_ip.clone(),
            other: Some(b.clone()),
        };
        let steps: Vec<Vec<&str>> = vec![
            vec!["netns", "add", &b],
            vec!["link", "add", &va, "type", "veth", "peer", "name", &vb],
            vec!["link", "set", &va, "netns", &a],
            vec!["link", "set", &vb, "netns", &b],
        ];
        for s in &steps {
            assert!(ip(s), "ip {}", s.join(" "));
        }
        let a_addr = format!("{node_ip}/24");
        let b_addr = format!("{other_ip}/24");
        for (ns, dev, addr) in [(&a, &va, &a_addr), (&b, &vb, &b_addr)] {
            for s in [
                vec!["-n", ns, "addr", "add", addr, "dev", dev],
                vec!["-n", ns, "link", "set", dev, "up"],
                vec!["-n", ns, "link", "set", "lo", "up"],
            ] {
                assert!(ip(&s), "ip {}", s.join(" "));
            }
        }
        net
    }

    /// `program` run in namespace `ns` (or here, without namespaces).
    fn cmd(ns: &Option<String>, program: &Path) -> Command {
        match ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(program);
                c
            }
            None => Command::new(program),
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in [&self.node, &self.other].into_iter().flatten() {
            ip(&["netns", "del", ns]);
        }
    }
}

fn read_spans(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("every line is a JSON span"))
        .collect()
}

fn spawn(mut c: Command, log: &Path) -> Daemon {
    Daemon(
        c.env("BLKKIN_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap(),
    )
}

/// `blkkin status --json` from the collector's machine with `args`.
fn status(net: &Net, relay: &str, args: &[&str]) -> std::process::Output {
    Net::cmd(&net.other, Path::new(env!("CARGO_BIN_EXE_blkkin")))
        .args(["status", "--json", "--interval", "0", relay])
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn mutual_tls_across_nodes_every_span_arrives_and_strangers_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let net = Net::make();
    let relay = format!("{}:7420", net.node_ip);
    let pki = tmp.path().join("pki");
    let p = |f: &str| -> String { pki.join(f).to_str().unwrap().to_string() };
    let made = Command::new(env!("CARGO_BIN_EXE_blkkin"))
        .args(["certs", "--ca", "--out", pki.to_str().unwrap()])
        .args(["--server", &net.node_ip])
        .args(["--producer", "node-a", "--reader", "collector"])
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );

    // Without TLS the relay refuses the node's address (when it is not loopback).
    let data = tmp.path().join("relay");
    if net.node.is_some() {
        let open = Net::cmd(&net.node, &bin("blkkin-relayd"))
            .args(["--listen", &relay, "--data-dir"])
            .arg(&data)
            .output()
            .unwrap();
        assert_eq!(open.status.code(), Some(2));
        let err = String::from_utf8_lossy(&open.stderr);
        assert!(err.contains("not a loopback address"), "{err}");
    }

    let mut relay_cmd = Net::cmd(&net.node, &bin("blkkin-relayd"));
    relay_cmd
        .args(["--listen", &relay, "--data-dir"])
        .arg(&data)
        .args([
            "--tls-cert",
            &p("server.pem"),
            "--tls-key",
            &p("server.key"),
        ])
        .args(["--tls-client-ca", &p("ca.pem")]);
    let _relay = spawn(relay_cmd, &tmp.path().join("relay.log"));

    let reader_tls = [
        "--tls-ca",
        &p("ca.pem"),
        "--tls-cert",
        &p("reader-collector.pem"),
        "--tls-key",
        &p("reader-collector.key"),
    ];
    // Wait for the relay: a valid reader gets its status.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !status(&net, &relay, &reader_tls).status.success() {
        assert!(
            Instant::now() < deadline,
            "relay never answered a valid reader"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let rings = tmp.path().join("rings");
    std::fs::create_dir_all(&rings).unwrap();
    let mut consumer_cmd = Net::cmd(&net.node, &bin("blkkin-consumerd"));
    consumer_cmd
        .args(["--relay", &relay, "--node", "node-a", "--dir"])
        .arg(&rings)
        .args(["--tls-ca", &p("ca.pem")])
        .args(["--tls-cert", &p("producer-node-a.pem")])
        .args(["--tls-key", &p("producer-node-a.key")]);
    let _consumer = spawn(consumer_cmd, &tmp.path().join("consumer.log"));

    let out = tmp.path().join("spans.jsonl");
    let coll_log = tmp.path().join("collector.log");
    let mut coll_cmd = Net::cmd(&net.other, &bin("blkkin-collector"));
    coll_cmd
        .args(["--relay", &relay, "--name", "collector"])
        .args(["--jsonl", out.to_str().unwrap(), "--linger", "1500ms"])
        .args(reader_tls);
    let coll = spawn(coll_cmd, &coll_log);

    // The traced program on the node (its rings are files; no network).
    let libs = common::lib_dir(tmp.path());
    let exe: PathBuf = common::compile(tmp.path(), &libs, "rpc_tree.c", "rpc_tree", false);
    let n = 50;
    let ran = common::run_traced(&exe, &[&n.to_string()], &rings, &[]);
    let traces: HashSet<String> = ran
        .lines()
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect();
    assert_eq!(traces.len(), n);

    let deadline = Instant::now() + Duration::from_secs(30);
    while read_spans(&out).len() < n * 4 {
        assert!(
            Instant::now() < deadline,
            "only {} of {} spans; collector log:\n{}",
            read_spans(&out).len(),
            n * 4,
            std::fs::read_to_string(&coll_log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Strangers: no client certificate, a plain connection, a producer's
    // certificate used to read (refused by name, not only by TLS).
    let producer_tls = [
        "--tls-ca",
        &p("ca.pem"),
        "--tls-cert",
        &p("producer-node-a.pem"),
        "--tls-key",
        &p("producer-node-a.key"),
    ];
    for (args, why) in [
        (&["--tls-ca", &p("ca.pem")][..], "TLS without a certificate"),
        (&[][..], "plain TCP"),
        (&producer_tls[..], "a producer certificate"),
    ] {
        let o = status(&net, &relay, args);
        assert!(!o.status.success(), "{why}: status was answered");
        assert!(o.stdout.is_empty(), "{why}: printed a status");
        if args == producer_tls {
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(err.contains("may not connect as a reader"), "{err}");
        }
    }

    // Everything once; the collector's own totals agree.
    let spans = read_spans(&out);
    assert_eq!(spans.len(), n * 4);
    let mut seen = HashSet::new();
    for s in &spans {
        assert!(traces.contains(s["traceId"].as_str().unwrap()), "{s}");
        assert!(
            seen.insert((s["id"].to_string(), s["kind"].to_string())),
            "twice: {s}"
        );
    }
    // SAFETY: signalling a child we own.
    unsafe { libc::kill(coll.0.id() as i32, libc::SIGTERM) };
    let mut coll = coll;
    let _ = coll.0.wait();
    let log = std::fs::read_to_string(&coll_log).unwrap();
    assert_eq!(
        counter(&log, "collector totals", "spans"),
        Some(n as u64 * 4),
        "{log}"
    );
}

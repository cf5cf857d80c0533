//! Operating the per-node pair: `blkkin status` end to end, and graceful
//! shutdown of the consumer on SIGTERM/SIGINT.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::daemons::*;

#[test]
fn status_shows_streams_rates_consumers_and_readers() {
    let node = Node::start();
    let relay = node.relay.clone();
    let _consumer = start_consumer(&node.rings, &relay);
    let n = 100; // requests, 6 annotations each, in two processes
    let exe = node.compile("pingpong.c");
    common::run_traced(&exe, &[&n.to_string()], &node.rings, &[]);

    // The consumer reports its counters to the relay, which shows them.
    let s = wait_for_status(&relay, Duration::from_secs(20), |s| {
        s["consumers"][0]["consumer"]["acked"] == n * 6
    });
    let c = &s["consumers"][0];
    assert_eq!(c["name"], "node-a");
    assert_eq!(c["consumer"]["records"], n * 6);
    assert_eq!(c["consumer"]["connects"], 1);
    assert_eq!(c["consumer"]["buffer_full"], 0);
    assert_eq!(c["consumer"]["buffer_limit"], 64 << 20);
    let streams = s["streams"].as_array().unwrap();
    let pids: std::collections::BTreeSet<u64> =
        streams.iter().map(|s| s["pid"].as_u64().unwrap()).collect();
    assert_eq!(pids.len(), 2, "client and server process: {s:#}");
    let held: u64 = streams
        .iter()
        .map(|s| s["next"].as_u64().unwrap() - s["first"].as_u64().unwrap())
        .sum();
    assert_eq!(held, n * 6);
    assert!(streams.iter().all(|s| s["node"] == "node-a"));
    assert!(streams.iter().all(|s| s["counters"]["relay_gap"] == 0));
    assert_eq!(
        s["readers"].as_array().unwrap().len(),
        0,
        "itself not listed"
    );

    // A reader is listed; rates come from two samples.
    let mut tail = start_tail(&relay, None);
    let _out = TailOutput::collect(&mut tail);
    let s = wait_for_status(&relay, Duration::from_secs(10), |s| {
        s["readers"].as_array().unwrap().len() == 1
    });
    assert!(s["readers"][0]["name"]
        .as_str()
        .unwrap()
        .starts_with("blkkin-tail-"));
    let s = status_json(&relay, Some("0.2"));
    for st in s["streams"].as_array().unwrap() {
        assert_eq!(st["rate"], 0.0, "nothing new is recorded: {st}");
    }

    // The text form names the same things.
    let out = Command::new(env!("CARGO_BIN_EXE_blkkin"))
        .args(["status", "--interval", "0.1", &relay])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for want in [
        "consumers (1):",
        "readers (1):",
        "streams (",
        "node-a",
        &format!("acknowledged {}", n * 6),
        "reconnects 0",
        "rec/s",
    ] {
        assert!(text.contains(want), "{want:?} missing from:\n{text}");
    }

    // An unreachable relay is a clear error.
    drop(node);
    let out = Command::new(env!("CARGO_BIN_EXE_blkkin"))
        .args(["status", &relay])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("connecting to relay"), "{err}");
}

/// Records waiting in the rings of exited writers when the consumer is told
/// to stop are drained, acknowledged and their rings removed before it exits.
fn stop_drains_and_flushes(signal: i32) {
    let node = Node::start();
    let (rings, relay) = (&node.rings, node.relay.as_str());
    let n = 2000;
    let exe = node.compile("pingpong.c");
    common::run_traced(&exe, &[&n.to_string()], rings, &[("BLKIN_RING_SIZE", "4M")]);

    let mut consumer = start_consumer_logged(rings, relay, true);
    let logs = consumer.stderr_lines();
    // Signalled as soon as it runs, before it could have drained everything.
    let first = logs.recv_timeout(Duration::from_secs(10)).expect("started");
    consumer.signal(signal);
    let t0 = Instant::now();
    let status = loop {
        if let Some(st) = consumer.0.try_wait().unwrap() {
            break st;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "consumer did not stop"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    // Every line: the reader thread ends at the end of its stderr.
    let lines: Vec<String> = std::iter::once(first).chain(logs.iter()).collect();
    assert!(status.success(), "{status:?}: {lines:#?}");
    let stopped = lines
        .iter()
        .find(|l| l.contains("stopped"))
        .unwrap_or_else(|| panic!("no final line: {lines:#?}"));
    assert!(
        stopped.contains(&format!("acked={}", n * 6)),
        "everything acknowledged: {stopped}"
    );
    assert_eq!(
        std::fs::read_dir(rings).unwrap().count(),
        0,
        "drained rings of exited writers removed"
    );
    let s = status_json(relay, None);
    let held: u64 = s["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["next"].as_u64().unwrap())
        .sum();
    assert_eq!(held, n as u64 * 6, "the relay holds every record");
}

#[test]
fn consumer_sigterm_drains_flushes_and_exits_cleanly() {
    stop_drains_and_flushes(libc::SIGTERM);
}

#[test]
fn consumer_sigint_drains_flushes_and_exits_cleanly() {
    stop_drains_and_flushes(libc::SIGINT);
}

#[test]
fn consumer_config_file_and_json_logs() {
    let node = Node::start();
    let (rings, relay) = (&node.rings, node.relay.as_str());
    let conf = node.tmp.path().join("consumerd.toml");
    std::fs::write(
        &conf,
        format!(
            "relay = {relay:?}\ndir = {:?}\nnode = \"from-file\"\nlog-format = \"json\"\n",
            rings
        ),
    )
    .unwrap();
    let mut consumer = Daemon(
        Command::new(bin("blkkin-consumerd"))
            .args(["--config", conf.to_str().unwrap(), "--node", "from-cli"])
            .env("BLKKIN_LOG", "info")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let logs = consumer.stderr_lines();
    // The file's relay and the command line's node name.
    let s = wait_for_status(relay, Duration::from_secs(10), |s| {
        s["consumers"].as_array().unwrap().len() == 1
    });
    assert_eq!(s["consumers"][0]["name"], "from-cli");
    let first = logs
        .recv_timeout(Duration::from_secs(5))
        .expect("a log line");
    let line: serde_json::Value = serde_json::from_str(&first).expect("JSON log lines");
    assert_eq!(line["level"], "INFO", "{line}");
    assert!(line["fields"]["message"].is_string(), "{line}");

    // An unknown key is refused, naming it.
    std::fs::write(&conf, "relay = \"127.0.0.1:1\"\nbatch = 5\n").unwrap();
    let out = Command::new(bin("blkkin-consumerd"))
        .args(["--config", conf.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown field `batch`"), "{err}");
}

#[test]
fn relay_sigint_mid_stream_exits_cleanly_and_loses_nothing() {
    let mut node = Node::start();
    let relay = node.relay.clone();
    let port: u16 = relay.rsplit(':').next().unwrap().parse().unwrap();
    let _consumer = start_consumer(&node.rings, &relay);
    let exe = node.compile("pingpong.c");
    let n = 5_000usize;
    let mut writer = Command::new(&exe)
        .arg(n.to_string())
        .env("BLKIN_SHM_DIR", &node.rings)
        .env("BLKIN_RING_SIZE", "64M")
        // At least a second of recording (5 000 requests, 200 µs apart):
        // the relay stops mid-stream however fast the machine is.
        .env("PINGPONG_PAUSE_US", "200")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        writer.try_wait().unwrap().is_none(),
        "the writer is still recording when the relay stops"
    );
    node.relay_d.signal(libc::SIGINT);
    let t0 = Instant::now();
    let status = loop {
        if let Some(st) = node.relay_d.0.try_wait().unwrap() {
            break st;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "relay did not stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    // Restarted on the same data: the consumer reconnects and re-sends.
    node.relay_d = start_relay(&node.tmp.path().join("relay"), port);
    assert!(writer.wait().unwrap().success());
    let s = wait_for_status(&relay, Duration::from_secs(60), |s| {
        let streams = s["streams"].as_array().unwrap();
        streams
            .iter()
            .map(|st| st["next"].as_u64().unwrap())
            .sum::<u64>()
            >= (n * 6) as u64
    });
    for st in s["streams"].as_array().unwrap() {
        assert_eq!(st["counters"]["relay_gap"], 0, "{st}");
    }
    let mut tail = start_tail(&relay, Some(n * 6));
    let out = TailOutput::collect(&mut tail);
    let got = out.wait_for(n * 6, Duration::from_secs(60));
    let ids: std::collections::HashSet<String> = got
        .iter()
        .map(|a| format!("{} {} {}", a["id"], a["value"], a["timestamp"]))
        .collect();
    assert_eq!(ids.len(), n * 6, "every annotation exactly once");
}

#[test]
fn ring_overflow_losses_are_shown_by_status_and_tail() {
    let node = Node::start();
    let relay = node.relay.as_str();
    // Written with no consumer running into small rings: most records do
    // not fit and the writers count them.
    let exe = node.compile("pingpong.c");
    common::run_traced(&exe, &["3000"], &node.rings, &[("BLKIN_RING_SIZE", "64K")]);
    let _consumer = start_consumer(&node.rings, relay);
    let s = wait_for_status(relay, Duration::from_secs(60), |s| {
        let streams = s["streams"].as_array().unwrap();
        !streams.is_empty() && streams.iter().all(|st| st["closed"] == true)
    });
    let mut lost_by_pid = std::collections::HashMap::new();
    for st in s["streams"].as_array().unwrap() {
        let w = &st["counters"]["writer"];
        let held = st["next"].as_u64().unwrap() - st["first"].as_u64().unwrap();
        assert_eq!(w["written"].as_u64().unwrap(), held, "{st}");
        *lost_by_pid.entry(st["pid"].as_u64().unwrap()).or_insert(0) +=
            w["lost_full"].as_u64().unwrap();
    }
    let lost: u64 = lost_by_pid.values().sum();
    let recorded: u64 = s["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|st| st["counters"]["writer"]["written"].as_u64().unwrap())
        .sum();
    assert_eq!(
        lost + recorded,
        3000 * 6,
        "every annotation held or counted"
    );
    assert!(lost > 0, "64K rings cannot hold 18000 annotations");

    // The collector reading this relay keeps the same losses.
    let log = node.tmp.path().join("collector.log");
    let collector = common::collector::Collector::start(
        &[relay],
        &["--jsonl", "/dev/null", "--stats-interval", "0.2"],
        &log,
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while common::collector::counter(&collector.log(), "relay counters", "upstream_lost")
        != Some(lost)
    {
        assert!(
            Instant::now() < deadline,
            "collector did not report upstream_lost={lost}: {}",
            collector.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    collector.stop();

    // tail --json: one counters object per stream with a loss, as counted.
    let mut tail = start_tail(relay, None);
    let out = TailOutput::collect(&mut tail);
    out.wait_for(recorded as usize, Duration::from_secs(60));
    let mut shown = std::collections::HashMap::new();
    for c in out.counters() {
        assert_eq!(c["type"], "counters");
        assert_eq!(c["node"], "node-a");
        *shown.entry(c["pid"].as_u64().unwrap()).or_insert(0) +=
            c["counters"]["writer"]["lost_full"].as_u64().unwrap();
    }
    assert_eq!(
        shown,
        lost_by_pid.into_iter().filter(|(_, n)| *n > 0).collect()
    );

    // Text: the loss comes with the stream, before its records.
    let text = Command::new(env!("CARGO_BIN_EXE_blkkin"))
        .args(["tail", "--from-oldest", "--count", "1", relay])
        .output()
        .unwrap();
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(
        text.lines()
            .next()
            .unwrap()
            .starts_with("# loss node=node-a"),
        "{text}"
    );
    assert!(text.contains("ring full "), "{text}");
    let status_text = Command::new(env!("CARGO_BIN_EXE_blkkin"))
        .args(["status", "--interval", "0", relay])
        .output()
        .unwrap();
    let status_text = String::from_utf8(status_text.stdout).unwrap();
    assert!(status_text.contains("lost: ring full "), "{status_text}");
}

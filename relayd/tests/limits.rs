//! Bounded resources (issue 13, point 2): what peers that never say who
//! they are, or open streams without end, can cost the relay.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use blkkin::relay_client::RelayReader;
use blkkin::wire::{ErrorCode, Frame, Role, StreamKey};
use common::*;

/// 500 connections that announce a 1 MiB frame before their Hello and send
/// it, plus 500 that stay silent: the relay's peak resident size stays under
/// 64 MiB above what it was, and a consumer and a reader keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_connections_cost_bounded_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = start_binary(&tmp.path().join("data"), &[], &["--max-connections", "700"]);
    let addr = relay.1;
    let before = relay.status_kb("VmRSS");
    const BOUND_KB: u64 = 64 << 10;

    let hostile = tokio::task::spawn_blocking(move || {
        let payload = vec![0x5au8; 1 << 20];
        let mut silent = Vec::new();
        let mut refused = 0;
        for i in 0..1000 {
            let Ok(mut s) = std::net::TcpStream::connect(addr) else {
                refused += 1;
                continue;
            };
            if i % 2 == 0 {
                // A frame of 1 MiB before Hello: refused at its length.
                s.set_write_timeout(Some(Duration::from_millis(200)))
                    .unwrap();
                let _ = s.write_all(&(1u32 << 20).to_be_bytes());
                let _ = s.write_all(&payload);
            }
            silent.push(s); // kept open
        }
        (silent, refused)
    });

    // Meanwhile a consumer and a reader are served (they may be told to come
    // back while the table is full, as consumers do with backoff).
    let k = key("node", 0);
    let mut done = 0;
    let t0 = Instant::now();
    while done < 100 {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the relay stopped serving"
        );
        let mut c = Client::connect(addr).await;
        c.send(&Frame::Hello {
            version: blkkin::wire::VERSION,
            role: Role::Consumer,
            name: "node".into(),
            token: None,
        })
        .await;
        match c.recv().await {
            Some(Frame::Welcome { .. }) => {}
            Some(Frame::Error {
                code: ErrorCode::Unavailable,
                ..
            })
            | None => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            other => panic!("unexpected {other:?}"),
        }
        let at = c.open(1, &k).await;
        assert_eq!(at, done);
        done = c.push(1, done, done + 50).await;
    }
    let (silent, _refused) = hostile.await.unwrap();
    let peak = relay.status_kb("VmHWM");
    eprintln!(
        "relay resident: {before} kB before, peak {peak} kB with {} hostile connections",
        silent.len()
    );
    assert!(
        peak < before + BOUND_KB,
        "peak {peak} kB, more than {BOUND_KB} kB above {before} kB"
    );
    // The silent ones are closed once the Hello deadline (10 s) passed.
    drop(silent);
    let s = tokio::task::spawn_blocking(move || {
        RelayReader::connect(&addr.to_string(), "check")
            .and_then(|mut r| r.status())
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(s.streams.len(), 1);
    assert_eq!(s.streams[0].summary.next, done);
}

/// The connection cap: the next connection is told Unavailable at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start_with(dir.path(), |c| c.max_connections = 3).await;
    let _held: Vec<Client> = futures_like_collect(relay.addr, 3).await;
    let mut extra = Client::connect(relay.addr).await;
    match extra.recv().await {
        Some(Frame::Error { code, message }) => {
            assert_eq!(code, ErrorCode::Unavailable);
            assert!(message.contains("too many connections"), "{message}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    drop(_held);
    // Room again once they are gone.
    let t0 = Instant::now();
    loop {
        let mut c = Client::connect(relay.addr).await;
        c.send(&Frame::Hello {
            version: blkkin::wire::VERSION,
            role: Role::Reader,
            name: "t".into(),
            token: None,
        })
        .await;
        if matches!(c.recv().await, Some(Frame::Welcome { .. })) {
            break;
        }
        assert!(t0.elapsed() < STEP, "room never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn futures_like_collect(addr: std::net::SocketAddr, n: usize) -> Vec<Client> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(Client::hello(addr, Role::Reader).await);
    }
    v
}

/// A Hello is small: a longer name or a large first frame is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn before_hello_only_small_frames() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(dir.path()).await;
    let mut c = Client::connect(relay.addr).await;
    c.send_raw(&(64u32 << 10).to_be_bytes()).await;
    c.expect_error_close(ErrorCode::Malformed).await;
    let mut c = Client::connect(relay.addr).await;
    c.send(&Frame::Hello {
        version: blkkin::wire::VERSION,
        role: Role::Consumer,
        name: "n".repeat(1000),
        token: None,
    })
    .await;
    c.expect_error_close(ErrorCode::Unexpected).await;
}

/// One connection may not open streams without end; the streams it opened
/// and never wrote to are gone when it goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_per_connection_are_capped_and_unused_ones_removed() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start_with(dir.path(), |c| c.max_streams_per_connection = 20).await;
    let mut c = Client::hello(relay.addr, Role::Consumer).await;
    for h in 0..20 {
        c.open(h, &key("spam", h)).await;
    }
    c.push(0, 0, 5).await; // one stream gets records
    c.send(&Frame::OpenStream {
        handle: 20,
        key: key("spam", 20),
        calibration: cal(),
    })
    .await;
    c.expect_error_close(ErrorCode::Unexpected).await;
    let mut rd = Client::hello(relay.addr, Role::Reader).await;
    let t0 = Instant::now();
    loop {
        let list = rd.list().await;
        if list.len() == 1 {
            assert_eq!(list[0].key, key("spam", 0), "the stream with records stays");
            break;
        }
        assert!(
            t0.elapsed() < STEP,
            "unused streams still listed: {}",
            list.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Their directories are gone too.
    let dirs = std::fs::read_dir(dir.path().join("streams"))
        .unwrap()
        .count();
    assert_eq!(dirs, 1);
}

/// 20,000 streams: `Status` and `List` answer in pages, and `blkkin status`'s
/// client gathers them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_list_of_20000_streams() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start_with(dir.path(), |c| {
        c.store.fsync = blkkin_relayd::config::FsyncPolicy::Never;
        c.max_streams_per_connection = 30_000;
    })
    .await;
    let mut c = Client::hello(relay.addr, Role::Consumer).await;
    const N: u32 = 20_000;
    let node = "a-storage-node-with-a-long-name.example.org";
    let mut frames = Vec::new();
    for h in 0..N {
        Frame::OpenStream {
            handle: h,
            key: StreamKey {
                node: node.into(),
                pid: 1000 + h,
                start_time: 1,
                cpu: 0,
            },
            calibration: cal(),
        }
        .encode(&mut frames);
    }
    c.send_raw(&frames).await;
    for h in 0..N {
        assert_eq!(c.ack(h).await, 0);
    }
    let addr = relay.addr.to_string();
    let (status, list) = tokio::task::spawn_blocking(move || {
        let mut r = RelayReader::connect(&addr, "status").unwrap();
        (r.status().unwrap(), r.list().unwrap())
    })
    .await
    .unwrap();
    assert_eq!(status.streams.len(), N as usize);
    assert_eq!(status.consumers.len(), 1);
    assert_eq!(list.len(), N as usize);
}

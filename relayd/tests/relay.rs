//! End-to-end tests over real TCP on 127.0.0.1.

mod common;

use std::time::{Duration, Instant};

use blkkin::wire::{self, ErrorCode, Frame, Role, Start, StreamSummary};
use common::*;
use tokio::io::AsyncWriteExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_gets_every_record_exactly_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(dir.path()).await;
    let (a, b, late) = (key("n1", 0), key("n1", 1), key("n2", 7));

    let mut cons = Client::hello(relay.addr, Role::Consumer).await;
    assert_eq!(cons.open(1, &a).await, 0);
    assert_eq!(cons.open(2, &b).await, 0);
    assert_eq!(cons.push(1, 0, 50).await, 50);

    // Subscribed to everything from the oldest: history first, then live.
    let mut rd = Client::hello(relay.addr, Role::Reader).await;
    rd.subscribe_all(Start::Oldest).await;
    let mut got = Received::default();
    read_until(&mut rd, &mut got, |g| g.positions(&a).len() == 50).await;

    for i in 0..10 {
        assert_eq!(cons.push(1, 50 + i * 10, 60 + i * 10).await, 60 + i * 10);
        assert_eq!(cons.push(2, i * 7, i * 7 + 7).await, i * 7 + 7);
    }
    // A stream created after the subscription is announced too.
    assert_eq!(cons.open(3, &late).await, 0);
    assert_eq!(cons.push(3, 0, 5).await, 5);

    read_until(&mut rd, &mut got, |g| {
        g.positions(&a).len() >= 150 && g.positions(&b).len() >= 70 && g.positions(&late).len() >= 5
    })
    .await;
    assert_eq!(got.positions(&a), range(0, 150));
    assert_eq!(got.positions(&b), range(0, 70));
    assert_eq!(got.positions(&late), range(0, 5));
    for k in [&a, &b, &late] {
        got.check_contents(k);
    }

    // List reports the same.
    let list = rd.list().await;
    let find = |k| {
        list.iter()
            .find(|s: &&StreamSummary| &s.key == k)
            .unwrap()
            .clone()
    };
    assert_eq!(
        (find(&a).first, find(&a).next, find(&a).closed),
        (0, 150, false)
    );
    assert_eq!(find(&b).next, 70);
    assert_eq!(find(&late).next, 5);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_are_sent_calibration_updates_before_later_records() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(dir.path()).await;
    let a = key("n1", 0);
    let mut cons = Client::hello(relay.addr, Role::Consumer).await;
    cons.open(1, &a).await;
    cons.push(1, 0, 10).await;
    let mut rd = Client::hello(relay.addr, Role::Reader).await;
    rd.subscribe_all(Start::Oldest).await;
    let mut got = Received::default();
    read_until(&mut rd, &mut got, |g| g.positions(&a).len() == 10).await;
    assert!(
        got.calibrations.is_empty(),
        "Announce carried the calibration"
    );
    // The library's reader too: it converts later records with the update.
    let addr = relay.addr.to_string();
    let (seen_first, first_seen) = std::sync::mpsc::channel();
    let lib_reader = tokio::task::spawn_blocking(move || {
        let mut r = blkkin::relay_client::RelayReader::connect(&addr, "t").unwrap();
        r.subscribe(None, Start::Oldest).unwrap();
        let mut cals = Vec::new();
        while cals.len() < 20 {
            r.next_records(|s, rec| cals.push((rec.position, s.calibration)))
                .unwrap();
            if cals.len() == 10 {
                seen_first.send(()).unwrap();
            }
        }
        cals
    });
    tokio::task::spawn_blocking(move || first_seen.recv().unwrap())
        .await
        .unwrap();

    let mut newer = cal();
    newer.raw1 += 1_000_000;
    newer.ns1 += 999_000;
    cons.send(&Frame::Calibrate {
        handle: 1,
        calibration: newer,
    })
    .await;
    cons.push(1, 10, 20).await;
    read_until(&mut rd, &mut got, |g| g.positions(&a).len() == 20).await;
    let h = got.handle_of(&a).unwrap();
    assert_eq!(got.calibrations.len(), 1, "{:?}", got.calibrations);
    let (handle, c, before) = got.calibrations[0];
    assert_eq!((handle, c), (h, newer));
    assert!(before <= 10, "sent before the records that follow it");
    let cals = lib_reader.await.unwrap();
    for (pos, c) in cals {
        assert_eq!(c, if pos < 10 { cal() } else { newer }, "record {pos}");
    }
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_resumes_at_a_position_without_loss_or_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(dir.path()).await;
    let k = key("n1", 0);
    let mut cons = Client::hello(relay.addr, Role::Consumer).await;
    cons.open(1, &k).await;
    cons.push(1, 0, 40).await;

    let mut rd = Client::hello(relay.addr, Role::Reader).await;
    rd.send(&Frame::Subscribe {
        key: Some(k.clone()),
        start: Start::Oldest,
    })
    .await;
    let mut got = Received::default();
    read_until(&mut rd, &mut got, |g| g.positions(&k).len() >= 40).await;
    assert_eq!(got.positions(&k), range(0, 40));
    drop(rd);

    // Records arrive while no reader is connected.
    cons.push(1, 40, 100).await;
    let mut rd = Client::hello(relay.addr, Role::Reader).await;
    rd.send(&Frame::Subscribe {
        key: Some(k.clone()),
        start: Start::At(40),
    })
    .await;
    let mut again = Received::default();
    read_until(&mut rd, &mut again, |g| g.positions(&k).len() >= 60).await;
    cons.push(1, 100, 110).await;
    read_until(&mut rd, &mut again, |g| g.positions(&k).len() >= 70).await;
    assert_eq!(again.positions(&k), range(40, 110));
    again.check_contents(&k);

    // Newest: only what arrives after the subscription.
    let mut rd = Client::hello(relay.addr, Role::Reader).await;
    rd.send(&Frame::Subscribe {
        key: Some(k.clone()),
        start: Start::Newest,
    })
    .await;
    let mut newest = Received::default();
    read_until(&mut rd, &mut newest, |g| !g.streams.is_empty()).await;
    cons.push(1, 110, 115).await;
    read_until(&mut rd, &mut newest, |g| g.positions(&k).len() >= 5).await;
    assert_eq!(newest.positions(&k), range(110, 115));
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_reconnect_resending_overlap_creates_no_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(dir.path()).await;
    let k = key("n1", 3);
    let mut cons = Client::hello(relay.addr, Role::Consumer).await;
    cons.open(9, &k).await;
    assert_eq!(cons.push(9, 0, 30).await, 30);
    drop(cons);

    let mut cons = Client::hello(relay.addr, Role::Consumer).await;
    assert_eq!(
        cons.open(4, &k).await,
        30,
        "OpenStream tells where the relay stands"
    );
    // Resends from an older acknowledged position: the overlap is dropped.
    assert_eq!(cons.push(4, 20, 45).await, 45);
    assert_eq!(cons.push(4, 0, 10).await, 45, "a wholly duplicate batch");
    // A gap is accepted and counted as lost.
    assert_eq!(cons.push(4, 50, 55).await, 55);

    let mut rd = Client::hello(relay.addr, Role::Reader).await;
    rd.subscribe_all(Start::Oldest).await;
    let mut got = Received::default();
    read_until(&mut rd, &mut got, |g| g.positions(&k).len() >= 50).await;
    let mut want = range(0, 45);
    want.extend(range(50, 55));
    assert_eq!(got.positions(&k), want);
    got.check_contents(&k);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_restart_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let k = key("n1", 0);
    let relay = Relay::start_with(dir.path(), |c| c.store.segment_size = 4096).await;
    let mut cons = Client::hello(relay.addr, Role::Consumer).await;
    cons.open(1, &k).await;
    cons.push(1, 0, 200).await;
    cons.send(&Frame::Counters {
        handle: 1,
        reader: Default::default(),
        writer: Default::default(),
    })
    .await;
    cons.send(&Frame::CloseStream { handle: 1 }).await;
    // CloseStream has no answer: a List round trip orders it.
    let mut rd = Client::hello(relay.addr, Role::Reader).await;
    let closed = || async {
        let mut rd = Client::hello(relay.addr, Role::Reader).await;
        let l = rd.list().await;
        l.len() == 1 && l[0].closed
    };
    let t0 = Instant::now();
    while !closed().await {
        assert!(t0.elapsed() < STEP, "CloseStream applied");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    rd.list().await;
    relay.stop().await;
    // Connections were closed by the shutdown.
    assert!(matches!(
        cons.recv().await,
        Some(Frame::Error {
            code: ErrorCode::Unavailable,
            ..
        }) | None
    ));

    let relay = Relay::start_with(dir.path(), |c| c.store.segment_size = 4096).await;
    let mut rd = Client::hello(relay.addr, Role::Reader).await;
    assert_eq!(
        rd.list().await,
        vec![StreamSummary {
            key: k.clone(),
            first: 0,
            next: 200,
            closed: true
        }]
    );
    rd.subscribe_all(Start::Oldest).await;
    let mut got = Received::default();
    read_until(&mut rd, &mut got, |g| g.positions(&k).len() >= 200).await;
    assert_eq!(got.positions(&k), range(0, 200));
    got.check_contents(&k);
    // The consumer resumes where the relay stands.
    let mut cons = Client::hello(relay.addr, Role::Consumer).await;
    assert_eq!(cons.open(1, &k).await, 200);
    assert_eq!(cons.push(1, 150, 210).await, 210);
    read_until(&mut rd, &mut got, |g| g.positions(&k).len() >= 210).await;
    assert_eq!(got.positions(&k), range(0, 210));
    relay.stop().await;
}

/// A healthy consumer keeps working while `bad` misbehaves.
async fn healthy_round(cons: &mut Client, next: &mut u64) {
    let n = cons.push(1, *next, *next + 3).await;
    assert_eq!(n, *next + 3);
    *next = n;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_connections_get_an_error_and_others_keep_working() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start_with(dir.path(), |c| c.max_frame = 64 << 10).await;
    let mut good = Client::hello(relay.addr, Role::Consumer).await;
    good.open(1, &key("good", 0)).await;
    let mut next = 0;

    // Random bytes before any Hello.
    let mut bad = Client::connect(relay.addr).await;
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let junk: Vec<u8> = (0..300)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    // Keep the length field small so the garbage is decoded, not waited for.
    let mut junk_frame = 200u32.to_be_bytes().to_vec();
    junk_frame.extend_from_slice(&junk[..200]);
    bad.send_raw(&junk_frame).await;
    bad.expect_error_close(ErrorCode::Malformed).await;
    healthy_round(&mut good, &mut next).await;

    // An oversized length: refused as soon as the 4 bytes are in.
    let mut bad = Client::hello(relay.addr, Role::Consumer).await;
    bad.send_raw(&(100u32 << 20).to_be_bytes()).await;
    bad.expect_error_close(ErrorCode::Malformed).await;
    healthy_round(&mut good, &mut next).await;

    // A truncated frame, then the writer half closed.
    let mut bad = Client::hello(relay.addr, Role::Consumer).await;
    let mut f = Vec::new();
    Frame::Records {
        handle: 1,
        first: 0,
        records: records(0, 3),
    }
    .encode(&mut f);
    bad.send_raw(&f[..f.len() - 10]).await;
    bad.sock.shutdown().await.unwrap();
    bad.expect_error_close(ErrorCode::Malformed).await;
    healthy_round(&mut good, &mut next).await;

    // Records whose framing is wrong inside a well-formed frame.
    let mut bad = Client::hello(relay.addr, Role::Consumer).await;
    bad.open(1, &key("bad", 0)).await;
    let mut recs = records(0, 2);
    recs[0] ^= 0x3; // commit word state
    bad.send(&Frame::Records {
        handle: 1,
        first: 0,
        records: recs,
    })
    .await;
    bad.expect_error_close(ErrorCode::Malformed).await;

    // Another version.
    let mut bad = Client::connect(relay.addr).await;
    bad.send(&Frame::Hello {
        version: wire::VERSION + 1,
        role: Role::Consumer,
        name: "future".into(),
        token: None,
    })
    .await;
    bad.expect_error_close(ErrorCode::Version).await;

    // Frames not allowed: before Hello, for the role, unknown handle.
    let mut bad = Client::connect(relay.addr).await;
    bad.send(&Frame::List).await;
    bad.expect_error_close(ErrorCode::Unexpected).await;
    let mut bad = Client::hello(relay.addr, Role::Reader).await;
    bad.send(&Frame::CloseStream { handle: 1 }).await;
    bad.expect_error_close(ErrorCode::Unexpected).await;
    let mut bad = Client::hello(relay.addr, Role::Consumer).await;
    bad.send(&Frame::List).await;
    bad.expect_error_close(ErrorCode::Unexpected).await;
    let mut bad = Client::hello(relay.addr, Role::Consumer).await;
    bad.send(&Frame::Records {
        handle: 77,
        first: 0,
        records: records(0, 1),
    })
    .await;
    bad.expect_error_close(ErrorCode::Unexpected).await;

    healthy_round(&mut good, &mut next).await;
    assert_eq!(next, 12);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_loris_and_idle_connections_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start_with(dir.path(), |c| {
        c.frame_timeout = Duration::from_millis(400);
        c.idle_timeout = Duration::from_millis(1200);
    })
    .await;
    let mut good = Client::hello(relay.addr, Role::Consumer).await;
    good.open(1, &key("good", 0)).await;
    let mut next = 0;

    // One byte every 50 ms: never idle, but the frame is never completed in time.
    let mut loris = Client::hello(relay.addr, Role::Consumer).await;
    let mut f = Vec::new();
    Frame::Records {
        handle: 1,
        first: 0,
        records: records(0, 20),
    }
    .encode(&mut f);
    let t0 = Instant::now();
    let mut closed = false;
    for b in &f {
        if loris.sock.write_all(&[*b]).await.is_err() {
            closed = true;
            break;
        }
        healthy_round(&mut good, &mut next).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        if t0.elapsed() > Duration::from_millis(800) {
            break;
        }
    }
    let _ = closed;
    assert!(t0.elapsed() < Duration::from_secs(2));
    match loris.recv().await {
        Some(Frame::Error {
            code: ErrorCode::Unexpected,
            message,
        }) => assert!(message.contains("partial frame"), "{message}"),
        other => panic!("expected the slow-sender Error, got {other:?}"),
    }
    assert_eq!(loris.recv().await, None);

    // Silent after Hello: closed after the idle timeout.
    let t0 = Instant::now();
    let mut idle = Client::hello(relay.addr, Role::Consumer).await;
    let closed = idle.expect_error_close(ErrorCode::Unexpected);
    tokio::pin!(closed);
    // Meanwhile the healthy connection talks every 200 ms and stays open.
    loop {
        tokio::select! {
            _ = &mut closed => break,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                healthy_round(&mut good, &mut next).await;
            }
        }
    }
    let waited = t0.elapsed();
    assert!(waited >= Duration::from_millis(1100), "{waited:?}");

    // The healthy connection sent regularly and is still fine.
    healthy_round(&mut good, &mut next).await;
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_in_use_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(dir.path()).await;
    let other = tempfile::tempdir().unwrap();
    let cfg = blkkin_relayd::Config::new(relay.addr, other.path());
    let err = blkkin_relayd::Server::bind(cfg)
        .await
        .err()
        .expect("port taken");
    assert!(format!("{err:#}").contains("cannot listen on"), "{err:#}");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reader_does_not_slow_consumers() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start_with(dir.path(), |c| {
        c.store.fsync = blkkin_relayd::FsyncPolicy::Never;
    })
    .await;
    let k = key("n1", 0);
    // A reader that subscribes and then never reads.
    let mut stalled = Client::hello(relay.addr, Role::Reader).await;
    stalled
        .send(&Frame::Subscribe {
            key: None,
            start: Start::Oldest,
        })
        .await;
    let mut cons = Client::hello(relay.addr, Role::Consumer).await;
    cons.open(1, &k).await;
    // About 16 MiB of records, far more than socket buffers hold.
    let batch = 4000;
    let one = records(0, batch);
    let t0 = Instant::now();
    for i in 0..50u64 {
        cons.send(&Frame::Records {
            handle: 1,
            first: i * batch,
            records: one.clone(),
        })
        .await;
        assert_eq!(cons.ack(1).await, (i + 1) * batch);
    }
    assert!(t0.elapsed() < STEP, "{:?}", t0.elapsed());
    // A reader subscribing to one stream before it exists gets it once created.
    let other = key("n9", 0);
    let mut rd = Client::hello(relay.addr, Role::Reader).await;
    rd.send(&Frame::Subscribe {
        key: Some(other.clone()),
        start: Start::Oldest,
    })
    .await;
    assert_eq!(rd.list().await.len(), 1);
    cons.open(2, &other).await;
    cons.push(2, 0, 3).await;
    let mut got = Received::default();
    read_until(&mut rd, &mut got, |g| g.positions(&other).len() >= 3).await;
    assert_eq!(got.positions(&other), range(0, 3));
    assert_eq!(got.streams.len(), 1);
    drop(stalled);
    relay.stop().await;
}

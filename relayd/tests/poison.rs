//! Poison input (issue 13, point 3): a record no reader could decode, a
//! record whose sequence number is not its position's, and a position jump
//! are refused at ingest and counted; the stream and its readers go on.

mod common;

use blkkin::relay_client::RelayReader;
use blkkin::wire::{ErrorCode, Frame, Role, Start};
use blkkin_relayd::testutil::poison_at;
use common::*;

/// Records `from..to`, with the one at `bad` replaced by `with`.
fn batch_with(from: u64, to: u64, bad: u64, with: Vec<u8>) -> Vec<u8> {
    (from..to)
        .flat_map(|p| if p == bad { with.clone() } else { record_at(p) })
        .collect()
}

/// The live reader (`blkkin tail` and the collector read through it) gets
/// every good record of `key` up to `to`, and the refused ones as counted loss.
fn read_all(addr: std::net::SocketAddr, key: &blkkin::wire::StreamKey, to: u64) -> (Vec<u64>, u64) {
    let mut r = RelayReader::connect(&addr.to_string(), "poison-test").expect("reader connects");
    r.subscribe(Some(key.clone()), Start::Oldest).unwrap();
    let mut got = Vec::new();
    let t0 = std::time::Instant::now();
    let mut lost = 0;
    while got.last().is_none_or(|p| *p + 1 < to) {
        assert!(t0.elapsed() < STEP * 2, "reader stalled at {got:?}");
        r.next_events(|e| match e {
            blkkin::relay_client::Event::Record(_, rec) => got.push(rec.position),
            blkkin::relay_client::Event::Counters(s) => lost = s.lost(),
        })
        .unwrap();
    }
    (got, lost)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_and_misnumbered_records_are_refused_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(dir.path()).await;
    let k = key("node", 0);
    let mut c = Client::hello(relay.addr, Role::Consumer).await;
    assert_eq!(c.open(1, &k).await, 0);
    assert_eq!(c.push(1, 0, 5).await, 5);
    // Position 5: string lengths that overrun the record.
    c.send(&Frame::Records {
        handle: 1,
        first: 5,
        records: batch_with(5, 10, 5, poison_at(5)),
    })
    .await;
    assert_eq!(
        c.ack(1).await,
        10,
        "the frame is acknowledged: the bad record is not stored"
    );
    // Position 12 carries the record of position 40 (its sequence number says 40).
    c.send(&Frame::Records {
        handle: 1,
        first: 10,
        records: batch_with(10, 15, 12, record_at(40)),
    })
    .await;
    assert_eq!(c.ack(1).await, 15);
    assert_eq!(c.push(1, 15, 20).await, 20, "the connection goes on");

    let addr = relay.addr;
    let (got, lost) = tokio::task::spawn_blocking(move || read_all(addr, &k, 20))
        .await
        .unwrap();
    let expect: Vec<u64> = (0..20).filter(|p| *p != 5 && *p != 12).collect();
    assert_eq!(got, expect, "every good record, in order, nothing else");
    assert_eq!(lost, 2, "the two refused records are counted as lost");
    relay.stop().await;

    // The count survives a restart (meta.json).
    let relay = Relay::start(dir.path()).await;
    let mut rd = Client::hello(relay.addr, Role::Reader).await;
    rd.subscribe_all(Start::Oldest).await;
    let mut rx = Received::default();
    read_until(&mut rd, &mut rx, |g| !g.counters.is_empty()).await;
    assert_eq!(rx.counters[0].1.relay_refused, 2);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_jump_is_refused_and_the_stream_keeps_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(dir.path()).await;
    let k = key("node", 0);
    let mut owner = Client::hello(relay.addr, Role::Consumer).await;
    owner.open(1, &k).await;
    assert_eq!(owner.push(1, 0, 10).await, 10);

    // Another connection opens the same key and sends a record at 2^62 whose
    // sequence number matches the position's low bits.
    let mut hijack = Client::hello(relay.addr, Role::Consumer).await;
    assert_eq!(hijack.open(7, &k).await, 10);
    let far = 1u64 << 62;
    hijack
        .send(&Frame::Records {
            handle: 7,
            first: far,
            records: record_at(far),
        })
        .await;
    match hijack.recv().await {
        Some(Frame::Error { code, message }) => {
            assert_eq!(code, ErrorCode::Unexpected);
            assert!(message.contains("jump"), "{message}");
        }
        other => panic!("expected the jump to be refused, got {other:?}"),
    }

    // The real consumer goes on from where it was; nothing is taken for a duplicate.
    assert_eq!(owner.push(1, 10, 30).await, 30);
    let addr = relay.addr;
    let (got, lost) = tokio::task::spawn_blocking(move || read_all(addr, &k, 30))
        .await
        .unwrap();
    assert_eq!(got, (0..30).collect::<Vec<_>>());
    assert_eq!(lost, 1, "the refused record is counted");
    relay.stop().await;
}

/// A reader that meets a record it cannot decode (a relay of another make,
/// or damage after ingest) skips and counts it and keeps the connection.
#[test]
fn a_reader_skips_and_counts_what_it_cannot_decode() {
    use blkkin::relay_client::Event;
    use blkkin::wire::{FrameBuffer, DEFAULT_MAX_FRAME, VERSION};
    use std::io::{Read, Write};
    // A minimal relay serving one stream with a poisoned record.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut fb = FrameBuffer::new(DEFAULT_MAX_FRAME);
        let mut buf = [0u8; 4096];
        let mut next = |s: &mut std::net::TcpStream| loop {
            if let Some(f) = fb.next_frame().unwrap() {
                return f;
            }
            let n = s.read(&mut buf).unwrap();
            fb.extend(&buf[..n]);
        };
        let send = |s: &mut std::net::TcpStream, frames: &[Frame]| {
            let mut out = Vec::new();
            for f in frames {
                f.encode(&mut out);
            }
            s.write_all(&out).unwrap();
        };
        assert!(matches!(next(&mut s), Frame::Hello { .. }));
        send(
            &mut s,
            &[Frame::Welcome {
                version: VERSION,
                name: "fake".into(),
                idle_timeout_ms: 0,
            }],
        );
        assert!(matches!(next(&mut s), Frame::Subscribe { .. }));
        send(
            &mut s,
            &[
                Frame::Announce {
                    handle: 1,
                    key: key("n", 0),
                    calibration: cal(),
                },
                Frame::Records {
                    handle: 1,
                    first: 0,
                    records: batch_with(0, 4, 2, poison_at(2)),
                },
                Frame::Records {
                    handle: 1,
                    first: 4,
                    records: records(4, 6),
                },
            ],
        );
        // Keep the connection open until the reader is done.
        let _ = s.read(&mut buf);
    });
    let mut r = RelayReader::connect(&addr.to_string(), "t").unwrap();
    r.subscribe(None, Start::Oldest).unwrap();
    let mut got = Vec::new();
    let mut undecodable = 0;
    while got.len() < 5 {
        r.next_events(|e| match e {
            Event::Record(_, rec) => got.push(rec.position),
            Event::Counters(s) => undecodable = s.undecodable,
        })
        .expect("the reader keeps going past the bad record");
    }
    assert_eq!(got, vec![0, 1, 3, 4, 5]);
    assert_eq!(undecodable, 1, "the skipped record is counted");
    drop(r);
    server.join().unwrap();
}

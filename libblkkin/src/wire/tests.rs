use super::*;
use proptest::prelude::*;

fn key() -> StreamKey {
    StreamKey {
        node: "node-1".into(),
        pid: 4242,
        start_time: 987654,
        cpu: 1,
    }
}

fn one_record(seq: u32) -> Vec<u8> {
    use crate::ring::writer::{RecordIn, RingGeometry, RingWriter, Value};
    let mem = crate::ring::mem::RingMem::heap(layout::HEADER_SIZE + 65536);
    let geo = RingGeometry {
        data_size: 65536,
        max_record: 4096,
        overwrite: true,
    };
    let w = RingWriter::new(mem, geo);
    let r = RecordIn {
        trace_id: 1,
        span_id: 2,
        parent_id: 0,
        port: 1,
        flags: 0,
        kind: layout::Kind::String,
        service: b"svc",
        name: b"op",
        ip: b"127.0.0.1",
        key: b"k",
        value: Value::Str(b"v"),
    };
    let r = RecordIn {
        span_id: seq as u64,
        ..r
    };
    w.write(crate::clock::ClockSource::Realtime, &r).unwrap();
    let at = layout::HEADER_SIZE;
    let len = CommitWord::decode(w.mem().word(at).load(std::sync::atomic::Ordering::Relaxed)).len;
    let mut words = vec![0u64; len as usize / 8];
    w.mem().read_words(at, &mut words);
    words.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn counters() -> StreamCounters {
    StreamCounters {
        reader: ReaderStats {
            read: 1,
            torn: 2,
            corrupt: 3,
            gap: 4,
            resyncs: 5,
            skipped_bytes: 6,
        },
        writer: WriterCounters {
            written: 7,
            lost_full: 8,
            lost_too_big: 9,
            lost_no_ring: 10,
            lost_corrupt: 11,
        },
        relay_gap: 12,
        relay_refused: 13,
        relay_corrupt: 14,
        relay_retention: 15,
    }
}

fn consumer_stats() -> ConsumerStats {
    ConsumerStats {
        records: 1,
        acked: 2,
        buffered_bytes: 3,
        buffer_limit: 4,
        buffer_full: 5,
        connects: 6,
        resent: 7,
        rings: 8,
    }
}

#[test]
fn lost_sums_every_cause_of_loss() {
    // torn 2 + corrupt 3 + gap 4 + writer 8+9+10+11
    // + relay gap 12, refused 13, corrupt 14, retention 15
    assert_eq!(counters().lost(), 101);
}

#[test]
fn lost_saturates_instead_of_overflowing() {
    // A forged Counters frame must not make a reader panic (debug builds
    // check overflow): the sum stops at u64::MAX.
    let mut c = counters();
    c.relay_refused = u64::MAX;
    c.relay_retention = u64::MAX;
    assert_eq!(c.lost(), u64::MAX);
}

fn all_frames() -> Vec<Frame> {
    let cal = Calibration {
        raw0: 1,
        ns0: 2,
        raw1: 3,
        ns1: 4,
    };
    let mut records = one_record(0);
    records.extend(one_record(1));
    vec![
        Frame::Hello {
            version: VERSION,
            role: Role::Consumer,
            name: "node-1".into(),
            token: None,
        },
        Frame::Hello {
            version: VERSION,
            role: Role::Reader,
            name: "collector".into(),
            token: Some("0123456789abcdef0123".into()),
        },
        Frame::Error {
            code: ErrorCode::Denied,
            message: "no".into(),
        },
        Frame::Welcome {
            version: VERSION,
            name: "relay".into(),
            idle_timeout_ms: 60_000,
        },
        Frame::Heartbeat,
        Frame::ConsumerStats(consumer_stats()),
        Frame::StreamCounters {
            handle: 3,
            counters: counters(),
        },
        Frame::Status,
        Frame::StatusReport(StatusReport {
            relay: "relay".into(),
            uptime_ms: 1234,
            consumers: vec![PeerStatus {
                name: "node-1".into(),
                addr: "127.0.0.1:5555".into(),
                connected_ms: 99,
                consumer: Some(consumer_stats()),
                lag: 0,
            }],
            readers: vec![PeerStatus {
                name: "tail".into(),
                addr: "127.0.0.1:5556".into(),
                connected_ms: 7,
                consumer: None,
                lag: 12345,
            }],
            streams: vec![StreamStatus {
                summary: StreamSummary {
                    key: key(),
                    first: 3,
                    next: 9,
                    closed: false,
                },
                counters: counters(),
                bytes: 4096,
            }],
        }),
        Frame::Error {
            code: ErrorCode::Malformed,
            message: "bad".into(),
        },
        Frame::OpenStream {
            handle: 7,
            key: key(),
            calibration: cal,
        },
        Frame::Records {
            handle: 7,
            first: 100,
            records,
        },
        Frame::Counters {
            handle: 7,
            reader: counters().reader,
            writer: counters().writer,
        },
        Frame::Calibrate {
            handle: 7,
            calibration: cal,
        },
        Frame::CloseStream { handle: 7 },
        Frame::Ack {
            handle: 7,
            next: 102,
        },
        Frame::List,
        Frame::Streams(vec![StreamSummary {
            key: key(),
            first: 0,
            next: 102,
            closed: true,
        }]),
        Frame::Subscribe {
            key: None,
            start: Start::Newest,
        },
        Frame::Subscribe {
            key: Some(key()),
            start: Start::At(55),
        },
        Frame::Announce {
            handle: 1,
            key: key(),
            calibration: cal,
        },
    ]
}

#[test]
fn every_frame_round_trips_through_a_byte_stream() {
    let frames = all_frames();
    let mut bytes = Vec::new();
    for f in &frames {
        f.encode(&mut bytes);
    }
    // Delivered one byte at a time: frames come out whole, in order.
    let mut fb = FrameBuffer::new(DEFAULT_MAX_FRAME);
    let mut got = Vec::new();
    for b in bytes {
        fb.extend(&[b]);
        while let Some(f) = fb.next_frame().unwrap() {
            got.push(f);
        }
    }
    assert_eq!(got, frames);
    assert!(fb.is_empty());
}

#[test]
fn long_strings_are_cut_on_a_character_boundary() {
    let name = "é".repeat(MAX_STRING); // 2 bytes each
    let mut bytes = Vec::new();
    Frame::Welcome {
        version: 1,
        name,
        idle_timeout_ms: 0,
    }
    .encode(&mut bytes);
    match Frame::decode(&bytes[4..]).unwrap() {
        Frame::Welcome { name, .. } => assert_eq!(name.len(), MAX_STRING),
        other => panic!("{other:?}"),
    }
}

#[test]
fn oversized_length_is_refused_before_buffering() {
    let mut fb = FrameBuffer::new(1024);
    fb.extend(&(1_000_000u32).to_be_bytes());
    assert_eq!(fb.next_frame(), Err(WireError::TooLarge(1_000_000, 1024)));
}

#[test]
fn hello_needs_magic_and_records_need_framing() {
    let mut bytes = Vec::new();
    Frame::Hello {
        version: 1,
        role: Role::Reader,
        name: "x".into(),
        token: None,
    }
    .encode(&mut bytes);
    bytes[5] ^= 0xff; // inside the magic
    assert_eq!(Frame::decode(&bytes[4..]), Err(WireError::BadMagic));
    let mut bytes = Vec::new();
    Frame::Records {
        handle: 1,
        first: 0,
        records: vec![0; 16],
    }
    .encode(&mut bytes);
    assert_eq!(
        Frame::decode(&bytes[4..]),
        Err(WireError::Invalid("record framing"))
    );
    assert_eq!(Frame::decode(&[99]), Err(WireError::UnknownKind(99)));
    assert_eq!(
        Frame::decode(&[kind::ACK, 0, 0]),
        Err(WireError::Truncated("handle"))
    );
    assert_eq!(Frame::decode(&[kind::LIST, 0]), Err(WireError::Trailing(1)));
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Frame::decode(&bytes);
        let mut fb = FrameBuffer::new(256);
        fb.extend(&bytes);
        while let Ok(Some(_)) = fb.next_frame() {}
    }

    #[test]
    fn streams_count_cannot_force_a_huge_allocation(n in any::<u32>()) {
        let mut body = vec![kind::STREAMS];
        body.extend_from_slice(&n.to_be_bytes());
        let r = Frame::decode(&body);
        prop_assert!(r.is_err() || n == 0);
    }

    #[test]
    fn status_counts_cannot_force_a_huge_allocation(n in any::<u32>()) {
        let mut body = vec![kind::STATUS_REPORT, 0, 0];
        body.extend_from_slice(&[0; 8]);
        body.extend_from_slice(&n.to_be_bytes());
        let r = Frame::decode(&body);
        prop_assert!(r.is_err());
    }
}

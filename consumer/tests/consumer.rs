//! The consumer against a scripted relay on loopback: everything arrives
//! once, unacknowledged records are re-sent after a reconnect and stay in
//! the rings until acknowledged.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use blkkin::clock::ClockSource;
use blkkin::ring::file::{create_ring, ring_file_name};
use blkkin::ring::header::HeaderInit;
use blkkin::ring::{
    parse_record, Calibration, Kind, RecordIn, RingGeometry, RingInfo, RingWriter, Value,
};
use blkkin::wire::{Frame, FrameBuffer, DEFAULT_MAX_FRAME, VERSION};
use blkkin_consumerd::{Config, Consumer};

/// A ring file of a writer identity (our pid; `alive` picks our real start time).
fn ring(dir: &Path, alive: bool, cpu: u32) -> RingWriter {
    ring_sized(dir, alive, cpu, 64 * 1024)
}

fn ring_sized(dir: &Path, alive: bool, cpu: u32, data_size: u32) -> RingWriter {
    let pid = std::process::id();
    let start = blkkin::process::start_time(pid).unwrap() + u64::from(!alive);
    let info = RingInfo {
        pid,
        uid: 0,
        start_time: start,
        cpu,
        flags: 0,
        data_size,
        max_record: 4096,
        created_ns: 0,
        boot_id: blkkin::process::boot_id(),
    };
    let geo = RingGeometry {
        data_size,
        max_record: 4096,
        overwrite: false,
    };
    create_ring(
        &dir.join(ring_file_name(pid, start, cpu)),
        &HeaderInit {
            info,
            calibration: Calibration::IDENTITY,
        },
        geo,
    )
    .unwrap()
}

fn put(w: &RingWriter, i: i64) -> bool {
    put_with(w, i, b"op", b"127.0.0.1")
}

fn put_with(w: &RingWriter, i: i64, name: &[u8], ip: &[u8]) -> bool {
    w.write(
        ClockSource::Realtime,
        &RecordIn {
            trace_id: 1,
            span_id: 2,
            parent_id: 0,
            port: 1,
            flags: 0,
            kind: Kind::Integer,
            service: name,
            name,
            ip,
            key: name,
            value: Value::Int(i),
        },
    )
    .is_ok()
}

/// What the scripted relay saw: per (pid, cpu) stream, position → value.
type Seen = BTreeMap<(u32, u32), BTreeMap<u64, i64>>;

/// Serves one connection: acks batches unless `ack` says no; stops after
/// `max_batches` batches (closing the connection) if given.
fn serve(sock: TcpStream, seen: &mut Seen, ack: bool, max_batches: Option<usize>) {
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut sock = sock;
    let mut fb = FrameBuffer::new(DEFAULT_MAX_FRAME);
    let mut handles = BTreeMap::new();
    let mut batches = 0;
    let mut buf = [0u8; 65536];
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        while let Some(f) = fb.next_frame().unwrap() {
            match f {
                Frame::Hello { .. } => {
                    let mut out = Vec::new();
                    Frame::Welcome {
                        version: VERSION,
                        name: "fake".into(),
                        idle_timeout_ms: 0,
                    }
                    .encode(&mut out);
                    sock.write_all(&out).unwrap();
                }
                Frame::OpenStream { handle, key, .. } => {
                    handles.insert(handle, (key.pid, key.cpu));
                }
                Frame::Records {
                    handle,
                    first,
                    records,
                } => {
                    assert!(
                        records.len() <= blkkin_consumerd::FRAME_CHUNK,
                        "the consumer sends at most FRAME_CHUNK bytes per frame"
                    );
                    let stream = seen.entry(handles[&handle]).or_default();
                    let mut at = 0;
                    let mut pos = first;
                    while at < records.len() {
                        let len = u64::from_le_bytes(records[at..at + 8].try_into().unwrap()) >> 8
                            & 0xffff;
                        let r = parse_record(&records[at..at + len as usize], Kind::Integer as u64)
                            .unwrap();
                        let Value::Int(v) = r.value else { panic!() };
                        stream.insert(pos, v);
                        pos += 1;
                        at += len as usize;
                    }
                    batches += 1;
                    if ack {
                        let mut out = Vec::new();
                        Frame::Ack { handle, next: pos }.encode(&mut out);
                        sock.write_all(&out).unwrap();
                    }
                    if max_batches == Some(batches) {
                        return;
                    }
                }
                _ => {}
            }
        }
        match sock.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => fb.extend(&buf[..n]),
            Err(_) => {}
        }
    }
}

/// A scripted relay acknowledging everything on one connection; reports
/// what it saw when the connection closes.
fn acking_relay() -> (String, mpsc::Receiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = Seen::new();
        let (sock, _) = listener.accept().unwrap();
        serve(sock, &mut seen, true, None);
        tx.send(seen).unwrap();
    });
    (addr, rx)
}

fn run_until(consumer: &mut Consumer, mut done: impl FnMut(&Consumer) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done(consumer) {
        assert!(
            Instant::now() < deadline,
            "timed out: {:?}",
            consumer.stats()
        );
        let d = consumer.step().unwrap();
        std::thread::sleep(d.min(Duration::from_millis(5)));
    }
}

#[test]
fn every_record_arrives_once_and_space_is_freed_on_ack() {
    let d = tempfile::tempdir().unwrap();
    let w0 = ring(d.path(), true, 0);
    let w1 = ring(d.path(), true, 1);
    let (addr, rx) = acking_relay();
    let mut c = Consumer::new(Config::new(d.path().to_owned(), addr));
    // More records than one ring holds: only acknowledgements free space.
    let mut written = 0i64;
    let deadline = Instant::now() + Duration::from_secs(10);
    while written < 3000 {
        assert!(Instant::now() < deadline);
        while written < 3000 && put(if written % 2 == 0 { &w0 } else { &w1 }, written) {
            written += 1;
        }
        c.step().unwrap();
    }
    run_until(&mut c, |c| c.stats().acked == 3000);
    drop(c); // closes the connection: the fake relay reports
    let seen = rx.recv().unwrap();
    let mut values: Vec<i64> = seen.values().flat_map(|s| s.values().copied()).collect();
    values.sort();
    assert_eq!(values, (0..3000).collect::<Vec<_>>());
    for s in seen.values() {
        let positions: Vec<u64> = s.keys().copied().collect();
        assert_eq!(
            positions,
            (0..positions.len() as u64).collect::<Vec<_>>(),
            "consecutive positions"
        );
    }
}

#[test]
fn large_records_are_split_into_frames_the_relay_accepts() {
    // 8000 records of ~1 KiB (four 250-byte strings) in one ring: one poll
    // drains 4096 of them, ~4.3 MB for one stream, over the relay's 4 MiB
    // frame limit (and over FRAME_CHUNK).
    let d = tempfile::tempdir().unwrap();
    let w = ring_sized(d.path(), false, 0, 16 << 20);
    let long = vec![b'n'; 250];
    for i in 0..8000 {
        assert!(put_with(&w, i, &long, &long));
    }
    let (addr, rx) = acking_relay(); // panics on a frame over the limit
    let mut c = Consumer::new(Config::new(d.path().to_owned(), addr));
    run_until(&mut c, |c| c.stats().acked == 8000);
    drop(c);
    let seen = rx.recv().unwrap();
    let s = seen.values().next().unwrap();
    assert_eq!(s.len(), 8000);
    assert!(
        s.iter().all(|(p, v)| *p as i64 == *v),
        "positions match values"
    );
}

#[test]
fn unacknowledged_batches_are_resent_after_a_reconnect() {
    let d = tempfile::tempdir().unwrap();
    let w = ring(d.path(), false, 0); // an exited writer
    for i in 0..500 {
        assert!(put(&w, i));
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = Seen::new();
        // First connection: take one batch without acknowledging, then drop.
        let (sock, _) = listener.accept().unwrap();
        serve(sock, &mut seen, false, Some(1));
        let first = seen.values().map(|s| s.len()).sum::<usize>();
        // Second connection: acknowledge everything.
        let (sock, _) = listener.accept().unwrap();
        serve(sock, &mut seen, true, None);
        tx.send((first, seen)).unwrap();
    });
    let mut c = Consumer::new(Config::new(d.path().to_owned(), addr));
    run_until(&mut c, |c| c.stats().acked == 500);
    // The exited writer's ring is removed once everything was acknowledged.
    run_until(&mut c, |_| {
        blkkin::ring::file::list_rings(d.path()).unwrap().is_empty()
    });
    assert!(
        c.stats().connects >= 2 && c.stats().resent >= 1,
        "{:?}",
        c.stats()
    );
    drop(c);
    let (first, seen) = rx.recv().unwrap();
    assert!(
        first > 0,
        "the first connection got records it never acknowledged"
    );
    let s = seen.values().next().unwrap();
    assert_eq!(
        s.len(),
        500,
        "re-sent positions land on the same keys: no duplicates, no holes"
    );
    assert!(s.iter().all(|(p, v)| *p as i64 == *v));
}

#[test]
fn without_a_relay_records_wait_in_the_rings() {
    let d = tempfile::tempdir().unwrap();
    let w = ring(d.path(), true, 0);
    for i in 0..100 {
        assert!(put(&w, i));
    }
    // Nothing listens on this port.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut c = Consumer::new(Config::new(
        d.path().to_owned(),
        format!("127.0.0.1:{port}"),
    ));
    for _ in 0..20 {
        c.step().unwrap();
    }
    assert_eq!(c.stats().records, 100);
    assert_eq!(c.stats().acked, 0);
    // A fresh peeking reader still finds all 100 in the ring: nothing was freed.
    let path = blkkin::ring::file::list_rings(d.path()).unwrap().remove(0);
    let mut r = blkkin::ring::RingReader::open(&path, blkkin::ring::ReadMode::Peek).unwrap();
    let mut n = 0;
    r.drain(1000, |_| n += 1);
    assert_eq!(n, 100);
}

#[test]
fn stopping_drains_and_waits_for_acks_but_not_for_live_writers() {
    let d = tempfile::tempdir().unwrap();
    let w = ring(d.path(), true, 0); // a writer that keeps running
    for i in 0..200 {
        assert!(put(&w, i));
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let mut seen = Seen::new();
        let (sock, _) = listener.accept().unwrap();
        serve(sock, &mut seen, true, None);
    });
    let mut c = Consumer::new(Config::new(d.path().to_owned(), addr));
    // Told to stop before it started: it still drains and flushes.
    let stop = std::sync::atomic::AtomicBool::new(true);
    let t0 = Instant::now();
    let stats = c.run(&stop, Duration::from_secs(20)).unwrap();
    assert_eq!((stats.records, stats.acked), (200, 200));
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "waited {:?} for a writer that does not exit",
        t0.elapsed()
    );
}

/// Serves one connection of a scripted relay: a Welcome to the Hello, then
/// `answer` for every other frame (an answer and whether to close after
/// it, or nothing). Returns when the consumer hangs up or after a close.
fn script(mut sock: TcpStream, name: &str, mut answer: impl FnMut(Frame) -> Option<(Frame, bool)>) {
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut fb = FrameBuffer::new(DEFAULT_MAX_FRAME);
    let mut buf = [0u8; 65536];
    loop {
        let n = match sock.read(&mut buf) {
            Ok(0) | Err(_) => return, // the consumer hung up
            Ok(n) => n,
        };
        fb.extend(&buf[..n]);
        while let Some(f) = fb.next_frame().unwrap() {
            let (reply, close) = match f {
                Frame::Hello { .. } => (
                    Frame::Welcome {
                        version: VERSION,
                        name: name.into(),
                        idle_timeout_ms: 0,
                    },
                    false,
                ),
                other => match answer(other) {
                    Some(a) => a,
                    None => continue,
                },
            };
            let mut out = Vec::new();
            reply.encode(&mut out);
            let _ = sock.write_all(&out);
            if close {
                return;
            }
        }
    }
}

/// A relay that acknowledges positions it was never sent (a hijacked stream
/// or a relay that is not ours) releases nothing: the consumer drops the
/// connection, counts it, and a sane relay later gets every record.
#[test]
fn an_ack_beyond_what_was_sent_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let w = ring(d.path(), false, 0); // an exited writer
    for i in 0..100 {
        assert!(put(&w, i));
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let (sock, _) = listener.accept().unwrap();
        script(sock, "liar", |f| match f {
            Frame::OpenStream { handle, .. } => Some((Frame::Ack { handle, next: 0 }, false)),
            Frame::Records { handle, .. } => Some((
                Frame::Ack {
                    handle,
                    next: 1 << 62,
                },
                false,
            )),
            _ => None,
        });
        let mut seen = Seen::new();
        let (sock, _) = listener.accept().unwrap();
        serve(sock, &mut seen, true, None);
        tx.send(seen).unwrap();
    });
    let mut c = Consumer::new(Config::new(d.path().to_owned(), addr));
    run_until(&mut c, |c| c.stats().bad_acks >= 1);
    assert_eq!(c.stats().acked, 0, "nothing released on the lying ack");
    run_until(&mut c, |c| c.stats().acked == 100);
    drop(c);
    let seen = rx.recv().unwrap();
    assert_eq!(seen.values().next().unwrap().len(), 100);
}

/// A relay that accepts connections but fails every write (a full disk
/// answers Unavailable) is retried with a growing wait, and the records stay
/// in the ring for when it recovers.
#[test]
fn a_relay_failing_every_write_is_retried_with_exponential_backoff() {
    let d = tempfile::tempdir().unwrap();
    let w = ring(d.path(), true, 0);
    for i in 0..50 {
        assert!(put(&w, i));
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for sock in listener.incoming() {
            let Ok(sock) = sock else { return };
            script(sock, "full", |f| match f {
                Frame::OpenStream { handle, .. } => Some((Frame::Ack { handle, next: 0 }, false)),
                Frame::Records { .. } => Some((
                    Frame::Error {
                        code: blkkin::wire::ErrorCode::Unavailable,
                        message: "No space left on device (os error 28)".into(),
                    },
                    true,
                )),
                _ => None,
            });
        }
    });
    let mut cfg = Config::new(d.path().to_owned(), addr);
    cfg.max_backoff = Duration::from_millis(800);
    let mut c = Consumer::new(cfg);
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(2500) {
        let wait = c.step().unwrap();
        std::thread::sleep(wait.min(Duration::from_millis(5)));
    }
    // 100 + 200 + 400 + 800 + 800 ms: about 5 attempts in 2.5 s (a fixed
    // 100 ms retry would make ~25).
    let s = c.stats();
    assert!((3..=8).contains(&s.connects), "{s:?}");
    assert_eq!(s.acked, 0);
    assert_eq!(
        s.records, 50,
        "still held, to be sent when the relay recovers"
    );
}

#[test]
fn a_ring_directory_that_is_a_symlink_or_foreign_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let real = d.path().join("rings");
    std::fs::create_dir(&real).unwrap();
    blkkin_consumerd::check_ring_dir(&real).expect("our own directory");
    blkkin_consumerd::check_ring_dir(&d.path().join("not-yet")).expect("created later");
    let link = d.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let e = blkkin_consumerd::check_ring_dir(&link).unwrap_err();
    assert!(format!("{e:#}").contains("symbolic link"), "{e:#}");
    let stop = std::sync::atomic::AtomicBool::new(true);
    let mut c = Consumer::new(Config::new(link, "127.0.0.1:1".into()));
    assert!(
        c.run(&stop, Duration::from_secs(1)).is_err(),
        "run refuses it too"
    );
    // Another user's directory (needs root to make one).
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let foreign = d.path().join("foreign");
        std::fs::create_dir(&foreign).unwrap();
        std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).unwrap();
        let e = blkkin_consumerd::check_ring_dir(&foreign).unwrap_err();
        assert!(format!("{e:#}").contains("belongs to uid 65534"), "{e:#}");
    } else {
        eprintln!("SKIPPED the foreign-owner case: needs root");
    }
}

//! Writer/reader tests on in-process rings (these also run under Miri).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::clock::ClockSource;

use super::header::{write_header, Calibration, HeaderInit, RingInfo};
use super::layout::{self, commit_word, join_head, off, split_head, Kind};
use super::mem::RingMem;
use super::reader::{DrainEnd, ReadMode, RingReader, WriterCheck};
use super::record::{parse_record, RecordError};
use super::writer::{RecordIn, RingGeometry, RingWriter, Value, WriteError};

const SMALL: u32 = 64 * 1024;

fn new_ring(data_size: u32, overwrite: bool) -> (RingWriter, RingReader) {
    let mem = RingMem::heap(layout::HEADER_SIZE + data_size as usize);
    let geo = RingGeometry {
        data_size,
        max_record: 4096,
        overwrite,
    };
    let info = RingInfo {
        pid: 1,
        uid: 0,
        start_time: 0,
        cpu: 0,
        flags: if overwrite { layout::FLAG_OVERWRITE } else { 0 },
        data_size,
        max_record: 4096,
        created_ns: 0,
        boot_id: [0; 16],
    };
    write_header(
        &mem,
        &HeaderInit {
            info,
            calibration: Calibration::IDENTITY,
        },
    );
    let reader_mem = mem.share().unwrap();
    let w = RingWriter::new(mem, geo);
    let mut r = RingReader::from_mem(reader_mem, ReadMode::Consume).unwrap();
    r.set_writer_check(WriterCheck::Assume(true));
    (w, r)
}

fn rec<'a>(thread: u64, seq: u64, value: &'a [u8]) -> RecordIn<'a> {
    RecordIn {
        trace_id: thread + 1,
        span_id: seq,
        parent_id: 7,
        port: 6800,
        flags: 0,
        kind: Kind::String,
        service: b"osd.0",
        name: b"osd_op",
        ip: b"10.0.0.1",
        key: b"object",
        value: Value::Str(value),
    }
}

/// Drains everything, returning (trace_id, span_id, value) triples.
fn drain_all(r: &mut RingReader) -> Vec<(u64, u64, Vec<u8>)> {
    let mut out = Vec::new();
    loop {
        let end = r.drain(usize::MAX, |rec| {
            let v = match rec.value {
                Value::Str(s) => s.to_vec(),
                Value::Int(i) => i.to_le_bytes().to_vec(),
                Value::None => Vec::new(),
            };
            out.push((rec.trace_id, rec.span_id, v));
        });
        r.release();
        if end != DrainEnd::Limit {
            return out;
        }
    }
}

#[test]
fn round_trips_every_kind() {
    let (w, mut r) = new_ring(SMALL, false);
    let base = rec(0, 1, b"");
    w.write(
        ClockSource::Realtime,
        &RecordIn {
            kind: Kind::Event,
            key: b"cs",
            value: Value::None,
            ..base
        },
    )
    .unwrap();
    w.write(
        ClockSource::Realtime,
        &RecordIn {
            kind: Kind::String,
            key: b"k",
            value: Value::Str(b"v"),
            ..base
        },
    )
    .unwrap();
    w.write(
        ClockSource::Realtime,
        &RecordIn {
            kind: Kind::Integer,
            key: b"n",
            value: Value::Int(-42),
            ..base
        },
    )
    .unwrap();
    let mut got = Vec::new();
    assert_eq!(
        r.drain(10, |x| got.push((
            x.kind,
            x.key.to_vec(),
            x.value == Value::Int(-42),
            x.seq
        ))),
        DrainEnd::CaughtUp
    );
    assert_eq!(
        got,
        vec![
            (Kind::Event, b"cs".to_vec(), false, 0),
            (Kind::String, b"k".to_vec(), false, 1),
            (Kind::Integer, b"n".to_vec(), true, 2),
        ]
    );
    let mut one = None;
    let (w2, mut r2) = new_ring(SMALL, false);
    w2.write(ClockSource::Realtime, &rec(3, 9, b"val")).unwrap();
    r2.drain(1, |x| {
        one = Some((
            x.trace_id,
            x.span_id,
            x.parent_id,
            x.port,
            x.service.to_vec(),
            x.name.to_vec(),
            x.ip.to_vec(),
        ))
    });
    assert_eq!(
        one,
        Some((
            4,
            9,
            7,
            6800,
            b"osd.0".to_vec(),
            b"osd_op".to_vec(),
            b"10.0.0.1".to_vec()
        ))
    );
    assert_eq!(r.stats().read, 3);
}

#[test]
fn wraps_around_many_times_in_order() {
    let (w, mut r) = new_ring(SMALL, false);
    let n = if cfg!(miri) { 1000 } else { 50_000 };
    let payload = vec![b'x'; 300];
    let mut next = 0u64;
    let mut seen = Vec::new();
    while next < n {
        // Variable sizes so padding lands at different places on each lap.
        let len = (next as usize * 37) % 300;
        match w.write(ClockSource::Realtime, &rec(0, next, &payload[..len])) {
            Ok(_) => next += 1,
            Err(WriteError::Full) => seen.extend(drain_all(&mut r)),
            Err(e) => panic!("{e}"),
        }
    }
    seen.extend(drain_all(&mut r));
    assert_eq!(seen.len() as u64, n);
    for (i, (_, span, v)) in seen.iter().enumerate() {
        assert_eq!(*span, i as u64);
        assert_eq!(v.len(), (i * 37) % 300);
    }
    let c = r.writer_counters();
    assert_eq!(c.written, n);
    assert_eq!(r.stats().gap + r.stats().torn + r.stats().corrupt, 0);
}

#[test]
fn discards_and_counts_when_full() {
    let (w, mut r) = new_ring(SMALL, false);
    let mut ok = 0u64;
    let attempts = if cfg!(miri) { 1500 } else { 5000u64 };
    for i in 0..attempts {
        if w.write(ClockSource::Realtime, &rec(0, i, b"some value"))
            .is_ok()
        {
            ok += 1;
        }
    }
    let c = r.writer_counters();
    assert!(ok < attempts);
    assert_eq!(c.lost_full, attempts - ok);
    let read = drain_all(&mut r).len() as u64;
    assert_eq!(read, ok);
    assert_eq!(read + c.lost(), attempts);
    // Space comes back after release.
    assert!(w.write(ClockSource::Realtime, &rec(0, 0, b"again")).is_ok());
}

#[test]
fn two_phase_release_frees_only_acknowledged_space() {
    let (w, mut r) = new_ring(SMALL, false);
    let fill = |w: &RingWriter| {
        (0..)
            .take_while(|i| w.write(ClockSource::Realtime, &rec(0, *i, b"v")).is_ok())
            .count()
    };
    let first = fill(&w);
    assert!(first > 0);
    // Drain half, remember the cursor (as if sent), drain the rest.
    let mut n = 0;
    r.drain(first / 2, |_| n += 1);
    let half = r.cursor();
    r.drain(usize::MAX, |_| n += 1);
    assert_eq!(n, first);
    assert_eq!(half.seq, (first / 2) as u64);
    // Nothing acknowledged yet: still full.
    assert_eq!(fill(&w), 0);
    // The first half is acknowledged: about half the space comes back.
    r.release_to(half);
    let again = fill(&w);
    assert!(again > 0 && again <= first / 2 + 1, "{again} of {first}");
    // A stale cursor (behind the tail) changes nothing.
    r.release_to(half);
    assert_eq!(fill(&w), 0);
    // Releasing everything drained so far.
    r.release();
    assert!(fill(&w) > 0);
}

#[test]
fn too_big_records_are_dropped_and_counted() {
    let (w, r) = new_ring(SMALL, false);
    let big = vec![0u8; 5000];
    assert_eq!(
        w.write(ClockSource::Realtime, &rec(0, 0, &big)),
        Err(WriteError::TooBig)
    );
    let long_key = vec![b'k'; 256];
    assert_eq!(
        w.write(
            ClockSource::Realtime,
            &RecordIn {
                key: &long_key,
                ..rec(0, 0, b"")
            }
        ),
        Err(WriteError::TooBig)
    );
    assert_eq!(r.writer_counters().lost_too_big, 2);
}

#[test]
fn overwrite_mode_keeps_newest_and_counts_the_rest() {
    let (w, mut r) = new_ring(SMALL, true);
    let n = if cfg!(miri) { 2000 } else { 20_000 };
    for i in 0..n {
        w.write(ClockSource::Realtime, &rec(0, i, b"flight recorder"))
            .unwrap();
    }
    let got = drain_all(&mut r);
    let s = r.stats();
    assert!(!got.is_empty() && (got.len() as u64) < n);
    assert_eq!(got.last().unwrap().1, n - 1, "newest record survives");
    assert!(
        got.windows(2).all(|p| p[1].1 == p[0].1 + 1),
        "contiguous after the jump"
    );
    assert_eq!(s.read + s.gap, n, "every record is either read or counted");
    assert_eq!(r.writer_counters().written, n);
}

/// Simulates a writer that died after reserving: head moved, commit word left
/// `reserved` (or never written at all).
pub(crate) fn fake_dead_reservation(w: &RingWriter, len: u32, write_word: bool) {
    let head = w.mem().word(off::HEAD);
    let (count, offset) = split_head(head.load(Ordering::Relaxed));
    if write_word {
        let at = layout::HEADER_SIZE + (offset & (SMALL - 1)) as usize;
        w.mem().word(at).store(
            commit_word(layout::STATE_RESERVED, 1, len, offset),
            Ordering::Relaxed,
        );
    }
    head.store(join_head(count + 1, offset + len), Ordering::Relaxed);
}

#[test]
fn torn_record_of_dead_writer_is_skipped_and_counted() {
    let (w, mut r) = new_ring(SMALL, false);
    w.write(ClockSource::Realtime, &rec(0, 0, b"a")).unwrap();
    fake_dead_reservation(&w, 80, true);
    w.write(ClockSource::Realtime, &rec(0, 2, b"c")).unwrap();
    let mut got = Vec::new();
    assert_eq!(r.drain(10, |x| got.push(x.span_id)), DrainEnd::InProgress);
    assert_eq!(got, vec![0]);
    r.set_writer_check(WriterCheck::Assume(false));
    assert_eq!(r.drain(10, |x| got.push(x.span_id)), DrainEnd::CaughtUp);
    assert_eq!(got, vec![0, 2]);
    assert_eq!(r.stats().torn, 1);
    assert_eq!(r.stats().gap, 0);
}

#[test]
fn writer_dead_before_announcing_is_resynced_and_counted() {
    let (w, mut r) = new_ring(SMALL, false);
    w.write(ClockSource::Realtime, &rec(0, 0, b"a")).unwrap();
    fake_dead_reservation(&w, 80, false);
    w.write(ClockSource::Realtime, &rec(0, 2, b"c")).unwrap();
    r.set_writer_check(WriterCheck::Assume(false));
    let mut got = Vec::new();
    assert_eq!(r.drain(10, |x| got.push(x.span_id)), DrainEnd::CaughtUp);
    assert_eq!(got, vec![0, 2]);
    assert_eq!(r.stats().gap, 1);
    assert_eq!(r.stats().resyncs, 1);
}

#[test]
fn stalled_live_writer_is_skipped_after_timeout() {
    let (w, mut r) = new_ring(SMALL, false);
    fake_dead_reservation(&w, 80, true);
    w.write(ClockSource::Realtime, &rec(0, 1, b"b")).unwrap();
    r.set_stall_timeout(std::time::Duration::ZERO);
    let mut got = Vec::new();
    assert_eq!(r.drain(10, |x| got.push(x.span_id)), DrainEnd::InProgress); // starts the clock
    assert_eq!(r.drain(10, |x| got.push(x.span_id)), DrainEnd::CaughtUp);
    assert_eq!(got, vec![1]);
    assert_eq!(r.stats().torn, 1);
}

#[test]
fn corrupt_body_is_counted_not_delivered() {
    let (w, mut r) = new_ring(SMALL, false);
    w.write(ClockSource::Realtime, &rec(0, 0, b"a")).unwrap();
    w.write(ClockSource::Realtime, &rec(0, 1, b"b")).unwrap();
    // Make the first record's key length overrun its record.
    let at = layout::HEADER_SIZE + layout::rec::LEN_NAME;
    let word = w.mem().word(at);
    word.store(word.load(Ordering::Relaxed) | 0xff << 16, Ordering::Relaxed);
    let mut got = Vec::new();
    r.drain(10, |x| got.push(x.span_id));
    assert_eq!(got, vec![1]);
    assert_eq!(r.stats().corrupt, 1);
}

#[test]
fn concurrent_writers_and_reader_lose_nothing_silently() {
    let threads = 4u64;
    let per_thread = if cfg!(miri) { 200 } else { 100_000 };
    let (w, mut r) = new_ring(SMALL, false);
    let w = Arc::new(w);
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut last = vec![None::<u64>; threads as usize];
            let mut read = 0u64;
            loop {
                let finished = done.load(Ordering::Acquire);
                r.drain(usize::MAX, |x| {
                    let t = (x.trace_id - 1) as usize;
                    if let Some(prev) = last[t] {
                        assert!(x.span_id > prev, "per-thread order, no duplicates");
                    }
                    assert_eq!(x.value, Value::Str(&x.span_id.to_le_bytes()), "untorn");
                    last[t] = Some(x.span_id);
                    read += 1;
                });
                r.release();
                if finished {
                    return (read, r.writer_counters(), r.stats());
                }
                std::thread::yield_now();
            }
        })
    };
    let writers: Vec<_> = (0..threads)
        .map(|t| {
            let w = w.clone();
            std::thread::spawn(move || {
                let mut lost = 0u64;
                for i in 0..per_thread {
                    if w.write(ClockSource::Realtime, &rec(t, i, &i.to_le_bytes()))
                        .is_err()
                    {
                        lost += 1;
                    }
                }
                lost
            })
        })
        .collect();
    let lost: u64 = writers.into_iter().map(|h| h.join().unwrap()).sum();
    done.store(true, Ordering::Release);
    let (read, counters, stats) = reader.join().unwrap();
    assert_eq!(counters.lost_full, lost);
    assert_eq!(read + counters.lost(), threads * per_thread);
    assert_eq!(counters.written, read);
    assert_eq!(stats.gap + stats.torn + stats.corrupt, 0);
}

mod hostile {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: if cfg!(miri) { 4 } else { 256 }, ..ProptestConfig::default() })]

        /// Arbitrary words written anywhere in the ring (header included),
        /// between and after valid records: the reader never panics, never
        /// loops forever, and never delivers more records than were reserved
        /// plus what the corruption could forge.
        #[test]
        fn reader_survives_arbitrary_corruption(
            records in 0usize..200,
            pokes in proptest::collection::vec((0usize..(layout::HEADER_SIZE + SMALL as usize) / 8, any::<u64>()), 0..64),
            alive in any::<bool>(),
            overwrite in any::<bool>(),
        ) {
            let (w, mut r) = new_ring(SMALL, overwrite);
            for i in 0..records {
                let _ = w.write(ClockSource::Realtime, &rec(0, i as u64, b"payload"));
            }
            for (word, value) in &pokes {
                w.mem().word(word * 8).store(*value, Ordering::Relaxed);
            }
            r.set_writer_check(WriterCheck::Assume(alive));
            r.set_stall_timeout(std::time::Duration::ZERO);
            for _ in 0..4 {
                r.drain(100_000, |x| { let _ = (x.key, x.value); });
                r.release();
            }
            // Writers keep working on a corrupted ring, too.
            let _ = w.write(ClockSource::Realtime, &rec(0, 0, b"after"));
            r.drain(100_000, |_| {});
        }

        /// A reader opened on a header with arbitrary words either refuses it
        /// or reads it without panicking.
        #[test]
        fn header_corruption_is_refused_or_survived(pokes in proptest::collection::vec((0usize..64, any::<u64>()), 1..16)) {
            let (w, _r) = new_ring(SMALL, false);
            w.write(ClockSource::Realtime, &rec(0, 1, b"x")).unwrap();
            for (word, value) in &pokes {
                w.mem().word(word * 8).store(*value, Ordering::Relaxed);
            }
            if let Ok(mut r) = RingReader::from_mem(w.mem().share().unwrap(), ReadMode::Peek) {
                r.set_writer_check(WriterCheck::Assume(false));
                r.drain(100_000, |_| {});
                let _ = r.calibration().map(|c| c.to_unix_ns(12345));
                let _ = r.writer_counters();
            }
        }
    }
}

/// The same hostility, through real files and mappings (not under Miri,
/// which has no mmap).
#[cfg(not(miri))]
mod hostile_files {
    use super::*;
    use crate::ring::file::create_ring;
    use proptest::prelude::*;
    use std::io::{Seek, SeekFrom, Write};

    fn drain_both_ways(path: &std::path::Path) {
        for mode in [ReadMode::Peek, ReadMode::Consume] {
            if let Ok(mut r) = RingReader::open(path, mode) {
                r.set_writer_check(WriterCheck::Assume(false));
                r.drain(1_000_000, |x| {
                    let _ = (x.key, x.value, x.service);
                });
                r.release();
                let _ = (r.writer_counters(), r.stats(), r.calibration());
            }
        }
    }

    #[test]
    fn truncation_under_an_open_reader_is_detected_not_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1-1.cpu0.ring");
        let info = RingInfo {
            pid: 1,
            uid: 0,
            start_time: 1,
            cpu: 0,
            flags: 0,
            data_size: SMALL,
            max_record: 4096,
            created_ns: 0,
            boot_id: [0; 16],
        };
        let geo = RingGeometry {
            data_size: SMALL,
            max_record: 4096,
            overwrite: false,
        };
        let w = create_ring(
            &path,
            &HeaderInit {
                info,
                calibration: Calibration::IDENTITY,
            },
            geo,
        )
        .unwrap();
        for i in 0..100 {
            w.write(ClockSource::Realtime, &rec(0, i, b"v")).unwrap();
        }
        let mut r = RingReader::open(&path, ReadMode::Consume).unwrap();
        assert!(!r.truncated());
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(0)
            .unwrap();
        assert!(r.truncated());
        let mut n = 0;
        assert_eq!(r.drain(1000, |_| n += 1), DrainEnd::Truncated);
        assert_eq!(n, 0);
        drop(w);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_file_contents(bytes in proptest::collection::vec(any::<u8>(), 0..(layout::HEADER_SIZE + 2 * SMALL as usize))) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("1-1.cpu0.ring");
            std::fs::write(&path, &bytes).unwrap();
            drain_both_ways(&path);
        }

        #[test]
        fn valid_ring_file_with_arbitrary_pokes(
            records in 0u64..500,
            pokes in proptest::collection::vec((0u64..(layout::HEADER_SIZE as u64 + SMALL as u64), any::<[u8; 8]>()), 1..40),
            truncate_to in proptest::option::of(0u64..(layout::HEADER_SIZE as u64 + SMALL as u64)),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("1-1.cpu0.ring");
            let info = RingInfo {
                pid: 1, uid: 0, start_time: 1, cpu: 0, flags: 0, data_size: SMALL,
                max_record: 4096, created_ns: 0, boot_id: [0; 16],
            };
            let geo = RingGeometry { data_size: SMALL, max_record: 4096, overwrite: false };
            let w = create_ring(&path, &HeaderInit { info, calibration: Calibration::IDENTITY }, geo).unwrap();
            for i in 0..records {
                let _ = w.write(ClockSource::Realtime, &rec(0, i, b"value"));
            }
            let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            for (at, bytes) in &pokes {
                f.seek(SeekFrom::Start(*at)).unwrap();
                f.write_all(bytes).unwrap();
            }
            if let Some(len) = truncate_to {
                f.set_len(len).unwrap(); // a ring file cut short under the reader
            }
            drop(w);
            drain_both_ways(&path);
        }
    }
}

#[test]
fn a_span_record_carries_its_start_and_end_and_reads_as_two_events() {
    let (w, mut r) = new_ring(SMALL, false);
    let start = crate::clock::now_raw(ClockSource::Realtime);
    // Kind, key and value of the input are ignored for a span.
    let end = w
        .write_span(ClockSource::Realtime, &rec(0, 5, b"ignored"), start)
        .unwrap();
    assert!(end >= start);
    let info = r.info().clone();
    let cal = r.calibration();
    let mut got = Vec::new();
    r.drain(10, |x| {
        assert_eq!(
            (x.kind, x.timestamp_raw, x.end_raw),
            (Kind::Span, start, end)
        );
        assert_eq!((x.key, x.value), (&b""[..], Value::None));
        assert_eq!(x.raw.len(), layout::record_len(5 + 6 + 8 + 8));
        got.extend(crate::annotation::Annotation::from_record(
            x,
            &info,
            cal.as_ref(),
        ));
    });
    let shown: Vec<_> = got
        .iter()
        .map(|a| (a.kind, a.key.clone(), a.value.clone(), a.timestamp))
        .collect();
    let text = |s: &str| crate::annotation::AnnotationValue::Text(s.into());
    assert_eq!(
        shown,
        vec![
            (Kind::Event, None, text("start"), Some(start / 1000)),
            (Kind::Event, None, text("end"), Some(end / 1000)),
        ]
    );
    assert!(got.iter().all(|a| a.name == "osd_op" && a.id == got[0].id));
}

#[test]
fn span_records_of_the_wrong_shape_are_errors() {
    let (w, _r) = new_ring(SMALL, false);
    // A well-formed span record, then its value and key lengths altered.
    w.write_span(ClockSource::Realtime, &rec(0, 1, b""), 1)
        .unwrap();
    let len = layout::record_len(5 + 6 + 8 + 8);
    let mut words = vec![0u64; len / 8];
    w.mem().read_words(layout::HEADER_SIZE, &mut words);
    let bytes: Vec<u8> = words.iter().flat_map(|x| x.to_le_bytes()).collect();
    let kind = Kind::Span as u64;
    assert!(parse_record(&bytes, kind).is_ok());
    let mut short = bytes.clone();
    short[layout::rec::LEN_VALUE] = 4;
    assert_eq!(
        parse_record(&short, kind),
        Err(RecordError::SpanShape(4, 0))
    );
    let mut keyed = bytes.clone();
    keyed[layout::rec::LEN_KEY] = 3; // 3 bytes of key before the 8 of value

    assert_eq!(
        parse_record(&keyed, kind),
        Err(RecordError::SpanShape(8, 3))
    );
}

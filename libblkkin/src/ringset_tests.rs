//! Unit tests of `ringset` (kept apart: the module itself is long enough).
use super::*;
use crate::clock::ClockSource;
use crate::ring::file::{create_ring, ring_file_name};
use crate::ring::header::HeaderInit;
use crate::ring::layout::{self, Kind};
use crate::ring::writer::{RecordIn, RingGeometry, RingWriter, Value, WriteError};

const SMALL: u32 = 64 * 1024;

fn me() -> (u32, u64) {
    let pid = std::process::id();
    (pid, process::start_time(pid).unwrap())
}

/// An identity that is not running: our pid with another start time.
fn dead() -> (u32, u64) {
    let (pid, start) = me();
    (pid, start + 1)
}

fn ring(dir: &Path, (pid, start_time): (u32, u64), cpu: u32) -> RingWriter {
    ring_named(
        dir,
        (pid, start_time),
        cpu,
        &ring_file_name(pid, start_time, cpu),
    )
}

fn ring_named(dir: &Path, (pid, start_time): (u32, u64), cpu: u32, name: &str) -> RingWriter {
    let info = RingInfo {
        pid,
        uid: 0,
        start_time,
        cpu,
        flags: 0,
        data_size: SMALL,
        max_record: 4096,
        created_ns: crate::clock::realtime_ns(),
        boot_id: process::boot_id(),
    };
    let geo = RingGeometry {
        data_size: SMALL,
        max_record: 4096,
        overwrite: false,
    };
    let init = HeaderInit {
        info,
        calibration: Calibration::IDENTITY,
    };
    create_ring(&dir.join(name), &init, geo).unwrap()
}

fn put(w: &RingWriter, i: i64) -> Result<u64, WriteError> {
    w.write(
        ClockSource::Realtime,
        &RecordIn {
            trace_id: 1,
            span_id: 2,
            parent_id: 0,
            port: 1,
            flags: 0,
            kind: Kind::Integer,
            service: b"svc",
            name: b"span",
            ip: b"127.0.0.1",
            key: b"i",
            value: Value::Int(i),
        },
    )
}

/// Polls once, collecting (ring, value) pairs.
fn poll(rs: &mut RingSet, out: &mut Vec<(RingId, i64)>) -> PollStats {
    rs.poll(&mut |id, r, info, cal| {
        assert_eq!(RingId::of_info(info), *id);
        assert!(cal.is_some());
        match r.value {
            Value::Int(i) => out.push((*id, i)),
            v => panic!("unexpected value {v:?}"),
        }
    })
    .unwrap()
}

fn opts() -> RingSetOptions {
    RingSetOptions {
        liveness_interval: Duration::ZERO,
        ..RingSetOptions::default()
    }
}

#[test]
#[cfg_attr(miri, ignore)]
fn drains_and_removes_rings_of_exited_processes() {
    let d = tempfile::tempdir().unwrap();
    let (w0, w1) = (ring(d.path(), dead(), 0), ring(d.path(), dead(), 1));
    for i in 0..10 {
        put(if i % 2 == 0 { &w0 } else { &w1 }, i).unwrap();
    }
    let mut rs = RingSet::new(d.path().to_owned(), opts());
    let mut out = Vec::new();
    let st = poll(&mut rs, &mut out);
    assert_eq!((st.records, st.rings_added, st.rings_removed), (10, 2, 2));
    assert_eq!(st.rings_open, 0);
    let mut vals: Vec<i64> = out.iter().map(|x| x.1).collect();
    vals.sort();
    assert_eq!(vals, (0..10).collect::<Vec<_>>());
    assert!(list_rings(d.path()).unwrap().is_empty());
    let t = rs.totals();
    assert_eq!((t.reader.read, t.writer.written, t.unread()), (10, 10, 0));
    assert_eq!(
        (t.rings_opened, t.rings_finished, t.files_removed),
        (2, 2, 2)
    );
    assert!(rs.counters().is_empty());
    assert!(rs.take_errors().is_empty());
}

#[test]
#[cfg_attr(miri, ignore)]
fn live_rings_are_kept_and_release_frees_space() {
    let d = tempfile::tempdir().unwrap();
    let w = ring(d.path(), me(), 0);
    let mut rs = RingSet::new(d.path().to_owned(), opts());
    let mut out = Vec::new();
    let mut next = 0;
    // Ten times what the ring holds: only possible if poll releases.
    for _ in 0..10 {
        while put(&w, next).is_ok() {
            next += 1;
        }
        while poll(&mut rs, &mut out).more {}
    }
    assert!(next as u64 > 5 * SMALL as u64 / 88, "{next}");
    assert_eq!(out.len() as i64, next);
    assert!(out.iter().enumerate().all(|(i, x)| x.1 == i as i64));
    assert_eq!(rs.rings_open(), 1, "writer alive: ring kept");
    assert_eq!(list_rings(d.path()).unwrap().len(), 1);
    let c = rs.counters();
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].1.read, next as u64);
    assert_eq!(c[0].2.lost_full, 10);
    let t = rs.totals();
    assert_eq!(
        (t.reader.read, t.writer.written),
        (next as u64, next as u64)
    );
}

#[test]
#[cfg_attr(miri, ignore)]
fn batch_limit_asks_for_more_at_once() {
    let d = tempfile::tempdir().unwrap();
    let w = ring(d.path(), me(), 0);
    for i in 0..5 {
        put(&w, i).unwrap();
    }
    let mut rs = RingSet::new(d.path().to_owned(), RingSetOptions { batch: 2, ..opts() });
    let mut out = Vec::new();
    let mut counts = Vec::new();
    loop {
        let st = poll(&mut rs, &mut out);
        counts.push(st.records);
        if !st.more {
            assert_eq!(rs.next_delay(&st), Duration::from_millis(1));
            break;
        }
        assert_eq!(rs.next_delay(&st), Duration::ZERO);
    }
    assert_eq!(counts, [2, 2, 1]);
}

#[test]
#[cfg_attr(miri, ignore)]
fn kept_files_are_never_reopened() {
    let d = tempfile::tempdir().unwrap();
    let w = ring(d.path(), dead(), 0);
    put(&w, 7).unwrap();
    let mut rs = RingSet::new(
        d.path().to_owned(),
        RingSetOptions {
            remove_exited: false,
            rescan_every: 1,
            ..opts()
        },
    );
    let mut out = Vec::new();
    let st = poll(&mut rs, &mut out);
    assert_eq!((st.records, st.rings_removed), (1, 1));
    for _ in 0..5 {
        let st = poll(&mut rs, &mut out);
        assert!(st.rescanned);
        assert_eq!((st.rings_added, st.rings_open), (0, 0));
    }
    assert_eq!(list_rings(d.path()).unwrap().len(), 1, "file kept");
    let t = rs.totals();
    assert_eq!(
        (t.rings_opened, t.writer.written, t.files_removed),
        (1, 1, 0)
    );
    // A new file under the same name (after a while: birth times are as
    // coarse as a jiffy) is a new ring.
    drop(w);
    std::thread::sleep(Duration::from_millis(30));
    let w = ring(d.path(), dead(), 0);
    put(&w, 8).unwrap();
    put(&w, 9).unwrap();
    let st = poll(&mut rs, &mut out);
    assert_eq!((st.records, st.rings_added, st.rings_removed), (2, 1, 1));
    assert_eq!(out.iter().map(|x| x.1).collect::<Vec<_>>(), [7, 8, 9]);
    assert_eq!(rs.totals().writer.written, 3);
}

#[test]
#[cfg_attr(miri, ignore)]
fn rings_being_created_are_retried_and_junk_reported_once() {
    let d = tempfile::tempdir().unwrap();
    let (pid, start) = me();
    // Created by a live writer, not sized yet.
    let young = d.path().join(ring_file_name(pid, start, 0));
    std::fs::write(&young, b"").unwrap();
    // Left by a writer that died while creating it.
    let (dpid, dstart) = dead();
    let junk = d.path().join(ring_file_name(dpid, dstart, 0));
    std::fs::write(&junk, vec![0u8; 8192]).unwrap();
    let mut rs = RingSet::new(
        d.path().to_owned(),
        RingSetOptions {
            rescan_every: 1,
            ..opts()
        },
    );
    let mut out = Vec::new();
    for _ in 0..3 {
        let st = poll(&mut rs, &mut out);
        assert_eq!(st.rings_open, 0);
    }
    let errors = rs.take_errors();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].path(), junk);
    assert!(
        matches!(
            errors[0],
            RingSetError::NotReady {
                source: HeaderError::BadMagic,
                ..
            }
        ),
        "{errors:?}"
    );
    // The writer finishes creating its ring: picked up without any error.
    std::fs::remove_file(&young).unwrap();
    let w = ring(d.path(), me(), 0);
    put(&w, 1).unwrap();
    rs.opts.rescan_every = 1000;
    let st = poll(&mut rs, &mut out);
    assert_eq!((st.rings_added, st.records), (1, 1));
    assert!(rs.take_errors().is_empty());
    assert!(junk.exists(), "unreadable files are never removed");
    assert_eq!(rs.totals().unreadable, 1);
}

#[test]
#[cfg_attr(miri, ignore)]
fn header_never_written_by_a_live_writer_is_reported_after_the_timeout() {
    let d = tempfile::tempdir().unwrap();
    let (pid, start) = me();
    let path = d.path().join(ring_file_name(pid, start, 3));
    std::fs::write(&path, vec![0u8; 8192]).unwrap();
    let mut rs = RingSet::new(
        d.path().to_owned(),
        RingSetOptions {
            header_timeout: Duration::from_millis(30),
            rescan_every: 1,
            ..opts()
        },
    );
    let mut out = Vec::new();
    poll(&mut rs, &mut out);
    assert!(rs.take_errors().is_empty(), "not yet");
    std::thread::sleep(Duration::from_millis(40));
    for _ in 0..3 {
        assert!(poll(&mut rs, &mut out).rescanned, "retried every time");
    }
    let errors = rs.take_errors();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].to_string().contains("no valid ring header"));
}

#[test]
#[cfg_attr(miri, ignore)]
fn header_not_matching_the_name_is_reported_once() {
    let d = tempfile::tempdir().unwrap();
    let (pid, start) = dead();
    let w = ring_named(d.path(), (pid, start), 0, &ring_file_name(pid, start, 1));
    put(&w, 1).unwrap();
    let mut rs = RingSet::new(
        d.path().to_owned(),
        RingSetOptions {
            rescan_every: 1,
            ..opts()
        },
    );
    let mut out = Vec::new();
    for _ in 0..3 {
        poll(&mut rs, &mut out);
    }
    let errors = rs.take_errors();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(matches!(errors[0], RingSetError::Mismatch { .. }));
    assert!(out.is_empty());
    assert_eq!(list_rings(d.path()).unwrap().len(), 1);
}

#[test]
#[cfg_attr(miri, ignore)]
fn fifo_and_directory_named_like_rings_are_reported_not_waited_for() {
    let d = tempfile::tempdir().unwrap();
    let fifo = d.path().join("5-5.cpu0.ring");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    std::fs::create_dir(d.path().join("6-6.cpu0.ring")).unwrap();
    let w = ring(d.path(), me(), 0);
    put(&w, 1).unwrap();
    let mut rs = RingSet::new(
        d.path().to_owned(),
        RingSetOptions {
            rescan_every: 1,
            ..opts()
        },
    );
    let mut out = Vec::new();
    for _ in 0..3 {
        poll(&mut rs, &mut out);
    }
    assert_eq!(out.len(), 1, "the real ring is read");
    let mut errors: Vec<String> = rs.take_errors().iter().map(|e| e.to_string()).collect();
    errors.sort();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].contains("5-5.cpu0.ring") && errors[0].contains("not a regular file"));
    assert!(errors[1].contains("6-6.cpu0.ring"), "{errors:?}");
    assert_eq!(rs.totals().unreadable, 2);
}

#[test]
#[cfg_attr(miri, ignore)]
fn busy_rings_are_counted_and_picked_up_when_freed() {
    let d = tempfile::tempdir().unwrap();
    let w = ring(d.path(), me(), 0);
    put(&w, 1).unwrap();
    let path = list_rings(d.path()).unwrap().remove(0);
    let other = RingReader::open(&path, ReadMode::Consume).unwrap();
    let mut rs = RingSet::new(
        d.path().to_owned(),
        RingSetOptions {
            rescan_every: 1,
            ..opts()
        },
    );
    let mut out = Vec::new();
    for _ in 0..3 {
        assert_eq!(poll(&mut rs, &mut out).rings_open, 0);
    }
    assert_eq!(rs.totals().busy, 1);
    drop(other);
    let st = poll(&mut rs, &mut out);
    assert_eq!((st.rings_added, st.records), (1, 1));
    assert!(rs.take_errors().is_empty());
}

#[test]
#[cfg_attr(miri, ignore)]
fn rescans_only_when_the_directory_changes() {
    let d = tempfile::tempdir().unwrap();
    let mut rs = RingSet::new(
        d.path().to_owned(),
        RingSetOptions {
            rescan_every: 1000,
            ..opts()
        },
    );
    rs.racy_window = Duration::from_millis(30);
    let mut out = Vec::new();
    assert!(poll(&mut rs, &mut out).rescanned, "first poll lists");
    std::thread::sleep(Duration::from_millis(40));
    // At most one more listing for a change that was recent at the first.
    poll(&mut rs, &mut out);
    for _ in 0..5 {
        assert!(!poll(&mut rs, &mut out).rescanned);
    }
    let _w = ring(d.path(), me(), 0);
    let st = poll(&mut rs, &mut out);
    assert!(st.rescanned);
    assert_eq!(st.rings_added, 1);
    // A file that is not a ring changes the directory too.
    std::thread::sleep(Duration::from_millis(40));
    poll(&mut rs, &mut out);
    assert!(!poll(&mut rs, &mut out).rescanned);
    std::fs::write(d.path().join("other"), b"x").unwrap();
    assert!(poll(&mut rs, &mut out).rescanned);
    // Unchanged, it is still listed every `rescan_every` polls.
    std::thread::sleep(Duration::from_millis(40));
    poll(&mut rs, &mut out);
    rs.opts.rescan_every = 3;
    let scans: Vec<bool> = (0..7).map(|_| poll(&mut rs, &mut out).rescanned).collect();
    assert_eq!(scans, [false, false, true, false, false, true, false]);
}

#[test]
#[cfg_attr(miri, ignore)]
fn consumed_before_counts_what_an_earlier_consumer_released() {
    let d = tempfile::tempdir().unwrap();
    let w = ring(d.path(), me(), 0);
    for i in 0..5 {
        put(&w, i).unwrap();
    }
    let path = list_rings(d.path()).unwrap().remove(0);
    {
        let mut r = RingReader::open(&path, ReadMode::Consume).unwrap();
        r.drain(3, |_| {});
        r.release();
    }
    put(&w, 5).unwrap();
    let mut rs = RingSet::new(d.path().to_owned(), opts());
    let mut out = Vec::new();
    poll(&mut rs, &mut out);
    assert_eq!(out.iter().map(|x| x.1).collect::<Vec<_>>(), [3, 4, 5]);
    let t = rs.totals();
    assert_eq!(
        (t.consumed_before, t.reader.read, t.writer.written),
        (3, 3, 6)
    );
    assert_eq!((t.unread(), t.lost()), (0, 0));
}

#[test]
fn next_delay_backs_off_and_resets() {
    let mut rs = RingSet::new(
        PathBuf::from("/nonexistent"),
        RingSetOptions {
            max_delay: Duration::from_millis(10),
            ..RingSetOptions::default()
        },
    );
    let idle = PollStats {
        idle: true,
        ..PollStats::default()
    };
    let busy = PollStats {
        records: 1,
        ..PollStats::default()
    };
    let ms = Duration::from_millis;
    let mut seen = Vec::new();
    for _ in 0..6 {
        rs.idle_polls += 1;
        seen.push(rs.next_delay(&idle));
    }
    assert_eq!(seen, [ms(2), ms(4), ms(8), ms(10), ms(10), ms(10)]);
    rs.idle_polls = 0;
    assert_eq!(rs.next_delay(&busy), ms(1));
}

/// Tiny deterministic generator for the hostile-file test.
fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

#[test]
#[cfg_attr(miri, ignore)]
fn scribbled_rings_never_panic_nor_hang() {
    use std::io::{Seek, SeekFrom, Write};
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    for round in 0..40 {
        let d = tempfile::tempdir().unwrap();
        let live = round % 2 == 0;
        let ident = if live { me() } else { dead() };
        let w = ring(d.path(), ident, 0);
        let n = xorshift(&mut seed) % 1500;
        for i in 0..n {
            let _ = put(&w, i as i64);
        }
        let path = list_rings(d.path()).unwrap().remove(0);
        let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        for _ in 0..1 + xorshift(&mut seed) % 30 {
            // Mostly the data area, sometimes the header's counters.
            let at = if xorshift(&mut seed).is_multiple_of(4) {
                128 + xorshift(&mut seed) % 256
            } else {
                layout::HEADER_SIZE as u64 + xorshift(&mut seed) % SMALL as u64
            };
            f.seek(SeekFrom::Start(at)).unwrap();
            f.write_all(&xorshift(&mut seed).to_le_bytes()).unwrap();
        }
        let mut rs = RingSet::new(
            d.path().to_owned(),
            RingSetOptions {
                stall_timeout: Duration::from_millis(1),
                ..opts()
            },
        );
        let started = Instant::now();
        let mut polls = 0;
        loop {
            let st = rs
                .poll(&mut |_, r, _, cal| {
                    let _ = (r.key, r.value, cal.map(|c| c.to_unix_ns(r.timestamp_raw)));
                })
                .unwrap();
            polls += 1;
            let settled = if live {
                !st.more && polls > 20
            } else {
                st.rings_open == 0
            };
            if settled {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "round {round}: {st:?} {:?}",
                rs.counters()
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        let _ = rs.totals();
    }
}

#[test]
#[cfg_attr(miri, ignore)]
fn on_ack_keeps_records_in_the_ring_until_released() {
    let d = tempfile::tempdir().unwrap();
    let w = ring(d.path(), dead(), 0);
    for i in 0..5 {
        put(&w, i).unwrap();
    }
    let mut rs = RingSet::new(
        d.path().to_owned(),
        RingSetOptions {
            release: Release::OnAck,
            ..opts()
        },
    );
    let mut out = Vec::new();
    let st = poll(&mut rs, &mut out);
    assert_eq!(st.records, 5);
    let id = out[0].0;
    let cursor = rs.cursor(&id).unwrap();
    assert_eq!(cursor.seq, 5);
    // Not acknowledged: the dead writer's ring is drained but not removed.
    for _ in 0..3 {
        poll(&mut rs, &mut out);
    }
    assert_eq!(
        list_rings(d.path()).unwrap().len(),
        1,
        "kept until released"
    );
    assert_eq!(out.len(), 5, "nothing delivered twice");
    // A second consumer starting now would find all five still there.
    {
        let mut again =
            RingReader::open(&list_rings(d.path()).unwrap()[0], ReadMode::Peek).unwrap();
        let mut n = 0;
        again.drain(100, |_| n += 1);
        assert_eq!(n, 5);
    }
    rs.release_to(&id, cursor);
    let st = poll(&mut rs, &mut out);
    assert_eq!(st.rings_removed, 1);
    assert!(list_rings(d.path()).unwrap().is_empty());
}

/// A writer killed mid-record after its other records were delivered and
/// acknowledged: the drain that steps over the torn record delivers nothing,
/// so no acknowledgement covers it; the set frees it itself, and the ring
/// is finished once its writer is gone.
#[test]
#[cfg_attr(miri, ignore)]
fn records_stepped_over_after_everything_was_released_are_freed() {
    let d = tempfile::tempdir().unwrap();
    let w = ring(d.path(), me(), 0);
    put(&w, 1).unwrap();
    put(&w, 2).unwrap();
    crate::ring::tests::fake_dead_reservation(&w, 80, true);
    let mut rs = RingSet::new(
        d.path().to_owned(),
        RingSetOptions {
            release: Release::OnAck,
            stall_timeout: Duration::ZERO,
            ..opts()
        },
    );
    let mut out = Vec::new();
    assert_eq!(poll(&mut rs, &mut out).records, 2);
    let id = out[0].0;
    rs.release_to(&id, rs.cursor(&id).unwrap());
    // The torn record is stepped over (its stall timeout is zero).
    assert_eq!(poll(&mut rs, &mut out).records, 0);
    assert_eq!(poll(&mut rs, &mut out).records, 0);
    let (_, reader, _) = rs.counters().into_iter().next().unwrap();
    assert_eq!((reader.read, reader.torn), (2, 1));
    // Its space is free: a reader starting at the tail finds nothing.
    let path = &list_rings(d.path()).unwrap()[0];
    let mut fresh = RingReader::open(path, ReadMode::Peek).unwrap();
    assert_eq!(fresh.backlog_bytes(), 0);
    assert_eq!(
        fresh.drain(10, |_| panic!("nothing to read")),
        DrainEnd::CaughtUp
    );
}

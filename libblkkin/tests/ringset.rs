//! `RingSet` against real writer processes.
//!
//! The writers are this test binary itself, run again with `--exact
//! writer_child` and `BLKKIN_TEST_WRITER=<records>` in the environment: the
//! `writer_child` test records that many integer annotations (`i` = 0, 1, ...)
//! through the library into `BLKIN_SHM_DIR`, retrying (and counting) when its
//! ring is full, and prints what it did. Without the variable that test does
//! nothing.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use blkkin::ring::file::list_rings;
use blkkin::ring::{Calibration, Kind, Record, RingInfo, Value, WriteError};
use blkkin::ringset::{PollStats, RingId, RingSet, RingSetError, RingSetOptions};
use blkkin::{Endpoint, RecordError, TraceContext};

/// Records to write (`inf`: until killed).
const WRITER: &str = "BLKKIN_TEST_WRITER";
/// Microseconds to sleep after every 50 records.
const PACE: &str = "BLKKIN_TEST_WRITER_PACE_US";
/// `1`: first leave a reserved, never committed record in every ring, as a
/// writer killed in the middle of a record does.
const TORN: &str = "BLKKIN_TEST_WRITER_TORN";
/// Prefix of the lines the writer prints (the harness prints around them).
const MARK: &str = "blkkin-test-writer:";

/// The writer process's body (a no-op unless run as a writer).
#[test]
fn writer_child() {
    let Ok(n) = std::env::var(WRITER) else {
        return;
    };
    let n: u64 = if n == "inf" {
        u64::MAX
    } else {
        n.parse().expect("record count")
    };
    let pace = std::env::var(PACE)
        .ok()
        .map_or(0, |p| p.parse().expect("pace in µs"));
    let rings = blkkin::init().expect("rings created");
    let mut planted = 0;
    if std::env::var(TORN).as_deref() == Ok("1") {
        for path in rings.paths() {
            plant_reserved_record(path);
            planted += 1;
        }
    }
    say(&format!("ready {planted}"));
    let ctx = TraceContext::new_root_forced();
    let ep = Endpoint::new("writer", "127.0.0.1", 1);
    let mut full = 0u64;
    for i in 0..n {
        loop {
            match ctx.annotate("burst", &ep, Kind::Integer, "i", Value::Int(i as i64)) {
                Ok(()) => break,
                Err(RecordError::Ring(WriteError::Full)) => {
                    full += 1;
                    std::thread::sleep(Duration::from_micros(200));
                }
                Err(e) => panic!("record {i}: {e}"),
            }
        }
        if pace > 0 && i % 50 == 49 {
            std::thread::sleep(Duration::from_micros(pace));
        }
    }
    say(&format!("done {full}"));
}

fn say(what: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "\n{MARK} {what}").unwrap();
    out.flush().unwrap();
}

/// Reserves the first record of a fresh ring and never commits it.
fn plant_reserved_record(path: &Path) {
    use blkkin::ring::layout::{self, commit_word, join_head, off};
    use std::sync::atomic::Ordering;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    // SAFETY: our own ring file, shared by design; RingMem only uses atomics.
    let map = unsafe { memmap2::MmapMut::map_mut(&f) }.unwrap();
    let mem = blkkin::ring::mem::RingMem::from_map_mut(map);
    let len = layout::record_len(0) as u32;
    mem.word(off::HEAD)
        .compare_exchange(0, join_head(1, len), Ordering::AcqRel, Ordering::Relaxed)
        .expect("nothing recorded yet");
    mem.word(layout::HEADER_SIZE).store(
        commit_word(layout::STATE_RESERVED, Kind::Event as u64, len, 0),
        Ordering::Release,
    );
}

/// A writer process. Killed if still running when dropped.
struct Writer {
    child: Child,
    out: BufReader<ChildStdout>,
    records: u64,
    /// `Some(full retries)` once it exited and reported.
    full: Option<u64>,
    exited: bool,
}

impl Writer {
    /// Starts a writer and waits until its rings exist. Returns it and the
    /// number of records it planted reserved.
    fn spawn(dir: &Path, records: Option<u64>, pace_us: u64, torn: bool) -> (Writer, u64) {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "writer_child", "--nocapture", "--test-threads=1"])
            .env(WRITER, records.map_or("inf".to_string(), |n| n.to_string()))
            .env(PACE, pace_us.to_string())
            .env(TORN, if torn { "1" } else { "0" })
            .env("BLKIN_SHM_DIR", dir)
            .env("BLKIN_RING_SIZE", "64K")
            .env("BLKIN_RING_MODE", "discard")
            .env_remove("BLKIN_MAX_RECORD")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("test binary runs");
        let out = BufReader::new(child.stdout.take().unwrap());
        let mut w = Writer {
            child,
            out,
            records: records.unwrap_or(u64::MAX),
            full: None,
            exited: false,
        };
        let planted = w.next_mark("ready").parse().unwrap();
        (w, planted)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The rest of the next line of ours that starts with `what`.
    fn next_mark(&mut self, what: &str) -> String {
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.out.read_line(&mut line).unwrap();
            assert!(n > 0, "writer {} ended before saying {what:?}", self.pid());
            if let Some((_, rest)) = line.split_once(MARK) {
                if let Some(v) = rest.trim().strip_prefix(what) {
                    return v.trim().to_string();
                }
            }
        }
    }

    /// Reaps the writer if it exited.
    fn poll_exit(&mut self) -> bool {
        if !self.exited {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "writer {}: {status}", self.pid());
                self.full = Some(self.next_mark("done").parse().unwrap());
                let mut rest = String::new();
                self.out.read_to_string(&mut rest).unwrap();
                self.exited = true;
            }
        }
        self.exited
    }

    fn wait(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.poll_exit() {
            assert!(Instant::now() < deadline, "writer {} hangs", self.pid());
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.exited = true;
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if !self.exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What the sink saw.
#[derive(Default)]
struct Seen {
    /// Values per writer pid, in delivery order.
    by_pid: HashMap<u32, Vec<i64>>,
    /// Last value per ring (a writer's records in one ring are in order).
    last: BTreeMap<RingId, i64>,
    /// Records that are not ("i", integer) or out of order in their ring.
    anomalies: Vec<String>,
}

impl Seen {
    fn record(&mut self, id: &RingId, r: &Record<'_>, info: &RingInfo, cal: Option<&Calibration>) {
        let v = match (r.kind, r.key, r.value) {
            (Kind::Integer, b"i", Value::Int(v)) => v,
            _ => {
                self.anomalies
                    .push(format!("{id}: unexpected record {r:?}"));
                return;
            }
        };
        if (info.pid, info.cpu) != (id.pid, id.cpu) {
            self.anomalies.push(format!("{id}: header {info:?}"));
        }
        if cal.and_then(|c| c.to_unix_ns(r.timestamp_raw)).is_none() {
            self.anomalies.push(format!("{id}: no timestamp for {v}"));
        }
        if let Some(prev) = self.last.insert(*id, v) {
            if prev >= v {
                self.anomalies.push(format!("{id}: {v} after {prev}"));
            }
        }
        self.by_pid.entry(id.pid).or_default().push(v);
    }

    /// The values delivered for `pid`, sorted, must be exactly 0..n.
    fn assert_exactly_once(&self, pid: u32, n: u64) {
        let mut v = self.by_pid.get(&pid).cloned().unwrap_or_default();
        v.sort_unstable();
        let len = v.len();
        let expected: Vec<i64> = (0..n as i64).collect();
        if v != expected {
            let dups = len - {
                v.dedup();
                v.len()
            };
            panic!(
                "writer {pid}: {len} records delivered ({dups} duplicates), expected 0..{n} once each"
            );
        }
    }
}

/// Polls (sleeping as the set says) until `done`, at most `limit`.
fn poll_until(
    rs: &mut RingSet,
    seen: &mut Seen,
    errors: &mut Vec<RingSetError>,
    limit: Duration,
    mut done: impl FnMut(&RingSet, &PollStats) -> bool,
) {
    let start = Instant::now();
    loop {
        let st = rs
            .poll(&mut |id, r, info, cal| seen.record(id, r, info, cal))
            .unwrap();
        errors.extend(rs.take_errors());
        if done(rs, &st) {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "not done after {limit:?}: {st:?}\n{:?}\n{:?}",
            rs.counters(),
            rs.totals()
        );
        std::thread::sleep(rs.next_delay(&st));
    }
}

fn ncpu() -> u64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) }.clamp(1, 4096) as u64
}

fn ring_dir(tmp: &Path) -> PathBuf {
    use std::os::unix::fs::DirBuilderExt;
    let dir = tmp.join("rings");
    std::fs::DirBuilder::new().mode(0o700).create(&dir).unwrap();
    dir
}

fn opts() -> RingSetOptions {
    RingSetOptions {
        liveness_interval: Duration::from_millis(50),
        ..RingSetOptions::default()
    }
}

#[test]
fn writers_before_and_after_start_every_record_once_and_files_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = ring_dir(tmp.path());
    // Before the set exists: a writer that has already exited (fewer records
    // than its ring holds: nobody frees space yet)...
    let (mut gone, _) = Writer::spawn(&dir, Some(500), 0, false);
    gone.wait();
    // ... and one still writing.
    let (slow, _) = Writer::spawn(&dir, Some(3000), 2000, false);
    let mut writers = vec![gone, slow];

    let started = Instant::now();
    let mut rs = RingSet::new(dir.clone(), opts());
    let (mut seen, mut errors) = (Seen::default(), Vec::new());
    poll_until(&mut rs, &mut seen, &mut errors, Duration::ZERO, |_, st| {
        assert_eq!(st.rings_added as u64, 2 * ncpu());
        true
    });
    // After the set started: a fast one (several times its ring size, so it
    // depends on the set releasing space) and a paced one.
    writers.push(Writer::spawn(&dir, Some(6000), 0, false).0);
    writers.push(Writer::spawn(&dir, Some(2000), 1000, false).0);

    poll_until(
        &mut rs,
        &mut seen,
        &mut errors,
        Duration::from_secs(8),
        |rs, _| {
            // Reap every writer that exited (not just the first running one).
            let mut exited = true;
            for w in writers.iter_mut() {
                exited &= w.poll_exit();
            }
            exited && rs.rings_open() == 0
        },
    );
    let took = started.elapsed();

    assert!(errors.is_empty(), "{errors:?}");
    assert!(seen.anomalies.is_empty(), "{:?}", seen.anomalies);
    assert_eq!(seen.by_pid.len(), writers.len());
    let mut written = 0;
    let mut full = 0;
    for w in &writers {
        seen.assert_exactly_once(w.pid(), w.records);
        written += w.records;
        full += w.full.unwrap();
    }
    assert!(
        list_rings(&dir).unwrap().is_empty(),
        "ring files of exited writers are removed"
    );
    let t = rs.totals();
    assert_eq!(t.reader.read, written, "{t:?}");
    assert_eq!(t.writer.written, written, "{t:?}");
    assert_eq!(
        (t.reader.torn, t.reader.corrupt, t.reader.gap),
        (0, 0, 0),
        "{t:?}"
    );
    assert_eq!(t.writer.lost_full, full, "drops the writers saw: {t:?}");
    assert_eq!(t.writer.lost(), full, "{t:?}");
    assert_eq!((t.unread(), t.consumed_before), (0, 0), "{t:?}");
    let rings = writers.len() as u64 * ncpu();
    assert_eq!(
        (t.rings_opened, t.rings_finished, t.files_removed),
        (rings, rings, rings),
        "{t:?}"
    );
    assert_eq!((t.unreadable, t.busy), (0, 0), "{t:?}");
    eprintln!("{written} records of 4 writers in {took:.2?} ({full} full retries)");
}

#[test]
fn writer_killed_mid_burst_is_finished_without_stalling() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = ring_dir(tmp.path());
    let (mut other, _) = Writer::spawn(&dir, Some(2000), 500, false);
    let (mut victim, planted) = Writer::spawn(&dir, None, 0, true);
    assert_eq!(planted, ncpu());
    let mut rs = RingSet::new(
        dir.clone(),
        RingSetOptions {
            // Far beyond the test's limits: the writer's death must be what
            // unblocks its rings.
            stall_timeout: Duration::from_secs(60),
            ..opts()
        },
    );
    let (mut seen, mut errors) = (Seen::default(), Vec::new());
    // The victim's rings are stuck behind its reserved records while it lives
    // (and fill up: it spins on full rings); the other writer is not held up.
    let start = Instant::now();
    poll_until(
        &mut rs,
        &mut seen,
        &mut errors,
        Duration::from_secs(8),
        |_, _| other.poll_exit() && start.elapsed() > Duration::from_millis(300),
    );
    assert!(!seen.by_pid.contains_key(&victim.pid()));
    seen.assert_exactly_once(other.pid(), 2000);

    victim.kill();
    let killed = Instant::now();
    poll_until(
        &mut rs,
        &mut seen,
        &mut errors,
        Duration::from_secs(5),
        |rs, _| rs.rings_open() == 0,
    );
    let after_kill = killed.elapsed();
    assert!(
        after_kill < Duration::from_secs(3),
        "took {after_kill:?} after the kill"
    );

    assert!(errors.is_empty(), "{errors:?}");
    assert!(seen.anomalies.is_empty(), "{:?}", seen.anomalies);
    let delivered = seen.by_pid.get(&victim.pid()).map_or(0, Vec::len) as u64;
    assert!(delivered > 0, "records behind the reserved ones are read");
    // Whatever the victim committed, in order, exactly once.
    seen.assert_exactly_once(victim.pid(), delivered);
    assert!(list_rings(&dir).unwrap().is_empty());
    let t = rs.totals();
    assert!(
        t.reader.torn >= planted && t.reader.torn + t.reader.gap <= planted + 1,
        "torn: the planted records, and at most the one the kill interrupted: {t:?}"
    );
    assert_eq!(t.reader.corrupt, 0, "{t:?}");
    assert_eq!(t.reader.read, delivered + 2000, "{t:?}");
    assert_eq!(t.unread(), 0, "every reserved record accounted for: {t:?}");
    eprintln!(
        "killed writer: {delivered} records, torn {}, gap {}; finished {after_kill:.2?} after the kill",
        t.reader.torn, t.reader.gap
    );
}

#[test]
fn garbage_named_like_a_ring_is_reported_once_and_blocks_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = ring_dir(tmp.path());
    let garbage = dir.join("1-1.cpu0.ring");
    let mut bytes = vec![0u8; 8192];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut bytes)
        .unwrap();
    std::fs::write(&garbage, &bytes).unwrap();
    let (mut w, _) = Writer::spawn(&dir, Some(2000), 500, false);
    let mut rs = RingSet::new(
        dir.clone(),
        RingSetOptions {
            // List (and retry the garbage) on every poll: still one report.
            rescan_every: 1,
            // Even if a process 1 started at tick 1 were running.
            header_timeout: Duration::from_millis(200),
            ..opts()
        },
    );
    let (mut seen, mut errors) = (Seen::default(), Vec::new());
    let start = Instant::now();
    poll_until(
        &mut rs,
        &mut seen,
        &mut errors,
        Duration::from_secs(8),
        |rs, _| {
            w.poll_exit() && rs.rings_open() == 0 && start.elapsed() > Duration::from_millis(300)
        },
    );
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].path(), garbage);
    eprintln!("reported: {}", errors[0]);
    assert!(seen.anomalies.is_empty(), "{:?}", seen.anomalies);
    seen.assert_exactly_once(w.pid(), 2000);
    assert_eq!(list_rings(&dir).unwrap(), [garbage], "garbage is kept");
    let t = rs.totals();
    assert_eq!(t.unreadable, 1, "{t:?}");
    assert_eq!((t.reader.read, t.writer.written), (2000, 2000), "{t:?}");
}

#[test]
fn next_delay_backs_off_while_idle_and_resets_on_activity() {
    use blkkin::ring::file::{create_ring, ring_file_name};
    use blkkin::ring::header::HeaderInit;
    use blkkin::ring::{RecordIn, RingGeometry};

    let tmp = tempfile::tempdir().unwrap();
    let dir = ring_dir(tmp.path());
    let mut rs = RingSet::new(
        dir.clone(),
        RingSetOptions {
            max_delay: Duration::from_millis(16),
            ..opts()
        },
    );
    let ms = Duration::from_millis;
    let poll = |rs: &mut RingSet| {
        let st = rs.poll(&mut |_, _, _, _| {}).unwrap();
        (st.records, rs.next_delay(&st))
    };
    let delays: Vec<_> = (0..6).map(|_| poll(&mut rs)).collect();
    assert_eq!(
        delays,
        [
            (0, ms(2)),
            (0, ms(4)),
            (0, ms(8)),
            (0, ms(16)),
            (0, ms(16)),
            (0, ms(16))
        ]
    );

    // A ring of this (live) process appears, with two records.
    let pid = std::process::id();
    let start_time = blkkin::process::start_time(pid).unwrap();
    let info = RingInfo {
        pid,
        uid: 0,
        start_time,
        cpu: 9999,
        flags: 0,
        data_size: 64 << 10,
        max_record: 4096,
        created_ns: 0,
        boot_id: blkkin::process::boot_id(),
    };
    let geo = RingGeometry {
        data_size: 64 << 10,
        max_record: 4096,
        overwrite: false,
    };
    let path = dir.join(ring_file_name(pid, start_time, 9999));
    let init = HeaderInit {
        info,
        calibration: Calibration::IDENTITY,
    };
    let w = create_ring(&path, &init, geo).unwrap();
    let rec = RecordIn {
        trace_id: 1,
        span_id: 1,
        parent_id: 0,
        port: 1,
        flags: 0,
        kind: Kind::Event,
        service: b"s",
        name: b"n",
        ip: b"i",
        key: b"start",
        value: Value::None,
    };
    w.write(blkkin::clock::ClockSource::Realtime, &rec).unwrap();
    w.write(blkkin::clock::ClockSource::Realtime, &rec).unwrap();
    assert_eq!(poll(&mut rs), (2, ms(1)), "activity resets the delay");
    assert_eq!(poll(&mut rs), (0, ms(2)));
    assert_eq!(poll(&mut rs), (0, ms(4)));
    w.write(blkkin::clock::ClockSource::Realtime, &rec).unwrap();
    assert_eq!(poll(&mut rs), (1, ms(1)));
    assert_eq!(poll(&mut rs), (0, ms(2)));
}

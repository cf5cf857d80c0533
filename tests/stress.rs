//! Many writers against one consuming reader, end to end: tests/c/stress.c
//! (processes × threads hammering the C ABI) while this test drains every
//! ring concurrently through the `blkkin` reader API, the way a collector
//! would. Checks exactly-once delivery and that every record is accounted
//! for: read, or dropped and counted by the writer, or (for writers killed
//! mid-record) counted by the reader as torn or missing, without the reader
//! stalling.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use blkkin::ring::file::{list_rings, parse_ring_file_name};
use blkkin::ring::{DrainEnd, OpenError, ReadMode, RingReader, Value, WriterCheck};

/// The two tests each load both cores: run them one at a time so the timing
/// assertions measure the library, not the other test.
static SERIAL: Mutex<()> = Mutex::new(());

/// The stress program, in a process group of its own so that a failing test
/// can kill it together with its children (which would otherwise keep
/// writing).
struct Stress {
    child: Child,
    status: Option<ExitStatus>,
}

impl Stress {
    fn spawn(exe: &Path, rings: &Path, args: &[u64]) -> Stress {
        Stress::spawn_with(exe, rings, args, &[])
    }

    /// As [`Stress::spawn`], with extra environment variables.
    fn spawn_with(exe: &Path, rings: &Path, args: &[u64], env: &[(&str, &str)]) -> Stress {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(exe);
        cmd.args(args.iter().map(u64::to_string))
            .env("BLKIN_SHM_DIR", rings)
            .env("BLKIN_RING_SIZE", "256K")
            .env("BLKIN_RING_MODE", "discard")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        // The writers are niced so that the reader, like a real collector,
        // gets the CPU when it has work: otherwise 6 busy writer threads on a
        // small machine starve it and nearly everything is dropped.
        // SAFETY: setpriority is async-signal-safe and touches no memory.
        unsafe {
            cmd.pre_exec(|| {
                libc::setpriority(libc::PRIO_PROCESS, 0, 19);
                Ok(())
            })
        };
        let child = cmd.spawn().expect("stress program runs");
        Stress {
            child,
            status: None,
        }
    }

    fn exited(&mut self) -> bool {
        if self.status.is_none() {
            self.status = self.child.try_wait().unwrap();
        }
        self.status.is_some()
    }

    /// Exit status, stdout and stderr of the finished program.
    fn finish(mut self) -> (ExitStatus, String, String) {
        use std::io::Read;
        let (mut out, mut err) = (String::new(), String::new());
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        let status = self.child.wait().unwrap();
        self.status = Some(status);
        (status, out, err)
    }
}

impl Drop for Stress {
    fn drop(&mut self) {
        if self.status.is_none() && matches!(self.child.try_wait(), Ok(None)) {
            // SAFETY: kill has no memory effects; the group is the one we created.
            unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
            let _ = self.child.wait();
        }
    }
}

/// One line of the program per writer thread.
#[derive(Debug)]
struct Thread {
    pid: u32,
    span: u64,
    attempted: i64,
    dropped: i64,
}

/// Thread lines and "child <pid> exit|signal <n>" lines of the program.
fn parse_output(out: &str) -> (Vec<Thread>, Vec<(u32, String, i32)>) {
    let mut threads = Vec::new();
    let mut children = Vec::new();
    for line in out.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        if f[0] == "child" {
            children.push((
                f[1].parse().unwrap(),
                f[2].to_string(),
                f[3].parse().unwrap(),
            ));
        } else {
            assert_eq!(f.len(), 4, "bad thread line {line:?}");
            assert_eq!(f[1].len(), 16, "span id in 16 hex digits: {line:?}");
            threads.push(Thread {
                pid: f[0].parse().unwrap(),
                span: u64::from_str_radix(f[1], 16).unwrap(),
                attempted: f[2].parse().unwrap(),
                dropped: f[3].parse().unwrap(),
            });
        }
    }
    (threads, children)
}

/// What the reader saw of one writer thread (one span).
#[derive(Default)]
struct SpanSeen {
    /// Pid of the ring the span's first record came from.
    pid: u32,
    /// seqs[i]: "seq" = i was read.
    seqs: Vec<bool>,
    /// Distinct seqs read.
    read: u64,
}

/// Anomalies in what was read; all must stay 0.
#[derive(Debug, Default, PartialEq, Eq)]
struct Anomalies {
    /// A (span, seq) delivered a second time.
    duplicates: u64,
    /// A record that is not ("seq", Int in 0..RECORDS).
    malformed: u64,
    /// A span found in the rings of two different processes.
    wrong_process: u64,
    /// Within one ring, a thread's seq not above its previous one (a
    /// thread's reservations in one ring follow its program order).
    out_of_order: u64,
}

/// A ring being consumed.
struct Ring {
    reader: RingReader,
    /// The last seq read from this ring, per span.
    last_seq: HashMap<u64, usize>,
}

/// One consuming reader per ring file of a directory, drained concurrently
/// with the writers.
struct Consumer {
    dir: PathBuf,
    records: u64,
    rings: BTreeMap<PathBuf, Ring>,
    spans: HashMap<u64, SpanSeen>,
    anomalies: Anomalies,
}

impl Consumer {
    fn new(dir: &Path, records: u64) -> Consumer {
        Consumer {
            dir: dir.to_owned(),
            records,
            rings: BTreeMap::new(),
            spans: HashMap::new(),
            anomalies: Anomalies::default(),
        }
    }

    /// Opens rings that appeared since the last pass and drains every ring,
    /// releasing what was read. Returns (every ring caught up, records read).
    /// `last`: the writers are gone, so every ring file must open.
    fn pass(&mut self, last: bool) -> (bool, u64) {
        for path in list_rings(&self.dir).unwrap() {
            if self.rings.contains_key(&path) {
                continue;
            }
            match RingReader::open(&path, ReadMode::Consume) {
                Ok(mut r) => {
                    r.set_writer_check(WriterCheck::Proc);
                    let last_seq = HashMap::new();
                    self.rings.insert(
                        path,
                        Ring {
                            reader: r,
                            last_seq,
                        },
                    );
                }
                // Still being created by its writer: try again next pass.
                Err(OpenError::Header { .. }) if !last => {}
                Err(e) => panic!("cannot consume {}: {e}", path.display()),
            }
        }
        let Consumer {
            records,
            rings,
            spans,
            anomalies,
            ..
        } = self;
        let mut caught_up = true;
        let mut total = 0;
        for Ring {
            reader: r,
            last_seq,
        } in rings.values_mut()
        {
            let pid = r.info().pid;
            loop {
                let end = r.drain(1024, |rec| {
                    total += 1;
                    let seq = match (rec.key, rec.value) {
                        (b"seq", Value::Int(i)) if (0..*records as i64).contains(&i) => i as usize,
                        _ => {
                            anomalies.malformed += 1;
                            return;
                        }
                    };
                    let s = spans.entry(rec.span_id).or_insert_with(|| SpanSeen {
                        pid,
                        ..SpanSeen::default()
                    });
                    if s.pid != pid {
                        anomalies.wrong_process += 1;
                    }
                    if let Some(prev) = last_seq.insert(rec.span_id, seq) {
                        if prev >= seq {
                            anomalies.out_of_order += 1;
                        }
                    }
                    if s.seqs.len() <= seq {
                        s.seqs.resize((seq + 1).max(2 * s.seqs.len()), false);
                    }
                    if std::mem::replace(&mut s.seqs[seq], true) {
                        anomalies.duplicates += 1;
                    } else {
                        s.read += 1;
                    }
                });
                r.release();
                match end {
                    DrainEnd::Limit => continue,
                    DrainEnd::CaughtUp => break,
                    DrainEnd::InProgress => {
                        caught_up = false;
                        break;
                    }
                    DrainEnd::Truncated => panic!("a ring file was truncated under the reader"),
                }
            }
        }
        (caught_up, total)
    }

    /// Drains until the program has exited and a pass that started after
    /// its exit caught up on every ring. Panics after `timeout`. Returns how
    /// long the reader needed once the program was seen gone.
    fn run(&mut self, prog: &mut Stress, timeout: Duration) -> Duration {
        let start = Instant::now();
        let mut exited_at = None;
        loop {
            let exited = prog.exited();
            if exited && exited_at.is_none() {
                exited_at = Some(Instant::now());
            }
            let (caught_up, n) = self.pass(exited);
            if exited && caught_up {
                return exited_at.unwrap().elapsed();
            }
            assert!(
                start.elapsed() < timeout,
                "reader did not catch up within {timeout:?} (program exited: {exited}): {}",
                self.describe()
            );
            if n == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    fn describe(&self) -> String {
        let mut s = String::new();
        for (path, Ring { reader: r, .. }) in &self.rings {
            s += &format!(
                "\n  {}: backlog {} bytes, {:?}, {:?}",
                path.file_name().unwrap().to_string_lossy(),
                r.backlog_bytes(),
                r.stats(),
                r.writer_counters()
            );
        }
        s
    }
}

/// Per ring: every reservation the writers made was read, or counted by the
/// reader (torn, corrupt, gap). Returns (read, lost by writers, torn, gap)
/// over all rings.
fn account(c: &Consumer) -> (u64, u64, u64, u64) {
    let (mut read, mut lost, mut torn, mut gap) = (0, 0, 0, 0);
    for (path, Ring { reader: r, .. }) in &c.rings {
        let (st, w) = (r.stats(), r.writer_counters());
        assert_eq!(
            w.written,
            st.read + st.torn + st.corrupt + st.gap,
            "{}: reservations not accounted for: {w:?} {st:?}",
            path.display()
        );
        assert_eq!(r.backlog_bytes(), 0, "{}", path.display());
        assert_eq!(st.corrupt, 0, "{}: {st:?}", path.display());
        read += st.read;
        lost += w.lost();
        torn += st.torn;
        gap += st.gap;
    }
    (read, lost, torn, gap)
}

fn build(tmp: &Path) -> PathBuf {
    let libs = common::lib_dir(tmp);
    common::compile(tmp, &libs, "stress.c", "stress", false)
}

#[test]
fn multi_process_multi_thread_exactly_once() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    exactly_once(3, 2, 200_000, &[]);
}

/// Four threads on one CPU preempt one another in the middle of their
/// reservations, and a signal handler on each records into the same rings
/// while its thread may be half-way through a record of its own: with
/// per-CPU restartable sequences (the default here) and with
/// compare-and-swap, every record arrives exactly once, in order.
#[test]
fn one_cpu_threads_and_signal_handlers_exactly_once() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for reserve in ["auto", "cas"] {
        let env = [
            ("BLKIN_RESERVE", reserve),
            ("STRESS_PIN_CPU", "0"),
            ("STRESS_SIGNALS", "1"),
            // Room for everything: each record then races for a reservation.
            ("BLKIN_RING_SIZE", "128M"),
        ];
        let (c, threads) = exactly_once(1, 4, 200_000, &env);
        // The rings have room for everything: a drop would be a reservation
        // gone wrong (a thread preempted between reading head and tail once
        // saw the reader ahead of its stale head and called the ring full).
        let dropped: i64 = threads.iter().map(|t| t.dropped).sum();
        assert_eq!(dropped, 0, "{reserve}: records dropped with room to spare");
        let handled: i64 = threads.iter().skip(1).step_by(2).map(|t| t.attempted).sum();
        assert!(handled > 0, "{reserve}: no signal was handled");
        let per_cpu = reserve == "auto" && blkkin::rseq::init();
        for (path, ring) in &c.rings {
            assert_eq!(
                ring.reader.info().flags & blkkin::ring::layout::FLAG_PER_CPU != 0,
                per_cpu,
                "{reserve}: reservation mode in {}",
                path.display()
            );
        }
        eprintln!("{reserve}: {handled} records from signal handlers");
    }
}

/// Runs the stress program (PROCS × THREADS × RECORDS, extra environment
/// `env`) against a concurrent consuming reader and checks exactly-once
/// delivery: every span's records read or counted as dropped, nothing
/// duplicated, out of order, torn or lost uncounted. Returns the reader
/// and the program's span lines.
fn exactly_once(
    procs: u64,
    threads_per_proc: u64,
    records: u64,
    env: &[(&str, &str)],
) -> (Consumer, Vec<Thread>) {
    let signals = env.contains(&("STRESS_SIGNALS", "1"));
    let tmp = tempfile::tempdir().unwrap();
    let exe = build(tmp.path());
    let rings = tmp.path().join("rings");

    let started = Instant::now();
    let mut prog = Stress::spawn_with(&exe, &rings, &[procs, threads_per_proc, records], env);
    // Signal handlers record their own sequences, which may outgrow RECORDS.
    let mut c = Consumer::new(&rings, if signals { u32::MAX as u64 } else { records });
    c.run(&mut prog, Duration::from_secs(60));
    let elapsed = started.elapsed();
    let (status, out, err) = prog.finish();
    assert!(status.success(), "{status}: {err}");

    let (threads, children) = parse_output(&out);
    assert_eq!(children.len() as u64, procs, "{out}");
    assert!(
        children.iter().all(|(_, how, n)| how == "exit" && *n == 0),
        "{out}"
    );
    let lines_per_thread = if signals { 2 } else { 1 };
    assert_eq!(
        threads.len() as u64,
        procs * threads_per_proc * lines_per_thread,
        "{out}"
    );
    let pids: std::collections::BTreeSet<u32> = threads.iter().map(|t| t.pid).collect();
    assert_eq!(pids.len() as u64, procs, "{out}");
    let ring_pids: std::collections::BTreeSet<u32> = c
        .rings
        .keys()
        .map(|p| {
            parse_ring_file_name(p.file_name().unwrap().to_str().unwrap())
                .unwrap()
                .0
        })
        .collect();
    assert_eq!(ring_pids, pids, "only the writer processes have rings");

    assert_eq!(c.anomalies, Anomalies::default());
    let mut attempted = 0;
    let mut dropped = 0;
    for (i, t) in threads.iter().enumerate() {
        let signal_line = signals && i % 2 == 1;
        if !signal_line {
            assert_eq!(t.attempted, records as i64);
        }
        let read = match c.spans.get(&t.span) {
            Some(seen) => {
                assert_eq!(seen.pid, t.pid, "{t:?} is in its own process's rings");
                seen.read
            }
            None => 0,
        };
        assert_eq!(
            read + t.dropped as u64,
            t.attempted as u64,
            "{t:?}: read {read} + dropped {} != {}",
            t.dropped,
            t.attempted
        );
        attempted += t.attempted as u64;
        dropped += t.dropped as u64;
    }
    assert_eq!(
        c.spans.len(),
        threads.iter().filter(|t| t.attempted > t.dropped).count(),
        "records of spans the program did not report"
    );

    let (read, lost, torn, gap) = account(&c);
    assert_eq!((torn, gap), (0, 0), "{}", c.describe());
    assert_eq!(
        lost,
        dropped,
        "ring counters vs drops the program saw{}",
        c.describe()
    );
    assert_eq!(read + lost, attempted);
    eprintln!(
        "stress {env:?}: {attempted} records in {elapsed:.2?}: read {read}, dropped {dropped} ({:.1}%)",
        100.0 * dropped as f64 / attempted as f64
    );
    (c, threads)
}

#[test]
fn killed_writer_mid_burst_is_counted_not_stalling() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    const PROCS: u64 = 2;
    const THREADS: u64 = 2;
    const RECORDS: u64 = 10_000_000; // never reached
    const KILL: u64 = 50_000;
    let tmp = tempfile::tempdir().unwrap();
    let exe = build(tmp.path());
    let rings = tmp.path().join("rings");

    let mut prog = Stress::spawn(&exe, &rings, &[PROCS, THREADS, RECORDS, KILL]);
    let mut c = Consumer::new(&rings, RECORDS);
    let after_exit = c.run(&mut prog, Duration::from_secs(20));
    let (status, out, err) = prog.finish();
    assert!(status.success(), "{status}: {err}");

    let (threads, children) = parse_output(&out);
    assert_eq!(children.len() as u64, PROCS, "{out}");
    for (pid, how, n) in &children {
        assert_eq!((how.as_str(), *n), ("signal", 9), "child {pid}: {out}");
    }
    assert_eq!(threads.len() as u64, PROCS * THREADS, "{out}");
    assert!(threads.iter().all(|t| t.attempted == -1 && t.dropped == -1));
    // No stall: dead writers are recognised at once, not after the 10 s
    // grace period a live writer gets to finish a record.
    assert!(
        after_exit < Duration::from_secs(5),
        "reader took {after_exit:?} to catch up with dead writers"
    );

    assert_eq!(c.anomalies, Anomalies::default());
    let by_span: HashMap<u64, &Thread> = threads.iter().map(|t| (t.span, t)).collect();
    for (span, seen) in &c.spans {
        let t = by_span
            .get(span)
            .unwrap_or_else(|| panic!("records of unknown span {span:016x}"));
        assert_eq!(seen.pid, t.pid, "{t:?} is in its own process's rings");
    }
    for t in &threads {
        let read = c.spans.get(&t.span).map_or(0, |s| s.read);
        assert!(read > 0, "nothing read of {t:?}");
    }

    let (read, lost, torn, gap) = account(&c);
    assert!(
        torn + gap <= PROCS * THREADS,
        "at most one record in flight per killed thread: torn {torn}, gap {gap}{}",
        c.describe()
    );
    eprintln!(
        "killed: read {read}, dropped {lost}, torn {torn}, gap {gap}; caught up {after_exit:.2?} after exit"
    );
}

//! All the rings of one ring directory, drained live: the core of the
//! consumer daemon.
//!
//! A [`RingSet`] owns a consuming [`RingReader`] for every ring file of a
//! directory. Each [`RingSet::poll`]:
//!
//! 1. checks, at most every [`RingSetOptions::liveness_interval`], whether the
//!    writer processes it knows still run (pid, start time and boot id, in
//!    /proc). A writer found dead is final: its rings are drained to the end,
//!    stepping over records it left half-written (counted as torn).
//! 2. rescans the directory with [`list_rings`] — cheaply: only when the
//!    directory changed (its mtime, ctime, size or inode), while a change may
//!    still be hidden by the file system's timestamp granularity, right after
//!    a writer was found dead, and every [`RingSetOptions::rescan_every`]
//!    polls. New files are opened with [`ReadMode::Consume`]; a file whose
//!    header is not there yet (still being created) is retried on every poll.
//! 3. drains every open ring, up to [`RingSetOptions::batch`] records each,
//!    handing every record to the caller's sink, then releases the space.
//! 4. forgets the rings of a process that exited once all of them were
//!    drained to the end (after its death), removing their files unless
//!    [`RingSetOptions::remove_exited`] is off. Their counters stay in
//!    [`RingSet::totals`].
//!
//! The caller sleeps [`RingSet::next_delay`] between polls: 1 ms while records
//! flow, doubling up to 100 ms while idle, so an idle consumer costs one
//! `stat` of the directory per poll and one /proc lookup per writer process
//! per [`RingSetOptions::liveness_interval`]. (No inotify: polling keeps this
//! portable to any file system and simple; the back-off bounds the cost.)
//!
//! Nothing in a ring file is trusted: files that cannot be opened, headers that
//! never become valid, and file names that do not match their header are
//! reported once each ([`RingSet::take_errors`]) and counted
//! ([`Totals::unreadable`]), never fatal; such files are never removed.
//!
//! Writer processes that exited but were not reaped yet (zombies) count as
//! exited (see [`process::is_alive`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::process;
use crate::ring::file::{list_rings, parse_ring_file_name};
use crate::ring::header::{Calibration, HeaderError, RingInfo};
use crate::ring::layout::{off, split_head};
use crate::ring::reader::{
    Cursor, DrainEnd, OpenError, ReadMode, ReaderStats, RingReader, WriterCheck, WriterCounters,
    DEFAULT_STALL_TIMEOUT,
};
use crate::ring::record::Record;

/// Identifies one ring: writer process (pid + start time) and CPU, as in
/// the file name `<pid>-<start time>.cpu<N>.ring`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Ord, PartialOrd)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct RingId {
    /// Writer process id.
    pub pid: u32,
    /// Writer process start time (clock ticks since boot).
    pub start_time: u64,
    /// CPU the ring serves.
    pub cpu: u32,
}

impl RingId {
    /// Parses the file name of a ring file path (`None` if it is not one).
    pub fn from_path(path: &Path) -> Option<RingId> {
        let (pid, start_time, cpu) = parse_ring_file_name(path.file_name()?.to_str()?)?;
        Some(RingId {
            pid,
            start_time,
            cpu,
        })
    }

    fn of_info(info: &RingInfo) -> RingId {
        RingId {
            pid: info.pid,
            start_time: info.start_time,
            cpu: info.cpu,
        }
    }
}

impl fmt::Display for RingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}.cpu{}", self.pid, self.start_time, self.cpu)
    }
}

/// Settings of a [`RingSet`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingSetOptions {
    /// Records drained from one ring per poll, at most (at least 1), so that
    /// one busy ring cannot starve the others. Default 4096.
    pub batch: usize,
    /// How long a live writer may keep a record reserved but uncommitted
    /// before the reader steps over it ([`RingReader::set_stall_timeout`]).
    /// Default [`DEFAULT_STALL_TIMEOUT`].
    pub stall_timeout: Duration,
    /// Remove the ring files of exited writers once they are drained.
    /// Default true. When false, drained files stay but are never reopened.
    pub remove_exited: bool,
    /// Rescan the directory at least every this many polls even if it looks
    /// unchanged (at least 1). Default 50.
    pub rescan_every: u32,
    /// How often each writer process is looked up in /proc. Default 250 ms.
    pub liveness_interval: Duration,
    /// How long a ring file may lack a valid header (still being created)
    /// before it is reported. A file whose writer (per its name) is not
    /// running is reported at once. Default 2 s.
    pub header_timeout: Duration,
    /// Delay after a poll that read something. Default 1 ms.
    pub min_delay: Duration,
    /// Longest delay while idle. Default 100 ms.
    pub max_delay: Duration,
    /// When ring space is freed. Default [`Release::AfterSink`].
    pub release: Release,
}

/// When a [`RingSet`] frees the ring space of records it handed to the sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Release {
    /// As soon as the sink returned.
    #[default]
    AfterSink,
    /// Only when the caller says the records are safe
    /// ([`RingSet::release_to`] with a [`RingSet::cursor`] taken after the
    /// poll): a consumer that crashes before an acknowledgement finds its
    /// records still in the rings. A writer's rings are removed only after
    /// everything in them was released.
    OnAck,
}

impl Default for RingSetOptions {
    fn default() -> RingSetOptions {
        RingSetOptions {
            batch: 4096,
            stall_timeout: DEFAULT_STALL_TIMEOUT,
            remove_exited: true,
            rescan_every: 50,
            liveness_interval: Duration::from_millis(250),
            header_timeout: Duration::from_secs(2),
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(100),
            release: Release::AfterSink,
        }
    }
}

/// What one [`RingSet::poll`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct PollStats {
    /// Records handed to the sink.
    pub records: u64,
    /// Rings open after the poll.
    pub rings_open: usize,
    /// Rings opened by this poll.
    pub rings_added: usize,
    /// Rings forgotten by this poll: their writer exited and they were
    /// drained (their files removed if [`RingSetOptions::remove_exited`]).
    pub rings_removed: usize,
    /// Nothing was read.
    pub idle: bool,
    /// Some ring stopped at the batch limit: poll again at once.
    pub more: bool,
    /// The directory was listed by this poll.
    pub rescanned: bool,
}

/// Counters over every ring this set has opened, including the rings it has
/// forgotten since.
///
/// For every ring, `writer.written = consumed_before + reader.read +
/// reader.torn + reader.corrupt + reader.gap + unread`; every record a writer
/// attempted is either written or counted in `writer.lost_*`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Totals {
    /// What the readers delivered and counted.
    pub reader: ReaderStats,
    /// The writers' counters from the ring headers (as last seen).
    pub writer: WriterCounters,
    /// Records an earlier consumer had already released when the rings were
    /// opened (0 for rings this set read from the start).
    pub consumed_before: u64,
    /// Rings opened.
    pub rings_opened: u64,
    /// Rings forgotten after their writer exited and they were drained.
    pub rings_finished: u64,
    /// Ring files removed (a subset of `rings_finished`).
    pub files_removed: u64,
    /// Files reported as unreadable (see [`RingSet::take_errors`]).
    pub unreadable: u64,
    /// Files found locked by another consumer (each counted once).
    pub busy: u64,
    /// Errors not kept because too many were waiting in [`RingSet::take_errors`].
    pub errors_dropped: u64,
}

impl Totals {
    /// Records lost: dropped by writers, or missing from the sequence.
    pub fn lost(&self) -> u64 {
        self.writer.lost() + self.reader.gap
    }

    /// Records skipped by the readers: torn or corrupt.
    pub fn skipped(&self) -> u64 {
        self.reader.torn + self.reader.corrupt
    }

    /// Records written but not read (nor counted) yet.
    pub fn unread(&self) -> u64 {
        let r = &self.reader;
        self.writer
            .written
            .saturating_sub(self.consumed_before + r.read + r.torn + r.corrupt + r.gap)
    }

    fn add_ring(&mut self, st: &ReaderStats, w: &WriterCounters, consumed_before: u64) {
        let r = &mut self.reader;
        r.read += st.read;
        r.torn += st.torn;
        r.corrupt += st.corrupt;
        r.gap += st.gap;
        r.resyncs += st.resyncs;
        r.skipped_bytes += st.skipped_bytes;
        let t = &mut self.writer;
        t.written += w.written;
        t.lost_full += w.lost_full;
        t.lost_too_big += w.lost_too_big;
        t.lost_no_ring += w.lost_no_ring;
        t.lost_corrupt += w.lost_corrupt;
        self.consumed_before += consumed_before;
    }
}

/// A ring file the set could not use (each reported once per file).
#[derive(Debug, thiserror::Error)]
pub enum RingSetError {
    /// The file could not be opened, locked, mapped, or its header is invalid.
    #[error(transparent)]
    Open(OpenError),
    /// The header did not become valid: its writer (per the file name) is not
    /// running, or `waited` exceeded [`RingSetOptions::header_timeout`]. The
    /// file is retried on rescans if its writer still runs.
    #[error("{}: no valid ring header after {waited:?}: {source}", path.display())]
    NotReady {
        /// The ring file.
        path: PathBuf,
        /// How long the set waited for the header.
        waited: Duration,
        /// What is wrong with it.
        source: HeaderError,
    },
    /// The header names another writer or CPU than the file name.
    #[error("{}: header says {header}, not what the file name says", path.display())]
    Mismatch {
        /// The ring file.
        path: PathBuf,
        /// Identity in the header.
        header: RingId,
    },
    /// A drained ring of an exited writer could not be removed (it is kept,
    /// and not reopened).
    #[error("removing {}: {source}", path.display())]
    Remove {
        /// The ring file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

impl RingSetError {
    /// The file concerned.
    pub fn path(&self) -> &Path {
        match self {
            RingSetError::Open(OpenError::Io { path, .. })
            | RingSetError::Open(OpenError::Busy(path))
            | RingSetError::Open(OpenError::Header { path, .. })
            | RingSetError::NotReady { path, .. }
            | RingSetError::Mismatch { path, .. }
            | RingSetError::Remove { path, .. } => path,
        }
    }
}

/// Errors kept for [`RingSet::take_errors`] at most; more are counted only.
const MAX_ERRORS: usize = 1024;

/// A directory change within this long before a listing may be invisible to
/// the next `stat` (timestamps are as coarse as a jiffy, or a second on some
/// file systems), so the directory is listed again meanwhile...
const RACY_WINDOW: Duration = Duration::from_secs(1);
/// ... but no more often than this.
const RACY_RECHECK: Duration = Duration::from_millis(10);

/// What the set knows about a ring file it has listed.
#[derive(Debug)]
enum FileState {
    /// Being read (in `procs`).
    Open,
    /// The header is not valid yet (the file is being created). Retried on
    /// every poll until reported, then on rescans.
    NotReady { since: Instant, reported: bool },
    /// Another consumer holds it; retried on rescans.
    Busy,
    /// Reported as unusable, or finished and kept: left alone unless the path
    /// comes to name another file.
    Ignored { file: Option<FileId> },
}

/// Tells a file from another created later under the same name: inode
/// numbers are reused at once on some file systems, birth times are not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    ino: u64,
    born: Option<SystemTime>,
}

impl FileId {
    fn of(path: &Path) -> Option<FileId> {
        let m = std::fs::symlink_metadata(path).ok()?;
        Some(FileId {
            ino: m.ino(),
            born: m.created().ok(),
        })
    }
}

/// One open ring.
struct Ring {
    id: RingId,
    path: PathBuf,
    file: Option<FileId>,
    info: RingInfo,
    reader: RingReader,
    consumed_before: u64,
    /// Drained to the end after its writer was found dead.
    finished: bool,
}

/// The open rings of one writer process.
struct Proc {
    rings: Vec<Ring>,
    boot_id: [u8; 16],
    dead: bool,
    checked: Option<Instant>,
}

/// What identifies the state of the directory itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DirStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl DirStamp {
    fn of(dir: &Path) -> Option<DirStamp> {
        let m = std::fs::metadata(dir).ok()?;
        Some(DirStamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }

    /// Whether the directory changed within `window` before `now` (or its
    /// timestamp is in the future).
    fn recent(&self, now: SystemTime, window: Duration) -> bool {
        let latest = self.mtime.max(self.ctime);
        let Ok(secs) = u64::try_from(latest.0) else {
            return false;
        };
        let t = UNIX_EPOCH + Duration::new(secs, latest.1.clamp(0, 999_999_999) as u32);
        match now.duration_since(t) {
            Ok(age) => age < window,
            Err(_) => true,
        }
    }
}

/// All the rings of one ring directory, drained live. See the module docs.
pub struct RingSet {
    dir: PathBuf,
    opts: RingSetOptions,
    files: HashMap<PathBuf, FileState>,
    /// Files to retry on every poll (not ready, not reported yet).
    unready: BTreeSet<PathBuf>,
    procs: BTreeMap<(u32, u64), Proc>,
    stamp: Option<DirStamp>,
    last_scan: Option<Instant>,
    racy: bool,
    racy_window: Duration,
    polls_since_scan: u32,
    idle_polls: u32,
    /// Counters of forgotten rings, and the set's own counts.
    done: Totals,
    errors: Vec<RingSetError>,
}

impl RingSet {
    /// A set for the ring files in `dir` (which need not exist yet). Nothing
    /// is opened before the first [`RingSet::poll`].
    pub fn new(dir: PathBuf, mut opts: RingSetOptions) -> RingSet {
        opts.batch = opts.batch.max(1);
        opts.rescan_every = opts.rescan_every.max(1);
        RingSet {
            dir,
            opts,
            files: HashMap::new(),
            unready: BTreeSet::new(),
            procs: BTreeMap::new(),
            stamp: None,
            last_scan: None,
            racy: false,
            racy_window: RACY_WINDOW,
            polls_since_scan: 0,
            idle_polls: 0,
            done: Totals::default(),
            errors: Vec::new(),
        }
    }

    /// The ring directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The settings in use.
    pub fn options(&self) -> &RingSetOptions {
        &self.opts
    }

    /// Rings currently open.
    pub fn rings_open(&self) -> usize {
        self.procs.values().map(|p| p.rings.len()).sum()
    }

    /// Finds new rings, drains every ring (up to the batch size each) into
    /// `sink`, and forgets the rings of exited writers once drained; see the
    /// module docs. `sink` gets each record with its ring's id, header and
    /// current clock calibration (for [`Calibration::to_unix_ns`]).
    ///
    /// With [`Release::AfterSink`] a record's space is released to the
    /// writers as soon as the sink returns: whatever the sink needs later, it
    /// must copy. With [`Release::OnAck`] nothing is released here: the
    /// caller releases with [`RingSet::release_to`] once downstream has the
    /// records (the consumer, on the relay's acknowledgement).
    ///
    /// Returns `Err` only when the directory could not be listed; the rings
    /// already open were drained anyway (see [`RingSet::totals`]) and the
    /// listing is retried at the next periodic rescan. Problems with single
    /// files never fail a poll: see [`RingSet::take_errors`].
    pub fn poll(
        &mut self,
        sink: &mut impl FnMut(&RingId, &Record<'_>, &RingInfo, Option<&Calibration>),
    ) -> io::Result<PollStats> {
        let mut st = PollStats::default();
        let newly_dead = self.check_liveness();
        let mut scan_error = None;
        let stamp = DirStamp::of(&self.dir);
        if self.scan_due(newly_dead, stamp) {
            st.rescanned = true;
            if let Err(e) = self.scan(stamp, &mut st) {
                scan_error = Some(e);
            }
        } else {
            self.polls_since_scan = self.polls_since_scan.saturating_add(1);
            for path in std::mem::take(&mut self.unready) {
                if let Some(id) = RingId::from_path(&path) {
                    self.try_open(path, id, &mut st);
                }
            }
        }
        self.drain(sink, &mut st);
        self.finish_exited(&mut st);
        st.rings_open = self.rings_open();
        st.idle = st.records == 0;
        self.idle_polls = if st.idle {
            self.idle_polls.saturating_add(1)
        } else {
            0
        };
        match scan_error {
            Some(e) => Err(e),
            None => Ok(st),
        }
    }

    /// How long to wait before the next poll, given the last one: nothing if
    /// a ring has more records right now, [`RingSetOptions::min_delay`] after
    /// a poll that read something, then doubling with every idle poll up to
    /// [`RingSetOptions::max_delay`].
    pub fn next_delay(&self, last: &PollStats) -> Duration {
        if last.more {
            return Duration::ZERO;
        }
        let min = self.opts.min_delay.min(self.opts.max_delay);
        if !last.idle {
            return min;
        }
        let factor = 1u32 << self.idle_polls.clamp(1, 20);
        min.saturating_mul(factor).min(self.opts.max_delay)
    }

    /// Where the reader of ring `id` stands (None if the ring is not open):
    /// every record it handed to a sink lies before it.
    pub fn cursor(&self, id: &RingId) -> Option<Cursor> {
        self.ring(id).map(|r| r.reader.cursor())
    }

    /// Frees the space of ring `id` before `cursor` (with
    /// [`Release::OnAck`]). Unknown rings and stale cursors are ignored.
    pub fn release_to(&mut self, id: &RingId, cursor: Cursor) {
        if let Some(r) = self
            .procs
            .get_mut(&(id.pid, id.start_time))
            .and_then(|p| p.rings.iter_mut().find(|r| r.id == *id))
        {
            r.reader.release_to(cursor);
        }
    }

    fn ring(&self, id: &RingId) -> Option<&Ring> {
        self.procs
            .get(&(id.pid, id.start_time))
            .and_then(|p| p.rings.iter().find(|r| r.id == *id))
    }

    /// Counters of every open ring: what its reader delivered and counted,
    /// and its writers' counters from the header. Rings already forgotten are
    /// only in [`RingSet::totals`].
    pub fn counters(&self) -> Vec<(RingId, ReaderStats, WriterCounters)> {
        self.procs
            .values()
            .flat_map(|p| p.rings.iter())
            .map(|r| (r.id, r.reader.stats(), r.reader.writer_counters()))
            .collect()
    }

    /// Counters summed over every ring ever opened, forgotten ones included.
    pub fn totals(&self) -> Totals {
        let mut t = self.done;
        for r in self.procs.values().flat_map(|p| p.rings.iter()) {
            t.add_ring(
                &r.reader.stats(),
                &r.reader.writer_counters(),
                r.consumed_before,
            );
        }
        t
    }

    /// Problems with single files found since the last call (each file is
    /// reported once, however often it is seen).
    pub fn take_errors(&mut self) -> Vec<RingSetError> {
        std::mem::take(&mut self.errors)
    }

    fn report(&mut self, e: RingSetError) {
        if self.errors.len() < MAX_ERRORS {
            self.errors.push(e);
        } else {
            self.done.errors_dropped += 1;
        }
    }

    /// Looks up writers not checked for a while; returns whether one was
    /// found dead.
    fn check_liveness(&mut self) -> bool {
        let now = Instant::now();
        let mut newly_dead = false;
        for (&(pid, start), p) in self.procs.iter_mut() {
            let due = p
                .checked
                .is_none_or(|t| now.duration_since(t) >= self.opts.liveness_interval);
            if !p.dead && due {
                p.check(pid, start, now);
                newly_dead |= p.dead;
            }
        }
        newly_dead
    }

    fn scan_due(&self, force: bool, stamp: Option<DirStamp>) -> bool {
        let Some(last) = self.last_scan else {
            return true;
        };
        force
            || self.polls_since_scan + 1 >= self.opts.rescan_every
            || stamp != self.stamp
            || (self.racy && last.elapsed() >= RACY_RECHECK)
    }

    /// Lists the directory and opens what is new. `stamp` was taken before
    /// listing, so a change made meanwhile triggers another scan.
    fn scan(&mut self, stamp: Option<DirStamp>, st: &mut PollStats) -> io::Result<()> {
        let now = SystemTime::now();
        self.last_scan = Some(Instant::now());
        self.polls_since_scan = 0;
        self.stamp = stamp;
        self.racy = stamp.is_some_and(|s| s.recent(now, self.racy_window));
        let listed = list_rings(&self.dir)?;
        let seen: HashSet<&PathBuf> = listed.iter().collect();
        self.files
            .retain(|p, s| matches!(s, FileState::Open) || seen.contains(p));
        self.unready.retain(|p| seen.contains(p));
        for path in listed {
            let Some(id) = RingId::from_path(&path) else {
                continue;
            };
            match self.files.get(&path) {
                Some(FileState::Open) => continue,
                Some(FileState::Ignored { file }) => {
                    if FileId::of(&path) == *file {
                        continue;
                    }
                    // Another file under the same name: start over.
                    self.files.remove(&path);
                }
                Some(FileState::NotReady { .. } | FileState::Busy) | None => {}
            }
            self.try_open(path, id, st);
        }
        Ok(())
    }

    fn try_open(&mut self, path: PathBuf, id: RingId, st: &mut PollStats) {
        self.unready.remove(&path);
        match RingReader::open(&path, ReadMode::Consume) {
            Ok(reader) => self.adopt(path, id, reader, st),
            Err(OpenError::Header {
                source: source @ (HeaderError::BadMagic | HeaderError::TooSmall(_)),
                ..
            }) => self.not_ready(path, id, source),
            Err(OpenError::Busy(_)) => {
                if !matches!(self.files.get(&path), Some(FileState::Busy)) {
                    self.done.busy += 1;
                }
                self.files.insert(path, FileState::Busy);
            }
            Err(OpenError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                // Removed since it was listed.
                self.files.remove(&path);
            }
            Err(e) => self.ignore(path, RingSetError::Open(e)),
        }
    }

    /// Reports `e` and leaves the file alone from now on.
    fn ignore(&mut self, path: PathBuf, e: RingSetError) {
        let file = FileId::of(&path);
        self.files.insert(path, FileState::Ignored { file });
        self.done.unreadable += 1;
        self.report(e);
    }

    /// A file without a valid header yet: its writer may be creating it.
    fn not_ready(&mut self, path: PathBuf, id: RingId, source: HeaderError) {
        let now = Instant::now();
        let since = match self.files.get(&path) {
            Some(FileState::NotReady { reported: true, .. }) => return,
            Some(FileState::NotReady { since, .. }) => *since,
            _ => now,
        };
        // Unknown boot id: pid and start time alone decide.
        let writer_gone = !process::is_alive(id.pid, id.start_time, &[0; 16]);
        let waited = now.duration_since(since);
        if writer_gone {
            let e = RingSetError::NotReady {
                path: path.clone(),
                waited,
                source,
            };
            self.ignore(path, e);
        } else if waited >= self.opts.header_timeout {
            self.files.insert(
                path.clone(),
                FileState::NotReady {
                    since,
                    reported: true,
                },
            );
            self.done.unreadable += 1;
            self.report(RingSetError::NotReady {
                path,
                waited,
                source,
            });
        } else {
            self.files.insert(
                path.clone(),
                FileState::NotReady {
                    since,
                    reported: false,
                },
            );
            self.unready.insert(path);
        }
    }

    fn adopt(&mut self, path: PathBuf, id: RingId, mut reader: RingReader, st: &mut PollStats) {
        let info = reader.info().clone();
        let header = RingId::of_info(&info);
        if header != id {
            self.ignore(path.clone(), RingSetError::Mismatch { path, header });
            return;
        }
        reader.set_stall_timeout(self.opts.stall_timeout);
        let consumed_before = consumed_before(&path, &reader);
        let file = FileId::of(&path);
        let proc = self
            .procs
            .entry((id.pid, id.start_time))
            .or_insert_with(|| Proc {
                rings: Vec::new(),
                boot_id: info.boot_id,
                dead: false,
                checked: None,
            });
        if proc.checked.is_none() {
            proc.check(id.pid, id.start_time, Instant::now());
        }
        if proc.dead {
            reader.set_writer_check(WriterCheck::Assume(false));
        }
        proc.rings.push(Ring {
            id,
            path: path.clone(),
            file,
            info,
            reader,
            consumed_before,
            finished: false,
        });
        self.files.insert(path, FileState::Open);
        self.done.rings_opened += 1;
        st.rings_added += 1;
    }

    fn drain(
        &mut self,
        sink: &mut impl FnMut(&RingId, &Record<'_>, &RingInfo, Option<&Calibration>),
        st: &mut PollStats,
    ) {
        let batch = self.opts.batch;
        let release = self.opts.release;
        for p in self.procs.values_mut() {
            // `dead` was established before this drain started, so a drain
            // that catches up has seen everything the writer ever wrote.
            let dead = p.dead;
            for ring in p.rings.iter_mut().filter(|r| !r.finished) {
                let end = if ring.reader.truncated() {
                    DrainEnd::Truncated
                } else if ring.reader.backlog_bytes() == 0 {
                    DrainEnd::CaughtUp
                } else {
                    let cal = ring.reader.calibration();
                    let (id, info) = (&ring.id, &ring.info);
                    let released_before = ring.reader.all_released();
                    let mut n = 0u64;
                    let end = ring.reader.drain(batch, |r| {
                        n += 1;
                        sink(id, r, info, cal.as_ref());
                    });
                    // With nothing delivered and everything delivered before
                    // released, the reader only stepped over records (torn
                    // by a killed writer, corrupt): free them now, as no
                    // acknowledgement will ever cover them and the ring
                    // could otherwise never be finished.
                    if release == Release::AfterSink || (n == 0 && released_before) {
                        ring.reader.release();
                    }
                    st.records += n;
                    end
                };
                match end {
                    DrainEnd::Limit => st.more = true,
                    DrainEnd::CaughtUp if dead && ring.reader.all_released() => {
                        ring.finished = true
                    }
                    DrainEnd::CaughtUp | DrainEnd::InProgress => {}
                    // Cut short under us: nothing more can be read from it.
                    DrainEnd::Truncated => ring.finished = true,
                }
            }
        }
    }

    /// Forgets processes that exited and whose rings are all drained, with
    /// their files (if so configured).
    fn finish_exited(&mut self, st: &mut PollStats) {
        let done: Vec<(u32, u64)> = self
            .procs
            .iter()
            .filter(|(_, p)| p.dead && p.rings.iter().all(|r| r.finished))
            .map(|(k, _)| *k)
            .collect();
        for key in done {
            let Some(p) = self.procs.remove(&key) else {
                continue;
            };
            for ring in p.rings {
                self.done.add_ring(
                    &ring.reader.stats(),
                    &ring.reader.writer_counters(),
                    ring.consumed_before,
                );
                self.done.rings_finished += 1;
                st.rings_removed += 1;
                if !self.opts.remove_exited {
                    self.files
                        .insert(ring.path, FileState::Ignored { file: ring.file });
                    continue;
                }
                // Unlinked while still locked by us: no other consumer can
                // pick the file up in between.
                match std::fs::remove_file(&ring.path) {
                    Ok(()) => {
                        self.done.files_removed += 1;
                        self.files.remove(&ring.path);
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        self.files.remove(&ring.path);
                    }
                    Err(source) => {
                        self.files
                            .insert(ring.path.clone(), FileState::Ignored { file: ring.file });
                        self.report(RingSetError::Remove {
                            path: ring.path,
                            source,
                        });
                    }
                }
                drop(ring.reader);
            }
        }
    }
}

impl Proc {
    fn check(&mut self, pid: u32, start: u64, now: Instant) {
        self.checked = Some(now);
        if !process::is_alive(pid, start, &self.boot_id) {
            self.dead = true;
            for r in &mut self.rings {
                r.reader.set_writer_check(WriterCheck::Assume(false));
            }
        }
    }
}

/// Records of the ring that a consumer before us already released: the
/// sequence number in the ring's `tail` word, widened to 64 bits against the
/// writers' count. 0 when the tail cannot be read or is implausible.
fn consumed_before(path: &Path, reader: &RingReader) -> u64 {
    let mut word = [0u8; 8];
    let read = std::fs::File::open(path).and_then(|f| f.read_exact_at(&mut word, off::TAIL as u64));
    if read.is_err() {
        return 0;
    }
    let (tail_seq, _) = split_head(u64::from_le_bytes(word));
    let written = reader.writer_counters().written;
    let pending = (written as u32).wrapping_sub(tail_seq) as u64;
    if pending > written {
        return 0;
    }
    written - pending
}

#[cfg(test)]
#[cfg_attr(miri, allow(unused))]
#[path = "ringset_tests.rs"]
mod tests;

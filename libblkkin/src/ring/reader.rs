//! Reading records out of a ring, treating every byte as hostile.
//!
//! The reader keeps its own cursor (free-running byte offset and the sequence
//! number it expects next). It copies a record out with atomic word loads,
//! validates the copy, then re-reads `head` to make sure no writer lapped it
//! while it was copying. Whatever it cannot use is counted: torn records of
//! dead writers, corrupt records, and records that vanished (sequence gaps).
//!
//! A consuming reader publishes its cursor as the ring's `tail` only when its
//! owner calls [`RingReader::release`], so the owner decides when records are
//! safely handed on (two-phase: drain, then release).

use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, Ordering};
use std::time::{Duration, Instant};

use super::header::{self, Calibration, HeaderError, RingInfo};
use super::layout::{self, join_head, off, split_head, CommitWord};
use super::mem::RingMem;
use super::record::{parse_record, Record};
use crate::process;

/// A reader position: byte offset and the sequence number of the next record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// Free-running byte offset in the ring.
    pub pos: u32,
    /// Sequence number (the ring's record count) of the next record; it is
    /// also the record's position in its stream.
    pub seq: u64,
}

/// How a reader uses a ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadMode {
    /// Read without changing anything (maps the file read-only).
    Peek,
    /// Own the ring's tail: [`RingReader::release`] frees space for writers.
    /// Only one consuming reader may hold a ring (an exclusive `flock`).
    Consume,
}

/// Errors opening a ring.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The file could not be opened, locked or mapped.
    #[error("{path}: {source}")]
    Io {
        /// The ring file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Another process already consumes this ring.
    #[error("{0}: ring is already being consumed by another reader")]
    Busy(PathBuf),
    /// The header is invalid.
    #[error("{path}: {source}")]
    Header {
        /// The ring file.
        path: PathBuf,
        /// What is wrong.
        source: HeaderError,
    },
}

/// Counters of what a reader saw and what it could not use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ReaderStats {
    /// Records delivered.
    pub read: u64,
    /// Records reserved by a writer that died (or stalled) before committing.
    pub torn: u64,
    /// Committed records whose body failed validation.
    pub corrupt: u64,
    /// Records missing from the sequence (overwritten, or inside skipped bytes).
    pub gap: u64,
    /// Times the reader had to search for the next valid record.
    pub resyncs: u64,
    /// Bytes skipped while searching.
    pub skipped_bytes: u64,
}

/// Writer-side counters from the ring header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct WriterCounters {
    /// Records reserved (exact, 64-bit).
    pub written: u64,
    /// Records dropped because the ring was full.
    pub lost_full: u64,
    /// Records dropped for exceeding the maximum record size.
    pub lost_too_big: u64,
    /// Records dropped before the process's rings existed.
    pub lost_no_ring: u64,
    /// Records dropped because the ring's head word was corrupt.
    pub lost_corrupt: u64,
}

impl WriterCounters {
    /// All records the writer dropped.
    pub fn lost(&self) -> u64 {
        // Saturating: the counters may come from a hostile ring or peer.
        self.lost_full
            .saturating_add(self.lost_too_big)
            .saturating_add(self.lost_no_ring)
            .saturating_add(self.lost_corrupt)
    }
}

/// Why a drain stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainEnd {
    /// Everything committed so far was read.
    CaughtUp,
    /// The next record is still being written by a live writer.
    InProgress,
    /// The `max` records asked for were delivered.
    Limit,
    /// The ring file is shorter than when it was mapped (someone truncated
    /// it): nothing more is read from it, since touching the missing pages
    /// would fault. Only the writer's own user can do this.
    Truncated,
}

/// Whether the ring's writer still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriterCheck {
    /// Look the writer up in /proc (pid, start time, boot id).
    Proc,
    /// Assume this answer (tests, or rings known to be finished).
    Assume(bool),
}

/// Reads records from one ring.
pub struct RingReader {
    mem: RingMem,
    info: RingInfo,
    path: Option<PathBuf>,
    _file: Option<File>,
    mode: ReadMode,
    mask: u32,
    cap: u32,
    max_record: u32,
    pos: u32,
    next_seq: u64,
    stall: Option<(u32, Instant)>,
    stall_timeout: Duration,
    writer_check: WriterCheck,
    alive_cache: Option<(Instant, bool)>,
    stats: ReaderStats,
    words: Vec<u64>,
    bytes: Vec<u8>,
}

/// Default time a live writer may keep a reserved record uncommitted before
/// the reader steps over it (counted as torn).
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(10);

impl RingReader {
    /// Opens a ring file.
    pub fn open(path: &Path, mode: ReadMode) -> Result<RingReader, OpenError> {
        let io = |source| OpenError::Io {
            path: path.to_owned(),
            source,
        };
        // O_NONBLOCK: a FIFO named like a ring must not block the open (it is
        // rejected just below); it has no effect on regular files.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(mode == ReadMode::Consume)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
            .map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        if !meta.is_file() {
            return Err(io(std::io::Error::other("not a regular file")));
        }
        if (meta.len() as usize) < layout::HEADER_SIZE {
            return Err(OpenError::Header {
                path: path.to_owned(),
                source: HeaderError::TooSmall(meta.len() as usize),
            });
        }
        let mem = match mode {
            ReadMode::Consume => {
                process::try_lock_exclusive(&file).map_err(|e| match e.kind() {
                    std::io::ErrorKind::WouldBlock => OpenError::Busy(path.to_owned()),
                    _ => io(e),
                })?;
                // SAFETY: the mapping is shared with other processes by design;
                // RingMem only touches it through atomics and bounded copies.
                RingMem::from_map_mut(unsafe { memmap2::MmapMut::map_mut(&file) }.map_err(io)?)
            }
            // SAFETY: as above, read-only.
            ReadMode::Peek => RingMem::from_map(unsafe { memmap2::Mmap::map(&file) }.map_err(io)?),
        };
        let mut r = RingReader::from_mem(mem, mode).map_err(|source| OpenError::Header {
            path: path.to_owned(),
            source,
        })?;
        r.path = Some(path.to_owned());
        r._file = Some(file);
        Ok(r)
    }

    /// Reads a ring held in `mem` (tests; in-process rings).
    pub fn from_mem(mem: RingMem, mode: ReadMode) -> Result<RingReader, HeaderError> {
        let info = header::read_header(&mem)?;
        let (seq, pos) = split_head(mem.word(off::TAIL).load(Ordering::Acquire));
        let max_record = info
            .max_record
            .min(info.data_size / 4)
            .max(layout::record_len(0) as u32);
        Ok(RingReader {
            mask: info.data_size - 1,
            cap: info.data_size,
            max_record,
            pos: pos & !7, // the tail word is untrusted: keep the cursor aligned
            next_seq: seq as u64,
            info,
            mem,
            path: None,
            _file: None,
            mode,
            stall: None,
            stall_timeout: DEFAULT_STALL_TIMEOUT,
            writer_check: WriterCheck::Proc,
            alive_cache: None,
            stats: ReaderStats::default(),
            words: vec![0; layout::MAX_RECORD_LIMIT as usize / 8 + 1],
            bytes: vec![0; layout::MAX_RECORD_LIMIT as usize + 8],
        })
    }

    /// The ring's header.
    pub fn info(&self) -> &RingInfo {
        &self.info
    }

    /// The file this reader opened, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// What this reader counted so far.
    pub fn stats(&self) -> ReaderStats {
        self.stats
    }

    /// Sets how the reader decides whether the writer is alive.
    pub fn set_writer_check(&mut self, check: WriterCheck) {
        self.writer_check = check;
        self.alive_cache = None;
    }

    /// Sets how long a live writer may hold a record uncommitted.
    pub fn set_stall_timeout(&mut self, t: Duration) {
        self.stall_timeout = t;
    }

    /// The current clock calibration (None if unreadable).
    pub fn calibration(&self) -> Option<Calibration> {
        if self.info.flags & layout::FLAG_TSC == 0 {
            return Some(Calibration::IDENTITY);
        }
        header::load_calibration(&self.mem)
    }

    /// Writer-side counters from the header.
    pub fn writer_counters(&self) -> WriterCounters {
        let get = |o| self.mem.word(o).load(Ordering::Relaxed);
        let (count, _) = split_head(get(off::HEAD));
        WriterCounters {
            written: (get(off::WRITTEN_EPOCHS) << 32) | count as u64,
            lost_full: get(off::LOST_FULL),
            lost_too_big: get(off::LOST_TOO_BIG),
            lost_no_ring: get(off::LOST_NO_RING),
            lost_corrupt: get(off::LOST_CORRUPT),
        }
    }

    /// True when the writer process is still running.
    pub fn writer_alive(&mut self) -> bool {
        match self.writer_check {
            WriterCheck::Assume(a) => a,
            WriterCheck::Proc => {
                if let Some((at, alive)) = self.alive_cache {
                    if at.elapsed() < Duration::from_millis(200) {
                        return alive;
                    }
                }
                let alive =
                    process::is_alive(self.info.pid, self.info.start_time, &self.info.boot_id);
                self.alive_cache = Some((Instant::now(), alive));
                alive
            }
        }
    }

    /// True when the ring file is now shorter than the mapping (someone
    /// truncated it): touching the missing pages would fault, so callers
    /// must stop using the ring. One `fstat`; this narrows the hazard to a
    /// truncation racing with the very next access (only the writer's own
    /// user can truncate the file).
    pub fn truncated(&self) -> bool {
        match &self._file {
            Some(file) => !matches!(file.metadata(), Ok(m) if m.len() >= self.mem.len() as u64),
            None => false,
        }
    }

    /// Bytes committed or in flight that this reader has not passed yet.
    pub fn backlog_bytes(&self) -> u32 {
        let (_, head) = split_head(self.mem.word(off::HEAD).load(Ordering::Acquire));
        head.wrapping_sub(self.pos).min(self.cap)
    }

    /// Publishes the cursor as the ring's tail (consuming readers only),
    /// freeing the space of every record drained so far for writers.
    pub fn release(&mut self) {
        if self.mode == ReadMode::Consume {
            self.store_tail(self.cursor());
        }
    }

    fn store_tail(&self, c: Cursor) {
        self.mem
            .word(off::TAIL)
            .store(join_head(c.seq as u32, c.pos), Ordering::Release);
    }

    /// Where the reader stands: everything before it has been drained.
    /// Keep it with the records handed on, and [`RingReader::release_to`] it
    /// once they are safe (acknowledged), for a two-phase consumer.
    pub fn cursor(&self) -> Cursor {
        Cursor {
            pos: self.pos,
            seq: self.next_seq,
        }
    }

    /// True when the ring's tail is at the reader's cursor: every drained
    /// record has been released.
    pub fn all_released(&self) -> bool {
        let (_, tail) = split_head(self.mem.word(off::TAIL).load(Ordering::Acquire));
        self.mode != ReadMode::Consume || tail == self.pos
    }

    /// Frees the ring space before `cursor` (one this reader returned). A
    /// cursor behind the current tail, or ahead of the reader, is ignored:
    /// space is only ever freed forward, and only for drained records.
    pub fn release_to(&mut self, cursor: Cursor) {
        if self.mode != ReadMode::Consume || self.pos.wrapping_sub(cursor.pos) > self.cap {
            return; // not a cursor of ours (ahead of the reader)
        }
        let (_, tail) = split_head(self.mem.word(off::TAIL).load(Ordering::Relaxed));
        let tail_plausible = self.pos.wrapping_sub(tail) <= self.cap;
        let forward = cursor.pos.wrapping_sub(tail);
        // Only forward of a sane tail; a scribbled tail is simply replaced.
        if !tail_plausible || (forward != 0 && forward <= self.cap) {
            self.store_tail(cursor);
        }
    }

    /// Delivers up to `max` records to `f`, in ring order.
    pub fn drain<F: FnMut(&Record<'_>)>(&mut self, max: usize, mut f: F) -> DrainEnd {
        if self.truncated() {
            return DrainEnd::Truncated;
        }
        let mut delivered = 0;
        loop {
            if delivered >= max {
                return DrainEnd::Limit;
            }
            let (hcount, hoff) = split_head(self.mem.word(off::HEAD).load(Ordering::Acquire));
            let avail = hoff.wrapping_sub(self.pos);
            if avail == 0 {
                return DrainEnd::CaughtUp;
            }
            if avail > self.cap {
                // Lapped by writers (overwrite mode, or a consumer freed space
                // under a peeking reader), or a corrupt cursor: restart from the
                // oldest bytes that can still be intact.
                let from = hoff.wrapping_sub(self.cap).wrapping_add(self.max_record) & !7;
                self.resync(from, hoff, hcount);
                continue;
            }
            let idx = self.pos & self.mask;
            let at = layout::HEADER_SIZE + idx as usize;
            let cw = CommitWord::decode(self.mem.word(at).load(Ordering::Acquire));
            let to_end = self.cap - idx;
            if !cw.is_for(self.pos) {
                if self.give_up_waiting() {
                    self.resync(self.pos.wrapping_add(8), hoff, hcount);
                    continue;
                }
                return DrainEnd::InProgress;
            }
            let framed = cw.len >= layout::record_len(0) as u32
                && cw.len.is_multiple_of(8)
                && cw.len <= self.max_record
                && cw.len <= to_end
                && cw.len <= avail;
            match cw.state {
                layout::STATE_PADDING => {
                    if cw.len != to_end || cw.len > avail {
                        self.resync(self.pos.wrapping_add(8), hoff, hcount);
                    } else {
                        self.advance(cw.len, false);
                    }
                }
                layout::STATE_RESERVED => {
                    if !framed {
                        self.resync(self.pos.wrapping_add(8), hoff, hcount);
                    } else if self.give_up_waiting() {
                        self.stats.torn += 1;
                        self.advance(cw.len, true);
                    } else {
                        return DrainEnd::InProgress;
                    }
                }
                _ => {
                    if !framed {
                        self.resync(self.pos.wrapping_add(8), hoff, hcount);
                        continue;
                    }
                    let n = cw.len as usize / 8;
                    self.mem.read_words(at, &mut self.words[..n]);
                    fence(Ordering::Acquire);
                    let (_, h2) = split_head(self.mem.word(off::HEAD).load(Ordering::Relaxed));
                    if h2.wrapping_sub(self.pos) > self.cap {
                        continue; // overwritten while copying: handled as a lap above
                    }
                    for (i, w) in self.words[..n].iter().enumerate() {
                        self.bytes[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
                    }
                    match parse_record(&self.bytes[..cw.len as usize], cw.kind) {
                        Ok(mut r) => {
                            let gap = (r.seq.wrapping_sub(self.next_seq as u32)) as u64;
                            if gap != 0 && gap < (1 << 31) {
                                self.stats.gap += gap;
                                self.next_seq += gap;
                            }
                            r.position = self.next_seq;
                            self.stats.read += 1;
                            delivered += 1;
                            f(&r);
                            self.advance(cw.len, true);
                        }
                        Err(_) => {
                            self.stats.corrupt += 1;
                            self.advance(cw.len, true);
                        }
                    }
                }
            }
        }
    }

    fn advance(&mut self, len: u32, record: bool) {
        self.pos = self.pos.wrapping_add(len);
        if record {
            self.next_seq += 1;
        }
        self.stall = None;
    }

    /// Decides whether to stop waiting for the record at the cursor.
    fn give_up_waiting(&mut self) -> bool {
        if !self.writer_alive() {
            return true;
        }
        match self.stall {
            Some((p, since)) if p == self.pos => since.elapsed() >= self.stall_timeout,
            _ => {
                self.stall = Some((self.pos, Instant::now()));
                false
            }
        }
    }

    /// Moves the cursor to the first plausible record at or after `from`
    /// (before `limit`), counting the bytes it skips.
    fn resync(&mut self, from: u32, limit: u32, limit_count: u32) {
        self.stats.resyncs += 1;
        let mut p = from & !7;
        while p != limit && limit.wrapping_sub(p) <= self.cap {
            let idx = p & self.mask;
            let cw = CommitWord::decode(
                self.mem
                    .word(layout::HEADER_SIZE + idx as usize)
                    .load(Ordering::Acquire),
            );
            let to_end = self.cap - idx;
            let plausible = cw.is_for(p)
                && if cw.state == layout::STATE_PADDING {
                    cw.len == to_end
                } else {
                    cw.len >= layout::record_len(0) as u32
                        && cw.len <= self.max_record
                        && cw.len <= to_end
                };
            if plausible {
                self.stats.skipped_bytes += p.wrapping_sub(self.pos).min(self.cap) as u64;
                self.pos = p;
                self.stall = None;
                return;
            }
            p = p.wrapping_add(8);
        }
        // Nothing usable up to the head: everything before it is gone.
        self.stats.skipped_bytes += limit.wrapping_sub(self.pos).min(self.cap) as u64;
        let gap = limit_count.wrapping_sub(self.next_seq as u32) as u64;
        if gap < (1 << 31) {
            self.stats.gap += gap;
            self.next_seq += gap;
        }
        self.pos = limit;
        self.stall = None;
    }
}

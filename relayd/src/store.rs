//! Persistence: one directory per stream, append-only segment files.
//!
//! ```text
//! DATA_DIR/streams/<node hex>-<pid>-<start time>-<cpu>/
//!     meta.json                     key, calibration, counters, closed flag
//!     <first position, 20 digits>.seg
//! entry = len u32 LE | crc32 u32 LE (of position and record) | position u64 LE | record (len bytes)
//! ```
//!
//! Records are the raw ring records (commit word + body). Positions in a
//! stream strictly increase but may skip (a gap the consumer reported, or a
//! record refused at ingest). On open every segment is scanned: entries are
//! checked (length, CRC, framing, increasing position) and the file is
//! truncated at the first bad one, so a torn tail after a crash is dropped.
//! A sparse in-memory index (every [`INDEX_EVERY`]th entry) lets readers
//! seek to a position.
//!
//! **Ingest screening.** Every record is decoded as a reader would decode it
//! and its sequence number must be its position's low 32 bits (what a ring
//! writes). A record that fails is not stored: its position is consumed and
//! counted in `lost_refused`, so one bad record can never stop a reader.
//!
//! **Durability.** Each stream remembers the state its last successful sync
//! covered ([`Stream::durable_next`]); only positions below it are ever
//! acknowledged. When a write or a sync fails, the stream is rolled back to
//! that state (files truncated to the synced length, segments created since
//! removed) and the error is returned: the consumer, never acknowledged,
//! sends the records again and they are written and synced anew. (After a
//! failed `fsync` Linux may have dropped the dirty pages and a second
//! `fsync` can succeed without them: rewriting is the only safe retry.)
//! Directories are synced after a segment is created and after `meta.json`
//! is replaced. Files are created 0600 and directories 0700: the records
//! are as private as the rings they came from.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use anyhow::Context;
use blkkin::ring::header::Calibration;
use blkkin::ring::layout::CommitWord;
use blkkin::ring::reader::{ReaderStats, WriterCounters};
use blkkin::ring::record::parse_record;
use blkkin::wire::{StreamCounters, StreamKey, StreamSummary};
use serde_json::json;

use crate::config::{FsyncPolicy, StoreConfig};
use recover::{key_from_dir_name, load_meta, recover_segment};
use segfile::SegmentFile;

mod recover;
mod segfile;

/// Bytes of an entry header.
pub const ENTRY_HEADER: usize = 16;
/// Largest record accepted (ring records are at most 64 KiB: 16-bit length).
pub const MAX_RECORD: usize = 1 << 16;
/// One index point every this many entries.
pub const INDEX_EVERY: u64 = 64;
/// Largest forward jump of positions a `Records` frame may make: a ring's
/// sequence numbers are 32-bit, so a jump this large cannot be checked
/// against them (and no consumer loses 2^32 records between two frames).
pub const MAX_JUMP: u64 = 1 << 32;
/// Mode of the relay's directories.
pub const DIR_MODE: u32 = 0o700;
/// Mode of the relay's files.
pub const FILE_MODE: u32 = 0o600;

/// Why an append was refused outright (nothing of it is stored).
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// The frame's first position jumps too far past the stream's end.
    #[error(
        "records at position {first} jump {jump} past the stream's end {next} (at most {MAX_JUMP})"
    )]
    Jump {
        /// The frame's first position.
        first: u64,
        /// The stream's next position.
        next: u64,
        /// `first - next`.
        jump: u64,
    },
}

/// Why a record is refused at ingest, if it is.
pub fn screen(record: &[u8], pos: u64) -> Result<(), String> {
    let cw = CommitWord::decode(u64::from_le_bytes(
        record
            .get(..8)
            .ok_or("shorter than a commit word")?
            .try_into()
            .expect("8 bytes"),
    ));
    let r = parse_record(record, cw.kind).map_err(|e| e.to_string())?;
    if r.seq != pos as u32 {
        return Err(format!(
            "sequence number {} is not that of position {pos}",
            r.seq
        ));
    }
    Ok(())
}

/// CRC-32 (IEEE, as zlib and gzip); `init` chains calls. Computed by
/// `crc32fast` (carry-less multiplication where the CPU has it): the
/// byte-table version cost a third of the relay's CPU at full rate.
pub fn crc32(init: u32, data: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new_with_initial(init);
    h.update(data);
    h.finalize()
}

fn entry_crc(pos: u64, record: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&pos.to_le_bytes());
    h.update(record);
    h.finalize()
}

/// Splits well-framed ring records (as checked by [`blkkin::wire::count_records`]).
pub fn split_records(records: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 8 <= records.len() {
        let w = u64::from_le_bytes(records[at..at + 8].try_into().expect("8 bytes"));
        let len = CommitWord::decode(w).len as usize;
        if len == 0 || at + len > records.len() {
            break;
        }
        out.push(&records[at..at + len]);
        at += len;
    }
    out
}

#[derive(Debug, Clone)]
struct Segment {
    /// Position in the file name (the first entry's, when it has one).
    base: u64,
    path: PathBuf,
    /// Valid bytes.
    len: u64,
    /// (position, byte offset) of every INDEX_EVERY-th entry.
    index: Vec<(u64, u64)>,
    entries: u64,
    /// Position of the last entry.
    last: Option<u64>,
    /// When the segment was last written (its newest record's age).
    modified: SystemTime,
}

/// Metadata of a stream, kept in `meta.json`.
#[derive(Debug, Clone, Default)]
pub struct Meta {
    /// Calibration of the ring.
    pub calibration: Calibration,
    /// The writer exited and the stream is complete.
    pub closed: bool,
    /// Last counters the consumer sent.
    pub reader: ReaderStats,
    /// Last writer counters the consumer sent.
    pub writer: WriterCounters,
    /// Records the relay never received (position gaps in what consumers sent).
    pub lost_gap: u64,
    /// Records refused at ingest (no reader could decode them).
    pub lost_refused: u64,
    /// Records lost to damage in the stream's own files.
    pub lost_corrupt: u64,
    /// Positions below this were deleted by retention (keeps `next` when a
    /// stream's every segment was deleted).
    pub retained_to: u64,
}

impl Meta {
    /// The loss counters readers are sent.
    pub fn counters(&self) -> StreamCounters {
        StreamCounters {
            reader: self.reader,
            writer: self.writer,
            relay_gap: self.lost_gap,
            relay_refused: self.lost_refused,
            relay_corrupt: self.lost_corrupt,
            // Per reader: filled in by the reader session.
            relay_retention: 0,
        }
    }
}

struct Inner {
    segments: Vec<Segment>,
    active: Option<SegmentFile>,
    next: u64,
    meta: Meta,
    /// What the last successful sync covered.
    durable: Durable,
    /// A segment was created since the directory was last synced.
    dir_dirty: bool,
    /// Damage met by reads (segment, offset), counted once.
    damage_seen: std::collections::HashSet<(PathBuf, u64)>,
}

/// The state of a stream that stable storage holds: where a failed write
/// or sync rolls back to.
#[derive(Debug, Clone, Copy, Default)]
struct Durable {
    /// Positions below are synced (and may be acknowledged).
    next: u64,
    /// The last segment then: its base, valid bytes, entries, last
    /// position and index points (`None`: there was none).
    seg: Option<(u64, u64, u64, Option<u64>, usize)>,
    lost_gap: u64,
    lost_refused: u64,
}

impl Durable {
    fn of(g: &Inner) -> Durable {
        Durable {
            next: g.next,
            seg: g
                .segments
                .last()
                .map(|s| (s.base, s.len, s.entries, s.last, s.index.len())),
            lost_gap: g.meta.lost_gap,
            lost_refused: g.meta.lost_refused,
        }
    }
}

/// One stream.
pub struct Stream {
    key: StreamKey,
    dir: PathBuf,
    cfg: StoreConfig,
    inner: Mutex<Inner>,
    /// Bumped on every change a reader may care about (records, metadata,
    /// retention): readers skip streams whose version they have seen.
    version: AtomicU64,
}

/// Result of [`Stream::append`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Records written.
    pub written: u64,
    /// Records skipped because the stream already held their positions.
    pub duplicates: u64,
    /// Positions skipped (lost) before this batch.
    pub gap: u64,
    /// Records refused at ingest (undecodable, or a sequence number that
    /// is not their position's): counted in `lost_refused`, not stored.
    pub refused: u64,
    /// Next position of the stream.
    pub next: u64,
}

fn dir_name(key: &StreamKey) -> String {
    let hex: String = key.node.bytes().map(|b| format!("{b:02x}")).collect();
    format!("{hex}-{}-{}-{}", key.pid, key.start_time, key.cpu)
}

fn seg_name(base: u64) -> String {
    format!("{base:020}.seg")
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `dir` (and missing parents) with [`DIR_MODE`], and tightens the
/// mode of an existing one.
fn private_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE))
}

impl Stream {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn touch(&self) {
        self.version.fetch_add(1, Ordering::Release);
    }

    /// Changes so far (see [`Stream::touch`]): equal values mean nothing
    /// changed in between.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// True when the stream never received a record (nothing stored, no
    /// position consumed, nothing counted).
    pub fn is_unused(&self) -> bool {
        let g = self.lock();
        g.next == 0 && g.segments.iter().all(|s| s.entries == 0) && g.meta.counters().lost() == 0
    }

    /// The stream's key.
    pub fn key(&self) -> &StreamKey {
        &self.key
    }

    /// Position the next record gets.
    pub fn next(&self) -> u64 {
        self.lock().next
    }

    /// Position of the oldest record held (`next` when empty).
    pub fn first(&self) -> u64 {
        let g = self.lock();
        first_of(&g)
    }

    /// A copy of the metadata.
    pub fn meta(&self) -> Meta {
        self.lock().meta.clone()
    }

    /// Bytes held on disk (segments).
    pub fn size(&self) -> u64 {
        self.lock().segments.iter().map(|s| s.len).sum()
    }

    /// Positions below this were (or could have been) deleted by retention.
    pub fn retained_to(&self) -> u64 {
        self.lock().meta.retained_to
    }

    /// Number of segment files.
    pub fn segment_count(&self) -> usize {
        self.lock().segments.len()
    }

    /// Summary for `List`.
    pub fn summary(&self) -> StreamSummary {
        let g = self.lock();
        StreamSummary {
            key: self.key.clone(),
            first: first_of(&g),
            next: g.next,
            closed: g.meta.closed,
        }
    }

    fn create(
        key: StreamKey,
        dir: PathBuf,
        cfg: StoreConfig,
        cal: Calibration,
    ) -> anyhow::Result<Stream> {
        private_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let s = Stream {
            key,
            dir,
            cfg,
            inner: Mutex::new(Inner {
                segments: Vec::new(),
                active: None,
                next: 0,
                meta: Meta {
                    calibration: cal,
                    ..Meta::default()
                },
                durable: Durable::default(),
                dir_dirty: false,
                damage_seen: Default::default(),
            }),
            version: AtomicU64::new(0),
        };
        s.save_meta(&s.lock().meta)?;
        if s.cfg.fsync != FsyncPolicy::Never {
            if let Some(parent) = s.dir.parent() {
                sync_dir(parent)?;
            }
        }
        Ok(s)
    }

    fn open(dir: PathBuf, cfg: StoreConfig) -> anyhow::Result<Stream> {
        let (key, mut meta, mut save) = match load_meta(&dir.join("meta.json")) {
            Ok((k, m)) => (k, m, false),
            Err(e) => {
                // Rebuilt from the directory name and the segments; the
                // calibration and loss counters it held are gone.
                let name = dir.file_name().map(|n| n.to_string_lossy().into_owned());
                let key = name.as_deref().and_then(key_from_dir_name).with_context(|| {
                    format!("{}/meta.json is unreadable ({e:#}) and the directory name is not a stream key", dir.display())
                })?;
                tracing::error!(dir = %dir.display(), "meta.json unreadable ({e:#}): rebuilt from the directory name and the segments (calibration and loss counters reset)");
                (
                    key,
                    Meta {
                        calibration: Calibration::IDENTITY,
                        ..Meta::default()
                    },
                    true,
                )
            }
        };
        // Data written by an older relay may be world-readable: tighten it.
        private_dir(&dir).with_context(|| format!("setting the mode of {}", dir.display()))?;
        let mut names: Vec<(u64, PathBuf)> = Vec::new();
        for e in fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
            let e = e?;
            if e.file_type()?.is_file() {
                fs::set_permissions(e.path(), fs::Permissions::from_mode(FILE_MODE))
                    .with_context(|| format!("setting the mode of {}", e.path().display()))?;
            }
            let name = e.file_name();
            let name = name.to_string_lossy();
            if let Some(base) = name
                .strip_suffix(".seg")
                .and_then(|b| b.parse::<u64>().ok())
            {
                names.push((base, e.path()));
            }
        }
        names.sort();
        let mut segments: Vec<Segment> = Vec::new();
        let mut last: Option<u64> = None;
        let mut damaged_tail = false;
        let count = names.len();
        for (i, (base, path)) in names.into_iter().enumerate() {
            let r = recover_segment(base, &path, last, i + 1 == count)
                .with_context(|| format!("recovering {}", path.display()))?;
            let seg = r.seg;
            if damaged_tail {
                // The previous segment ended in damage: its positions up to
                // this segment's first are lost.
                if let Some(first) = seg.index.first().map(|p| p.0) {
                    let lost = first - last.map_or(0, |l| l + 1);
                    meta.lost_corrupt = meta.lost_corrupt.saturating_add(lost);
                }
            }
            if r.corrupt > 0 || r.damaged_tail {
                meta.lost_corrupt = meta.lost_corrupt.saturating_add(r.corrupt);
                save = true;
            }
            damaged_tail = r.damaged_tail;
            if seg.entries == 0 && !segments.is_empty() {
                // An empty segment after others: left by a crash right after creation.
                fs::remove_file(&path).ok();
                continue;
            }
            last = seg.last.or(last);
            segments.push(seg);
        }
        let next = last.map_or(0, |l| l + 1).max(meta.retained_to);
        let mut inner = Inner {
            segments,
            active: None,
            next,
            meta,
            durable: Durable::default(),
            dir_dirty: false,
            damage_seen: Default::default(),
        };
        // What recovery found is what the disk holds.
        inner.durable = Durable::of(&inner);
        let s = Stream {
            key,
            dir,
            cfg,
            inner: Mutex::new(inner),
            version: AtomicU64::new(0),
        };
        if save {
            let m = s.lock().meta.clone();
            s.save_meta(&m)?;
        }
        Ok(s)
    }

    fn save_meta(&self, m: &Meta) -> anyhow::Result<()> {
        let c = &m.calibration;
        let r = &m.reader;
        let w = &m.writer;
        let v = json!({
            "node": self.key.node, "pid": self.key.pid,
            "start_time": self.key.start_time, "cpu": self.key.cpu,
            "calibration": [c.raw0, c.ns0, c.raw1, c.ns1],
            "closed": m.closed,
            "reader": [r.read, r.torn, r.corrupt, r.gap, r.resyncs, r.skipped_bytes],
            "writer": [w.written, w.lost_full, w.lost_too_big, w.lost_no_ring, w.lost_corrupt],
            "lost_gap": m.lost_gap,
            "lost_refused": m.lost_refused,
            "lost_corrupt": m.lost_corrupt,
            "retained_to": m.retained_to,
        });
        let tmp = self.dir.join("meta.json.tmp");
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(FILE_MODE)
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(v.to_string().as_bytes())?;
        if self.cfg.fsync != FsyncPolicy::Never {
            f.sync_all()?;
        }
        fs::rename(&tmp, self.dir.join("meta.json"))?;
        if self.cfg.fsync != FsyncPolicy::Never {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Updates the metadata with `f` and saves it.
    pub fn update_meta(&self, f: impl FnOnce(&mut Meta)) -> anyhow::Result<()> {
        let mut g = self.lock();
        f(&mut g.meta);
        let m = g.meta.clone();
        self.touch();
        self.save_meta(&m)
    }

    /// Appends `records` (whole ring records, back to back) whose first has
    /// position `first`. Positions already held are skipped; positions
    /// after `next` are counted as lost. Synced as the policy says.
    pub fn append(&self, first: u64, records: &[u8]) -> anyhow::Result<Appended> {
        let a = self.append_deferred(first, records)?;
        self.sync_batch()?;
        Ok(a)
    }

    /// Positions below this are on stable storage as the fsync policy
    /// promises (with `never`: written): the most a consumer may be
    /// acknowledged.
    pub fn durable_next(&self) -> u64 {
        self.lock().durable.next
    }

    /// Counts `n` records refused without being stored (a frame refused
    /// outright) in `lost_refused`.
    pub fn refuse(&self, n: u64) -> anyhow::Result<()> {
        self.update_meta(|m| m.lost_refused = m.lost_refused.saturating_add(n))
    }

    /// Like [`Stream::append`], but leaves the `batch` policy's sync to a
    /// later [`Stream::sync_batch`] (group commit: one sync for several
    /// batches that arrived together). Nothing appended may be acknowledged
    /// before that sync ([`Stream::durable_next`] says what may). A frame
    /// jumping more than [`MAX_JUMP`] past the stream's end is refused
    /// whole with [`Refused::Jump`]. After a failed write the stream is
    /// rolled back to its last synced state.
    pub fn append_deferred(&self, first: u64, records: &[u8]) -> anyhow::Result<Appended> {
        let recs = split_records(records);
        let mut g = self.lock();
        if first > g.next && first - g.next >= MAX_JUMP {
            return Err(Refused::Jump {
                first,
                next: g.next,
                jump: first - g.next,
            }
            .into());
        }
        let r = self.append_locked(&mut g, first, &recs);
        self.touch();
        if r.is_err() {
            self.roll_back(&mut g);
        } else if self.cfg.fsync == FsyncPolicy::Never
            || (self.cfg.fsync == FsyncPolicy::Always && !g.dir_dirty)
        {
            // `never` promises nothing more than the write; `always` synced
            // every flush (and the directory of a new segment).
            g.durable = Durable::of(&g);
        }
        r
    }

    fn append_locked(&self, g: &mut Inner, first: u64, recs: &[&[u8]]) -> anyhow::Result<Appended> {
        let mut out = Appended {
            written: 0,
            duplicates: 0,
            gap: 0,
            refused: 0,
            next: g.next,
        };
        let skip = g.next.saturating_sub(first).min(recs.len() as u64);
        out.duplicates = skip;
        if skip as usize == recs.len() {
            return Ok(out);
        }
        let mut pos = first + skip;
        if pos > g.next {
            out.gap = pos - g.next;
            g.meta.lost_gap = g.meta.lost_gap.saturating_add(out.gap);
        }
        let mut buf = Vec::new();
        for rec in &recs[skip as usize..] {
            if let Err(why) = screen(rec, pos) {
                if out.refused == 0 {
                    tracing::warn!(stream = %self.dir.display(), pos, "record refused at ingest: {why}");
                }
                out.refused += 1;
                pos += 1;
                continue;
            }
            let need_new = match g.segments.last() {
                None => true,
                Some(s) => s.len + buf.len() as u64 >= self.cfg.segment_size && s.entries > 0,
            };
            if need_new {
                self.flush(g, &mut buf)?;
                self.new_segment(g, pos)?;
            }
            let seg = g.segments.last_mut().expect("a segment");
            let off = seg.len + buf.len() as u64;
            if seg.entries.is_multiple_of(INDEX_EVERY) {
                seg.index.push((pos, off));
            }
            seg.entries += 1;
            seg.last = Some(pos);
            buf.extend_from_slice(&(rec.len() as u32).to_le_bytes());
            buf.extend_from_slice(&entry_crc(pos, rec).to_le_bytes());
            buf.extend_from_slice(&pos.to_le_bytes());
            buf.extend_from_slice(rec);
            if self.cfg.fsync == FsyncPolicy::Always || buf.len() >= 1 << 20 {
                self.flush(g, &mut buf)?;
            }
            pos += 1;
            out.written += 1;
        }
        self.flush(g, &mut buf)?;
        g.next = pos;
        out.next = pos;
        if out.gap > 0 || out.refused > 0 {
            g.meta.lost_refused = g.meta.lost_refused.saturating_add(out.refused);
            let m = g.meta.clone();
            self.save_meta(&m)?;
        }
        self.retain(g)?;
        Ok(out)
    }

    /// The `batch` policy's sync of what was appended (`fdatasync` of the
    /// active segment, earlier segments having been synced when they were
    /// closed, and of the directory when a segment was created); afterwards
    /// [`Stream::durable_next`] covers it. After a failure the stream is
    /// rolled back to its last synced state.
    pub fn sync_batch(&self) -> anyhow::Result<()> {
        let mut g = self.lock();
        if g.durable.next == g.next && !g.dir_dirty {
            return Ok(());
        }
        let r = (|| -> anyhow::Result<()> {
            if self.cfg.fsync != FsyncPolicy::Never {
                if let Some(f) = &g.active {
                    f.sync_data()
                        .with_context(|| format!("syncing {}", self.dir.display()))?;
                }
                if g.dir_dirty {
                    sync_dir(&self.dir)
                        .with_context(|| format!("syncing directory {}", self.dir.display()))?;
                }
            }
            Ok(())
        })();
        match r {
            Ok(()) => {
                g.dir_dirty = false;
                g.durable = Durable::of(&g);
            }
            Err(_) => {
                self.roll_back(&mut g);
                self.touch();
            }
        }
        r
    }

    /// Returns the stream to its last synced state after a failed write or
    /// sync: segments created since are removed, the last synced one is
    /// truncated to its synced length (nothing torn stays behind), and the
    /// positions (and loss counters) written since are given back, so the
    /// consumer's resend writes them again.
    fn roll_back(&self, g: &mut Inner) {
        let d = g.durable;
        tracing::warn!(stream = %self.dir.display(), from = g.next, to = d.next, "write or sync failed: rolling back to the last synced state");
        g.active = None;
        let keep_base = d.seg.map(|s| s.0);
        g.segments.retain(|s| {
            let created_since = Some(s.base) != keep_base && s.base >= d.next;
            if created_since {
                if let Err(e) = fs::remove_file(&s.path) {
                    tracing::error!(path = %s.path.display(), "cannot remove an unsynced segment: {e}");
                }
            }
            !created_since
        });
        if let Some((base, len, entries, last, index)) = d.seg {
            if let Some(s) = g.segments.iter_mut().find(|s| s.base == base) {
                let cut = OpenOptions::new()
                    .write(true)
                    .open(&s.path)
                    .and_then(|f| f.set_len(len));
                if let Err(e) = cut {
                    tracing::error!(path = %s.path.display(), "cannot truncate to the synced length: {e}");
                }
                s.len = len;
                s.entries = entries;
                s.last = last;
                s.index.truncate(index);
            }
        }
        g.next = d.next;
        g.meta.lost_gap = d.lost_gap;
        g.meta.lost_refused = d.lost_refused;
        g.dir_dirty = true;
    }

    fn flush(&self, g: &mut Inner, buf: &mut Vec<u8>) -> anyhow::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let seg = g.segments.last_mut().expect("a segment");
        if g.active.is_none() {
            let f = SegmentFile::open(&seg.path, false, seg.len)
                .with_context(|| format!("opening {}", seg.path.display()))?;
            g.active = Some(f);
        }
        let f = g.active.as_mut().expect("active segment");
        f.append(buf)
            .with_context(|| format!("writing {}", seg.path.display()))?;
        if self.cfg.fsync == FsyncPolicy::Always {
            f.sync_data()?;
        }
        seg.len += buf.len() as u64;
        seg.modified = SystemTime::now();
        buf.clear();
        Ok(())
    }

    fn new_segment(&self, g: &mut Inner, base: u64) -> anyhow::Result<()> {
        if let Some(f) = g.active.take() {
            if self.cfg.fsync != FsyncPolicy::Never {
                f.sync_data()?;
            }
        }
        let path = self.dir.join(seg_name(base));
        let f = SegmentFile::open(&path, true, 0)
            .with_context(|| format!("creating {}", path.display()))?;
        g.active = Some(f);
        g.dir_dirty = true;
        if self.cfg.fsync == FsyncPolicy::Always {
            sync_dir(&self.dir)?;
            g.dir_dirty = false;
        }
        g.segments.push(Segment {
            base,
            path,
            len: 0,
            index: Vec::new(),
            entries: 0,
            last: None,
            modified: SystemTime::now(),
        });
        Ok(())
    }

    fn retain(&self, g: &mut Inner) -> anyhow::Result<()> {
        if self.cfg.retain_bytes == 0 {
            return Ok(());
        }
        while g.segments.len() > 1
            && g.segments.iter().map(|s| s.len).sum::<u64>() > self.cfg.retain_bytes
        {
            let s = g.segments.remove(0);
            fs::remove_file(&s.path).with_context(|| format!("removing {}", s.path.display()))?;
            if let Some(l) = s.last {
                g.meta.retained_to = g.meta.retained_to.max(l + 1);
            }
            tracing::debug!(stream = %self.dir.display(), segment = s.base, "retention removed a segment");
        }
        Ok(())
    }

    /// Deletes the segments whose newest record is older than the retention
    /// age (whole segments, oldest first); returns how many. A stream idle
    /// for longer than the age ends up empty (`first` = `next`).
    pub fn retain_by_age(&self, now: SystemTime) -> anyhow::Result<usize> {
        let Some(age) = self.cfg.retain_age else {
            return Ok(0);
        };
        let Some(cutoff) = now.checked_sub(age) else {
            return Ok(0);
        };
        let mut g = self.lock();
        let mut removed = 0;
        while g.segments.first().is_some_and(|s| s.modified < cutoff) {
            let s = g.segments.remove(0);
            if g.segments.is_empty() {
                g.active = None; // the next append starts a new segment
            }
            fs::remove_file(&s.path).with_context(|| format!("removing {}", s.path.display()))?;
            if let Some(l) = s.last {
                g.meta.retained_to = g.meta.retained_to.max(l + 1);
            }
            removed += 1;
        }
        if removed > 0 {
            self.touch();
            let m = g.meta.clone();
            self.save_meta(&m)?;
            tracing::debug!(stream = %self.dir.display(), removed, first = first_of(&g), "age retention removed segments");
        }
        Ok(removed)
    }

    /// fsyncs the active segment.
    pub fn sync(&self) -> anyhow::Result<()> {
        let g = self.lock();
        if let Some(f) = &g.active {
            f.sync_all()?;
        }
        Ok(())
    }

    /// Reads entries with position ≥ `from`, in order, up to about
    /// `max_bytes` of records (at least one entry if any). Returns
    /// (position, record) pairs. Reading happens without holding the lock.
    pub fn read(&self, from: u64, max_bytes: usize) -> anyhow::Result<Vec<(u64, Vec<u8>)>> {
        // Snapshot what to read: (path, start offset, valid length).
        let plan: Vec<(PathBuf, u64, u64)> = {
            let g = self.lock();
            if from >= g.next {
                return Ok(Vec::new());
            }
            let i = g
                .segments
                .partition_point(|s| s.base <= from)
                .saturating_sub(1);
            g.segments[i..]
                .iter()
                .enumerate()
                .filter(|(_, s)| s.len > 0)
                .map(|(j, s)| {
                    let off = if j == 0 {
                        let k = s.index.partition_point(|(p, _)| *p <= from);
                        if k == 0 {
                            0
                        } else {
                            s.index[k - 1].1
                        }
                    } else {
                        0
                    };
                    (s.path.clone(), off, s.len)
                })
                .collect()
        };
        let mut out = Vec::new();
        let mut bytes = 0;
        for (path, off, len) in plan {
            let mut f = match File::open(&path) {
                Ok(f) => f,
                // Retention removed it meanwhile: continue with the next one.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
            };
            f.seek(SeekFrom::Start(off))?;
            let mut r = io::BufReader::with_capacity(256 << 10, f.take(len - off));
            let mut at = off;
            let mut last: Option<u64> = None;
            loop {
                let mut h = [0u8; ENTRY_HEADER];
                match r.read_exact(&mut h) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
                    Err(e) => return Err(e.into()),
                }
                let n = u32::from_le_bytes(h[0..4].try_into().expect("4")) as usize;
                let crc = u32::from_le_bytes(h[4..8].try_into().expect("4"));
                let pos = u64::from_le_bytes(h[8..16].try_into().expect("8"));
                let mut rec = Vec::new();
                let ok = n > 0
                    && n <= MAX_RECORD
                    && at + (ENTRY_HEADER + n) as u64 <= len
                    && last.is_none_or(|l| pos > l)
                    && {
                        rec.resize(n, 0);
                        r.read_exact(&mut rec).is_ok() && entry_crc(pos, &rec) == crc
                    };
                if !ok {
                    // Damaged after recovery checked it (the disk changed
                    // under us): skip to the next valid entry, count once.
                    let rest = self.damaged(&path, at, len, last)?;
                    for (pos, rec) in rest {
                        if pos >= from {
                            bytes += rec.len();
                            out.push((pos, rec));
                        }
                    }
                    if bytes >= max_bytes {
                        return Ok(out);
                    }
                    break;
                }
                at += (ENTRY_HEADER + n) as u64;
                last = Some(pos);
                if pos < from {
                    continue;
                }
                bytes += n;
                out.push((pos, rec));
                if bytes >= max_bytes {
                    return Ok(out);
                }
            }
        }
        Ok(out)
    }

    /// The valid entries of `path` from byte `at` (where a read met damage)
    /// to `len`, skipping the damage; the positions it cost are counted as
    /// `corrupt` loss the first time it is met.
    fn damaged(
        &self,
        path: &Path,
        at: u64,
        len: u64,
        last: Option<u64>,
    ) -> anyhow::Result<Vec<(u64, Vec<u8>)>> {
        let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let mut data = vec![0u8; (len - at) as usize];
        std::os::unix::fs::FileExt::read_exact_at(&f, &mut data, at)
            .with_context(|| format!("reading {}", path.display()))?;
        let mut out = Vec::new();
        let mut off = 0;
        let mut prev = last;
        let mut lost = 0;
        while off < data.len() {
            match recover::entry_at(&data, off, prev) {
                Some((pos, n)) => {
                    out.push((pos, data[off + ENTRY_HEADER..off + n].to_vec()));
                    prev = Some(pos);
                    off += n;
                }
                None => {
                    let next = recover::resync(&data, off, prev);
                    let next_pos = next.and_then(|o| recover::entry_at(&data, o, prev));
                    lost += match (next_pos, prev) {
                        (Some((p, _)), Some(l)) => p - l - 1,
                        _ => 0,
                    };
                    match next {
                        Some(o) => off = o,
                        None => break,
                    }
                }
            }
        }
        let mut g = self.lock();
        if g.damage_seen.insert((path.to_path_buf(), at)) {
            tracing::error!(segment = %path.display(), offset = at, positions = lost, "damaged entries met while reading: skipped and counted as corrupt");
            g.meta.lost_corrupt = g.meta.lost_corrupt.saturating_add(lost);
            let m = g.meta.clone();
            self.touch();
            self.save_meta(&m)?;
        }
        Ok(out)
    }
}

fn first_of(g: &Inner) -> u64 {
    g.segments
        .iter()
        .find(|s| s.entries > 0)
        .and_then(|s| s.index.first().map(|(p, _)| *p))
        .unwrap_or(g.next)
}

/// Every stream of a data directory.
pub struct Store {
    root: PathBuf,
    cfg: StoreConfig,
    streams: Mutex<BTreeMap<StreamKey, Arc<Stream>>>,
    changed: tokio::sync::watch::Sender<u64>,
    /// Bumped when a stream is created or removed.
    generation: AtomicU64,
}

impl Store {
    /// Opens (creating it if needed) the data directory and recovers every stream.
    pub fn open(cfg: StoreConfig) -> anyhow::Result<Store> {
        let root = cfg.data_dir.join("streams");
        private_dir(&cfg.data_dir)
            .and_then(|()| private_dir(&root))
            .with_context(|| format!("cannot create data directory {}", root.display()))?;
        // Probe that we can write there.
        let probe = root.join(".probe");
        File::create(&probe)
            .with_context(|| format!("data directory {} is not writable", root.display()))?;
        fs::remove_file(&probe).ok();
        let mut streams = BTreeMap::new();
        for e in fs::read_dir(&root).with_context(|| format!("listing {}", root.display()))? {
            let e = e?;
            if !e.file_type()?.is_dir() {
                continue;
            }
            match Stream::open(e.path(), cfg.clone()) {
                Ok(s) => {
                    tracing::info!(dir = %e.path().display(), first = s.first(), next = s.next(), "recovered stream");
                    streams.insert(s.key.clone(), Arc::new(s));
                }
                Err(err) => {
                    // Never silently skipped: moved aside, for inspection,
                    // where it cannot be mistaken for a live stream.
                    let q = cfg.data_dir.join("quarantine");
                    let to = q.join(e.file_name());
                    let moved = private_dir(&q).and_then(|()| fs::rename(e.path(), &to));
                    match moved {
                        Ok(()) => {
                            tracing::error!(dir = %e.path().display(), quarantined = %to.display(), "unreadable stream quarantined: {err:#}")
                        }
                        Err(m) => {
                            tracing::error!(dir = %e.path().display(), "unreadable stream ({err:#}), and it cannot be quarantined: {m}")
                        }
                    }
                }
            }
        }
        Ok(Store {
            root,
            cfg,
            streams: Mutex::new(streams),
            changed: tokio::sync::watch::channel(0).0,
            generation: AtomicU64::new(0),
        })
    }

    fn map(&self) -> MutexGuard<'_, BTreeMap<StreamKey, Arc<Stream>>> {
        self.streams.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The stream of `key`, created with `cal` if new; an existing stream's
    /// calibration is updated to `cal`.
    pub fn open_stream(&self, key: &StreamKey, cal: Calibration) -> anyhow::Result<Arc<Stream>> {
        let mut m = self.map();
        if let Some(s) = m.get(key) {
            let s = s.clone();
            drop(m);
            if s.meta().calibration != cal {
                s.update_meta(|meta| meta.calibration = cal)?;
            }
            return Ok(s);
        }
        let s = Arc::new(Stream::create(
            key.clone(),
            self.root.join(dir_name(key)),
            self.cfg.clone(),
            cal,
        )?);
        m.insert(key.clone(), s.clone());
        drop(m);
        self.generation.fetch_add(1, Ordering::Release);
        self.notify();
        Ok(s)
    }

    /// Streams created or removed so far: equal values mean the same set.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Removes the stream of `key` (and its directory) if it never received
    /// a record and nobody else holds it: a consumer that opens streams and
    /// sends nothing leaves nothing behind. Returns whether it was removed.
    pub fn remove_if_unused(&self, key: &StreamKey) -> anyhow::Result<bool> {
        let mut m = self.map();
        let Some(s) = m.get(key) else {
            return Ok(false);
        };
        // The map's reference is the only one: no connection or reader has it.
        if Arc::strong_count(s) > 1 || !s.is_unused() {
            return Ok(false);
        }
        let s = m.remove(key).expect("checked");
        drop(m);
        self.generation.fetch_add(1, Ordering::Release);
        fs::remove_dir_all(&s.dir).with_context(|| format!("removing {}", s.dir.display()))?;
        if self.cfg.fsync != FsyncPolicy::Never {
            sync_dir(&self.root)?;
        }
        self.notify();
        Ok(true)
    }

    /// The stream of `key`, if held.
    pub fn get(&self, key: &StreamKey) -> Option<Arc<Stream>> {
        self.map().get(key).cloned()
    }

    /// Every stream, in key order.
    pub fn streams(&self) -> Vec<Arc<Stream>> {
        self.map().values().cloned().collect()
    }

    /// Tells watchers that something changed (records appended, stream created).
    pub fn notify(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// A receiver woken by [`Store::notify`].
    pub fn watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Applies the age retention to every stream; readers are told when
    /// something was removed. Returns how many segments were removed.
    pub fn retain_by_age(&self) -> anyhow::Result<usize> {
        let now = SystemTime::now();
        let mut removed = 0;
        for s in self.streams() {
            removed += s.retain_by_age(now)?;
        }
        if removed > 0 {
            self.notify();
        }
        Ok(removed)
    }

    /// How often [`Store::retain_by_age`] should run (None: no age retention).
    pub fn retention_period(&self) -> Option<std::time::Duration> {
        use std::time::Duration;
        self.cfg
            .retain_age
            .map(|a| (a / 4).clamp(Duration::from_millis(50), Duration::from_secs(60)))
    }

    /// fsyncs every stream.
    pub fn sync_all(&self) -> anyhow::Result<()> {
        for s in self.streams() {
            s.sync()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;

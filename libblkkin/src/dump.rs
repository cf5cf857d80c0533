//! Reading every ring of a directory once (what `blkkin dump` does).

use std::path::Path;

use crate::annotation::Annotation;
use crate::ring::file::list_rings;
use crate::ring::reader::{DrainEnd, OpenError, ReadMode, RingReader};

/// Totals over all rings of a dump.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct DumpSummary {
    /// Ring files read.
    pub rings: u64,
    /// Ring files that could not be opened (reported separately).
    pub unreadable: u64,
    /// Records delivered.
    pub read: u64,
    /// Records lost: dropped by writers (full, too big, no ring) or missing
    /// from the sequence (overwritten, unreadable).
    pub lost: u64,
    /// Records skipped by the reader: torn (writer died mid-record) or corrupt.
    pub skipped: u64,
    /// Rings whose writer was still in the middle of a record where the dump
    /// stopped (records after it are left for the next read).
    pub unfinished_rings: u64,
}

/// Reads every ring in `dir`, calling `each` for every annotation in ring
/// order, and `error` for each ring that cannot be opened.
///
/// `Peek` leaves the rings untouched; `Consume` frees the space of what it
/// read (and fails on rings another reader consumes).
pub fn dump_dir(
    dir: &Path,
    mode: ReadMode,
    mut each: impl FnMut(&Annotation),
    mut error: impl FnMut(&OpenError),
) -> std::io::Result<DumpSummary> {
    let mut s = DumpSummary::default();
    for path in list_rings(dir)? {
        match dump_ring(&path, mode, &mut each) {
            Ok(r) => {
                s.rings += 1;
                s.read += r.read;
                s.lost += r.lost;
                s.skipped += r.skipped;
                s.unfinished_rings += r.unfinished_rings;
            }
            Err(e) => {
                s.unreadable += 1;
                error(&e);
            }
        }
    }
    Ok(s)
}

/// Reads one ring file once.
pub fn dump_ring(
    path: &Path,
    mode: ReadMode,
    each: &mut impl FnMut(&Annotation),
) -> Result<DumpSummary, OpenError> {
    let mut reader = RingReader::open(path, mode)?;
    let calibration = reader.calibration();
    let info = reader.info().clone();
    let mut count = 0u64;
    // Bounded: at most one full ring of records, each at least 56 bytes.
    let max = (info.data_size as usize / crate::ring::layout::record_len(0)) + 1;
    let end = reader.drain(max, |r| {
        count += 1;
        for a in Annotation::from_record(r, &info, calibration.as_ref()) {
            each(&a);
        }
    });
    if end == DrainEnd::Truncated {
        return Err(OpenError::Io {
            path: path.to_owned(),
            source: std::io::Error::other("ring file is shorter than its header says (truncated)"),
        });
    }
    reader.release();
    let st = reader.stats();
    let w = reader.writer_counters();
    Ok(DumpSummary {
        rings: 1,
        unreadable: 0,
        read: count,
        lost: w.lost() + st.gap,
        skipped: st.torn + st.corrupt,
        unfinished_rings: (reader.backlog_bytes() > 0) as u64,
    })
}

/// What `clean` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct CleanSummary {
    /// Ring files removed (their writer had exited).
    pub removed: u64,
    /// Records still unread in the removed rings (discarded).
    pub unread_records: u64,
    /// Ring files kept (writer alive, or unreadable).
    pub kept: u64,
}

/// Removes the ring files of exited writers in `dir` (all of a process's
/// rings go together). With `dry_run`, only reports.
pub fn clean_dir(dir: &Path, dry_run: bool) -> std::io::Result<CleanSummary> {
    let mut s = CleanSummary::default();
    for path in list_rings(dir)? {
        let Ok(mut reader) = RingReader::open(&path, ReadMode::Peek) else {
            s.kept += 1;
            continue;
        };
        if reader.writer_alive() {
            s.kept += 1;
            continue;
        }
        let max = (reader.info().data_size as usize / crate::ring::layout::record_len(0)) + 1;
        let mut unread = 0u64;
        if reader.drain(max, |_| unread += 1) == DrainEnd::Truncated {
            s.kept += 1;
            continue;
        }
        drop(reader);
        if !dry_run {
            std::fs::remove_file(&path)?;
        }
        s.removed += 1;
        s.unread_records += unread;
    }
    Ok(s)
}

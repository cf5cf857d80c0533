//! Recovery: scanning segment files after a restart and reading a
//! stream's `meta.json`.
//!
//! A segment is checked entry by entry (length, CRC, record framing,
//! increasing position). What it does with a bad entry depends on what
//! follows:
//!
//! * valid entries further on: the bytes in between are damage inside data
//!   that was acknowledged. They are moved to `<segment>.damaged-<offset>`
//!   (quarantine, for inspection), the segment is rewritten without them, and
//!   the positions they held are counted as `corrupt` loss;
//! * nothing valid after it, in the stream's last segment: the torn tail of
//!   a write that was never synced (and so never acknowledged) is cut;
//! * nothing valid after it in an earlier, sealed segment: quarantined and
//!   counted like the first case (the caller counts the positions up to the
//!   next segment).

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::SystemTime;

use anyhow::{bail, Context};
use blkkin::ring::header::Calibration;
use blkkin::ring::reader::{ReaderStats, WriterCounters};
use blkkin::wire::{self, StreamKey};

use super::{entry_crc, Meta, Segment, ENTRY_HEADER, FILE_MODE, INDEX_EVERY, MAX_JUMP, MAX_RECORD};

/// The entry at `off` of `data` if it is valid and comes after `last`:
/// (its position, its total length).
pub(super) fn entry_at(data: &[u8], off: usize, last: Option<u64>) -> Option<(u64, usize)> {
    let h = data.get(off..off + ENTRY_HEADER)?;
    let n = u32::from_le_bytes(h[0..4].try_into().expect("4")) as usize;
    let crc = u32::from_le_bytes(h[4..8].try_into().expect("4"));
    let pos = u64::from_le_bytes(h[8..16].try_into().expect("8"));
    if n == 0 || n > MAX_RECORD {
        return None;
    }
    if let Some(l) = last {
        if pos <= l || pos - l > MAX_JUMP {
            return None;
        }
    }
    let rec = data.get(off + ENTRY_HEADER..off + ENTRY_HEADER + n)?;
    if wire::count_records(rec) != Ok(1) || entry_crc(pos, rec) != crc {
        return None;
    }
    Some((pos, ENTRY_HEADER + n))
}

/// The first offset after `from` where a valid entry following `last`
/// starts (entries are 8-byte aligned records behind a 16-byte header, but
/// damage may shift them: every offset is tried).
pub(super) fn resync(data: &[u8], from: usize, last: Option<u64>) -> Option<usize> {
    (from + 1..data.len().saturating_sub(ENTRY_HEADER)).find(|&o| entry_at(data, o, last).is_some())
}

/// A recovered segment, and what recovery found.
pub(super) struct Recovered {
    pub(super) seg: Segment,
    /// Positions lost to damage inside the segment (between valid entries).
    pub(super) corrupt: u64,
    /// The segment ended in damage that was quarantined (not a torn tail):
    /// the positions up to the next segment's first are lost too.
    pub(super) damaged_tail: bool,
}

/// Scans a segment; `last_segment` says whether a bad tail may be a torn,
/// never-synced write (see the module docs).
pub(super) fn recover_segment(
    base: u64,
    path: &Path,
    prev: Option<u64>,
    last_segment: bool,
) -> anyhow::Result<Recovered> {
    let data = fs::read(path)?;
    let modified = fs::metadata(path)?
        .modified()
        .unwrap_or_else(|_| SystemTime::now());
    let mut seg = Segment {
        base,
        path: path.to_path_buf(),
        len: 0,
        index: Vec::new(),
        entries: 0,
        last: None,
        modified,
    };
    let mut last = prev;
    let mut off = 0usize;
    // Byte ranges of damage (and whether to quarantine them: not a torn
    // tail); the valid bytes are everything else.
    let mut damage: Vec<(usize, usize, bool)> = Vec::new();
    let mut corrupt = 0u64;
    let mut damaged_tail = false;
    let mut clean_len = 0u64;
    while off < data.len() {
        if let Some((pos, n)) =
            entry_at(&data, off, last).filter(|(p, _)| last.is_some() || *p >= base)
        {
            if seg.entries.is_multiple_of(INDEX_EVERY) {
                seg.index.push((pos, clean_len));
            }
            seg.entries += 1;
            seg.last = Some(pos);
            last = Some(pos);
            off += n;
            clean_len += n as u64;
            continue;
        }
        let rest = &data[off..];
        if super::segfile::is_padding(rest) {
            // The zero padding of the last direct write.
            break;
        }
        match resync(&data, off, last) {
            Some(next) => {
                let (next_pos, _) = entry_at(&data, next, last).expect("found valid");
                let lost = next_pos - last.map_or(base, |l| l + 1);
                tracing::error!(
                    segment = %path.display(),
                    offset = off,
                    bytes = next - off,
                    positions = lost,
                    "damaged entries inside synced data: quarantined and counted as corrupt"
                );
                corrupt += lost;
                damage.push((off, next, true));
                off = next;
            }
            None if last_segment => {
                tracing::warn!(
                    segment = %path.display(),
                    valid = off,
                    dropped = data.len() - off,
                    "torn tail (never synced, never acknowledged): cut"
                );
                damage.push((off, data.len(), false));
                break;
            }
            None => {
                tracing::error!(
                    segment = %path.display(),
                    offset = off,
                    bytes = data.len() - off,
                    "damaged end of a sealed segment: quarantined and counted as corrupt"
                );
                damaged_tail = true;
                damage.push((off, data.len(), true));
                break;
            }
        }
    }
    let padded = data.len() as u64 != clean_len;
    if damage.iter().any(|d| d.2) {
        // Quarantine the damage, then rewrite the segment with the valid
        // entries only (atomically: a crash leaves one or the other).
        for (a, b, _) in damage.iter().filter(|d| d.2) {
            let q = path.with_extension(format!("seg.damaged-{a}"));
            write_private(&q, &data[*a..*b])
                .with_context(|| format!("quarantining {}", q.display()))?;
        }
        let mut clean = Vec::with_capacity(clean_len as usize);
        let mut at = 0;
        for (a, b, _) in &damage {
            clean.extend_from_slice(&data[at..*a]);
            at = *b;
        }
        clean.extend_from_slice(&data[at..]);
        // Whatever follows the last entry (zero padding) goes.
        clean.truncate(clean_len as usize);
        let tmp = path.with_extension("seg.tmp");
        write_private(&tmp, &clean).with_context(|| format!("rewriting {}", tmp.display()))?;
        fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            fs::File::open(dir)?.sync_all()?;
        }
    } else if padded {
        // A torn tail or the zero padding of a direct write: cut it.
        let f = OpenOptions::new().write(true).open(path)?;
        f.set_len(clean_len)?;
        f.sync_all()?;
    }
    seg.len = clean_len;
    Ok(Recovered {
        seg,
        corrupt,
        damaged_tail,
    })
}

/// Writes `bytes` to a new file `path` (0600) and syncs it.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// The key a stream directory's name encodes (`<node hex>-<pid>-<start>-<cpu>`),
/// for rebuilding a `meta.json` that cannot be read.
pub(super) fn key_from_dir_name(name: &str) -> Option<StreamKey> {
    let mut it = name.rsplitn(4, '-');
    let cpu = it.next()?.parse().ok()?;
    let start_time = it.next()?.parse().ok()?;
    let pid = it.next()?.parse().ok()?;
    let hex = it.next()?;
    if hex.len() % 2 != 0 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect();
    Some(StreamKey {
        node: String::from_utf8(bytes?).ok()?,
        pid,
        start_time,
        cpu,
    })
}

pub(super) fn load_meta(path: &Path) -> anyhow::Result<(StreamKey, Meta)> {
    let v: serde_json::Value = serde_json::from_slice(&fs::read(path)?)?;
    let u = |v: &serde_json::Value| v.as_u64().context("bad number");
    let arr = |name: &str, n: usize| -> anyhow::Result<Vec<u64>> {
        let a = v[name].as_array().with_context(|| format!("no {name}"))?;
        if a.len() != n {
            bail!("bad {name}");
        }
        a.iter().map(u).collect()
    };
    let key = StreamKey {
        node: v["node"].as_str().context("no node")?.to_string(),
        pid: u32::try_from(u(&v["pid"])?)?,
        start_time: u(&v["start_time"])?,
        cpu: u32::try_from(u(&v["cpu"])?)?,
    };
    let c = arr("calibration", 4)?;
    let r = arr("reader", 6)?;
    let w = arr("writer", 5)?;
    let meta = Meta {
        calibration: Calibration {
            raw0: c[0],
            ns0: c[1],
            raw1: c[2],
            ns1: c[3],
        },
        closed: v["closed"].as_bool().unwrap_or(false),
        reader: ReaderStats {
            read: r[0],
            torn: r[1],
            corrupt: r[2],
            gap: r[3],
            resyncs: r[4],
            skipped_bytes: r[5],
        },
        writer: WriterCounters {
            written: w[0],
            lost_full: w[1],
            lost_too_big: w[2],
            lost_no_ring: w[3],
            lost_corrupt: w[4],
        },
        lost_gap: u(&v["lost_gap"]).unwrap_or(0),
        lost_refused: u(&v["lost_refused"]).unwrap_or(0),
        lost_corrupt: u(&v["lost_corrupt"]).unwrap_or(0),
        retained_to: u(&v["retained_to"]).unwrap_or(0),
    };
    Ok((key, meta))
}

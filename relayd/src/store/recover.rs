//! Recovery: scanning segment files after a restart (truncating a torn
//! tail) and reading a stream's `meta.json`.

use std::fs::{self, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::SystemTime;

use anyhow::{bail, Context};
use blkkin::ring::header::Calibration;
use blkkin::ring::reader::{ReaderStats, WriterCounters};
use blkkin::wire::{self, StreamKey};

use super::{entry_crc, Meta, Segment, ENTRY_HEADER, INDEX_EVERY, MAX_RECORD};

/// Scans a segment, truncating it after its last valid entry.
pub(super) fn recover_segment(
    base: u64,
    path: &Path,
    prev: Option<u64>,
) -> anyhow::Result<Segment> {
    let f = OpenOptions::new().read(true).write(true).open(path)?;
    let meta = f.metadata()?;
    let file_len = meta.len();
    let mut r = io::BufReader::with_capacity(256 << 10, &f);
    let mut seg = Segment {
        base,
        path: path.to_path_buf(),
        len: 0,
        index: Vec::new(),
        entries: 0,
        last: None,
        modified: meta.modified().unwrap_or_else(|_| SystemTime::now()),
    };
    let mut last = prev;
    let mut off = 0u64;
    let mut rec = Vec::new();
    let why = loop {
        let mut h = [0u8; ENTRY_HEADER];
        match r.read_exact(&mut h) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                break if off == file_len {
                    None
                } else {
                    Some("torn entry header")
                };
            }
            Err(e) => return Err(e.into()),
        }
        let n = u32::from_le_bytes(h[0..4].try_into().expect("4")) as usize;
        let crc = u32::from_le_bytes(h[4..8].try_into().expect("4"));
        let pos = u64::from_le_bytes(h[8..16].try_into().expect("8"));
        if n == 0 || n > MAX_RECORD || off + (ENTRY_HEADER + n) as u64 > file_len {
            break Some("bad entry length");
        }
        rec.resize(n, 0);
        r.read_exact(&mut rec)?;
        if entry_crc(pos, &rec) != crc {
            break Some("checksum mismatch");
        }
        if wire::count_records(&rec) != Ok(1) {
            break Some("bad record framing");
        }
        if last.is_some_and(|l| pos <= l) || (last.is_none() && pos < base) {
            break Some("position out of order");
        }
        if seg.entries.is_multiple_of(INDEX_EVERY) {
            seg.index.push((pos, off));
        }
        seg.entries += 1;
        seg.last = Some(pos);
        last = Some(pos);
        off += (ENTRY_HEADER + n) as u64;
    };
    drop(r);
    let mut why = why;
    if why.is_some() && file_len - off < super::segfile::BLOCK as u64 {
        let mut rest = vec![0u8; (file_len - off) as usize];
        f.read_exact_at(&mut rest, off)?;
        if super::segfile::is_padding(&rest) {
            // The zero padding of the last direct write: cut quietly.
            why = None;
            f.set_len(off)?;
        }
    }
    if let Some(why) = why {
        tracing::warn!(
            segment = %path.display(),
            valid = off,
            dropped = file_len - off,
            "{why}: truncating the segment after its last valid entry"
        );
        f.set_len(off)?;
        f.sync_all()?;
    }
    seg.len = off;
    Ok(seg)
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

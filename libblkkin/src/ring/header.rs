//! Writing a ring header (owner) and validating one (reader).
//!
//! The owner fills every field and stores the magic last with release
//! ordering, so a reader that sees the magic sees a complete header. Readers
//! re-validate everything: sizes must be consistent with the file's length,
//! and the clock calibration is read under a sequence lock with bounded
//! retries.

use std::sync::atomic::{fence, Ordering};

use super::layout::{self, off};
use super::mem::RingMem;

/// Errors found in a ring header.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeaderError {
    /// The file is smaller than a header.
    #[error("file too small for a ring header ({0} bytes)")]
    TooSmall(usize),
    /// The magic bytes are absent: not a ring, or not yet initialised.
    #[error("bad magic: not a blkkin ring (or still being created)")]
    BadMagic,
    /// A format version this reader does not understand.
    #[error(
        "unsupported ring format version {0} (this reader supports {lo} to {hi})",
        lo = layout::OLDEST_READABLE_VERSION,
        hi = layout::VERSION
    )]
    Version(u32),
    /// Sizes inconsistent with the format or the file length.
    #[error("inconsistent ring geometry: {0}")]
    Geometry(String),
}

/// Identity and geometry of a ring, read from its header.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct RingInfo {
    /// Writer process id.
    pub pid: u32,
    /// Writer user id.
    pub uid: u32,
    /// Writer process start time (clock ticks since boot), against pid reuse.
    pub start_time: u64,
    /// CPU this ring serves.
    pub cpu: u32,
    /// `FLAG_*` bits.
    pub flags: u32,
    /// Data area size (power of two).
    pub data_size: u32,
    /// Largest record the writer accepts.
    pub max_record: u32,
    /// Creation time, Unix ns.
    pub created_ns: u64,
    /// Kernel boot id of the writer's boot.
    #[cfg_attr(feature = "serde", serde(skip))]
    pub boot_id: [u8; 16],
}

impl RingInfo {
    /// True when writers overwrite old records instead of dropping new ones.
    pub fn overwrite(&self) -> bool {
        self.flags & layout::FLAG_OVERWRITE != 0
    }
}

/// Everything the owner writes into a fresh header.
pub struct HeaderInit {
    /// See [`RingInfo`].
    pub info: RingInfo,
    /// Initial clock calibration.
    pub calibration: Calibration,
}

/// Maps raw record timestamps to Unix nanoseconds.
///
/// Two reference points (raw, ns): the first taken when the process started
/// tracing, the second refreshed by writers at doubling intervals from 1 ms
/// up to once a second. The slope
/// between them converts ticks to nanoseconds; the newest point anchors it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Calibration {
    /// Raw clock value of the first point.
    pub raw0: u64,
    /// Unix ns of the first point.
    pub ns0: u64,
    /// Raw clock value of the newest point.
    pub raw1: u64,
    /// Unix ns of the newest point.
    pub ns1: u64,
}

impl Calibration {
    /// The identity mapping (raw values already are Unix ns).
    pub const IDENTITY: Calibration = Calibration {
        raw0: 0,
        ns0: 0,
        raw1: 1,
        ns1: 1,
    };

    /// Converts a raw timestamp to Unix nanoseconds; `None` if the
    /// calibration is unusable (never panics, whatever the values).
    pub fn to_unix_ns(&self, raw: u64) -> Option<u64> {
        let draw = self.raw1.checked_sub(self.raw0).filter(|d| *d > 0)?;
        let dns = self.ns1.checked_sub(self.ns0)?;
        let delta = raw as i128 - self.raw1 as i128;
        let ns = self.ns1 as i128 + delta.checked_mul(dns as i128)? / draw as i128;
        u64::try_from(ns).ok()
    }
}

/// Writes a fresh header. The magic goes last.
pub fn write_header(mem: &RingMem, h: &HeaderInit) {
    let put = |o: usize, v: u64| mem.word(o).store(v, Ordering::Relaxed);
    let i = &h.info;
    put(
        off::VERSION,
        layout::VERSION as u64 | (layout::HEADER_SIZE as u64) << 32,
    );
    put(off::PID, i.pid as u64 | (i.uid as u64) << 32);
    put(off::START_TIME, i.start_time);
    put(off::CPU, i.cpu as u64 | (i.flags as u64) << 32);
    put(off::DATA_SIZE, i.data_size as u64);
    put(off::MAX_RECORD, i.max_record as u64);
    put(off::CREATED_NS, i.created_ns);
    put(
        off::BOOT_ID,
        u64::from_le_bytes(i.boot_id[..8].try_into().unwrap()),
    );
    put(
        off::BOOT_ID + 8,
        u64::from_le_bytes(i.boot_id[8..].try_into().unwrap()),
    );
    store_calibration(mem, &h.calibration);
    mem.word(off::MAGIC)
        .store(u64::from_le_bytes(layout::MAGIC), Ordering::Release);
}

/// Publishes a new calibration under the header's sequence lock.
/// Callers serialise themselves (one refresher at a time).
pub fn store_calibration(mem: &RingMem, c: &Calibration) {
    let seq = mem.word(off::CALIB_SEQ);
    let s = seq.load(Ordering::Relaxed);
    seq.store(s.wrapping_add(1) | 1, Ordering::Relaxed);
    fence(Ordering::Release);
    mem.word(off::CALIB_TSC0).store(c.raw0, Ordering::Relaxed);
    mem.word(off::CALIB_NS0).store(c.ns0, Ordering::Relaxed);
    mem.word(off::CALIB_TSC1).store(c.raw1, Ordering::Relaxed);
    mem.word(off::CALIB_NS1).store(c.ns1, Ordering::Relaxed);
    seq.store((s | 1).wrapping_add(1), Ordering::Release);
}

/// Reads the calibration; `None` if a writer kept it busy for every retry.
pub fn load_calibration(mem: &RingMem) -> Option<Calibration> {
    let seq = mem.word(off::CALIB_SEQ);
    for _ in 0..64 {
        let s1 = seq.load(Ordering::Acquire);
        if s1 & 1 == 1 {
            std::hint::spin_loop();
            continue;
        }
        let c = Calibration {
            raw0: mem.word(off::CALIB_TSC0).load(Ordering::Relaxed),
            ns0: mem.word(off::CALIB_NS0).load(Ordering::Relaxed),
            raw1: mem.word(off::CALIB_TSC1).load(Ordering::Relaxed),
            ns1: mem.word(off::CALIB_NS1).load(Ordering::Relaxed),
        };
        fence(Ordering::Acquire);
        if seq.load(Ordering::Relaxed) == s1 {
            return Some(c);
        }
    }
    None
}

/// Reads and validates a header against the memory's actual size.
pub fn read_header(mem: &RingMem) -> Result<RingInfo, HeaderError> {
    if mem.len() < layout::HEADER_SIZE {
        return Err(HeaderError::TooSmall(mem.len()));
    }
    let get = |o: usize| mem.word(o).load(Ordering::Relaxed);
    if mem.word(off::MAGIC).load(Ordering::Acquire) != u64::from_le_bytes(layout::MAGIC) {
        return Err(HeaderError::BadMagic);
    }
    let v = get(off::VERSION);
    let (version, header_size) = (v as u32, (v >> 32) as u32);
    if !(layout::OLDEST_READABLE_VERSION..=layout::VERSION).contains(&version) {
        return Err(HeaderError::Version(version));
    }
    if header_size as usize != layout::HEADER_SIZE {
        return Err(HeaderError::Geometry(format!("header size {header_size}")));
    }
    let data_size = get(off::DATA_SIZE);
    if !data_size.is_power_of_two()
        || !(layout::MIN_DATA_SIZE..=layout::MAX_DATA_SIZE).contains(&data_size)
    {
        return Err(HeaderError::Geometry(format!("data size {data_size}")));
    }
    if layout::HEADER_SIZE as u64 + data_size > mem.len() as u64 {
        return Err(HeaderError::Geometry(format!(
            "data size {data_size} exceeds file size {}",
            mem.len()
        )));
    }
    let max_record = get(off::MAX_RECORD);
    if max_record < layout::record_len(0) as u64 || max_record > layout::MAX_RECORD_LIMIT as u64 {
        return Err(HeaderError::Geometry(format!("max record {max_record}")));
    }
    let pid = get(off::PID);
    let cpu = get(off::CPU);
    let mut boot_id = [0u8; 16];
    boot_id[..8].copy_from_slice(&get(off::BOOT_ID).to_le_bytes());
    boot_id[8..].copy_from_slice(&get(off::BOOT_ID + 8).to_le_bytes());
    Ok(RingInfo {
        pid: pid as u32,
        uid: (pid >> 32) as u32,
        start_time: get(off::START_TIME),
        cpu: cpu as u32,
        flags: (cpu >> 32) as u32,
        data_size: data_size as u32,
        max_record: max_record as u32,
        created_ns: get(off::CREATED_NS),
        boot_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> RingInfo {
        RingInfo {
            pid: 42,
            uid: 1000,
            start_time: 777,
            cpu: 1,
            flags: layout::FLAG_TSC,
            data_size: 1 << 16,
            max_record: 4096,
            created_ns: 5,
            boot_id: [9; 16],
        }
    }

    #[test]
    fn header_round_trips() {
        let mem = RingMem::heap(layout::HEADER_SIZE + (1 << 16));
        let cal = Calibration {
            raw0: 10,
            ns0: 1000,
            raw1: 20,
            ns1: 2000,
        };
        write_header(
            &mem,
            &HeaderInit {
                info: info(),
                calibration: cal,
            },
        );
        assert_eq!(read_header(&mem).unwrap(), info());
        assert_eq!(load_calibration(&mem), Some(cal));
    }

    #[test]
    fn format_versions_from_the_oldest_readable_up_to_ours_are_read() {
        let mem = RingMem::heap(layout::HEADER_SIZE + (1 << 16));
        write_header(
            &mem,
            &HeaderInit {
                info: info(),
                calibration: Calibration::IDENTITY,
            },
        );
        let set_version = |v: u32| {
            mem.word(off::VERSION).store(
                v as u64 | (layout::HEADER_SIZE as u64) << 32,
                Ordering::Relaxed,
            )
        };
        for v in layout::OLDEST_READABLE_VERSION..=layout::VERSION {
            set_version(v);
            assert_eq!(read_header(&mem).unwrap(), info(), "version {v}");
        }
        for v in [0, layout::VERSION + 1] {
            set_version(v);
            let e = read_header(&mem).unwrap_err();
            assert!(matches!(e, HeaderError::Version(x) if x == v), "{e}");
            assert!(e.to_string().contains("supports 1 to 2"), "{e}");
        }
    }

    #[test]
    fn rejects_blank_and_bad_geometry() {
        let mem = RingMem::heap(layout::HEADER_SIZE + (1 << 16));
        assert_eq!(read_header(&mem), Err(HeaderError::BadMagic));
        let mut i = info();
        i.data_size = 1 << 20; // larger than the memory
        write_header(
            &mem,
            &HeaderInit {
                info: i,
                calibration: Calibration::IDENTITY,
            },
        );
        assert!(matches!(read_header(&mem), Err(HeaderError::Geometry(_))));
        assert!(matches!(
            read_header(&RingMem::heap(64)),
            Err(HeaderError::TooSmall(64))
        ));
    }

    #[test]
    fn calibration_converts_and_never_panics() {
        let c = Calibration {
            raw0: 1000,
            ns0: 1_000_000,
            raw1: 3000,
            ns1: 2_000_000,
        };
        assert_eq!(c.to_unix_ns(3000), Some(2_000_000));
        assert_eq!(c.to_unix_ns(5000), Some(3_000_000));
        assert_eq!(Calibration::IDENTITY.to_unix_ns(123), Some(123));
        let bad = Calibration {
            raw0: 5,
            ns0: 0,
            raw1: 5,
            ns1: 0,
        };
        assert_eq!(bad.to_unix_ns(1), None);
        let huge = Calibration {
            raw0: 0,
            ns0: 0,
            raw1: 1,
            ns1: u64::MAX,
        };
        assert_eq!(huge.to_unix_ns(u64::MAX), None);
    }
}

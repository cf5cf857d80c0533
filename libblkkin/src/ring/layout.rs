//! The on-disk / in-memory layout of one ring file, shared by writers and readers.
//!
//! A ring file is a 4 KiB header followed by a power-of-two data area. All
//! integers are little-endian (the rings never leave the host that wrote them,
//! but fixing the byte order keeps the format unambiguous and testable).
//!
//! ```text
//! header (4096 bytes)
//!   0  magic "BLKKRING"          8   version u32, header_size u32
//!  16  pid u32, uid u32          24  process start time (clock ticks since boot)
//!  32  cpu u32, flags u32        40  data size u64 (power of two)
//!  48  max record u32, 0 u32     56  created (Unix ns) u64
//!  64  boot id (16 bytes)
//!  80  clock calibration: seq u64, tsc0, ns0, tsc1, ns1 (u64 each)
//! 128  head u64 = record count (high 32) | byte offset (low 32)   [writers]
//! 136  written_epochs u64 (times the 32-bit record count wrapped)
//! 192  tail u64 = byte offset the consumer has drained up to      [reader]
//! 200  reader pid u32
//! 256  lost_full, lost_too_big, lost_no_ring, lost_corrupt (u64)    [slow path]
//! ```
//!
//! Every record starts on an 8-byte boundary with a *commit word*:
//!
//! ```text
//! bits  0..2   state: 0 none, 1 reserved, 2 committed, 3 padding
//! bits  2..8   kind: 1 timestamp, 2 key/string, 3 key/integer, 4 span
//! bits  8..24  length of the whole record in bytes (multiple of 8)
//! bits 24..32  COMMIT_MAGIC
//! bits 32..64  the record's free-running byte offset (its "tag")
//! ```
//!
//! The tag makes a commit word valid only at the position it was written for,
//! so stale words from earlier laps are never mistaken for new records. The
//! record body follows the commit word; see [`RecordHeader`].

/// Magic bytes at offset 0 of every ring file.
pub const MAGIC: [u8; 8] = *b"BLKKRING";
/// Format version written by this library. Version 2 added record kind 4
/// ([`Kind::Span`]); readers accept every version from
/// [`OLDEST_READABLE_VERSION`] up to this one and refuse others.
pub const VERSION: u32 = 2;
/// Oldest format version readers still accept (version 1 rings simply hold
/// no span records).
pub const OLDEST_READABLE_VERSION: u32 = 1;
/// Size of the header that precedes the data area.
pub const HEADER_SIZE: usize = 4096;

/// Header field offsets (bytes from the start of the file).
pub mod off {
    #![allow(missing_docs)] // each is named after the field in the table above
    pub const MAGIC: usize = 0;
    pub const VERSION: usize = 8;
    pub const HEADER_SIZE: usize = 12;
    pub const PID: usize = 16;
    pub const UID: usize = 20;
    pub const START_TIME: usize = 24;
    pub const CPU: usize = 32;
    pub const FLAGS: usize = 36;
    pub const DATA_SIZE: usize = 40;
    pub const MAX_RECORD: usize = 48;
    pub const CREATED_NS: usize = 56;
    pub const BOOT_ID: usize = 64;
    pub const CALIB_SEQ: usize = 80;
    pub const CALIB_TSC0: usize = 88;
    pub const CALIB_NS0: usize = 96;
    pub const CALIB_TSC1: usize = 104;
    pub const CALIB_NS1: usize = 112;
    pub const HEAD: usize = 128;
    pub const WRITTEN_EPOCHS: usize = 136;
    pub const TAIL: usize = 192;
    pub const READER_PID: usize = 200;
    pub const LOST_FULL: usize = 256;
    pub const LOST_TOO_BIG: usize = 264;
    pub const LOST_NO_RING: usize = 272;
    pub const LOST_CORRUPT: usize = 280;
}

/// Header flag: writers overwrite the oldest records instead of dropping new ones.
pub const FLAG_OVERWRITE: u32 = 1;
/// Header flag: record timestamps are TSC ticks (convert with the calibration);
/// when clear they are already Unix nanoseconds.
pub const FLAG_TSC: u32 = 2;
/// Header flag: writers reserve space with per-CPU restartable sequences
/// (`blkkin::rseq`), not compare-and-swap (informational: readers need not
/// care).
pub const FLAG_PER_CPU: u32 = 4;

/// Smallest data area a ring may have.
pub const MIN_DATA_SIZE: u64 = 64 * 1024;
/// Largest data area a ring may have (offsets are 32-bit and free-running).
pub const MAX_DATA_SIZE: u64 = 1 << 30;
/// Largest record the format can express (16-bit length, 8-byte aligned).
pub const MAX_RECORD_LIMIT: u32 = 65528;

/// Commit word states.
pub const STATE_NONE: u64 = 0;
/// Space reserved, body being written.
pub const STATE_RESERVED: u64 = 1;
/// Body complete and visible.
pub const STATE_COMMITTED: u64 = 2;
/// Filler up to the end of the data area; no body.
pub const STATE_PADDING: u64 = 3;
/// Marker byte in every commit word (cheap extra corruption check).
pub const COMMIT_MAGIC: u64 = 0xB1;

/// What a record annotates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum Kind {
    /// A timestamped event (`cs`, `sr`, `start`, ...); the event is the key.
    Event = 1,
    /// A key with a string value.
    String = 2,
    /// A key with a 64-bit signed integer value.
    Integer = 3,
    /// A whole span recorded at its end (the Rust API's span guard): the
    /// record's timestamp is the span's start, its 8-byte value the end (in
    /// the same clock), its key empty. Readers turn it into the `start` and
    /// `end` events it stands for.
    Span = 4,
}

impl Kind {
    /// Decodes the kind bits of a commit word.
    pub fn from_bits(bits: u64) -> Option<Kind> {
        match bits {
            1 => Some(Kind::Event),
            2 => Some(Kind::String),
            3 => Some(Kind::Integer),
            4 => Some(Kind::Span),
            _ => None,
        }
    }
}

/// Builds a commit word.
#[inline(always)]
pub const fn commit_word(state: u64, kind: u64, len: u32, pos: u32) -> u64 {
    state | (kind << 2) | ((len as u64) << 8) | (COMMIT_MAGIC << 24) | ((pos as u64) << 32)
}

/// The fields of a commit word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitWord {
    /// One of the `STATE_*` values.
    pub state: u64,
    /// Raw kind bits.
    pub kind: u64,
    /// Record length in bytes.
    pub len: u32,
    /// Whether the marker byte is intact.
    pub magic_ok: bool,
    /// The free-running offset the word was written for.
    pub pos: u32,
}

impl CommitWord {
    /// Splits a raw commit word.
    #[inline]
    pub fn decode(w: u64) -> CommitWord {
        CommitWord {
            state: w & 3,
            kind: (w >> 2) & 0x3f,
            len: ((w >> 8) & 0xffff) as u32,
            magic_ok: (w >> 24) & 0xff == COMMIT_MAGIC,
            pos: (w >> 32) as u32,
        }
    }

    /// True when this word was written for position `pos` and looks sane.
    #[inline]
    pub fn is_for(&self, pos: u32) -> bool {
        self.magic_ok && self.pos == pos && self.state != STATE_NONE
    }
}

/// Byte offsets inside a record body (from the commit word).
pub mod rec {
    #![allow(missing_docs)] // see the module docs of `layout`
    pub const TIMESTAMP: usize = 8;
    pub const TRACE_ID: usize = 16;
    pub const SPAN_ID: usize = 24;
    pub const PARENT_ID: usize = 32;
    pub const SEQ: usize = 40;
    pub const PORT: usize = 44;
    pub const FLAGS: usize = 46;
    pub const LEN_SERVICE: usize = 47;
    pub const LEN_NAME: usize = 48;
    pub const LEN_IP: usize = 49;
    pub const LEN_KEY: usize = 50;
    pub const LEN_VALUE: usize = 52;
    /// Strings (service, span name, ip, key, value) start here, unpadded.
    pub const STRINGS: usize = 56;
}

/// Record flag: the trace was force-sampled (Zipkin's `debug`).
pub const RECORD_FLAG_DEBUG: u8 = 1;

/// Longest service name, span name, ip or key a record carries (1-byte lengths).
pub const MAX_SHORT_STRING: usize = 255;

/// Total (8-byte aligned) size of a record with these string lengths.
#[inline(always)]
pub const fn record_len(strings: usize) -> usize {
    (rec::STRINGS + strings + 7) & !7
}

/// Splits the packed `head` word into (record count, byte offset).
#[inline(always)]
pub const fn split_head(head: u64) -> (u32, u32) {
    ((head >> 32) as u32, head as u32)
}

/// Packs (record count, byte offset) into a `head` word.
#[inline(always)]
pub const fn join_head(count: u32, offset: u32) -> u64 {
    ((count as u64) << 32) | offset as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_word_round_trips() {
        let w = commit_word(STATE_COMMITTED, Kind::String as u64, 80, 0xdead_beef);
        let c = CommitWord::decode(w);
        assert_eq!(c.state, STATE_COMMITTED);
        assert_eq!(Kind::from_bits(c.kind), Some(Kind::String));
        assert_eq!(c.len, 80);
        assert!(c.magic_ok);
        assert!(c.is_for(0xdead_beef));
        assert!(!c.is_for(0xdead_bef0));
    }

    #[test]
    fn zero_word_is_never_valid() {
        assert!(!CommitWord::decode(0).is_for(0));
    }

    #[test]
    fn record_len_is_aligned() {
        assert_eq!(record_len(0), 56);
        assert_eq!(record_len(1), 64);
        assert_eq!(record_len(24), 80);
    }

    #[test]
    fn head_round_trips() {
        assert_eq!(split_head(join_head(7, 0xffff_fff8)), (7, 0xffff_fff8));
    }
}

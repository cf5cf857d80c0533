//! Decoding one record from bytes a reader copied out of a ring.
//!
//! The input is untrusted: every length is checked against the record's own
//! length before any slice is taken, so corrupt bytes produce a
//! [`RecordError`], never a panic.

use super::layout::{self, rec, Kind};
use super::writer::Value;

/// One decoded record, borrowing its strings from the reader's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// What it annotates.
    pub kind: Kind,
    /// Raw timestamp in the ring's clock; convert with the ring's calibration.
    pub timestamp_raw: u64,
    /// Trace id.
    pub trace_id: u64,
    /// Span id.
    pub span_id: u64,
    /// Parent span id, 0 for roots.
    pub parent_id: u64,
    /// Sequence number in its ring (wraps at 2^32).
    pub seq: u32,
    /// Endpoint port.
    pub port: u16,
    /// `RECORD_FLAG_*` bits.
    pub flags: u8,
    /// Endpoint service name.
    pub service: &'a [u8],
    /// Span name.
    pub name: &'a [u8],
    /// Endpoint IP, as text.
    pub ip: &'a [u8],
    /// Event (for [`Kind::Event`]) or key.
    pub key: &'a [u8],
    /// The value (none for events and spans).
    pub value: Value<'a>,
    /// The end of a [`Kind::Span`] record, raw in the ring's clock like
    /// `timestamp_raw` (its start); 0 for other kinds.
    pub end_raw: u64,
    /// The whole record as it sits in the ring (commit word included): what
    /// a consumer forwards over the wire.
    pub raw: &'a [u8],
    /// Position of the record in its stream: the ring's 64-bit record count
    /// at reservation (readers extend `seq` past 2^32).
    pub position: u64,
}

/// Why bytes did not decode as a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Shorter than the fixed part.
    #[error("record of {0} bytes is shorter than the fixed part")]
    Short(usize),
    /// The kind bits name no known kind.
    #[error("unknown record kind {0}")]
    Kind(u64),
    /// String lengths overrun the record.
    #[error("string lengths ({0} bytes) overrun the record ({1} bytes)")]
    Overrun(usize, usize),
    /// An integer record whose value is not 8 bytes.
    #[error("integer record with a {0}-byte value")]
    IntegerSize(usize),
    /// An event record that carries a value.
    #[error("event record with a value")]
    EventValue,
    /// A span record whose value is not its 8-byte end, or that has a key.
    #[error("span record with a {0}-byte value and a {1}-byte key")]
    SpanShape(usize, usize),
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"))
}

/// Decodes `bytes` (a whole record, commit word included) of kind `kind_bits`.
pub fn parse_record(bytes: &[u8], kind_bits: u64) -> Result<Record<'_>, RecordError> {
    if bytes.len() < rec::STRINGS {
        return Err(RecordError::Short(bytes.len()));
    }
    let kind = Kind::from_bits(kind_bits).ok_or(RecordError::Kind(kind_bits))?;
    let lens = [
        bytes[rec::LEN_SERVICE] as usize,
        bytes[rec::LEN_NAME] as usize,
        bytes[rec::LEN_IP] as usize,
        bytes[rec::LEN_KEY] as usize,
        u16::from_le_bytes([bytes[rec::LEN_VALUE], bytes[rec::LEN_VALUE + 1]]) as usize,
    ];
    let total: usize = lens.iter().sum();
    if rec::STRINGS + total > bytes.len() {
        return Err(RecordError::Overrun(total, bytes.len()));
    }
    let mut at = rec::STRINGS;
    let mut take = |n: usize| {
        let s = &bytes[at..at + n];
        at += n;
        s
    };
    let (service, name, ip, key, raw_value) = (
        take(lens[0]),
        take(lens[1]),
        take(lens[2]),
        take(lens[3]),
        take(lens[4]),
    );
    let mut end_raw = 0;
    let value = match kind {
        Kind::Span => {
            if raw_value.len() != 8 || !key.is_empty() {
                return Err(RecordError::SpanShape(raw_value.len(), key.len()));
            }
            end_raw = u64::from_le_bytes(raw_value.try_into().expect("8 bytes"));
            Value::None
        }
        Kind::Event if raw_value.is_empty() => Value::None,
        Kind::Event => return Err(RecordError::EventValue),
        Kind::String => Value::Str(raw_value),
        Kind::Integer => Value::Int(i64::from_le_bytes(
            raw_value
                .try_into()
                .map_err(|_| RecordError::IntegerSize(raw_value.len()))?,
        )),
    };
    let seq_word = u64_at(bytes, rec::SEQ);
    Ok(Record {
        kind,
        timestamp_raw: u64_at(bytes, rec::TIMESTAMP),
        trace_id: u64_at(bytes, rec::TRACE_ID),
        span_id: u64_at(bytes, rec::SPAN_ID),
        parent_id: u64_at(bytes, rec::PARENT_ID),
        seq: seq_word as u32,
        port: (seq_word >> 32) as u16,
        flags: bytes[rec::FLAGS],
        service,
        name,
        ip,
        key,
        value,
        end_raw,
        raw: bytes,
        position: seq_word as u32 as u64,
    })
}

impl Record<'_> {
    /// True for a force-sampled (debug) trace.
    pub fn debug(&self) -> bool {
        self.flags & layout::RECORD_FLAG_DEBUG != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: if cfg!(miri) { 8 } else { 1024 }, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400), kind in 0u64..70) {
            let _ = parse_record(&bytes, kind);
        }
    }

    #[test]
    fn short_and_overrun_are_errors() {
        assert_eq!(parse_record(&[0; 10], 1), Err(RecordError::Short(10)));
        let mut b = vec![0u8; 64];
        b[rec::LEN_KEY] = 20;
        assert_eq!(parse_record(&b, 1), Err(RecordError::Overrun(20, 64)));
        assert_eq!(parse_record(&b, 9), Err(RecordError::Kind(9)));
    }
}

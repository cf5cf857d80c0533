//! Helpers for tests: valid ring records built with the library's writer.

use blkkin::ring::layout::{self, CommitWord};
use blkkin::ring::mem::RingMem;
use blkkin::ring::writer::{RecordIn, RingGeometry, RingWriter, Value};

/// One committed ring record (commit word + body) whose span id is `seq`
/// and whose value is `value`; its timestamp is set to `seq` so the bytes
/// are deterministic.
pub fn record(seq: u64, value: &[u8]) -> Vec<u8> {
    let mem = RingMem::heap(layout::HEADER_SIZE + 65536);
    let geo = RingGeometry {
        data_size: 65536,
        max_record: 8192,
        overwrite: true,
    };
    let w = RingWriter::new(mem, geo);
    let r = RecordIn {
        trace_id: 1,
        span_id: seq.max(1),
        parent_id: 0,
        port: 1,
        flags: 0,
        kind: layout::Kind::String,
        service: b"svc",
        name: b"op",
        ip: b"127.0.0.1",
        key: b"k",
        value: Value::Str(value),
    };
    w.write(blkkin::clock::ClockSource::Realtime, &r)
        .expect("record fits");
    let at = layout::HEADER_SIZE;
    let len = CommitWord::decode(w.mem().word(at).load(std::sync::atomic::Ordering::Relaxed)).len;
    let mut words = vec![0u64; len as usize / 8];
    w.mem().read_words(at, &mut words);
    let mut bytes: Vec<u8> = words.iter().flat_map(|x| x.to_le_bytes()).collect();
    // The body starts with the raw timestamp, right after the commit word.
    bytes[8..16].copy_from_slice(&seq.to_le_bytes());
    bytes
}

/// The record for position `pos` used throughout the tests: its value names
/// the position and its sequence number is the position's low 32 bits, as a
/// ring writes it (the relay checks that at ingest).
pub fn record_at(pos: u64) -> Vec<u8> {
    let mut r = record(pos + 1, format!("pos-{pos}").as_bytes());
    r[layout::rec::SEQ..layout::rec::SEQ + 4].copy_from_slice(&(pos as u32).to_le_bytes());
    r
}

/// A record with a well-formed commit word (so frames carrying it decode)
/// whose body no reader can decode: its string lengths overrun it.
pub fn poison_at(pos: u64) -> Vec<u8> {
    let mut r = record_at(pos);
    r[layout::rec::LEN_SERVICE] = 255;
    r[layout::rec::LEN_NAME] = 255;
    r
}

/// Records for positions `from..to`, back to back.
pub fn records(from: u64, to: u64) -> Vec<u8> {
    (from..to).flat_map(record_at).collect()
}

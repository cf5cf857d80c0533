//! The relay wire protocol, version 1: frames and their codec.
//!
//! Shared by the consumer daemon, the relay and live readers (`blkkin tail`,
//! the collector); docs/PROTOCOL.md describes the conversation. This module is
//! only the byte format: every frame is length-prefixed and versioned, every
//! length is bounded before anything is allocated, and decoding arbitrary
//! bytes yields a [`WireError`], never a panic.
//!
//! ```text
//! frame   = length u32 BE (of what follows, ≤ max frame) | kind u8 | payload
//! strings = length u16 BE | UTF-8 bytes
//! ```
//!
//! Annotation records travel exactly as they sit in a ring (commit word and
//! body, see [`crate::ring::layout`]): the consumer copies validated records,
//! the relay stores them as they are, and readers decode them with
//! [`crate::ring::parse_record`] and the stream's calibration.

use crate::ring::header::Calibration;
use crate::ring::layout::{self, CommitWord};
use crate::ring::reader::{ReaderStats, WriterCounters};

/// Protocol version spoken by this build.
pub const VERSION: u16 = 1;
/// Magic bytes at the start of every [`Frame::Hello`].
pub const MAGIC: [u8; 8] = *b"BLKKWIRE";
/// Default upper bound of one frame (length field), 4 MiB.
pub const DEFAULT_MAX_FRAME: u32 = 4 << 20;
/// Longest string field.
pub const MAX_STRING: usize = 1024;
/// Most records in one [`Frame::Records`].
pub const MAX_RECORDS_PER_FRAME: u32 = 65_536;

/// Who is speaking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A consumer daemon sending rings' records.
    Consumer = 1,
    /// A live reader (tail, collector).
    Reader = 2,
}

/// Identity of one stream: one ring of one process on one node.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamKey {
    /// Node (host) name of the consumer.
    pub node: String,
    /// Writer process id.
    pub pid: u32,
    /// Writer process start time (clock ticks since boot).
    pub start_time: u64,
    /// CPU (ring) number.
    pub cpu: u32,
}

/// Where a reader starts a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The oldest record the relay still holds.
    Oldest,
    /// Only records arriving from now on.
    Newest,
    /// The record at this position (resume after a reconnect).
    At(u64),
}

/// What the relay knows of a stream (answer to [`Frame::List`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSummary {
    /// The stream.
    pub key: StreamKey,
    /// Position of the oldest record held (retention may have dropped older).
    pub first: u64,
    /// Position the next record will get.
    pub next: u64,
    /// The writer exited and the stream is complete.
    pub closed: bool,
}

/// Error codes carried by [`Frame::Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The peer speaks another protocol version.
    Version = 1,
    /// A frame could not be decoded.
    Malformed = 2,
    /// A frame arrived that is not allowed in this state or role.
    Unexpected = 3,
    /// The server is overloaded or shutting down; retry later.
    Unavailable = 4,
}

/// One protocol message.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// First frame of every connection, from the client.
    Hello {
        /// Protocol version the client speaks.
        version: u16,
        /// Consumer or reader.
        role: Role,
        /// Node (host) name, or the reader's name.
        name: String,
    },
    /// The server's answer to [`Frame::Hello`].
    Welcome {
        /// Protocol version the server speaks.
        version: u16,
        /// The server's name.
        name: String,
    },
    /// A fatal problem; the sender closes the connection after it.
    Error {
        /// What went wrong.
        code: ErrorCode,
        /// For a person.
        message: String,
    },
    /// Consumer → relay: a stream starts (or resumes) under `handle`.
    OpenStream {
        /// Connection-local number the following frames use.
        handle: u32,
        /// The stream.
        key: StreamKey,
        /// Clock calibration of the ring.
        calibration: Calibration,
    },
    /// Records of a stream, in order, starting at position `first`.
    Records {
        /// Stream handle (consumer) or subscription-local stream number (reader).
        handle: u32,
        /// Position of the first record.
        first: u64,
        /// Whole ring records, back to back.
        records: Vec<u8>,
    },
    /// Consumer → relay: loss counters of a stream (cumulative).
    Counters {
        /// Stream handle.
        handle: u32,
        /// What the ring reader counted.
        reader: ReaderStats,
        /// What the writers counted in the ring header.
        writer: WriterCounters,
    },
    /// Consumer → relay: new clock calibration of a stream.
    Calibrate {
        /// Stream handle.
        handle: u32,
        /// The calibration.
        calibration: Calibration,
    },
    /// Consumer → relay: the writer exited and the ring is fully drained.
    CloseStream {
        /// Stream handle.
        handle: u32,
    },
    /// Relay → consumer: every record before `next` is persisted.
    Ack {
        /// Stream handle.
        handle: u32,
        /// Next position the relay expects.
        next: u64,
    },
    /// Reader → relay: list the streams.
    List,
    /// Relay → reader: the streams.
    Streams(Vec<StreamSummary>),
    /// Reader → relay: send records of every stream (`key` None) or one.
    Subscribe {
        /// One stream, or all (current and future).
        key: Option<StreamKey>,
        /// Where to start.
        start: Start,
    },
    /// Relay → reader: a stream the reader will receive records of, under `handle`.
    Announce {
        /// Subscription-local stream number used by the following [`Frame::Records`].
        handle: u32,
        /// The stream.
        key: StreamKey,
        /// Clock calibration of the ring.
        calibration: Calibration,
    },
}

/// Why bytes did not decode as a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The length field exceeds the allowed frame size.
    #[error("frame of {0} bytes exceeds the limit of {1} bytes")]
    TooLarge(u32, u32),
    /// The frame ended before its fields did.
    #[error("frame truncated: {0}")]
    Truncated(&'static str),
    /// Bytes left over after the last field.
    #[error("{0} trailing bytes after the frame's fields")]
    Trailing(usize),
    /// An unknown frame kind.
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    /// A field holds an impossible value.
    #[error("invalid {0}")]
    Invalid(&'static str),
    /// A Hello without the protocol magic.
    #[error("not a blkkin peer (bad magic)")]
    BadMagic,
}

mod kind {
    pub const HELLO: u8 = 1;
    pub const WELCOME: u8 = 2;
    pub const ERROR: u8 = 3;
    pub const OPEN_STREAM: u8 = 10;
    pub const RECORDS: u8 = 11;
    pub const COUNTERS: u8 = 12;
    pub const CALIBRATE: u8 = 13;
    pub const CLOSE_STREAM: u8 = 14;
    pub const ACK: u8 = 15;
    pub const LIST: u8 = 20;
    pub const STREAMS: u8 = 21;
    pub const SUBSCRIBE: u8 = 22;
    pub const ANNOUNCE: u8 = 23;
}

struct Enc(Vec<u8>);

impl Enc {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn str(&mut self, s: &str) {
        let mut end = s.len().min(MAX_STRING);
        while !s.is_char_boundary(end) {
            end -= 1; // never cut a character in half
        }
        let b = &s.as_bytes()[..end];
        self.u16(b.len() as u16);
        self.0.extend_from_slice(b);
    }
    fn key(&mut self, k: &StreamKey) {
        self.str(&k.node);
        self.u32(k.pid);
        self.u64(k.start_time);
        self.u32(k.cpu);
    }
    fn calibration(&mut self, c: &Calibration) {
        for v in [c.raw0, c.ns0, c.raw1, c.ns1] {
            self.u64(v);
        }
    }
}

struct Dec<'a>(&'a [u8]);

impl<'a> Dec<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        if self.0.len() < n {
            return Err(WireError::Truncated(what));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, WireError> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(
            self.take(2, what)?.try_into().expect("2 bytes"),
        ))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(
            self.take(4, what)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(
            self.take(8, what)?.try_into().expect("8 bytes"),
        ))
    }
    fn str(&mut self, what: &'static str) -> Result<String, WireError> {
        let n = self.u16(what)? as usize;
        if n > MAX_STRING {
            return Err(WireError::Invalid(what));
        }
        let b = self.take(n, what)?;
        String::from_utf8(b.to_vec()).map_err(|_| WireError::Invalid(what))
    }
    fn key(&mut self) -> Result<StreamKey, WireError> {
        Ok(StreamKey {
            node: self.str("stream node")?,
            pid: self.u32("stream pid")?,
            start_time: self.u64("stream start time")?,
            cpu: self.u32("stream cpu")?,
        })
    }
    fn calibration(&mut self) -> Result<Calibration, WireError> {
        Ok(Calibration {
            raw0: self.u64("calibration")?,
            ns0: self.u64("calibration")?,
            raw1: self.u64("calibration")?,
            ns1: self.u64("calibration")?,
        })
    }
}

/// Checks that `records` is a whole number of well-framed ring records and
/// returns how many there are. Bodies are checked by readers when decoding.
pub fn count_records(records: &[u8]) -> Result<u32, WireError> {
    let mut at = 0;
    let mut n = 0u32;
    while at < records.len() {
        let w = records
            .get(at..at + 8)
            .ok_or(WireError::Invalid("record framing"))?;
        let cw = CommitWord::decode(u64::from_le_bytes(w.try_into().expect("8 bytes")));
        let len = cw.len as usize;
        if !cw.magic_ok
            || cw.state != layout::STATE_COMMITTED
            || len < layout::record_len(0)
            || !len.is_multiple_of(8)
            || len > records.len() - at
        {
            return Err(WireError::Invalid("record framing"));
        }
        at += len;
        n += 1;
        if n > MAX_RECORDS_PER_FRAME {
            return Err(WireError::Invalid("record count"));
        }
    }
    Ok(n)
}

impl Frame {
    /// Appends the encoded frame (length prefix included) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut e = Enc(Vec::with_capacity(64));
        match self {
            Frame::Hello {
                version,
                role,
                name,
            } => {
                e.u8(kind::HELLO);
                e.0.extend_from_slice(&MAGIC);
                e.u16(*version);
                e.u8(*role as u8);
                e.str(name);
            }
            Frame::Welcome { version, name } => {
                e.u8(kind::WELCOME);
                e.u16(*version);
                e.str(name);
            }
            Frame::Error { code, message } => {
                e.u8(kind::ERROR);
                e.u16(*code as u16);
                e.str(message);
            }
            Frame::OpenStream {
                handle,
                key,
                calibration,
            } => {
                e.u8(kind::OPEN_STREAM);
                e.u32(*handle);
                e.key(key);
                e.calibration(calibration);
            }
            Frame::Records {
                handle,
                first,
                records,
            } => {
                e.u8(kind::RECORDS);
                e.u32(*handle);
                e.u64(*first);
                e.0.extend_from_slice(records);
            }
            Frame::Counters {
                handle,
                reader,
                writer,
            } => {
                e.u8(kind::COUNTERS);
                e.u32(*handle);
                for v in [
                    reader.read,
                    reader.torn,
                    reader.corrupt,
                    reader.gap,
                    reader.resyncs,
                    reader.skipped_bytes,
                ] {
                    e.u64(v);
                }
                for v in [
                    writer.written,
                    writer.lost_full,
                    writer.lost_too_big,
                    writer.lost_no_ring,
                    writer.lost_corrupt,
                ] {
                    e.u64(v);
                }
            }
            Frame::Calibrate {
                handle,
                calibration,
            } => {
                e.u8(kind::CALIBRATE);
                e.u32(*handle);
                e.calibration(calibration);
            }
            Frame::CloseStream { handle } => {
                e.u8(kind::CLOSE_STREAM);
                e.u32(*handle);
            }
            Frame::Ack { handle, next } => {
                e.u8(kind::ACK);
                e.u32(*handle);
                e.u64(*next);
            }
            Frame::List => e.u8(kind::LIST),
            Frame::Streams(list) => {
                e.u8(kind::STREAMS);
                e.u32(list.len() as u32);
                for s in list {
                    e.key(&s.key);
                    e.u64(s.first);
                    e.u64(s.next);
                    e.u8(s.closed as u8);
                }
            }
            Frame::Subscribe { key, start } => {
                e.u8(kind::SUBSCRIBE);
                match key {
                    None => e.u8(0),
                    Some(k) => {
                        e.u8(1);
                        e.key(k);
                    }
                }
                match start {
                    Start::Oldest => e.u8(0),
                    Start::Newest => e.u8(1),
                    Start::At(p) => {
                        e.u8(2);
                        e.u64(*p);
                    }
                }
            }
            Frame::Announce {
                handle,
                key,
                calibration,
            } => {
                e.u8(kind::ANNOUNCE);
                e.u32(*handle);
                e.key(key);
                e.calibration(calibration);
            }
        }
        out.extend_from_slice(&(e.0.len() as u32).to_be_bytes());
        out.extend_from_slice(&e.0);
    }

    /// Decodes one frame body (after the length prefix).
    pub fn decode(body: &[u8]) -> Result<Frame, WireError> {
        let mut d = Dec(body);
        let k = d.u8("frame kind")?;
        let frame = match k {
            kind::HELLO => {
                if d.take(8, "magic")? != MAGIC {
                    return Err(WireError::BadMagic);
                }
                let version = d.u16("version")?;
                let role = match d.u8("role")? {
                    1 => Role::Consumer,
                    2 => Role::Reader,
                    _ => return Err(WireError::Invalid("role")),
                };
                Frame::Hello {
                    version,
                    role,
                    name: d.str("name")?,
                }
            }
            kind::WELCOME => Frame::Welcome {
                version: d.u16("version")?,
                name: d.str("name")?,
            },
            kind::ERROR => {
                let code = match d.u16("error code")? {
                    1 => ErrorCode::Version,
                    2 => ErrorCode::Malformed,
                    3 => ErrorCode::Unexpected,
                    4 => ErrorCode::Unavailable,
                    _ => return Err(WireError::Invalid("error code")),
                };
                Frame::Error {
                    code,
                    message: d.str("error message")?,
                }
            }
            kind::OPEN_STREAM => Frame::OpenStream {
                handle: d.u32("handle")?,
                key: d.key()?,
                calibration: d.calibration()?,
            },
            kind::RECORDS => {
                let handle = d.u32("handle")?;
                let first = d.u64("position")?;
                let records = std::mem::take(&mut d.0);
                count_records(records)?;
                Frame::Records {
                    handle,
                    first,
                    records: records.to_vec(),
                }
            }
            kind::COUNTERS => {
                let handle = d.u32("handle")?;
                let mut v = [0u64; 11];
                for x in &mut v {
                    *x = d.u64("counters")?;
                }
                Frame::Counters {
                    handle,
                    reader: ReaderStats {
                        read: v[0],
                        torn: v[1],
                        corrupt: v[2],
                        gap: v[3],
                        resyncs: v[4],
                        skipped_bytes: v[5],
                    },
                    writer: WriterCounters {
                        written: v[6],
                        lost_full: v[7],
                        lost_too_big: v[8],
                        lost_no_ring: v[9],
                        lost_corrupt: v[10],
                    },
                }
            }
            kind::CALIBRATE => Frame::Calibrate {
                handle: d.u32("handle")?,
                calibration: d.calibration()?,
            },
            kind::CLOSE_STREAM => Frame::CloseStream {
                handle: d.u32("handle")?,
            },
            kind::ACK => Frame::Ack {
                handle: d.u32("handle")?,
                next: d.u64("position")?,
            },
            kind::LIST => Frame::List,
            kind::STREAMS => {
                let n = d.u32("stream count")? as usize;
                // Each summary takes at least 35 bytes: bound before allocating.
                if n > d.0.len() / 35 {
                    return Err(WireError::Invalid("stream count"));
                }
                let mut list = Vec::with_capacity(n);
                for _ in 0..n {
                    let key = d.key()?;
                    let first = d.u64("first position")?;
                    let next = d.u64("next position")?;
                    let closed = match d.u8("closed")? {
                        0 => false,
                        1 => true,
                        _ => return Err(WireError::Invalid("closed flag")),
                    };
                    list.push(StreamSummary {
                        key,
                        first,
                        next,
                        closed,
                    });
                }
                Frame::Streams(list)
            }
            kind::SUBSCRIBE => {
                let key = match d.u8("stream selector")? {
                    0 => None,
                    1 => Some(d.key()?),
                    _ => return Err(WireError::Invalid("stream selector")),
                };
                let start = match d.u8("start")? {
                    0 => Start::Oldest,
                    1 => Start::Newest,
                    2 => Start::At(d.u64("start position")?),
                    _ => return Err(WireError::Invalid("start")),
                };
                Frame::Subscribe { key, start }
            }
            kind::ANNOUNCE => Frame::Announce {
                handle: d.u32("handle")?,
                key: d.key()?,
                calibration: d.calibration()?,
            },
            other => return Err(WireError::UnknownKind(other)),
        };
        if !d.0.is_empty() {
            return Err(WireError::Trailing(d.0.len()));
        }
        Ok(frame)
    }
}

/// Splits frames off a byte buffer filled from a socket.
///
/// Feed it what arrives, take whole frames out; a length over the limit is
/// an error as soon as the 4 length bytes are in, before any payload is
/// buffered, so a hostile peer cannot make the reader allocate.
#[derive(Debug)]
pub struct FrameBuffer {
    buf: Vec<u8>,
    max_frame: u32,
}

impl FrameBuffer {
    /// A buffer accepting frames up to `max_frame` bytes.
    pub fn new(max_frame: u32) -> FrameBuffer {
        FrameBuffer {
            buf: Vec::new(),
            max_frame,
        }
    }

    /// Appends bytes read from the peer.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes buffered and not yet taken.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True when nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The next whole frame, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, WireError> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes(self.buf[..4].try_into().expect("4 bytes"));
        if len > self.max_frame {
            return Err(WireError::TooLarge(len, self.max_frame));
        }
        let total = 4 + len as usize;
        if self.buf.len() < total {
            return Ok(None);
        }
        let frame = Frame::decode(&self.buf[4..total]);
        self.buf.drain(..total);
        frame.map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key() -> StreamKey {
        StreamKey {
            node: "node-1".into(),
            pid: 4242,
            start_time: 987654,
            cpu: 1,
        }
    }

    fn one_record(seq: u32) -> Vec<u8> {
        use crate::ring::writer::{RecordIn, RingGeometry, RingWriter, Value};
        let mem = crate::ring::mem::RingMem::heap(layout::HEADER_SIZE + 65536);
        let geo = RingGeometry {
            data_size: 65536,
            max_record: 4096,
            overwrite: true,
        };
        let w = RingWriter::new(mem, geo);
        let r = RecordIn {
            trace_id: 1,
            span_id: 2,
            parent_id: 0,
            port: 1,
            flags: 0,
            kind: layout::Kind::String,
            service: b"svc",
            name: b"op",
            ip: b"127.0.0.1",
            key: b"k",
            value: Value::Str(b"v"),
        };
        let r = RecordIn {
            span_id: seq as u64,
            ..r
        };
        w.write(crate::clock::ClockSource::Realtime, &r).unwrap();
        let at = layout::HEADER_SIZE;
        let len =
            CommitWord::decode(w.mem().word(at).load(std::sync::atomic::Ordering::Relaxed)).len;
        let mut words = vec![0u64; len as usize / 8];
        w.mem().read_words(at, &mut words);
        words.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    fn all_frames() -> Vec<Frame> {
        let cal = Calibration {
            raw0: 1,
            ns0: 2,
            raw1: 3,
            ns1: 4,
        };
        let mut records = one_record(0);
        records.extend(one_record(1));
        vec![
            Frame::Hello {
                version: VERSION,
                role: Role::Consumer,
                name: "node-1".into(),
            },
            Frame::Welcome {
                version: VERSION,
                name: "relay".into(),
            },
            Frame::Error {
                code: ErrorCode::Malformed,
                message: "bad".into(),
            },
            Frame::OpenStream {
                handle: 7,
                key: key(),
                calibration: cal,
            },
            Frame::Records {
                handle: 7,
                first: 100,
                records,
            },
            Frame::Counters {
                handle: 7,
                reader: ReaderStats {
                    read: 1,
                    torn: 2,
                    corrupt: 3,
                    gap: 4,
                    resyncs: 5,
                    skipped_bytes: 6,
                },
                writer: WriterCounters {
                    written: 7,
                    lost_full: 8,
                    lost_too_big: 9,
                    lost_no_ring: 10,
                    lost_corrupt: 11,
                },
            },
            Frame::Calibrate {
                handle: 7,
                calibration: cal,
            },
            Frame::CloseStream { handle: 7 },
            Frame::Ack {
                handle: 7,
                next: 102,
            },
            Frame::List,
            Frame::Streams(vec![StreamSummary {
                key: key(),
                first: 0,
                next: 102,
                closed: true,
            }]),
            Frame::Subscribe {
                key: None,
                start: Start::Newest,
            },
            Frame::Subscribe {
                key: Some(key()),
                start: Start::At(55),
            },
            Frame::Announce {
                handle: 1,
                key: key(),
                calibration: cal,
            },
        ]
    }

    #[test]
    fn every_frame_round_trips_through_a_byte_stream() {
        let frames = all_frames();
        let mut bytes = Vec::new();
        for f in &frames {
            f.encode(&mut bytes);
        }
        // Delivered one byte at a time: frames come out whole, in order.
        let mut fb = FrameBuffer::new(DEFAULT_MAX_FRAME);
        let mut got = Vec::new();
        for b in bytes {
            fb.extend(&[b]);
            while let Some(f) = fb.next_frame().unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, frames);
        assert!(fb.is_empty());
    }

    #[test]
    fn long_strings_are_cut_on_a_character_boundary() {
        let name = "é".repeat(MAX_STRING); // 2 bytes each
        let mut bytes = Vec::new();
        Frame::Welcome { version: 1, name }.encode(&mut bytes);
        match Frame::decode(&bytes[4..]).unwrap() {
            Frame::Welcome { name, .. } => assert_eq!(name.len(), MAX_STRING),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn oversized_length_is_refused_before_buffering() {
        let mut fb = FrameBuffer::new(1024);
        fb.extend(&(1_000_000u32).to_be_bytes());
        assert_eq!(fb.next_frame(), Err(WireError::TooLarge(1_000_000, 1024)));
    }

    #[test]
    fn hello_needs_magic_and_records_need_framing() {
        let mut bytes = Vec::new();
        Frame::Hello {
            version: 1,
            role: Role::Reader,
            name: "x".into(),
        }
        .encode(&mut bytes);
        bytes[5] ^= 0xff; // inside the magic
        assert_eq!(Frame::decode(&bytes[4..]), Err(WireError::BadMagic));
        let mut bytes = Vec::new();
        Frame::Records {
            handle: 1,
            first: 0,
            records: vec![0; 16],
        }
        .encode(&mut bytes);
        assert_eq!(
            Frame::decode(&bytes[4..]),
            Err(WireError::Invalid("record framing"))
        );
        assert_eq!(Frame::decode(&[99]), Err(WireError::UnknownKind(99)));
        assert_eq!(
            Frame::decode(&[kind::ACK, 0, 0]),
            Err(WireError::Truncated("handle"))
        );
        assert_eq!(Frame::decode(&[kind::LIST, 0]), Err(WireError::Trailing(1)));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Frame::decode(&bytes);
            let mut fb = FrameBuffer::new(256);
            fb.extend(&bytes);
            while let Ok(Some(_)) = fb.next_frame() {}
        }

        #[test]
        fn streams_count_cannot_force_a_huge_allocation(n in any::<u32>()) {
            let mut body = vec![kind::STREAMS];
            body.extend_from_slice(&n.to_be_bytes());
            let r = Frame::decode(&body);
            prop_assert!(r.is_err() || n == 0);
        }
    }
}

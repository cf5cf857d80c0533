//! The relay wire protocol, version 2: frames and their codec.
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

mod codec;
mod status;

pub use status::{ConsumerStats, PeerStatus, StatusReport, StreamStatus};

/// Protocol version spoken by this build.
pub const VERSION: u16 = 2;
/// Magic bytes at the start of every [`Frame::Hello`].
pub const MAGIC: [u8; 8] = *b"BLKKWIRE";
/// Default upper bound of one frame (length field), 4 MiB.
pub const DEFAULT_MAX_FRAME: u32 = 4 << 20;
/// Most record bytes a consumer puts in one [`Frame::Records`].
pub const MAX_RECORDS_BYTES: usize = 3 << 20;
/// Smallest frame limit a relay accepts to be configured with: a
/// [`Frame::Records`] of [`MAX_RECORDS_BYTES`] plus its header, with room
/// to spare. (A lower limit would refuse consumers' frames and leave them
/// re-sending the same batch forever.)
pub const MIN_MAX_FRAME: u32 = (MAX_RECORDS_BYTES + (64 << 10)) as u32;
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
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
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
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct StreamSummary {
    /// The stream.
    #[cfg_attr(feature = "serde", serde(flatten))]
    pub key: StreamKey,
    /// Position of the oldest record held (retention may have dropped older).
    pub first: u64,
    /// Position the next record will get.
    pub next: u64,
    /// The writer exited and the stream is complete.
    pub closed: bool,
}

/// Every loss counted for one stream, cumulative since the stream began:
/// what the ring's writers dropped, what the consumer's ring reader could not
/// use, and positions the relay never received.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct StreamCounters {
    /// What the consumer's ring reader counted (`torn`: records of a writer
    /// that died before committing them).
    pub reader: ReaderStats,
    /// What the writers counted in the ring header.
    pub writer: WriterCounters,
    /// Records the relay never received (gaps in the positions consumers sent).
    pub relay_gap: u64,
    /// Records the relay refused at ingest because no reader could decode them.
    pub relay_refused: u64,
    /// Records the relay lost to damage in its own files (found by recovery
    /// or by a CRC check on read).
    pub relay_corrupt: u64,
    /// Records retention deleted before this reader read them (per reader:
    /// the relay counts them for the connection it sends them to).
    pub relay_retention: u64,
}

impl StreamCounters {
    /// All records lost on the way, whatever the cause. Saturates: counters
    /// come from the network and are not trusted to be small.
    pub fn lost(&self) -> u64 {
        [
            self.writer.lost(),
            self.reader.torn,
            self.reader.corrupt,
            self.reader.gap,
            self.relay_gap,
            self.relay_refused,
            self.relay_corrupt,
            self.relay_retention,
        ]
        .into_iter()
        .fold(0u64, u64::saturating_add)
    }
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
    /// The peer is not authenticated, or its identity does not allow what
    /// it asked for (docs/SECURITY.md).
    Denied = 5,
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
        /// Shared token authenticating the client (relays with a token
        /// file); encoded only when present, so a Hello without one is
        /// byte-for-byte the Hello of older clients.
        token: Option<String>,
    },
    /// The server's answer to [`Frame::Hello`].
    Welcome {
        /// Protocol version the server speaks.
        version: u16,
        /// The server's name.
        name: String,
        /// The server closes a connection silent for this long (ms, 0: never);
        /// clients send [`Frame::Heartbeat`] well within it.
        idle_timeout_ms: u32,
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
    /// Client → relay: "still here" from a connection with nothing else to say.
    Heartbeat,
    /// Consumer → relay: the consumer's own counters (sent when they change).
    ConsumerStats(ConsumerStats),
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
    /// Relay → reader: cumulative loss counters of an announced stream, sent
    /// after its [`Frame::Announce`] and whenever they change.
    StreamCounters {
        /// The stream's subscription-local number.
        handle: u32,
        /// The counters.
        counters: StreamCounters,
    },
    /// Reader → relay: report the relay's state.
    Status,
    /// Relay → reader: answer to [`Frame::Status`].
    StatusReport(StatusReport),
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
    pub const HEARTBEAT: u8 = 16;
    pub const CONSUMER_STATS: u8 = 17;
    pub const LIST: u8 = 20;
    pub const STREAMS: u8 = 21;
    pub const SUBSCRIBE: u8 = 22;
    pub const ANNOUNCE: u8 = 23;
    pub const STREAM_COUNTERS: u8 = 24;
    pub const STATUS: u8 = 25;
    pub const STATUS_REPORT: u8 = 26;
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

    /// Changes the largest frame accepted from now on (a relay accepts
    /// only small frames before a peer said who it is).
    pub fn set_max_frame(&mut self, max_frame: u32) {
        self.max_frame = max_frame;
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
mod tests;

//! A blocking live reader of a relay (docs/PROTOCOL.md): `blkkin tail`,
//! `blkkin status` and the collector read through it.
//!
//! ```no_run
//! use blkkin::relay_client::{Event, RelayReader};
//! use blkkin::wire::Start;
//! let mut r = RelayReader::connect("127.0.0.1:7420", "example")?;
//! r.subscribe(None, Start::Oldest)?;
//! loop {
//!     r.next_events(|e| match e {
//!         Event::Record(stream, record) => println!("{} {}", stream.key.node, record.position),
//!         // Cumulative; also in `stream.counters` at any time.
//!         Event::Counters(stream) => println!("lost so far: {}", stream.counters.lost()),
//!     })?;
//! }
//! # Ok::<(), blkkin::relay_client::ReaderError>(())
//! ```

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
#[cfg(not(feature = "tls"))]
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::ring::header::{Calibration, RingInfo};
use crate::ring::layout::CommitWord;
use crate::ring::record::{parse_record, Record};
use crate::wire::{
    ErrorCode, Frame, FrameBuffer, Role, Start, StatusReport, StreamCounters, StreamKey,
    StreamSummary, WireError, DEFAULT_MAX_FRAME, VERSION,
};

/// Errors of a relay reader.
#[derive(Debug, thiserror::Error)]
pub enum ReaderError {
    /// Connecting or talking to the relay failed.
    #[error("relay connection: {0}")]
    Io(#[from] std::io::Error),
    /// The relay sent bytes that are not a valid frame.
    #[error("relay sent a malformed frame: {0}")]
    Wire(#[from] WireError),
    /// The relay refused or broke the protocol.
    #[error("relay: {0}")]
    Protocol(String),
    /// The relay closed the connection.
    #[error("the relay closed the connection")]
    Closed,
    /// Connecting (or the TLS handshake) failed.
    #[error("{0}")]
    Connect(String),
    /// The relay refused this client's identity (no or a wrong certificate
    /// or token, or a role it may not take).
    #[error("relay refused access: {0}")]
    Denied(String),
}

/// A stream as a reader sees it.
#[derive(Debug, Clone)]
pub struct StreamInfo {
    /// Its key.
    pub key: StreamKey,
    /// Its clock calibration.
    pub calibration: Calibration,
    /// A ring identity for decoding (pid, start time and cpu from the key).
    pub ring: RingInfo,
    /// Next position expected (everything before it was delivered).
    pub next: u64,
    /// The stream's loss counters, cumulative, as last sent by the relay.
    pub counters: StreamCounters,
    /// Records the relay sent that did not decode: skipped and counted
    /// here (a relay screens records at ingest, so this stays 0 unless its
    /// files were damaged or it is not a blkkin relay).
    pub undecodable: u64,
}

impl StreamInfo {
    /// Every record of the stream lost before this reader: the relay's
    /// counters plus the records this reader could not decode.
    pub fn lost(&self) -> u64 {
        self.counters.lost().saturating_add(self.undecodable)
    }
}

/// What [`RelayReader::next_events`] delivers.
#[derive(Debug)]
pub enum Event<'a> {
    /// A record of a stream (its position in `Record::position`).
    Record(&'a StreamInfo, &'a Record<'a>),
    /// The stream's loss counters changed (or were first received);
    /// `StreamInfo::counters` holds the new values.
    Counters(&'a StreamInfo),
}

/// The connection: plain or TLS with feature `tls`, plain TCP without.
#[cfg(feature = "tls")]
type Sock = crate::tls::ClientStream;
#[cfg(not(feature = "tls"))]
type Sock = TcpStream;

/// How long connecting (and a TLS handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection to a relay as a reader.
pub struct RelayReader {
    sock: Sock,
    frames: FrameBuffer,
    streams: HashMap<u32, StreamInfo>,
    /// Next position per stream, across subscriptions (handles may change).
    delivered: HashMap<StreamKey, u64>,
}

impl RelayReader {
    /// Connects over plain TCP and introduces itself as reader `name`.
    pub fn connect(addr: &str, name: &str) -> Result<RelayReader, ReaderError> {
        #[cfg(feature = "tls")]
        return RelayReader::connect_with(addr, name, &crate::tls::ClientAuth::default());
        #[cfg(not(feature = "tls"))]
        {
            let target = addr
                .to_socket_addrs()?
                .next()
                .ok_or_else(|| ReaderError::Protocol(format!("{addr} resolves to no address")))?;
            let sock = TcpStream::connect_timeout(&target, CONNECT_TIMEOUT)?;
            sock.set_nodelay(true).ok();
            RelayReader::hello(sock, name, None)
        }
    }

    /// Connects with `auth` (TLS and/or a token; the default is plain TCP)
    /// and introduces itself as reader `name`.
    #[cfg(feature = "tls")]
    pub fn connect_with(
        addr: &str,
        name: &str,
        auth: &crate::tls::ClientAuth,
    ) -> Result<RelayReader, ReaderError> {
        let sock = crate::tls::ClientStream::connect(addr, auth, CONNECT_TIMEOUT)
            .map_err(|e| ReaderError::Connect(e.to_string()))?;
        RelayReader::hello(sock, name, auth.token.clone())
    }

    fn hello(sock: Sock, name: &str, token: Option<String>) -> Result<RelayReader, ReaderError> {
        let mut r = RelayReader {
            sock,
            frames: FrameBuffer::new(DEFAULT_MAX_FRAME),
            streams: HashMap::new(),
            delivered: HashMap::new(),
        };
        r.send(&Frame::Hello {
            version: VERSION,
            role: Role::Reader,
            name: name.to_string(),
            token,
        })?;
        match r.next_frame()? {
            Frame::Welcome { version, .. } if version == VERSION => Ok(r),
            Frame::Welcome { version, .. } => Err(ReaderError::Protocol(format!(
                "relay speaks protocol version {version}, we speak {VERSION}"
            ))),
            Frame::Error {
                code: ErrorCode::Denied,
                message,
            } => Err(ReaderError::Denied(message)),
            Frame::Error { message, .. } => Err(ReaderError::Protocol(message)),
            other => Err(ReaderError::Protocol(format!(
                "unexpected answer to Hello: {other:?}"
            ))),
        }
    }

    /// Connects again after a failure, keeping what was delivered: a
    /// following subscription from [`Start::Oldest`] then continues every
    /// stream where it stopped, without duplicates.
    pub fn reconnect(&mut self, addr: &str, name: &str) -> Result<(), ReaderError> {
        let fresh = RelayReader::connect(addr, name)?;
        self.replace_connection(fresh);
        Ok(())
    }

    /// [`RelayReader::reconnect`] with `auth`.
    #[cfg(feature = "tls")]
    pub fn reconnect_with(
        &mut self,
        addr: &str,
        name: &str,
        auth: &crate::tls::ClientAuth,
    ) -> Result<(), ReaderError> {
        let fresh = RelayReader::connect_with(addr, name, auth)?;
        self.replace_connection(fresh);
        Ok(())
    }

    fn replace_connection(&mut self, fresh: RelayReader) {
        self.sock = fresh.sock;
        self.frames = fresh.frames;
        self.streams.clear();
    }

    fn send(&mut self, f: &Frame) -> Result<(), ReaderError> {
        let mut buf = Vec::new();
        f.encode(&mut buf);
        self.sock.write_all(&buf)?;
        Ok(())
    }

    fn next_frame(&mut self) -> Result<Frame, ReaderError> {
        loop {
            if let Some(f) = self.frames.next_frame()? {
                return Ok(f);
            }
            let mut buf = [0u8; 64 * 1024];
            match self.sock.read(&mut buf) {
                Ok(0) => return Err(ReaderError::Closed),
                Ok(n) => self.frames.extend(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The streams the relay holds (the relay answers in pages, the last
    /// one empty).
    pub fn list(&mut self) -> Result<Vec<StreamSummary>, ReaderError> {
        self.send(&Frame::List)?;
        let mut all = Vec::new();
        loop {
            match self.next_frame()? {
                Frame::Streams(page) if page.is_empty() => return Ok(all),
                Frame::Streams(page) => all.extend(page),
                Frame::Error { message, .. } => return Err(ReaderError::Protocol(message)),
                other => {
                    return Err(ReaderError::Protocol(format!(
                        "unexpected answer to List: {other:?}"
                    )))
                }
            }
        }
    }

    /// The relay's state: streams with positions and loss counters,
    /// connected consumers (with their own counters) and readers. Call it
    /// before subscribing (records of a subscription would come first).
    pub fn status(&mut self) -> Result<StatusReport, ReaderError> {
        self.send(&Frame::Status)?;
        // Pages: the first with the peers, each with streams, until one
        // without streams.
        let mut report: Option<StatusReport> = None;
        loop {
            match self.next_frame()? {
                Frame::StatusReport(page) => {
                    let last = page.streams.is_empty();
                    match report.as_mut() {
                        None => report = Some(page),
                        Some(r) => {
                            r.consumers.extend(page.consumers);
                            r.readers.extend(page.readers);
                            r.streams.extend(page.streams);
                        }
                    }
                    if last {
                        return Ok(report.expect("set above"));
                    }
                }
                Frame::Error { message, .. } => return Err(ReaderError::Protocol(message)),
                other => {
                    return Err(ReaderError::Protocol(format!(
                        "unexpected answer to Status: {other:?}"
                    )))
                }
            }
        }
    }

    /// Asks for the records of every stream (`None`) or one, from `start`.
    pub fn subscribe(&mut self, key: Option<StreamKey>, start: Start) -> Result<(), ReaderError> {
        self.send(&Frame::Subscribe { key, start })
    }

    /// Continues stream `key` at position `next`: positions before it count
    /// as delivered (skipped if they arrive), and
    /// [`RelayReader::subscribe_resuming`] asks the relay for the stream from
    /// there. A collector restoring a checkpoint calls it once per stream.
    pub fn resume_at(&mut self, key: StreamKey, next: u64) {
        self.delivered.insert(key, next);
    }

    /// Next position of every stream delivered so far (or set with
    /// [`RelayReader::resume_at`]).
    pub fn positions(&self) -> &HashMap<StreamKey, u64> {
        &self.delivered
    }

    /// Subscribes to every stream, current and future: each stream already
    /// delivered (or resumed) from its next position (`Start::At`, so the
    /// relay does not send it again), every other one from the oldest
    /// record the relay holds.
    pub fn subscribe_resuming(&mut self) -> Result<(), ReaderError> {
        let mut frames: Vec<Frame> = self
            .delivered
            .iter()
            .map(|(k, n)| Frame::Subscribe {
                key: Some(k.clone()),
                start: Start::At(*n),
            })
            .collect();
        frames.push(Frame::Subscribe {
            key: None,
            start: Start::Oldest,
        });
        let mut buf = Vec::new();
        for f in &frames {
            f.encode(&mut buf);
        }
        self.sock.write_all(&buf)?;
        Ok(())
    }

    /// Blocks until records arrive; calls `each` for every record with its
    /// stream and position. Announcements and loss counters are absorbed
    /// (counters land in [`StreamInfo::counters`]). Records of a stream at
    /// positions already delivered are skipped (no duplicates after a
    /// resubscription).
    pub fn next_records(
        &mut self,
        mut each: impl FnMut(&StreamInfo, &Record<'_>),
    ) -> Result<usize, ReaderError> {
        loop {
            let n = self.next_events(|e| {
                if let Event::Record(s, r) = e {
                    each(s, r)
                }
            })?;
            if n > 0 {
                return Ok(n);
            }
        }
    }

    /// Blocks until records or changed loss counters arrive and calls `each`
    /// for them; returns how many records were delivered (0 after a counters
    /// update). Records at positions already delivered are skipped.
    pub fn next_events(&mut self, mut each: impl FnMut(Event<'_>)) -> Result<usize, ReaderError> {
        loop {
            match self.next_frame()? {
                Frame::Announce {
                    handle,
                    key,
                    calibration,
                } => {
                    let ring = RingInfo {
                        pid: key.pid,
                        uid: 0,
                        start_time: key.start_time,
                        cpu: key.cpu,
                        flags: 0,
                        data_size: 0,
                        max_record: 0,
                        created_ns: 0,
                        boot_id: [0; 16],
                    };
                    let next = self.delivered.get(&key).copied().unwrap_or(0);
                    self.streams.insert(
                        handle,
                        StreamInfo {
                            key,
                            calibration,
                            ring,
                            next,
                            counters: StreamCounters::default(),
                            undecodable: 0,
                        },
                    );
                }
                Frame::Calibrate {
                    handle,
                    calibration,
                } => {
                    // Applies to the records that follow (they are converted
                    // with the stream's newest calibration).
                    let s = self.streams.get_mut(&handle).ok_or_else(|| {
                        ReaderError::Protocol(format!(
                            "calibration for unannounced stream {handle}"
                        ))
                    })?;
                    s.calibration = calibration;
                }
                Frame::StreamCounters { handle, counters } => {
                    let s = self.streams.get_mut(&handle).ok_or_else(|| {
                        ReaderError::Protocol(format!("counters for unannounced stream {handle}"))
                    })?;
                    s.counters = counters;
                    each(Event::Counters(s));
                    return Ok(0);
                }
                Frame::Records {
                    handle,
                    first,
                    records,
                } => {
                    let s = self.streams.get_mut(&handle).ok_or_else(|| {
                        ReaderError::Protocol(format!("records for unannounced stream {handle}"))
                    })?;
                    let mut at = 0;
                    let mut pos = first;
                    let mut n = 0;
                    let undecodable = s.undecodable;
                    while at < records.len() {
                        // Framing was checked when the frame was decoded.
                        let cw = CommitWord::decode(u64::from_le_bytes(
                            records[at..at + 8].try_into().expect("8 bytes"),
                        ));
                        let bytes = &records[at..at + cw.len as usize];
                        if pos >= s.next {
                            match parse_record(bytes, cw.kind) {
                                Ok(mut r) => {
                                    r.position = pos;
                                    each(Event::Record(s, &r));
                                    n += 1;
                                }
                                // Skipped and counted (reported through
                                // `Event::Counters`): one bad record must
                                // not stop the reader.
                                Err(_) => s.undecodable += 1,
                            }
                            s.next = pos.saturating_add(1);
                        }
                        at += cw.len as usize;
                        pos = pos.saturating_add(1);
                    }
                    self.delivered.insert(s.key.clone(), s.next);
                    if s.undecodable != undecodable {
                        each(Event::Counters(s));
                    }
                    return Ok(n);
                }
                Frame::Error { message, .. } => return Err(ReaderError::Protocol(message)),
                other => {
                    return Err(ReaderError::Protocol(format!(
                        "unexpected frame: {other:?}"
                    )))
                }
            }
        }
    }
}

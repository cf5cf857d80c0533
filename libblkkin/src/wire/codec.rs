//! Byte encoding of [`Frame`]s: big-endian integers, length-prefixed strings,
//! every length checked before anything is allocated.

use super::*;

pub(super) struct Enc(pub(super) Vec<u8>);

impl Enc {
    pub(super) fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub(super) fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    pub(super) fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    pub(super) fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    pub(super) fn str(&mut self, s: &str) {
        let mut end = s.len().min(MAX_STRING);
        while !s.is_char_boundary(end) {
            end -= 1; // never cut a character in half
        }
        let b = &s.as_bytes()[..end];
        self.u16(b.len() as u16);
        self.0.extend_from_slice(b);
    }
    pub(super) fn key(&mut self, k: &StreamKey) {
        self.str(&k.node);
        self.u32(k.pid);
        self.u64(k.start_time);
        self.u32(k.cpu);
    }
    pub(super) fn stats(&mut self, r: &ReaderStats, w: &WriterCounters) {
        for v in [r.read, r.torn, r.corrupt, r.gap, r.resyncs, r.skipped_bytes] {
            self.u64(v);
        }
        for v in [
            w.written,
            w.lost_full,
            w.lost_too_big,
            w.lost_no_ring,
            w.lost_corrupt,
        ] {
            self.u64(v);
        }
    }
    pub(super) fn counters(&mut self, c: &StreamCounters) {
        self.stats(&c.reader, &c.writer);
        self.u64(c.relay_gap);
        self.u64(c.relay_refused);
        self.u64(c.relay_corrupt);
        self.u64(c.relay_retention);
    }
    pub(super) fn summary(&mut self, s: &StreamSummary) {
        self.key(&s.key);
        self.u64(s.first);
        self.u64(s.next);
        self.u8(s.closed as u8);
    }
    pub(super) fn calibration(&mut self, c: &Calibration) {
        for v in [c.raw0, c.ns0, c.raw1, c.ns1] {
            self.u64(v);
        }
    }
}

pub(super) struct Dec<'a>(pub(super) &'a [u8]);

impl<'a> Dec<'a> {
    pub(super) fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        if self.0.len() < n {
            return Err(WireError::Truncated(what));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    pub(super) fn u8(&mut self, what: &'static str) -> Result<u8, WireError> {
        Ok(self.take(1, what)?[0])
    }
    pub(super) fn u16(&mut self, what: &'static str) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(
            self.take(2, what)?.try_into().expect("2 bytes"),
        ))
    }
    pub(super) fn u32(&mut self, what: &'static str) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(
            self.take(4, what)?.try_into().expect("4 bytes"),
        ))
    }
    pub(super) fn u64(&mut self, what: &'static str) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(
            self.take(8, what)?.try_into().expect("8 bytes"),
        ))
    }
    pub(super) fn str(&mut self, what: &'static str) -> Result<String, WireError> {
        let n = self.u16(what)? as usize;
        if n > MAX_STRING {
            return Err(WireError::Invalid(what));
        }
        let b = self.take(n, what)?;
        String::from_utf8(b.to_vec()).map_err(|_| WireError::Invalid(what))
    }
    pub(super) fn key(&mut self) -> Result<StreamKey, WireError> {
        Ok(StreamKey {
            node: self.str("stream node")?,
            pid: self.u32("stream pid")?,
            start_time: self.u64("stream start time")?,
            cpu: self.u32("stream cpu")?,
        })
    }
    pub(super) fn stats(&mut self) -> Result<(ReaderStats, WriterCounters), WireError> {
        let mut v = [0u64; 11];
        for x in &mut v {
            *x = self.u64("counters")?;
        }
        Ok((
            ReaderStats {
                read: v[0],
                torn: v[1],
                corrupt: v[2],
                gap: v[3],
                resyncs: v[4],
                skipped_bytes: v[5],
            },
            WriterCounters {
                written: v[6],
                lost_full: v[7],
                lost_too_big: v[8],
                lost_no_ring: v[9],
                lost_corrupt: v[10],
            },
        ))
    }
    pub(super) fn counters(&mut self) -> Result<StreamCounters, WireError> {
        let (reader, writer) = self.stats()?;
        Ok(StreamCounters {
            reader,
            writer,
            relay_gap: self.u64("relay gap")?,
            relay_refused: self.u64("relay refused")?,
            relay_corrupt: self.u64("relay corrupt")?,
            relay_retention: self.u64("relay retention")?,
        })
    }
    pub(super) fn summary(&mut self) -> Result<StreamSummary, WireError> {
        let key = self.key()?;
        let first = self.u64("first position")?;
        let next = self.u64("next position")?;
        let closed = match self.u8("closed")? {
            0 => false,
            1 => true,
            _ => return Err(WireError::Invalid("closed flag")),
        };
        Ok(StreamSummary {
            key,
            first,
            next,
            closed,
        })
    }
    /// Checks that `n` items of at least `min_size` bytes each can still
    /// follow, before anything is allocated for them.
    pub(super) fn count(
        &mut self,
        min_size: usize,
        what: &'static str,
    ) -> Result<usize, WireError> {
        let n = self.u32(what)? as usize;
        if n > self.0.len() / min_size {
            return Err(WireError::Invalid(what));
        }
        Ok(n)
    }
    pub(super) fn calibration(&mut self) -> Result<Calibration, WireError> {
        Ok(Calibration {
            raw0: self.u64("calibration")?,
            ns0: self.u64("calibration")?,
            raw1: self.u64("calibration")?,
            ns1: self.u64("calibration")?,
        })
    }
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
                token,
            } => {
                e.u8(kind::HELLO);
                e.0.extend_from_slice(&MAGIC);
                e.u16(*version);
                e.u8(*role as u8);
                e.str(name);
                if let Some(t) = token {
                    e.str(t);
                }
            }
            Frame::Welcome {
                version,
                name,
                idle_timeout_ms,
            } => {
                e.u8(kind::WELCOME);
                e.u16(*version);
                e.str(name);
                e.u32(*idle_timeout_ms);
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
                e.stats(reader, writer);
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
            Frame::Heartbeat => e.u8(kind::HEARTBEAT),
            Frame::ConsumerStats(st) => {
                e.u8(kind::CONSUMER_STATS);
                st.encode(&mut e);
            }
            Frame::StreamCounters { handle, counters } => {
                e.u8(kind::STREAM_COUNTERS);
                e.u32(*handle);
                e.counters(counters);
            }
            Frame::Status => e.u8(kind::STATUS),
            Frame::StatusReport(r) => {
                e.u8(kind::STATUS_REPORT);
                r.encode(&mut e);
            }
            Frame::List => e.u8(kind::LIST),
            Frame::Streams(list) => {
                e.u8(kind::STREAMS);
                e.u32(list.len() as u32);
                for s in list {
                    e.summary(s);
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
                let name = d.str("name")?;
                let token = if d.0.is_empty() {
                    None
                } else {
                    Some(d.str("token")?)
                };
                Frame::Hello {
                    version,
                    role,
                    name,
                    token,
                }
            }
            kind::WELCOME => Frame::Welcome {
                version: d.u16("version")?,
                name: d.str("name")?,
                idle_timeout_ms: d.u32("idle timeout")?,
            },
            kind::ERROR => {
                let code = match d.u16("error code")? {
                    1 => ErrorCode::Version,
                    2 => ErrorCode::Malformed,
                    3 => ErrorCode::Unexpected,
                    4 => ErrorCode::Unavailable,
                    5 => ErrorCode::Denied,
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
                let (reader, writer) = d.stats()?;
                Frame::Counters {
                    handle,
                    reader,
                    writer,
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
            kind::HEARTBEAT => Frame::Heartbeat,
            kind::CONSUMER_STATS => Frame::ConsumerStats(ConsumerStats::decode(&mut d)?),
            kind::STREAM_COUNTERS => Frame::StreamCounters {
                handle: d.u32("handle")?,
                counters: d.counters()?,
            },
            kind::STATUS => Frame::Status,
            kind::STATUS_REPORT => Frame::StatusReport(StatusReport::decode(&mut d)?),
            kind::LIST => Frame::List,
            kind::STREAMS => {
                // Each summary takes at least 35 bytes: bound before allocating.
                let n = d.count(35, "stream count")?;
                let list = (0..n).map(|_| d.summary()).collect::<Result<_, _>>()?;
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

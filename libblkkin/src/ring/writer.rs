//! The writer's side of a ring: reserve, fill, commit. This is the record path.
//!
//! Reservation moves the packed `head` word (record count and byte offset
//! move together) in one step: on the caller's own CPU with an rseq store
//! the kernel aborts on preemption or migration ([`Reserve::OnCpu`]: the
//! thread then looks again, in the ring of the CPU it is on now), otherwise
//! with one compare-and-swap ([`Reserve::Shared`]), so any number of
//! threads, on any CPU, in signal handlers too, can share a ring. A record is announced *reserved* (with its length) before its body
//! is written and *committed* with one release store after, so a reader sees
//! only complete records and can step over one whose writer died.

use std::sync::atomic::{fence, Ordering};

use super::layout::{self, commit_word, join_head, off, rec, split_head, Kind};
use super::mem::{RingMem, WriterArea};

/// A value carried by a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    /// No value (timestamp events: the event name is the key).
    None,
    /// A string value.
    Str(&'a [u8]),
    /// An integer value.
    Int(i64),
}

/// Everything one record carries, borrowed from the caller for one call.
#[derive(Debug, Clone, Copy)]
pub struct RecordIn<'a> {
    /// Trace id (never 0 here: unsampled traces are filtered earlier).
    pub trace_id: u64,
    /// Span id.
    pub span_id: u64,
    /// Parent span id, 0 for a root span.
    pub parent_id: u64,
    /// Endpoint port.
    pub port: u16,
    /// `RECORD_FLAG_*` bits.
    pub flags: u8,
    /// What the record annotates.
    pub kind: Kind,
    /// Endpoint service name.
    pub service: &'a [u8],
    /// Span name.
    pub name: &'a [u8],
    /// Endpoint IP address, as text.
    pub ip: &'a [u8],
    /// Event name or annotation key.
    pub key: &'a [u8],
    /// Annotation value.
    pub value: Value<'a>,
}

/// Why a record was not written. Every variant is counted in the ring header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// The ring is full (discard mode); counted in `lost_full`.
    #[error("ring full, record dropped")]
    Full,
    /// The record exceeds the ring's maximum record size; counted in `lost_too_big`.
    #[error("record larger than the ring's maximum record size, dropped")]
    TooBig,
    /// The ring's `head` word is corrupt (unaligned); counted in `lost_corrupt`.
    #[error("ring head corrupt, record dropped")]
    Corrupt,
}

/// How a writer reserves space in a ring. All writers of one ring must use
/// the same way.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Reserve {
    /// A compare-and-swap on `head`: any thread on any CPU.
    Shared,
    /// A restartable sequence ([`crate::rseq::Area::store_if`]) on the
    /// ring's CPU, no locked instruction: only threads running on that CPU.
    OnCpu(u32, crate::rseq::Area),
}

/// The record a whole span is written as: `r` with the span kind, no key
/// and no value (the end time is the value).
pub(crate) fn span_record<'a>(r: &RecordIn<'a>) -> RecordIn<'a> {
    RecordIn {
        kind: Kind::Span,
        key: b"",
        value: Value::None,
        ..*r
    }
}

/// Parameters of a ring, fixed at creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingGeometry {
    /// Data area size in bytes (power of two).
    pub data_size: u32,
    /// Largest record accepted, in bytes.
    pub max_record: u32,
    /// Overwrite the oldest records when full instead of dropping new ones.
    pub overwrite: bool,
}

/// Writes records into one ring.
pub struct RingWriter {
    area: WriterArea,
    mask: u32,
    cap: u32,
    max_record: u32,
    overwrite: bool,
}

impl RingWriter {
    /// Wraps ring memory whose header has been initialised with `geo`.
    pub fn new(mem: RingMem, geo: RingGeometry) -> RingWriter {
        assert!(geo.data_size.is_power_of_two());
        RingWriter {
            area: WriterArea::new(mem, geo.data_size as usize),
            mask: geo.data_size - 1,
            cap: geo.data_size,
            max_record: geo
                .max_record
                .min(layout::MAX_RECORD_LIMIT)
                .min(geo.data_size / 4),
            overwrite: geo.overwrite,
        }
    }

    /// The underlying memory (header access for the owner).
    pub fn mem(&self) -> &RingMem {
        self.area.mem()
    }

    /// Writes one record; the clock is read just before the space is
    /// reserved (so its latency overlaps with the reservation) and the
    /// timestamp is handed back. Never blocks, never allocates.
    #[inline(always)]
    pub fn write(
        &self,
        clock: crate::clock::ClockSource,
        r: &RecordIn<'_>,
    ) -> Result<u64, WriteError> {
        self.put_shared(crate::clock::now_raw(clock), r, None)
    }

    /// Writes a whole span as one [`Kind::Span`] record: `start` (read
    /// earlier with [`crate::clock::now_raw`] and the same clock) is its
    /// timestamp, and the clock read just before reserving is its end
    /// (handed back). `r.kind`, `r.key` and `r.value` are ignored. Never blocks,
    /// never allocates.
    #[inline(always)]
    pub fn write_span(
        &self,
        clock: crate::clock::ClockSource,
        r: &RecordIn<'_>,
        start: u64,
    ) -> Result<u64, WriteError> {
        self.put_shared(crate::clock::now_raw(clock), &span_record(r), Some(start))
    }

    /// [`RingWriter::put`] with a compare-and-swap reservation (which
    /// never asks to move).
    #[inline(always)]
    pub(crate) fn put_shared(
        &self,
        now: u64,
        r: &RecordIn<'_>,
        start: Option<u64>,
    ) -> Result<u64, WriteError> {
        self.put(Reserve::Shared, now, r, start)
            .map(|t| t.unwrap_or_else(|| unreachable!("shared reservations never ask to move")))
    }

    /// Reserves, fills and commits one record. `now` is a clock reading
    /// taken just before (see [`crate::recorder`] on where). With `start` (a
    /// span record) the record's timestamp is `start` and `now` its 8-byte
    /// value; otherwise `now` is the timestamp. `Ok(None)`: a
    /// [`Reserve::OnCpu`] writer is not on that CPU (pick the ring again).
    #[inline(always)]
    pub(crate) fn put(
        &self,
        how: Reserve,
        now: u64,
        r: &RecordIn<'_>,
        start: Option<u64>,
    ) -> Result<Option<u64>, WriteError> {
        let value_len = match (start, r.value) {
            (Some(_), _) => 8,
            (None, Value::None) => 0,
            (None, Value::Str(s)) => s.len(),
            (None, Value::Int(_)) => 8,
        };
        let short_ok =
            (r.service.len() | r.name.len() | r.ip.len() | r.key.len()) <= layout::MAX_SHORT_STRING;
        let strings = r.service.len() + r.name.len() + r.ip.len() + r.key.len() + value_len;
        let len = layout::record_len(strings);
        if !short_ok || len > self.max_record as usize {
            return Err(self.lost::<{ off::LOST_TOO_BIG }>(WriteError::TooBig));
        }
        let len = len as u32;
        let Some((pos, seq)) = self.reserve(len, how)? else {
            return Ok(None);
        };
        let timestamp = start.unwrap_or(now);
        // idx + len <= cap: reserve() padded to the start if the record did not fit.
        let slot = self.area.slot(pos & self.mask, len);
        let cw = slot.word::<0>();
        cw.store(
            commit_word(layout::STATE_RESERVED, r.kind as u64, len, pos),
            Ordering::Relaxed,
        );
        // Readers racing with an overwrite (flight-recorder mode) detect it
        // by re-reading `head` after copying; this fence orders our head
        // update before the body. Unconditional: on x86 it is no instruction,
        // and a test of the mode would be two.
        fence(Ordering::Release);
        slot.word::<{ rec::TIMESTAMP }>()
            .store(timestamp, Ordering::Relaxed);
        slot.word::<{ rec::TRACE_ID }>()
            .store(r.trace_id, Ordering::Relaxed);
        slot.word::<{ rec::SPAN_ID }>()
            .store(r.span_id, Ordering::Relaxed);
        slot.word::<{ rec::PARENT_ID }>()
            .store(r.parent_id, Ordering::Relaxed);
        slot.word::<{ rec::SEQ }>().store(
            seq as u64
                | (r.port as u64) << 32
                | (r.flags as u64) << 48
                | (r.service.len() as u64) << 56,
            Ordering::Relaxed,
        );
        slot.word::<{ rec::LEN_NAME }>().store(
            r.name.len() as u64
                | (r.ip.len() as u64) << 8
                | (r.key.len() as u64) << 16
                | (value_len as u64) << 32,
            Ordering::Relaxed,
        );
        let int_bytes;
        let value: &[u8] = match (start, r.value) {
            (Some(_), _) => {
                int_bytes = now.to_le_bytes();
                &int_bytes
            }
            (None, Value::None) => &[],
            (None, Value::Str(s)) => s,
            (None, Value::Int(i)) => {
                int_bytes = i.to_le_bytes();
                &int_bytes
            }
        };
        slot.put_all(rec::STRINGS, [r.service, r.name, r.ip, r.key, value]);
        cw.store(
            commit_word(layout::STATE_COMMITTED, r.kind as u64, len, pos),
            Ordering::Release,
        );
        Ok(Some(now))
    }

    /// Counts a dropped record in the header counter at `OFF`.
    #[cold]
    #[inline(never)]
    fn lost<const OFF: usize>(&self, e: WriteError) -> WriteError {
        self.area.header::<OFF>().fetch_add(1, Ordering::Relaxed);
        e
    }

    /// Reserves `len` bytes; returns the record's free-running offset and
    /// sequence number, or `None` when `how` is [`Reserve::OnCpu`] and the
    /// thread is not on that CPU.
    #[inline(always)]
    fn reserve(&self, len: u32, how: Reserve) -> Result<Option<(u32, u32)>, WriteError> {
        let head = self.area.header::<{ off::HEAD }>();
        let mut cur = head.load(Ordering::Relaxed);
        loop {
            let (count, offset) = split_head(cur);
            if !offset.is_multiple_of(8) {
                // Someone scribbled over the shared head: never trust it.
                return Err(self.lost::<{ off::LOST_CORRUPT }>(WriteError::Corrupt));
            }
            let to_end = self.cap - (offset & self.mask);
            let pad = if len > to_end { to_end } else { 0 };
            let total = pad + len;
            if !self.overwrite {
                let tail = self.area.header::<{ off::TAIL }>().load(Ordering::Acquire) as u32;
                let used = offset.wrapping_sub(tail);
                if used > self.cap || total > self.cap - used {
                    // The reader ahead of our `head`: we were held up
                    // between reading the two, and `head` has moved on since.
                    // Otherwise the reader wrote a bogus tail: full.
                    let latest = head.load(Ordering::Relaxed);
                    if used > self.cap && latest != cur {
                        cur = latest;
                        continue;
                    }
                    return Err(self.lost::<{ off::LOST_FULL }>(WriteError::Full));
                }
            }
            let next = join_head(count.wrapping_add(1), offset.wrapping_add(total));
            let won = match how {
                Reserve::Shared => {
                    match head.compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed)
                    {
                        Ok(_) => true,
                        Err(actual) => {
                            cur = actual;
                            false
                        }
                    }
                }
                Reserve::OnCpu(cpu, area) => {
                    if area.store_if(cpu, head, cur, next) {
                        true
                    } else if area.cpu_id() != Some(cpu) {
                        return Ok(None);
                    } else {
                        // Preempted or interrupted in between: look again.
                        cur = head.load(Ordering::Relaxed);
                        false
                    }
                }
            };
            if !won {
                continue;
            }
            if count == u32::MAX {
                self.area
                    .header::<{ off::WRITTEN_EPOCHS }>()
                    .fetch_add(1, Ordering::Relaxed);
            }
            if pad != 0 {
                let at = (offset & self.mask) as usize;
                self.area.slot_word(at).store(
                    commit_word(layout::STATE_PADDING, 0, pad, offset),
                    Ordering::Release,
                );
            }
            return Ok(Some((offset.wrapping_add(pad), count)));
        }
    }

    /// Adds to the counter of records dropped before a ring existed.
    pub fn add_lost_no_ring(&self, n: u64) {
        if n != 0 {
            self.area
                .header::<{ off::LOST_NO_RING }>()
                .fetch_add(n, Ordering::Relaxed);
        }
    }
}

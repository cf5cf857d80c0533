//! One endpoint's share of a span (a *side*) and the v2 span it becomes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use blkkin::annotation::{Annotation, AnnotationValue};

use super::intern::Origin;
use super::remote::{self, Addresses};
use super::{AssemblerStats, SideSnapshot, SpanLimits};
use crate::model::{self, Endpoint, Span, SpanKind};

/// Core and generic events a side can hold; bit `i` of `Side::seen` stands
/// for `MARKS[i]`.
const MARKS: [&str; 8] = [
    "cs",
    "cr",
    "sr",
    "ss",
    "ms",
    "mr",
    blkkin::START,
    blkkin::END,
];
const CS: u8 = 1;
const CR: u8 = 1 << 1;
const SR: u8 = 1 << 2;
const SS: u8 = 1 << 3;
const MS: u8 = 1 << 4;
const MR: u8 = 1 << 5;
const START: u8 = 1 << 6;
const END: u8 = 1 << 7;

/// The bit of a core or generic event, 0 for any other value.
fn mark(value: &str) -> u8 {
    if value.len() > 5 {
        return 0; // longer than any mark: most events, decided at once
    }
    MARKS.iter().position(|m| *m == value).map_or(0, |i| 1 << i)
}

/// Begin and end marks of a side of `kind`.
fn bounds(kind: Option<SpanKind>) -> (u8, Option<u8>) {
    match kind {
        Some(SpanKind::Client) => (CS, Some(CR)),
        Some(SpanKind::Server) => (SR, Some(SS)),
        Some(SpanKind::Producer) => (MS, None),
        Some(SpanKind::Consumer) => (MR, None),
        None => (START, Some(END)),
    }
}

/// An event's value: a mark (no allocation) or any other text.
#[derive(Debug)]
enum Event {
    Mark(u8),
    Text(String),
}

impl Event {
    fn as_str(&self) -> &str {
        match self {
            Event::Mark(bit) => MARKS[bit.trailing_zeros() as usize],
            Event::Text(t) => t,
        }
    }

    fn is(&self, bit: u8) -> bool {
        matches!(self, Event::Mark(b) if *b == bit)
    }
}

/// `v`, cut to `max_value_bytes` at a character boundary (counted).
fn capped(v: &str, limits: &SpanLimits, stats: &mut AssemblerStats) -> String {
    if v.len() <= limits.max_value_bytes {
        return v.to_string();
    }
    stats.values_truncated += 1;
    let mut end = limits.max_value_bytes;
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    v[..end].to_string()
}

/// 16 lower-case hex digits, without the formatting machinery.
pub(super) fn hex16(v: u64) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let bytes: Vec<u8> = (0..16)
        .map(|i| DIGITS[((v >> (60 - 4 * i)) & 0xf) as usize])
        .collect();
    String::from_utf8(bytes).expect("hex digits are ASCII")
}

/// One endpoint's share of a span.
#[derive(Debug)]
pub(super) struct Side {
    /// Where it was recorded (interned).
    pub(super) origin: Arc<Origin>,
    /// Lower-cased span name (interned).
    name: Arc<str>,
    /// Which of [`MARKS`] arrived.
    seen: u8,
    /// 0 for a root span.
    parent_id: u64,
    debug: bool,
    /// (epoch µs, value), in arrival order.
    events: Vec<(u64, Event)>,
    tags: BTreeMap<String, String>,
    integer_tags: BTreeSet<String>,
    /// `sa`, `ca`, `ma` address annotations (see `remote`); boxed, as
    /// they are rare and large.
    addresses: Option<Box<Addresses>>,
    /// Earliest timestamp of any annotation (events and key/values).
    first_ts: u64,
    /// Has annotations not emitted yet.
    pub(super) pending: bool,
    /// Was emitted at least once.
    pub(super) emitted: bool,
    /// Emit no earlier than this (set once closed).
    pub(super) ready_at: Option<Instant>,
}

impl Side {
    pub(super) fn new(origin: Arc<Origin>, name: Arc<str>, parent_id: u64, ts: u64) -> Side {
        Side {
            origin,
            name,
            seen: 0,
            parent_id,
            debug: false,
            events: Vec::new(),
            tags: BTreeMap::new(),
            integer_tags: BTreeSet::new(),
            addresses: None,
            first_ts: ts,
            pending: false,
            emitted: false,
            ready_at: None,
        }
    }

    /// This side as plain data, times relative to `now` (checkpoints).
    pub(super) fn snapshot(&self, now: Instant) -> SideSnapshot {
        let (service, ip, port) = self.origin.parts();
        SideSnapshot {
            service: service.to_string(),
            ip: ip.map(str::to_string),
            port,
            name: self.name.to_string(),
            seen: self.seen,
            parent_id: self.parent_id,
            debug: self.debug,
            events: self
                .events
                .iter()
                .map(|(ts, e)| (*ts, e.as_str().to_string()))
                .collect(),
            tags: self.tags.clone(),
            integer_tags: self.integer_tags.clone(),
            addresses: self
                .addresses
                .iter()
                .flat_map(|a| a.iter().enumerate())
                .filter_map(|(slot, a)| {
                    a.as_ref()
                        .map(|(_, raw)| (remote::KEYS[slot].to_string(), raw.clone()))
                })
                .collect(),
            first_ts: self.first_ts,
            pending: self.pending,
            emitted: self.emitted,
            ready_in_ms: self
                .ready_at
                .map(|r| super::millis(r.saturating_duration_since(now))),
        }
    }

    /// The side a [`SideSnapshot`] describes, recorded at `origin` under
    /// `name` (interned by the caller), its linger carried on from `now`.
    pub(super) fn restore(
        s: SideSnapshot,
        origin: Arc<Origin>,
        name: Arc<str>,
        now: Instant,
    ) -> Side {
        let mut addresses: Option<Box<Addresses>> = None;
        for (key, raw) in s.addresses {
            if let (Some(slot), Some(ep)) = (remote::slot(&key), remote::parse_address(&raw)) {
                addresses.get_or_insert_default()[slot] = Some((ep, raw));
            }
        }
        Side {
            origin,
            name,
            seen: s.seen,
            parent_id: s.parent_id,
            debug: s.debug,
            events: s
                .events
                .into_iter()
                .map(|(ts, v)| {
                    let event = match mark(&v) {
                        0 => Event::Text(v),
                        bit => Event::Mark(bit),
                    };
                    (ts, event)
                })
                .collect(),
            tags: s.tags,
            integer_tags: s.integer_tags,
            addresses,
            first_ts: s.first_ts,
            pending: s.pending,
            emitted: s.emitted,
            ready_at: s
                .ready_in_ms
                .map(|ms| now + std::time::Duration::from_millis(ms)),
        }
    }

    pub(super) fn kind(&self) -> Option<SpanKind> {
        let s = self.seen;
        if s & (CS | CR) != 0 {
            Some(SpanKind::Client)
        } else if s & (SR | SS) != 0 {
            Some(SpanKind::Server)
        } else if s & MS != 0 {
            Some(SpanKind::Producer)
        } else if s & MR != 0 {
            Some(SpanKind::Consumer)
        } else {
            None
        }
    }

    /// Whether it has neither a beginning nor an end of its own: only
    /// key/values and events recorded at this endpoint inside a span other
    /// endpoints time (ztracer's `child.keyval(k, v, &parent_endpoint)`).
    /// Such a side never closes; it is emitted with the span's closed sides.
    pub(super) fn unbounded(&self) -> bool {
        let (begin, end) = bounds(self.kind());
        self.seen & (begin | end.unwrap_or(0)) == 0
    }

    /// Whether its closing annotation arrived.
    pub(super) fn closed(&self) -> bool {
        match bounds(self.kind()) {
            (_, Some(end)) => self.seen & end != 0,
            (begin, None) => self.seen & begin != 0,
        }
    }

    /// Takes one annotation (timestamp `ts`, epoch µs), within `limits`
    /// (what goes over them is dropped or cut, and counted in `stats`).
    pub(super) fn take(
        &mut self,
        a: &Annotation,
        ts: u64,
        limits: &SpanLimits,
        stats: &mut AssemblerStats,
    ) {
        self.first_ts = self.first_ts.min(ts);
        self.debug |= a.debug;
        let full = self.events.len() >= limits.max_annotations;
        match (&a.key, &a.value) {
            (None, AnnotationValue::Text(v)) => {
                let bit = mark(v);
                // A core event not seen yet is kept over the cap: it gives
                // the span its kind, timestamp and duration.
                if full && (bit == 0 || self.seen & bit != 0) {
                    stats.annotations_dropped += 1;
                    return;
                }
                self.seen |= bit;
                let event = if bit != 0 {
                    Event::Mark(bit)
                } else {
                    Event::Text(capped(v, limits, stats))
                };
                self.events.push((ts, event));
            }
            (None, AnnotationValue::Integer(i)) => {
                if full {
                    stats.annotations_dropped += 1;
                    return;
                }
                self.events.push((ts, Event::Text(i.to_string())));
            }
            (Some(k), AnnotationValue::Text(v)) => {
                if let Some(slot) = remote::slot(k) {
                    if let Some(ep) = remote::parse_address(v) {
                        let v = capped(v, limits, stats);
                        self.addresses.get_or_insert_default()[slot] = Some((ep, v));
                        self.pending = true;
                        return;
                    }
                }
                let Some(k) = self.tag_key(k, limits, stats) else {
                    return;
                };
                self.integer_tags.remove(&k);
                self.tags.insert(k, capped(v, limits, stats));
            }
            (Some(k), AnnotationValue::Integer(i)) => {
                let Some(k) = self.tag_key(k, limits, stats) else {
                    return;
                };
                self.integer_tags.insert(k.clone());
                self.tags.insert(k, i.to_string());
            }
        }
        self.pending = true;
    }

    /// The key to store a tag under (cut to the value limit), or `None`
    /// (counted) when it is a new key and the span holds `max_tags`.
    fn tag_key(
        &self,
        key: &str,
        limits: &SpanLimits,
        stats: &mut AssemblerStats,
    ) -> Option<String> {
        let mut probe = AssemblerStats::default();
        let k = capped(key, limits, &mut probe);
        if !self.tags.contains_key(&k) && self.tags.len() >= limits.max_tags {
            stats.tags_dropped += 1;
            return None;
        }
        stats.values_truncated += probe.values_truncated;
        Some(k)
    }

    /// The v2 span of this side of span `key`; `peer` is the local endpoint
    /// of the other side of a shared RPC (the server side for a client,
    /// the client side for a server), whose presence also makes a server
    /// side `shared`.
    pub(super) fn to_span(
        &self,
        key: (u64, u64),
        peer: Option<&Endpoint>,
        has_client: bool,
    ) -> Span {
        let kind = self.kind();
        let (begin, end) = bounds(kind);
        let begin_ts = if self.seen & begin != 0 {
            self.events
                .iter()
                .find(|(_, e)| e.is(begin))
                .map(|(t, _)| *t)
        } else {
            None
        };
        let timestamp = begin_ts.unwrap_or(self.first_ts);
        let end_ts = end
            .filter(|e| begin_ts.is_some() && self.seen & e != 0)
            .and_then(|e| self.events.iter().rev().find(|(_, v)| v.is(e)))
            .map(|(t, _)| *t);
        let duration = end_ts.map(|e| e.saturating_sub(timestamp).max(1));
        let used = |e: &Event| {
            begin_ts.is_some() && e.is(begin) || end_ts.is_some() && end.is_some_and(|b| e.is(b))
        };
        let mut annotations: Vec<model::Annotation> = self
            .events
            .iter()
            .filter(|(_, e)| !used(e))
            .map(|(t, e)| model::Annotation {
                timestamp: *t,
                value: e.as_str().to_string(),
            })
            .collect();
        annotations.sort_by_key(|a| a.timestamp);
        let local = self.origin.endpoint.as_ref();
        let none = Addresses::default();
        let addresses = self.addresses.as_deref().unwrap_or(&none);
        let (remote, used_address) = remote::remote_endpoint(kind, local, addresses, peer);
        let mut tags = self.tags.clone();
        for (slot, addr) in addresses.iter().enumerate() {
            if let Some((_, text)) = addr.as_ref().filter(|_| Some(slot) != used_address) {
                tags.entry(["sa", "ca", "ma"][slot].to_string())
                    .or_insert_with(|| text.clone());
            }
        }
        Span {
            trace_id: hex16(key.0),
            parent_id: (self.parent_id != 0).then(|| hex16(self.parent_id)),
            id: hex16(key.1),
            kind,
            name: (!self.name.is_empty()).then(|| self.name.to_string()),
            timestamp: Some(timestamp),
            duration,
            local_endpoint: local.cloned(),
            remote_endpoint: remote,
            annotations,
            tags,
            debug: self.debug.then_some(true),
            shared: (kind == Some(SpanKind::Server) && has_client).then_some(true),
            integer_tags: self.integer_tags.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex16_matches_the_formatter() {
        for v in [0, 1, 0xaa, u64::MAX, 0x0123_4567_89ab_cdef] {
            assert_eq!(hex16(v), format!("{v:016x}"));
        }
    }

    #[test]
    fn marks_are_the_core_and_generic_events_only() {
        assert_eq!(mark("cs"), CS);
        assert_eq!(mark("end"), END);
        assert_eq!(mark("start"), START);
        assert_eq!(mark("journaled"), 0);
        assert_eq!(mark("c"), 0);
        for (i, m) in MARKS.iter().enumerate() {
            assert_eq!(Event::Mark(1 << i).as_str(), *m);
        }
    }
}

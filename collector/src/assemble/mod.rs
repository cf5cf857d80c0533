//! Span assembly: Dapper annotations (one record each) grouped into Zipkin v2
//! spans.
//!
//! Annotations are grouped by (trace id, span id) and, inside a span, by the
//! endpoint that recorded them (service, IP, port): each endpoint's share is
//! a *side* (`side.rs`) and becomes one v2 span. A span recorded by a client
//! (`cs`/`cr`) and a server (`sr`/`ss`) under the same span id, Zipkin v1
//! style, thus becomes a CLIENT span and a `shared` SERVER span, each with
//! the other as its remote endpoint (`remote.rs`). The full mapping is in
//! docs/ARCHITECTURE.md ("Collector").
//!
//! A side is emitted once it is *closed* (its closing annotation arrived:
//! `cr`, `ss`, `ms`, `mr`, or `end` for a span without core annotations),
//! after a short *linger* that lets the other side of a shared span arrive
//! from another stream. A side with neither beginning nor end of its own
//! (key/values or events recorded at another endpoint inside the span, as
//! ztracer's `keyval(k, v, &endpoint)` does) is emitted together with the
//! span's closed sides, as its own v2 span like Zipkin's v1 converter makes
//! one per endpoint; any other unclosed side is emitted after the idle
//! timeout.
//! Emitted spans are remembered until they are idle, so a late annotation
//! emits the side again with everything it has (Zipkin merges spans by id).
//! State is bounded: when `max_open` spans are held the least recently
//! active one is emitted early and forgotten (counted in `evicted`).
//!
//! The hot path allocates little: span keys are hashed with a seeded
//! folded multiply, endpoints and span names are interned (`intern.rs`),
//! core events are bits, and the activity order is a queue with lazy
//! deletion instead of an ordered map.

mod intern;
mod remote;
mod side;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use blkkin::annotation::Annotation;

use crate::model::{Span, SpanKind};
use intern::{Interner, KeyHash};
use side::Side;

/// Tuning of a [`SpanAssembler`].
#[derive(Debug, Clone, Copy)]
pub struct AssemblerConfig {
    /// An unclosed side is emitted after this long without annotations; an
    /// emitted span is forgotten after this long without annotations.
    pub idle_timeout: Duration,
    /// A closed side waits this long before it is emitted, so the other side
    /// of a shared span (recorded by another process) can arrive.
    pub linger: Duration,
    /// Most spans held at once.
    pub max_open: usize,
    /// What one span may hold.
    pub limits: SpanLimits,
}

impl Default for AssemblerConfig {
    fn default() -> Self {
        AssemblerConfig {
            idle_timeout: Duration::from_secs(30),
            linger: Duration::from_millis(200),
            max_open: 100_000,
            limits: SpanLimits::default(),
        }
    }
}

/// Caps on what one span (one side) holds, so a producer recording without
/// bounds cannot make the collector or a back end hold unbounded spans.
/// What goes over a cap is dropped or cut, and counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanLimits {
    /// Most annotations (timestamped events) per span; later ones are
    /// dropped (`annotations_dropped`). A core event (`cs`, `sr`, ...) not
    /// yet seen is always kept, so timing survives.
    pub max_annotations: usize,
    /// Most tags per span; later new keys are dropped (`tags_dropped`), a
    /// tag already held is still updated.
    pub max_tags: usize,
    /// Longest annotation value, tag key or tag value in bytes; longer ones
    /// are cut at a character boundary (`values_truncated`).
    pub max_value_bytes: usize,
}

/// OpenTelemetry's default of 128 events and attributes per span; 64 KiB
/// per value (OpenTelemetry sets no default there).
impl Default for SpanLimits {
    fn default() -> Self {
        SpanLimits {
            max_annotations: 128,
            max_tags: 128,
            max_value_bytes: 64 << 10,
        }
    }
}

/// What an assembler did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AssemblerStats {
    /// Annotations taken in.
    pub annotations: u64,
    /// Annotations without a usable timestamp (their stream's clock
    /// calibration could not convert them): not assembled.
    pub untimed: u64,
    /// Annotations whose ids are not 16 hex digits: not assembled.
    pub malformed: u64,
    /// Annotations with trace id 0 or span id 0 (invalid in Zipkin, refused
    /// by every back end): not assembled, so no such span reaches a sink.
    pub zero_ids: u64,
    /// Spans emitted for the first time.
    pub spans: u64,
    /// Spans emitted again because a late annotation arrived.
    pub updates: u64,
    /// Spans emitted without their closing annotation, after the idle timeout.
    pub incomplete: u64,
    /// Spans forgotten early because `max_open` was reached (what they held
    /// was emitted first, so nothing is lost; a later annotation of the same
    /// span then starts a new partial span).
    pub evicted: u64,
    /// Annotations dropped because their span held `max_annotations`.
    pub annotations_dropped: u64,
    /// Tags dropped because their span held `max_tags`.
    pub tags_dropped: u64,
    /// Values and keys cut to `max_value_bytes`.
    pub values_truncated: u64,
}

/// (trace id, span id).
type SpanKey = (u64, u64);

/// Parses a 1–16 digit hex id (what `hex_id` writes).
fn parse_id(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 16 {
        return None;
    }
    u64::from_str_radix(text, 16).ok()
}

#[derive(Debug)]
struct OpenSpan {
    sides: Vec<Side>,
    last_activity: Instant,
    /// Its latest entry in the activity queue.
    tick: u64,
}

impl OpenSpan {
    fn side_of(&self, kind: SpanKind) -> Option<&Side> {
        self.sides.iter().find(|s| s.kind() == Some(kind))
    }

    /// Emits side `i` into `out`.
    fn emit(&mut self, i: usize, key: SpanKey, stats: &mut AssemblerStats, out: &mut Vec<Span>) {
        let kind = self.sides[i].kind();
        let peer_kind = match kind {
            Some(SpanKind::Client) => Some(SpanKind::Server),
            Some(SpanKind::Server) => Some(SpanKind::Client),
            _ => None,
        };
        let peer = peer_kind
            .and_then(|k| self.side_of(k))
            .and_then(|s| s.origin.endpoint.as_ref());
        let has_client = self.side_of(SpanKind::Client).is_some();
        let side = &self.sides[i];
        out.push(side.to_span(key, peer, has_client));
        let side = &mut self.sides[i];
        if side.emitted {
            stats.updates += 1;
        } else {
            stats.spans += 1;
        }
        side.emitted = true;
        side.pending = false;
        side.ready_at = None;
    }
}

/// Groups annotations into spans; see the module documentation.
#[derive(Debug)]
pub struct SpanAssembler {
    config: AssemblerConfig,
    open: HashMap<SpanKey, OpenSpan, KeyHash>,
    /// Activity order, oldest first: (tick, span). An entry is current only
    /// while the span's `tick` equals it; stale entries are skipped, and
    /// dropped in bulk when they outnumber the spans.
    activity: VecDeque<(u64, SpanKey)>,
    next_tick: u64,
    /// Closed sides waiting for their linger, in time order.
    ready: VecDeque<(Instant, SpanKey)>,
    interner: Interner,
    stats: AssemblerStats,
}

impl SpanAssembler {
    /// An empty assembler.
    pub fn new(config: AssemblerConfig) -> SpanAssembler {
        SpanAssembler {
            config: AssemblerConfig {
                max_open: config.max_open.max(1),
                ..config
            },
            open: HashMap::with_hasher(KeyHash::new()),
            activity: VecDeque::new(),
            next_tick: 0,
            ready: VecDeque::new(),
            interner: Interner::new(),
            stats: AssemblerStats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> AssemblerStats {
        self.stats
    }

    /// Spans held (open, or emitted and kept for late annotations).
    pub fn open_spans(&self) -> usize {
        self.open.len()
    }

    /// Sides holding annotations not emitted yet (waiting to close, for
    /// their linger, or for the idle timeout).
    pub fn pending_sides(&self) -> usize {
        self.open
            .values()
            .map(|o| o.sides.iter().filter(|s| s.pending).count())
            .sum()
    }

    /// Takes one annotation received at `now`; spans emitted early (to stay
    /// within `max_open`) are appended to `out`.
    pub fn add(&mut self, a: &Annotation, now: Instant, out: &mut Vec<Span>) {
        self.stats.annotations += 1;
        let Some(ts) = a.timestamp else {
            self.stats.untimed += 1;
            return;
        };
        let (Some(trace), Some(id)) = (parse_id(&a.trace_id), parse_id(&a.id)) else {
            self.stats.malformed += 1;
            return;
        };
        if trace == 0 || id == 0 {
            self.stats.zero_ids += 1;
            return;
        }
        let key = (trace, id);
        if self.open.len() >= self.config.max_open && !self.open.contains_key(&key) {
            if let Some(oldest) = self.pop_oldest() {
                self.stats.evicted += 1;
                self.finish(oldest, out);
            }
        }
        let tick = self.next_tick;
        self.next_tick += 1;
        let span = self.open.entry(key).or_insert_with(|| OpenSpan {
            sides: Vec::with_capacity(2),
            last_activity: now,
            tick,
        });
        span.tick = tick;
        span.last_activity = now;
        self.activity.push_back((tick, key));
        let side = match span.sides.iter().position(|s| s.origin.matches(a)) {
            Some(i) => &mut span.sides[i],
            None => {
                let origin = self.interner.origin(a);
                let name = self.interner.name(&a.name);
                let parent = a.parent_id.as_deref().and_then(parse_id).unwrap_or(0);
                span.sides.push(Side::new(origin, name, parent, ts));
                span.sides.last_mut().expect("just pushed")
            }
        };
        side.take(a, ts, &self.config.limits, &mut self.stats);
        if side.closed() {
            let at = now + self.config.linger;
            side.ready_at = Some(at);
            self.ready.push_back((at, key));
        }
        if self.activity.len() > 2 * self.open.len() + 1024 {
            self.compact_activity();
        }
    }

    /// Drops stale activity entries (spans forgotten or active since).
    fn compact_activity(&mut self) {
        let open = &self.open;
        self.activity
            .retain(|(tick, key)| open.get(key).is_some_and(|s| s.tick == *tick));
    }

    /// The least recently active span, removed from the activity queue.
    fn pop_oldest(&mut self) -> Option<SpanKey> {
        while let Some((tick, key)) = self.activity.pop_front() {
            if self.open.get(&key).is_some_and(|s| s.tick == tick) {
                return Some(key);
            }
        }
        None
    }

    /// Emits what is due at `now`: closed sides whose linger passed, and
    /// sides of spans idle for the idle timeout (which are then forgotten).
    pub fn poll(&mut self, now: Instant, out: &mut Vec<Span>) {
        while let Some(&(at, key)) = self.ready.front() {
            if at > now {
                break;
            }
            self.ready.pop_front();
            if let Some(span) = self.open.get_mut(&key) {
                let mut emitted = false;
                for i in 0..span.sides.len() {
                    let side = &span.sides[i];
                    if side.pending && side.ready_at.is_some_and(|r| r <= now) {
                        span.emit(i, key, &mut self.stats, out);
                        emitted = true;
                    }
                }
                // Sides that never close (key/values or events another
                // endpoint recorded inside this span) go with it, now.
                for i in 0..span.sides.len() {
                    let side = &span.sides[i];
                    if emitted && side.pending && side.unbounded() {
                        span.emit(i, key, &mut self.stats, out);
                    }
                }
            }
        }
        while let Some(&(tick, key)) = self.activity.front() {
            match self.open.get(&key) {
                Some(s) if s.tick == tick => {
                    if s.last_activity + self.config.idle_timeout > now {
                        break;
                    }
                    self.activity.pop_front();
                    self.finish(key, out);
                }
                _ => {
                    self.activity.pop_front(); // stale
                }
            }
        }
    }

    /// Emits everything still pending (at shutdown) and forgets all spans.
    pub fn flush(&mut self, out: &mut Vec<Span>) {
        while let Some(key) = self.pop_oldest() {
            self.finish(key, out);
        }
        self.activity.clear();
        self.ready.clear();
    }

    /// Emits the pending sides of a span and forgets it.
    fn finish(&mut self, key: SpanKey, out: &mut Vec<Span>) {
        if let Some(mut span) = self.open.remove(&key) {
            for i in 0..span.sides.len() {
                if span.sides[i].pending {
                    if !span.sides[i].closed() {
                        self.stats.incomplete += 1;
                    }
                    span.emit(i, key, &mut self.stats, out);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------
// Snapshot and restore (collector checkpoints, docs/ARCHITECTURE.md
// "Checkpoints"): the open spans as plain data, with times relative to the
// moment of the snapshot, so a restarted collector carries on assembling
// exactly where the checkpoint was cut.

/// The open spans of a [`SpanAssembler`], serialisable.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AssemblerSnapshot {
    /// Spans, least recently active first.
    pub spans: Vec<SpanSnapshot>,
}

/// One open span of an [`AssemblerSnapshot`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SpanSnapshot {
    /// Trace id.
    pub trace_id: u64,
    /// Span id.
    pub span_id: u64,
    /// Milliseconds since its last annotation, at the snapshot.
    pub idle_ms: u64,
    /// Its sides.
    pub sides: Vec<SideSnapshot>,
}

/// One side of a [`SpanSnapshot`] (the fields of the assembler's side).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SideSnapshot {
    /// Service name as recorded.
    pub service: String,
    /// IP text as recorded.
    pub ip: Option<String>,
    /// Port.
    pub port: u16,
    /// Lower-cased span name.
    pub name: String,
    /// Core and generic events seen (bit set).
    pub seen: u8,
    /// Parent span id (0 for a root).
    pub parent_id: u64,
    /// Debug flag.
    pub debug: bool,
    /// (epoch µs, value) in arrival order.
    pub events: Vec<(u64, String)>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Tags whose value is an integer.
    pub integer_tags: BTreeSet<String>,
    /// Address annotations (`sa`, `ca`, `ma`) as recorded: (key, value).
    #[serde(default)]
    pub addresses: Vec<(String, String)>,
    /// Earliest timestamp.
    pub first_ts: u64,
    /// Has annotations not emitted yet.
    pub pending: bool,
    /// Was emitted at least once.
    pub emitted: bool,
    /// Milliseconds left of its linger, when closed and waiting.
    pub ready_in_ms: Option<u64>,
}

impl SpanAssembler {
    /// The open spans at `now` (see [`SpanAssembler::restore`]).
    pub fn snapshot(&self, now: Instant) -> AssemblerSnapshot {
        let spans = self
            .activity
            .iter()
            .filter_map(|(tick, key)| {
                self.open
                    .get(key)
                    .filter(|s| s.tick == *tick)
                    .map(|span| (key, span))
            })
            .map(|(key, span)| SpanSnapshot {
                trace_id: key.0,
                span_id: key.1,
                idle_ms: millis(now.saturating_duration_since(span.last_activity)),
                sides: span.sides.iter().map(|side| side.snapshot(now)).collect(),
            })
            .collect();
        AssemblerSnapshot { spans }
    }

    /// An assembler holding the spans of `snapshot`, their idle times and
    /// lingers carried on from `now`. Spans beyond `max_open` are not
    /// restored (they would have been evicted); their count is returned.
    pub fn restore(
        config: AssemblerConfig,
        snapshot: AssemblerSnapshot,
        now: Instant,
    ) -> (SpanAssembler, usize) {
        let mut asm = SpanAssembler::new(config);
        let skip = snapshot.spans.len().saturating_sub(asm.config.max_open);
        let mut ready = Vec::new();
        for span in snapshot.spans.into_iter().skip(skip) {
            let key = (span.trace_id, span.span_id);
            let last_activity = now
                .checked_sub(Duration::from_millis(span.idle_ms))
                .unwrap_or(now);
            let interner = &mut asm.interner;
            let sides = span
                .sides
                .into_iter()
                .map(|s| {
                    let origin = interner.origin_of(&s.service, s.ip.as_deref(), s.port);
                    let name = interner.name(&s.name);
                    let side = Side::restore(s, origin, name, now);
                    if let Some(at) = side.ready_at {
                        ready.push((at, key));
                    }
                    side
                })
                .collect();
            let tick = asm.next_tick;
            asm.next_tick += 1;
            asm.activity.push_back((tick, key));
            asm.open.insert(
                key,
                OpenSpan {
                    sides,
                    last_activity,
                    tick,
                },
            );
        }
        ready.sort();
        asm.ready = ready.into();
        (asm, skip)
    }
}

/// Whole milliseconds of `d`, saturating.
fn millis(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model;
    use blkkin::annotation::AnnotationValue;
    use blkkin::ring::layout::Kind;

    const T: &str = "00000000000000aa";

    /// An event annotation of trace `T`, span `span` (child of span 1).
    pub(crate) fn ann(
        span: &str,
        service: &str,
        ip: &str,
        port: u16,
        ts: u64,
        event: &str,
    ) -> Annotation {
        Annotation {
            trace_id: T.into(),
            id: span.into(),
            parent_id: Some("0000000000000001".into()),
            name: "Read".into(),
            service_name: service.into(),
            ipv4: Some(ip.into()),
            ipv6: None,
            port,
            timestamp: Some(ts),
            kind: Kind::Event,
            value: AnnotationValue::Text(event.into()),
            key: None,
            debug: false,
            pid: 1,
            cpu: 0,
        }
    }

    fn kv(mut a: Annotation, key: &str, v: AnnotationValue) -> Annotation {
        a.kind = match v {
            AnnotationValue::Integer(_) => Kind::Integer,
            AnnotationValue::Text(_) => Kind::String,
        };
        a.key = Some(key.into());
        a.value = v;
        a
    }

    fn cfg() -> AssemblerConfig {
        AssemblerConfig {
            idle_timeout: Duration::from_secs(10),
            linger: Duration::from_millis(100),
            max_open: 100,
            limits: SpanLimits::default(),
        }
    }

    fn run(asm: &mut SpanAssembler, anns: &[Annotation], t0: Instant) -> Vec<Span> {
        let mut out = Vec::new();
        for a in anns {
            asm.add(a, t0, &mut out);
        }
        asm.poll(t0 + Duration::from_millis(100), &mut out);
        out
    }

    #[test]
    fn a_restored_snapshot_emits_what_the_original_would_have() {
        let s = "00000000000000bb";
        let t0 = Instant::now();
        // Everything but the client's `cr`: a span still open at the cut.
        let mut first: Vec<Annotation> = [
            ("Client", "10.0.0.1", 5000, 1000, "cs"),
            ("osd", "10.0.0.2", 6800, 1010, "sr"),
            ("osd", "10.0.0.2", 6800, 1020, "ss"),
        ]
        .iter()
        .map(|(svc, ip, port, ts, ev)| ann(s, svc, ip, *port, *ts, ev))
        .collect();
        let size = ann(s, "osd", "10.0.0.2", 6800, 1016, "");
        first.push(kv(size, "bytes", AnnotationValue::Integer(-4096)));
        // An address annotation (kept apart from tags) survives too.
        let ca = ann(s, "osd", "10.0.0.2", 6800, 1012, "");
        first.push(kv(
            ca,
            "ca",
            AnnotationValue::Text("rbd-client@10.0.0.9:4242".into()),
        ));
        let rest = [ann(s, "Client", "10.0.0.1", 5000, 1030, "cr")];
        let mut original = SpanAssembler::new(cfg());
        let mut out = Vec::new();
        for a in &first {
            original.add(a, t0, &mut out);
        }
        assert!(out.is_empty());
        let snap = original.snapshot(t0);
        let json = serde_json::to_string(&snap).unwrap();
        assert!(json.contains("rbd-client@10.0.0.9:4242"), "{json}");
        let back: AssemblerSnapshot = serde_json::from_str(&json).unwrap();
        assert_eq!(back, snap);
        let (mut restored, skipped) = SpanAssembler::restore(cfg(), back, t0);
        assert_eq!((skipped, restored.open_spans()), (0, 1));
        let want = run(&mut original, &rest, t0);
        let got = run(&mut restored, &rest, t0);
        assert_eq!(want.len(), 2);
        assert_eq!(got, want);
    }

    #[test]
    fn restore_keeps_at_most_max_open_spans_and_the_idle_clock() {
        let t0 = Instant::now();
        let mut asm = SpanAssembler::new(cfg());
        let mut out = Vec::new();
        for i in 0..5 {
            let id = format!("{:016x}", 0x100 + i);
            asm.add(&ann(&id, "c", "10.0.0.1", 1, 1000 + i, "cs"), t0, &mut out);
        }
        let later = t0 + Duration::from_secs(4);
        let snap = asm.snapshot(later);
        assert!(snap.spans.iter().all(|s| s.idle_ms == 4000));
        let small = AssemblerConfig {
            max_open: 3,
            ..cfg()
        };
        let (mut back, skipped) = SpanAssembler::restore(small, snap, later);
        assert_eq!((skipped, back.open_spans()), (2, 3));
        // 10 s idle timeout, 4 s already spent: due 6 s after the restore.
        back.poll(later + Duration::from_millis(5_900), &mut out);
        assert!(out.is_empty());
        back.poll(later + Duration::from_secs(6), &mut out);
        assert_eq!(out.len(), 3);
        assert_eq!(back.open_spans(), 0);
    }

    #[test]
    fn client_and_server_sharing_a_span_id_become_client_and_shared_server() {
        let s = "00000000000000bb";
        let mut asm = SpanAssembler::new(cfg());
        let t0 = Instant::now();
        let anns = [
            ann(s, "Client", "10.0.0.1", 5000, 1000, "cs"),
            ann(s, "osd", "10.0.0.2", 6800, 1010, "sr"),
            ann(s, "osd", "10.0.0.2", 6800, 1015, "journal"),
            kv(
                ann(s, "osd", "10.0.0.2", 6800, 1016, ""),
                "bytes",
                AnnotationValue::Integer(-4096),
            ),
            kv(
                ann(s, "osd", "10.0.0.2", 6800, 1017, ""),
                "object",
                AnnotationValue::Text("obj_1".into()),
            ),
            ann(s, "osd", "10.0.0.2", 6800, 1020, "ss"),
            ann(s, "Client", "10.0.0.1", 5000, 1030, "cr"),
        ];
        let mut out = Vec::new();
        for a in &anns {
            asm.add(a, t0, &mut out);
        }
        assert!(out.is_empty(), "nothing before the linger");
        asm.poll(t0 + Duration::from_millis(99), &mut out);
        assert!(out.is_empty());
        asm.poll(t0 + Duration::from_millis(100), &mut out);
        assert_eq!(out.len(), 2);
        let client = out.iter().find(|s| s.kind == Some(SpanKind::Client));
        let server = out.iter().find(|s| s.kind == Some(SpanKind::Server));
        let (client, server) = (client.unwrap(), server.unwrap());
        assert_eq!(client.id, s);
        assert_eq!(client.trace_id, T);
        assert_eq!(client.parent_id.as_deref(), Some("0000000000000001"));
        assert_eq!(client.name.as_deref(), Some("read"));
        assert_eq!((client.timestamp, client.duration), (Some(1000), Some(30)));
        assert_eq!(client.shared, None);
        assert!(client.annotations.is_empty());
        let ep = client.local_endpoint.as_ref().unwrap();
        assert_eq!(ep.service_name.as_deref(), Some("client"));
        assert_eq!(
            (ep.ipv4.as_deref(), ep.port),
            (Some("10.0.0.1"), Some(5000))
        );

        assert_eq!(server.id, s);
        assert_eq!(server.shared, Some(true));
        assert_eq!((server.timestamp, server.duration), (Some(1010), Some(10)));
        assert_eq!(
            server.annotations,
            vec![model::Annotation {
                timestamp: 1015,
                value: "journal".into()
            }]
        );
        // Each side is the other's remote endpoint (Zipkin's sa / ca).
        assert_eq!(client.remote_endpoint, server.local_endpoint);
        assert_eq!(server.remote_endpoint, client.local_endpoint);
        assert_eq!(server.tags["bytes"], "-4096");
        assert_eq!(server.tags["object"], "obj_1");
        assert!(server.integer_tags.contains("bytes"));
        assert!(!server.integer_tags.contains("object"));
        assert_eq!(asm.stats().spans, 2);
    }

    #[test]
    fn start_and_end_give_timestamp_and_duration_of_a_local_span() {
        let mut asm = SpanAssembler::new(cfg());
        let s = "00000000000000cc";
        let anns = [
            ann(s, "mapper", "::1", 0, 500, "start"),
            ann(s, "mapper", "::1", 0, 600, "lookup done"),
            ann(s, "mapper", "::1", 0, 900, "end"),
        ];
        let out = run(&mut asm, &anns, Instant::now());
        assert_eq!(out.len(), 1);
        let sp = &out[0];
        assert_eq!(sp.kind, None);
        assert_eq!((sp.timestamp, sp.duration), (Some(500), Some(400)));
        assert_eq!(sp.annotations.len(), 1);
        assert_eq!(sp.annotations[0].value, "lookup done");
        let ep = sp.local_endpoint.as_ref().unwrap();
        assert_eq!(
            (ep.ipv4.as_deref(), ep.ipv6.as_deref()),
            (None, Some("::1"))
        );
        assert_eq!(ep.port, None);
    }

    #[test]
    fn core_annotations_win_over_start_and_end_which_stay_annotations() {
        let mut asm = SpanAssembler::new(cfg());
        let s = "00000000000000dd";
        let anns = [
            ann(s, "c", "10.0.0.1", 1, 100, "start"),
            ann(s, "c", "10.0.0.1", 1, 110, "cs"),
            ann(s, "c", "10.0.0.1", 1, 190, "cr"),
            ann(s, "c", "10.0.0.1", 1, 200, "end"),
        ];
        let out = run(&mut asm, &anns, Instant::now());
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].kind, Some(SpanKind::Client));
        assert_eq!((out[0].timestamp, out[0].duration), (Some(110), Some(80)));
        let values: Vec<&str> = out[0].annotations.iter().map(|a| &*a.value).collect();
        assert_eq!(values, ["start", "end"]);
    }

    #[test]
    fn an_unclosed_span_is_emitted_after_the_idle_timeout_without_duration() {
        let mut asm = SpanAssembler::new(cfg());
        let t0 = Instant::now();
        let s = "00000000000000ee";
        let mut out = Vec::new();
        asm.add(&ann(s, "c", "10.0.0.1", 1, 100, "cs"), t0, &mut out);
        asm.add(&ann(s, "c", "10.0.0.1", 1, 150, "sent"), t0, &mut out);
        asm.poll(t0 + Duration::from_secs(9), &mut out);
        assert!(out.is_empty());
        asm.poll(t0 + Duration::from_secs(10), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].timestamp, out[0].duration), (Some(100), None));
        assert_eq!(out[0].annotations.len(), 1, "cs gave the timestamp");
        assert_eq!(asm.stats().incomplete, 1);
        assert_eq!(asm.open_spans(), 0);
    }

    #[test]
    fn a_keyval_at_another_endpoint_is_emitted_with_the_span_not_after_the_idle_timeout() {
        // ztracer: child.keyval("seq", i, &parent_ep) inside a child span
        // timed at its own endpoint.
        let mut asm = SpanAssembler::new(cfg());
        let t0 = Instant::now();
        let s = "00000000000000e1";
        let anns = [
            ann(s, "child", "10.0.0.2", 2, 100, "start"),
            kv(
                ann(s, "parent", "10.0.0.1", 1, 110, ""),
                "seq",
                AnnotationValue::Integer(7),
            ),
            ann(s, "child", "10.0.0.2", 2, 150, "end"),
        ];
        let out = run(&mut asm, &anns, t0);
        assert_eq!(out.len(), 2, "both endpoints' spans at the linger: {out:?}");
        let child = out
            .iter()
            .find(|x| x.local_endpoint.as_ref().unwrap().service_name.as_deref() == Some("child"))
            .unwrap();
        assert_eq!((child.timestamp, child.duration), (Some(100), Some(50)));
        let parent = out
            .iter()
            .find(|x| x.local_endpoint.as_ref().unwrap().service_name.as_deref() == Some("parent"))
            .unwrap();
        assert_eq!(parent.tags.get("seq").map(String::as_str), Some("7"));
        assert_eq!(parent.id, child.id);
        assert_eq!(asm.stats().incomplete, 0);
        assert_eq!(asm.stats().spans, 2);
        // Nothing left for the idle timeout.
        let mut later = Vec::new();
        asm.poll(t0 + Duration::from_secs(11), &mut later);
        assert!(later.is_empty(), "{later:?}");
    }

    #[test]
    fn a_side_that_began_and_did_not_end_still_waits_for_the_idle_timeout() {
        let mut asm = SpanAssembler::new(cfg());
        let t0 = Instant::now();
        let s = "00000000000000e2";
        let anns = [
            ann(s, "c", "10.0.0.1", 1, 100, "cs"),
            ann(s, "c", "10.0.0.1", 1, 200, "cr"),
            ann(s, "s", "10.0.0.2", 2, 120, "sr"),
        ];
        let out = run(&mut asm, &anns, t0);
        assert_eq!(out.len(), 1, "the server side is still open: {out:?}");
        assert_eq!(out[0].kind, Some(SpanKind::Client));
    }

    #[test]
    fn a_span_without_its_start_keeps_the_closing_event_as_annotation() {
        let mut asm = SpanAssembler::new(cfg());
        let s = "00000000000000ef";
        let anns = [
            ann(s, "osd", "10.0.0.2", 1, 300, "queued"),
            ann(s, "osd", "10.0.0.2", 1, 320, "ss"),
        ];
        let out = run(&mut asm, &anns, Instant::now());
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].kind, Some(SpanKind::Server));
        assert_eq!((out[0].timestamp, out[0].duration), (Some(300), None));
        assert_eq!(out[0].annotations.len(), 2);
        assert_eq!(out[0].shared, None, "no client side: not shared");
    }

    #[test]
    fn a_late_annotation_emits_an_update_with_everything() {
        let mut asm = SpanAssembler::new(cfg());
        let t0 = Instant::now();
        let s = "00000000000000f1";
        let mut out = run(
            &mut asm,
            &[
                ann(s, "c", "10.0.0.1", 1, 100, "start"),
                ann(s, "c", "10.0.0.1", 1, 200, "end"),
            ],
            t0,
        );
        assert_eq!(out.len(), 1);
        let t1 = t0 + Duration::from_secs(1);
        asm.add(
            &kv(
                ann(s, "c", "10.0.0.1", 1, 210, ""),
                "result",
                AnnotationValue::Text("ok".into()),
            ),
            t1,
            &mut out,
        );
        asm.poll(t1 + Duration::from_millis(100), &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].id, s);
        assert_eq!((out[1].timestamp, out[1].duration), (Some(100), Some(100)));
        assert_eq!(out[1].tags["result"], "ok");
        assert_eq!(asm.stats().spans, 1);
        assert_eq!(asm.stats().updates, 1);
        // Forgotten once idle, with nothing left to emit.
        asm.poll(t1 + Duration::from_secs(10), &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(asm.open_spans(), 0);
    }

    #[test]
    fn state_is_bounded_and_evictions_emit_and_count() {
        let mut asm = SpanAssembler::new(AssemblerConfig {
            max_open: 3,
            ..cfg()
        });
        let t0 = Instant::now();
        let mut out = Vec::new();
        for i in 0..10u64 {
            let id = format!("{:016x}", 0x100 + i);
            asm.add(&ann(&id, "c", "10.0.0.1", 1, 100 + i, "cs"), t0, &mut out);
            assert!(asm.open_spans() <= 3);
        }
        assert_eq!(asm.stats().evicted, 7);
        assert_eq!(out.len(), 7, "evicted spans are emitted, not lost");
        assert_eq!(out[0].id, format!("{:016x}", 0x100), "oldest first");
        asm.flush(&mut out);
        assert_eq!(out.len(), 10);
        assert_eq!(asm.open_spans(), 0);
    }

    #[test]
    fn annotations_with_malformed_ids_are_counted_not_assembled() {
        let mut asm = SpanAssembler::new(cfg());
        let a = ann("not hex", "c", "10.0.0.1", 1, 1, "cs");
        let out = run(&mut asm, &[a], Instant::now());
        assert!(out.is_empty());
        assert_eq!(asm.stats().malformed, 1);
        assert_eq!(asm.open_spans(), 0);
    }

    #[test]
    fn annotations_with_zero_ids_are_counted_and_never_emitted() {
        let mut asm = SpanAssembler::new(cfg());
        let zero_span = ann("0000000000000000", "c", "10.0.0.1", 1, 1, "cs");
        let mut zero_trace = ann("00000000000000f1", "c", "10.0.0.1", 1, 1, "cs");
        zero_trace.trace_id = "0".into();
        let good = ann("00000000000000f1", "c", "10.0.0.1", 1, 2, "cs");
        let t0 = Instant::now();
        let mut out = run(&mut asm, &[zero_span, zero_trace, good], t0);
        asm.flush(&mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(
            (out[0].trace_id.as_str(), out[0].id.as_str()),
            (T, "00000000000000f1")
        );
        assert_eq!(asm.stats().zero_ids, 2);
        assert_eq!(asm.stats().malformed, 0);
    }

    #[test]
    fn annotations_tags_and_values_over_the_caps_are_cut_and_counted() {
        let mut asm = SpanAssembler::new(AssemblerConfig {
            limits: SpanLimits {
                max_annotations: 4,
                max_tags: 3,
                max_value_bytes: 8,
            },
            ..cfg()
        });
        let s = "00000000000000c1";
        let at = |ts, ev: &str| ann(s, "osd", "10.0.0.2", 6800, ts, ev);
        let mut anns = vec![at(1, "sr")];
        anns.extend((0..10).map(|i| at(2 + i, &format!("ev{i}"))));
        for i in 0..5 {
            let tag = kv(at(20, ""), &format!("k{i}"), AnnotationValue::Integer(i));
            anns.push(tag);
        }
        // A tag already held is updated even at the cap.
        anns.push(kv(at(21, ""), "k0", AnnotationValue::Integer(7)));
        // "é" is two bytes: the cut falls on a character boundary.
        anns.push(kv(
            at(22, ""),
            "k1",
            AnnotationValue::Text("abcdefgé".into()),
        ));
        // The closing core event is kept although the cap was reached.
        anns.push(at(30, "ss"));
        let t0 = Instant::now();
        let mut out = run(&mut asm, &anns, t0);
        asm.flush(&mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        let span = &out[0];
        assert_eq!((span.timestamp, span.duration), (Some(1), Some(29)));
        let values: Vec<&str> = span.annotations.iter().map(|a| a.value.as_str()).collect();
        assert_eq!(values, ["ev0", "ev1", "ev2"], "sr + 3 events = 4");
        assert_eq!(span.tags.len(), 3);
        assert_eq!(span.tags["k0"], "7");
        assert_eq!(span.tags["k1"], "abcdefg");
        let st = asm.stats();
        assert_eq!(
            (st.annotations_dropped, st.tags_dropped, st.values_truncated),
            (7, 2, 1)
        );
    }

    #[test]
    fn untimed_annotations_are_counted_not_assembled() {
        let mut asm = SpanAssembler::new(cfg());
        let mut a = ann("00000000000000f2", "c", "10.0.0.1", 1, 1, "cs");
        a.timestamp = None;
        let out = run(&mut asm, &[a], Instant::now());
        assert!(out.is_empty());
        assert_eq!(asm.stats().untimed, 1);
        assert_eq!(asm.open_spans(), 0);
    }

    #[test]
    fn debug_flag_and_unparsable_ip_and_root_span() {
        let mut asm = SpanAssembler::new(cfg());
        let mut a = ann("00000000000000f3", "", "not-an-ip", 0, 5, "start");
        a.debug = true;
        a.parent_id = None;
        a.name = String::new();
        let out = run(&mut asm, &[a], Instant::now());
        let mut out2 = out;
        asm.flush(&mut out2);
        assert_eq!(out2.len(), 1);
        let sp = &out2[0];
        assert_eq!(sp.debug, Some(true));
        assert_eq!(sp.parent_id, None);
        assert_eq!(sp.name, None);
        assert_eq!(sp.local_endpoint, None);
    }

    #[test]
    fn address_annotations_give_the_remote_endpoint_and_bad_ones_stay_tags() {
        let mut asm = SpanAssembler::new(cfg());
        let s = "00000000000000f4";
        let text = |a, k: &str, v: &str| kv(a, k, AnnotationValue::Text(v.into()));
        let anns = [
            ann(s, "client", "10.0.0.1", 1, 100, "cs"),
            text(
                ann(s, "client", "10.0.0.1", 1, 101, ""),
                "sa",
                "OSD@10.0.0.9:6800",
            ),
            ann(s, "client", "10.0.0.1", 1, 190, "cr"),
            // A local span naming its peer, and one with a bad address.
            ann("00000000000000f5", "mapper", "10.0.0.3", 0, 100, "start"),
            text(
                ann("00000000000000f5", "mapper", "10.0.0.3", 0, 101, ""),
                "sa",
                "blocker@10.0.0.4",
            ),
            ann("00000000000000f5", "mapper", "10.0.0.3", 0, 150, "end"),
            ann("00000000000000f6", "mapper", "10.0.0.3", 0, 100, "start"),
            text(
                ann("00000000000000f6", "mapper", "10.0.0.3", 0, 101, ""),
                "sa",
                "not an address",
            ),
            ann("00000000000000f6", "mapper", "10.0.0.3", 0, 150, "end"),
        ];
        let out = run(&mut asm, &anns, Instant::now());
        assert_eq!(out.len(), 3);
        let client = &out[0];
        let remote = client.remote_endpoint.as_ref().unwrap();
        assert_eq!(remote.service_name.as_deref(), Some("osd"));
        assert_eq!(
            (remote.ipv4.as_deref(), remote.port),
            (Some("10.0.0.9"), Some(6800))
        );
        assert!(client.tags.is_empty(), "an address is not a tag");
        let local = &out[1];
        assert_eq!(
            local.kind, None,
            "sa does not make a client span (as Zipkin)"
        );
        let remote = local.remote_endpoint.as_ref().unwrap();
        assert_eq!(remote.service_name.as_deref(), Some("blocker"));
        assert_eq!(out[2].remote_endpoint, None);
        assert_eq!(out[2].tags["sa"], "not an address");
    }

    #[test]
    fn a_loopback_rpc_keeps_the_peer_address_without_its_service_name() {
        let mut asm = SpanAssembler::new(cfg());
        let s = "00000000000000f7";
        let anns = [
            ann(s, "osd", "10.0.0.2", 5000, 100, "cs"),
            ann(s, "osd", "10.0.0.2", 6800, 110, "sr"),
            ann(s, "osd", "10.0.0.2", 6800, 120, "ss"),
            ann(s, "osd", "10.0.0.2", 5000, 130, "cr"),
        ];
        let out = run(&mut asm, &anns, Instant::now());
        assert_eq!(out.len(), 2);
        for sp in &out {
            let remote = sp.remote_endpoint.as_ref().unwrap();
            assert_eq!(remote.service_name, None, "no self-link");
            let want = if sp.kind == Some(SpanKind::Client) {
                6800
            } else {
                5000
            };
            assert_eq!(remote.port, Some(want));
        }
    }

    #[test]
    fn stale_activity_entries_are_compacted_and_idle_spans_still_expire() {
        let mut config = cfg();
        config.limits.max_annotations = 5000;
        let mut asm = SpanAssembler::new(config);
        let t0 = Instant::now();
        let mut out = Vec::new();
        let s = "00000000000000f8";
        for i in 0..5000 {
            asm.add(&ann(s, "c", "10.0.0.1", 1, 100 + i, "tick"), t0, &mut out);
        }
        assert!(asm.activity.len() <= 2 * asm.open_spans() + 1024 + 1);
        asm.poll(t0 + Duration::from_secs(10), &mut out);
        assert_eq!(asm.open_spans(), 0);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].annotations.len(), 5000);
    }
}

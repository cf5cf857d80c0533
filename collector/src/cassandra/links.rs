//! Dependency links per day for Cassandra's `dependency` table: each trace
//! linked by the collector's one linker ([`crate::links`]) under the day of
//! its earliest timestamp, and the per-trace buffer that waits for a
//! trace's spans to arrive before linking it. Pure code; `sink.rs` stores
//! the counts.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::links::service_of;
use crate::model::Span;

/// Call and error counts of one parent → child edge.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkCounts {
    /// Calls from parent to child.
    pub calls: u64,
    /// Of those, calls that failed (a span tagged `error`).
    pub errors: u64,
}

/// Counts per `(day, parent, child)`; the day is days since the Unix epoch
/// (UTC) of the trace's earliest timestamp.
pub type DayLinks = BTreeMap<(u32, String, String), LinkCounts>;

/// Adds `from` into `into`.
pub(crate) fn merge_links(into: &mut DayLinks, from: DayLinks) {
    for (k, c) in from {
        let e = into.entry(k).or_default();
        e.calls += c.calls;
        e.errors += c.errors;
    }
}

/// Links one trace (all spans share a trace id) into `counts` for `day`,
/// by the collector's one linker ([`crate::links`], shared with the
/// embedded store).
pub(crate) fn link_trace(spans: &[Span], day: u32, counts: &mut DayLinks) {
    crate::links::link_trace(spans, |parent, child, error| {
        let c = counts
            .entry((day, parent.to_string(), child.to_string()))
            .or_default();
        c.calls += 1;
        c.errors += u64::from(error);
    });
}

/// Microseconds in a day.
const DAY_MICROS: u64 = 86_400 * 1_000_000;

/// The day (since the Unix epoch, UTC) a trace's links count for: that of
/// its earliest span timestamp; `None` when no span has one.
pub(crate) fn trace_day(spans: &[Span]) -> Option<u32> {
    spans
        .iter()
        .map(super::rows::span_timestamp)
        .filter(|t| *t != 0)
        .min()
        .and_then(|t| u32::try_from(t / DAY_MICROS).ok())
}

/// The same half of the same span: id, kind, sharing and local service.
fn same_span(a: &Span, b: &Span) -> bool {
    a.id == b.id
        && a.kind == b.kind
        && a.shared == b.shared
        && service_of(a.local_endpoint.as_ref()) == service_of(b.local_endpoint.as_ref())
}

/// Spans grouped by trace until the trace has been quiet for the linking
/// window, so a trace whose spans arrive in several batches is linked once,
/// whole. Bounded: past `max_spans` the oldest traces are linked early.
#[derive(Debug)]
pub(crate) struct TraceBuffer {
    window: Duration,
    max_spans: usize,
    spans: usize,
    traces: HashMap<String, (Instant, Vec<Span>)>,
}

impl TraceBuffer {
    pub(crate) fn new(window: Duration, max_spans: usize) -> Self {
        TraceBuffer {
            window,
            max_spans: max_spans.max(1),
            spans: 0,
            traces: HashMap::new(),
        }
    }

    /// Spans held.
    pub(crate) fn len(&self) -> usize {
        self.spans
    }

    /// Adds spans; returns the traces due for linking: quiet for the window,
    /// or the oldest ones while over the bound (counted in `early`).
    pub(crate) fn add(&mut self, spans: &[Span], now: Instant, early: &mut u64) -> Vec<Vec<Span>> {
        for s in spans {
            let e = self
                .traces
                .entry(s.trace_id.to_ascii_lowercase())
                .or_insert_with(|| (now, Vec::new()));
            e.0 = now;
            // A span sent again (a retried write) is one span, not two.
            if !e.1.iter().any(|held| same_span(held, s)) {
                e.1.push(s.clone());
                self.spans += 1;
            }
        }
        let mut due: Vec<String> = self
            .traces
            .iter()
            .filter(|(_, (last, _))| now.saturating_duration_since(*last) >= self.window)
            .map(|(k, _)| k.clone())
            .collect();
        let mut out: Vec<Vec<Span>> = due.drain(..).filter_map(|k| self.take(&k)).collect();
        if self.spans > self.max_spans {
            let mut by_age: Vec<(Instant, String)> = self
                .traces
                .iter()
                .map(|(k, (t, _))| (*t, k.clone()))
                .collect();
            by_age.sort();
            for (_, k) in by_age {
                if self.spans <= self.max_spans {
                    break;
                }
                if let Some(t) = self.take(&k) {
                    *early += 1;
                    out.push(t);
                }
            }
        }
        out
    }

    /// Every trace held, for a flush.
    pub(crate) fn drain(&mut self) -> Vec<Vec<Span>> {
        self.spans = 0;
        self.traces.drain().map(|(_, (_, s))| s).collect()
    }

    fn take(&mut self, key: &str) -> Option<Vec<Span>> {
        let (_, spans) = self.traces.remove(key)?;
        self.spans -= spans.len();
        Some(spans)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Endpoint, SpanKind};

    fn span(id: &str, parent: Option<&str>, kind: Option<SpanKind>, svc: &str) -> Span {
        Span {
            trace_id: "00000000000000aa".into(),
            id: id.into(),
            parent_id: parent.map(Into::into),
            kind,
            timestamp: Some(86_400_000_000 * 3 + 5),
            local_endpoint: Some(Endpoint {
                service_name: Some(svc.into()),
                ..Endpoint::default()
            }),
            ..Span::default()
        }
    }

    fn shared(mut s: Span) -> Span {
        s.shared = Some(true);
        s
    }

    fn links(spans: &[Span]) -> Vec<(String, String, u64, u64)> {
        let mut counts = DayLinks::new();
        link_trace(spans, trace_day(spans).unwrap(), &mut counts);
        counts
            .into_iter()
            .map(|((d, p, c), n)| {
                assert_eq!(d, 3);
                (p, c, n.calls, n.errors)
            })
            .collect()
    }

    /// client → volume → mapper → blocker with shared RPC spans, the last
    /// RPC failing on the client side only.
    #[test]
    fn shared_rpc_chain() {
        use SpanKind::*;
        let mut failing_client = span("c", Some("b"), Some(Client), "mapper");
        failing_client.tags.insert("error".into(), "eio".into());
        let trace = [
            span("a", None, Some(Client), "client"),
            shared(span("a", None, Some(Server), "volume")),
            span("b", Some("a"), Some(Client), "volume"),
            shared(span("b", Some("a"), Some(Server), "mapper")),
            failing_client,
            shared(span("c", Some("b"), Some(Server), "blocker")),
        ];
        assert_eq!(
            links(&trace),
            [
                ("client".into(), "volume".into(), 1, 0),
                ("mapper".into(), "blocker".into(), 1, 0),
                ("volume".into(), "mapper".into(), 1, 0),
            ]
        );
    }

    /// Errors on the server side count; an uninstrumented callee is known
    /// from the client's remote endpoint; a root server without a known
    /// caller makes no link; a local span in between is skipped over.
    #[test]
    fn errors_leaves_and_local_spans() {
        use SpanKind::*;
        let mut server = span("b", Some("l"), Some(Server), "mapper");
        server.tags.insert("error".into(), "1".into());
        let mut leaf = span("d", Some("b"), Some(Client), "mapper");
        leaf.remote_endpoint = Some(Endpoint {
            service_name: Some("disk".into()),
            ..Endpoint::default()
        });
        let trace = [
            span("a", None, Some(Server), "volume"),
            span("l", Some("a"), None, "volume"),
            server,
            leaf,
        ];
        assert_eq!(
            links(&trace),
            [
                ("mapper".into(), "disk".into(), 1, 0),
                ("volume".into(), "mapper".into(), 1, 1),
            ]
        );
    }

    #[test]
    fn buffer_links_quiet_traces_and_bounds_itself() {
        let t0 = Instant::now();
        let mut buf = TraceBuffer::new(Duration::from_secs(10), 3);
        let mut early = 0;
        let mut a = span("a", None, None, "x");
        a.trace_id = "01".into();
        let mut b = a.clone();
        b.trace_id = "02".into();
        assert!(buf.add(&[a.clone()], t0, &mut early).is_empty());
        // The same span again (a retry) is held once.
        assert!(buf.add(&[a.clone()], t0, &mut early).is_empty());
        assert_eq!(buf.len(), 1);
        assert!(buf
            .add(&[b.clone()], t0 + Duration::from_secs(5), &mut early)
            .is_empty());
        let due = buf.add(&[], t0 + Duration::from_secs(11), &mut early);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0][0].trace_id, "01");
        assert_eq!(buf.len(), 1);
        // Over the bound: the oldest trace goes early.
        let (mut a2, mut a3) = (a.clone(), a.clone());
        a2.id = "a2".into();
        a3.id = "a3".into();
        let due = buf.add(
            &[a.clone(), a2, a3],
            t0 + Duration::from_secs(12),
            &mut early,
        );
        assert_eq!((due.len(), early), (1, 1));
        assert_eq!(due[0][0].trace_id, "02");
        assert_eq!(buf.drain().len(), 1);
        assert_eq!(buf.len(), 0);
    }
}

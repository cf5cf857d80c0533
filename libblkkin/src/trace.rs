//! The Rust API: endpoints, trace contexts and RAII spans.
//!
//! ```no_run
//! use blkkin::{Endpoint, Span};
//! let ep = Endpoint::new("volume", "10.0.0.2", 6800);
//! let req = Span::root("write", &ep);          // reads the clock: its start
//! req.tag("object", "rbd_data.1234");          // recorded now
//! {
//!     let sub = req.child("journal");
//!     sub.tag_int("bytes", 4096);
//! }                                            // "journal" recorded: start and end
//! let wire = req.context().to_packed();        // 24 bytes, ceph/blkin layout
//! # let _ = wire;
//! // dropping `req` records it: its "start" and "end" events
//! ```
//!
//! A span guard is recorded once, when it ends: one record carrying its
//! start and end times, which readers (`blkkin dump`, the collector) show
//! as the span's `start` and `end` events. That halves the cost of a span,
//! but a span still in progress is not in the rings yet, and one whose
//! process dies before it ends is never recorded (its events and tags,
//! recorded when made, are). Explicit events ([`Span::event`]) and tags are
//! recorded at once.
//!
//! An unsampled trace (trace id 0) records nothing; every method returns
//! after one branch.

use crate::recorder::{self, RecordError};
use crate::ring::layout::{Kind, RECORD_FLAG_DEBUG};
use crate::ring::writer::{RecordIn, Value};

/// The event a [`Span`]'s start is shown as.
pub const START: &str = "start";
/// The event a [`Span`]'s end is shown as.
pub const END: &str = "end";

/// Where annotations happen: a service on a host and port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    service: Box<str>,
    ip: Box<str>,
    port: u16,
}

impl Endpoint {
    /// An endpoint for `service` at `ip` (text, as it should appear in Zipkin) and `port`.
    pub fn new(service: impl Into<String>, ip: impl Into<String>, port: u16) -> Endpoint {
        Endpoint {
            service: service.into().into(),
            ip: ip.into().into(),
            port,
        }
    }

    /// The service name.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The IP address as given.
    pub fn ip(&self) -> &str {
        &self.ip
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

/// The ids that tie annotations into spans and traces. `Copy`, 32 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TraceContext {
    /// Trace id; 0 means "not sampled".
    pub trace_id: u64,
    /// Span id.
    pub span_id: u64,
    /// Parent span id; 0 for a root span.
    pub parent_id: u64,
    /// Force-sampled (Zipkin `debug`).
    pub debug: bool,
}

impl TraceContext {
    /// The context of an unsampled trace.
    pub const UNSAMPLED: TraceContext = TraceContext {
        trace_id: 0,
        span_id: 0,
        parent_id: 0,
        debug: false,
    };

    /// A new root, sampled according to the process's sampling settings.
    pub fn new_root() -> TraceContext {
        if recorder::sampler().sample() {
            let id = crate::id::new_id();
            TraceContext {
                trace_id: id,
                span_id: id,
                parent_id: 0,
                debug: false,
            }
        } else {
            TraceContext::UNSAMPLED
        }
    }

    /// A new root that is always sampled and marked debug.
    pub fn new_root_forced() -> TraceContext {
        let id = crate::id::new_id();
        TraceContext {
            trace_id: id,
            span_id: id,
            parent_id: 0,
            debug: true,
        }
    }

    /// Whether annotations of this trace are recorded.
    #[inline(always)]
    pub fn is_sampled(&self) -> bool {
        self.trace_id != 0
    }

    /// A child span's context: same trace, new span id, this span as parent.
    #[inline(always)]
    pub fn new_child(&self) -> TraceContext {
        if !self.is_sampled() {
            return TraceContext::UNSAMPLED;
        }
        TraceContext {
            trace_id: self.trace_id,
            span_id: crate::id::new_id(),
            parent_id: self.span_id,
            debug: self.debug,
        }
    }

    /// Records one annotation of this context (nothing if unsampled).
    #[inline(always)]
    pub fn annotate(
        &self,
        span_name: &str,
        endpoint: &Endpoint,
        kind: Kind,
        key: &str,
        value: Value<'_>,
    ) -> Result<(), RecordError> {
        if !self.is_sampled() {
            return Ok(());
        }
        self.annotate_sampled(span_name, endpoint, kind, key, value)
    }

    // Out of line so the unsampled check above stays a single inlined branch.
    #[inline(never)]
    fn annotate_sampled(
        &self,
        span_name: &str,
        endpoint: &Endpoint,
        kind: Kind,
        key: &str,
        value: Value<'_>,
    ) -> Result<(), RecordError> {
        recorder::record(&self.record_in(span_name, endpoint, kind, key.as_bytes(), value))
    }

    /// The record of one annotation of this context.
    #[inline(always)]
    fn record_in<'r>(
        &self,
        span_name: &'r str,
        endpoint: &'r Endpoint,
        kind: Kind,
        key: &'r [u8],
        value: Value<'r>,
    ) -> RecordIn<'r> {
        RecordIn {
            trace_id: self.trace_id,
            span_id: self.span_id,
            parent_id: self.parent_id,
            port: endpoint.port,
            flags: if self.debug { RECORD_FLAG_DEBUG } else { 0 },
            kind,
            service: endpoint.service.as_bytes(),
            name: span_name.as_bytes(),
            ip: endpoint.ip.as_bytes(),
            key,
            value,
        }
    }
}

/// A span in progress: reads the clock when created and, when dropped (or
/// [`Span::end`]ed), records itself as one record with both times, shown by
/// readers as its [`START`] and [`END`] events. Drops are counted, never
/// reported as panics.
#[derive(Debug)]
pub struct Span<'a> {
    ctx: TraceContext,
    name: &'a str,
    endpoint: &'a Endpoint,
    /// Raw clock reading at the start (see [`recorder::start_tick`]).
    start: u64,
    /// Recorded as a whole span when dropped (not for [`Span::join`]).
    whole: bool,
}

impl<'a> Span<'a> {
    #[inline(always)]
    fn started(ctx: TraceContext, name: &'a str, endpoint: &'a Endpoint) -> Span<'a> {
        let start = if ctx.is_sampled() {
            recorder::start_tick()
        } else {
            0
        };
        Span {
            ctx,
            name,
            endpoint,
            start,
            whole: true,
        }
    }

    /// Starts a new trace (subject to sampling) with this root span.
    pub fn root(name: &'a str, endpoint: &'a Endpoint) -> Span<'a> {
        Span::started(TraceContext::new_root(), name, endpoint)
    }

    /// Starts a new, force-sampled (debug) trace.
    pub fn root_forced(name: &'a str, endpoint: &'a Endpoint) -> Span<'a> {
        Span::started(TraceContext::new_root_forced(), name, endpoint)
    }

    /// Starts a child of a span known only by its context (e.g. from the wire).
    pub fn child_of(parent: &TraceContext, name: &'a str, endpoint: &'a Endpoint) -> Span<'a> {
        Span::started(parent.new_child(), name, endpoint)
    }

    /// Starts a child of this span, at the same endpoint.
    #[inline(always)]
    pub fn child(&self, name: &'a str) -> Span<'a> {
        Span::started(self.ctx.new_child(), name, self.endpoint)
    }

    /// Continues a span with exactly these ids (the server side of an RPC,
    /// Zipkin v1 style: client and server share the span id). Records no
    /// automatic events; use `sr`/`ss` explicitly.
    pub fn join(ctx: TraceContext, name: &'a str, endpoint: &'a Endpoint) -> Span<'a> {
        Span {
            ctx,
            name,
            endpoint,
            start: 0,
            whole: false,
        }
    }

    /// The span's ids.
    pub fn context(&self) -> TraceContext {
        self.ctx
    }

    /// Whether this span records anything.
    pub fn is_sampled(&self) -> bool {
        self.ctx.is_sampled()
    }

    /// Records a timestamped event (`cs`, `sr`, "queued", ...).
    #[inline(always)]
    pub fn event(&self, event: &str) {
        let _ = self
            .ctx
            .annotate(self.name, self.endpoint, Kind::Event, event, Value::None);
    }

    /// Records a timestamped event at another endpoint.
    pub fn event_at(&self, event: &str, endpoint: &Endpoint) {
        let _ = self
            .ctx
            .annotate(self.name, endpoint, Kind::Event, event, Value::None);
    }

    /// Records a key with a string value.
    #[inline]
    pub fn tag(&self, key: &str, value: &str) {
        let _ = self.ctx.annotate(
            self.name,
            self.endpoint,
            Kind::String,
            key,
            Value::Str(value.as_bytes()),
        );
    }

    /// Records a key with an integer value.
    #[inline]
    pub fn tag_int(&self, key: &str, value: i64) {
        let _ = self.ctx.annotate(
            self.name,
            self.endpoint,
            Kind::Integer,
            key,
            Value::Int(value),
        );
    }

    /// Ends the span now (same as dropping it).
    pub fn end(self) {}
}

impl Span<'_> {
    /// Records the whole span (sampled spans only).
    #[inline(always)]
    fn record_whole(&self) {
        let r = (self.ctx).record_in(self.name, self.endpoint, Kind::Span, b"", Value::None);
        let _ = recorder::record_span(&r, self.start);
    }
}

impl Drop for Span<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        if self.whole && self.ctx.is_sampled() {
            self.record_whole();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_inherit_trace_and_sampling() {
        let root = TraceContext::new_root_forced();
        let child = root.new_child();
        assert_eq!(child.trace_id, root.trace_id);
        assert_eq!(child.parent_id, root.span_id);
        assert_ne!(child.span_id, root.span_id);
        assert!(child.debug);
        assert_eq!(TraceContext::UNSAMPLED.new_child(), TraceContext::UNSAMPLED);
    }

    #[test]
    fn unsampled_records_nothing_and_succeeds() {
        let ep = Endpoint::new("svc", "127.0.0.1", 1);
        assert!(TraceContext::UNSAMPLED
            .annotate("n", &ep, Kind::Event, "x", Value::None)
            .is_ok());
    }
}

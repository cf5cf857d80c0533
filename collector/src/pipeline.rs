//! The collector's main loop: annotations from the relay sources into the
//! assembler, assembled spans out to every sink, counters to the log.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use blkkin::annotation::Annotation;

use crate::assemble::SpanAssembler;
use crate::model::Span;
use crate::sink::SinkRunner;
use crate::source::RelaySource;

/// Everything one collector runs.
pub struct Pipeline {
    /// Groups annotations into spans.
    pub assembler: SpanAssembler,
    /// Where spans go.
    pub sinks: Vec<SinkRunner>,
    /// Where annotations come from (for their counters).
    pub sources: Vec<RelaySource>,
    /// How often counters are logged.
    pub stats_interval: Duration,
}

impl Pipeline {
    /// Runs until `stop` is set (or every source is gone), then emits what
    /// the assembler still holds, lets every sink deliver its queue (up to
    /// its shutdown grace) and logs the final counters.
    pub fn run(mut self, rx: Receiver<Vec<Annotation>>, stop: &AtomicBool) {
        let mut out: Vec<Span> = Vec::new();
        let mut next_stats = Instant::now() + self.stats_interval;
        while !stop.load(Ordering::Relaxed) {
            match rx.recv_timeout(Duration::from_millis(20)) {
                Ok(batch) => {
                    let now = Instant::now();
                    for a in &batch {
                        self.assembler.add(a, now, &mut out);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            self.assembler.poll(Instant::now(), &mut out);
            self.dispatch(&mut out);
            if Instant::now() >= next_stats {
                self.log_stats("collector counters");
                next_stats = Instant::now() + self.stats_interval;
            }
        }
        tracing::info!("stopping: emitting open spans and flushing sinks");
        self.assembler.flush(&mut out);
        self.dispatch(&mut out);
        let mut sinks = std::mem::take(&mut self.sinks);
        // All sinks drain at once: shutdown takes one grace period, not one per sink.
        for s in &mut sinks {
            s.begin_close();
        }
        let closed: Vec<(String, _)> = sinks
            .into_iter()
            .map(|s| (s.name().to_string(), s.close()))
            .collect();
        self.log_assembler("collector totals");
        for (name, c) in closed {
            tracing::info!(
                sink = %name, sent = c.sent, dropped_full = c.dropped_full, rejected = c.rejected,
                dropped_shutdown = c.dropped_shutdown, retries = c.retries, "sink totals"
            );
        }
    }

    fn dispatch(&mut self, out: &mut Vec<Span>) {
        if out.is_empty() {
            return;
        }
        for s in &self.sinks {
            s.offer(out);
        }
        out.clear();
    }

    fn log_assembler(&self, what: &str) {
        let a = self.assembler.stats();
        tracing::info!(
            annotations = a.annotations,
            untimed = a.untimed,
            spans = a.spans,
            updates = a.updates,
            incomplete = a.incomplete,
            evicted = a.evicted,
            open = self.assembler.open_spans(),
            "{what}"
        );
    }

    fn log_stats(&self, what: &str) {
        self.log_assembler(what);
        for s in &self.sources {
            tracing::info!(
                relay = %s.addr,
                annotations = s.stats.annotations.load(Ordering::Relaxed),
                disconnects = s.stats.disconnects.load(Ordering::Relaxed),
                connected = s.stats.connected.load(Ordering::Relaxed),
                upstream_lost = s.stats.upstream_lost.load(Ordering::Relaxed),
                "relay counters"
            );
        }
        for s in &self.sinks {
            let c = s.counters();
            tracing::info!(
                sink = %s.name(), sent = c.sent, pending = c.pending(), dropped_full = c.dropped_full,
                rejected = c.rejected, dropped_shutdown = c.dropped_shutdown, retries = c.retries,
                "sink counters"
            );
        }
    }
}

//! The collector's main loop: annotations from the relay sources into the
//! assembler, assembled spans out to every sink, counters to the log, and
//! (with checkpoints on) consistent cuts written once every durable sink
//! acknowledged what preceded them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use blkkin::wire::StreamKey;

use crate::assemble::SpanAssembler;
use crate::checkpoint::{Checkpoint, StateDir, StreamPosition, CHECKPOINT_VERSION};
use crate::model::Span;
use crate::sink::{Barrier, Durability, SinkRunner};
use crate::source::{RelaySource, SourceBatch};

/// Longest the main loop takes queued batches in before it emits what is
/// due (so a sustained backlog still emits spans at least this often).
const MAX_CATCH_UP: Duration = Duration::from_millis(500);

/// Checkpoint settings and progress of a pipeline.
pub struct Checkpointing {
    /// Where checkpoints are written (`None`: only into the archive's
    /// manifest).
    pub state: Option<StateDir>,
    /// Time between cuts.
    pub interval: Duration,
    /// Relay addresses, by source index.
    pub relays: Vec<String>,
    /// Id of the next checkpoint.
    pub next_id: u64,
    /// Spans emitted so far (over the collector's life).
    pub emitted: u64,
    /// Next position per (relay index, stream), as taken into the assembler.
    pub positions: BTreeMap<(usize, StreamKey), u64>,
    /// Set by a sink that wants a commit soon (the archive's roll size).
    pub roll_wanted: Vec<Arc<AtomicBool>>,
    /// Checkpoints written.
    pub written: u64,
}

/// A cut waiting for the durable sinks.
struct Cut {
    checkpoint: Checkpoint,
    /// (sink index, spans offered to it before the cut) of send-durable sinks.
    marks: Vec<(usize, u64)>,
}

/// Everything one collector runs.
/// How a pipeline stopped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stopped {
    /// Sides of spans still open, kept in the last checkpoint (emitted at
    /// the next start with the same state directory).
    pub kept_open: usize,
    /// The last checkpoint could not be written (durable sinks did not
    /// acknowledge in time): the next start reads the relays again from
    /// the previous one.
    pub checkpoint_behind: bool,
}

/// The collector's main loop (see [`Pipeline::run`]).
pub struct Pipeline {
    /// Groups annotations into spans.
    pub assembler: SpanAssembler,
    /// Where spans go.
    pub sinks: Vec<SinkRunner>,
    /// Where annotations come from (for their counters).
    pub sources: Vec<RelaySource>,
    /// How often counters are logged.
    pub stats_interval: Duration,
    /// Checkpoints (`None`: off, restarts read relays from the oldest).
    pub checkpoints: Option<Checkpointing>,
}

impl Pipeline {
    /// Runs until `stop` is set (or every source is gone), then emits what
    /// the assembler still holds (with checkpoints on: keeps it in a last
    /// checkpoint instead), lets every sink deliver its queue (up to its
    /// shutdown grace) and logs the final counters.
    pub fn run(mut self, rx: Receiver<SourceBatch>, stop: &AtomicBool) -> Stopped {
        let mut out: Vec<Span> = Vec::new();
        let mut next_stats = Instant::now() + self.stats_interval;
        let mut next_cut = self.next_cut();
        let mut pending: Option<Cut> = None;
        while !stop.load(Ordering::Relaxed) {
            match rx.recv_timeout(Duration::from_millis(20)) {
                Ok(batch) => {
                    self.take(batch, &mut out);
                    // Take what is already queued before emitting lingering
                    // sides: the other side of a shared span may be in the
                    // next batch (another stream), and a batch that took
                    // longer than the linger to assemble (a backlog after a
                    // restart, a loaded machine) must not make it look late.
                    let until = Instant::now() + MAX_CATCH_UP;
                    while Instant::now() < until {
                        match rx.try_recv() {
                            Ok(batch) => self.take(batch, &mut out),
                            Err(_) => break, // empty, or gone: seen next round
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            self.assembler.poll(Instant::now(), &mut out);
            self.dispatch(&mut out, stop);
            // Between two batches: a consistent cut.
            if self.checkpoints.is_some() {
                let due = next_cut.is_some_and(|t| Instant::now() >= t) || self.roll_wanted();
                if pending.is_none() && due {
                    pending = self.cut(stop);
                    next_cut = self.next_cut();
                }
                if pending.as_ref().is_some_and(|c| self.acknowledged(c)) {
                    self.save(pending.take().expect("checked"));
                }
            }
            if Instant::now() >= next_stats {
                self.log_stats("collector counters");
                next_stats = Instant::now() + self.stats_interval;
            }
        }
        let mut stopped = Stopped::default();
        let last = if self.checkpoints.is_some() {
            stopped.kept_open = self.assembler.pending_sides();
            tracing::info!(
                "stopping: flushing sinks and writing a last checkpoint; keeping {} open \
                 side(s) of spans in it (waiting for their end, another side or --linger): \
                 they are emitted at the next start with the same --state-dir",
                stopped.kept_open
            );
            self.cut(stop)
        } else {
            tracing::info!("stopping: emitting open spans and flushing sinks");
            self.assembler.flush(&mut out);
            self.dispatch(&mut out, stop);
            None
        };
        self.close_sinks();
        if let Some(cut) = last {
            if self.acknowledged(&cut) {
                self.save(cut);
            } else {
                stopped.kept_open = 0;
                stopped.checkpoint_behind = true;
                tracing::warn!(
                    "durable sinks did not acknowledge everything before shutdown: \
                     the last checkpoint stays where it was (those spans are read again)"
                );
            }
        }
        self.log_assembler("collector totals");
        stopped
    }

    /// Takes one batch into the assembler and its positions into the next
    /// cut.
    fn take(&mut self, batch: SourceBatch, out: &mut Vec<Span>) {
        let now = Instant::now();
        for a in &batch.annotations {
            self.assembler.add(a, now, out);
        }
        if let Some(c) = &mut self.checkpoints {
            for (key, next) in batch.positions {
                c.positions.insert((batch.relay, key), next);
            }
        }
    }

    /// When the next cut is due (`None`: never, checkpoints are off).
    fn next_cut(&self) -> Option<Instant> {
        Instant::now().checked_add(self.checkpoints.as_ref()?.interval)
    }

    fn roll_wanted(&self) -> bool {
        self.checkpoints
            .as_ref()
            .is_some_and(|c| c.roll_wanted.iter().any(|r| r.load(Ordering::Relaxed)))
    }

    /// Takes a checkpoint of the present state and queues its barrier in
    /// every commit-durable sink.
    fn cut(&mut self, stop: &AtomicBool) -> Option<Cut> {
        let c = self.checkpoints.as_mut()?;
        let mut relays: BTreeMap<String, Vec<StreamPosition>> = BTreeMap::new();
        for ((relay, key), next) in &c.positions {
            relays
                .entry(c.relays[*relay].clone())
                .or_default()
                .push(StreamPosition::new(key, *next));
        }
        let checkpoint = Checkpoint {
            version: CHECKPOINT_VERSION,
            id: c.next_id,
            cut_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            emitted: c.emitted,
            relays,
            assembler: self.assembler.snapshot(Instant::now()),
        };
        c.next_id += 1;
        let marks: Vec<(usize, u64)> = (self.sinks.iter().enumerate())
            .filter(|(_, s)| s.durability() == Durability::OnSend)
            .map(|(i, s)| (i, s.counters().offered))
            .collect();
        let watched: Vec<_> = marks
            .iter()
            .map(|(i, m)| (self.sinks[*i].stats(), *m))
            .collect();
        let barrier = Barrier {
            id: checkpoint.id,
            checkpoint: Arc::new(String::from_utf8(checkpoint.to_json()).expect("JSON is UTF-8")),
            ready: Arc::new(move || watched.iter().all(|(s, m)| s.snapshot().settled() >= *m)),
        };
        for s in &self.sinks {
            if s.durability() == Durability::OnCommit && !s.barrier(barrier.clone(), stop) {
                tracing::warn!(sink = %s.name(), "checkpoint barrier not queued");
            }
        }
        Some(Cut { checkpoint, marks })
    }

    /// Whether every durable sink acknowledged what preceded the cut.
    fn acknowledged(&self, cut: &Cut) -> bool {
        let id = cut.checkpoint.id;
        cut.marks
            .iter()
            .all(|(i, m)| self.sinks[*i].counters().settled() >= *m)
            && self
                .sinks
                .iter()
                .filter(|s| s.durability() == Durability::OnCommit)
                .all(|s| s.barrier_done() >= id)
    }

    fn save(&mut self, cut: Cut) {
        let Some(c) = self.checkpoints.as_mut() else {
            return;
        };
        if let Some(state) = &c.state {
            if let Err(e) = state.save(&cut.checkpoint) {
                tracing::warn!(error = %e, "checkpoint not written; the previous one stays");
                return;
            }
        }
        c.written += 1;
        tracing::debug!(id = cut.checkpoint.id, "checkpoint written");
    }

    fn close_sinks(&mut self) {
        let mut sinks = std::mem::take(&mut self.sinks);
        // All sinks drain at once: shutdown takes one grace period, not one per sink.
        for s in &mut sinks {
            s.begin_close();
        }
        let closed: Vec<(String, _)> = sinks
            .iter_mut()
            .map(|s| (s.name().to_string(), s.finish()))
            .collect();
        // Kept (closed) so a last checkpoint can read their counters.
        self.sinks = sinks;
        for (name, c) in closed {
            tracing::info!(
                sink = %name, sent = c.sent, dropped_full = c.dropped_full, rejected = c.rejected,
                dropped_shutdown = c.dropped_shutdown, retries = c.retries, "sink totals"
            );
        }
    }

    fn dispatch(&mut self, out: &mut Vec<Span>, stop: &AtomicBool) {
        if out.is_empty() {
            return;
        }
        let checkpoints = match &mut self.checkpoints {
            Some(c) => {
                c.emitted += out.len() as u64;
                true
            }
            None => false,
        };
        for s in &self.sinks {
            // Durable sinks hold back checkpoints: never drop for them.
            if checkpoints && s.durability() != Durability::BestEffort {
                s.offer_waiting(out, stop);
            } else {
                s.offer(out);
            }
        }
        out.clear();
    }

    fn log_assembler(&self, what: &str) {
        let a = self.assembler.stats();
        tracing::info!(
            annotations = a.annotations,
            untimed = a.untimed,
            malformed = a.malformed,
            zero_ids = a.zero_ids,
            annotations_dropped = a.annotations_dropped,
            tags_dropped = a.tags_dropped,
            values_truncated = a.values_truncated,
            spans = a.spans,
            updates = a.updates,
            incomplete = a.incomplete,
            evicted = a.evicted,
            open = self.assembler.open_spans(),
            checkpoints = self.checkpoints.as_ref().map_or(0, |c| c.written),
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::assemble::tests::ann;
    use crate::assemble::AssemblerConfig;
    use crate::model::SpanKind;
    use crate::sink::{Sink, SinkConfig, SinkError};

    struct Collect(Arc<Mutex<Vec<Span>>>);

    impl Sink for Collect {
        fn send(&mut self, batch: &[Span]) -> Result<(), SinkError> {
            self.0.lock().unwrap().extend_from_slice(batch);
            Ok(())
        }
    }

    fn batch(annotations: Vec<blkkin::annotation::Annotation>) -> SourceBatch {
        SourceBatch {
            annotations,
            ..SourceBatch::default()
        }
    }

    /// The two sides of a shared span come in two batches (two streams),
    /// both already queued: however long the linger, and however long the
    /// first batch took, the client side is emitted knowing the server.
    #[test]
    fn queued_batches_are_taken_before_lingering_sides_are_emitted() {
        let config = AssemblerConfig {
            linger: Duration::ZERO,
            ..AssemblerConfig::default()
        };
        let spans = Arc::new(Mutex::new(Vec::new()));
        let sink = SinkRunner::start("test", Collect(spans.clone()), SinkConfig::default());
        let pipeline = Pipeline {
            assembler: SpanAssembler::new(config),
            sinks: vec![sink.unwrap()],
            sources: Vec::new(),
            stats_interval: Duration::from_secs(60),
            checkpoints: None,
        };
        let (tx, rx) = std::sync::mpsc::sync_channel(4);
        let client = |ts, ev| ann("0000000000000002", "mapper", "10.0.0.1", 1, ts, ev);
        let server = |ts, ev| ann("0000000000000002", "blocker", "10.0.0.2", 2, ts, ev);
        tx.send(batch(vec![client(10, "cs"), client(40, "cr")]))
            .unwrap();
        tx.send(batch(vec![server(20, "sr"), server(30, "ss")]))
            .unwrap();
        drop(tx);
        pipeline.run(rx, &AtomicBool::new(false));
        let spans = spans.lock().unwrap();
        let remote = |kind| {
            let s = spans
                .iter()
                .find(|s| s.kind == Some(kind))
                .expect("emitted");
            s.remote_endpoint
                .as_ref()
                .and_then(|e| e.service_name.clone())
        };
        assert_eq!(spans.len(), 2, "{spans:?}");
        assert_eq!(remote(SpanKind::Client).as_deref(), Some("blocker"));
        assert_eq!(remote(SpanKind::Server).as_deref(), Some("mapper"));
    }
}

//! Sinks: where assembled spans go.
//!
//! A sink is anything that implements [`Sink`]: a blocking `send` of one
//! batch. [`SinkRunner`] gives every sink its own worker thread, a bounded
//! queue, batching, retries with exponential backoff and counters, so a slow
//! or absent destination never blocks the live read: when a queue is full,
//! new spans for that sink are dropped and counted (`dropped_full`).
//!
//! To plug in another destination (the embedded store, say): implement
//! [`Sink`] — `send` returns `Ok(())` once the batch is stored,
//! [`SinkError::Retry`] for a transient failure (the runner retries the same
//! batch after a backoff) or [`SinkError::Rejected`] for spans that will never
//! be accepted (counted, not retried) — and hand it to [`SinkRunner::start`].
//!
//! # Acknowledgements and checkpoints
//!
//! A sink's [`Durability`] says when its spans are safe: never guaranteed
//! (Zipkin HTTP, Scribe, JSON lines: best effort), when `send` returns `Ok`
//! (the embedded store, Cassandra), or only at [`Sink::commit`] (the
//! archive). The collector's checkpoints wait for every durable sink: it
//! compares [`SinkRunner::settled`] with what it offered before the cut, and
//! puts a *barrier* ([`SinkRunner::barrier`]) into the queue of a
//! commit-durable sink, whose worker then commits everything before it
//! together with the checkpoint. While checkpoints are on, durable sinks
//! are offered spans with [`SinkRunner::offer_waiting`], which waits for
//! queue space instead of dropping.

pub mod archive;
pub mod cassandra;
pub mod http;
pub mod jsonl;
pub mod scribe;
pub mod store;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::model::Span;
use crate::v1::V1Span;

/// Why a batch was not delivered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// Transient (destination down, busy, timed out): send the same batch
    /// again later.
    #[error("{0}")]
    Retry(String),
    /// `spans` spans of the batch will never be accepted (bad data, refused
    /// by the destination); the others were delivered.
    #[error("{spans} span(s) rejected: {reason}")]
    Rejected {
        /// How many spans of the batch were not delivered.
        spans: usize,
        /// Why.
        reason: String,
    },
}

/// A destination for spans. `send` runs on the sink's own worker thread and
/// may block (network, disk); it is never called concurrently.
pub trait Sink: Send + 'static {
    /// Delivers one batch (never empty).
    fn send(&mut self, batch: &[Span]) -> Result<(), SinkError>;

    /// Makes every span sent so far durable together with `checkpoint`, as
    /// one atomic step (the archive writes the checkpoint into its commit
    /// manifest). Called at barriers of a [`Durability::OnCommit`] sink;
    /// the default has nothing to do.
    fn commit(&mut self, checkpoint: &str) -> Result<(), SinkError> {
        let _ = checkpoint;
        Ok(())
    }

    /// Work a sink does on its own time: called once when the sink starts
    /// and then about every [`IDLE_TICK`] while no span is waiting (the
    /// Cassandra sink connects and creates its schema at start, and links
    /// the traces that went quiet). An error is logged, never retried here.
    fn idle(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// How often [`Sink::idle`] runs while a sink has nothing to send.
pub const IDLE_TICK: Duration = Duration::from_secs(1);

/// When a sink's spans are safe from a collector crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Never guaranteed: does not hold back checkpoints (Zipkin HTTP,
    /// Scribe, JSON lines).
    BestEffort,
    /// Once `send` returned `Ok` (the embedded store, Cassandra).
    OnSend,
    /// Once [`Sink::commit`] returned `Ok` (the archive).
    OnCommit,
}

/// A checkpoint travelling through a sink's queue: everything queued before
/// it is committed with `checkpoint`, once `ready` says every other durable
/// sink acknowledged its share of the cut.
#[derive(Clone)]
pub struct Barrier {
    /// The checkpoint's id.
    pub id: u64,
    /// The encoded checkpoint (JSON).
    pub checkpoint: Arc<String>,
    /// True once the other durable sinks settled what preceded the cut.
    pub ready: Arc<dyn Fn() -> bool + Send + Sync>,
}

// Spans are nearly every item; boxing them would cost an allocation each.
#[allow(clippy::large_enum_variant)]
enum Item {
    Span(Span),
    Barrier(Barrier),
}

/// Queueing, batching and retry settings of one sink.
#[derive(Debug, Clone, Copy)]
pub struct SinkConfig {
    /// Most spans waiting in the queue; more are dropped and counted.
    pub queue_spans: usize,
    /// Most spans per `send`.
    pub batch_spans: usize,
    /// How long a partial batch waits for more spans.
    pub batch_wait: Duration,
    /// First retry delay; doubles up to `backoff_max`.
    pub backoff_min: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// At shutdown, how long to keep trying to deliver what is queued.
    pub shutdown_grace: Duration,
}

impl Default for SinkConfig {
    fn default() -> Self {
        SinkConfig {
            queue_spans: 100_000,
            batch_spans: 500,
            batch_wait: Duration::from_millis(100),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// Live counters of one sink.
#[derive(Debug, Default)]
pub struct SinkStats {
    offered: AtomicU64,
    sent: AtomicU64,
    dropped_full: AtomicU64,
    rejected: AtomicU64,
    dropped_shutdown: AtomicU64,
    retries: AtomicU64,
    batches: AtomicU64,
    barrier_done: AtomicU64,
}

/// A snapshot of [`SinkStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SinkCounters {
    /// Spans handed to the sink (queued or dropped).
    pub offered: u64,
    /// Spans delivered.
    pub sent: u64,
    /// Spans dropped because the queue was full.
    pub dropped_full: u64,
    /// Spans the destination refused or that could not be encoded.
    pub rejected: u64,
    /// Spans still undelivered when the shutdown grace ran out.
    pub dropped_shutdown: u64,
    /// Failed attempts that were retried.
    pub retries: u64,
    /// Batches delivered.
    pub batches: u64,
}

impl SinkCounters {
    /// Everything dropped, whatever the reason.
    pub fn dropped(&self) -> u64 {
        self.dropped_full + self.rejected + self.dropped_shutdown
    }

    /// Spans queued or in flight.
    pub fn pending(&self) -> u64 {
        self.offered.saturating_sub(self.sent + self.dropped())
    }

    /// Spans delivered or refused for good (not dropped): a durable sink
    /// has acknowledged the first `settled` spans offered to it.
    pub fn settled(&self) -> u64 {
        self.sent + self.rejected
    }
}

impl SinkStats {
    /// A consistent-enough snapshot (each counter read once).
    pub fn snapshot(&self) -> SinkCounters {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SinkCounters {
            offered: g(&self.offered),
            sent: g(&self.sent),
            dropped_full: g(&self.dropped_full),
            rejected: g(&self.rejected),
            dropped_shutdown: g(&self.dropped_shutdown),
            retries: g(&self.retries),
            batches: g(&self.batches),
        }
    }
}

/// Converts a batch to v1 spans: (the spans, why others could not be).
pub(crate) fn to_v1(batch: &[Span]) -> (Vec<V1Span<'_>>, Vec<String>) {
    let mut bad = Vec::new();
    let spans = batch
        .iter()
        .filter_map(|s| V1Span::from_v2(s).map_err(|e| bad.push(e.to_string())).ok())
        .collect();
    (spans, bad)
}

/// `Ok` if nothing was bad, else the rejection of the bad spans.
pub(crate) fn rejected_if_any(bad: Vec<String>) -> Result<(), SinkError> {
    if bad.is_empty() {
        Ok(())
    } else {
        Err(SinkError::Rejected {
            spans: bad.len(),
            reason: bad.join("; "),
        })
    }
}

fn add(c: &AtomicU64, n: usize) {
    c.fetch_add(n as u64, Ordering::Relaxed);
}

/// A sink running on its own thread behind a bounded queue.
pub struct SinkRunner {
    name: String,
    durability: Durability,
    tx: Option<SyncSender<Item>>,
    stats: Arc<SinkStats>,
    closing: Arc<AtomicBool>,
    worker: Option<JoinHandle<()>>,
}

impl SinkRunner {
    /// Starts a best-effort `sink` on a worker thread named after `name`.
    pub fn start(name: &str, sink: impl Sink, config: SinkConfig) -> std::io::Result<SinkRunner> {
        Self::start_durable(name, sink, config, Durability::BestEffort)
    }

    /// Starts `sink` with its [`Durability`].
    pub fn start_durable(
        name: &str,
        sink: impl Sink,
        config: SinkConfig,
        durability: Durability,
    ) -> std::io::Result<SinkRunner> {
        let (tx, rx) = mpsc::sync_channel(config.queue_spans.max(1));
        let stats = Arc::new(SinkStats::default());
        let closing = Arc::new(AtomicBool::new(false));
        let worker = Worker {
            name: name.to_string(),
            sink,
            rx,
            config: SinkConfig {
                batch_spans: config.batch_spans.max(1),
                ..config
            },
            stats: stats.clone(),
            closing: closing.clone(),
        };
        let handle = std::thread::Builder::new()
            .name(format!("sink {name}"))
            .spawn(move || worker.run())?;
        Ok(SinkRunner {
            name: name.to_string(),
            durability,
            tx: Some(tx),
            stats,
            closing,
            worker: Some(handle),
        })
    }

    /// The sink's name (for logs).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Queues copies of `spans` without blocking; what does not fit is
    /// dropped and counted.
    pub fn offer(&self, spans: &[Span]) {
        let Some(tx) = &self.tx else { return };
        add(&self.stats.offered, spans.len());
        for (i, s) in spans.iter().enumerate() {
            match tx.try_send(Item::Span(s.clone())) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => add(&self.stats.dropped_full, 1),
                Err(TrySendError::Disconnected(_)) => {
                    // The worker is gone (it panicked): nothing more can be sent.
                    add(&self.stats.dropped_shutdown, spans.len() - i);
                    return;
                }
            }
        }
    }

    /// Queues copies of `spans`, waiting for space while the queue is full
    /// (the caller, and so the relay reads, slow down instead); gives up and
    /// counts the rest as `dropped_full` only once `stop` is set.
    pub fn offer_waiting(&self, spans: &[Span], stop: &AtomicBool) {
        let Some(tx) = &self.tx else { return };
        add(&self.stats.offered, spans.len());
        for (i, s) in spans.iter().enumerate() {
            let mut item = Item::Span(s.clone());
            loop {
                match tx.try_send(item) {
                    Ok(()) => break,
                    Err(TrySendError::Full(back)) if !stop.load(Ordering::Relaxed) => {
                        item = back;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(TrySendError::Full(_)) => {
                        add(&self.stats.dropped_full, spans.len() - i);
                        return;
                    }
                    Err(TrySendError::Disconnected(_)) => {
                        add(&self.stats.dropped_shutdown, spans.len() - i);
                        return;
                    }
                }
            }
        }
    }

    /// Queues `barrier` behind the spans offered so far (waiting for space
    /// like [`SinkRunner::offer_waiting`]); false if it could not be queued.
    pub fn barrier(&self, barrier: Barrier, stop: &AtomicBool) -> bool {
        let Some(tx) = &self.tx else { return false };
        let mut item = Item::Barrier(barrier);
        loop {
            match tx.try_send(item) {
                Ok(()) => return true,
                Err(TrySendError::Full(back)) if !stop.load(Ordering::Relaxed) => {
                    item = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(_) => return false,
            }
        }
    }

    /// The id of the last barrier committed (0 before the first).
    pub fn barrier_done(&self) -> u64 {
        self.stats.barrier_done.load(Ordering::Acquire)
    }

    /// When its spans are safe.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// Shared counters, for a barrier's `ready` check.
    pub fn stats(&self) -> Arc<SinkStats> {
        self.stats.clone()
    }

    /// Its counters.
    pub fn counters(&self) -> SinkCounters {
        self.stats.snapshot()
    }

    /// Stops taking spans, delivers what is queued (giving up after the
    /// shutdown grace; what is left is counted in `dropped_shutdown`) and
    /// waits for the worker.
    pub fn close(mut self) -> SinkCounters {
        self.finish()
    }

    /// [`SinkRunner::close`] without giving the runner up: its counters
    /// stay readable.
    pub fn finish(&mut self) -> SinkCounters {
        self.shutdown();
        self.counters()
    }

    /// Stops taking spans and starts the shutdown grace without waiting,
    /// so several sinks can drain at the same time before [`close`].
    ///
    /// [`close`]: SinkRunner::close
    pub fn begin_close(&mut self) {
        self.closing.store(true, Ordering::Relaxed);
        self.tx = None;
    }

    fn shutdown(&mut self) {
        self.begin_close();
        if let Some(w) = self.worker.take() {
            if w.join().is_err() {
                tracing::error!(sink = %self.name, "sink worker panicked");
            }
        }
    }
}

impl Drop for SinkRunner {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct Worker<S> {
    name: String,
    sink: S,
    rx: Receiver<Item>,
    config: SinkConfig,
    stats: Arc<SinkStats>,
    closing: Arc<AtomicBool>,
}

impl<S: Sink> Worker<S> {
    fn run(mut self) {
        let mut batch = Vec::with_capacity(self.config.batch_spans);
        // Set once the queue is closed: the time by which to give up.
        let mut give_up: Option<Instant> = None;
        let mut next_idle = Instant::now();
        // While `idle` fails: the wait before the next try.
        let mut idle_failing: Option<Duration> = None;
        loop {
            let mut barrier = None;
            while batch.is_empty() && barrier.is_none() {
                if Instant::now() >= next_idle {
                    let wait = match self.sink.idle() {
                        Ok(()) => {
                            idle_failing = None;
                            IDLE_TICK
                        }
                        // Logged when it starts failing, then retried with
                        // the sink's backoff (doubling up to its maximum).
                        Err(e) => {
                            let wait = match idle_failing {
                                None => {
                                    tracing::warn!(sink = %self.name, "{e}");
                                    IDLE_TICK
                                }
                                Some(w) => (w * 2).min(self.config.backoff_max.max(IDLE_TICK)),
                            };
                            idle_failing = Some(wait);
                            wait
                        }
                    };
                    next_idle = Instant::now() + wait;
                }
                let wait = next_idle.saturating_duration_since(Instant::now());
                match self.rx.recv_timeout(wait) {
                    Ok(Item::Span(s)) => batch.push(s),
                    Ok(Item::Barrier(b)) => barrier = Some(b),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
            let fill_until = Instant::now() + self.config.batch_wait;
            while barrier.is_none() && batch.len() < self.config.batch_spans {
                let left = fill_until.saturating_duration_since(Instant::now());
                match self.rx.recv_timeout(left) {
                    Ok(Item::Span(s)) => batch.push(s),
                    Ok(Item::Barrier(b)) => barrier = Some(b),
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            let done = (batch.is_empty() || self.deliver(&batch, &mut give_up))
                && barrier.is_none_or(|b| self.pass(&b, &mut give_up));
            if !done {
                // Out of time at shutdown: count everything still queued.
                add(&self.stats.dropped_shutdown, batch.len());
                let left = self.rx.try_iter().filter(|i| matches!(i, Item::Span(_)));
                add(&self.stats.dropped_shutdown, left.count());
                return;
            }
            batch.clear();
        }
    }

    /// Waits for the barrier's other sinks, then commits with its
    /// checkpoint; false if the shutdown grace ran out first.
    fn pass(&mut self, b: &Barrier, give_up: &mut Option<Instant>) -> bool {
        while !(b.ready)() {
            if !self.still_time(give_up) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        match self.retrying(give_up, |s| s.commit(&b.checkpoint)) {
            None => false,
            Some(Ok(())) => {
                self.stats.barrier_done.store(b.id, Ordering::Release);
                true
            }
            Some(Err((_, reason))) => {
                // Not committed: the checkpoint stays where it was.
                tracing::error!(sink = %self.name, %reason, "commit refused");
                true
            }
        }
    }

    /// Starts the shutdown grace once closing; false once it ran out.
    fn still_time(&self, give_up: &mut Option<Instant>) -> bool {
        if self.closing.load(Ordering::Relaxed) && give_up.is_none() {
            *give_up = Some(Instant::now() + self.config.shutdown_grace);
        }
        give_up.is_none_or(|g| Instant::now() < g)
    }

    /// Sends one batch, retrying transient failures; false if shutdown
    /// grace ran out first.
    fn deliver(&mut self, batch: &[Span], give_up: &mut Option<Instant>) -> bool {
        match self.retrying(give_up, |s| s.send(batch)) {
            None => false,
            Some(Ok(())) => {
                add(&self.stats.sent, batch.len());
                add(&self.stats.batches, 1);
                true
            }
            Some(Err((spans, reason))) => {
                let spans = spans.min(batch.len());
                add(&self.stats.rejected, spans);
                add(&self.stats.sent, batch.len() - spans);
                add(&self.stats.batches, 1);
                tracing::warn!(sink = %self.name, spans, %reason, "spans rejected");
                true
            }
        }
    }

    /// Runs `op` until it succeeds or is rejected (`Err((spans, reason))`),
    /// retrying transient failures with backoff; `None` if the shutdown
    /// grace ran out first.
    fn retrying(
        &mut self,
        give_up: &mut Option<Instant>,
        mut op: impl FnMut(&mut S) -> Result<(), SinkError>,
    ) -> Option<Result<(), (usize, String)>> {
        let mut delay = self.config.backoff_min;
        let mut failing = false;
        loop {
            match op(&mut self.sink) {
                Ok(()) => {
                    if failing {
                        tracing::info!(sink = %self.name, "delivering again");
                    }
                    return Some(Ok(()));
                }
                Err(SinkError::Rejected { spans, reason }) => return Some(Err((spans, reason))),
                Err(SinkError::Retry(reason)) => {
                    add(&self.stats.retries, 1);
                    if !failing {
                        tracing::warn!(sink = %self.name, %reason, "delivery failed; retrying with backoff");
                        failing = true;
                    } else {
                        tracing::debug!(sink = %self.name, %reason, "retry failed");
                    }
                }
            }
            if !self.still_time(give_up) {
                return None;
            }
            let mut wait = delay;
            if let Some(g) = *give_up {
                wait = wait.min(g.saturating_duration_since(Instant::now()));
            }
            // Sleep in short steps so a shutdown starts the grace period promptly.
            let until = Instant::now() + wait;
            while Instant::now() < until {
                if self.closing.load(Ordering::Relaxed) && give_up.is_none() {
                    break;
                }
                std::thread::sleep(
                    until
                        .saturating_duration_since(Instant::now())
                        .min(Duration::from_millis(50)),
                );
            }
            delay = (delay * 2).min(self.config.backoff_max);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// A sink scripted by a shared plan: fails while `down` is set.
    #[derive(Clone, Default)]
    struct Scripted {
        down: Arc<AtomicBool>,
        got: Arc<Mutex<Vec<String>>>,
        reject_ids: Arc<Mutex<Vec<String>>>,
    }

    impl Sink for Scripted {
        fn send(&mut self, batch: &[Span]) -> Result<(), SinkError> {
            if self.down.load(Ordering::SeqCst) {
                return Err(SinkError::Retry("down".into()));
            }
            let reject = self.reject_ids.lock().unwrap();
            let mut rejected = 0;
            for s in batch {
                if reject.contains(&s.id) {
                    rejected += 1;
                } else {
                    self.got.lock().unwrap().push(s.id.clone());
                }
            }
            if rejected > 0 {
                return Err(SinkError::Rejected {
                    spans: rejected,
                    reason: "bad".into(),
                });
            }
            Ok(())
        }
    }

    fn span(i: usize) -> Span {
        Span {
            trace_id: "00000000000000aa".into(),
            id: format!("{i:016x}"),
            ..Span::default()
        }
    }

    fn fast(queue: usize) -> SinkConfig {
        SinkConfig {
            queue_spans: queue,
            batch_spans: 10,
            batch_wait: Duration::from_millis(5),
            backoff_min: Duration::from_millis(5),
            backoff_max: Duration::from_millis(20),
            shutdown_grace: Duration::from_millis(200),
        }
    }

    fn wait_until(what: &str, f: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn delivers_in_order_in_batches() {
        let sink = Scripted::default();
        let r = SinkRunner::start("t", sink.clone(), fast(1000)).unwrap();
        let spans: Vec<Span> = (0..95).map(span).collect();
        r.offer(&spans);
        let c = r.close();
        assert_eq!(c.sent, 95);
        assert!(c.batches >= 10, "batches of at most 10: {}", c.batches);
        let got = sink.got.lock().unwrap().clone();
        let want: Vec<String> = spans.iter().map(|s| s.id.clone()).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn retries_while_down_drops_when_full_and_recovers() {
        let sink = Scripted::default();
        sink.down.store(true, Ordering::SeqCst);
        let r = SinkRunner::start("t", sink.clone(), fast(20)).unwrap();
        r.offer(&(0..10).map(span).collect::<Vec<_>>());
        wait_until("retries", || r.counters().retries >= 3);
        // The first batch is in flight; the queue holds 20 more; the rest drop.
        r.offer(&(10..60).map(span).collect::<Vec<_>>());
        let c = r.counters();
        assert_eq!(c.offered, 60);
        assert_eq!(c.dropped_full, 30);
        assert_eq!(c.sent, 0);
        sink.down.store(false, Ordering::SeqCst);
        wait_until("recovery", || r.counters().sent == 30);
        let c = r.close();
        assert_eq!((c.sent, c.dropped(), c.pending()), (30, 30, 0));
        assert_eq!(sink.got.lock().unwrap().len(), 30);
    }

    #[test]
    fn rejected_spans_are_counted_not_retried() {
        let sink = Scripted::default();
        sink.reject_ids.lock().unwrap().push(span(3).id);
        let r = SinkRunner::start("t", sink.clone(), fast(100)).unwrap();
        r.offer(&(0..5).map(span).collect::<Vec<_>>());
        let c = r.close();
        assert_eq!((c.sent, c.rejected, c.retries), (4, 1, 0));
    }

    /// A commit-durable sink: what was sent, and at each commit how many
    /// spans it covered and with which checkpoint.
    #[derive(Clone, Default)]
    struct Committing {
        sent: Arc<Mutex<Vec<String>>>,
        commits: Arc<Mutex<Vec<(usize, String)>>>,
    }

    impl Sink for Committing {
        fn send(&mut self, batch: &[Span]) -> Result<(), SinkError> {
            let mut sent = self.sent.lock().unwrap();
            sent.extend(batch.iter().map(|s| s.id.clone()));
            Ok(())
        }

        fn commit(&mut self, checkpoint: &str) -> Result<(), SinkError> {
            let n = self.sent.lock().unwrap().len();
            self.commits
                .lock()
                .unwrap()
                .push((n, checkpoint.to_string()));
            Ok(())
        }
    }

    #[test]
    fn a_barrier_commits_what_preceded_it_once_the_other_sinks_are_ready() {
        let sink = Committing::default();
        let r =
            SinkRunner::start_durable("t", sink.clone(), fast(100), Durability::OnCommit).unwrap();
        let stop = AtomicBool::new(false);
        let ready = Arc::new(AtomicBool::new(false));
        let gate = ready.clone();
        r.offer_waiting(&(0..15).map(span).collect::<Vec<_>>(), &stop);
        assert!(r.barrier(
            Barrier {
                id: 7,
                checkpoint: Arc::new("ck7".into()),
                ready: Arc::new(move || gate.load(Ordering::SeqCst)),
            },
            &stop
        ));
        r.offer_waiting(&(15..20).map(span).collect::<Vec<_>>(), &stop);
        wait_until("spans before the barrier", || r.counters().sent == 15);
        std::thread::sleep(Duration::from_millis(50));
        // Held back: neither committed nor past the barrier.
        assert_eq!(r.barrier_done(), 0);
        assert_eq!(r.counters().sent, 15);
        ready.store(true, Ordering::SeqCst);
        wait_until("the commit", || r.barrier_done() == 7);
        let c = r.close();
        assert_eq!((c.sent, c.settled()), (20, 20));
        assert_eq!(*sink.commits.lock().unwrap(), vec![(15, "ck7".to_string())]);
    }

    #[test]
    fn offer_waiting_waits_for_room_instead_of_dropping() {
        let sink = Scripted::default();
        sink.down.store(true, Ordering::SeqCst);
        let r = SinkRunner::start("t", sink.clone(), fast(5)).unwrap();
        let stop = AtomicBool::new(false);
        let down = sink.down.clone();
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            down.store(false, Ordering::SeqCst);
        });
        r.offer_waiting(&(0..40).map(span).collect::<Vec<_>>(), &stop);
        release.join().unwrap();
        let c = r.close();
        assert_eq!((c.sent, c.dropped()), (40, 0));
        // Once stopping, a full queue drops (and counts) instead.
        let sink = Scripted::default();
        sink.down.store(true, Ordering::SeqCst);
        let r = SinkRunner::start("t", sink, fast(5)).unwrap();
        stop.store(true, Ordering::SeqCst);
        r.offer_waiting(&(0..40).map(span).collect::<Vec<_>>(), &stop);
        assert!(r.counters().dropped_full >= 20);
    }

    #[test]
    fn shutdown_gives_up_after_the_grace_and_counts_what_is_left() {
        let sink = Scripted::default();
        sink.down.store(true, Ordering::SeqCst);
        let r = SinkRunner::start("t", sink, fast(100)).unwrap();
        r.offer(&(0..25).map(span).collect::<Vec<_>>());
        wait_until("first attempt", || r.counters().retries >= 1);
        let t = Instant::now();
        let c = r.close();
        assert!(t.elapsed() < Duration::from_secs(5));
        assert_eq!((c.sent, c.dropped_shutdown, c.pending()), (0, 25, 0));
    }
}

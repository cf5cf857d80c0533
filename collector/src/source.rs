//! Reading relays live: one thread per relay, forwarding decoded
//! annotations to the assembler.
//!
//! Each thread subscribes to every stream: streams it knows (read before,
//! or restored from a checkpoint) from their next position, the others from
//! the oldest record the relay holds. After a failure it reconnects with
//! exponential backoff (100 ms up to 5 s) and subscribes the same way, so
//! nothing arrives twice. Every batch carries the next position of each
//! stream it holds records of, which is what a checkpoint stores. Timestamps are
//! converted to epoch microseconds with each stream's clock calibration, as
//! `blkkin dump` and `blkkin tail` do.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use blkkin::annotation::Annotation;
use blkkin::relay_client::{Event, RelayReader};
use blkkin::tls::ClientAuth;
use blkkin::wire::StreamKey;

/// Counters of one relay source.
#[derive(Debug, Default)]
pub struct SourceStats {
    /// Annotations received.
    pub annotations: AtomicU64,
    /// Connections lost (each followed by reconnect attempts).
    pub disconnects: AtomicU64,
    /// Whether a subscription is currently live.
    pub connected: AtomicBool,
    /// Records lost upstream of the relay's readers (ring drops, torn or
    /// corrupt records, gaps), summed over the relay's streams as the relay
    /// last reported them.
    pub upstream_lost: AtomicU64,
}

/// Annotations read from one relay, with where each stream now stands.
#[derive(Debug, Default)]
pub struct SourceBatch {
    /// Index of the relay among the collector's relays.
    pub relay: usize,
    /// Decoded annotations, in stream order.
    pub annotations: Vec<Annotation>,
    /// For each stream with records in this batch: the position after its
    /// last record here.
    pub positions: Vec<(StreamKey, u64)>,
}

/// A thread reading one relay.
pub struct RelaySource {
    /// The relay's address.
    pub addr: String,
    /// Its counters.
    pub stats: Arc<SourceStats>,
    _thread: JoinHandle<()>,
}

impl RelaySource {
    /// Starts reading `addr` (relay number `index`) as reader `name`,
    /// continuing each stream of `resume` at its position, and sends batches
    /// to `tx` (which applies backpressure: while the assembler is behind,
    /// the relay keeps the records).
    pub fn start(
        addr: &str,
        index: usize,
        name: &str,
        auth: &ClientAuth,
        resume: Vec<(StreamKey, u64)>,
        tx: SyncSender<SourceBatch>,
    ) -> std::io::Result<RelaySource> {
        let stats = Arc::new(SourceStats::default());
        let (a, n, s) = (addr.to_string(), name.to_string(), stats.clone());
        let auth = auth.clone();
        let thread = std::thread::Builder::new()
            .name(format!("relay {addr}"))
            .spawn(move || read_relay(&a, index, &n, &auth, resume, &tx, &s))?;
        Ok(RelaySource {
            addr: addr.to_string(),
            stats,
            _thread: thread,
        })
    }
}

fn read_relay(
    addr: &str,
    index: usize,
    name: &str,
    auth: &ClientAuth,
    resume: Vec<(StreamKey, u64)>,
    tx: &SyncSender<SourceBatch>,
    stats: &SourceStats,
) {
    let mut reader: Option<RelayReader> = None;
    let mut resume = Some(resume);
    let mut delay = Duration::from_millis(100);
    // Each stream's cumulative losses; their sum is `upstream_lost`.
    let mut lost: std::collections::HashMap<StreamKey, u64> = Default::default();
    loop {
        // (Re)connect; the reader keeps what it delivered across reconnects.
        let connected = match reader.as_mut() {
            Some(r) => r.reconnect_with(addr, name, auth),
            None => RelayReader::connect_with(addr, name, auth).map(|mut r| {
                for (key, next) in resume.take().unwrap_or_default() {
                    r.resume_at(key, next);
                }
                reader = Some(r);
            }),
        };
        let r = match connected.and_then(|()| {
            let r = reader.as_mut().expect("set on success");
            r.subscribe_resuming().map(|()| r)
        }) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(relay = addr, error = %e, "cannot read relay; retrying in {delay:?}");
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        tracing::info!(relay = addr, "reading relay");
        stats.connected.store(true, Ordering::Relaxed);
        delay = Duration::from_millis(100);
        let err = loop {
            let mut batch = SourceBatch {
                relay: index,
                ..SourceBatch::default()
            };
            let mut lost_changed = false;
            let res = r.next_events(|e| match e {
                Event::Record(s, rec) => {
                    let a = Annotation::from_record(rec, &s.ring, Some(&s.calibration));
                    batch.annotations.extend(a);
                    match batch.positions.iter_mut().find(|(k, _)| *k == s.key) {
                        Some((_, next)) => *next = rec.position + 1,
                        None => batch.positions.push((s.key.clone(), rec.position + 1)),
                    }
                }
                Event::Counters(s) => {
                    let n = s.lost();
                    if lost.insert(s.key.clone(), n) != Some(n) {
                        lost_changed = true;
                        if n > 0 {
                            tracing::warn!(relay = addr, node = %s.key.node, pid = s.key.pid,
                                cpu = s.key.cpu, lost = n, "records lost upstream of the relay");
                        }
                    }
                }
            });
            if lost_changed {
                stats
                    .upstream_lost
                    .store(lost.values().sum(), Ordering::Relaxed);
            }
            if !batch.annotations.is_empty() {
                stats
                    .annotations
                    .fetch_add(batch.annotations.len() as u64, Ordering::Relaxed);
                if tx.send(batch).is_err() {
                    return; // the collector is shutting down
                }
            }
            if let Err(e) = res {
                break e;
            }
        };
        stats.connected.store(false, Ordering::Relaxed);
        if tx.send(SourceBatch::default()).is_err() {
            return; // the collector stopped first: nothing to report
        }
        stats.disconnects.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(relay = addr, error = %err, "relay connection lost; reconnecting");
        std::thread::sleep(delay);
    }
}

//! A reader's connection: `List`, `Status`, and `Subscribe` followed by
//! `Announce`, `StreamCounters`, `Calibrate` and `Records` pushed from the
//! store at the reader's own pace.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use blkkin::ring::header::Calibration;
use blkkin::wire::{self, Frame, Start, StreamCounters, StreamKey, StreamSummary};
use tokio::sync::watch;

use super::io::{blocking, send, Close, FrameReader, Tx};
use super::peers::{pages, PeerGuard};
use super::{frame_name, Shared};
use crate::store::Stream;

/// Bytes of records read from the store for one reader at a time.
const READ_BATCH: usize = 256 << 10;

/// One stream a reader receives.
struct Sub {
    handle: u32,
    stream: Arc<Stream>,
    cursor: u64,
    /// Loss counters last sent.
    counters: StreamCounters,
    /// Clock calibration last sent.
    calibration: Calibration,
    /// Positions retention removed before this reader read them.
    retention: u64,
    /// The stream's version when this reader was last fully up to date with
    /// it (records, counters, calibration): unchanged streams are skipped.
    seen: Option<u64>,
}

impl Sub {
    /// The stream's loss counters as this reader sees them.
    fn counters(&self, meta: &crate::store::Meta) -> StreamCounters {
        StreamCounters {
            relay_retention: self.retention,
            ..meta.counters()
        }
    }
}

/// A `Subscribe` that also covers streams created later.
struct Selector {
    key: Option<StreamKey>,
    start: Start,
}

fn start_position(s: &Stream, start: Start) -> u64 {
    match start {
        Start::Oldest => s.first(),
        Start::Newest => s.next(),
        Start::At(p) => p,
    }
}

/// How often a reader's lag is computed for `Status`.
const LAG_EVERY: Duration = Duration::from_secs(1);

/// Serves a reader until it disconnects (`Ok`) or the connection fails.
pub(super) async fn serve(
    rx: &mut FrameReader,
    w: &mut Tx,
    shared: &Shared,
    me: &PeerGuard,
    mut stop: watch::Receiver<bool>,
) -> Result<(), Close> {
    let store = &shared.store;
    let mut subs: Vec<Sub> = Vec::new();
    let mut subscribed: HashSet<StreamKey> = HashSet::new();
    let mut selectors: Vec<Selector> = Vec::new();
    let mut changes = store.watch();
    let mut next_handle = 1u32;
    // The stream set last matched against the selectors.
    let mut generation = None;
    let mut lag_at = Instant::now();
    loop {
        changes.borrow_and_update();
        // New streams matching a selector (streams existing at Subscribe time
        // were added then, with the requested start; later ones from their
        // start). Only when the set of streams changed.
        let g = store.generation();
        if !selectors.is_empty() && generation != Some(g) {
            generation = Some(g);
            for s in store.streams() {
                if subscribed.contains(s.key()) {
                    continue;
                }
                if let Some(sel) = selectors
                    .iter()
                    .find(|sel| sel.key.as_ref().is_none_or(|k| k == s.key()))
                {
                    let cursor = match (sel.key.is_some(), sel.start) {
                        (true, Start::At(p)) => p,
                        _ => s.first(),
                    };
                    subscribed.insert(s.key().clone());
                    announce(w, &mut subs, &mut next_handle, s, cursor).await?;
                }
            }
        }
        // Loss counters and clock calibrations that changed since last sent
        // (writers refine their calibration as they run: a long-lived reader
        // would otherwise drift from the wall clock).
        let mut changed = Vec::new();
        let mut versions = Vec::with_capacity(subs.len());
        for sub in &mut subs {
            let v = sub.stream.version();
            versions.push(v);
            if sub.seen == Some(v) {
                continue; // nothing new since it was up to date
            }
            let meta = sub.stream.meta();
            if meta.calibration != sub.calibration {
                sub.calibration = meta.calibration;
                changed.push(Frame::Calibrate {
                    handle: sub.handle,
                    calibration: meta.calibration,
                });
            }
            let counters = sub.counters(&meta);
            if counters != sub.counters {
                sub.counters = counters;
                changed.push(Frame::StreamCounters {
                    handle: sub.handle,
                    counters,
                });
            }
        }
        if !changed.is_empty() {
            send(w, &changed).await?;
        }
        // One batch per stream per round, so streams share the reader fairly.
        let mut progressed = false;
        for (sub, v) in subs.iter_mut().zip(versions) {
            if sub.seen == Some(v) {
                continue;
            }
            if sub.cursor >= sub.stream.next() {
                sub.seen = Some(v);
                continue;
            }
            progressed |= push(w, sub).await?;
        }
        if lag_at.elapsed() >= LAG_EVERY {
            lag_at = Instant::now();
            let lag = subs
                .iter()
                .map(|s| s.stream.next().saturating_sub(s.cursor))
                .fold(0u64, u64::saturating_add);
            me.set_lag(lag);
        }
        let f = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return Err(Close::Shutdown),
            // A subscribed reader may wait for streams in silence.
            f = rx.next(subs.is_empty() && selectors.is_empty()) => f,
            r = changes.changed(), if !progressed => {
                if r.is_err() { return Err(Close::Shutdown); }
                continue;
            }
            _ = std::future::ready(()), if progressed => continue,
        };
        let f = match f {
            Err(Close::Eof) => return Ok(()),
            other => other?,
        };
        match f {
            Frame::List => {
                let list = store.streams().iter().map(|s| s.summary()).collect();
                for page in pages(list, |s: &StreamSummary| s.key.node.len()) {
                    send(w, &[Frame::Streams(page)]).await?;
                }
            }
            Frame::Status => {
                for page in shared.peers.report(&shared.cfg.name, store) {
                    send(w, &[Frame::StatusReport(page)]).await?;
                }
            }
            Frame::Heartbeat => {}
            Frame::Subscribe { key, start } => {
                tracing::info!(?key, ?start, "subscribe");
                let now: Vec<Arc<Stream>> = match &key {
                    None => store.streams(),
                    Some(k) => store.get(k).into_iter().collect(),
                };
                for s in now {
                    if !subscribed.insert(s.key().clone()) {
                        continue;
                    }
                    let cursor = start_position(&s, start);
                    announce(w, &mut subs, &mut next_handle, s, cursor).await?;
                }
                selectors.push(Selector { key, start });
            }
            other => {
                return Err(Close::Protocol(format!(
                    "{} is not allowed from a reader",
                    frame_name(&other)
                )))
            }
        }
    }
}

async fn announce(
    w: &mut Tx,
    subs: &mut Vec<Sub>,
    next_handle: &mut u32,
    stream: Arc<Stream>,
    cursor: u64,
) -> Result<(), Close> {
    let handle = *next_handle;
    *next_handle += 1;
    let meta = stream.meta();
    let counters = meta.counters();
    let f = Frame::Announce {
        handle,
        key: stream.key().clone(),
        calibration: meta.calibration,
    };
    send(w, &[f, Frame::StreamCounters { handle, counters }]).await?;
    subs.push(Sub {
        handle,
        stream,
        counters,
        calibration: meta.calibration,
        cursor,
        retention: 0,
        seen: None,
    });
    Ok(())
}

/// Reads one batch for `sub` from the store and sends it; false if nothing was read.
async fn push(w: &mut Tx, sub: &mut Sub) -> Result<bool, Close> {
    let s = sub.stream.clone();
    let from = sub.cursor;
    let entries = blocking(move || s.read(from, READ_BATCH)).await?;
    // Records retention removed before this reader got them are its loss:
    // the positions between the cursor and the oldest record still held
    // (counted by position, so a gap inside them counts here too).
    let first = sub.stream.first();
    let upto = entries
        .first()
        .map_or(first, |e| e.0.min(first))
        .min(sub.stream.retained_to());
    let lost_to_retention = upto > from;
    if lost_to_retention {
        sub.retention = sub.retention.saturating_add(upto - from);
        tracing::debug!(key = ?sub.stream.key(), from, upto, "retention removed records before this reader read them");
    }
    let Some(last) = entries.last().map(|e| e.0) else {
        // Nothing at or after the cursor: skip ahead.
        sub.cursor = if first > sub.cursor {
            first
        } else {
            sub.stream.next()
        };
        // New counters to send count as progress.
        return Ok(lost_to_retention);
    };
    let mut frames = Vec::new();
    let mut first = entries[0].0;
    let mut expect = first;
    let mut records = Vec::new();
    let mut count = 0u32;
    for (pos, rec) in entries {
        if pos != expect || count == wire::MAX_RECORDS_PER_FRAME {
            frames.push(Frame::Records {
                handle: sub.handle,
                first,
                records: std::mem::take(&mut records),
            });
            first = pos;
            count = 0;
        }
        records.extend_from_slice(&rec);
        count += 1;
        expect = pos + 1;
    }
    frames.push(Frame::Records {
        handle: sub.handle,
        first,
        records,
    });
    send(w, &frames).await?;
    sub.cursor = last + 1;
    Ok(true)
}

//! A consumer's connection: streams opened, records persisted and
//! acknowledged, counters and consumer statistics recorded.

use std::collections::HashMap;
use std::sync::Arc;

use blkkin::wire::{self, Frame, StreamKey};
use tokio::sync::watch;

use super::io::{blocking, send, Close, FrameReader, Tx};
use super::peers::PeerGuard;
use super::{frame_name, Shared};
use crate::store::{Refused, Store, Stream};

/// Most `Records` frames appended and synced as one group.
const MAX_GROUP: usize = 64;

/// Serves a consumer until it disconnects (`Ok`) or the connection fails;
/// then removes the streams it opened and never sent a record to. With
/// `only_node` (an authenticated producer), streams of other nodes are
/// refused.
pub(super) async fn serve(
    rx: &mut FrameReader,
    w: &mut Tx,
    shared: &Shared,
    me: &PeerGuard,
    stop: watch::Receiver<bool>,
    only_node: Option<&str>,
) -> Result<(), Close> {
    let mut handles: HashMap<u32, Arc<Stream>> = HashMap::new();
    let r = session(rx, w, shared, me, stop, only_node, &mut handles).await;
    let keys: Vec<StreamKey> = handles.drain().map(|(_, s)| s.key().clone()).collect();
    remove_unused(&shared.store, keys).await;
    r
}

/// Removes the streams of `keys` that never got a record (see
/// [`Store::remove_if_unused`]).
async fn remove_unused(store: &Arc<Store>, keys: Vec<StreamKey>) {
    if keys.is_empty() {
        return;
    }
    let st = store.clone();
    let r = blocking(move || {
        let mut n = 0;
        for k in &keys {
            n += usize::from(st.remove_if_unused(k)?);
        }
        Ok(n)
    })
    .await;
    match r {
        Ok(0) => {}
        Ok(n) => tracing::info!(streams = n, "removed streams that never received a record"),
        Err(e) => tracing::warn!("removing unused streams: {e}"),
    }
}

async fn session(
    rx: &mut FrameReader,
    w: &mut Tx,
    shared: &Shared,
    me: &PeerGuard,
    mut stop: watch::Receiver<bool>,
    only_node: Option<&str>,
    handles: &mut HashMap<u32, Arc<Stream>>,
) -> Result<(), Close> {
    let store = &shared.store;
    let max_streams = shared.cfg.max_streams_per_connection;
    // A frame read while gathering a group of `Records`, handled next.
    let mut stashed: Option<Frame> = None;
    loop {
        let f = match stashed.take() {
            Some(f) => Ok(f),
            None => tokio::select! {
                f = rx.next(true) => f,
                _ = stop.wait_for(|s| *s) => return Err(Close::Shutdown),
            },
        };
        let f = match f {
            Err(Close::Eof) => return Ok(()),
            other => other?,
        };
        let stream = |h: &u32| {
            handles
                .get(h)
                .cloned()
                .ok_or_else(|| Close::Protocol(format!("unknown stream handle {h}")))
        };
        match f {
            Frame::OpenStream {
                handle,
                key,
                calibration,
            } => {
                if let Some(node) = only_node.filter(|n| *n != key.node) {
                    return Err(Close::Denied(format!(
                        "this producer may only send streams of node `{node}`, not `{}`",
                        key.node
                    )));
                }
                if handles.len() >= max_streams && !handles.contains_key(&handle) {
                    return Err(Close::Protocol(format!(
                        "too many streams open on one connection (at most {max_streams})"
                    )));
                }
                let st = store.clone();
                let k = key.clone();
                let s = blocking(move || st.open_stream(&k, calibration)).await?;
                tracing::info!(handle, ?key, next = s.next(), "stream opened");
                let next = s.durable_next();
                handles.insert(handle, s);
                send(w, &[Frame::Ack { handle, next }]).await?;
            }
            Frame::Records {
                handle,
                first,
                records,
            } => {
                // Group commit: the Records frames that arrived with this
                // one are appended together and synced once per stream
                // before any of them is acknowledged.
                let mut group = vec![(stream(&handle)?, handle, first, records)];
                while group.len() < MAX_GROUP {
                    match rx.try_next()? {
                        Some(Frame::Records {
                            handle,
                            first,
                            records,
                        }) => group.push((stream(&handle)?, handle, first, records)),
                        Some(other) => {
                            stashed = Some(other);
                            break;
                        }
                        None => break,
                    }
                }
                let (group, appended) = blocking(move || {
                    let mut appended = Vec::with_capacity(group.len());
                    for (s, _, first, records) in &group {
                        match s.append_deferred(*first, records) {
                            Ok(a) => appended.push(a),
                            Err(e) => {
                                if e.downcast_ref::<Refused>().is_some() {
                                    // Not stored; counted where readers see it.
                                    let n = wire::count_records(records).unwrap_or(0) as u64;
                                    s.refuse(n)?;
                                }
                                // What was appended before is acknowledged by
                                // no one: the consumer sends it again.
                                return Err(e);
                            }
                        }
                    }
                    // Sync every stream with something not yet durable (also
                    // one a failed sync of an earlier group left behind).
                    let mut synced: Vec<&Arc<Stream>> = Vec::new();
                    for (s, ..) in &group {
                        if !synced.iter().any(|x| Arc::ptr_eq(x, s)) {
                            s.sync_batch()?;
                            synced.push(s);
                        }
                    }
                    Ok((group, appended))
                })
                .await
                .map_err(|c| match c {
                    Close::Store(e) if e.downcast_ref::<Refused>().is_some() => {
                        store.notify(); // readers are sent the refused count
                        Close::Protocol(format!("{e:#}"))
                    }
                    other => other,
                })?;
                let mut acks: Vec<Frame> = Vec::new();
                for ((s, handle, ..), a) in group.iter().zip(&appended) {
                    if a.gap > 0 {
                        tracing::warn!(key = ?s.key(), lost = a.gap, at = a.next - a.written, "gap in positions: records lost upstream");
                    }
                    if a.refused > 0 {
                        tracing::warn!(key = ?s.key(), refused = a.refused, "records refused at ingest (no reader could decode them)");
                    }
                    if a.duplicates > 0 {
                        tracing::debug!(key = ?s.key(), duplicates = a.duplicates, "skipped records already held");
                    }
                    // One Ack per stream: what is durable, never more.
                    acks.retain(|f| !matches!(f, Frame::Ack { handle: h, .. } if h == handle));
                    acks.push(Frame::Ack {
                        handle: *handle,
                        next: s.durable_next(),
                    });
                }
                if appended
                    .iter()
                    .any(|a| a.written > 0 || a.gap > 0 || a.refused > 0)
                {
                    store.notify();
                }
                send(w, &acks).await?;
            }
            Frame::Counters {
                handle,
                reader,
                writer,
            } => {
                let s = stream(&handle)?;
                let m = s.meta();
                if (m.reader, m.writer) != (reader, writer) {
                    blocking(move || {
                        s.update_meta(|m| {
                            m.reader = reader;
                            m.writer = writer;
                        })
                    })
                    .await?;
                    store.notify(); // readers are sent the new counters
                }
            }
            Frame::ConsumerStats(stats) => me.set_consumer_stats(stats),
            Frame::Heartbeat => {}
            Frame::Calibrate {
                handle,
                calibration,
            } => {
                let s = stream(&handle)?;
                blocking(move || s.update_meta(|m| m.calibration = calibration)).await?;
            }
            Frame::CloseStream { handle } => {
                let s = stream(&handle)?;
                tracing::info!(handle, key = ?s.key(), next = s.next(), "stream closed by its writer");
                let key = s.key().clone();
                blocking(move || s.update_meta(|m| m.closed = true)).await?;
                handles.remove(&handle);
                remove_unused(store, vec![key]).await;
                store.notify();
            }
            other => {
                return Err(Close::Protocol(format!(
                    "{} is not allowed from a consumer",
                    frame_name(&other)
                )))
            }
        }
    }
}

//! Who is connected, for `Status`: every consumer and reader registers after
//! its Hello and is removed when its connection ends.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use blkkin::wire::{ConsumerStats, PeerStatus, Role, StatusReport, StreamStatus};

use crate::store::Store;

struct Peer {
    role: Role,
    name: String,
    addr: SocketAddr,
    since: Instant,
    consumer: Option<ConsumerStats>,
    lag: u64,
}

/// The connected peers.
pub(super) struct Peers {
    started: Instant,
    next_id: AtomicU64,
    map: Mutex<BTreeMap<u64, Peer>>,
}

/// A registered connection; unregisters when dropped.
pub(super) struct PeerGuard {
    peers: Arc<Peers>,
    id: u64,
}

impl PeerGuard {
    /// Records a consumer's latest counters.
    pub(super) fn set_consumer_stats(&self, stats: ConsumerStats) {
        if let Some(p) = self.peers.lock().get_mut(&self.id) {
            p.consumer = Some(stats);
        }
    }

    /// Records a reader's lag (records held and not yet sent to it).
    pub(super) fn set_lag(&self, lag: u64) {
        if let Some(p) = self.peers.lock().get_mut(&self.id) {
            p.lag = lag;
        }
    }
}

impl Drop for PeerGuard {
    fn drop(&mut self) {
        self.peers.lock().remove(&self.id);
    }
}

impl Peers {
    pub(super) fn new() -> Peers {
        Peers {
            started: Instant::now(),
            next_id: AtomicU64::new(0),
            map: Mutex::new(BTreeMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, Peer>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a connection that said Hello.
    pub(super) fn register(
        self: &Arc<Self>,
        role: Role,
        name: String,
        addr: SocketAddr,
    ) -> PeerGuard {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(
            id,
            Peer {
                role,
                name,
                addr,
                since: Instant::now(),
                consumer: None,
                lag: 0,
            },
        );
        PeerGuard {
            peers: self.clone(),
            id,
        }
    }

    /// The relay's state, as the frames answering `Status`: the first with
    /// the peers (in connection order) and the first page of streams, then
    /// further pages of streams, the last frame with none (see
    /// [`pages`]).
    pub(super) fn report(&self, relay: &str, store: &Store) -> Vec<StatusReport> {
        let mut full = self.report_all(relay, store);
        let streams = std::mem::take(&mut full.streams);
        let mut out = vec![full];
        for (i, page) in pages(streams, |s| s.summary.key.node.len())
            .into_iter()
            .enumerate()
        {
            if i == 0 {
                out[0].streams = page;
            } else {
                out.push(StatusReport {
                    relay: relay.to_string(),
                    uptime_ms: out[0].uptime_ms,
                    consumers: Vec::new(),
                    readers: Vec::new(),
                    streams: page,
                });
            }
        }
        out
    }

    fn report_all(&self, relay: &str, store: &Store) -> StatusReport {
        let mut consumers = Vec::new();
        let mut readers = Vec::new();
        for p in self.lock().values() {
            let s = PeerStatus {
                name: p.name.clone(),
                addr: p.addr.to_string(),
                connected_ms: p.since.elapsed().as_millis() as u64,
                consumer: p.consumer,
                lag: p.lag,
            };
            match p.role {
                Role::Consumer => consumers.push(s),
                Role::Reader => readers.push(s),
            }
        }
        let streams = store
            .streams()
            .iter()
            .map(|s| StreamStatus {
                summary: s.summary(),
                counters: s.meta().counters(),
                bytes: s.size(),
            })
            .collect();
        StatusReport {
            relay: relay.to_string(),
            uptime_ms: self.started.elapsed().as_millis() as u64,
            consumers,
            readers,
            streams,
        }
    }
}

/// Bytes of stream entries per page of a `List` or `Status` answer: far
/// below any frame limit a relay accepts ([`blkkin::wire::MIN_MAX_FRAME`]).
pub(super) const PAGE_BYTES: usize = 256 << 10;

/// Splits `items` into pages of about [`PAGE_BYTES`] (`var_len` is an
/// item's variable size; 192 bytes are added for its fixed part), always
/// ending with an empty page: a reader takes pages until an empty one, so
/// any number of streams fits in frames of bounded size.
pub(super) fn pages<T>(items: Vec<T>, var_len: impl Fn(&T) -> usize) -> Vec<Vec<T>> {
    let mut out = Vec::new();
    let mut page = Vec::new();
    let mut bytes = 0;
    for it in items {
        bytes += var_len(&it) + 192;
        page.push(it);
        if bytes >= PAGE_BYTES {
            out.push(std::mem::take(&mut page));
            bytes = 0;
        }
    }
    if !page.is_empty() {
        out.push(page);
    }
    out.push(Vec::new());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_bounded_and_end_with_an_empty_one() {
        let p = pages((0..5000u32).collect(), |_| 1000);
        assert!(p.len() > 2);
        assert!(p.last().unwrap().is_empty());
        assert!(p[..p.len() - 1]
            .iter()
            .all(|x| !x.is_empty() && x.len() * 1192 <= PAGE_BYTES + 1192));
        assert_eq!(p.concat(), (0..5000).collect::<Vec<_>>());
        assert_eq!(pages(Vec::<u32>::new(), |_| 0), vec![Vec::<u32>::new()]);
    }
}

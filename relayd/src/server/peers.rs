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
            },
        );
        PeerGuard {
            peers: self.clone(),
            id,
        }
    }

    /// The relay's state: peers (in connection order) and every stream.
    pub(super) fn report(&self, relay: &str, store: &Store) -> StatusReport {
        let mut consumers = Vec::new();
        let mut readers = Vec::new();
        for p in self.lock().values() {
            let s = PeerStatus {
                name: p.name.clone(),
                addr: p.addr.to_string(),
                connected_ms: p.since.elapsed().as_millis() as u64,
                consumer: p.consumer,
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

//! What `blkkin status` shows: the consumer's own counters (sent by each
//! consumer in [`Frame::ConsumerStats`]) and the relay's report (answer to
//! [`Frame::Status`]).

use super::codec::{Dec, Enc};
use super::*;

/// A consumer daemon's counters, cumulative since it started.
///
/// The consumer never drops a record itself: when its buffer of
/// unacknowledged bytes is full it stops draining, records wait in the
/// rings, and what no longer fits there is counted by the writers
/// (`lost_full` in the stream's [`StreamCounters`]). `buffer_full` counts how
/// often that pause began.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ConsumerStats {
    /// Records read from the rings.
    pub records: u64,
    /// Records the relay acknowledged.
    pub acked: u64,
    /// Record bytes buffered, not yet acknowledged.
    pub buffered_bytes: u64,
    /// Limit of `buffered_bytes` (`--max-unacked`).
    pub buffer_limit: u64,
    /// Times draining paused because the buffer was full.
    pub buffer_full: u64,
    /// Connections made to a relay (1 + reconnects).
    pub connects: u64,
    /// Batches sent again after a reconnect.
    pub resent: u64,
    /// Rings being drained.
    pub rings: u64,
}

const CONSUMER_STATS_FIELDS: usize = 8;

impl ConsumerStats {
    fn fields(&self) -> [u64; CONSUMER_STATS_FIELDS] {
        [
            self.records,
            self.acked,
            self.buffered_bytes,
            self.buffer_limit,
            self.buffer_full,
            self.connects,
            self.resent,
            self.rings,
        ]
    }

    pub(super) fn encode(&self, e: &mut Enc) {
        for v in self.fields() {
            e.u64(v);
        }
    }

    pub(super) fn decode(d: &mut Dec) -> Result<ConsumerStats, WireError> {
        let mut v = [0u64; CONSUMER_STATS_FIELDS];
        for x in &mut v {
            *x = d.u64("consumer stats")?;
        }
        Ok(ConsumerStats {
            records: v[0],
            acked: v[1],
            buffered_bytes: v[2],
            buffer_limit: v[3],
            buffer_full: v[4],
            connects: v[5],
            resent: v[6],
            rings: v[7],
        })
    }
}

/// A connected peer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct PeerStatus {
    /// Name from its Hello (a consumer's node name).
    pub name: String,
    /// Its address.
    pub addr: String,
    /// How long it has been connected, in milliseconds.
    pub connected_ms: u64,
    /// A consumer's last [`ConsumerStats`] (None for readers, or before the first).
    pub consumer: Option<ConsumerStats>,
    /// A reader's lag: records the relay holds that it has not been sent
    /// yet, summed over its streams (0 for consumers).
    pub lag: u64,
}

/// One stream as the relay holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct StreamStatus {
    /// Key, positions, closed flag.
    #[cfg_attr(feature = "serde", serde(flatten))]
    pub summary: StreamSummary,
    /// Loss counters.
    pub counters: StreamCounters,
    /// Bytes on disk.
    pub bytes: u64,
}

/// The relay's state: answer to [`Frame::Status`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct StatusReport {
    /// The relay's name.
    pub relay: String,
    /// Milliseconds since the relay started.
    pub uptime_ms: u64,
    /// Connected consumers.
    pub consumers: Vec<PeerStatus>,
    /// Connected readers (the asking one included).
    pub readers: Vec<PeerStatus>,
    /// Every stream held.
    pub streams: Vec<StreamStatus>,
}

fn encode_peers(e: &mut Enc, peers: &[PeerStatus]) {
    e.u32(peers.len() as u32);
    for p in peers {
        e.str(&p.name);
        e.str(&p.addr);
        e.u64(p.connected_ms);
        match &p.consumer {
            None => e.u8(0),
            Some(c) => {
                e.u8(1);
                c.encode(e);
            }
        }
        e.u64(p.lag);
    }
}

fn decode_peers(d: &mut Dec) -> Result<Vec<PeerStatus>, WireError> {
    // name, addr, connected, flag, lag: at least 21 bytes each.
    let n = d.count(21, "peer count")?;
    (0..n)
        .map(|_| {
            Ok(PeerStatus {
                name: d.str("peer name")?,
                addr: d.str("peer address")?,
                connected_ms: d.u64("connected time")?,
                consumer: match d.u8("consumer stats flag")? {
                    0 => None,
                    1 => Some(ConsumerStats::decode(d)?),
                    _ => return Err(WireError::Invalid("consumer stats flag")),
                },
                lag: d.u64("reader lag")?,
            })
        })
        .collect()
}

impl StatusReport {
    pub(super) fn encode(&self, e: &mut Enc) {
        e.str(&self.relay);
        e.u64(self.uptime_ms);
        encode_peers(e, &self.consumers);
        encode_peers(e, &self.readers);
        e.u32(self.streams.len() as u32);
        for s in &self.streams {
            e.summary(&s.summary);
            e.counters(&s.counters);
            e.u64(s.bytes);
        }
    }

    pub(super) fn decode(d: &mut Dec) -> Result<StatusReport, WireError> {
        let relay = d.str("relay name")?;
        let uptime_ms = d.u64("uptime")?;
        let consumers = decode_peers(d)?;
        let readers = decode_peers(d)?;
        // summary ≥ 35, counters 96, bytes 8.
        let n = d.count(35 + 96 + 8, "stream count")?;
        let streams = (0..n)
            .map(|_| {
                Ok(StreamStatus {
                    summary: d.summary()?,
                    counters: d.counters()?,
                    bytes: d.u64("stream bytes")?,
                })
            })
            .collect::<Result<_, WireError>>()?;
        Ok(StatusReport {
            relay,
            uptime_ms,
            consumers,
            readers,
            streams,
        })
    }
}

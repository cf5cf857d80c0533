//! `blkkin-consumerd`: drains every ring of a ring directory live and streams
//! the records to a relay (docs/PROTOCOL.md), releasing ring space only for
//! records the relay acknowledged.
//!
//! One thread, blocking I/O with short timeouts: poll the [`RingSet`] (in
//! [`Release::OnAck`] mode), append each record's raw bytes to its stream's
//! batch, send batches, read acknowledgements, release ring space up to the
//! acknowledged cursor. Unacknowledged batches stay in a bounded buffer and
//! are re-sent after a reconnect (the relay drops positions it already has);
//! when the buffer is full the consumer stops draining, records wait in the
//! rings, and writers count what does not fit — memory never grows without
//! bound. A crash of the consumer loses nothing: unacknowledged records are
//! still in the rings and are read again by the next consumer.

mod conn;

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use blkkin::ring::layout::CommitWord;
use blkkin::ring::reader::{ReaderStats, WriterCounters};
use blkkin::ring::{Calibration, Cursor};
use blkkin::ringset::{Release, RingId, RingSet, RingSetOptions};
use blkkin::wire::{ConsumerStats, Frame, StreamKey};
use conn::Conn;

/// Consumer settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Ring directory to drain.
    pub ring_dir: PathBuf,
    /// Relay address (host:port).
    pub relay: String,
    /// Node name sent to the relay (default: the host name).
    pub node: String,
    /// Most bytes of records sent but not yet acknowledged.
    pub max_unacked: usize,
    /// A batch is sent at the end of a poll, or — while the rings have more
    /// records at once — when it reaches this many bytes.
    pub batch_bytes: usize,
    /// Longest wait between reconnection attempts.
    pub max_backoff: Duration,
    /// How often loss counters and the consumer's own counters are sent
    /// (when they changed).
    pub counters_every: Duration,
    /// Send a heartbeat after this long without sending anything (None: a
    /// third of the idle timeout the relay announces in its Welcome).
    pub heartbeat: Option<Duration>,
    /// TLS settings and token for the relay connection (default: plain TCP).
    pub auth: blkkin::tls::ClientAuth,
}

impl Config {
    /// Defaults for `ring_dir` and `relay`.
    pub fn new(ring_dir: PathBuf, relay: String) -> Config {
        Config {
            ring_dir,
            relay,
            node: hostname(),
            max_unacked: 64 << 20,
            batch_bytes: 1 << 20,
            max_backoff: Duration::from_secs(5),
            counters_every: Duration::from_secs(1),
            heartbeat: None,
            auth: blkkin::tls::ClientAuth::default(),
        }
    }
}

/// The host name (or "localhost").
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates
    // within it on success.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// What the consumer did, for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Records read from the rings.
    pub records: u64,
    /// Records the relay acknowledged.
    pub acked: u64,
    /// Connections made to the relay.
    pub connects: u64,
    /// Batches sent again after a reconnect.
    pub resent: u64,
    /// Times draining paused because the unacknowledged buffer was full.
    pub buffer_full: u64,
    /// Acknowledgements refused because they covered positions this
    /// consumer never sent (a relay that is broken or not ours): the
    /// connection was dropped and nothing was released.
    pub bad_acks: u64,
}

/// Refuses a ring directory that is a symbolic link or that another user
/// owns: the consumer would otherwise drain (and remove) files someone else
/// placed there for it. A directory that does not exist yet is fine (the
/// first traced process creates it, private to its user).
pub fn check_ring_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let m = match std::fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("ring directory {}", dir.display())),
    };
    anyhow::ensure!(
        !m.file_type().is_symlink(),
        "ring directory {} is a symbolic link: refusing it (give the real path)",
        dir.display()
    );
    anyhow::ensure!(
        m.is_dir(),
        "ring directory {} is not a directory",
        dir.display()
    );
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    anyhow::ensure!(
        m.uid() == me,
        "ring directory {} belongs to uid {}, not to this consumer (uid {me}): refusing it",
        dir.display(),
        m.uid()
    );
    Ok(())
}

/// First wait before reconnecting; doubled after every failure up to
/// [`Config::max_backoff`], reset when the relay acknowledges something.
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);

/// Most record bytes sent in one `Records` frame: under the relay's default
/// frame limit of 4 MiB, and above the usual batch (1 MiB plus one poll),
/// which therefore goes out without a copy.
pub const FRAME_CHUNK: usize = blkkin::wire::MAX_RECORDS_BYTES;

/// Splits back-to-back ring records (as drained: well framed) into runs of
/// at most `max` bytes (or one record, if larger), each with the number of
/// records before it.
fn record_chunks(bytes: &[u8], max: usize) -> impl Iterator<Item = (u64, &[u8])> {
    let mut at = 0;
    let mut before = 0u64;
    std::iter::from_fn(move || {
        let start = at;
        let first = before;
        while at + 8 <= bytes.len() {
            let w = u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
            let len = CommitWord::decode(w).len as usize;
            if len == 0 || at + len > bytes.len() || (at > start && at + len - start > max) {
                break;
            }
            at += len;
            before += 1;
        }
        (at > start).then(|| (first, &bytes[start..at]))
    })
}

struct Batch {
    first: u64,
    end: u64,
    bytes: Vec<u8>,
    cursor: Cursor,
    /// Sent on the current connection.
    sent: bool,
}

struct Stream {
    handle: u32,
    key: StreamKey,
    calibration: Calibration,
    pending: Vec<u8>,
    pending_first: u64,
    pending_end: u64,
    unacked: VecDeque<Batch>,
    sent_calibration: Option<Calibration>,
    /// Opened on the current connection.
    opened: bool,
    /// Latest loss counters of the ring.
    counters: (ReaderStats, WriterCounters),
    /// Counters last sent on the current connection.
    sent_counters: Option<(ReaderStats, WriterCounters)>,
    /// Gone from the ring set: close once everything is acknowledged.
    finished: bool,
    /// The relay answered this connection's `OpenStream`.
    open_acked: bool,
    /// The most an acknowledgement may cover on this connection: the end of
    /// what was sent, or what the relay said it held when the stream was
    /// opened (records of an earlier run of this consumer).
    ack_bound: u64,
}

/// The consumer's state across polls and reconnects.
pub struct Consumer {
    cfg: Config,
    rings: RingSet,
    streams: BTreeMap<RingId, Stream>,
    next_handle: u32,
    conn: Option<Conn>,
    backoff: Duration,
    next_attempt: Instant,
    last_counters: Instant,
    stats: Stats,
    /// Draining is paused (buffer full).
    paused: bool,
    /// Consumer counters last sent on this connection.
    sent_stats: Option<ConsumerStats>,
    /// Emptied batch buffers (acknowledged), reused for new batches.
    spare: Vec<Vec<u8>>,
}

/// Batch buffers kept for reuse: a fresh large buffer costs page faults and
/// zeroing on every batch. At most this many, each of at most
/// [`SPARE_MAX_CAPACITY`] bytes, so the pool stays small.
const SPARE_BUFFERS: usize = 16;
/// Largest buffer kept for reuse (a full batch plus one poll's records fits).
const SPARE_MAX_CAPACITY: usize = 2 << 20;

impl Consumer {
    /// A consumer of `cfg.ring_dir`; it connects lazily.
    pub fn new(cfg: Config) -> Consumer {
        let rings = RingSet::new(
            cfg.ring_dir.clone(),
            RingSetOptions {
                release: Release::OnAck,
                // Looking up every writer in /proc 4 times a second was a
                // fifth of an idle consumer's CPU with 100 traced
                // processes; an exited writer's rings are still drained
                // and removed, up to a second later.
                liveness_interval: Duration::from_secs(1),
                ..Default::default()
            },
        );
        Consumer {
            cfg,
            rings,
            streams: BTreeMap::new(),
            next_handle: 1,
            conn: None,
            backoff: INITIAL_BACKOFF,
            next_attempt: Instant::now(),
            last_counters: Instant::now(),
            stats: Stats::default(),
            paused: false,
            sent_stats: None,
            spare: Vec::new(),
        }
    }

    /// What it did so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The counters reported to the relay (and shown by `blkkin status`).
    pub fn consumer_stats(&self) -> ConsumerStats {
        ConsumerStats {
            records: self.stats.records,
            acked: self.stats.acked,
            buffered_bytes: self.unacked_bytes() as u64,
            buffer_limit: self.cfg.max_unacked as u64,
            buffer_full: self.stats.buffer_full,
            connects: self.stats.connects,
            resent: self.stats.resent,
            rings: self.rings.rings_open() as u64,
        }
    }

    fn unacked_bytes(&self) -> usize {
        self.streams
            .values()
            .map(|s| s.unacked.iter().map(|b| b.bytes.len()).sum::<usize>() + s.pending.len())
            .sum()
    }

    /// Runs until `stop` is set, then drains what the rings hold, sends it
    /// and waits (up to `drain_timeout`) until everything is acknowledged
    /// and the rings of exited writers are removed. Records still
    /// unacknowledged at the deadline stay in the rings for the next consumer.
    pub fn run(&mut self, stop: &AtomicBool, drain_timeout: Duration) -> anyhow::Result<Stats> {
        check_ring_dir(&self.cfg.ring_dir)?;
        while !stop.load(Ordering::Relaxed) {
            let delay = self.step()?;
            if !delay.is_zero() {
                std::thread::sleep(delay);
            }
        }
        let deadline = Instant::now() + drain_timeout;
        // Done after two quiet rounds in a row: nothing new read and nothing
        // unacknowledged (the second poll removes rings released by the first).
        let mut quiet = 0;
        while Instant::now() < deadline && quiet < 2 {
            let before = self.stats.records;
            self.step()?;
            if self.stats.records == before && self.unacked_bytes() == 0 {
                quiet += 1;
            } else {
                quiet = 0;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(self.stats)
    }

    /// One round: connect if needed, drain, send, read acks. Returns how long
    /// to wait before the next round.
    pub fn step(&mut self) -> anyhow::Result<Duration> {
        if self.conn.is_none() && Instant::now() >= self.next_attempt {
            self.connect();
        }
        let mut last = None;
        let full = self.unacked_bytes() >= self.cfg.max_unacked;
        if full && !self.paused {
            self.stats.buffer_full += 1;
            tracing::warn!(
                limit = self.cfg.max_unacked,
                "unacknowledged buffer full: draining paused, records wait in the rings"
            );
        }
        self.paused = full;
        if !full {
            let streams = &mut self.streams;
            let next_handle = &mut self.next_handle;
            let node = &self.cfg.node;
            let mut records = 0u64;
            let st = self
                .rings
                .poll(&mut |id, r, _info, cal| {
                    let s = streams.entry(*id).or_insert_with(|| {
                        let h = *next_handle;
                        *next_handle += 1;
                        Stream {
                            handle: h,
                            key: StreamKey {
                                node: node.clone(),
                                pid: id.pid,
                                start_time: id.start_time,
                                cpu: id.cpu,
                            },
                            calibration: cal.copied().unwrap_or_default(),
                            pending: Vec::new(),
                            pending_first: r.position,
                            pending_end: r.position,
                            unacked: VecDeque::new(),
                            sent_calibration: None,
                            opened: false,
                            counters: Default::default(),
                            sent_counters: None,
                            finished: false,
                            open_acked: false,
                            ack_bound: 0,
                        }
                    });
                    if let Some(c) = cal {
                        s.calibration = *c;
                    }
                    if s.pending.is_empty() {
                        s.pending_first = r.position;
                    }
                    s.pending.extend_from_slice(r.raw);
                    s.pending_end = r.position + 1;
                    records += 1;
                })
                .context("polling the ring directory")?;
            self.stats.records += records;
            for e in self.rings.take_errors() {
                tracing::warn!("{e}");
            }
            // Seal pending records into batches, with the ring cursor that
            // covers them — unless the rings have more right now and the
            // batch is not full: the next poll follows at once and adds to
            // it, so the relay syncs and acknowledges fewer, larger batches.
            for (id, s) in self.streams.iter_mut() {
                if s.pending.is_empty() || (st.more && s.pending.len() < self.cfg.batch_bytes) {
                    continue;
                }
                let Some(cursor) = self.rings.cursor(id) else {
                    continue;
                };
                let fresh = self.spare.pop().unwrap_or_default();
                let bytes = std::mem::replace(&mut s.pending, fresh);
                s.unacked.push_back(Batch {
                    first: s.pending_first,
                    end: s.pending_end,
                    bytes,
                    cursor,
                    sent: false,
                });
            }
            last = Some(st);
        }
        self.send_all();
        self.read_acks();
        self.release_stepped_over();
        self.close_finished();
        if self.last_counters.elapsed() >= self.cfg.counters_every {
            self.send_counters();
            self.send_consumer_stats();
            self.last_counters = Instant::now();
        }
        if let Some(Err(e)) = self.conn.as_mut().map(Conn::keep_alive) {
            self.drop_conn(&e);
        }
        Ok(match last {
            Some(st) => self.rings.next_delay(&st),
            None => Duration::from_millis(10), // buffer full: wait for acks
        })
    }

    fn connect(&mut self) {
        match Conn::open(
            &self.cfg.relay,
            &self.cfg.node,
            self.cfg.heartbeat,
            &self.cfg.auth,
        ) {
            Ok(conn) => {
                self.conn = Some(conn);
                self.stats.connects += 1;
                self.sent_stats = None;
                tracing::info!(relay = %self.cfg.relay, connects = self.stats.connects, "connected to the relay");
                // The backoff is reset by progress (an acknowledgement), not
                // by connecting: a relay that accepts connections but fails
                // every write (a full disk) is retried ever more slowly.
                // Everything unacknowledged goes again (the relay skips what it has).
                for s in self.streams.values_mut() {
                    s.opened = false;
                    s.sent_calibration = None;
                    s.sent_counters = None;
                    for b in s.unacked.iter_mut().filter(|b| b.sent) {
                        b.sent = false;
                        self.stats.resent += 1;
                    }
                }
            }
            Err(e) => {
                tracing::warn!(
                    relay = %self.cfg.relay,
                    retry_in = ?self.backoff,
                    "cannot reach the relay: {e:#}"
                );
                self.next_attempt = Instant::now() + self.backoff;
                self.backoff = (self.backoff * 2).min(self.cfg.max_backoff);
            }
        }
    }
}

impl Consumer {
    fn drop_conn(&mut self, why: &dyn std::fmt::Display) {
        if self.conn.take().is_some() {
            tracing::warn!(relay = %self.cfg.relay, retry_in = ?self.backoff, "lost the relay connection: {why}; reconnecting");
            self.next_attempt = Instant::now() + self.backoff;
            self.backoff = (self.backoff * 2).min(self.cfg.max_backoff);
        }
    }

    /// Sends stream openings, calibrations and unsent batches.
    fn send_all(&mut self) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let mut result = Ok(());
        'streams: for s in self.streams.values_mut() {
            if !s.opened {
                result = conn.send(&Frame::OpenStream {
                    handle: s.handle,
                    key: s.key.clone(),
                    calibration: s.calibration,
                });
                if result.is_err() {
                    break;
                }
                s.opened = true;
                s.open_acked = false;
                s.ack_bound = 0;
                s.sent_calibration = Some(s.calibration);
            }
            if s.sent_calibration != Some(s.calibration) {
                result = conn.send(&Frame::Calibrate {
                    handle: s.handle,
                    calibration: s.calibration,
                });
                if result.is_err() {
                    break;
                }
                s.sent_calibration = Some(s.calibration);
            }
            for b in s.unacked.iter_mut().filter(|b| !b.sent) {
                result = if b.bytes.len() <= FRAME_CHUNK {
                    // The batch's bytes are lent to the frame, not copied.
                    let frame = Frame::Records {
                        handle: s.handle,
                        first: b.first,
                        records: std::mem::take(&mut b.bytes),
                    };
                    let r = conn.send(&frame);
                    if let Frame::Records { records, .. } = frame {
                        b.bytes = records;
                    }
                    r
                } else {
                    // A poll can add up to a ring's batch limit of records of
                    // up to the ring's record limit: more than one frame may
                    // carry. Sent as several frames (copied: rare).
                    record_chunks(&b.bytes, FRAME_CHUNK).try_for_each(|(before, chunk)| {
                        conn.send(&Frame::Records {
                            handle: s.handle,
                            first: b.first + before,
                            records: chunk.to_vec(),
                        })
                    })
                };
                if result.is_err() {
                    break 'streams;
                }
                b.sent = true;
                s.ack_bound = s.ack_bound.max(b.end);
            }
        }
        if let Err(e) = result {
            self.drop_conn(&e);
        }
    }

    /// Reads whatever acknowledgements arrived and releases ring space.
    fn read_acks(&mut self) {
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return;
            };
            match conn.read_frame() {
                Ok(None) => return,
                Ok(Some(Frame::Ack { handle, next })) => {
                    let Some((id, s)) = self.streams.iter_mut().find(|(_, s)| s.handle == handle)
                    else {
                        continue;
                    };
                    if !s.open_acked {
                        // The answer to OpenStream: what the relay holds.
                        s.open_acked = true;
                        s.ack_bound = s.ack_bound.max(next);
                    } else if next > s.ack_bound {
                        // Releasing on it would drop records the relay never got.
                        self.stats.bad_acks += 1;
                        let why = format!(
                            "relay acknowledged position {next} of stream {:?}, beyond what was sent ({})",
                            s.key, s.ack_bound
                        );
                        self.drop_conn(&why);
                        return;
                    }
                    let mut release = None;
                    while s.unacked.front().is_some_and(|b| b.end <= next) {
                        let mut b = s.unacked.pop_front().expect("checked");
                        self.stats.acked += b.end - b.first;
                        release = Some(b.cursor);
                        if self.spare.len() < SPARE_BUFFERS
                            && b.bytes.capacity() <= SPARE_MAX_CAPACITY
                        {
                            b.bytes.clear();
                            self.spare.push(b.bytes);
                        }
                    }
                    if let Some(c) = release {
                        self.rings.release_to(id, c);
                        self.backoff = INITIAL_BACKOFF;
                    }
                }
                Ok(Some(Frame::Error { message, .. })) => {
                    self.drop_conn(&format!("relay error: {message}"));
                    return;
                }
                Ok(Some(other)) => {
                    self.drop_conn(&format!("unexpected frame from the relay: {other:?}"));
                    return;
                }
                Err(e) => {
                    self.drop_conn(&e);
                    return;
                }
            }
        }
    }

    /// Frees the ring space of records the reader stepped over (torn by a
    /// killed writer, corrupt) after the last record it delivered, once
    /// everything delivered is acknowledged: no acknowledgement covers
    /// them, and a ring that is never all released is never finished (its
    /// stream would never close).
    fn release_stepped_over(&mut self) {
        for (id, s) in &self.streams {
            if s.pending.is_empty() && s.unacked.is_empty() {
                if let Some(cursor) = self.rings.cursor(id) {
                    self.rings.release_to(id, cursor);
                }
            }
        }
    }

    /// Streams whose rings the set forgot (writer exited, all released) are
    /// closed at the relay and dropped.
    fn close_finished(&mut self) {
        let mut open = std::collections::BTreeSet::new();
        for (id, reader, writer) in self.rings.counters() {
            open.insert(id);
            // Kept: a ring's last counters are sent after the ring is gone.
            if let Some(s) = self.streams.get_mut(&id) {
                s.counters = (reader, writer);
            }
        }
        for (id, s) in self.streams.iter_mut() {
            if !open.contains(id) && s.unacked.is_empty() && s.pending.is_empty() {
                s.finished = true;
            }
        }
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let mut failed = None;
        self.streams.retain(|_, s| {
            if !s.finished || !s.opened || failed.is_some() {
                return true;
            }
            // The final counters (torn records of a killed writer are counted
            // in its last drain), then the close.
            match send_counters(conn, s)
                .and_then(|()| conn.send(&Frame::CloseStream { handle: s.handle }))
            {
                Ok(()) => false,
                Err(e) => {
                    failed = Some(e);
                    true
                }
            }
        });
        if let Some(e) = failed {
            self.drop_conn(&e);
        }
    }

    /// Sends the consumer's own counters when they changed.
    fn send_consumer_stats(&mut self) {
        let st = self.consumer_stats();
        if self.sent_stats == Some(st) {
            return;
        }
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        match conn.send(&Frame::ConsumerStats(st)) {
            Ok(()) => self.sent_stats = Some(st),
            Err(e) => self.drop_conn(&e),
        }
    }

    /// Sends the loss counters of every open stream whose counters changed.
    fn send_counters(&mut self) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let mut failed = None;
        for s in self.streams.values_mut().filter(|s| s.opened) {
            if let Err(e) = send_counters(conn, s) {
                failed = Some(e);
                break;
            }
        }
        if let Some(e) = failed {
            self.drop_conn(&e);
        }
    }
}

/// Sends a stream's loss counters if they changed since last sent.
fn send_counters(conn: &mut Conn, s: &mut Stream) -> std::io::Result<()> {
    if s.sent_counters == Some(s.counters) {
        return Ok(());
    }
    conn.send(&Frame::Counters {
        handle: s.handle,
        reader: s.counters.0,
        writer: s.counters.1,
    })?;
    s.sent_counters = Some(s.counters);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fake records: a word with the length where a commit word has it, then filler.
    fn recs(lens: &[usize]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, &len) in lens.iter().enumerate() {
            let at = out.len();
            out.resize(at + len, i as u8);
            let w = (len as u64) << 8; // the length field of a commit word
            out[at..at + 8].copy_from_slice(&w.to_le_bytes());
        }
        out
    }

    #[test]
    fn chunks_keep_records_whole_and_count_them() {
        let bytes = recs(&[64, 64, 128, 4096, 64, 64]);
        let got: Vec<(u64, usize)> = record_chunks(&bytes, 200)
            .map(|(before, c)| (before, c.len()))
            .collect();
        // 64+64 fits, +128 would not; a record larger than the limit goes alone.
        assert_eq!(got, [(0, 128), (2, 128), (3, 4096), (4, 128)]);
        let total: usize = got.iter().map(|(_, n)| n).sum();
        assert_eq!(total, bytes.len());
        assert_eq!(record_chunks(&[], 200).count(), 0);
    }
}

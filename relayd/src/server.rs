//! Connections: one port, the role comes from `Hello`.
//!
//! * Consumer: `OpenStream` (answered with `Ack{next}` so the consumer knows
//!   where the relay stands), `Records` (persisted, duplicates skipped, gaps
//!   counted as lost, answered with `Ack{next}`), `Counters`, `Calibrate`,
//!   `CloseStream`.
//! * Reader: `List` → `Streams`; `Subscribe` → `Announce` per stream, then
//!   `Records` read from the store at the reader's own pace and pushed as
//!   new records are persisted.
//!
//! Every connection has its own task; a malformed frame, a frame not allowed
//! for the role, an idle connection or a partial frame older than the frame
//! timeout (slow-loris) closes only that connection.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use blkkin::wire::{self, ErrorCode, Frame, FrameBuffer, Role, Start, StreamKey, WireError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::config::Config;
use crate::store::{Store, Stream};

/// Bytes of records read from the store for one reader at a time.
const READ_BATCH: usize = 256 << 10;
/// How long shutdown waits for connections to finish before aborting them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// A bound relay, ready to [`Server::run`].
pub struct Server {
    listener: TcpListener,
    store: Arc<Store>,
    cfg: Arc<Config>,
}

impl Server {
    /// Opens the store (recovering every stream) and binds the listening socket.
    pub async fn bind(cfg: Config) -> anyhow::Result<Server> {
        let store_cfg = cfg.store.clone();
        let store = tokio::task::spawn_blocking(move || Store::open(store_cfg))
            .await
            .context("store recovery task failed")??;
        let listener = TcpListener::bind(cfg.listen)
            .await
            .with_context(|| format!("cannot listen on {}", cfg.listen))?;
        Ok(Server {
            listener,
            store: Arc::new(store),
            cfg: Arc::new(cfg),
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("bound socket has an address")
    }

    /// The store.
    pub fn store(&self) -> Arc<Store> {
        self.store.clone()
    }

    /// Serves until `shutdown` completes, then stops accepting, closes the
    /// connections (waiting up to 3 s for them) and fsyncs the store.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut conns = JoinSet::new();
        tokio::pin!(shutdown);
        tracing::info!(addr = %self.local_addr(), "listening");
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
                r = self.listener.accept() => match r {
                    Ok((sock, peer)) => {
                        let store = self.store.clone();
                        let cfg = self.cfg.clone();
                        let stop = stop_rx.clone();
                        conns.spawn(async move {
                            sock.set_nodelay(true).ok();
                            tracing::debug!(%peer, "connection");
                            let reason = handle(sock, store, cfg, stop).await;
                            tracing::info!(%peer, "connection closed: {reason}");
                        });
                    }
                    Err(e) => {
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }
        tracing::info!("shutting down: closing {} connection(s)", conns.len());
        drop(self.listener);
        stop_tx.send(true).ok();
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while conns.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("connections still open after {SHUTDOWN_GRACE:?}: aborting them");
            conns.shutdown().await;
        }
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.sync_all())
            .await
            .context("sync task failed")?
            .context("final fsync")?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
enum Close {
    #[error("peer closed")]
    Eof,
    #[error("peer closed in the middle of a frame")]
    Truncated,
    #[error("{0}")]
    Timeout(String),
    #[error("malformed frame: {0}")]
    Wire(#[from] WireError),
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    #[error("server shutting down")]
    Shutdown,
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("store error: {0:#}")]
    Store(anyhow::Error),
}

/// Reads frames with idle and slow-loris timeouts. Cancel-safe: dropping a
/// pending [`FrameReader::next`] loses no bytes.
struct FrameReader {
    sock: OwnedReadHalf,
    fb: FrameBuffer,
    buf: Vec<u8>,
    last_rx: Instant,
    last_read: Instant,
    partial_since: Option<Instant>,
    idle_timeout: Duration,
    frame_timeout: Duration,
}

impl FrameReader {
    fn new(sock: OwnedReadHalf, cfg: &Config) -> FrameReader {
        let now = Instant::now();
        FrameReader {
            sock,
            fb: FrameBuffer::new(cfg.max_frame),
            buf: vec![0; 64 << 10],
            last_rx: now,
            last_read: now,
            partial_since: None,
            idle_timeout: cfg.idle_timeout,
            frame_timeout: cfg.frame_timeout,
        }
    }

    /// The next frame; with `idle`, a peer silent for the idle timeout is an error.
    async fn next(&mut self, idle: bool) -> Result<Frame, Close> {
        loop {
            let got = self.fb.next_frame();
            self.partial_since = if self.fb.is_empty() {
                None
            } else {
                Some(self.partial_since.unwrap_or(self.last_read))
            };
            if let Some(f) = got? {
                if !self.fb.is_empty() {
                    // The rest arrived with the last read.
                    self.partial_since = Some(self.last_read);
                }
                return Ok(f);
            }
            let partial = self.partial_since.map(|p| p + self.frame_timeout);
            let idle_at = idle.then(|| self.last_rx + self.idle_timeout);
            let deadline = match (partial, idle_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let read = self.sock.read(&mut self.buf);
            let n = match deadline {
                None => read.await?,
                Some(d) => match tokio::time::timeout_at(d, read).await {
                    Ok(r) => r?,
                    Err(_) if partial == Some(d) => {
                        return Err(Close::Timeout(format!(
                            "partial frame ({} bytes) not completed within {:?} (slow sender)",
                            self.fb.len(),
                            self.frame_timeout
                        )))
                    }
                    Err(_) => {
                        return Err(Close::Timeout(format!("idle for {:?}", self.idle_timeout)))
                    }
                },
            };
            if n == 0 {
                return Err(if self.fb.is_empty() {
                    Close::Eof
                } else {
                    Close::Truncated
                });
            }
            let now = Instant::now();
            self.last_rx = now;
            self.last_read = now;
            if self.fb.is_empty() {
                self.partial_since = Some(now);
            }
            self.fb.extend(&self.buf[..n]);
        }
    }
}

async fn send(w: &mut OwnedWriteHalf, frames: &[Frame]) -> Result<(), Close> {
    let mut bytes = Vec::new();
    for f in frames {
        f.encode(&mut bytes);
    }
    w.write_all(&bytes).await?;
    Ok(())
}

/// Sends an `Error` frame (best effort, bounded in time) after a fatal problem.
async fn send_error(w: &mut OwnedWriteHalf, code: ErrorCode, message: String) {
    let f = Frame::Error { code, message };
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = send(w, &[f]).await;
        let _ = w.shutdown().await;
    })
    .await;
}

async fn handle(
    sock: TcpStream,
    store: Arc<Store>,
    cfg: Arc<Config>,
    stop: watch::Receiver<bool>,
) -> Close {
    let (r, mut w) = sock.into_split();
    let mut rx = FrameReader::new(r, &cfg);
    let reason = session(&mut rx, &mut w, &store, &cfg, stop).await;
    let reply = match &reason {
        Close::Wire(e) => Some((ErrorCode::Malformed, e.to_string())),
        Close::Truncated => Some((ErrorCode::Malformed, "truncated frame".to_string())),
        Close::Timeout(m) => Some((ErrorCode::Unexpected, m.clone())),
        Close::Protocol(m) => Some((ErrorCode::Unexpected, m.clone())),
        Close::Shutdown => Some((ErrorCode::Unavailable, "relay shutting down".to_string())),
        Close::Store(e) => Some((ErrorCode::Unavailable, format!("{e:#}"))),
        Close::Eof | Close::Io(_) => None,
    };
    if let Some((code, message)) = reply {
        send_error(&mut w, code, message).await;
    }
    reason
}

async fn session(
    rx: &mut FrameReader,
    w: &mut OwnedWriteHalf,
    store: &Arc<Store>,
    cfg: &Config,
    mut stop: watch::Receiver<bool>,
) -> Close {
    let hello = tokio::select! {
        f = rx.next(true) => f,
        _ = stop.wait_for(|s| *s) => return Close::Shutdown,
    };
    let (role, name) = match hello {
        Err(c) => return c,
        Ok(Frame::Hello {
            version,
            role,
            name,
        }) => {
            if version != wire::VERSION {
                send_error(
                    w,
                    ErrorCode::Version,
                    format!(
                        "protocol version {version} not supported (this relay speaks {})",
                        wire::VERSION
                    ),
                )
                .await;
                return Close::Protocol(format!("unsupported version {version}"));
            }
            (role, name)
        }
        Ok(other) => return Close::Protocol(format!("expected Hello, got {}", frame_name(&other))),
    };
    tracing::info!(?role, %name, "hello");
    let welcome = Frame::Welcome {
        version: wire::VERSION,
        name: cfg.name.clone(),
    };
    if let Err(c) = send(w, &[welcome]).await {
        return c;
    }
    let r = match role {
        Role::Consumer => consumer(rx, w, store, stop).await,
        Role::Reader => reader(rx, w, store, stop).await,
    };
    match r {
        Ok(()) => Close::Eof,
        Err(c) => c,
    }
}

fn frame_name(f: &Frame) -> &'static str {
    match f {
        Frame::Hello { .. } => "Hello",
        Frame::Welcome { .. } => "Welcome",
        Frame::Error { .. } => "Error",
        Frame::OpenStream { .. } => "OpenStream",
        Frame::Records { .. } => "Records",
        Frame::Counters { .. } => "Counters",
        Frame::Calibrate { .. } => "Calibrate",
        Frame::CloseStream { .. } => "CloseStream",
        Frame::Ack { .. } => "Ack",
        Frame::List => "List",
        Frame::Streams(_) => "Streams",
        Frame::Subscribe { .. } => "Subscribe",
        Frame::Announce { .. } => "Announce",
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> Result<T, Close> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(Close::Store),
        Err(e) => Err(Close::Store(anyhow::anyhow!("store task failed: {e}"))),
    }
}

async fn consumer(
    rx: &mut FrameReader,
    w: &mut OwnedWriteHalf,
    store: &Arc<Store>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), Close> {
    let mut handles: HashMap<u32, Arc<Stream>> = HashMap::new();
    loop {
        let f = tokio::select! {
            f = rx.next(true) => f,
            _ = stop.wait_for(|s| *s) => return Err(Close::Shutdown),
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
                let st = store.clone();
                let k = key.clone();
                let s = blocking(move || st.open_stream(&k, calibration)).await?;
                tracing::info!(handle, ?key, next = s.next(), "stream opened");
                let next = s.next();
                handles.insert(handle, s);
                send(w, &[Frame::Ack { handle, next }]).await?;
            }
            Frame::Records {
                handle,
                first,
                records,
            } => {
                let s = stream(&handle)?;
                let s2 = s.clone();
                let a = blocking(move || s2.append(first, &records)).await?;
                if a.written > 0 {
                    store.notify();
                }
                if a.gap > 0 {
                    tracing::warn!(key = ?s.key(), lost = a.gap, at = a.next - a.written, "gap in positions: records lost upstream");
                }
                if a.duplicates > 0 {
                    tracing::debug!(key = ?s.key(), duplicates = a.duplicates, "skipped records already held");
                }
                send(
                    w,
                    &[Frame::Ack {
                        handle,
                        next: a.next,
                    }],
                )
                .await?;
            }
            Frame::Counters {
                handle,
                reader,
                writer,
            } => {
                let s = stream(&handle)?;
                blocking(move || {
                    s.update_meta(|m| {
                        m.reader = reader;
                        m.writer = writer;
                    })
                })
                .await?;
            }
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
                blocking(move || s.update_meta(|m| m.closed = true)).await?;
                handles.remove(&handle);
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

/// One stream a reader receives.
struct Sub {
    handle: u32,
    stream: Arc<Stream>,
    cursor: u64,
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

async fn reader(
    rx: &mut FrameReader,
    w: &mut OwnedWriteHalf,
    store: &Arc<Store>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), Close> {
    let mut subs: Vec<Sub> = Vec::new();
    let mut selectors: Vec<Selector> = Vec::new();
    let mut changes = store.watch();
    let mut next_handle = 1u32;
    loop {
        changes.borrow_and_update();
        // New streams matching a selector (streams existing at Subscribe time
        // were added then, with the requested start; later ones from their start).
        if !selectors.is_empty() {
            for s in store.streams() {
                if subs.iter().any(|x| x.stream.key() == s.key()) {
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
                    announce(w, &mut subs, &mut next_handle, s, cursor).await?;
                }
            }
        }
        // One batch per stream per round, so streams share the reader fairly.
        let mut progressed = false;
        for sub in &mut subs {
            if sub.cursor >= sub.stream.next() {
                continue;
            }
            progressed |= push(w, sub).await?;
        }
        let f = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return Err(Close::Shutdown),
            f = rx.next(subs.is_empty()) => f,
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
                send(w, &[Frame::Streams(list)]).await?;
            }
            Frame::Subscribe { key, start } => {
                tracing::info!(?key, ?start, "subscribe");
                let now: Vec<Arc<Stream>> = match &key {
                    None => store.streams(),
                    Some(k) => store.get(k).into_iter().collect(),
                };
                for s in now {
                    if subs.iter().any(|x| x.stream.key() == s.key()) {
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
    w: &mut OwnedWriteHalf,
    subs: &mut Vec<Sub>,
    next_handle: &mut u32,
    stream: Arc<Stream>,
    cursor: u64,
) -> Result<(), Close> {
    let handle = *next_handle;
    *next_handle += 1;
    let f = Frame::Announce {
        handle,
        key: stream.key().clone(),
        calibration: stream.meta().calibration,
    };
    send(w, &[f]).await?;
    subs.push(Sub {
        handle,
        stream,
        cursor,
    });
    Ok(())
}

/// Reads one batch for `sub` from the store and sends it; false if nothing was read.
async fn push(w: &mut OwnedWriteHalf, sub: &mut Sub) -> Result<bool, Close> {
    let s = sub.stream.clone();
    let from = sub.cursor;
    let entries = blocking(move || s.read(from, READ_BATCH)).await?;
    let Some(last) = entries.last().map(|e| e.0) else {
        // Nothing at or after the cursor (retention removed it): skip ahead.
        let first = sub.stream.first();
        sub.cursor = if first > sub.cursor {
            first
        } else {
            sub.stream.next()
        };
        return Ok(false);
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

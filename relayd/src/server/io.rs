//! Connection plumbing: why a connection ends, a frame reader with idle and
//! slow-loris timeouts, and sending frames.

use std::io;
use std::time::Duration;

use blkkin::wire::{ErrorCode, Frame, FrameBuffer, WireError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::time::Instant;

use crate::config::Config;

/// The receiving half of a connection.
pub(super) enum Rx {
    /// Plain TCP.
    Tcp(OwnedReadHalf),
    /// TLS (the read half of the split stream).
    Tls(tokio::io::ReadHalf<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>),
}

impl Rx {
    /// Reads what is here without waiting (`WouldBlock` if nothing).
    ///
    /// TCP: `try_read`, one `recv` whenever the socket may hold data (no
    /// task budget involved). TLS: the read is polled once with a waker that
    /// does nothing, inside `unconstrained` so the task's budget cannot make
    /// it return early; dropping a pending read loses no bytes (tokio-rustls
    /// reads are cancel-safe), and the next awaited read registers a real
    /// waker.
    fn read_now(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Rx::Tcp(s) => s.try_read(buf),
            Rx::Tls(s) => {
                use std::future::Future;
                use std::task::{Context, Poll, Waker};
                let read = tokio::task::coop::unconstrained(s.read(buf));
                let mut read = std::pin::pin!(read);
                match read.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
                    Poll::Ready(r) => r,
                    Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
                }
            }
        }
    }
}

impl AsyncRead for Rx {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        match self.get_mut() {
            Rx::Tcp(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            Rx::Tls(s) => std::pin::Pin::new(s).poll_read(cx, buf),
        }
    }
}

/// The sending half of a connection (plain TCP or TLS).
pub(super) type Tx = Box<dyn AsyncWrite + Send + Unpin>;

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
pub(super) enum Close {
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
    #[error("TLS: {0}")]
    Tls(String),
    #[error("denied: {0}")]
    Denied(String),
}

/// Largest frame accepted before a peer said Hello (a Hello is a few dozen
/// bytes): what a peer that never introduces itself can make the relay
/// buffer.
pub(super) const HELLO_MAX_FRAME: u32 = 4096;

/// Longest name a Hello may carry.
pub(super) const MAX_PEER_NAME: usize = 255;

/// A peer that does not take a frame the relay sends within this long is
/// disconnected: the relay's memory is not held hostage by a reader that
/// stopped reading.
pub(super) const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Reads frames with idle and slow-loris timeouts. Cancel-safe: dropping a
/// pending [`FrameReader::next`] loses no bytes.
pub(super) struct FrameReader {
    sock: Rx,
    fb: FrameBuffer,
    buf: Vec<u8>,
    max_frame: u32,
    last_rx: Instant,
    last_read: Instant,
    partial_since: Option<Instant>,
    idle_timeout: Duration,
    frame_timeout: Duration,
}

impl FrameReader {
    pub(super) fn new(sock: Rx, cfg: &Config) -> FrameReader {
        let now = Instant::now();
        FrameReader {
            sock,
            fb: FrameBuffer::new(HELLO_MAX_FRAME),
            buf: vec![0; HELLO_MAX_FRAME as usize],
            max_frame: cfg.max_frame,
            last_rx: now,
            last_read: now,
            partial_since: None,
            idle_timeout: cfg.idle_timeout,
            frame_timeout: cfg.frame_timeout,
        }
    }

    /// The peer said Hello: from now on frames up to the configured limit.
    pub(super) fn greeted(&mut self) {
        self.fb.set_max_frame(self.max_frame);
        self.buf = vec![0; 64 << 10];
    }

    /// The next frame; with `idle`, a peer silent for the idle timeout is an error.
    pub(super) async fn next(&mut self, idle: bool) -> Result<Frame, Close> {
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

impl FrameReader {
    /// A frame that is already here — buffered, or readable from the socket
    /// without waiting — or `None`. Lets a session handle frames that
    /// arrived together as one group (the relay syncs them once).
    pub(super) fn try_next(&mut self) -> Result<Option<Frame>, Close> {
        loop {
            if let Some(f) = self.fb.next_frame()? {
                self.partial_since = (!self.fb.is_empty()).then_some(self.last_read);
                return Ok(Some(f));
            }
            match self.sock.read_now(&mut self.buf) {
                Ok(0) => return Ok(None), // EOF: the next `next` reports it
                Ok(n) => {
                    let now = Instant::now();
                    if self.fb.is_empty() {
                        self.partial_since = Some(now);
                    }
                    self.last_rx = now;
                    self.last_read = now;
                    self.fb.extend(&self.buf[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

pub(super) async fn send(w: &mut Tx, frames: &[Frame]) -> Result<(), Close> {
    let mut bytes = Vec::new();
    for f in frames {
        f.encode(&mut bytes);
    }
    match tokio::time::timeout(WRITE_TIMEOUT, w.write_all(&bytes)).await {
        Ok(r) => r?,
        Err(_) => {
            return Err(Close::Timeout(format!(
                "the peer took no data for {WRITE_TIMEOUT:?}"
            )))
        }
    }
    Ok(())
}

/// Sends an `Error` frame (best effort, bounded in time) after a fatal problem.
pub(super) async fn send_error(w: &mut Tx, code: ErrorCode, message: String) {
    let f = Frame::Error { code, message };
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = send(w, &[f]).await;
        let _ = w.shutdown().await;
    })
    .await;
}

pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> Result<T, Close> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(Close::Store),
        Err(e) => Err(Close::Store(anyhow::anyhow!("store task failed: {e}"))),
    }
}

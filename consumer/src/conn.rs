//! The consumer's connection to its relay: the Hello/Welcome exchange,
//! sending frames (remembering when, for heartbeats) and reading the
//! relay's answers without blocking the drain loop.
//!
//! After the handshake a small thread reads the relay's answers (blocking)
//! and hands them over a channel: the drain loop only looks at the channel,
//! so it never waits on the socket (a read timeout of 1 ms was rounded up by
//! the kernel and stalled every round of a busy drain).

use std::io::{ErrorKind, Read, Write};
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::time::{Duration, Instant};

use anyhow::Context;
use blkkin::tls::{ClientAuth, ClientStream};
use blkkin::wire::{ErrorCode, Frame, FrameBuffer, Role, DEFAULT_MAX_FRAME, VERSION};

/// Heartbeat interval when the relay has no idle timeout.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(15);

/// An open connection to the relay.
pub(crate) struct Conn {
    sock: ClientStream,
    frames: FrameBuffer,
    last_sent: Instant,
    /// Send a heartbeat after this long without sending anything.
    heartbeat_every: Duration,
    /// Encoding buffer, reused for every frame.
    out: Vec<u8>,
    /// Frames read by the reader thread (started after the handshake); an
    /// `Err` ends the stream.
    answers: Option<Receiver<anyhow::Result<Frame>>>,
}

impl Conn {
    /// Connects to `relay` (with TLS and a token as `auth` says), says Hello
    /// as consumer `node` and checks the Welcome. The heartbeat interval is
    /// `heartbeat`, or a third of the idle timeout the relay announced.
    pub(crate) fn open(
        relay: &str,
        node: &str,
        heartbeat: Option<Duration>,
        auth: &ClientAuth,
    ) -> anyhow::Result<Conn> {
        let sock = ClientStream::connect(relay, auth, Duration::from_secs(2))?;
        sock.socket()
            .set_write_timeout(Some(Duration::from_secs(5)))
            .ok();
        let mut conn = Conn {
            sock,
            frames: FrameBuffer::new(DEFAULT_MAX_FRAME),
            last_sent: Instant::now(),
            heartbeat_every: DEFAULT_HEARTBEAT,
            out: Vec::new(),
            answers: None,
        };
        conn.send(&Frame::Hello {
            version: VERSION,
            role: Role::Consumer,
            name: node.to_string(),
            token: auth.token.clone(),
        })?;
        conn.sock
            .socket()
            .set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
        let idle_ms = match conn.read_frame()? {
            Some(Frame::Welcome {
                version,
                idle_timeout_ms,
                ..
            }) if version == VERSION => idle_timeout_ms,
            Some(Frame::Welcome { version, .. }) => {
                anyhow::bail!("relay speaks protocol version {version}, we speak {VERSION}")
            }
            Some(Frame::Error {
                code: ErrorCode::Denied,
                message,
            }) => anyhow::bail!("relay denied access: {message} (see docs/SECURITY.md)"),
            Some(Frame::Error { message, .. }) => anyhow::bail!("relay refused: {message}"),
            other => anyhow::bail!("unexpected answer to Hello: {other:?}"),
        };
        conn.heartbeat_every = heartbeat.unwrap_or(if idle_ms == 0 {
            DEFAULT_HEARTBEAT
        } else {
            Duration::from_millis(u64::from(idle_ms) / 3)
        });
        conn.sock.socket().set_read_timeout(None)?;
        let mut sock = conn.sock.try_clone().context("cloning the socket")?;
        let mut frames = std::mem::replace(&mut conn.frames, FrameBuffer::new(DEFAULT_MAX_FRAME));
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("relay-answers".into())
            .spawn(move || loop {
                let r = read_one(&mut sock, &mut frames);
                let end = r.is_err();
                if tx.send(r).is_err() || end {
                    return;
                }
            })
            .context("starting the answer reader thread")?;
        conn.answers = Some(rx);
        Ok(conn)
    }

    /// Sends one frame.
    pub(crate) fn send(&mut self, f: &Frame) -> std::io::Result<()> {
        self.out.clear();
        f.encode(&mut self.out);
        self.sock.write_all(&self.out)?;
        self.last_sent = Instant::now();
        Ok(())
    }

    /// Sends a heartbeat if nothing was sent for the heartbeat interval, so
    /// the relay's idle timeout never closes a consumer with nothing to say.
    pub(crate) fn keep_alive(&mut self) -> std::io::Result<()> {
        if self.last_sent.elapsed() >= self.heartbeat_every {
            self.send(&Frame::Heartbeat)?;
        }
        Ok(())
    }

    /// The next answer of the relay if one has arrived (never waits).
    /// `Ok(None)`: nothing yet.
    pub(crate) fn read_frame(&mut self) -> anyhow::Result<Option<Frame>> {
        match &self.answers {
            Some(rx) => match rx.try_recv() {
                Ok(r) => r.map(Some),
                Err(TryRecvError::Empty) => Ok(None),
                Err(TryRecvError::Disconnected) => anyhow::bail!("the answer reader stopped"),
            },
            // During the handshake: wait (up to the socket's read timeout).
            None => match read_one(&mut self.sock, &mut self.frames) {
                Ok(f) => Ok(Some(f)),
                Err(e)
                    if e.downcast_ref::<std::io::Error>().is_some_and(|e| {
                        matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
                    }) =>
                {
                    anyhow::bail!("no answer from the relay within {:?}", HANDSHAKE_TIMEOUT)
                }
                Err(e) => Err(e),
            },
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        // Wakes the reader thread, which then ends.
        self.sock.shutdown().ok();
    }
}

/// How long the handshake may wait for the relay's Welcome.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads from `sock` until `frames` holds a whole frame (blocking, up to the
/// socket's read timeout).
fn read_one(sock: &mut ClientStream, frames: &mut FrameBuffer) -> anyhow::Result<Frame> {
    loop {
        if let Some(f) = frames.next_frame()? {
            return Ok(f);
        }
        let mut buf = [0u8; 16 * 1024];
        match sock.read(&mut buf) {
            Ok(0) => anyhow::bail!("the relay closed the connection"),
            Ok(n) => frames.extend(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
}

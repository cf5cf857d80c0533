//! The consumer's connection to its relay: the Hello/Welcome exchange,
//! sending frames (remembering when, for heartbeats) and reading the
//! relay's answers without blocking the drain loop.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use anyhow::Context;
use blkkin::wire::{Frame, FrameBuffer, Role, DEFAULT_MAX_FRAME, VERSION};

/// Heartbeat interval when the relay has no idle timeout.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(15);

/// An open connection to the relay.
pub(crate) struct Conn {
    sock: TcpStream,
    frames: FrameBuffer,
    last_sent: Instant,
    /// Send a heartbeat after this long without sending anything.
    heartbeat_every: Duration,
    /// Encoding buffer, reused for every frame.
    out: Vec<u8>,
}

impl Conn {
    /// Connects to `relay`, says Hello as consumer `node` and checks the
    /// Welcome. The heartbeat interval is `heartbeat`, or a third of the
    /// idle timeout the relay announced.
    pub(crate) fn open(
        relay: &str,
        node: &str,
        heartbeat: Option<Duration>,
    ) -> anyhow::Result<Conn> {
        let addr = relay
            .to_socket_addrs()
            .context("resolving the relay address")?
            .next()
            .context("the relay address resolves to nothing")?;
        let sock =
            TcpStream::connect_timeout(&addr, Duration::from_secs(2)).context("connecting")?;
        sock.set_nodelay(true).ok();
        sock.set_write_timeout(Some(Duration::from_secs(5))).ok();
        let mut conn = Conn {
            sock,
            frames: FrameBuffer::new(DEFAULT_MAX_FRAME),
            last_sent: Instant::now(),
            heartbeat_every: DEFAULT_HEARTBEAT,
            out: Vec::new(),
        };
        conn.send(&Frame::Hello {
            version: VERSION,
            role: Role::Consumer,
            name: node.to_string(),
        })?;
        conn.sock.set_read_timeout(Some(Duration::from_secs(5)))?;
        let idle_ms = match conn.read_frame()? {
            Some(Frame::Welcome {
                version,
                idle_timeout_ms,
                ..
            }) if version == VERSION => idle_timeout_ms,
            Some(Frame::Welcome { version, .. }) => {
                anyhow::bail!("relay speaks protocol version {version}, we speak {VERSION}")
            }
            Some(Frame::Error { message, .. }) => anyhow::bail!("relay refused: {message}"),
            other => anyhow::bail!("unexpected answer to Hello: {other:?}"),
        };
        conn.heartbeat_every = heartbeat.unwrap_or(if idle_ms == 0 {
            DEFAULT_HEARTBEAT
        } else {
            Duration::from_millis(u64::from(idle_ms) / 3)
        });
        conn.sock.set_read_timeout(Some(Duration::from_millis(1)))?;
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

    /// Reads one frame if one is (or becomes, within the socket's read
    /// timeout) available. `Ok(None)`: nothing yet.
    pub(crate) fn read_frame(&mut self) -> anyhow::Result<Option<Frame>> {
        loop {
            if let Some(f) = self.frames.next_frame()? {
                return Ok(Some(f));
            }
            let mut buf = [0u8; 64 * 1024];
            match self.sock.read(&mut buf) {
                Ok(0) => anyhow::bail!("the relay closed the connection"),
                Ok(n) => self.frames.extend(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Ok(None)
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

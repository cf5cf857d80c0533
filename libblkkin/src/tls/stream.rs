//! A blocking client connection to a relay, plain TCP or TLS, that one
//! thread may read while another writes ([`ClientStream::try_clone`]): the
//! consumer reads the relay's acknowledgements on a thread of its own while
//! its drain loop sends.
//!
//! With TLS the rustls connection state sits behind a mutex that is never
//! held across socket i/o: a reader blocked on the socket does not stop the
//! writer, and a writer blocked on a full socket does not stop the reader
//! (which is what lets the relay's answers drain so the writer can go on).
//! Encrypted bytes go to the socket in the order they were encrypted (a
//! second lock orders the writers).

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rustls::ClientConnection;

use super::{ClientAuth, TlsError};

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Resolving or connecting failed.
    #[error("connecting to {addr}: {source}")]
    Connect {
        /// The address.
        addr: String,
        /// Why.
        source: io::Error,
    },
    /// The TLS settings do not fit this address (e.g. no valid server name).
    #[error(transparent)]
    Settings(#[from] TlsError),
    /// The TLS handshake failed: wrong CA, a certificate the relay refused,
    /// a relay that does not speak TLS.
    #[error("TLS handshake with {addr}: {source}")]
    Handshake {
        /// The address.
        addr: String,
        /// Why.
        source: io::Error,
    },
}

/// Shared TLS state of one connection.
struct Tls {
    conn: Mutex<ClientConnection>,
    /// Held while encrypting and writing, so records reach the socket in order.
    write_order: Mutex<()>,
}

/// A connection to a relay (see the module documentation).
pub struct ClientStream {
    sock: TcpStream,
    tls: Option<Arc<Tls>>,
    /// Bytes read from the socket not yet given to rustls (this clone's).
    raw: Vec<u8>,
    raw_at: usize,
    raw_len: usize,
    /// Encrypted bytes to write (reused).
    out: Vec<u8>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves rustls' state as it was; the
    // next i/o reports whatever error that state has.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl ClientStream {
    /// Connects to `addr` (host:port) within `timeout`; with TLS in `auth`,
    /// completes the handshake (also within `timeout`) before returning.
    pub fn connect(
        addr: &str,
        auth: &ClientAuth,
        timeout: Duration,
    ) -> Result<ClientStream, ConnectError> {
        let connect_err = |source| ConnectError::Connect {
            addr: addr.to_string(),
            source,
        };
        let target = addr
            .to_socket_addrs()
            .map_err(connect_err)?
            .next()
            .ok_or_else(|| {
                connect_err(io::Error::new(
                    io::ErrorKind::NotFound,
                    "the address resolves to nothing",
                ))
            })?;
        let sock = TcpStream::connect_timeout(&target, timeout).map_err(connect_err)?;
        sock.set_nodelay(true).ok();
        let tls = match &auth.tls {
            None => None,
            Some(cfg) => {
                let name = auth.server_name_for(addr)?;
                let handshake_err = |source| ConnectError::Handshake {
                    addr: addr.to_string(),
                    source,
                };
                let mut conn = ClientConnection::new(cfg.clone(), name)
                    .map_err(|e| handshake_err(tls_error(e)))?;
                sock.set_read_timeout(Some(timeout))
                    .map_err(handshake_err)?;
                sock.set_write_timeout(Some(timeout))
                    .map_err(handshake_err)?;
                let mut s = &sock;
                while conn.is_handshaking() {
                    conn.complete_io(&mut s).map_err(handshake_err)?;
                }
                // The server may refuse the client's certificate only after
                // the client finished its half of the handshake (TLS 1.3):
                // that alert arrives with the first read.
                sock.set_read_timeout(None).map_err(handshake_err)?;
                sock.set_write_timeout(None).map_err(handshake_err)?;
                Some(Arc::new(Tls {
                    conn: Mutex::new(conn),
                    write_order: Mutex::new(()),
                }))
            }
        };
        Ok(ClientStream {
            sock,
            tls,
            raw: vec![0; 32 << 10],
            raw_at: 0,
            raw_len: 0,
            out: Vec::new(),
        })
    }

    /// Whether the connection is encrypted.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Another handle on the same connection, for one reader and one writer
    /// on different threads.
    pub fn try_clone(&self) -> io::Result<ClientStream> {
        Ok(ClientStream {
            sock: self.sock.try_clone()?,
            tls: self.tls.clone(),
            raw: vec![0; self.raw.len()],
            raw_at: 0,
            raw_len: 0,
            out: Vec::new(),
        })
    }

    /// The socket, for timeouts and options (never read or write it directly).
    pub fn socket(&self) -> &TcpStream {
        &self.sock
    }

    /// Closes both directions (wakes a thread blocked reading).
    pub fn shutdown(&self) -> io::Result<()> {
        self.sock.shutdown(Shutdown::Both)
    }
}

impl Read for ClientStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(tls) = &self.tls else {
            return self.sock.read(buf);
        };
        loop {
            {
                let mut c = lock(&tls.conn);
                match c.reader().read(buf) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
                if self.raw_at < self.raw_len {
                    let mut src = &self.raw[self.raw_at..self.raw_len];
                    let n = c.read_tls(&mut src)?;
                    self.raw_at += n;
                    c.process_new_packets().map_err(tls_error)?;
                    continue;
                }
            }
            // Nothing decrypted and nothing pending: wait for the socket
            // without holding the lock.
            let n = self.sock.read(&mut self.raw)?;
            if n == 0 {
                let mut c = lock(&tls.conn);
                let _ = c.read_tls(&mut &[][..]);
                c.process_new_packets().map_err(tls_error)?;
                return match c.reader().read(buf) {
                    // A clean close_notify, or data that came with it.
                    Ok(n) => Ok(n),
                    // Closed without close_notify: the end all the same.
                    Err(_) => Ok(0),
                };
            }
            self.raw_at = 0;
            self.raw_len = n;
        }
    }
}

impl Write for ClientStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let Some(tls) = &self.tls else {
            return self.sock.write_all(buf);
        };
        let _order = lock(&tls.write_order);
        self.out.clear();
        {
            let mut c = lock(&tls.conn);
            let mut at = 0;
            loop {
                while c.wants_write() {
                    c.write_tls(&mut self.out)?;
                }
                if at == buf.len() {
                    break;
                }
                let n = c.writer().write(&buf[at..])?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "the TLS connection takes no more data",
                    ));
                }
                at += n;
            }
        }
        self.sock.write_all(&self.out)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

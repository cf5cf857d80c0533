//! Connections: one port, the role comes from `Hello`.
//!
//! * Consumer: `OpenStream` (answered with `Ack{next}` so the consumer knows
//!   where the relay stands), `Records` (persisted, duplicates skipped, gaps
//!   counted as lost, answered with `Ack{next}`), `Counters`, `Calibrate`,
//!   `CloseStream`, `ConsumerStats`, `Heartbeat` ([`consumer`]).
//! * Reader: `List` → `Streams`; `Status` → `StatusReport`; `Subscribe` →
//!   `Announce` and `StreamCounters` per stream, then `Records` read from the
//!   store at the reader's own pace and pushed as new records are persisted;
//!   `StreamCounters` again whenever a stream's loss counters change
//!   ([`reader`]).
//!
//! Every connection has its own task; a malformed frame, a frame not allowed
//! for the role, an idle connection or a partial frame older than the frame
//! timeout (slow-loris) closes only that connection.
//!
//! Who may connect ([`crate::config::Security`], docs/SECURITY.md): with
//! TLS the handshake comes first (within the frame timeout); a relay with a
//! client CA or a token file then wants an identity — a client certificate's
//! SAN URI or the token in `Hello` — and checks it against the role: a
//! producer (`blkkin:producer:<node>`) may only connect as a consumer under
//! its node's name and open streams of that node, a reader only read.
//! Anything else is answered `Error{Denied}` and closed.
//!
//! What a peer can cost is bounded: at most `max_connections` connections
//! (more are answered `Unavailable` and closed at once); before its Hello a
//! peer may send only frames of up to [`io::HELLO_MAX_FRAME`] bytes and must
//! say Hello within the frame timeout; a consumer connection may hold at most
//! `max_streams_per_connection` streams, and the streams it opened without
//! sending a record are removed when it closes them or goes; a peer that
//! takes no data for [`io::WRITE_TIMEOUT`] is disconnected; `List` and
//! `Status` answers come in pages of bounded size.

mod consumer;
mod io;
mod peers;
mod reader;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use blkkin::tls::Identity;
use blkkin::wire::{self, ErrorCode, Frame, Role};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::Config;
use crate::store::Store;
use io::{send, send_error, Close, FrameReader, Rx, Tx, MAX_PEER_NAME};
use peers::Peers;

/// What every connection shares.
struct Shared {
    store: Arc<Store>,
    cfg: Arc<Config>,
    peers: Arc<Peers>,
}

/// How long shutdown waits for connections to finish before aborting them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// A bound relay, ready to [`Server::run`].
pub struct Server {
    listener: TcpListener,
    shared: Arc<Shared>,
}

impl Server {
    /// Opens the store (recovering every stream) and binds the listening socket.
    pub async fn bind(cfg: Config) -> anyhow::Result<Server> {
        cfg.security
            .check_exposure(cfg.listen)
            .map_err(anyhow::Error::msg)?;
        let store_cfg = cfg.store.clone();
        let store = tokio::task::spawn_blocking(move || Store::open(store_cfg))
            .await
            .context("store recovery task failed")??;
        let listener = TcpListener::bind(cfg.listen)
            .await
            .with_context(|| format!("cannot listen on {}", cfg.listen))?;
        Ok(Server {
            listener,
            shared: Arc::new(Shared {
                store: Arc::new(store),
                cfg: Arc::new(cfg),
                peers: Arc::new(Peers::new()),
            }),
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
        self.shared.store.clone()
    }

    /// Serves until `shutdown` completes, then stops accepting, closes the
    /// connections (waiting up to 3 s for them) and fsyncs the store.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut conns = JoinSet::new();
        tokio::pin!(shutdown);
        let period = self.shared.store.retention_period();
        let mut retention = tokio::time::interval(period.unwrap_or(Duration::from_secs(3600)));
        let mut refused = 0u64;
        let mut last_refusal_log = std::time::Instant::now() - Duration::from_secs(60);
        retention.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tracing::info!(addr = %self.local_addr(), "listening");
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = retention.tick(), if period.is_some() => {
                    let store = self.shared.store.clone();
                    match tokio::task::spawn_blocking(move || store.retain_by_age()).await {
                        Ok(Ok(0)) => {}
                        Ok(Ok(n)) => tracing::info!(segments = n, "age retention removed old segments"),
                        Ok(Err(e)) => tracing::error!("age retention: {e:#}"),
                        Err(e) => tracing::error!("age retention task failed: {e}"),
                    }
                }
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
                r = self.listener.accept() => match r {
                    Ok((sock, peer)) if conns.len() >= self.shared.cfg.max_connections => {
                        refused += 1;
                        if last_refusal_log.elapsed() >= Duration::from_secs(10) {
                            tracing::warn!(%peer, refused, limit = self.shared.cfg.max_connections, "connection limit reached: refusing connections");
                            last_refusal_log = std::time::Instant::now();
                        }
                        if self.shared.cfg.security.tls.is_none() {
                            refuse(sock);
                        } // else: closed (a TLS client cannot read a plain answer)
                    }
                    Ok((sock, peer)) => {
                        let shared = self.shared.clone();
                        let stop = stop_rx.clone();
                        conns.spawn(async move {
                            sock.set_nodelay(true).ok();
                            tracing::debug!(%peer, "connection");
                            let reason = handle(sock, peer, shared, stop).await;
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
        let store = self.shared.store.clone();
        tokio::task::spawn_blocking(move || store.sync_all())
            .await
            .context("sync task failed")?
            .context("final fsync")?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Answers a connection over the limit with `Unavailable`, without
/// waiting on it, and closes it.
fn refuse(sock: TcpStream) {
    let mut b = Vec::new();
    Frame::Error {
        code: ErrorCode::Unavailable,
        message: "too many connections: try again later".into(),
    }
    .encode(&mut b);
    let _ = sock.try_write(&b);
}

async fn handle(
    sock: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
) -> Close {
    let (r, mut w, cert) = match accept(sock, &shared.cfg).await {
        Ok(c) => c,
        Err(c) => return c,
    };
    let mut rx = FrameReader::new(r, &shared.cfg);
    let reason = session(&mut rx, &mut w, peer, &shared, cert, stop).await;
    let reply = match &reason {
        Close::Wire(e) => Some((ErrorCode::Malformed, e.to_string())),
        Close::Truncated => Some((ErrorCode::Malformed, "truncated frame".to_string())),
        Close::Timeout(m) => Some((ErrorCode::Unexpected, m.clone())),
        Close::Protocol(m) => Some((ErrorCode::Unexpected, m.clone())),
        Close::Denied(m) => Some((ErrorCode::Denied, m.clone())),
        Close::Shutdown => Some((ErrorCode::Unavailable, "relay shutting down".to_string())),
        Close::Store(e) => Some((ErrorCode::Unavailable, format!("{e:#}"))),
        Close::Eof | Close::Io(_) | Close::Tls(_) => None,
    };
    if let Some((code, message)) = reply {
        send_error(&mut w, code, message).await;
    }
    reason
}

/// What a client certificate says about its peer: nothing (no TLS, or no
/// certificate), an identity, or why it names none.
type CertIdentity = Option<Result<Identity, String>>;

/// The connection's two halves, after the TLS handshake when the relay
/// speaks TLS (which must finish within the frame timeout).
async fn accept(sock: TcpStream, cfg: &Config) -> Result<(Rx, Tx, CertIdentity), Close> {
    let Some(tls) = &cfg.security.tls else {
        let (r, w) = sock.into_split();
        return Ok((Rx::Tcp(r), Box::new(w), None));
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.clone());
    let s = match tokio::time::timeout(cfg.frame_timeout, acceptor.accept(sock)).await {
        Err(_) => {
            return Err(Close::Timeout(format!(
                "no TLS handshake within {:?}",
                cfg.frame_timeout
            )))
        }
        Ok(Err(e)) => return Err(Close::Tls(format!("handshake failed: {e}"))),
        Ok(Ok(s)) => s,
    };
    let cert = s
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| blkkin::tls::identity_of(c).map_err(|e| e.to_string()));
    let (r, w) = tokio::io::split(s);
    Ok((Rx::Tls(r), Box::new(w), cert))
}

/// Who the peer is and whether it may take `role` under `name`: its
/// certificate's identity, else its token's; none is allowed only on a
/// relay that does not authenticate. Returns the node an authenticated
/// producer is bound to.
fn authorize(
    cfg: &Config,
    cert: CertIdentity,
    token: Option<&str>,
    role: Role,
    name: &str,
) -> Result<Option<Identity>, Close> {
    let from_cert = cert.transpose().map_err(Close::Denied)?;
    let from_token = match (token, &cfg.security.tokens) {
        (Some(t), Some(table)) => Some(
            table
                .identify(t)
                .ok_or_else(|| Close::Denied("unknown token".into()))?,
        ),
        _ => None,
    };
    let id = match (from_cert, from_token) {
        (Some(c), Some(t)) if c != t => {
            return Err(Close::Denied(format!(
                "the certificate ({c}) and the token ({t}) name different identities"
            )))
        }
        (c, t) => c.or(t),
    };
    match (&id, role) {
        (None, _) if cfg.security.authenticates() => Err(Close::Denied(
            "authentication required: a client certificate signed by the relay's client CA \
             or a token (docs/SECURITY.md)"
                .into(),
        )),
        (None, _) => Ok(None),
        (Some(Identity::Producer(node)), Role::Consumer) if node == name => Ok(id),
        (Some(Identity::Producer(node)), Role::Consumer) => Err(Close::Denied(format!(
            "this producer is node `{node}` and may not connect as node `{name}`"
        ))),
        (Some(Identity::Reader(_)), Role::Reader) => Ok(id),
        (Some(other), role) => Err(Close::Denied(format!(
            "{other} may not connect as a {}",
            match role {
                Role::Consumer => "consumer",
                Role::Reader => "reader",
            }
        ))),
    }
}

async fn session(
    rx: &mut FrameReader,
    w: &mut Tx,
    peer: SocketAddr,
    shared: &Shared,
    cert: CertIdentity,
    mut stop: watch::Receiver<bool>,
) -> Close {
    let cfg = &shared.cfg;
    let hello = tokio::select! {
        f = tokio::time::timeout(cfg.frame_timeout, rx.next(true)) => match f {
            Ok(f) => f,
            Err(_) => return Close::Timeout(format!("no Hello within {:?}", cfg.frame_timeout)),
        },
        _ = stop.wait_for(|s| *s) => return Close::Shutdown,
    };
    let (role, name, token) = match hello {
        Err(c) => return c,
        Ok(Frame::Hello {
            version,
            role,
            name,
            token,
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
            if name.len() > MAX_PEER_NAME {
                return Close::Protocol(format!(
                    "a Hello name of {} bytes (at most {MAX_PEER_NAME})",
                    name.len()
                ));
            }
            (role, name, token)
        }
        Ok(other) => return Close::Protocol(format!("expected Hello, got {}", frame_name(&other))),
    };
    let id = match authorize(cfg, cert, token.as_deref(), role, &name) {
        Ok(id) => id,
        Err(c) => {
            tracing::warn!(%peer, ?role, %name, "refused: {c}");
            return c;
        }
    };
    match &id {
        Some(id) => tracing::info!(?role, %name, %id, "hello"),
        None => tracing::info!(?role, %name, "hello"),
    }
    rx.greeted();
    let welcome = Frame::Welcome {
        version: wire::VERSION,
        name: cfg.name.clone(),
        idle_timeout_ms: u32::try_from(cfg.idle_timeout.as_millis()).unwrap_or(u32::MAX),
    };
    if let Err(c) = send(w, &[welcome]).await {
        return c;
    }
    let only_node = match &id {
        Some(Identity::Producer(node)) => Some(node.clone()),
        _ => None,
    };
    let me = shared.peers.register(role, name, peer);
    let r = match role {
        Role::Consumer => consumer::serve(rx, w, shared, &me, stop, only_node.as_deref()).await,
        Role::Reader => reader::serve(rx, w, shared, &me, stop).await,
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
        Frame::Heartbeat => "Heartbeat",
        Frame::ConsumerStats(_) => "ConsumerStats",
        Frame::StreamCounters { .. } => "StreamCounters",
        Frame::Status => "Status",
        Frame::StatusReport(_) => "StatusReport",
    }
}

//! Settings of the relay (filled by the CLI, or directly by tests).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use blkkin::tls::{ServerConfig, TokenTable};

/// When appended records are forced to stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// Never call fsync (the OS writes back on its own; a host crash can lose acknowledged records).
    Never,
    /// fsync once per received batch, before acknowledging it.
    Batch,
    /// fsync after every record, and the directory after every new segment.
    Always,
}

/// Store settings.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Root directory of the streams.
    pub data_dir: PathBuf,
    /// A new segment file is started once the current one reaches this size.
    pub segment_size: u64,
    /// Oldest segments of a stream are deleted while the stream holds more (0: keep all).
    pub retain_bytes: u64,
    /// Segments whose newest record is older than this are deleted (None: keep all).
    pub retain_age: Option<Duration>,
    /// fsync policy.
    pub fsync: FsyncPolicy,
}

impl StoreConfig {
    /// Defaults (64 MiB segments, no retention limit, batch fsync) for `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> StoreConfig {
        StoreConfig {
            data_dir: data_dir.into(),
            segment_size: 64 << 20,
            retain_bytes: 0,
            retain_age: None,
            fsync: FsyncPolicy::Batch,
        }
    }
}

/// Server settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on (port 0: any free port).
    pub listen: SocketAddr,
    /// Name sent in `Welcome`.
    pub name: String,
    /// Store settings.
    pub store: StoreConfig,
    /// Largest accepted frame (length field).
    pub max_frame: u32,
    /// A connection that sends nothing for this long is closed (subscribed readers excepted).
    pub idle_timeout: Duration,
    /// A connection whose partial frame is older than this is closed
    /// (slow-loris); also the time a new connection has to say Hello.
    pub frame_timeout: Duration,
    /// Connections served at once; more are answered `Unavailable` and closed.
    pub max_connections: usize,
    /// Streams one consumer connection may have open.
    pub max_streams_per_connection: usize,
    /// Who may connect (docs/SECURITY.md).
    pub security: Security,
}

/// Transport security and authentication of the relay's connections.
#[derive(Debug, Clone, Default)]
pub struct Security {
    /// Speak TLS (None: plain TCP). With a client CA in it, clients'
    /// certificates are verified and their SAN URI names who they are.
    pub tls: Option<Arc<ServerConfig>>,
    /// Whether `tls` verifies client certificates (a client CA was given).
    pub client_certs: bool,
    /// Shared tokens (from `--token-file`), each standing for an identity.
    pub tokens: Option<TokenTable>,
    /// Allow listening off loopback without TLS and authentication.
    pub insecure: bool,
}

impl Security {
    /// Whether every peer must prove an identity (a client certificate or a
    /// token) before it may do anything.
    pub fn authenticates(&self) -> bool {
        (self.tls.is_some() && self.client_certs) || self.tokens.is_some()
    }

    /// Refuses settings that would expose the relay: an address other than
    /// loopback needs TLS and client authentication, unless `insecure`.
    pub fn check_exposure(&self, listen: SocketAddr) -> Result<(), String> {
        if listen.ip().is_loopback() || self.insecure {
            return Ok(());
        }
        if self.tls.is_none() {
            return Err(format!(
                "{listen} is not a loopback address: the relay would be readable and writable \
                 by anyone who reaches it. Give --tls-cert/--tls-key and --tls-client-ca \
                 (or --token-file), see docs/SECURITY.md; or --insecure on a trusted network"
            ));
        }
        if !self.authenticates() {
            return Err(format!(
                "{listen} is not a loopback address and clients are not authenticated: \
                 give --tls-client-ca and/or --token-file (docs/SECURITY.md), or --insecure"
            ));
        }
        Ok(())
    }
}

impl Config {
    /// Defaults for `listen` and `data_dir`.
    pub fn new(listen: SocketAddr, data_dir: impl Into<PathBuf>) -> Config {
        Config {
            listen,
            name: "blkkin-relayd".into(),
            store: StoreConfig::new(data_dir),
            max_frame: blkkin::wire::DEFAULT_MAX_FRAME,
            idle_timeout: Duration::from_secs(60),
            frame_timeout: Duration::from_secs(10),
            max_connections: 1024,
            max_streams_per_connection: 16384,
            security: Security::default(),
        }
    }
}

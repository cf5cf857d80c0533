//! Settings of the relay (filled by the CLI, or directly by tests).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

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
        }
    }
}

//! `blkkin-relayd`: persists the streams consumers send and serves live readers.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use blkkin_relayd::{Config, FsyncPolicy, Server, StoreConfig};
use clap::Parser;

/// Per-node relay of blkkin trace records (docs/PROTOCOL.md).
///
/// Consumers and readers connect to the same port; the role comes from their
/// Hello. Each stream (one ring of one process) is stored under DATA_DIR in
/// append-only segment files and served to readers from disk.
#[derive(Debug, Parser)]
#[command(name = "blkkin-relayd", version)]
struct Cli {
    /// Address to listen on (consumers and readers alike).
    #[arg(long, default_value = "127.0.0.1:7420", env = "BLKKIN_RELAY_LISTEN")]
    listen: SocketAddr,

    /// Directory holding the streams (created if missing).
    #[arg(long, env = "BLKKIN_RELAY_DATA_DIR")]
    data_dir: PathBuf,

    /// Size at which a stream's segment file is closed and a new one started (bytes; suffixes K, M, G).
    #[arg(long, default_value = "64M", value_parser = parse_size)]
    segment_size: u64,

    /// Per-stream size above which the oldest segments are deleted (bytes, K/M/G; 0 = keep everything).
    #[arg(long, default_value = "0", value_parser = parse_size)]
    retain_bytes: u64,

    /// Delete a stream's segments once their newest record is older than this
    /// (e.g. 7d, 12h, 30m; default: keep them).
    #[arg(long, value_name = "AGE", value_parser = parse_age)]
    retain_age: Option<Duration>,

    /// When to fsync: never, batch (before acknowledging each received batch), always (every record).
    #[arg(long, value_enum, default_value_t = FsyncPolicy::Batch)]
    fsync: FsyncPolicy,

    /// Largest frame accepted from a peer (bytes, K/M/G).
    #[arg(long, default_value = "4M", value_parser = parse_size)]
    max_frame: u64,

    /// Close a connection that sends nothing for this many seconds (subscribed readers excepted).
    #[arg(long, default_value_t = 60.0)]
    idle_timeout: f64,

    /// Close a connection whose partial frame is older than this many seconds (slow senders).
    #[arg(long, default_value_t = 10.0)]
    frame_timeout: f64,

    /// Name sent to peers in Welcome.
    #[arg(long, default_value = "blkkin-relayd")]
    name: String,
}

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, 'K' | 'k')) => (&s[..i], 1u64 << 10),
        Some((i, 'M' | 'm')) => (&s[..i], 1 << 20),
        Some((i, 'G' | 'g')) => (&s[..i], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("invalid size {s:?} (examples: 4096, 64M, 1G)"))
}

fn parse_age(s: &str) -> Result<Duration, String> {
    blkkin::config::parse_duration(s)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("invalid age {s:?} (examples: 7d, 12h, 30m, 90s)"))
}

fn seconds(what: &str, v: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(v).with_context(|| format!("invalid --{what} {v}"))
}

/// Installs the SIGTERM/SIGINT handlers now (before the relay reports that
/// it listens) and returns a future completing at the first of them.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    })
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let max_frame = u32::try_from(cli.max_frame).context("--max-frame must be below 4G")?;
    if cli.segment_size == 0 {
        anyhow::bail!("--segment-size must be positive");
    }
    let cfg = Config {
        listen: cli.listen,
        name: cli.name,
        store: StoreConfig {
            data_dir: cli.data_dir,
            segment_size: cli.segment_size,
            retain_bytes: cli.retain_bytes,
            retain_age: cli.retain_age,
            fsync: cli.fsync,
        },
        max_frame,
        idle_timeout: seconds("idle-timeout", cli.idle_timeout)?,
        frame_timeout: seconds("frame-timeout", cli.frame_timeout)?,
    };
    let shutdown = shutdown_signal()?;
    let server = Server::bind(cfg).await?;
    server.run(shutdown).await
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BLKKIN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("blkkin-relayd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("blkkin-relayd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert!(parse_size("x").is_err());
        assert!(parse_size("99999999999G").is_err());
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}

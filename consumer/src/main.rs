//! `blkkin-consumerd`: the per-node consumer daemon (see the crate docs).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use blkkin_consumerd::{Config, Consumer};
use clap::Parser;

/// Drains every blkkin trace ring of this user live and streams the records
/// to a relay (blkkin-relayd). Ring space is freed only once the relay has
/// acknowledged the records, so restarting the consumer — or the relay —
/// loses nothing that is still in the rings. Stop with SIGTERM or Ctrl-C:
/// it flushes and waits briefly for the last acknowledgements.
#[derive(Parser)]
#[command(name = "blkkin-consumerd", version)]
struct Cli {
    /// Relay address, host:port.
    #[arg(long, value_name = "HOST:PORT")]
    relay: String,
    /// Ring directory [default: $BLKIN_SHM_DIR or /dev/shm/blkin-<uid>].
    #[arg(long, short = 'd', value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Node name reported to the relay [default: the host name].
    #[arg(long)]
    node: Option<String>,
    /// Most record bytes sent but not yet acknowledged (K/M/G suffixes);
    /// beyond it the consumer stops draining and records wait in the rings.
    #[arg(long, default_value = "64M", value_parser = parse_size)]
    max_unacked: usize,
    /// Seconds to wait for the last acknowledgements when stopping.
    #[arg(long, default_value_t = 5)]
    drain_timeout: u64,
    /// Seconds without sending anything after which a heartbeat is sent
    /// [default: a third of the idle timeout the relay announces].
    #[arg(long, value_name = "SECS")]
    heartbeat: Option<f64>,
    /// Log format on stderr (the level is set by $BLKKIN_LOG or $RUST_LOG,
    /// e.g. "debug"; default info).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

/// How log lines look.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BLKKIN_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match format {
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => logs.json().init(),
    }
}

fn parse_size(s: &str) -> Result<usize, String> {
    blkkin::config::parse_size(s)
        .map(|n| n as usize)
        .ok_or_else(|| format!("not a size: {s:?} (e.g. 64M)"))
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs(cli.log_format);
    // SAFETY: the handler only stores to an atomic (async-signal-safe).
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
    }
    let dir = cli
        .dir
        .or_else(|| {
            std::env::var_os("BLKIN_SHM_DIR")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(blkkin::config::default_shm_dir);
    let mut cfg = Config::new(dir.clone(), cli.relay.clone());
    if let Some(node) = cli.node {
        cfg.node = node;
    }
    cfg.max_unacked = cli.max_unacked;
    if let Some(h) = cli.heartbeat {
        match Duration::try_from_secs_f64(h) {
            Ok(d) if !d.is_zero() => cfg.heartbeat = Some(d),
            _ => {
                tracing::error!("invalid --heartbeat {h}: a positive number of seconds");
                return ExitCode::from(2);
            }
        }
    }
    tracing::info!(dir = %dir.display(), relay = %cli.relay, node = %cfg.node, "draining");
    let mut consumer = Consumer::new(cfg);
    match consumer.run(&STOP, Duration::from_secs(cli.drain_timeout)) {
        Ok(s) => {
            tracing::info!(
                records = s.records,
                acked = s.acked,
                connects = s.connects,
                resent = s.resent,
                buffer_full = s.buffer_full,
                "stopped"
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::from(1)
        }
    }
}

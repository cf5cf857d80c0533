//! `blkkin-consumerd`: the per-node consumer daemon (see the crate docs).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use blkkin::config::{Size, Span};
use blkkin::daemon::{init_logs, parse_with_config, LogFormat};
use blkkin_consumerd::{Config, Consumer};
use clap::Parser;
use serde::Deserialize;

/// Drains every blkkin trace ring of this user live and streams the records
/// to a relay (blkkin-relayd). Ring space is freed only once the relay has
/// acknowledged the records, so restarting the consumer — or the relay —
/// loses nothing that is still in the rings. Stop with SIGTERM or Ctrl-C:
/// it drains what the rings hold, flushes and waits briefly for the
/// last acknowledgements.
///
/// Every option can also be set in a TOML file given with --config, under
/// its long name (relay = "10.0.0.5:7420", max-unacked = "256M"; see
/// docs/consumerd.example.toml); the command line wins over the file.
#[derive(Debug, Default, Parser, Deserialize)]
#[command(name = "blkkin-consumerd", version)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Cli {
    /// Read settings from this TOML file.
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// Relay address, host:port (required).
    #[arg(long, value_name = "HOST:PORT")]
    relay: Option<String>,
    /// Ring directory [default: $BLKIN_SHM_DIR or /dev/shm/blkin-<uid>].
    #[arg(long, short = 'd', value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Node name reported to the relay [default: the host name].
    #[arg(long)]
    node: Option<String>,
    /// Most record bytes sent but not yet acknowledged (K/M/G suffixes);
    /// beyond it the consumer stops draining and records wait in the rings
    /// (writers count what no longer fits) [default: 64M].
    #[arg(long, value_name = "SIZE")]
    max_unacked: Option<Size>,
    /// How long to wait for the last acknowledgements when stopping
    /// (seconds, or 500ms, 1m, ...) [default: 5].
    #[arg(long, value_name = "DURATION")]
    drain_timeout: Option<Span>,
    /// Send a heartbeat after this long without sending anything
    /// [default: a third of the idle timeout the relay announces].
    #[arg(long, value_name = "DURATION")]
    heartbeat: Option<Span>,
    /// Log format on stderr; the level comes from $BLKKIN_LOG or $RUST_LOG
    /// (e.g. "debug") [default: text].
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
    /// Connect with TLS, trusting the CA certificate(s) in this PEM file to
    /// have signed the relay's certificate (docs/SECURITY.md).
    #[arg(long, value_name = "PEM", help_heading = "Relay authentication")]
    tls_ca: Option<PathBuf>,
    /// This node's certificate (PEM; mutual TLS). It must name the node:
    /// SAN URI blkkin:producer:<node> (`blkkin certs --producer <node>`).
    #[arg(
        long,
        value_name = "PEM",
        requires = "tls_key",
        help_heading = "Relay authentication"
    )]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(
        long,
        value_name = "PEM",
        requires = "tls_cert",
        help_heading = "Relay authentication"
    )]
    tls_key: Option<PathBuf>,
    /// Name the relay's certificate must carry [default: the host of --relay].
    #[arg(long, value_name = "NAME", help_heading = "Relay authentication")]
    tls_server_name: Option<String>,
    /// File holding this node's token for a relay with a token file (one
    /// line; must not be readable by other users).
    #[arg(long, value_name = "FILE", help_heading = "Relay authentication")]
    token_file: Option<PathBuf>,
}

blkkin::file_options!(
    Cli: relay,
    dir,
    node,
    max_unacked,
    drain_timeout,
    heartbeat,
    log_format,
    tls_ca,
    tls_cert,
    tls_key,
    tls_server_name,
    token_file
);

impl Cli {
    /// The consumer's settings, defaults filled in.
    fn consumer_config(self) -> anyhow::Result<Config> {
        let relay = self
            .relay
            .context("no relay address: give --relay (or relay in the config file)")?;
        let dir = self
            .dir
            .or_else(|| {
                std::env::var_os("BLKIN_SHM_DIR")
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from)
            })
            .unwrap_or_else(blkkin::config::default_shm_dir);
        let auth = blkkin::tls::ClientAuth::from_options(&blkkin::tls::ClientAuthOptions {
            tls_ca: self.tls_ca,
            tls_cert: self.tls_cert,
            tls_key: self.tls_key,
            token_file: self.token_file,
            tls_server_name: self.tls_server_name,
        })?;
        let mut cfg = Config::new(dir, relay);
        cfg.auth = auth;
        if let Some(node) = self.node {
            cfg.node = node;
        }
        if let Some(Size(n)) = self.max_unacked {
            cfg.max_unacked = usize::try_from(n).context("max-unacked too large")?;
        }
        if let Some(Span(d)) = self.heartbeat {
            anyhow::ensure!(!d.is_zero(), "heartbeat must be positive");
            cfg.heartbeat = Some(d);
        }
        Ok(cfg)
    }
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn main() -> ExitCode {
    // First: a stop request from now on is a graceful stop.
    // SAFETY: the handler only stores to an atomic (async-signal-safe).
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
    }
    let cli = match parse_with_config::<Cli>() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("blkkin-consumerd: {e:#}");
            return ExitCode::from(2);
        }
    };
    init_logs(cli.log_format.unwrap_or_default());
    let drain_timeout = cli.drain_timeout.map_or(Duration::from_secs(5), |s| s.0);
    let cfg = match cli.consumer_config() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{e:#}");
            return ExitCode::from(2);
        }
    };
    tracing::info!(dir = %cfg.ring_dir.display(), relay = %cfg.relay, node = %cfg.node, "draining");
    let mut consumer = Consumer::new(cfg);
    match consumer.run(&STOP, drain_timeout) {
        Ok(s) => {
            tracing::info!(
                records = s.records,
                acked = s.acked,
                connects = s.connects,
                resent = s.resent,
                buffer_full = s.buffer_full,
                bad_acks = s.bad_acks,
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

#[cfg(test)]
mod tests {
    use super::*;
    use blkkin::daemon::parse_config as file;

    #[test]
    fn every_option_can_be_set_in_the_file() {
        let cli: Cli = file(
            r#"
            relay = "10.0.0.5:7420"
            dir = "/dev/shm/x"
            node = "osd-3"
            max-unacked = "256M"
            drain-timeout = "30s"
            heartbeat = 2.5
            log-format = "json"
            "#,
        )
        .unwrap();
        assert_eq!(cli.log_format, Some(LogFormat::Json));
        assert_eq!(cli.drain_timeout, Some(Span(Duration::from_secs(30))));
        let cfg = cli.consumer_config().unwrap();
        assert_eq!(cfg.relay, "10.0.0.5:7420");
        assert_eq!(cfg.ring_dir, PathBuf::from("/dev/shm/x"));
        assert_eq!(cfg.node, "osd-3");
        assert_eq!(cfg.max_unacked, 256 << 20);
        assert_eq!(cfg.heartbeat, Some(Duration::from_millis(2500)));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let e = file::<Cli>("relay = \"x:1\"\nmax_unacked = 5\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `max_unacked`"), "{e}");
        let e = file::<Cli>("heartbeat = \"soon\"").unwrap_err().to_string();
        assert!(e.contains("invalid duration \"soon\""), "{e}");
        assert!(
            Cli::default().consumer_config().is_err(),
            "relay is required"
        );
    }

    #[test]
    fn the_example_config_file_is_valid() {
        let cli: Cli = file(include_str!("../../docs/consumerd.example.toml")).unwrap();
        cli.consumer_config().unwrap();
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}

//! `blkkin-relayd`: persists the streams consumers send and serves live readers.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use blkkin::config::{Size, Span};
use blkkin::daemon::{init_logs, parse_with_config, LogFormat};
use blkkin_relayd::{Config, FsyncPolicy, Security, Server};
use clap::Parser;
use serde::Deserialize;

/// Per-node relay of blkkin trace records (docs/PROTOCOL.md).
///
/// Consumers and readers connect to the same port; the role comes from their
/// Hello. Each stream (one ring of one process) is stored under DATA_DIR in
/// append-only segment files and served to readers from disk.
///
/// Every option can also be set in a TOML file given with --config, under
/// its long name (data-dir = "/var/lib/blkkin", retain-age = "7d"; see
/// docs/relayd.example.toml); the command line and the environment win over
/// the file.
#[derive(Debug, Default, Parser, Deserialize)]
#[command(name = "blkkin-relayd", version)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Cli {
    /// Read settings from this TOML file.
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    config: Option<PathBuf>,

    /// Address to listen on (consumers and readers alike) [default: 127.0.0.1:7420].
    #[arg(long, env = "BLKKIN_RELAY_LISTEN")]
    listen: Option<SocketAddr>,

    /// Directory holding the streams (created if missing; required).
    #[arg(long, env = "BLKKIN_RELAY_DATA_DIR")]
    data_dir: Option<PathBuf>,

    /// Size at which a stream's segment file is closed and a new one started
    /// (bytes; suffixes K, M, G) [default: 64M].
    #[arg(long, value_name = "SIZE")]
    segment_size: Option<Size>,

    /// Per-stream size above which the oldest segments are deleted (bytes,
    /// K/M/G) [default: 0, keep everything].
    #[arg(long, value_name = "SIZE")]
    retain_bytes: Option<Size>,

    /// Delete a stream's segments once their newest record is older than this
    /// (e.g. 7d, 12h, 30m) [default: keep them].
    #[arg(long, value_name = "AGE")]
    retain_age: Option<Span>,

    /// When to fsync: never, batch (before acknowledging each received
    /// batch), always (every record) [default: batch].
    #[arg(long, value_enum)]
    fsync: Option<FsyncPolicy>,

    /// Largest frame accepted from a peer (bytes, K/M/G; at least 3136K,
    /// as consumers send up to 3M of records per frame) [default: 4M].
    #[arg(long, value_name = "SIZE")]
    max_frame: Option<Size>,

    /// Close a connection that sends nothing for this long (seconds, or
    /// 90s, 2m, ...; subscribed readers excepted; consumers send heartbeats
    /// well within it) [default: 60].
    #[arg(long, value_name = "DURATION")]
    idle_timeout: Option<Span>,

    /// Close a connection whose partial frame is older than this (slow
    /// senders), or that has not said Hello within it [default: 10].
    #[arg(long, value_name = "DURATION")]
    frame_timeout: Option<Span>,

    /// Connections served at once; more are answered "Unavailable" and
    /// closed at once (consumers retry with backoff) [default: 1024].
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,

    /// Streams one consumer connection may have open (a consumer opens one
    /// per ring: per traced process and CPU) [default: 16384].
    #[arg(long, value_name = "N")]
    max_streams_per_connection: Option<usize>,

    /// Name sent to peers in Welcome [default: blkkin-relayd].
    #[arg(long)]
    name: Option<String>,

    /// Log format on stderr; the level comes from $BLKKIN_LOG or $RUST_LOG
    /// (e.g. "debug", "blkkin_relayd=trace") [default: text].
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,

    /// Speak TLS, presenting this certificate (PEM, chain first to last;
    /// `blkkin certs --server HOST` makes one).
    #[arg(
        long,
        value_name = "PEM",
        requires = "tls_key",
        help_heading = "Security (docs/SECURITY.md)"
    )]
    tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM).
    #[arg(
        long,
        value_name = "PEM",
        requires = "tls_cert",
        help_heading = "Security (docs/SECURITY.md)"
    )]
    tls_key: Option<PathBuf>,

    /// Require client certificates signed by this CA (mutual TLS). A
    /// certificate's SAN URI says who the client is: blkkin:producer:<node>
    /// may only send the streams of <node>, blkkin:reader:<name> may only read.
    #[arg(
        long,
        value_name = "PEM",
        requires = "tls_cert",
        help_heading = "Security (docs/SECURITY.md)"
    )]
    tls_client_ca: Option<PathBuf>,

    /// Accept the tokens of this file (lines `producer <node> <token>` or
    /// `reader <name> <token>`; mode 0600) as identities; with
    /// --tls-client-ca too, a client may present either.
    #[arg(
        long,
        value_name = "FILE",
        help_heading = "Security (docs/SECURITY.md)"
    )]
    token_file: Option<PathBuf>,

    /// Allow listening on an address other than loopback without TLS and
    /// client authentication: anyone who reaches the port can then read
    /// every trace and write any stream. Only for a network you trust.
    #[arg(
        long,
        num_args = 0,
        default_missing_value = "true",
        help_heading = "Security (docs/SECURITY.md)"
    )]
    insecure: Option<bool>,
}

blkkin::file_options!(
    Cli: listen,
    data_dir,
    segment_size,
    retain_bytes,
    retain_age,
    fsync,
    max_frame,
    idle_timeout,
    frame_timeout,
    max_connections,
    max_streams_per_connection,
    name,
    log_format,
    tls_cert,
    tls_key,
    tls_client_ca,
    token_file,
    insecure
);

impl Cli {
    /// The relay's settings, defaults filled in.
    fn relay_config(self) -> anyhow::Result<Config> {
        let security = self.security()?;
        let data_dir = self
            .data_dir
            .context("no data directory: give --data-dir (or data-dir in the config file)")?;
        let mut cfg = Config::new(
            self.listen
                .unwrap_or_else(|| "127.0.0.1:7420".parse().expect("valid address")),
            data_dir,
        );
        if let Some(n) = self.name {
            cfg.name = n;
        }
        if let Some(Size(n)) = self.segment_size {
            anyhow::ensure!(n > 0, "segment-size must be positive");
            cfg.store.segment_size = n;
        }
        if let Some(Size(n)) = self.retain_bytes {
            cfg.store.retain_bytes = n;
        }
        if let Some(Span(d)) = self.retain_age {
            anyhow::ensure!(!d.is_zero(), "retain-age must be positive");
            cfg.store.retain_age = Some(d);
        }
        if let Some(f) = self.fsync {
            cfg.store.fsync = f;
        }
        if let Some(Size(n)) = self.max_frame {
            cfg.max_frame = u32::try_from(n).context("max-frame must be below 4G")?;
            anyhow::ensure!(
                cfg.max_frame >= blkkin::wire::MIN_MAX_FRAME,
                "max-frame must be at least {}K: consumers send frames of up to {}K of records",
                blkkin::wire::MIN_MAX_FRAME >> 10,
                blkkin::wire::MAX_RECORDS_BYTES >> 10
            );
        }
        if let Some(Span(d)) = self.idle_timeout {
            cfg.idle_timeout = d;
        }
        if let Some(Span(d)) = self.frame_timeout {
            cfg.frame_timeout = d;
        }
        if let Some(n) = self.max_connections {
            anyhow::ensure!(n > 0, "max-connections must be positive");
            cfg.max_connections = n;
        }
        if let Some(n) = self.max_streams_per_connection {
            anyhow::ensure!(n > 0, "max-streams-per-connection must be positive");
            cfg.max_streams_per_connection = n;
        }
        cfg.security = security;
        cfg.security
            .check_exposure(cfg.listen)
            .map_err(anyhow::Error::msg)?;
        Ok(cfg)
    }

    /// TLS, client certificates and tokens, loaded and checked.
    fn security(&self) -> anyhow::Result<Security> {
        use blkkin::tls::{server_config, ClientCerts, TokenTable};
        let tokens = self
            .token_file
            .as_deref()
            .map(TokenTable::load)
            .transpose()?;
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                let client_ca = self.tls_client_ca.as_deref().map(|ca| {
                    let mode = if tokens.is_some() {
                        ClientCerts::Optional
                    } else {
                        ClientCerts::Required
                    };
                    (ca, mode)
                });
                Some(server_config(cert, key, client_ca)?)
            }
            (None, None) => {
                anyhow::ensure!(
                    self.tls_client_ca.is_none(),
                    "--tls-client-ca needs TLS: give --tls-cert and --tls-key"
                );
                None
            }
            _ => anyhow::bail!("--tls-cert and --tls-key go together"),
        };
        Ok(Security {
            client_certs: tls.is_some() && self.tls_client_ca.is_some(),
            tls,
            tokens,
            insecure: self.insecure.unwrap_or(false),
        })
    }
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

async fn run(cfg: Config) -> anyhow::Result<()> {
    let shutdown = shutdown_signal()?;
    let server = Server::bind(cfg).await?;
    server.run(shutdown).await
}

fn main() -> ExitCode {
    let cli = match parse_with_config::<Cli>() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("blkkin-relayd: {e:#}");
            return ExitCode::from(2);
        }
    };
    init_logs(cli.log_format.unwrap_or_default());
    let cfg = match cli.relay_config() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{e:#}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use blkkin::daemon::parse_config as file;
    use std::time::Duration;

    #[test]
    fn every_option_can_be_set_in_the_file() {
        let cli: Cli = file(
            r#"
            listen = "127.0.0.1:9999"
            data-dir = "/tmp/x"
            segment-size = "1M"
            retain-bytes = 1048576
            retain-age = "7d"
            fsync = "always"
            max-frame = "8M"
            idle-timeout = 30
            frame-timeout = "2.5s"
            max-connections = 99
            max-streams-per-connection = 77
            name = "r1"
            log-format = "json"
            "#,
        )
        .unwrap();
        assert_eq!(cli.log_format, Some(LogFormat::Json));
        let cfg = cli.relay_config().unwrap();
        assert_eq!(cfg.listen.port(), 9999);
        assert_eq!(cfg.store.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(cfg.store.segment_size, 1 << 20);
        assert_eq!(cfg.store.retain_bytes, 1 << 20);
        assert_eq!(cfg.store.retain_age, Some(Duration::from_secs(7 * 86400)));
        assert_eq!(cfg.store.fsync, FsyncPolicy::Always);
        assert_eq!(cfg.max_connections, 99);
        assert_eq!(cfg.max_streams_per_connection, 77);
        assert_eq!(cfg.max_frame, 8 << 20);
        assert_eq!(cfg.idle_timeout, Duration::from_secs(30));
        assert_eq!(cfg.frame_timeout, Duration::from_millis(2500));
        assert_eq!(cfg.name, "r1");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let e = file::<Cli>("data-dir = \"/x\"\nretain_age = \"7d\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `retain_age`"), "{e}");
        let e = file::<Cli>("config = \"other.toml\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `config`"), "{e}");
        let e = file::<Cli>("segment-size = \"lots\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("invalid size \"lots\""), "{e}");
        let e = file::<Cli>("fsync = \"sometimes\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("sometimes"), "{e}");
    }

    #[test]
    fn defaults_apply_without_file_or_flags() {
        let cli = Cli {
            data_dir: Some("/d".into()),
            ..Cli::default()
        };
        let cfg = cli.relay_config().unwrap();
        assert_eq!(cfg.listen, "127.0.0.1:7420".parse().unwrap());
        assert_eq!(cfg.store.segment_size, 64 << 20);
        assert_eq!(cfg.idle_timeout, Duration::from_secs(60));
        assert!(
            Cli::default().relay_config().is_err(),
            "data-dir is required"
        );
    }

    #[test]
    fn a_frame_limit_below_what_consumers_send_is_refused() {
        let cli: Cli = file("data-dir = \"/d\"\nmax-frame = \"1M\"\n").unwrap();
        let e = format!("{:#}", cli.relay_config().unwrap_err());
        assert!(e.contains("max-frame must be at least 3136K"), "{e}");
        let cli: Cli = file("data-dir = \"/d\"\nmax-frame = \"3136K\"\n").unwrap();
        assert_eq!(cli.relay_config().unwrap().max_frame, 3136 << 10);
    }

    #[test]
    fn listening_off_loopback_needs_tls_and_client_authentication() {
        let cli: Cli = file("data-dir = \"/d\"\nlisten = \"0.0.0.0:7420\"\n").unwrap();
        let e = format!("{:#}", cli.relay_config().unwrap_err());
        assert!(e.contains("not a loopback address"), "{e}");
        assert!(e.contains("--insecure"), "{e}");
        let cli: Cli =
            file("data-dir = \"/d\"\nlisten = \"0.0.0.0:7420\"\ninsecure = true\n").unwrap();
        assert!(cli.relay_config().unwrap().security.insecure);

        let dir = tempfile::tempdir().unwrap();
        blkkin::tls::certs::generate(&blkkin::tls::certs::CertRequest {
            out: dir.path().into(),
            new_ca: true,
            server: vec!["relay.test".into()],
            ..Default::default()
        })
        .unwrap();
        let p = |f: &str| dir.path().join(f);
        let tls_only = || Cli {
            data_dir: Some("/d".into()),
            listen: Some("0.0.0.0:7420".parse().unwrap()),
            tls_cert: Some(p("server.pem")),
            tls_key: Some(p("server.key")),
            ..Cli::default()
        };
        let e = format!("{:#}", tls_only().relay_config().unwrap_err());
        assert!(e.contains("clients are not authenticated"), "{e}");
        let mtls = Cli {
            tls_client_ca: Some(p("ca.pem")),
            ..tls_only()
        };
        let cfg = mtls.relay_config().unwrap();
        assert!(cfg.security.authenticates());
        let no_cert = Cli {
            data_dir: Some("/d".into()),
            tls_client_ca: Some(p("ca.pem")),
            ..Cli::default()
        };
        let e = format!("{:#}", no_cert.relay_config().unwrap_err());
        assert!(e.contains("--tls-client-ca needs TLS"), "{e}");
    }

    #[test]
    fn the_example_config_file_is_valid() {
        let cli: Cli = file(include_str!("../../docs/relayd.example.toml")).unwrap();
        cli.relay_config().unwrap();
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}

//! `blkkin-collector`: reads relays live, assembles spans and delivers them
//! to the embedded store, Zipkin (HTTP v2 JSON, HTTP v1 Thrift, Scribe),
//! Cassandra, the span archive (HDFS or a directory) and JSON lines.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use blkkin_collector::service::{Collector, CollectorArgs};

#[global_allocator]
static ALLOC: blkkin_collector::Allocator = blkkin_collector::ALLOCATOR;

/// Reads blkkin relays live, assembles the Dapper annotations into Zipkin
/// spans and delivers them to every sink given (at least one).
///
/// A span recorded by a client (cs/cr) and a server (sr/ss) under one span id
/// becomes a CLIENT span and a shared SERVER span; key/values become tags;
/// `start`/`end` give a span without core annotations its timestamp and
/// duration (docs/ARCHITECTURE.md, "Collector"). Each sink has its own
/// thread and bounded queue: a slow or absent destination is retried with
/// backoff and, once its queue is full, loses spans that are counted — the
/// relays are never slowed. SIGINT/SIGTERM emit open spans and flush.
///
/// With --state-dir (or --archive) the collector checkpoints each relay
/// stream's position and its open spans once the durable sinks (store,
/// Cassandra, archive) acknowledged everything before the cut; a restart
/// resumes there instead of re-reading relays from the oldest record, and
/// durable sinks then slow the relay reads rather than drop. Open spans are
/// kept in the last checkpoint at SIGINT/SIGTERM instead of being emitted.
///
/// Examples: blkkin-collector --relay 127.0.0.1:7420 --store /var/lib/blkkin/spans.db
///           blkkin-collector --relay 127.0.0.1:7420 --zipkin-url http://zipkin:9411
///           blkkin-collector --relay 127.0.0.1:7420 --state-dir /var/lib/blkkin/collector \
///               --archive hdfs://namenode:8020/blkkin/spans --archive-compression zstd
#[derive(Parser, Debug)]
#[command(version, verbatim_doc_comment)]
struct Cli {
    /// Relay to read (blkkin-relayd), host:port; repeat for several relays.
    #[arg(long, required = true, value_name = "HOST:PORT")]
    relay: Vec<String>,

    #[command(flatten)]
    collector: CollectorArgs,
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handlers")?;
    }
    let mut collector = Collector::start(&cli.relay, &cli.collector, stop)?;
    if let Some(addr) = collector.query_addr() {
        tracing::info!("Zipkin API of the embedded store on http://{addr}/api/v2/services");
    }
    collector.wait();
    collector.stop();
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .finish()
        .with(blkkin_collector::cassandra::driver_warning_filter())
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("blkkin-collector: {e:#}");
            ExitCode::FAILURE
        }
    }
}

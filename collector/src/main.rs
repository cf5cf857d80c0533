//! `blkkin-collector`: reads relays live, assembles spans and delivers them
//! to Zipkin (HTTP v2 JSON, HTTP v1 Thrift, Scribe) and JSON lines.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};

use blkkin_collector::assemble::{AssemblerConfig, SpanAssembler};
use blkkin_collector::pipeline::Pipeline;
use blkkin_collector::sink::http::{HttpFormat, ZipkinHttpSink};
use blkkin_collector::sink::jsonl::JsonLinesSink;
use blkkin_collector::sink::scribe::ScribeSink;
use blkkin_collector::sink::{SinkConfig, SinkRunner};
use blkkin_collector::source::RelaySource;

/// Zipkin HTTP body format.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum ZipkinFormat {
    /// v2 JSON, POST /api/v2/spans.
    Json,
    /// v1 Thrift (TBinaryProtocol list<Span>), POST /api/v1/spans.
    Thrift,
}

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
/// Example: blkkin-collector --relay 127.0.0.1:7878 --zipkin-url http://127.0.0.1:9411
#[derive(Parser, Debug)]
#[command(version, verbatim_doc_comment)]
struct Cli {
    /// Relay to read (blkkin-relayd), host:port; repeat for several relays.
    #[arg(long, required = true, value_name = "HOST:PORT")]
    relay: Vec<String>,

    /// Zipkin server base URL (e.g. http://127.0.0.1:9411); repeatable.
    #[arg(long, value_name = "URL")]
    zipkin_url: Vec<String>,

    /// Body format for the --zipkin-url sinks.
    #[arg(long, value_enum, default_value = "json")]
    zipkin_format: ZipkinFormat,

    /// Scribe server (Zipkin's Scribe collector), host:port; repeatable.
    #[arg(long, value_name = "HOST:PORT")]
    scribe: Vec<String>,

    /// Append spans as JSON lines (Zipkin v2) to this file; `-` for stdout.
    #[arg(long, value_name = "PATH|-")]
    jsonl: Option<PathBuf>,

    /// Emit a span without its closing annotation after this many seconds
    /// without annotations (and forget emitted spans after as long).
    #[arg(long, default_value_t = 30.0, value_name = "SECS")]
    idle_timeout: f64,

    /// Wait this many milliseconds after a closing annotation before
    /// emitting, so the other side of a shared span can arrive.
    #[arg(long, default_value_t = 200, value_name = "MS")]
    linger_ms: u64,

    /// Most spans held by the assembler; the least recently active is
    /// emitted early and forgotten beyond it (counted as evicted).
    #[arg(long, default_value_t = 100_000, value_name = "N")]
    max_open_spans: usize,

    /// Spans each sink may queue; beyond it spans are dropped and counted.
    #[arg(long, default_value_t = 100_000, value_name = "N")]
    queue_spans: usize,

    /// Most spans per request to a sink.
    #[arg(long, default_value_t = 500, value_name = "N")]
    batch_spans: usize,

    /// Longest retry delay of a failing sink (exponential backoff from 100 ms).
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    max_backoff: f64,

    /// At shutdown, how long sinks may keep trying to deliver their queues.
    #[arg(long, default_value_t = 5.0, value_name = "SECS")]
    shutdown_grace: f64,

    /// Log counters every this many seconds.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    stats_interval: f64,

    /// Name this collector gives itself when connecting to relays.
    #[arg(long, default_value = "blkkin-collector")]
    name: String,
}

fn secs(what: &str, v: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(v).with_context(|| format!("--{what} {v} is not a valid duration"))
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let sink_config = SinkConfig {
        queue_spans: cli.queue_spans,
        batch_spans: cli.batch_spans,
        backoff_max: secs("max-backoff", cli.max_backoff)?,
        shutdown_grace: secs("shutdown-grace", cli.shutdown_grace)?,
        ..SinkConfig::default()
    };
    let mut sinks = Vec::new();
    for url in &cli.zipkin_url {
        let format = match cli.zipkin_format {
            ZipkinFormat::Json => HttpFormat::JsonV2,
            ZipkinFormat::Thrift => HttpFormat::ThriftV1,
        };
        let sink = ZipkinHttpSink::new(url, format);
        let name = format!("zipkin {}", sink.url());
        sinks.push(SinkRunner::start(&name, sink, sink_config)?);
    }
    for addr in &cli.scribe {
        sinks.push(SinkRunner::start(
            &format!("scribe {addr}"),
            ScribeSink::new(addr),
            sink_config,
        )?);
    }
    if let Some(path) = &cli.jsonl {
        let sink = JsonLinesSink::open(path)
            .with_context(|| format!("opening {} for JSON lines", path.display()))?;
        sinks.push(SinkRunner::start(
            &format!("jsonl {}", path.display()),
            sink,
            sink_config,
        )?);
    }
    anyhow::ensure!(
        !sinks.is_empty(),
        "no sink given: use --zipkin-url, --scribe and/or --jsonl"
    );

    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handlers")?;
    }
    let (tx, rx) = std::sync::mpsc::sync_channel(64);
    let mut sources = Vec::new();
    for relay in &cli.relay {
        sources.push(RelaySource::start(relay, &cli.name, tx.clone())?);
    }
    drop(tx);
    let assembler = SpanAssembler::new(AssemblerConfig {
        idle_timeout: secs("idle-timeout", cli.idle_timeout)?,
        linger: Duration::from_millis(cli.linger_ms),
        max_open: cli.max_open_spans,
    });
    tracing::info!(
        relays = ?cli.relay,
        sinks = ?sinks.iter().map(|s| s.name().to_string()).collect::<Vec<_>>(),
        "collector started"
    );
    Pipeline {
        assembler,
        sinks,
        sources,
        stats_interval: secs("stats-interval", cli.stats_interval)?,
    }
    .run(rx, &stop);
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
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("blkkin-collector: {e:#}");
            ExitCode::FAILURE
        }
    }
}

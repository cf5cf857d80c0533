//! A whole collector from its options: relay sources, the assembler, every
//! sink asked for and the embedded store's query server. Used by the
//! `blkkin-collector` binary and by `blkkin up` / `blkkin demo`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use clap::ValueEnum;

use crate::archive::{ArchiveConfig, ArchiveLocation};
use crate::assemble::{AssemblerConfig, SpanAssembler, SpanLimits};
use crate::cassandra::{CassandraConfig, CassandraTls, Consistency};
use crate::checkpoint::{Checkpoint, StateDir};
use crate::pipeline::{Checkpointing, Pipeline, Stopped};
use crate::sink::archive::ArchiveSink;
use crate::sink::cassandra::CassandraSinkAdapter;
use crate::sink::http::{tls_trusting, HttpFormat, ZipkinHttpSink};
use crate::sink::jsonl::JsonLinesSink;
use crate::sink::scribe::ScribeSink;
use crate::sink::store::StoreSink;
use crate::sink::{Durability, SinkConfig, SinkRunner};
use crate::source::RelaySource;
use crate::store::{QueryToken, ServerConfig, ServerHandle, Store, StoreConfig, StoreLocation};

/// Zipkin HTTP body format.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ZipkinFormat {
    /// v2 JSON, POST /api/v2/spans.
    Json,
    /// v1 Thrift (TBinaryProtocol list<Span>), POST /api/v1/spans.
    Thrift,
}

/// Where spans go and how the collector behaves (every flag of
/// `blkkin-collector` but the relays).
#[derive(Debug, Clone, clap::Args)]
pub struct CollectorArgs {
    /// Keep spans in the embedded store (SQLite file) and serve Zipkin's v2
    /// query API from it on --listen.
    #[arg(long, value_name = "FILE")]
    pub store: Option<PathBuf>,

    /// Address of the embedded store's Zipkin API (with --store).
    #[arg(long, default_value = "127.0.0.1:9411", value_name = "ADDR")]
    pub listen: SocketAddr,

    /// Embedded store: delete traces older than this (e.g. 7d, 36h).
    #[arg(long, default_value = "7d", value_name = "DURATION")]
    pub store_retention: blkkin::config::Span,

    /// Deprecated (removed in the next release): --store-retention in hours.
    #[arg(long, value_name = "HOURS", hide = true)]
    pub store_retention_hours: Option<f64>,

    /// Embedded store: keep at most this many spans (oldest traces go first).
    #[arg(long, default_value_t = 10_000_000, value_name = "N")]
    pub store_max_spans: u64,

    /// Query API: largest `limit` of /api/v2/traces (and most traceIds of
    /// /api/v2/traceMany); larger limits are clamped to it.
    #[arg(long, default_value_t = crate::store::DEFAULT_MAX_LIMIT, value_name = "N")]
    pub query_max_limit: usize,

    /// Query API: longest `lookback` of /api/v2/traces and
    /// /api/v2/dependencies (e.g. 2d); longer ones are clamped to it
    /// [default: the store's retention].
    #[arg(long, value_name = "DURATION")]
    pub query_max_lookback: Option<blkkin::config::Span>,

    /// Deprecated (removed in the next release): --query-max-lookback in hours.
    #[arg(long, value_name = "HOURS", hide = true)]
    pub query_max_lookback_hours: Option<f64>,

    /// Query API: a heavy query (/traces, /dependencies, /traceMany) running
    /// longer is cancelled and answered 503.
    #[arg(long, default_value = "10s", value_name = "DURATION")]
    pub query_timeout: blkkin::config::Span,

    /// Query API: heavy queries running at once; more are answered 503
    /// (light ones such as /api/v2/services are never held back) [default:
    /// the number of cores].
    #[arg(long, value_name = "N")]
    pub query_concurrency: Option<usize>,

    /// Query API: require `Authorization: Bearer <token>` on every request
    /// but /health, the token being the first line of FILE (401 without it).
    #[arg(long, value_name = "FILE")]
    pub query_token_file: Option<PathBuf>,

    /// Zipkin server: its base URL (e.g. http://127.0.0.1:9411) or the
    /// full endpoint (http://127.0.0.1:9411/api/v2/spans); repeatable.
    #[arg(long, value_name = "URL")]
    pub zipkin_url: Vec<String>,

    /// Trust only the CA certificates of this PEM file for https://
    /// --zipkin-url servers (default: Mozilla's roots).
    #[arg(long, value_name = "FILE")]
    pub zipkin_ca: Option<PathBuf>,

    /// Body format for the --zipkin-url sinks.
    #[arg(long, value_enum, default_value = "json")]
    pub zipkin_format: ZipkinFormat,

    /// Scribe server (Zipkin's Scribe collector), host:port; repeatable.
    #[arg(long, value_name = "HOST:PORT")]
    pub scribe: Vec<String>,

    /// Append spans as JSON lines (Zipkin v2) to this file; `-` for stdout.
    #[arg(long, value_name = "PATH|-")]
    pub jsonl: Option<PathBuf>,

    /// Cassandra contact point (host:port) for Zipkin's cassandra3 schema;
    /// repeatable. Cassandra may start later: the sink waits for it.
    #[arg(long, value_name = "HOST:PORT")]
    pub cassandra: Vec<String>,

    /// Cassandra keyspace holding Zipkin's tables.
    #[arg(long, default_value = "zipkin2", value_name = "NAME")]
    pub cassandra_keyspace: String,

    /// Use an existing keyspace as it is instead of creating Zipkin's schema
    /// when missing.
    #[arg(long)]
    pub cassandra_no_schema: bool,

    /// Cassandra write consistency: one, local-one, quorum, local-quorum, all.
    #[arg(long, default_value = "local-one", value_parser = parse_consistency, value_name = "LEVEL")]
    pub cassandra_consistency: Consistency,

    /// Cassandra user (password in $BLKKIN_CASSANDRA_PASSWORD).
    #[arg(long, value_name = "USER")]
    pub cassandra_user: Option<String>,

    /// Speak TLS to Cassandra (its client_encryption_options); the node's
    /// certificate is verified against the system CAs or --cassandra-ca.
    #[arg(long)]
    pub cassandra_tls: bool,

    /// PEM CA certificate(s) to trust for Cassandra's TLS (implies
    /// --cassandra-tls).
    #[arg(long, value_name = "FILE")]
    pub cassandra_ca: Option<PathBuf>,

    /// PEM client certificate for Cassandra's require_client_auth (implies
    /// --cassandra-tls; needs --cassandra-key).
    #[arg(long, value_name = "FILE", requires = "cassandra_key")]
    pub cassandra_cert: Option<PathBuf>,

    /// Unencrypted PEM private key of --cassandra-cert.
    #[arg(long, value_name = "FILE", requires = "cassandra_cert")]
    pub cassandra_key: Option<PathBuf>,

    /// Emit a span without its closing annotation after this long without
    /// annotations (and forget emitted spans after as long).
    #[arg(long, default_value = "30s", value_name = "DURATION")]
    pub idle_timeout: blkkin::config::Span,

    /// Wait this long after a closing annotation before emitting, so the
    /// other side of a shared span can arrive.
    #[arg(long, default_value = "200ms", value_name = "DURATION")]
    pub linger: blkkin::config::Span,

    /// Deprecated (removed in the next release): --linger in milliseconds.
    #[arg(long, value_name = "MS", hide = true)]
    pub linger_ms: Option<u64>,

    /// Most spans held by the assembler; the least recently active is
    /// emitted early and forgotten beyond it (counted as evicted).
    #[arg(long, default_value_t = 100_000, value_name = "N")]
    pub max_open_spans: usize,

    /// Most annotations (timestamped events) kept per span; later ones are
    /// dropped and counted (annotations_dropped).
    #[arg(long, default_value_t = 128, value_name = "N")]
    pub max_span_annotations: usize,

    /// Most tags kept per span; later new keys are dropped and counted
    /// (tags_dropped).
    #[arg(long, default_value_t = 128, value_name = "N")]
    pub max_span_tags: usize,

    /// Longest annotation value, tag key or tag value in bytes; longer ones
    /// are cut and counted (values_truncated).
    #[arg(long, default_value_t = 65536, value_name = "BYTES")]
    pub max_value_bytes: usize,

    /// Spans each sink may queue; beyond it spans are dropped and counted.
    #[arg(long, default_value_t = 100_000, value_name = "N")]
    pub queue_spans: usize,

    /// Most spans per request to a sink.
    #[arg(long, default_value_t = 500, value_name = "N")]
    pub batch_spans: usize,

    /// Longest retry delay of a failing sink (exponential backoff from 100 ms).
    #[arg(long, default_value = "10s", value_name = "DURATION")]
    pub max_backoff: blkkin::config::Span,

    /// At shutdown, how long sinks may keep trying to deliver their queues.
    #[arg(long, default_value = "5s", value_name = "DURATION")]
    pub shutdown_grace: blkkin::config::Span,

    /// Log counters this often.
    #[arg(long, default_value = "10s", value_name = "DURATION")]
    pub stats_interval: blkkin::config::Span,

    /// Name this collector gives itself when connecting to relays (and its
    /// archive writer id: unique per collector).
    #[arg(long, default_value = "blkkin-collector")]
    pub name: String,

    /// TLS and token settings for the relay connections (docs/SECURITY.md).
    #[command(flatten)]
    pub relay_auth: blkkin::tls::ClientAuthOptions,

    /// Keep checkpoints here: each relay stream's next position and the
    /// assembler's open spans, written once every durable sink (store,
    /// Cassandra, archive) acknowledged the spans before them. A restart
    /// resumes from the last one instead of re-reading relays from the
    /// oldest record. Without it (and without --archive) nothing is kept.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Time between checkpoints (with --state-dir; with --archive a
    /// checkpoint is an archive commit and follows --archive-roll-interval
    /// and --archive-roll-size instead).
    #[arg(long, default_value = "2s", value_name = "DURATION")]
    pub checkpoint_interval: blkkin::config::Span,

    /// Also archive every span as Zipkin v2 JSON lines partitioned by hour
    /// (docs/ARCHIVE.md): a local directory or hdfs://host:port/path.
    /// Exactly once across crashes: each archive commit carries the
    /// collector's checkpoint.
    #[arg(long, value_name = "DIR|URL")]
    pub archive: Option<String>,

    /// Archive file compression: none, gzip, zstd.
    #[arg(long, default_value = "none", value_name = "KIND")]
    pub archive_compression: crate::archive::Compression,

    /// Commit the archive (and checkpoint) once this many MiB of JSON are
    /// buffered.
    #[arg(long, default_value_t = 64, value_name = "MIB")]
    pub archive_roll_size: u64,

    /// Commit the archive (and checkpoint) at least this often.
    #[arg(long, default_value = "60s", value_name = "DURATION")]
    pub archive_roll_interval: blkkin::config::Span,

    /// HDFS user of an hdfs:// archive (default: $HADOOP_USER_NAME or the
    /// login name).
    #[arg(long, value_name = "USER")]
    pub archive_user: Option<String>,
}

fn parse_consistency(s: &str) -> Result<Consistency, String> {
    Ok(match s.to_ascii_lowercase().replace('_', "-").as_str() {
        "one" => Consistency::One,
        "local-one" => Consistency::LocalOne,
        "quorum" => Consistency::Quorum,
        "local-quorum" => Consistency::LocalQuorum,
        "all" => Consistency::All,
        _ => {
            return Err(format!(
                "unknown consistency {s:?} (one, local-one, quorum, local-quorum, all)"
            ))
        }
    })
}

fn secs(what: &str, v: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(v).with_context(|| format!("--{what} {v} is not a valid duration"))
}

/// `new`, or what a deprecated flag in other units (`old`, converted by
/// `to_secs`) says, with a warning naming the flag to use.
fn deprecated(
    new: Duration,
    old: Option<f64>,
    old_flag: &str,
    new_flag: &str,
    to_secs: f64,
) -> anyhow::Result<Duration> {
    let Some(v) = old else { return Ok(new) };
    tracing::warn!(
        "--{old_flag} is deprecated and goes in the next release: use --{new_flag} \
         (a duration such as 500ms, 90s, 1h30m or 7d)"
    );
    secs(old_flag, v * to_secs)
}

/// A running collector.
pub struct Collector {
    stop: Arc<AtomicBool>,
    pipeline: Option<JoinHandle<Stopped>>,
    query: Option<(tokio::runtime::Runtime, ServerHandle)>,
    store: Option<Store>,
}

impl Collector {
    /// Starts reading `relays` and delivering to every sink of `args`
    /// (at least one). `stop` ends it (see [`Collector::stop`]).
    /// Checkpoints know each relay by its address.
    pub fn start(
        relays: &[String],
        args: &CollectorArgs,
        stop: Arc<AtomicBool>,
    ) -> anyhow::Result<Collector> {
        Collector::start_with_ids(relays, relays, args, stop)
    }

    /// As [`Collector::start`], with `ids[i]` the name checkpoints give
    /// `relays[i]`: a relay whose address changes from run to run (`blkkin
    /// up` with `--relay-listen 127.0.0.1:0`) but is the same relay on the
    /// same data is resumed where it was. A checkpoint written under the
    /// address (before an id was given) is resumed too.
    pub fn start_with_ids(
        relays: &[String],
        ids: &[String],
        args: &CollectorArgs,
        stop: Arc<AtomicBool>,
    ) -> anyhow::Result<Collector> {
        anyhow::ensure!(!relays.is_empty(), "no relay to read");
        anyhow::ensure!(ids.len() == relays.len(), "one checkpoint id per relay");
        let sink_config = SinkConfig {
            queue_spans: args.queue_spans,
            batch_spans: args.batch_spans,
            backoff_max: args.max_backoff.0,
            shutdown_grace: args.shutdown_grace.0,
            ..SinkConfig::default()
        };
        let span_limits = SpanLimits {
            max_annotations: args.max_span_annotations,
            max_tags: args.max_span_tags,
            max_value_bytes: args.max_value_bytes,
        };
        let mut sinks = Vec::new();
        let mut store = None;
        let mut query = None;
        if let Some(path) = &args.store {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            let retention = deprecated(
                args.store_retention.0,
                args.store_retention_hours,
                "store-retention-hours",
                "store-retention",
                3600.0,
            )?;
            let mut server = ServerConfig::from_env();
            server.max_limit = args.query_max_limit;
            server.max_lookback = deprecated(
                args.query_max_lookback.map_or(retention, |d| d.0),
                args.query_max_lookback_hours,
                "query-max-lookback-hours",
                "query-max-lookback",
                3600.0,
            )?;
            server.query_timeout = args.query_timeout.0;
            if let Some(file) = &args.query_token_file {
                server.token = Some(QueryToken::from_file(file)?);
            }
            if let Some(n) = args.query_concurrency {
                server.max_heavy_queries = n.max(1);
            }
            let config = StoreConfig {
                retention,
                max_spans: args.store_max_spans,
                // Every heavy query may hold one; two more for light ones.
                read_connections: server.max_heavy_queries + 2,
                limits: span_limits,
                ..StoreConfig::default()
            };
            let s = Store::open_with(StoreLocation::File(path.clone()), config)
                .with_context(|| format!("opening the store {}", path.display()))?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("store-http")
                .enable_all()
                .build()
                .context("starting the query server's runtime")?;
            let handle = rt
                .block_on(crate::store::serve_with(args.listen, s.clone(), server))
                .with_context(|| {
                    format!(
                        "serving the embedded store's Zipkin API on {} (another address: --listen)",
                        args.listen
                    )
                })?;
            sinks.push(SinkRunner::start_durable(
                &format!("store {}", path.display()),
                StoreSink::new(s.clone()),
                sink_config,
                Durability::OnSend,
            )?);
            query = Some((rt, handle));
            store = Some(s);
        }
        let zipkin_tls = match &args.zipkin_ca {
            Some(ca) => Some(tls_trusting(ca).context("--zipkin-ca")?),
            None => None,
        };
        for url in &args.zipkin_url {
            let format = match args.zipkin_format {
                ZipkinFormat::Json => HttpFormat::JsonV2,
                ZipkinFormat::Thrift => HttpFormat::ThriftV1,
            };
            crate::sink::http::endpoint(url, format)
                .map_err(|e| anyhow::anyhow!("--zipkin-url: {e}"))?;
            let sink = match &zipkin_tls {
                Some(tls) => ZipkinHttpSink::with_tls(url, format, tls.clone()),
                None => ZipkinHttpSink::new(url, format),
            };
            let name = format!("zipkin {}", sink.url());
            sinks.push(SinkRunner::start(&name, sink, sink_config)?);
        }
        for addr in &args.scribe {
            sinks.push(SinkRunner::start(
                &format!("scribe {addr}"),
                ScribeSink::new(addr),
                sink_config,
            )?);
        }
        if let Some(path) = &args.jsonl {
            let sink = JsonLinesSink::open(path)
                .with_context(|| format!("opening {} for JSON lines", path.display()))?;
            sinks.push(SinkRunner::start(
                &format!("jsonl {}", path.display()),
                sink,
                sink_config,
            )?);
        }
        if !args.cassandra.is_empty() {
            let credentials = match &args.cassandra_user {
                None => None,
                Some(user) => Some((
                    user.clone(),
                    std::env::var("BLKKIN_CASSANDRA_PASSWORD").map_err(|_| {
                        anyhow!("--cassandra-user needs the password in $BLKKIN_CASSANDRA_PASSWORD")
                    })?,
                )),
            };
            let tls = (args.cassandra_tls
                || args.cassandra_ca.is_some()
                || args.cassandra_cert.is_some())
            .then(|| CassandraTls {
                ca_file: args.cassandra_ca.clone(),
                client_cert: args.cassandra_cert.clone().zip(args.cassandra_key.clone()),
            });
            if let Some(tls) = &tls {
                // Bad files fail the start, not every later connection attempt.
                tls.connector()?;
            }
            let config = CassandraConfig {
                tls,
                contact_points: args.cassandra.clone(),
                keyspace: args.cassandra_keyspace.clone(),
                ensure_schema: !args.cassandra_no_schema,
                consistency: args.cassandra_consistency,
                credentials,
                ..CassandraConfig::default()
            };
            sinks.push(SinkRunner::start_durable(
                &format!("cassandra {}", args.cassandra.join(",")),
                CassandraSinkAdapter::new(config),
                sink_config,
                Durability::OnSend,
            )?);
        }
        let mut restored: Option<Checkpoint> = None;
        let mut roll_wanted = Vec::new();
        let mut interval = args.checkpoint_interval.0;
        if let Some(url) = &args.archive {
            let location = ArchiveLocation::parse(url, args.archive_user.clone())
                .with_context(|| format!("--archive {url}"))?;
            let mut config = ArchiveConfig::new(args.name.clone());
            config.compression = args.archive_compression;
            config.roll_bytes = args.archive_roll_size.max(1) << 20;
            interval = args.archive_roll_interval.0;
            // Commits happen at checkpoint barriers, not on the writer's own clock.
            config.roll_interval = Duration::MAX;
            let sink = ArchiveSink::open(location, config)
                .with_context(|| format!("opening the archive {url}"))?;
            if let Some(text) = sink.committed_checkpoint() {
                let c = Checkpoint::from_json(text.as_bytes(), std::path::Path::new(url))?;
                restored = Some(c);
            }
            roll_wanted.push(sink.roll_wanted());
            sinks.push(SinkRunner::start_durable(
                &format!("archive {}", sink.describe()),
                sink,
                sink_config,
                Durability::OnCommit,
            )?);
        }
        anyhow::ensure!(
            !sinks.is_empty(),
            "no sink given: use --store, --zipkin-url, --scribe, --jsonl, --cassandra and/or --archive"
        );
        let state = match &args.state_dir {
            Some(dir) => {
                let state = StateDir::open(dir)?;
                if let Some(c) = state.load()? {
                    // The archive's manifest may hold a newer one (written
                    // in the commit just before a crash).
                    if restored.as_ref().is_none_or(|r| r.id < c.id) {
                        restored = Some(c);
                    }
                }
                Some(state)
            }
            None => None,
        };

        let assembler_config = AssemblerConfig {
            idle_timeout: args.idle_timeout.0,
            linger: deprecated(
                args.linger.0,
                args.linger_ms.map(|ms| ms as f64),
                "linger-ms",
                "linger",
                0.001,
            )?,
            max_open: args.max_open_spans,
            limits: span_limits,
        };
        let checkpoints = (state.is_some() || args.archive.is_some()).then(|| Checkpointing {
            state,
            interval,
            relays: ids.to_vec(),
            next_id: 1,
            emitted: 0,
            positions: Default::default(),
            roll_wanted,
            written: 0,
        });
        let (assembler, checkpoints) = match (restored, checkpoints) {
            (Some(c), Some(mut ck)) => {
                let (assembler, skipped) =
                    SpanAssembler::restore(assembler_config, c.assembler.clone(), Instant::now());
                for (i, (relay, id)) in relays.iter().zip(ids).enumerate() {
                    let mut resume = c.resume(id);
                    if resume.is_empty() {
                        resume = c.resume(relay);
                    }
                    for (key, next) in resume {
                        ck.positions.insert((i, key), next);
                    }
                }
                ck.next_id = c.id + 1;
                ck.emitted = c.emitted;
                tracing::info!(
                    checkpoint = c.id,
                    streams = ck.positions.len(),
                    open_spans = assembler.open_spans(),
                    skipped_spans = skipped,
                    "resuming from checkpoint"
                );
                (assembler, Some(ck))
            }
            (_, ck) => (SpanAssembler::new(assembler_config), ck),
        };

        let auth = blkkin::tls::ClientAuth::from_options(&args.relay_auth)
            .context("relay authentication settings")?;
        let (tx, rx) = std::sync::mpsc::sync_channel(64);
        let mut sources = Vec::new();
        for (i, relay) in relays.iter().enumerate() {
            let resume = checkpoints.as_ref().map_or_else(Vec::new, |c| {
                (c.positions.iter())
                    .filter(|((r, _), _)| *r == i)
                    .map(|((_, key), next)| (key.clone(), *next))
                    .collect()
            });
            sources.push(RelaySource::start(
                relay,
                i,
                &args.name,
                &auth,
                resume,
                tx.clone(),
            )?);
        }
        drop(tx);
        tracing::info!(
            relays = ?relays,
            sinks = ?sinks.iter().map(|s| s.name().to_string()).collect::<Vec<_>>(),
            "collector started"
        );
        let pipeline = Pipeline {
            assembler,
            sinks,
            sources,
            stats_interval: args.stats_interval.0,
            checkpoints,
        };
        let flag = stop.clone();
        let pipeline = std::thread::Builder::new()
            .name("collector".into())
            .spawn(move || pipeline.run(rx, &flag))
            .context("starting the collector thread")?;
        Ok(Collector {
            stop,
            pipeline: Some(pipeline),
            query,
            store,
        })
    }

    /// Where the embedded store's Zipkin API listens (with `--store`).
    pub fn query_addr(&self) -> Option<SocketAddr> {
        self.query.as_ref().map(|(_, h)| h.local_addr())
    }

    /// The embedded store (with `--store`).
    pub fn store(&self) -> Option<&Store> {
        self.store.as_ref()
    }

    /// Blocks until the pipeline ended (its stop flag set, or every source
    /// gone); how it stopped (None: it had already been waited for, or it
    /// panicked).
    pub fn wait(&mut self) -> Option<Stopped> {
        match self.pipeline.take()?.join() {
            Ok(s) => Some(s),
            Err(_) => {
                tracing::error!("the collector thread panicked");
                None
            }
        }
    }

    /// Sets the stop flag, emits the open spans (or, with checkpoints,
    /// keeps them in the last one), flushes the sinks and stops the query
    /// server.
    pub fn stop(mut self) -> Option<Stopped> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let stopped = self.wait();
        if let Some((rt, handle)) = self.query.take() {
            rt.block_on(handle.shutdown());
        }
        stopped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: CollectorArgs,
    }

    fn parse(args: &[&str]) -> CollectorArgs {
        Cli::try_parse_from([&["blkkin-collector"], args].concat())
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
            .args
    }

    #[test]
    fn durations_take_one_syntax_and_bare_seconds_still_work() {
        let a = parse(&[
            "--idle-timeout",
            "1h30m",
            "--linger",
            "1500ms",
            "--stats-interval",
            "0.5",
            "--store-retention",
            "2d",
        ]);
        assert_eq!(a.idle_timeout.0, Duration::from_secs(5400));
        assert_eq!(a.linger.0, Duration::from_millis(1500));
        assert_eq!(a.stats_interval.0, Duration::from_millis(500));
        assert_eq!(a.store_retention.0, Duration::from_secs(2 * 86400));
        let d = parse(&[]);
        assert_eq!(d.linger.0, Duration::from_millis(200));
        assert_eq!(d.idle_timeout.0, Duration::from_secs(30));
        assert_eq!(d.store_retention.0, Duration::from_secs(7 * 86400));
        assert!(Cli::try_parse_from(["c", "--linger", "1h30"]).is_err());
    }

    #[test]
    fn the_old_unit_flags_still_work_for_one_release() {
        let a = parse(&["--linger-ms", "300", "--store-retention-hours", "36"]);
        let linger = deprecated(
            a.linger.0,
            a.linger_ms.map(|ms| ms as f64),
            "linger-ms",
            "linger",
            0.001,
        );
        assert_eq!(linger.unwrap(), Duration::from_millis(300));
        let retention = deprecated(
            a.store_retention.0,
            a.store_retention_hours,
            "store-retention-hours",
            "store-retention",
            3600.0,
        );
        assert_eq!(retention.unwrap(), Duration::from_secs(36 * 3600));
        // Without the old flag, the new one's value.
        assert_eq!(
            deprecated(Duration::from_secs(1), None, "x", "y", 1.0).unwrap(),
            Duration::from_secs(1)
        );
    }
}

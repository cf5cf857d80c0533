//! `blkkin`: the user's entry point to the BlkKin tracing pipeline.
//!
//! Thin by design: argument parsing and output formatting here, everything
//! else in the `blkkin` library.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use blkkin::ring::ReadMode;
use blkkin::tls::certs::CertRequest;
use blkkin::tls::ClientAuthOptions;
use clap::{Parser, Subcommand};

// The collector runs in this process under `blkkin up`/`demo`.
#[cfg(any(feature = "stack", feature = "analyze"))]
#[global_allocator]
static ALLOC: blkkin_collector::Allocator = blkkin_collector::ALLOCATOR;

#[cfg(feature = "analyze")]
mod analyze;
#[cfg(feature = "stack")]
mod demo;
mod status;
mod tail;
#[cfg(feature = "stack")]
mod up;
mod workload;

#[derive(Parser)]
#[command(
    name = "blkkin",
    version,
    about = "BlkKin: Dapper-style tracing for storage daemons, in Rust"
)]
#[command(
    long_about = "BlkKin records trace annotations from instrumented processes (C via -lblkin, or \
Rust) into per-CPU shared-memory rings. This tool inspects those rings, runs the node stack \
and a demo, follows a relay live, and analyzes the span archive."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print every annotation currently in the rings, then a summary line.
    ///
    /// Reads the ring files of one directory (default: the per-user ring
    /// directory, /dev/shm/blkin-<uid>, or $BLKIN_SHM_DIR). Non-destructive
    /// unless --consume is given. Text output is one line per annotation;
    /// --json prints one JSON object per annotation with traceId, id,
    /// parentId (absent for roots), name, serviceName, ipv4 (or ipv6), port,
    /// timestamp (epoch µs), kind (event|string|integer), value, key (for
    /// key/values), pid and cpu, and a final {"summary": {...}} object.
    Dump {
        /// Ring directory [default: $BLKIN_SHM_DIR or /dev/shm/blkin-<uid>]
        #[arg(long, short = 'd', value_name = "DIR")]
        dir: Option<PathBuf>,
        /// One JSON object per line instead of text.
        #[arg(long)]
        json: bool,
        /// Free the ring space of what is printed (like a consumer would);
        /// refuses rings that a running consumer owns.
        #[arg(long)]
        consume: bool,
    },
    /// Print annotations live as a relay receives them (Ctrl-C to stop).
    ///
    /// Connects to a relay (blkkin-relayd) as a live reader and prints every
    /// annotation of every stream, current and future, in the same text or
    /// --json form as `blkkin dump`. After a lost connection it reconnects
    /// and continues each stream where it stopped (no duplicates).
    ///
    /// Losses are shown as they are counted: a line starting with "# loss"
    /// (text) or a JSON object with "type": "counters" (--json) whenever a
    /// stream's number of lost records changes, with every counter (records
    /// dropped by writers on a full ring, torn records of a writer killed
    /// mid-record, records the relay never received, ...).
    Tail {
        /// Relay address, host:port.
        #[arg(value_name = "HOST:PORT")]
        relay: String,
        /// One JSON object per line instead of text.
        #[arg(long)]
        json: bool,
        /// Start with everything the relay holds instead of only new records.
        #[arg(long)]
        from_oldest: bool,
        /// Exit after this many annotations.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
        #[command(flatten)]
        auth: ClientAuthOptions,
    },
    /// Run the whole pipeline with a sample traced storage stack, then show
    /// where to look.
    ///
    /// Starts what `blkkin up` starts, runs `blkkin workload` (client →
    /// volume → mapper → blocker, four processes traced through the C ABI),
    /// waits until every span is in the embedded store, prints a summary
    /// (traces, spans, p50/p99 per layer) and the Zipkin API address, then
    /// keeps serving until Ctrl-C (or exits with --exit).
    #[cfg(feature = "stack")]
    Demo(demo::DemoArgs),
    /// Run the node stack in one process until Ctrl-C.
    ///
    /// Relay, consumer, collector and embedded store: the consumer drains
    /// every ring of the ring directory (processes started before or after)
    /// into the relay, which persists the streams and serves live readers
    /// (`blkkin tail ADDR`); the collector assembles spans into the embedded
    /// store, served with Zipkin's v2 query API on --listen (and to any other
    /// sink given). Ctrl-C drains the rings, waits for the relay's
    /// acknowledgements, has the collector deliver every span it completed
    /// to its sinks, then stops. Spans still open at that moment (waiting
    /// for their end, for another side or for --linger) are kept in the
    /// collector's checkpoint under DATA_DIR and emitted at the next
    /// `blkkin up` on the same DATA_DIR; the count is logged at stop.
    #[cfg(feature = "stack")]
    Up(up::StackArgs),
    /// Run the sample workload: a traced storage stack of four processes.
    ///
    /// client → volume → mapper → blocker, separate processes over sockets,
    /// instrumented only through the C API (zipkin_c.h) and passing packed
    /// trace info with each request; every 10th request is slow and every
    /// 25th fails with EIO. Its annotations land in the ring directory
    /// ($BLKIN_SHM_DIR or /dev/shm/blkin-<uid>) like any traced daemon's.
    /// Every request is traced unless BLKIN_RATE is set.
    Workload(workload::WorkloadArgs),
    /// Show a relay's state: streams, record rates, losses, consumers, readers.
    ///
    /// Lists every stream the relay holds (node, pid, cpu, oldest and next
    /// position, closed), its record rate (from two samples --interval
    /// apart) and its loss counters; every connected consumer with its own
    /// counters (records read and acknowledged, buffered bytes, times its
    /// buffer filled up, reconnects, batches re-sent); and the connected
    /// readers. --json prints one JSON object.
    Status {
        /// Relay address, host:port.
        #[arg(value_name = "HOST:PORT")]
        relay: String,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Seconds between the two samples the rates come from (0: one
        /// sample, no rates).
        #[arg(long, default_value_t = 1.0, value_name = "SECS")]
        interval: f64,
        #[command(flatten)]
        auth: ClientAuthOptions,
    },
    /// Make a test CA and certificates for relays, producers and readers.
    ///
    /// Writes PEM files (keys mode 0600) into --out: with --ca a new CA
    /// (ca.pem, ca.key); with --server a relay certificate (server.pem,
    /// server.key) for those host names or IP addresses; with --producer
    /// NODE a consumer's certificate (producer-NODE.pem/.key, SAN URI
    /// blkkin:producer:NODE: it may only send that node's streams); with
    /// --reader NAME a reader's (reader-NAME.pem/.key, blkkin:reader:NAME:
    /// it may only read). Without --ca it signs with the ca.key already in
    /// --out. For production, an organisation's own PKI does the same job
    /// (docs/SECURITY.md, "Setting up certificates").
    ///
    /// Example: blkkin certs --out /etc/blkkin/pki --ca --server relay1.example,10.0.0.5 \
    ///              --producer osd-1 --reader collector
    #[command(verbatim_doc_comment)]
    Certs {
        /// Directory to write into (created mode 0700).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Make a new CA first (replacing ca.pem/ca.key in --out).
        #[arg(long)]
        ca: bool,
        /// Relay certificate for these host names / IP addresses (comma-separated).
        #[arg(long, value_name = "HOST,...", value_delimiter = ',')]
        server: Vec<String>,
        /// Producer (consumer daemon) certificate for this node; repeatable.
        #[arg(long, value_name = "NODE")]
        producer: Vec<String>,
        /// Reader (collector, tail, status) certificate of this name; repeatable.
        #[arg(long, value_name = "NAME")]
        reader: Vec<String>,
    },
    /// Latency and error statistics from the span archive (local or HDFS).
    ///
    /// Reads the archive the collector writes (newline-delimited Zipkin v2
    /// JSON under dt=YYYY-MM-DD/hour=HH/, plain, gzip or zstd) and computes
    /// with SQL (Apache DataFusion) per service and span name: spans, errors,
    /// mean, p50/p95/p99 and max duration; then the slowest traces. Hour
    /// partitions outside --from/--to are not read. The same files and
    /// queries work in Spark and Hive (docs/ARCHIVE.md).
    #[cfg(feature = "analyze")]
    Analyze(analyze::AnalyzeArgs),
    /// Remove the ring files of processes that have exited.
    ///
    /// A running consumer daemon does this by itself after draining; without
    /// one, rings of exited processes stay in the ring directory (in RAM
    /// under /dev/shm). Records still unread in them are discarded and
    /// reported.
    Clean {
        /// Ring directory [default: $BLKIN_SHM_DIR or /dev/shm/blkin-<uid>]
        #[arg(long, short = 'd', value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Only report what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
}

pub(crate) fn ring_dir(dir: Option<PathBuf>) -> PathBuf {
    dir.or_else(|| {
        std::env::var_os("BLKIN_SHM_DIR")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    })
    .unwrap_or_else(blkkin::config::default_shm_dir)
}

/// Runs `blkkin certs`.
fn certs(req: CertRequest) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        req.new_ca
            || !req.server.is_empty()
            || !req.producers.is_empty()
            || !req.readers.is_empty(),
        "nothing to make: give --ca, --server, --producer or --reader"
    );
    for path in blkkin::tls::certs::generate(&req)? {
        println!("{}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn dump(dir: Option<PathBuf>, json: bool, consume: bool) -> anyhow::Result<ExitCode> {
    let dir = ring_dir(dir);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut write_err = None;
    let mode = if consume {
        ReadMode::Consume
    } else {
        ReadMode::Peek
    };
    let summary = blkkin::dump::dump_dir(
        &dir,
        mode,
        |a| {
            if write_err.is_some() {
                return;
            }
            let r = if json {
                serde_json::to_writer(&mut out, a)
                    .map_err(std::io::Error::from)
                    .and_then(|_| out.write_all(b"\n"))
            } else {
                writeln!(out, "{a}")
            };
            if let Err(e) = r {
                write_err = Some(e);
            }
        },
        |e| eprintln!("blkkin dump: skipping {e}"),
    )
    .with_context(|| format!("reading ring directory {}", dir.display()))?;
    if let Some(e) = write_err {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            return Ok(ExitCode::SUCCESS);
        }
        return Err(e).context("writing output");
    }
    if json {
        serde_json::to_writer(&mut out, &serde_json::json!({ "summary": summary }))?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "# {} rings: {} read, {} lost, {} skipped{}{}",
            summary.rings,
            summary.read,
            summary.lost,
            summary.skipped,
            if summary.unreadable > 0 {
                format!(", {} unreadable rings", summary.unreadable)
            } else {
                String::new()
            },
            if summary.unfinished_rings > 0 {
                format!(
                    ", {} rings with a record still being written",
                    summary.unfinished_rings
                )
            } else {
                String::new()
            },
        )?;
    }
    out.flush().or_else(|e| {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            Ok(())
        } else {
            Err(e)
        }
    })?;
    Ok(if summary.unreadable > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn clean(dir: Option<PathBuf>, dry_run: bool) -> anyhow::Result<ExitCode> {
    let dir = ring_dir(dir);
    let s = blkkin::dump::clean_dir(&dir, dry_run)
        .with_context(|| format!("cleaning {}", dir.display()))?;
    println!(
        "{} {} ring files of exited processes ({} unread records discarded); kept {}",
        if dry_run { "would remove" } else { "removed" },
        s.removed,
        s.unread_records,
        s.kept
    );
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Dump { dir, json, consume } => dump(dir, json, consume),
        Command::Clean { dir, dry_run } => clean(dir, dry_run),
        Command::Workload(args) => workload::run(&args),
        #[cfg(feature = "stack")]
        Command::Up(args) => up::up(&args),
        #[cfg(feature = "stack")]
        Command::Demo(args) => demo::run(&args),
        #[cfg(feature = "analyze")]
        Command::Analyze(args) => analyze::run(&args),
        Command::Tail {
            relay,
            json,
            from_oldest,
            count,
            auth,
        } => tail::tail(&relay, &auth, json, from_oldest, count),
        Command::Status {
            relay,
            json,
            interval,
            auth,
        } => status::status(&relay, &auth, json, interval),
        Command::Certs {
            out,
            ca,
            server,
            producer,
            reader,
        } => certs(CertRequest {
            out,
            new_ca: ca,
            server,
            producers: producer,
            readers: reader,
        }),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("blkkin: {e:#}");
            ExitCode::from(2)
        }
    }
}

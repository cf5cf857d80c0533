//! `analyze` as a stand-alone program until `blkkin analyze` is wired into
//! the root CLI: latency and error statistics per service and span name,
//! and the slowest traces, over a span archive (local or HDFS).
//!
//! cargo run -p blkkin-collector --example analyze -- ARCHIVE [--from T] [--to T] [--format table|json|csv]

use anyhow::{Context, Result};
use blkkin_collector::analyze::{self, AnalyzeOptions, OutputFormat};
use blkkin_collector::archive::ArchiveLocation;
use clap::Parser;

/// Statistics over a blkkin span archive (NDJSON of Zipkin v2 spans in
/// dt=YYYY-MM-DD/hour=HH partitions), computed with SQL by Apache
/// DataFusion.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// The archive: a local directory, or hdfs://namenode:port/path.
    archive: String,
    /// HDFS user (default: HADOOP_USER_NAME or the login user).
    #[arg(long, env = "HADOOP_USER_NAME")]
    user: Option<String>,
    /// Only spans starting at or after this time: epoch microseconds,
    /// YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS]Z (UTC).
    #[arg(long)]
    from: Option<String>,
    /// Only spans starting before this time (same forms as --from).
    #[arg(long)]
    to: Option<String>,
    /// How many of the slowest traces to list.
    #[arg(long, default_value_t = 10)]
    slowest: usize,
    /// Output format: table, json or csv.
    #[arg(long, default_value = "table")]
    format: OutputFormat,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let time = |t: &Option<String>| -> Result<Option<u64>> {
        t.as_deref()
            .map(analyze::parse_time_micros)
            .transpose()
            .context("bad --from/--to")
    };
    let opts = AnalyzeOptions {
        location: ArchiveLocation::parse(&args.archive, args.user.clone())
            .context("bad archive location")?,
        from_micros: time(&args.from)?,
        to_micros: time(&args.to)?,
        slowest: args.slowest,
    };
    let report = analyze::run(&opts).with_context(|| format!("analyzing {}", args.archive))?;
    print!("{}", analyze::render(&report, args.format));
    Ok(())
}

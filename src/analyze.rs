//! `blkkin analyze`: latency and error statistics per service and span
//! name, and the slowest traces, over a span archive (local directory or
//! HDFS). The work is `blkkin_collector::analyze` (Apache DataFusion); this
//! is argument handling and output.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{bail, Context};
use blkkin_collector::analyze::{self, AnalyzeOptions, OutputFormat};
use blkkin_collector::archive::ArchiveLocation;

/// Arguments of `blkkin analyze`.
#[derive(clap::Args, Debug)]
#[command(after_long_help = "\
Examples:
  blkkin analyze /var/lib/blkkin/archive
  blkkin analyze hdfs://namenode:9000/blkkin/spans --from 1h --hdfs-user blkkin
  blkkin analyze ./archive --from 2024-02-28T22:00:00Z --to 2024-02-28T23:00:00Z --format csv
  blkkin analyze ./archive --service osd --span journal --slowest 20 --format json

Output: per (service, span name) the number of spans, how many carry an
`error` tag, and the mean, p50, p95, p99 and maximum duration (exact,
percentile_cont with linear interpolation), then the slowest traces (root
span duration, or the trace's extent when its root span is not in the
archive). The table and CSV show milliseconds; JSON has the raw
microseconds (mean_us, p50_us, ...) and the counts of files read, files
skipped by the time range and lines that were not spans.

Exit status: 0 with a report, 1 when no span matches, 2 on any error
(missing directory, unreachable NameNode, bad argument).")]
pub struct AnalyzeArgs {
    /// The archive: a local directory, or hdfs://host:port/path on HDFS
    /// (the root given to the collector's archive sink).
    #[arg(value_name = "DIR|hdfs://HOST:PORT/PATH")]
    archive: String,
    /// Only spans starting at or after this time: RFC 3339
    /// (2024-02-28T22:00:00Z, ...+01:00), a date (2024-02-28, UTC), epoch
    /// microseconds, or a duration before now (30m, 1h, 2d, 1w, 1h30m).
    #[arg(long, value_name = "TIME")]
    from: Option<String>,
    /// Only spans starting before this time (same forms as --from).
    #[arg(long, value_name = "TIME")]
    to: Option<String>,
    /// Only spans of this service (local endpoint's serviceName); the
    /// slowest traces are then those that have such a span.
    #[arg(long, value_name = "NAME")]
    service: Option<String>,
    /// Only spans of this name (combines with --service).
    #[arg(long, value_name = "NAME")]
    span: Option<String>,
    /// How many of the slowest traces to list (0: none).
    #[arg(long, value_name = "N", default_value_t = 10)]
    slowest: usize,
    /// Output format: table (for a terminal), json or csv.
    #[arg(long, value_name = "FORMAT", default_value = "table")]
    format: OutputFormat,
    /// HDFS user to read as [default: $HADOOP_USER_NAME, else the login user].
    #[arg(long, value_name = "USER", env = "HADOOP_USER_NAME")]
    hdfs_user: Option<String>,
}

fn time(flag: &str, value: Option<&str>) -> anyhow::Result<Option<u64>> {
    value
        .map(|v| analyze::parse_time_micros(v).with_context(|| format!("bad {flag}")))
        .transpose()
}

/// Runs `blkkin analyze`.
pub fn run(args: &AnalyzeArgs) -> anyhow::Result<ExitCode> {
    let location = ArchiveLocation::parse(&args.archive, args.hdfs_user.clone())
        .context("bad archive location")?;
    let from_micros = time("--from", args.from.as_deref())?;
    let to_micros = time("--to", args.to.as_deref())?;
    if let (Some(f), Some(t)) = (from_micros, to_micros) {
        if f >= t {
            bail!(
                "--from ({}) is not before --to ({})",
                args.from.as_deref().unwrap_or_default(),
                args.to.as_deref().unwrap_or_default()
            );
        }
    }
    let opts = AnalyzeOptions {
        from_micros,
        to_micros,
        service: args.service.clone(),
        span_name: args.span.clone(),
        slowest: args.slowest,
        ..AnalyzeOptions::new(location)
    };
    let report = analyze::run(&opts).with_context(|| format!("cannot analyze {}", args.archive))?;
    if report.spans == 0 {
        eprintln!(
            "blkkin analyze: no spans{} in {} ({} data files read, {} outside the time range, \
             {} bad lines)",
            describe_selection(args),
            args.archive,
            report.files,
            report.files_pruned,
            report.bad_lines
        );
        return Ok(ExitCode::from(1));
    }
    let mut out = std::io::stdout().lock();
    match out
        .write_all(analyze::render(&report, args.format).as_bytes())
        .and_then(|()| out.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e).context("writing output"),
        _ => Ok(ExitCode::SUCCESS),
    }
}

/// " of service osd, span journal, from 1h" for the no-spans message.
fn describe_selection(args: &AnalyzeArgs) -> String {
    let parts: Vec<String> = [
        ("service", &args.service),
        ("span", &args.span),
        ("from", &args.from),
        ("to", &args.to),
    ]
    .iter()
    .filter_map(|(what, v)| v.as_ref().map(|v| format!("{what} {v}")))
    .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join(", "))
    }
}

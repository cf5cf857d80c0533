//! Span archive benchmark (run by `bench/archive.sh`): writes demo-like
//! spans through the archive writer into HDFS and/or a local directory and
//! measures spans/s and MB/s sustained, then times `analyze` over the
//! first hour of what was written. Prints one JSON object per measurement
//! on stdout.

mod spans;

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use blkkin_collector::analyze::{self, AnalyzeOptions};
use blkkin_collector::archive::{
    ArchiveConfig, ArchiveFs, ArchiveLocation, ArchiveWriter, HdfsFs, LocalFs,
};
use clap::Parser;
use serde_json::json;
use spans::{DemoSpans, SPANS_PER_TRACE, T0};

/// Writes demo-like spans into span archives and times it and `analyze`.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Archives to write, each a local directory or hdfs://host:port/path
    /// (should be empty).
    #[arg(required = true, value_name = "DIR|hdfs://HOST:PORT/PATH")]
    archives: Vec<String>,
    /// Spans to write into each archive (rounded up to whole traces).
    #[arg(long, default_value_t = 2_000_000)]
    spans: u64,
    /// Spans per hour of span time; `analyze` is timed over the first hour,
    /// so this is the number of spans it reads.
    #[arg(long, default_value_t = 1_000_000)]
    per_hour: u64,
    /// Spans per `append` (one relay batch).
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Compression: none, gzip, zstd.
    #[arg(long, default_value = "none")]
    compression: String,
    /// Roll (commit) size in MiB of NDJSON.
    #[arg(long, default_value_t = 128)]
    roll_mib: u64,
    /// HDFS user.
    #[arg(long, default_value = "blkkin")]
    hdfs_user: String,
}

/// What one write run measured.
struct Written {
    /// Time inside `append` and `commit` (span generation excluded).
    writer: Duration,
    /// Wall time including generating the spans.
    wall: Duration,
    spans: u64,
    ndjson_bytes: u64,
    bytes_written: u64,
    commits: u64,
    files: u64,
    /// Spans whose timestamp is in the first hour.
    first_hour: u64,
}

fn write<F: ArchiveFs>(fs: F, args: &Args) -> Result<Written> {
    let mut c = ArchiveConfig::new("bench");
    c.compression = args.compression.parse()?;
    c.roll_bytes = args.roll_mib << 20;
    c.roll_interval = Duration::from_secs(3600);
    let mut w = ArchiveWriter::open(fs, c)?;
    let mut gen = DemoSpans::new(args.per_hour);
    let mut batch = Vec::with_capacity(args.batch + SPANS_PER_TRACE as usize);
    let (mut written, mut first_hour, mut position) = (0u64, 0u64, 0u64);
    let mut writer = Duration::ZERO;
    let wall = Instant::now();
    while written < args.spans {
        batch.clear();
        while batch.len() < args.batch && written + (batch.len() as u64) < args.spans {
            gen.push_trace(&mut batch);
        }
        first_hour += batch
            .iter()
            .filter(|s| s.timestamp.is_some_and(|t| t < T0 + 3_600_000_000))
            .count() as u64;
        written += batch.len() as u64;
        position += 1;
        let t = Instant::now();
        w.append(position, &batch)?;
        if w.roll_due() {
            w.commit()?;
        }
        writer += t.elapsed();
    }
    let t = Instant::now();
    let token = w.commit()?;
    writer += t.elapsed();
    ensure!(token.position == Some(position), "not everything committed");
    let s = w.stats();
    ensure!(
        s.spans_committed == written,
        "committed {} of {written}",
        s.spans_committed
    );
    Ok(Written {
        writer,
        wall: wall.elapsed(),
        spans: written,
        ndjson_bytes: s.bytes_uncompressed,
        bytes_written: s.bytes_written,
        commits: s.commits,
        files: s.files_committed,
        first_hour,
    })
}

fn main() -> Result<()> {
    let args = Args::parse();
    for archive in &args.archives {
        let location = ArchiveLocation::parse(archive, Some(args.hdfs_user.clone()))?;
        let target = match location {
            ArchiveLocation::Local(_) => "local",
            ArchiveLocation::Hdfs(_) => "hdfs",
        };
        eprintln!("writing {} spans into {archive}", args.spans);
        let w = match &location {
            ArchiveLocation::Local(dir) => {
                std::fs::create_dir_all(dir)?;
                write(LocalFs::new(dir)?, &args)
            }
            ArchiveLocation::Hdfs(c) => write(HdfsFs::connect(c.clone())?, &args),
        }
        .with_context(|| format!("writing into {archive}"))?;
        let secs = w.writer.as_secs_f64();
        println!(
            "{}",
            json!({
                "bench": "archive_write",
                "target": target,
                "compression": args.compression,
                "spans": w.spans,
                "batch": args.batch,
                "roll_mib": args.roll_mib,
                "seconds": secs,
                "wall_seconds": w.wall.as_secs_f64(),
                "spans_per_s": w.spans as f64 / secs,
                "ndjson_mb_per_s": w.ndjson_bytes as f64 / secs / 1e6,
                "written_mb_per_s": w.bytes_written as f64 / secs / 1e6,
                "ndjson_bytes": w.ndjson_bytes,
                "bytes_written": w.bytes_written,
                "bytes_per_span": w.ndjson_bytes as f64 / w.spans as f64,
                "commits": w.commits,
                "files": w.files,
            })
        );

        // analyze over the first hour: the partitions of later hours are
        // pruned, so it reads and aggregates `first_hour` spans.
        eprintln!(
            "analyze over the first hour ({} spans) of {archive}",
            w.first_hour
        );
        let opts = AnalyzeOptions {
            from_micros: Some(T0),
            to_micros: Some(T0 + 3_600_000_000),
            ..AnalyzeOptions::new(location.clone())
        };
        let t = Instant::now();
        let report = analyze::run(&opts).with_context(|| format!("analyzing {archive}"))?;
        let secs = t.elapsed().as_secs_f64();
        ensure!(
            report.spans == w.first_hour && report.bad_lines == 0,
            "analyze saw {} spans ({} bad lines), {} were written in the first hour",
            report.spans,
            report.bad_lines,
            w.first_hour
        );
        println!(
            "{}",
            json!({
                "bench": "archive_analyze",
                "target": target,
                "compression": args.compression,
                "spans": report.spans,
                "files": report.files,
                "files_pruned": report.files_pruned,
                "bytes": report.bytes,
                "operations": report.operations.len(),
                "seconds": secs,
                "spans_per_s": report.spans as f64 / secs,
            })
        );
    }
    Ok(())
}

//! Measures the span archive: spans/s and MB/s into a local directory or
//! HDFS, then the time `analyze` takes over what was written.
//!
//! cargo run --release -p blkkin-collector --example archive_bench -- hdfs://127.0.0.1:PORT/bench --spans 1000000

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use blkkin_collector::analyze::{self, AnalyzeOptions};
use blkkin_collector::archive::{
    ArchiveConfig, ArchiveFs, ArchiveLocation, ArchiveWriter, Compression, HdfsFs, LocalFs,
};
use blkkin_collector::model::{Endpoint, Span};
use clap::Parser;

/// Writes synthetic spans into an archive and times it and `analyze`.
#[derive(Parser, Debug)]
struct Args {
    /// A local directory or hdfs://namenode:port/path (should be empty).
    archive: String,
    /// Spans to write.
    #[arg(long, default_value_t = 1_000_000)]
    spans: u64,
    /// Spans per relay batch (one `append`).
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Compression: none, gzip, zstd.
    #[arg(long, default_value = "none")]
    compression: String,
    /// Roll (commit) size in MiB.
    #[arg(long, default_value_t = 64)]
    roll_mib: u64,
}

fn spans(n: u64) -> Vec<Span> {
    let services = ["client", "rbd", "osd"];
    let names = ["read", "write", "journal", "op_r", "op_w"];
    let t0 = 1_709_157_600_000_000u64;
    (0..n)
        .map(|i| {
            let mut tags = BTreeMap::new();
            tags.insert("bytes".to_string(), "4096".to_string());
            if i % 37 == 0 {
                tags.insert("error".to_string(), "EIO".to_string());
            }
            Span {
                trace_id: format!("{:032x}", i / 5 + 1),
                parent_id: (i % 5 != 0).then(|| format!("{:016x}", i - i % 5 + 1)),
                id: format!("{:016x}", i + 1),
                name: Some(names[(i % 5) as usize].to_string()),
                // 1 M spans over about an hour and a half.
                timestamp: Some(t0 + i * 5_000),
                duration: Some(1 + (i * 7919) % 20_000),
                local_endpoint: Some(Endpoint {
                    service_name: Some(services[(i % 3) as usize].to_string()),
                    ipv4: Some("10.0.0.1".to_string()),
                    port: Some(6800),
                    ..Endpoint::default()
                }),
                tags,
                ..Span::default()
            }
        })
        .collect()
}

fn write<F: ArchiveFs>(fs: F, args: &Args, spans: &[Span]) -> Result<(Duration, u64, u64)> {
    let mut c = ArchiveConfig::new("bench");
    c.compression = args.compression.parse()?;
    c.roll_bytes = args.roll_mib << 20;
    let mut w = ArchiveWriter::open(fs, c)?;
    let start = Instant::now();
    for (i, batch) in spans.chunks(args.batch).enumerate() {
        w.append(i as u64 + 1, batch)?;
        if w.roll_due() {
            w.commit()?;
        }
    }
    w.commit()?;
    let elapsed = start.elapsed();
    Ok((
        elapsed,
        w.stats().bytes_uncompressed,
        w.stats().bytes_written,
    ))
}

fn main() -> Result<()> {
    let args = Args::parse();
    let location = ArchiveLocation::parse(&args.archive, None)?;
    let _: Compression = args.compression.parse()?;
    eprintln!("generating {} spans", args.spans);
    let spans = spans(args.spans);
    let (elapsed, raw, written) = match &location {
        ArchiveLocation::Local(dir) => write(LocalFs::new(dir)?, &args, &spans),
        ArchiveLocation::Hdfs(c) => write(HdfsFs::connect(c.clone())?, &args, &spans),
    }
    .context("writing")?;
    let secs = elapsed.as_secs_f64();
    println!(
        "write: {} spans in {:.2} s = {:.0} spans/s, {:.1} MB/s NDJSON, {:.1} MB/s written ({} compression)",
        spans.len(),
        secs,
        spans.len() as f64 / secs,
        raw as f64 / secs / 1e6,
        written as f64 / secs / 1e6,
        args.compression
    );
    drop(spans);
    let start = Instant::now();
    let report = analyze::run(&AnalyzeOptions {
        location,
        from_micros: None,
        to_micros: None,
        slowest: 10,
    })?;
    println!(
        "analyze: {} spans, {} files, {} operations in {:.2} s",
        report.spans,
        report.files,
        report.operations.len(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

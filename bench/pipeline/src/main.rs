//! `blkkin-pipeline-bench`: the programs bench/pipeline.py drives to measure
//! the consumer → relay pipeline (docs/BENCHMARKS.md, "Pipeline"):
//!
//! * `gen` records timestamp annotations (the record-path benchmark's shape:
//!   service `osd.0`, span `osd_op`, ip `10.0.0.1`, port 6800, event `sr`)
//!   into this process's rings, as fast as it can or paced, and reports what
//!   its rings counted (written, lost);
//! * `watch` polls a relay's stream list until it holds a number of records;
//! * `latency` reads a relay live (like `blkkin tail`) and measures how old
//!   each record is when it arrives;
//! * `verify` opens a stopped relay's data directory (CRC-checking every
//!   entry) and counts what it holds;
//! * `certs` makes the CA and certificates of the TLS runs (`watch` and
//!   `latency` take the relay client's TLS flags).
//!
//! Every command prints one JSON object on stdout.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use blkkin::relay_client::RelayReader;
use blkkin::ring::reader::{ReadMode, RingReader, WriterCounters};
use blkkin::tls::{ClientAuth, ClientAuthOptions};
use blkkin::wire::Start;
use blkkin::{Endpoint, Span, TraceContext};
use clap::{Parser, Subcommand};
use serde_json::json;

/// Load generator and probes for the consumer → relay benchmarks (bench/pipeline.py).
#[derive(Parser)]
#[command(name = "blkkin-pipeline-bench", version)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Record timestamp annotations into this process's rings (BLKIN_SHM_DIR,
    /// BLKIN_RING_SIZE apply), then print what the rings counted.
    Gen {
        /// Records to write.
        #[arg(long)]
        records: u64,
        /// Records per second (0: as fast as possible).
        #[arg(long, default_value_t = 0.0)]
        rate: f64,
        /// Wait for this many seconds before writing (after the rings exist).
        #[arg(long, default_value_t = 0.0)]
        delay: f64,
        /// After writing (and reporting), sleep until killed: an idle traced process.
        #[arg(long)]
        hold: bool,
    },
    /// Poll a relay's stream list until it holds EXPECT records (sum of the
    /// streams' next positions), then print when that happened.
    Watch {
        /// Relay address, host:port.
        #[arg(long)]
        relay: String,
        /// Records to wait for.
        #[arg(long)]
        expect: u64,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 120.0)]
        timeout: f64,
        /// Poll interval in milliseconds.
        #[arg(long, default_value_t = 5)]
        interval_ms: u64,
        #[command(flatten)]
        auth: ClientAuthOptions,
    },
    /// Read a relay live from the newest record and measure now minus each
    /// record's wall-clock time (its raw timestamp converted with the
    /// stream's calibration, as `blkkin tail` does).
    Latency {
        /// Relay address, host:port.
        #[arg(long)]
        relay: String,
        /// Seconds to read before measuring.
        #[arg(long, default_value_t = 1.0)]
        warmup: f64,
        /// Seconds to measure.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        #[command(flatten)]
        auth: ClientAuthOptions,
    },
    /// Make a CA, a relay certificate for 127.0.0.1, a producer certificate
    /// for node `bench` and a reader certificate `bench` in DIR.
    Certs {
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
    },
    /// Open a relay data directory (the relay must be stopped), check every
    /// entry and count the records held.
    Verify {
        /// The relay's --data-dir.
        #[arg(long)]
        data_dir: PathBuf,
    },
}

fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn main() -> anyhow::Result<()> {
    let out = match Cli::parse().cmd {
        Cmd::Gen {
            records,
            rate,
            delay,
            hold,
        } => generate(records, rate, delay, hold)?,
        Cmd::Watch {
            relay,
            expect,
            timeout,
            interval_ms,
            auth,
        } => watch(
            connect(&relay, "pipeline-bench-watch", &auth)?,
            expect,
            timeout,
            interval_ms,
        )?,
        Cmd::Latency {
            relay,
            warmup,
            seconds,
            auth,
        } => latency(
            connect(&relay, "pipeline-bench-latency", &auth)?,
            warmup,
            seconds,
        )?,
        Cmd::Certs { out } => {
            let files = blkkin::tls::certs::generate(&blkkin::tls::certs::CertRequest {
                out,
                new_ca: true,
                server: vec!["127.0.0.1".into()],
                producers: vec!["bench".into()],
                readers: vec!["bench".into()],
            })?;
            json!({ "files": files })
        }
        Cmd::Verify { data_dir } => verify(data_dir)?,
    };
    println!("{out}");
    Ok(())
}

/// Sums the writer counters of this process's rings (read from their headers).
fn own_counters() -> anyhow::Result<(WriterCounters, usize)> {
    let rings = blkkin::recorder::rings().context("this process has no rings")?;
    let mut sum = WriterCounters::default();
    for p in rings.paths() {
        let r = RingReader::open(p, ReadMode::Peek)
            .with_context(|| format!("reading {}", p.display()))?;
        let w = r.writer_counters();
        sum.written += w.written;
        sum.lost_full += w.lost_full;
        sum.lost_too_big += w.lost_too_big;
        sum.lost_no_ring += w.lost_no_ring;
        sum.lost_corrupt += w.lost_corrupt;
    }
    Ok((sum, rings.paths().len()))
}

fn generate(records: u64, rate: f64, delay: f64, hold: bool) -> anyhow::Result<serde_json::Value> {
    blkkin::init().context("creating the rings")?;
    if delay > 0.0 {
        std::thread::sleep(Duration::from_secs_f64(delay));
    }
    let ep = Endpoint::new("osd.0", "10.0.0.1", 6800);
    // Joined, not started: exactly `records` annotations, no start/end events.
    let span = Span::join(TraceContext::new_root_forced(), "osd_op", &ep);
    // Paced: a chunk of records every millisecond (or fewer, larger ticks
    // for low rates), each chunk due at an absolute time so sleeps do not
    // accumulate drift.
    let chunk = if rate > 0.0 {
        (rate / 1000.0).ceil().max(1.0) as u64
    } else {
        records.max(1)
    };
    let start_ns = unix_ns();
    let t0 = Instant::now();
    let mut done = 0u64;
    while done < records {
        let n = chunk.min(records - done);
        for _ in 0..n {
            span.event(std::hint::black_box("sr"));
        }
        done += n;
        if rate > 0.0 {
            let due = t0 + Duration::from_secs_f64(done as f64 / rate);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let end_ns = unix_ns();
    drop(span);
    let (w, rings) = own_counters()?;
    let out = json!({
        "records": records,
        "written": w.written,
        "lost": w.lost(),
        "lost_full": w.lost_full,
        "rings": rings,
        "start_unix_ns": start_ns,
        "end_unix_ns": end_ns,
        "elapsed_s": elapsed,
        "rate": if elapsed > 0.0 { records as f64 / elapsed } else { 0.0 },
    });
    if hold {
        println!("{out}");
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    Ok(out)
}

/// A reader of `relay` (plain, or as `auth` says).
fn connect(relay: &str, name: &str, auth: &ClientAuthOptions) -> anyhow::Result<RelayReader> {
    let auth = ClientAuth::from_options(auth)?;
    RelayReader::connect_with(relay, name, &auth)
        .with_context(|| format!("connecting to relay {relay}"))
}

fn watch(
    mut reader: RelayReader,
    expect: u64,
    timeout: f64,
    interval_ms: u64,
) -> anyhow::Result<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs_f64(timeout);
    let started_ns = unix_ns();
    let mut polls = 0u64;
    loop {
        let list = reader.list().context("listing streams")?;
        polls += 1;
        let held: u64 = list.iter().map(|s| s.next - s.first).sum();
        let next: u64 = list.iter().map(|s| s.next).sum();
        if held >= expect || Instant::now() >= deadline {
            return Ok(json!({
                "expect": expect,
                "held": held,
                "next_sum": next,
                "streams": list.len(),
                "closed": list.iter().filter(|s| s.closed).count(),
                "reached": held >= expect,
                "started_unix_ns": started_ns,
                "done_unix_ns": unix_ns(),
                "polls": polls,
            }));
        }
        std::thread::sleep(Duration::from_millis(interval_ms));
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn latency(
    mut reader: RelayReader,
    warmup: f64,
    seconds: f64,
) -> anyhow::Result<serde_json::Value> {
    reader
        .subscribe(None, Start::Newest)
        .context("subscribing")?;
    let t0 = Instant::now();
    let measure_from = t0 + Duration::from_secs_f64(warmup);
    let end = measure_from + Duration::from_secs_f64(seconds);
    let mut lat_ms: Vec<f64> = Vec::new();
    let mut uncalibrated = 0u64;
    let mut warmup_records = 0u64;
    while Instant::now() < end {
        let measuring = Instant::now() >= measure_from;
        // The clock is read per record, once it has arrived (a vDSO call).
        reader
            .next_records(|s, r| match s.calibration.to_unix_ns(r.timestamp_raw) {
                Some(ts) if measuring => lat_ms.push((unix_ns() as f64 - ts as f64) / 1e6),
                Some(_) => warmup_records += 1,
                None => uncalibrated += 1,
            })
            .context("reading records")?;
    }
    lat_ms.sort_by(|a, b| a.total_cmp(b));
    let n = lat_ms.len();
    Ok(json!({
        "count": n,
        "seconds": seconds,
        "rate": n as f64 / seconds,
        "warmup_records": warmup_records,
        "uncalibrated": uncalibrated,
        "p50_ms": percentile(&lat_ms, 50.0),
        "p90_ms": percentile(&lat_ms, 90.0),
        "p99_ms": percentile(&lat_ms, 99.0),
        "p999_ms": percentile(&lat_ms, 99.9),
        "max_ms": lat_ms.last().copied().unwrap_or(f64::NAN),
        "min_ms": lat_ms.first().copied().unwrap_or(f64::NAN),
    }))
}

fn verify(data_dir: PathBuf) -> anyhow::Result<serde_json::Value> {
    let cfg = blkkin_relayd::StoreConfig::new(&data_dir);
    let store = blkkin_relayd::Store::open(cfg)
        .with_context(|| format!("opening {}", data_dir.display()))?;
    let mut records = 0u64;
    let mut record_bytes = 0u64;
    let mut disk_bytes = 0u64;
    let mut out_of_order = 0u64;
    let mut lost_gap = 0u64;
    let mut writer = WriterCounters::default();
    let (mut torn, mut corrupt, mut gap) = (0u64, 0u64, 0u64);
    let streams = store.streams();
    for s in &streams {
        disk_bytes += s.size();
        let mut at = s.first();
        let mut expect = at;
        loop {
            let entries = s.read(at, 4 << 20)?;
            let Some(last) = entries.last().map(|e| e.0) else {
                break;
            };
            for (pos, rec) in &entries {
                if *pos != expect {
                    out_of_order += 1;
                }
                expect = pos + 1;
                records += 1;
                record_bytes += rec.len() as u64;
            }
            at = last + 1;
        }
        let m = s.meta();
        lost_gap += m.lost_gap;
        writer.written += m.writer.written;
        writer.lost_full += m.writer.lost_full;
        writer.lost_too_big += m.writer.lost_too_big;
        writer.lost_no_ring += m.writer.lost_no_ring;
        writer.lost_corrupt += m.writer.lost_corrupt;
        torn += m.reader.torn;
        corrupt += m.reader.corrupt;
        gap += m.reader.gap;
    }
    if streams.is_empty() {
        bail!("no stream in {}", data_dir.display());
    }
    Ok(json!({
        "streams": streams.len(),
        "records": records,
        "record_bytes": record_bytes,
        "disk_bytes": disk_bytes,
        "position_breaks": out_of_order,
        "relay_lost_gap": lost_gap,
        "meta_writer_lost": writer.lost(),
        "meta_reader_torn": torn,
        "meta_reader_corrupt": corrupt,
        "meta_reader_gap": gap,
    }))
}

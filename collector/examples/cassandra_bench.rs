//! Write benchmark of the Cassandra store (bench/cassandra.sh runs it): the
//! same demo-like spans written into one Cassandra node either by our sink
//! (`--mode ours`) or POSTed as JSON to the real Zipkin server's HTTP
//! collector writing that node through its own `cassandra3` storage
//! (`--mode zipkin`). Each mode writes a keyspace of its own.
//!
//! Throughput counts from the first request until Cassandra holds every
//! span: it polls `SELECT COUNT(*)` of the keyspace's `span` table (Zipkin
//! answers a POST with 202 before it stores the spans, so its requests'
//! return is not the end). Latency is per request of `--batch` spans: our
//! sink's `write` (returns once Cassandra acknowledged every row at
//! LOCAL_ONE) or Zipkin's POST (returns once Zipkin accepted the body).
//! Rows a writer dropped (no new row for `--stall` seconds) are reported
//! as `lost`, and its throughput counts only the rows stored.
//! Prints one JSON object.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use blkkin_collector::cassandra::{CassandraConfig, CassandraSink};
use blkkin_collector::model::{Annotation, Endpoint, Span, SpanKind};
use blkkin_collector::sink::http::{HttpFormat, ZipkinHttpSink};
use blkkin_collector::sink::Sink;
use clap::{Parser, ValueEnum};
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;

/// Who writes the spans.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// blkkin's Cassandra sink, straight into Cassandra.
    Ours,
    /// POST /api/v2/spans to the Zipkin server (`--zipkin`).
    Zipkin,
}

/// Benchmark of span writes into Cassandra: ours vs Zipkin's own writer.
#[derive(Debug, Parser)]
struct Args {
    /// Who writes.
    #[arg(long, value_enum)]
    mode: Mode,
    /// Cassandra's CQL address (for our sink and for counting rows).
    #[arg(long, value_name = "HOST:PORT")]
    cassandra: String,
    /// Keyspace to write (ours creates it; Zipkin must be started on it).
    #[arg(long)]
    keyspace: String,
    /// Zipkin's base URL (mode zipkin).
    #[arg(long, value_name = "URL")]
    zipkin: Option<String>,
    /// Spans to write (rounded down to whole 7-span traces).
    #[arg(long, default_value_t = 21_000)]
    spans: usize,
    /// Spans per request.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Spans written (and waited for) before measuring, to warm up the
    /// JVM of Zipkin and Cassandra and our connections alike.
    #[arg(long, default_value_t = 3_500)]
    warmup: usize,
    /// Give up waiting for the rows after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Seconds without a new row after which the missing rows count as
    /// lost (the writer dropped them) and the run ends.
    #[arg(long, default_value_t = 20)]
    stall: u64,
}

fn endpoint(service: &str, ip: &str, port: u16) -> Option<Endpoint> {
    Some(Endpoint {
        service_name: Some(service.into()),
        ipv4: Some(ip.into()),
        port: Some(port),
        ..Endpoint::default()
    })
}

/// One request of the demo workload, as the collector assembles it: the
/// client's root span, its server half in the volume, `map` (volume client,
/// mapper server), `block_io` (mapper client, blocker server) and the
/// blocker's local `disk_io`; tags and events as the demo records them.
fn demo_trace(n: u64, run: u64, start_us: u64) -> Vec<Span> {
    let trace_id = format!(
        "{:016x}",
        run.wrapping_mul(0x9e37_79b9) ^ (n << 20) ^ 0x5eed
    );
    let id = |k: u64| format!("{:016x}", (n << 8 | k) ^ run.rotate_left(17));
    let ts = start_us + n * 50;
    let slow = n % 10 == 3;
    let failed = n % 25 == 7;
    let disk = if slow { 25_000 } else { 400 };
    let op = if n.is_multiple_of(3) { "write" } else { "read" };
    let tiers = [
        ("client", "10.0.0.1", 0u16),
        ("volume", "10.0.0.2", 3260),
        ("mapper", "10.0.0.3", 6789),
        ("blocker", "10.0.0.4", 6800),
    ];
    let names = [op, "map", "block_io"];
    let mut spans = Vec::with_capacity(7);
    let mut parent = None;
    for (tier, name) in names.iter().enumerate() {
        let span_id = if tier == 0 {
            trace_id.clone()
        } else {
            id(tier as u64)
        };
        let start = ts + tier as u64 * 40;
        let duration = disk + 900 - tier as u64 * 150;
        let (caller, callee) = (tiers[tier], tiers[tier + 1]);
        let mut tags = std::collections::BTreeMap::new();
        if tier == 0 {
            tags.insert("request".to_string(), n.to_string());
        }
        if failed {
            tags.insert("error".to_string(), "Input/output error".to_string());
        }
        spans.push(Span {
            trace_id: trace_id.clone(),
            parent_id: parent.clone(),
            id: span_id.clone(),
            kind: Some(SpanKind::Client),
            name: Some((*name).into()),
            timestamp: Some(start),
            duration: Some(duration),
            local_endpoint: endpoint(caller.0, caller.1, caller.2),
            tags: tags.clone(),
            ..Span::default()
        });
        let mut server_tags = tags;
        if tier == 1 {
            server_tags.insert("extent".into(), (n >> 2).to_string());
        }
        spans.push(Span {
            trace_id: trace_id.clone(),
            parent_id: parent.clone(),
            id: span_id.clone(),
            kind: Some(SpanKind::Server),
            name: Some((*name).into()),
            timestamp: Some(start + 10),
            duration: Some(duration - 20),
            local_endpoint: endpoint(callee.0, callee.1, callee.2),
            tags: server_tags,
            shared: Some(true),
            ..Span::default()
        });
        parent = Some(span_id);
    }
    let mut events = vec![Annotation {
        timestamp: ts + 130,
        value: "start".into(),
    }];
    if slow {
        events.push(Annotation {
            timestamp: ts + 140,
            value: "slow_path".into(),
        });
    }
    events.push(Annotation {
        timestamp: ts + 130 + disk,
        value: "end".into(),
    });
    let mut tags: std::collections::BTreeMap<String, String> = [
        ("bytes".to_string(), "4096".to_string()),
        ("op".to_string(), op.to_string()),
    ]
    .into();
    if failed {
        tags.insert("error".into(), "Input/output error".into());
    }
    spans.push(Span {
        trace_id,
        parent_id: parent,
        id: id(4),
        name: Some("disk_io".into()),
        timestamp: Some(ts + 130),
        duration: Some(disk),
        local_endpoint: endpoint("blocker", "10.0.0.4", 6800),
        annotations: events,
        tags,
        ..Span::default()
    });
    spans
}

async fn count_spans(session: &Session, keyspace: &str) -> Result<i64> {
    let rows = session
        .query_unpaged(format!("SELECT COUNT(*) FROM {keyspace}.span"), ())
        .await
        .context("counting rows")?
        .into_rows_result()
        .context("count result")?;
    let (n,): (i64,) = rows.first_row().context("count row")?;
    Ok(n)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.batch == 0 || args.concurrency == 0 {
        bail!("--batch and --concurrency must be at least 1");
    }
    let counter = SessionBuilder::new()
        .known_node(&args.cassandra)
        .build()
        .await
        .context("connecting to count rows")?;
    let run = SystemTime::now().duration_since(UNIX_EPOCH)?.as_micros() as u64;
    if args.warmup > 0 {
        let warm = measure(&args, &counter, run ^ 0xa5a5, args.warmup).await?;
        eprintln!("warm-up: {warm}");
    }
    let out = measure(&args, &counter, run, args.spans).await?;
    println!("{out}");
    Ok(())
}

/// Writes `n` spans of run `run`; the measurement as JSON.
async fn measure(args: &Args, counter: &Session, run: u64, n: usize) -> Result<serde_json::Value> {
    let traces = (n / 7).max(1) as u64;
    let start_us = run - 60_000_000;
    let spans: Vec<Span> = (0..traces)
        .flat_map(|n| demo_trace(n, run, start_us))
        .collect();
    let total = spans.len();
    let batches: Vec<Vec<Span>> = spans.chunks(args.batch).map(<[Span]>::to_vec).collect();
    // Zipkin creates its keyspace on start; ours is created by connect.
    let before = match args.mode {
        Mode::Zipkin => count_spans(counter, &args.keyspace).await?,
        Mode::Ours => count_spans(counter, &args.keyspace).await.unwrap_or(0),
    };

    let latencies = Arc::new(Mutex::new(Vec::with_capacity(batches.len())));
    let queue = Arc::new(Mutex::new(batches));
    let next = {
        let queue = Arc::clone(&queue);
        move || queue.lock().unwrap_or_else(|p| p.into_inner()).pop()
    };
    let t0;
    match args.mode {
        Mode::Ours => {
            let sink = Arc::new(
                CassandraSink::connect(CassandraConfig {
                    contact_points: vec![args.cassandra.clone()],
                    keyspace: args.keyspace.clone(),
                    ..CassandraConfig::default()
                })
                .await
                .context("connecting our sink (creates the keyspace)")?,
            );
            t0 = Instant::now();
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..args.concurrency {
                let (sink, next, latencies) =
                    (Arc::clone(&sink), next.clone(), Arc::clone(&latencies));
                tasks.spawn(async move {
                    while let Some(b) = next() {
                        let t = Instant::now();
                        sink.write(&b).await?;
                        latencies
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(t.elapsed());
                    }
                    Ok::<_, anyhow::Error>(())
                });
            }
            while let Some(r) = tasks.join_next().await {
                r.context("writer task")??;
            }
            sink.flush_links()
                .await
                .context("storing dependency links")?;
        }
        Mode::Zipkin => {
            let url = args
                .zipkin
                .clone()
                .context("--mode zipkin needs --zipkin URL")?;
            t0 = Instant::now();
            let mut threads = Vec::new();
            for _ in 0..args.concurrency {
                let (next, latencies, url) = (next.clone(), Arc::clone(&latencies), url.clone());
                threads.push(std::thread::spawn(move || -> Result<()> {
                    let mut sink = ZipkinHttpSink::new(&url, HttpFormat::JsonV2);
                    while let Some(b) = next() {
                        let t = Instant::now();
                        sink.send(&b).map_err(|e| anyhow::anyhow!("POST: {e}"))?;
                        latencies
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(t.elapsed());
                    }
                    Ok(())
                }));
            }
            for t in threads {
                t.join()
                    .map_err(|_| anyhow::anyhow!("a POST thread panicked"))??;
            }
        }
    }
    let requests_done = t0.elapsed();
    // Wait for every row; a writer that dropped rows (Zipkin logs and drops
    // a write its driver gave up on) never gets there: after `--stall`
    // seconds without a new row the rows stored so far are what it wrote,
    // timed at the last new row, and the rest are reported as lost.
    let deadline = t0 + Duration::from_secs(args.timeout);
    let mut stored = count_spans(counter, &args.keyspace).await? - before;
    let mut last_new = Instant::now();
    while (stored as usize) < total {
        if Instant::now() > deadline {
            bail!(
                "only {stored} of {total} spans stored after {}s",
                args.timeout
            );
        }
        if last_new.elapsed() > Duration::from_secs(args.stall) {
            eprintln!(
                "{} of {total} spans never arrived ({}s without a new row)",
                total - stored as usize,
                args.stall
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = count_spans(counter, &args.keyspace).await? - before;
        if now > stored {
            last_new = Instant::now();
        }
        stored = now;
    }
    let all_stored = if (stored as usize) < total {
        last_new - t0
    } else {
        t0.elapsed()
    };
    let mut ms: Vec<f64> = latencies
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|d| d.as_secs_f64() * 1e3)
        .collect();
    ms.sort_by(f64::total_cmp);
    let out = serde_json::json!({
        "mode": format!("{:?}", args.mode).to_lowercase(),
        "spans": total,
        "rows_counted": stored,
        "lost": total - (stored as usize).min(total),
        "batch": args.batch,
        "concurrency": args.concurrency,
        "requests": ms.len(),
        "requests_seconds": requests_done.as_secs_f64(),
        "stored_seconds": all_stored.as_secs_f64(),
        "spans_per_s": (stored as usize).min(total) as f64 / all_stored.as_secs_f64(),
        "latency_ms": {
            "p50": percentile(&ms, 0.5),
            "p90": percentile(&ms, 0.9),
            "p99": percentile(&ms, 0.99),
            "max": ms.last().copied().unwrap_or(0.0),
        },
    });
    Ok(out)
}

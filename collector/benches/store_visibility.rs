//! Record → queryable in the embedded store: inserts spans at a fixed rate
//! (default 10 000 spans/s in 10 ms batches of 100, for 20 s) into a file
//! store served over HTTP, and measures for every batch the time from the
//! `Store::insert` call until `GET /api/v2/trace/{id}` of the batch's last
//! trace answers 200. Not a test: run with
//! `cargo bench -p blkkin-collector --bench store_visibility [-- SECONDS RATE]`.

use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use blkkin_collector::model::{Endpoint, Span, SpanKind};
use blkkin_collector::store::{serve, Store};

const BATCH_INTERVAL: Duration = Duration::from_millis(10);
const SPANS_PER_TRACE: u64 = 5;

fn batch(first_trace: u64, spans: u64, now_us: u64) -> Vec<Span> {
    (0..spans)
        .map(|i| {
            let trace = first_trace + i / SPANS_PER_TRACE;
            let n = i % SPANS_PER_TRACE;
            let mut tags = std::collections::BTreeMap::new();
            tags.insert("bytes".to_string(), (4096 * (n + 1)).to_string());
            Span {
                trace_id: format!("{trace:016x}"),
                id: format!("{:016x}", n + 1),
                parent_id: (n > 0).then(|| format!("{n:016x}")),
                kind: Some(if n.is_multiple_of(2) {
                    SpanKind::Server
                } else {
                    SpanKind::Client
                }),
                name: Some(["read", "write", "map", "block", "journal"][n as usize].into()),
                timestamp: Some(now_us + n),
                duration: Some(100 + n * 10),
                local_endpoint: Some(Endpoint {
                    service_name: Some(
                        ["client", "volume", "mapper", "blocker", "osd"][n as usize].into(),
                    ),
                    ipv4: Some("127.0.0.1".into()),
                    port: Some(6800),
                    ..Endpoint::default()
                }),
                tags,
                ..Span::default()
            }
        })
        .collect()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let seconds: u64 = args.first().and_then(|s| s.parse().ok()).unwrap_or(20);
    let rate: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let per_batch = rate * BATCH_INTERVAL.as_millis() as u64 / 1000;

    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open_file(dir.path().join("spans.db")).expect("open store");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let server = rt
        .block_on(serve("127.0.0.1:0".parse().unwrap(), store.clone()))
        .expect("serve");
    let base = format!("http://{}", server.local_addr());

    let (tx, rx) = mpsc::channel::<(String, Instant)>();
    let prober = std::thread::spawn(move || {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(10))
            .build();
        let mut latencies = Vec::new();
        for (trace, t0) in rx {
            let url = format!("{base}/api/v2/trace/{trace}");
            loop {
                match agent.get(&url).call() {
                    Ok(_) => break,
                    Err(ureq::Error::Status(404, _)) => {
                        std::thread::sleep(Duration::from_micros(200))
                    }
                    Err(e) => panic!("query failed: {e}"),
                }
            }
            latencies.push(t0.elapsed());
        }
        latencies
    });

    let start = Instant::now();
    let mut insert_times = Vec::new();
    let mut next_trace = 1u64;
    let mut sent = 0u64;
    let mut tick = start;
    let batches = seconds * 1000 / BATCH_INTERVAL.as_millis() as u64;
    for _ in 0..batches {
        let now_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_micros() as u64;
        let spans = batch(next_trace, per_batch, now_us);
        let last = spans.last().unwrap().trace_id.clone();
        next_trace += per_batch.div_ceil(SPANS_PER_TRACE);
        let t0 = Instant::now();
        store.insert(&spans).expect("insert");
        insert_times.push(t0.elapsed());
        sent += spans.len() as u64;
        tx.send((last, t0)).unwrap();
        tick += BATCH_INTERVAL;
        if let Some(wait) = tick.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let elapsed = start.elapsed();
    drop(tx);
    let mut latencies = prober.join().unwrap();
    // How long typical UI queries take over what was stored.
    let base = format!("http://{}", server.local_addr());
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(300))
        .build();
    let mut query_times = Vec::new();
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis();
    for q in [
        "/api/v2/traces".to_string(),
        "/api/v2/traces?serviceName=mapper&spanName=map&annotationQuery=bytes%3D12288".into(),
        "/api/v2/traces?serviceName=osd&minDuration=140".into(),
        "/api/v2/services".into(),
        format!("/api/v2/dependencies?endTs={now_ms}&lookback=3600000"),
    ] {
        let t = Instant::now();
        let body = agent
            .get(&format!("{base}{q}"))
            .call()
            .expect("query")
            .into_string()
            .unwrap();
        query_times.push((q, t.elapsed(), body.len()));
    }
    rt.block_on(server.shutdown());
    latencies.sort();
    insert_times.sort();
    println!("store_visibility: {sent} spans in {:.1} s = {:.0} spans/s (target {rate}), batches of {per_batch} every {} ms, file store (WAL)",
        elapsed.as_secs_f64(), sent as f64 / elapsed.as_secs_f64(), BATCH_INTERVAL.as_millis());
    println!(
        "insert -> visible via GET /api/v2/trace: p50 {:?}  p99 {:?}  max {:?}  ({} batches)",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().unwrap(),
        latencies.len()
    );
    println!(
        "Store::insert call (batch of {per_batch}): p50 {:?}  p99 {:?}  max {:?}",
        percentile(&insert_times, 0.5),
        percentile(&insert_times, 0.99),
        insert_times.last().unwrap()
    );
    println!("spans stored: {}", store.span_count().unwrap());
    for (q, t, len) in query_times {
        println!("GET {q}: {t:?} ({len} bytes)");
    }
}

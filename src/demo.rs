//! `blkkin demo`: the node stack of `blkkin up` plus the sample storage
//! stack as a traced workload; prints where to look and a summary read back
//! from the embedded store.

use std::collections::BTreeMap;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use blkkin_collector::model::Span;
use blkkin_collector::store::{QueryRequest, Store};

use crate::up::{self, Stack, StackArgs};
use crate::workload::WorkloadArgs;

/// `blkkin demo` options.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// The workload's size and pace.
    #[command(flatten)]
    pub workload: WorkloadArgs,
    /// Stop once the summary is printed instead of serving until Ctrl-C.
    #[arg(long)]
    pub exit: bool,
    /// The node stack.
    #[command(flatten)]
    pub stack: StackArgs,
}

/// Runs the demo.
pub fn run(args: &DemoArgs) -> anyhow::Result<ExitCode> {
    up::install_stop_handler();
    up::init_logs();
    anyhow::ensure!(
        !args.stack.no_store,
        "blkkin demo reads its summary from the embedded store: drop --no-store"
    );
    let stack = Stack::start(&args.stack)?;
    eprintln!("{}", up::banner("blkkin demo", &args.stack, &stack));
    let started_us = now_us();

    let exe = std::env::current_exe().context("locating the blkkin binary")?;
    let out = Command::new(exe)
        .args([
            "workload".to_string(),
            format!("--requests={}", args.workload.requests),
            format!("--seconds={}", args.workload.seconds),
            format!("--rate={}", args.workload.rate),
        ])
        .env("BLKIN_SHM_DIR", args.stack.ring_dir())
        .output()
        .context("running the sample workload")?;
    let report = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() {
        let _ = stack.stop();
        return Err(anyhow!(
            "the sample workload failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let requests: u64 = report
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("requests="))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| anyhow!("unexpected workload report {report:?}"))?;
    eprintln!("blkkin demo: workload done: {report}");

    let store = stack
        .store()
        .ok_or_else(|| anyhow!("the stack has no embedded store"))?
        .clone();
    // Every request is one trace of 7 spans (client, volume ×2, mapper ×2,
    // blocker ×2); wait until the store holds them all.
    let expected = requests * 7;
    let deadline = Instant::now() + Duration::from_secs(60);
    let traces = loop {
        let traces = demo_traces(&store, started_us, requests)?;
        let spans: u64 = traces.iter().map(|t| t.len() as u64).sum();
        if spans >= expected || Instant::now() > deadline || up::stop_requested() {
            break traces;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    println!("{}", summary(&traces));
    let complete = traces.iter().map(|t| t.len() as u64).sum::<u64>() >= expected;
    if !complete {
        eprintln!(
            "blkkin demo: only {} of {expected} spans reached the store within 60 s",
            traces.iter().map(Vec::len).sum::<usize>()
        );
    }
    if let Some(q) = stack.query_addr() {
        println!(
            "Look: http://{q}/api/v2/traces?serviceName=client&limit=10 · \
             http://{q}/api/v2/dependencies?endTs={} · a Grafana Zipkin data source at http://{q}",
            now_us() / 1000
        );
    }
    if !args.exit {
        eprintln!("blkkin demo: serving until Ctrl-C");
        while !up::stop_requested() {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    stack.stop()?;
    Ok(if complete {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// The traces rooted at the demo's client since `since_us`.
fn demo_traces(store: &Store, since_us: u64, limit: u64) -> anyhow::Result<Vec<Vec<Span>>> {
    let end_ms = now_us() / 1000 + 1000;
    let mut q = QueryRequest::new(end_ms);
    q.service_name = Some("client".into());
    q.lookback = end_ms.saturating_sub(since_us / 1000) + 1000;
    q.limit = usize::try_from(limit).unwrap_or(usize::MAX).max(1);
    Ok(store.traces(&q)?)
}

/// Traces, spans, and per layer (service and span kind) the count, errors,
/// p50 and p99 of durations.
fn summary(traces: &[Vec<Span>]) -> String {
    let mut layers: BTreeMap<(String, String), (Vec<u64>, u64)> = BTreeMap::new();
    let mut spans = 0;
    for s in traces.iter().flatten() {
        spans += 1;
        let service = s
            .local_endpoint
            .as_ref()
            .and_then(|e| e.service_name.clone())
            .unwrap_or_default();
        let name = format!(
            "{} ({})",
            s.name.as_deref().unwrap_or("?"),
            s.kind
                .map(|k| format!("{k:?}").to_lowercase())
                .unwrap_or_else(|| "local".into())
        );
        let e = layers.entry((service, name)).or_default();
        if let Some(d) = s.duration {
            e.0.push(d);
        }
        if s.tags.contains_key("error") {
            e.1 += 1;
        }
    }
    let mut out = format!(
        "{} traces, {spans} spans\n{:<10} {:<22} {:>6} {:>6} {:>10} {:>10}\n",
        traces.len(),
        "service",
        "span",
        "count",
        "errors",
        "p50 µs",
        "p99 µs"
    );
    for ((service, name), (mut d, errors)) in layers {
        d.sort_unstable();
        let pct = |p: f64| -> String {
            if d.is_empty() {
                return "-".into();
            }
            let i = ((d.len() as f64 * p).ceil() as usize).clamp(1, d.len()) - 1;
            d[i].to_string()
        };
        out.push_str(&format!(
            "{service:<10} {name:<22} {:>6} {errors:>6} {:>10} {:>10}\n",
            d.len(),
            pct(0.50),
            pct(0.99)
        ));
    }
    out.trim_end().to_string()
}

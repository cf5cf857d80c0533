//! `blkkin status`: one relay's streams, rates, losses, consumers and readers.

use std::collections::HashMap;
use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use blkkin::relay_client::RelayReader;
use blkkin::tls::{ClientAuth, ClientAuthOptions};
use blkkin::wire::{PeerStatus, StatusReport, StreamCounters, StreamKey};

/// Runs `blkkin status`.
pub fn status(
    relay: &str,
    auth: &ClientAuthOptions,
    json: bool,
    interval: f64,
) -> anyhow::Result<ExitCode> {
    let interval = Duration::try_from_secs_f64(interval)
        .with_context(|| format!("invalid --interval {interval}"))?;
    let name = format!("blkkin-status-{}", std::process::id());
    let auth = ClientAuth::from_options(auth)?;
    let mut reader = RelayReader::connect_with(relay, &name, &auth)
        .with_context(|| format!("connecting to relay {relay}"))?;
    let first = reader.status().context("asking the relay for its status")?;
    let t0 = Instant::now();
    let (mut report, rates) = if interval.is_zero() {
        (first, None)
    } else {
        std::thread::sleep(interval);
        let second = reader.status().context("asking the relay for its status")?;
        let rates = rates(&first, &second, t0.elapsed());
        (second, Some(rates))
    };
    // This command is a reader too; it is not worth listing.
    report.readers.retain(|r| r.name != name);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if json {
        let mut v = serde_json::to_value(&report)?;
        if let (Some(rates), Some(streams)) = (&rates, v["streams"].as_array_mut()) {
            for (s, st) in streams.iter_mut().zip(&report.streams) {
                s["rate"] = serde_json::json!(rates.get(&st.summary.key));
            }
        }
        v["relay_address"] = serde_json::json!(relay);
        writeln!(out, "{v}")?;
    } else {
        write_text(&mut out, relay, &report, rates.as_ref())?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Records per second per stream between two reports.
fn rates(a: &StatusReport, b: &StatusReport, dt: Duration) -> HashMap<StreamKey, f64> {
    let before: HashMap<&StreamKey, u64> = a
        .streams
        .iter()
        .map(|s| (&s.summary.key, s.summary.next))
        .collect();
    b.streams
        .iter()
        .map(|s| {
            let from = before
                .get(&s.summary.key)
                .copied()
                .unwrap_or(s.summary.first);
            let n = s.summary.next.saturating_sub(from);
            (s.summary.key.clone(), n as f64 / dt.as_secs_f64())
        })
        .collect()
}

fn duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{}.{}s", s, (ms % 1000) / 100),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s / 60 % 60),
        _ => format!("{}d{:02}h", s / 86400, s / 3600 % 24),
    }
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// The nonzero loss counters, "torn 2, relay gap 5".
fn loss_detail(c: &StreamCounters) -> String {
    [
        ("ring full", c.writer.lost_full),
        ("too big", c.writer.lost_too_big),
        ("no ring", c.writer.lost_no_ring),
        ("corrupt head", c.writer.lost_corrupt),
        ("torn", c.reader.torn),
        ("corrupt", c.reader.corrupt),
        ("gap", c.reader.gap),
        ("relay gap", c.relay_gap),
        ("relay refused", c.relay_refused),
        ("relay corrupt", c.relay_corrupt),
        ("retention", c.relay_retention),
    ]
    .iter()
    .filter(|(_, v)| *v > 0)
    .map(|(k, v)| format!("{k} {v}"))
    .collect::<Vec<_>>()
    .join(", ")
}

fn write_peers(out: &mut impl Write, what: &str, peers: &[PeerStatus]) -> std::io::Result<()> {
    writeln!(out, "{what} ({}):", peers.len())?;
    for p in peers {
        write!(
            out,
            "  {}  {}  connected {}",
            p.name,
            p.addr,
            duration(p.connected_ms)
        )?;
        if what == "readers" {
            write!(out, "  lag {} records", p.lag)?;
        }
        if let Some(c) = &p.consumer {
            write!(
                out,
                "\n    records read {}, acknowledged {}, buffered {} of {}, buffer full {} times, \
                 reconnects {}, batches re-sent {}, rings {}",
                c.records,
                c.acked,
                bytes(c.buffered_bytes),
                bytes(c.buffer_limit),
                c.buffer_full,
                c.connects.saturating_sub(1),
                c.resent,
                c.rings
            )?;
        }
        writeln!(out)?;
    }
    Ok(())
}

fn write_text(
    out: &mut impl Write,
    addr: &str,
    r: &StatusReport,
    rates: Option<&HashMap<StreamKey, f64>>,
) -> std::io::Result<()> {
    writeln!(
        out,
        "relay {} at {addr}, up {}",
        r.relay,
        duration(r.uptime_ms)
    )?;
    write_peers(out, "consumers", &r.consumers)?;
    write_peers(out, "readers", &r.readers)?;
    writeln!(out, "streams ({}):", r.streams.len())?;
    if r.streams.is_empty() {
        return Ok(());
    }
    writeln!(
        out,
        "  {:<16} {:>8} {:>4} {:>12} {:>12} {:>10} {:>10} {:>8}  state",
        "node", "pid", "cpu", "first", "next", "rec/s", "size", "lost"
    )?;
    for s in &r.streams {
        let k = &s.summary.key;
        let rate = rates
            .and_then(|m| m.get(k))
            .map_or_else(|| "-".to_string(), |v| format!("{v:.1}"));
        writeln!(
            out,
            "  {:<16} {:>8} {:>4} {:>12} {:>12} {:>10} {:>10} {:>8}  {}",
            k.node,
            k.pid,
            k.cpu,
            s.summary.first,
            s.summary.next,
            rate,
            bytes(s.bytes),
            s.counters.lost(),
            if s.summary.closed { "closed" } else { "open" }
        )?;
        if s.counters.lost() > 0 {
            writeln!(out, "    lost: {}", loss_detail(&s.counters))?;
        }
    }
    Ok(())
}

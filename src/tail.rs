//! `blkkin tail`: annotations (and changes of loss counters) as a relay
//! receives them.

use std::collections::HashMap;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use blkkin::relay_client::{Event, RelayReader, StreamInfo};
use blkkin::tls::{ClientAuth, ClientAuthOptions};
use blkkin::wire::{Start, StreamKey};

/// One line about a stream whose loss changed.
fn loss_line(s: &StreamInfo, json: bool) -> String {
    let c = &s.counters;
    let k = &s.key;
    if json {
        serde_json::json!({
            "type": "counters",
            "node": k.node,
            "pid": k.pid,
            "start_time": k.start_time,
            "cpu": k.cpu,
            "lost": s.lost(),
            "counters": c,
            "undecodable": s.undecodable,
        })
        .to_string()
    } else {
        format!(
            "# loss node={} pid={} cpu={}: {} lost (writers: ring full {}, too big {}, no ring {}, \
             corrupt head {}; reader: torn {}, corrupt {}, gap {}; relay: gap {}, refused {}, \
             corrupt {}, retention {}; undecodable here {})",
            k.node,
            k.pid,
            k.cpu,
            s.lost(),
            c.writer.lost_full,
            c.writer.lost_too_big,
            c.writer.lost_no_ring,
            c.writer.lost_corrupt,
            c.reader.torn,
            c.reader.corrupt,
            c.reader.gap,
            c.relay_gap,
            c.relay_refused,
            c.relay_corrupt,
            c.relay_retention,
            s.undecodable
        )
    }
}

/// Runs `blkkin tail`.
pub fn tail(
    relay: &str,
    auth: &ClientAuthOptions,
    json: bool,
    from_oldest: bool,
    count: Option<u64>,
) -> anyhow::Result<ExitCode> {
    let name = format!("blkkin-tail-{}", std::process::id());
    let auth = ClientAuth::from_options(auth)?;
    let mut reader = RelayReader::connect_with(relay, &name, &auth)
        .with_context(|| format!("connecting to relay {relay}"))?;
    reader.subscribe(
        None,
        if from_oldest {
            Start::Oldest
        } else {
            Start::Newest
        },
    )?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut printed = 0u64;
    // Losses already shown, per stream (across reconnects).
    let mut shown: HashMap<StreamKey, u64> = HashMap::new();
    loop {
        let mut failed = None;
        let got = reader.next_events(|e| {
            if failed.is_some() || count.is_some_and(|c| printed >= c) {
                return;
            }
            let res = match e {
                Event::Record(s, r) => {
                    let mut res = Ok(());
                    let annotations = blkkin::annotation::Annotation::from_record(
                        r,
                        &s.ring,
                        Some(&s.calibration),
                    );
                    for a in annotations {
                        if res.is_err() || count.is_some_and(|c| printed >= c) {
                            break;
                        }
                        printed += 1;
                        res = if json {
                            serde_json::to_writer(&mut out, &a)
                                .map_err(std::io::Error::from)
                                .and_then(|_| out.write_all(b"\n"))
                        } else {
                            writeln!(out, "{a}")
                        };
                    }
                    res
                }
                Event::Counters(s) => {
                    let lost = s.lost();
                    if shown.get(&s.key).copied().unwrap_or(0) == lost {
                        return;
                    }
                    shown.insert(s.key.clone(), lost);
                    writeln!(out, "{}", loss_line(s, json))
                }
            };
            if let Err(e) = res {
                failed = Some(e);
            }
        });
        if let Some(e) = failed {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(ExitCode::SUCCESS);
            }
            return Err(e).context("writing output");
        }
        out.flush().ok();
        if count.is_some_and(|c| printed >= c) {
            return Ok(ExitCode::SUCCESS);
        }
        if let Err(e) = got {
            eprintln!("blkkin tail: {e}; reconnecting");
            let mut delay = Duration::from_millis(100);
            loop {
                std::thread::sleep(delay);
                match reader.reconnect_with(relay, &name, &auth) {
                    Ok(()) => break,
                    Err(e) => eprintln!("blkkin tail: {e}"),
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            // Every stream continues where it stopped (positions delivered are skipped).
            reader.subscribe(None, Start::Oldest)?;
        }
    }
}

//! Assembly and encoding throughput (issue target: ≥ 200 k spans/s per core
//! for JSON v2 and for Thrift v1). Run: `cargo bench -p blkkin-collector`.
//!
//! Input: RPCs recorded Zipkin v1 style — a client side (cs, cr) and a server
//! side (sr, a string and an integer key/value, an event, ss) sharing one span
//! id: 7 annotations → 2 spans. Measured on one thread as the collector's
//! pipeline runs: the assembler's clock follows the annotations, it is
//! polled as it goes, and spans are encoded in batches of 500 as they are
//! emitted (so, as in the collector, a few batches are alive at a time). Reported: the best
//! wall-clock rate and the rate per CPU second (the per-core figure, which
//! a busy machine disturbs less), and a `RESULT {json}` line.

use std::hint::black_box;
use std::time::{Duration, Instant};

use blkkin::annotation::{Annotation, AnnotationValue};
use blkkin::ring::layout::Kind;
use blkkin_collector::assemble::{AssemblerConfig, SpanAssembler};
use blkkin_collector::model::Span;
use blkkin_collector::tbinary;
use blkkin_collector::v1::V1Span;

// The collector binary's allocator, so the figures are the collector's.
#[global_allocator]
static ALLOC: blkkin_collector::Allocator = blkkin_collector::ALLOCATOR;

fn annotations(rpcs: u64) -> Vec<Annotation> {
    let mut out = Vec::with_capacity(rpcs as usize * 7);
    for i in 0..rpcs {
        let base = Annotation {
            trace_id: format!("{:016x}", 0x1000_0000 + i),
            id: format!("{:016x}", 0x2000_0000 + i),
            parent_id: Some(format!("{:016x}", 0x3000_0000 + i)),
            name: "osd_op".into(),
            service_name: "client".into(),
            ipv4: Some("10.0.0.1".into()),
            ipv6: None,
            port: 5000,
            timestamp: Some(1_700_000_000_000_000 + i * 10),
            kind: Kind::Event,
            value: AnnotationValue::Text("cs".into()),
            key: None,
            debug: false,
            pid: 1,
            cpu: 0,
        };
        let server = |ts: u64, kind: Kind, key: Option<&str>, value: AnnotationValue| Annotation {
            service_name: "osd".into(),
            ipv4: Some("10.0.0.2".into()),
            port: 6800,
            timestamp: Some(base.timestamp.unwrap() + ts),
            kind,
            key: key.map(String::from),
            value,
            ..base.clone()
        };
        let ev = |ts, v: &str| server(ts, Kind::Event, None, AnnotationValue::Text(v.into()));
        out.push(base.clone());
        out.push(ev(1, "sr"));
        out.push(server(
            2,
            Kind::String,
            Some("object"),
            AnnotationValue::Text(format!("obj_{i}")),
        ));
        out.push(server(
            2,
            Kind::Integer,
            Some("bytes"),
            AnnotationValue::Integer(4096),
        ));
        out.push(ev(3, "journaled"));
        out.push(ev(4, "ss"));
        out.push(Annotation {
            timestamp: Some(base.timestamp.unwrap() + 5),
            value: AnnotationValue::Text("cr".into()),
            ..base
        });
    }
    out
}

/// Assembles `anns` as the collector's pipeline does: the assembler's clock
/// follows the annotations' timestamps (100 k RPCs over one second), it is
/// polled every 1024 annotations, and emitted spans leave in batches of 500
/// through `batch` (to an encoder, as to a sink). Returns the spans emitted.
fn assemble_into(anns: &[Annotation], mut batch: impl FnMut(&[Span])) -> usize {
    let mut asm = SpanAssembler::new(AssemblerConfig::default());
    let t0 = Instant::now();
    let first = anns[0].timestamp.unwrap();
    let mut out = Vec::with_capacity(1024);
    let (mut emitted, mut now) = (0, t0);
    for (n, a) in anns.iter().enumerate() {
        now = t0 + Duration::from_micros(a.timestamp.unwrap() - first);
        asm.add(a, now, &mut out);
        if n % 1024 == 0 {
            asm.poll(now, &mut out);
        }
        if out.len() >= 500 {
            batch(&out);
            emitted += out.len();
            out.clear();
        }
    }
    // Everything is closed: one poll after the linger emits the rest.
    asm.poll(now + Duration::from_secs(1), &mut out);
    for b in out.chunks(500) {
        batch(b);
    }
    emitted + out.len()
}

/// Every span assembled from `anns`, in one vector (the encoders' input).
fn assemble(anns: &[Annotation]) -> Vec<Span> {
    let mut all = Vec::new();
    assemble_into(anns, |b| all.extend_from_slice(b));
    all
}

fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command name (which may hold spaces): state is the
    // first, utime and stime the 12th and 13th.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0 // USER_HZ
}

/// Runs `f` (which handles `spans` spans) until it has used at least 2 CPU
/// seconds over at least 3 rounds; prints and returns the best wall-clock
/// rate and the rate per CPU second (spans per second of one core).
fn rate(what: &str, spans: usize, f: impl Fn() -> usize) -> (f64, f64) {
    let (mut best_wall, mut cpu, mut rounds) = (f64::MAX, 0.0, 0u32);
    while rounds < 3 || cpu < 2.0 {
        let (t, c) = (Instant::now(), cpu_seconds());
        black_box(f());
        best_wall = best_wall.min(t.elapsed().as_secs_f64());
        cpu += cpu_seconds() - c;
        rounds += 1;
    }
    let (wall, per_cpu) = (
        spans as f64 / best_wall,
        spans as f64 * f64::from(rounds) / cpu,
    );
    println!("{what:<28} {wall:>10.0} spans/s (best wall)  {per_cpu:>10.0} spans/s per CPU second");
    (wall, per_cpu)
}

fn json_batch(b: &[Span]) -> usize {
    serde_json::to_vec(b).unwrap().len()
}

fn thrift_batch(b: &[Span]) -> usize {
    let v1: Vec<V1Span> = b.iter().map(|s| V1Span::from_v2(s).unwrap()).collect();
    tbinary::encode_span_list(&v1).len()
}

fn main() {
    let anns = annotations(100_000);
    let spans = assemble(&anns);
    assert_eq!(spans.len(), 200_000);
    let n = spans.len();
    let encode_all = |encode: fn(&[Span]) -> usize| spans.chunks(500).map(encode).sum::<usize>();
    let assemble_and = |encode: fn(&[Span]) -> usize| {
        let mut bytes = 0;
        assemble_into(&anns, |b| bytes += encode(b));
        black_box(bytes)
    };
    let results = [
        (
            "assembly",
            rate("assembly", n, || {
                assemble_into(&anns, |b| {
                    black_box(b);
                })
            }),
        ),
        (
            "json",
            rate("JSON v2 encoding", n, || encode_all(json_batch)),
        ),
        (
            "thrift",
            rate("Thrift v1 encoding", n, || encode_all(thrift_batch)),
        ),
        (
            "assembly_json",
            rate("assembly + JSON v2", n, || assemble_and(json_batch)),
        ),
        (
            "assembly_thrift",
            rate("assembly + Thrift v1", n, || assemble_and(thrift_batch)),
        ),
    ];
    // One JSON line for bench/collector.sh.
    let fields: Vec<String> = results
        .iter()
        .map(|(k, (wall, cpu))| format!("\"{k}\":{{\"wall\":{wall:.0},\"per_cpu\":{cpu:.0}}}"))
        .collect();
    println!("RESULT {{{}}}", fields.join(","));
}

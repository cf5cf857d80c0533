//! The Rust-side record-path harness for bench/run.sh: the same method as
//! bench/c/bench_blkin.c (spin to warm the vCPU, then interleaved rounds of
//! N calls, median ns per call per bench, one JSON line each), so Rust API,
//! C ABI, fastrace and LTTng numbers come from comparable runs.
//! (`cargo bench -p blkkin` runs the same operations under criterion.)
//!
//! usage: BLKIN_SHM_DIR=... BLKIN_RING_MODE=overwrite bench_rust [CALLS_PER_ROUND] [ROUNDS] [SUITE]
//!
//! SUITE is `blkkin` (the Rust API, default) or `fastrace`. bench/run.sh runs
//! them as separate processes: fastrace hands every span to a background
//! collector thread, which would otherwise keep working (on the other vCPU,
//! a hyperthread sibling here) through the rounds of the blkkin benches.

use std::hint::black_box;
use std::time::{Duration, Instant};

use blkkin::{Endpoint, Span, TraceContext};
use fastrace::prelude::*;

struct NoopReporter;

impl fastrace::collector::Reporter for NoopReporter {
    fn report(&mut self, _spans: Vec<fastrace::collector::SpanRecord>) {}
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn spin(d: Duration) {
    let t = Instant::now();
    while t.elapsed() < d {
        std::hint::spin_loop();
    }
}

/// Per-thread ns per event with `threads` threads recording at once.
fn threads_round(threads: usize, n: u64) -> Vec<f64> {
    let barrier = std::sync::Barrier::new(threads);
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let ep = Endpoint::new("osd.0", "10.0.0.1", 6800);
                    let span = Span::join(TraceContext::new_root_forced(), "osd_op", &ep);
                    barrier.wait();
                    let t = Instant::now();
                    for _ in 0..n {
                        span.event(black_box("sr"));
                    }
                    t.elapsed().as_nanos() as f64 / n as f64
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let rounds: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(31);
    let fastrace_suite = match args.get(3).map(String::as_str) {
        None | Some("blkkin") => false,
        Some("fastrace") => true,
        Some(other) => {
            eprintln!("bench_rust: unknown suite {other:?} (blkkin or fastrace)");
            std::process::exit(2);
        }
    };
    if let Err(e) = blkkin::init() {
        eprintln!("bench_rust: {e}");
        std::process::exit(1);
    }
    if fastrace_suite {
        fastrace::set_reporter(NoopReporter, fastrace::collector::Config::default());
    }
    let ep = Endpoint::new("osd.0", "10.0.0.1", 6800);
    let root = Span::root_forced("osd_op", &ep);
    let unsampled = Span::join(TraceContext::UNSAMPLED, "osd_op", &ep);
    let un = black_box(&unsampled);

    type Bench<'a> = (&'static str, Box<dyn Fn(u64) -> Duration + 'a>);
    let benches: Vec<Bench> = vec![
        (
            "rust_event",
            Box::new(|n| {
                let t = Instant::now();
                for _ in 0..n {
                    root.event(black_box("sr"));
                }
                t.elapsed()
            }),
        ),
        (
            "rust_tag_string",
            Box::new(|n| {
                let t = Instant::now();
                for _ in 0..n {
                    root.tag(
                        black_box("object"),
                        black_box("rbd_data.1234.0000000000000001"),
                    );
                }
                t.elapsed()
            }),
        ),
        (
            "rust_child_span",
            Box::new(|n| {
                let t = Instant::now();
                for _ in 0..n {
                    drop(black_box(root.child(black_box("journal"))));
                }
                t.elapsed()
            }),
        ),
        (
            // Children of a local parent, timed; roots set up per 1024
            // children outside the timing so memory stays bounded.
            "fastrace_child_span",
            Box::new(|n| {
                let mut total = Duration::ZERO;
                let mut left = n;
                while left > 0 {
                    let chunk = left.min(1024);
                    left -= chunk;
                    let root = fastrace::Span::root("osd_op", SpanContext::random());
                    let _g = root.set_local_parent();
                    let t = Instant::now();
                    for _ in 0..chunk {
                        drop(black_box(LocalSpan::enter_with_local_parent(black_box(
                            "journal",
                        ))));
                    }
                    total += t.elapsed();
                }
                total
            }),
        ),
        (
            // Eight per loop iteration, like the C harness, each followed
            // by the same compiler barrier as there (an empty asm block
            // that may touch memory), so each call reloads the span's
            // trace id instead of the check being hoisted out of the loop.
            // (`black_box(un)` per call instead adds a store and a reload
            // of the pointer itself: about a third of a nanosecond here.)
            "rust_unsampled_event",
            Box::new(|n| {
                let t = Instant::now();
                for _ in 0..n.div_ceil(8) {
                    for _ in 0..8 {
                        un.event("sr");
                        memory_barrier();
                    }
                }
                t.elapsed()
            }),
        ),
    ];

    let benches: Vec<Bench> = benches
        .into_iter()
        .filter(|(name, _)| name.starts_with("fastrace") == fastrace_suite)
        .collect();
    spin(Duration::from_millis(1500));
    for (_, f) in &benches {
        f(n); // warm-up
    }
    let mut samples = vec![Vec::with_capacity(rounds); benches.len()];
    for _ in 0..rounds {
        for (i, (_, f)) in benches.iter().enumerate() {
            samples[i].push(f(n).as_nanos() as f64 / n as f64);
        }
    }
    for ((name, _), s) in benches.iter().zip(samples) {
        println!("{{\"bench\":\"{name}\",\"median_ns\":{:.2}}}", median(s));
    }
    if fastrace_suite {
        return;
    }
    for threads in [1, 2] {
        let all: Vec<f64> = (0..rounds)
            .flat_map(|_| threads_round(threads, n))
            .collect();
        println!(
            "{{\"bench\":\"rust_event_{threads}threads\",\"median_ns\":{:.2}}}",
            median(all)
        );
    }
}

/// A compiler barrier like C's `__asm__ __volatile__("" ::: "memory")`:
/// the compiler must assume any memory may have changed across it.
#[inline(always)]
fn memory_barrier() {
    // SAFETY: an empty asm block: it executes no instruction, touches no
    // register, stack or flag; without `nomem` the compiler only has to
    // assume memory may have been read or written, which is the point.
    unsafe { std::arch::asm!("", options(nostack, preserves_flags)) }
}

//! Record-path benchmarks of the Rust API, side by side with fastrace.
//!
//! `cargo bench -p blkkin` (criterion). bench/run.sh runs these together with
//! the C-ABI and LTTng-UST harnesses and writes docs/BENCHMARKS.md.

use std::hint::black_box;
use std::time::{Duration, Instant};

use blkkin::{Endpoint, Span, TraceContext};
use criterion::{criterion_group, criterion_main, Criterion};

fn endpoint() -> Endpoint {
    Endpoint::new("osd.0", "10.0.0.1", 6800)
}

/// Times `iters` runs of `f` in a plain loop (as the C harness does), so
/// criterion's per-iteration closure call is not part of the result.
fn tight(iters: u64, mut f: impl FnMut()) -> Duration {
    let t = Instant::now();
    for _ in 0..iters {
        f();
    }
    t.elapsed()
}

fn rust_api(c: &mut Criterion) {
    blkkin::init().expect("rings (set BLKIN_SHM_DIR to a writable directory)");
    let ep = endpoint();
    let mut g = c.benchmark_group("rust");
    let root = Span::root_forced("osd_op", &ep);
    g.bench_function("event", |b| {
        b.iter_custom(|n| tight(n, || root.event(black_box("sr"))))
    });
    g.bench_function("tag_string", |b| {
        b.iter_custom(|n| {
            tight(n, || {
                root.tag(
                    black_box("object"),
                    black_box("rbd_data.1234.0000000000000001"),
                )
            })
        })
    });
    g.bench_function("child_span", |b| {
        b.iter_custom(|n| tight(n, || drop(black_box(root.child(black_box("journal"))))))
    });
    let unsampled = Span::join(TraceContext::UNSAMPLED, "osd_op", &ep);
    // Eight calls per iteration, reported per call: the loop's own overhead
    // is of the same order as the branch being measured. `black_box` on the
    // span's address makes every call re-read it instead of hoisting the
    // check out of the loop.
    let un = black_box(&unsampled);
    g.bench_function("unsampled_event", |b| {
        b.iter_custom(|n| {
            tight(n, || {
                for _ in 0..8 {
                    black_box(un).event("sr");
                }
            }) / 8
        })
    });
    g.bench_function("unsampled_child_span", |b| {
        b.iter_custom(|n| {
            tight(n, || {
                drop(black_box(black_box(&unsampled).child("journal")))
            })
        })
    });
    for threads in [1usize, 2] {
        g.bench_function(format!("event_{threads}threads"), |b| {
            b.iter_custom(|iters| per_thread_time(threads, iters));
        });
    }
    g.finish();
}

/// Wall time for each of `threads` threads to record `iters` events; the
/// per-thread cost per event is what criterion reports.
fn per_thread_time(threads: usize, iters: u64) -> Duration {
    let barrier = std::sync::Barrier::new(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let ep = endpoint();
                    let span = Span::join(TraceContext::new_root_forced(), "osd_op", &ep);
                    barrier.wait();
                    let t = Instant::now();
                    for _ in 0..iters {
                        span.event(black_box("sr"));
                    }
                    t.elapsed()
                })
            })
            .collect();
        let times: Vec<Duration> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        times.iter().sum::<Duration>() / threads as u32
    })
}

struct NoopReporter;

impl fastrace::collector::Reporter for NoopReporter {
    fn report(&mut self, _spans: Vec<fastrace::collector::SpanRecord>) {}
}

fn fastrace_peer(c: &mut Criterion) {
    use fastrace::prelude::*;
    fastrace::set_reporter(NoopReporter, fastrace::collector::Config::default());
    let mut g = c.benchmark_group("fastrace");
    // A child of a local parent: fastrace's fast path. Only the children are
    // timed; roots (which hand the spans to the reporter) are set up per chunk
    // so memory stays bounded.
    g.bench_function("child_span", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let chunk = left.min(1024);
                left -= chunk;
                let root = fastrace::Span::root("osd_op", SpanContext::random());
                let _guard = root.set_local_parent();
                let t = Instant::now();
                for _ in 0..chunk {
                    drop(black_box(LocalSpan::enter_with_local_parent(black_box(
                        "journal",
                    ))));
                }
                total += t.elapsed();
            }
            total
        })
    });
    g.finish();
    fastrace::flush();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2)).sample_size(30);
    targets = rust_api, fastrace_peer
}
criterion_main!(benches);

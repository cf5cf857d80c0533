//! Record-path benchmarks of the Rust API (`cargo bench -p blkkin`, criterion).
//!
//! The side-by-side comparison with fastrace, the C ABI and LTTng-UST is
//! `bash bench/run.sh` (examples/bench_rust.rs and the C harnesses, one
//! method for all), which writes docs/BENCHMARKS.md. (fastrace is measured
//! only there: under criterion, our fastrace setup gave ~3× the harness's and
//! the published ~42 ns, a discrepancy we have not explained.)

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

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2)).sample_size(30);
    targets = rust_api
}
criterion_main!(benches);

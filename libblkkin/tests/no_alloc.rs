//! The record path never allocates after warm-up (a counting global
//! allocator sees every allocation of this test binary).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator, only counting calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn recording_does_not_allocate_after_warm_up() {
    let dir = tempfile::tempdir().unwrap();
    std::env::set_var("BLKIN_SHM_DIR", dir.path());
    std::env::set_var("BLKIN_RING_MODE", "overwrite"); // keep writing when full
    let ep = blkkin::Endpoint::new("osd.0", "10.0.0.1", 6800);
    let root = blkkin::Span::root_forced("osd_op", &ep);
    root.event("warm-up"); // creates the rings, reads the environment
    let unsampled = blkkin::Span::join(blkkin::TraceContext::UNSAMPLED, "x", &ep);

    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for i in 0..200_000 {
        root.event("sr");
        root.tag("object", "rbd_data.1234");
        root.tag_int("bytes", i);
        let child = root.child("journal");
        child.event_at("queued", &ep);
        drop(child);
        unsampled.event("nothing");
    }
    let after = ALLOCATIONS.load(Ordering::Relaxed);
    assert_eq!(
        after - before,
        0,
        "the record path allocated {} times",
        after - before
    );
    // And the records are really there (five per round: the child span is
    // one record): the rings wrapped many times over.
    let rings = blkkin::recorder::rings().unwrap();
    let written: u64 = rings
        .paths()
        .iter()
        .map(|p| {
            blkkin::ring::RingReader::open(p, blkkin::ring::ReadMode::Peek)
                .unwrap()
                .writer_counters()
                .written
        })
        .sum();
    assert!(written >= 1_000_000, "{written}");
}

//! Span and trace ids: 64-bit, non-zero, from a per-thread generator.
//!
//! Each thread runs wyrand seeded from the OS (`getrandom`); a fork bumps a
//! global generation so the child reseeds instead of repeating its parent's
//! ids. (ceph/blkin combined two `rand()` calls, which gives 62 random bits
//! at best, and mapped negatives through logical `!`, which turns them into 0:
//! "not traced". We fix both.)

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);

thread_local! {
    // (state, generation it was seeded in); const-initialised, no destructor,
    // so it is usable at any point of a thread's life.
    static RNG: Cell<(u64, u64)> = const { Cell::new((0, u64::MAX)) };
}

fn os_seed() -> u64 {
    let mut buf = [0u8; 8];
    // SAFETY: the buffer is valid for 8 bytes of writes.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), 8, libc::GRND_NONBLOCK) };
    let mut seed = u64::from_le_bytes(buf);
    if n != 8 {
        // No entropy available yet: mix what differs between threads and runs.
        let local = 0u8;
        seed ^= crate::clock::realtime_ns()
            ^ (std::process::id() as u64) << 32
            ^ (&local as *const u8 as u64);
    }
    seed
}

/// Called in a forked child: every thread-local generator reseeds on next use.
pub(crate) fn after_fork() {
    FORK_GENERATION.fetch_add(1, Ordering::Relaxed);
}

/// A uniformly random 64-bit value (may be 0).
#[inline]
pub fn random_u64() -> u64 {
    RNG.with(|c| {
        let (mut s, gen) = c.get();
        let now = FORK_GENERATION.load(Ordering::Relaxed);
        if gen != now {
            s = os_seed();
        }
        s = s.wrapping_add(0xa076_1d64_78bd_642f);
        c.set((s, now));
        let t = (s as u128).wrapping_mul((s ^ 0xe703_7ed1_a0b4_28db) as u128);
        ((t >> 64) as u64) ^ (t as u64)
    })
}

/// A new non-zero id.
#[inline]
pub fn new_id() -> u64 {
    loop {
        let v = random_u64();
        if v != 0 {
            return v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_are_nonzero_and_distinct() {
        let ids: HashSet<u64> = (0..100_000).map(|_| new_id()).collect();
        assert_eq!(ids.len(), 100_000);
        assert!(!ids.contains(&0));
    }

    #[test]
    fn threads_get_different_streams() {
        let a: Vec<u64> = std::thread::spawn(|| (0..8).map(|_| new_id()).collect())
            .join()
            .unwrap();
        let b: Vec<u64> = std::thread::spawn(|| (0..8).map(|_| new_id()).collect())
            .join()
            .unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn high_bit_is_used() {
        assert!((0..1000).map(|_| new_id()).any(|v| v >> 63 == 1));
    }
}

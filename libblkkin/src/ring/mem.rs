//! The one place that turns a mapped ring file into memory we can touch.
//!
//! Everything else in the ring module works through [`RingMem`]: aligned
//! 64-bit atomics for every word that is shared between processes, a bounded
//! byte copy for the writer, and a bounded word copy for readers. The bounds
//! are checked here, so a corrupt header can never lead to an access outside
//! the mapping.

use std::ptr::NonNull;
use std::sync::atomic::AtomicU64;

/// What keeps the memory alive.
enum Backing {
    /// A shared, writable file mapping (writers, consuming readers).
    MapMut(#[allow(dead_code)] memmap2::MmapMut),
    /// A read-only file mapping (peeking readers such as `blkkin dump`).
    Map(#[allow(dead_code)] memmap2::Mmap),
    /// Process-private memory (tests, Miri).
    Heap(std::sync::Arc<[AtomicU64]>),
}

/// A ring file's bytes: header followed by data, 8-byte aligned.
pub struct RingMem {
    base: NonNull<u8>,
    len: usize,
    writable: bool,
    _backing: Backing,
}

// SAFETY: all shared accesses go through atomics or through the ring protocol
// (a writer owns the bytes it reserved until it commits them); the raw pointer
// itself is just an address into a mapping owned by `_backing`.
unsafe impl Send for RingMem {}
// SAFETY: see above; `&RingMem` only hands out atomics and bounded copies.
unsafe impl Sync for RingMem {}

impl RingMem {
    /// Wraps a writable shared mapping.
    pub fn from_map_mut(mut map: memmap2::MmapMut) -> RingMem {
        let len = map.len() & !7;
        let base = NonNull::new(map.as_mut_ptr()).expect("mmap never returns null");
        RingMem {
            base,
            len,
            writable: true,
            _backing: Backing::MapMut(map),
        }
    }

    /// Wraps a read-only mapping. Writes through it are refused.
    pub fn from_map(map: memmap2::Mmap) -> RingMem {
        let len = map.len() & !7;
        let base = NonNull::new(map.as_ptr() as *mut u8).expect("mmap never returns null");
        RingMem {
            base,
            len,
            writable: false,
            _backing: Backing::Map(map),
        }
    }

    /// Zeroed private memory of `len` bytes (rounded down to 8).
    pub fn heap(len: usize) -> RingMem {
        let words: std::sync::Arc<[AtomicU64]> = (0..len / 8).map(|_| AtomicU64::new(0)).collect();
        let base = NonNull::new(words.as_ptr() as *mut u8).unwrap_or(NonNull::dangling());
        RingMem {
            base,
            len: len & !7,
            writable: true,
            _backing: Backing::Heap(words),
        }
    }

    /// A second handle on the same private memory (a writer and a reader of
    /// one in-process ring). `None` for file mappings: open the file again.
    pub fn share(&self) -> Option<RingMem> {
        match &self._backing {
            Backing::Heap(words) => Some(RingMem {
                base: self.base,
                len: self.len,
                writable: true,
                _backing: Backing::Heap(words.clone()),
            }),
            _ => None,
        }
    }

    /// Total size in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the memory has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether stores are allowed.
    pub fn writable(&self) -> bool {
        self.writable
    }

    /// The aligned 64-bit word at byte offset `off`.
    ///
    /// Panics if `off` is unaligned or out of bounds: offsets passed here come
    /// from constants or are masked into the data area by the caller.
    #[inline(always)]
    pub fn word(&self, off: usize) -> &AtomicU64 {
        assert!(
            off.is_multiple_of(8) && off + 8 <= self.len,
            "ring word offset {off} out of bounds"
        );
        // SAFETY: in bounds and 8-byte aligned (the base is page- or
        // allocation-aligned); AtomicU64 has the layout of u64, and all
        // concurrent accesses to shared words are atomic.
        unsafe { &*(self.base.as_ptr().add(off) as *const AtomicU64) }
    }

    /// Copies `src` into the ring at byte offset `off` (writer side).
    ///
    /// Only called for bytes inside a region the caller reserved, so no other
    /// writer touches them concurrently.
    #[inline(always)]
    pub fn write_bytes(&self, off: usize, src: &[u8]) {
        assert!(self.writable && off <= self.len && src.len() <= self.len - off);
        // SAFETY: bounds checked above; the destination is inside the
        // caller's reserved region, which no other writer touches, and the
        // source is a distinct caller slice, so they do not overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), self.base.as_ptr().add(off), src.len())
        }
    }

    /// Copies `dst.len()` words starting at byte offset `off` (reader side).
    ///
    /// Uses relaxed atomic loads, so racing with a writer (a corrupt or
    /// overwritten record) yields garbage values, never undefined behaviour.
    #[inline]
    pub fn read_words(&self, off: usize, dst: &mut [u64]) {
        assert!(off.is_multiple_of(8) && off <= self.len && dst.len() <= (self.len - off) / 8);
        for (i, d) in dst.iter_mut().enumerate() {
            *d = self
                .word(off + i * 8)
                .load(std::sync::atomic::Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn heap_words_round_trip() {
        let m = RingMem::heap(64);
        m.word(8).store(42, Ordering::Relaxed);
        m.write_bytes(16, &7u64.to_le_bytes());
        let mut out = [0u64; 3];
        m.read_words(8, &mut out);
        assert_eq!(out, [42, 7, 0]);
    }

    #[test]
    #[should_panic]
    fn out_of_bounds_word_panics() {
        RingMem::heap(64).word(64);
    }

    #[test]
    #[should_panic]
    fn out_of_bounds_copy_panics() {
        RingMem::heap(64).read_words(48, &mut [0u64; 3]);
    }
}

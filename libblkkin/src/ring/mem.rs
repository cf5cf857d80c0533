//! The one place that turns a mapped ring file into memory we can touch.
//!
//! Everything else in the ring module works through [`RingMem`]: aligned
//! 64-bit atomics for every word that is shared between processes, a bounded
//! byte copy for the writer, and a bounded word copy for readers. The bounds
//! are checked here, so a corrupt header can never lead to an access outside
//! the mapping.

use std::ptr::NonNull;
use std::sync::atomic::AtomicU64;

use super::layout::HEADER_SIZE;

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
        // SAFETY: all-zero bytes are a valid AtomicU64 (same layout as u64).
        let words: std::sync::Arc<[AtomicU64]> =
            unsafe { std::sync::Arc::<[AtomicU64]>::new_zeroed_slice(len / 8).assume_init() };
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

/// A writer's hold on a ring file: the header and a data area of
/// `data_size` bytes after it, sizes checked once when it is made, so the
/// record path reaches header words and record slots without a bounds
/// check per access.
pub struct WriterArea {
    mem: RingMem,
    data_size: usize,
}

impl WriterArea {
    /// Takes `mem` as a ring of [`HEADER_SIZE`] header bytes and
    /// `data_size` data bytes. Panics if `mem` is read-only or shorter.
    pub fn new(mem: RingMem, data_size: usize) -> WriterArea {
        assert!(
            mem.writable && mem.len >= HEADER_SIZE && mem.len - HEADER_SIZE >= data_size,
            "ring memory of {} bytes cannot hold a {data_size}-byte data area",
            mem.len
        );
        WriterArea { mem, data_size }
    }

    /// The whole ring memory.
    pub fn mem(&self) -> &RingMem {
        &self.mem
    }

    /// The header word at byte `OFF` (checked at compile time).
    #[inline(always)]
    pub fn header<const OFF: usize>(&self) -> &AtomicU64 {
        const { assert!(OFF.is_multiple_of(8) && OFF + 8 <= HEADER_SIZE) };
        // SAFETY: OFF + 8 <= HEADER_SIZE <= len (checked in `new`), 8-byte
        // aligned; shared words are only accessed atomically.
        unsafe { &*(self.mem.base.as_ptr().add(OFF) as *const AtomicU64) }
    }

    /// The word at byte `idx` of the data area (a padding record's commit
    /// word: padding may be shorter than a slot). Panics unless aligned
    /// and inside the area.
    #[inline(always)]
    pub fn slot_word(&self, idx: usize) -> &AtomicU64 {
        assert!(idx.is_multiple_of(8) && idx <= self.data_size && self.data_size - idx >= 8);
        // SAFETY: HEADER_SIZE + idx + 8 <= HEADER_SIZE + data_size <= mem.len; aligned.
        unsafe { &*(self.mem.base.as_ptr().add(HEADER_SIZE + idx) as *const AtomicU64) }
    }

    /// The record slot of `len` bytes at byte `idx` (rounded down to a
    /// multiple of 8; writers only ever pass aligned ones) of the data
    /// area. Panics unless it is inside the area and at least
    /// [`Slot::MIN_LEN`] long.
    #[inline(always)]
    pub fn slot(&self, idx: u32, len: u32) -> Slot<'_> {
        let (idx, len) = (idx as usize & !7, len as usize);
        // No overflow: both are below 2^32.
        assert!(len >= Slot::MIN_LEN && idx + len <= self.data_size);
        Slot {
            // SAFETY: HEADER_SIZE + idx + len <= HEADER_SIZE + data_size <= mem.len.
            ptr: unsafe { self.mem.base.as_ptr().add(HEADER_SIZE + idx) },
            len,
            _mem: std::marker::PhantomData,
        }
    }
}

/// A bounds-checked, 8-byte aligned region of a ring reserved by a writer.
pub struct Slot<'a> {
    ptr: *mut u8,
    len: usize,
    _mem: std::marker::PhantomData<&'a ()>,
}

impl Slot<'_> {
    /// Every slot has at least this many bytes (a record's fixed part).
    pub const MIN_LEN: usize = 56;

    /// The aligned word at byte `OFF` of the slot (checked at compile time).
    #[inline(always)]
    pub fn word<const OFF: usize>(&self) -> &AtomicU64 {
        const { assert!(OFF.is_multiple_of(8) && OFF + 8 <= Slot::MIN_LEN) };
        // SAFETY: OFF + 8 <= MIN_LEN <= len, aligned; shared words are atomics.
        unsafe { &*(self.ptr.add(OFF) as *const AtomicU64) }
    }

    /// Copies `parts` back to back starting at byte `at`. One bounds check
    /// for all; short strings (the common case) are copied inline, not via
    /// a memcpy call.
    #[inline(always)]
    pub fn put_all<const N: usize>(&self, at: usize, parts: [&[u8]; N]) {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        assert!(at <= self.len && total <= self.len - at);
        let mut off = at;
        for src in parts {
            // SAFETY: off + src.len() <= at + total <= len (checked above).
            unsafe { copy_short(self.ptr.add(off), src) };
            off += src.len();
        }
    }
}

/// Copies `src` to `d` with overlapping head/tail moves for short lengths.
///
/// # Safety
/// `d` must be valid for `src.len()` bytes of writes and not overlap `src`.
#[inline(always)]
unsafe fn copy_short(d: *mut u8, src: &[u8]) {
    let n = src.len();
    let s = src.as_ptr();
    // SAFETY: every access below stays within [0, n) of both buffers
    // (the caller guarantees `d`; `src` is a slice of length n).
    unsafe {
        if n >= 8 {
            if n > 16 {
                std::ptr::copy_nonoverlapping(s, d, n);
            } else {
                d.cast::<u64>()
                    .write_unaligned(s.cast::<u64>().read_unaligned());
                d.add(n - 8)
                    .cast::<u64>()
                    .write_unaligned(s.add(n - 8).cast::<u64>().read_unaligned());
            }
        } else if n >= 4 {
            d.cast::<u32>()
                .write_unaligned(s.cast::<u32>().read_unaligned());
            d.add(n - 4)
                .cast::<u32>()
                .write_unaligned(s.add(n - 4).cast::<u32>().read_unaligned());
        } else if n >= 2 {
            d.cast::<u16>()
                .write_unaligned(s.cast::<u16>().read_unaligned());
            d.add(n - 2)
                .cast::<u16>()
                .write_unaligned(s.add(n - 2).cast::<u16>().read_unaligned());
        } else if n == 1 {
            *d = *s;
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
    #[cfg_attr(miri, ignore)] // see scripts/test.sh: Miri runs the ring protocol tests
    fn slot_put_copies_every_length_exactly() {
        let a = WriterArea::new(RingMem::heap(HEADER_SIZE + 256), 256);
        for n in 0..40usize {
            let src: Vec<u8> = (1..=n as u8).collect();
            for w in 0..8 {
                a.mem()
                    .word(HEADER_SIZE + w * 8)
                    .store(0, Ordering::Relaxed);
            }
            let slot = a.slot(0, 64);
            slot.put_all(3, [&src[..]]);
            let mut words = [0u64; 8];
            a.mem().read_words(HEADER_SIZE, &mut words);
            let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
            assert_eq!(&bytes[3..3 + n], &src[..]);
            assert!(
                bytes[..3].iter().chain(&bytes[3 + n..]).all(|b| *b == 0),
                "n={n}"
            );
        }
    }

    #[test]
    #[should_panic]
    fn slot_out_of_bounds_panics() {
        WriterArea::new(RingMem::heap(HEADER_SIZE + 128), 128).slot(32, 100);
    }

    #[test]
    #[should_panic]
    fn slot_put_past_its_end_panics() {
        let a = WriterArea::new(RingMem::heap(HEADER_SIZE + 128), 128);
        a.slot(0, 56).put_all(50, [&b"12345678"[..]]);
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

//! Length of a C string without a libc call.
//!
//! The record path measures up to five caller strings per annotation; calling
//! `strlen` for each costs a call, and the spills around it, every time. This
//! scans eight bytes at a time with aligned loads instead. An aligned 8-byte
//! load never crosses a page boundary, so every word it touches lies on a page
//! that holds at least one byte of the string and is therefore readable —
//! the same argument glibc's own `strlen` relies on. The loads are done in
//! inline assembly so the compiler never sees a read outside the string.

use std::ffi::c_char;

const LOW: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// Loads the aligned word at `addr`.
///
/// # Safety
/// `addr` is 8-aligned and the page containing it is readable.
#[inline(always)]
unsafe fn load_aligned(addr: usize) -> u64 {
    let v: u64;
    // SAFETY: per the contract, an aligned, readable word; the asm only
    // writes the output register.
    unsafe {
        core::arch::asm!("mov {v}, qword ptr [{a}]", a = in(reg) addr, v = out(reg) v,
            options(nostack, preserves_flags, readonly, pure))
    };
    v
}

/// Bit 7 of every byte of the result is set for a zero byte of `v` (the
/// lowest such byte is exact; higher ones may be false positives).
#[inline(always)]
fn zero_bytes(v: u64) -> u64 {
    v.wrapping_sub(LOW) & !v & HIGH
}

/// The length of the NUL-terminated string at `p`, or `None` if it is longer
/// than `limit` bytes (the scan stops soon after `limit`).
///
/// # Safety
/// `p` is non-NULL and points to a NUL-terminated string, or to at least
/// `limit + 1` readable bytes.
#[inline(always)]
pub unsafe fn strlen_bounded(p: *const c_char, limit: usize) -> Option<usize> {
    let start = p as usize;
    let mut word = start & !7;
    // Bytes before `p` in the first word must not count as NULs.
    let skip = (start - word) * 8;
    // SAFETY: the word holding p[0] is on p[0]'s page (contract).
    let mut v = unsafe { load_aligned(word) } | ((1u64 << skip) - 1);
    loop {
        let z = zero_bytes(v);
        if z != 0 {
            let len = word + (z.trailing_zeros() / 8) as usize - start;
            return (len <= limit).then_some(len);
        }
        word += 8;
        if word - start > limit {
            return None;
        }
        // SAFETY: no NUL so far, so the string (or the `limit + 1` readable
        // bytes) continues into this word, whose page is therefore readable.
        v = unsafe { load_aligned(word) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_strlen_at_every_alignment_and_length() {
        let mut buf = [b'x'; 200];
        for start in 0..16 {
            for len in 0..100 {
                buf.iter_mut().for_each(|b| *b = b'x');
                buf[start + len] = 0;
                let p = buf[start..].as_ptr() as *const c_char;
                // SAFETY: NUL-terminated inside buf.
                let got = unsafe { strlen_bounded(p, 255) };
                assert_eq!(got, Some(len), "start {start} len {len}");
                // SAFETY: as above.
                assert_eq!(
                    unsafe { strlen_bounded(p, len.saturating_sub(1)) },
                    if len == 0 { Some(0) } else { None }
                );
            }
        }
    }

    #[test]
    fn never_reads_past_the_page_holding_the_nul() {
        // Two pages, the second inaccessible: strings ending on the last
        // bytes of the first page must be measured without a fault.
        // SAFETY: plain anonymous mapping and mprotect of our own pages.
        unsafe {
            let page = libc::sysconf(libc::_SC_PAGESIZE) as usize;
            let m = libc::mmap(
                std::ptr::null_mut(),
                2 * page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            ) as *mut u8;
            assert_ne!(m as *mut libc::c_void, libc::MAP_FAILED);
            assert_eq!(
                libc::mprotect(m.add(page) as *mut libc::c_void, page, libc::PROT_NONE),
                0
            );
            for len in 0..40 {
                let end = m.add(page - 1);
                *end = 0;
                for i in 0..len {
                    *end.sub(len - i) = b'a';
                }
                let p = end.sub(len) as *const c_char;
                assert_eq!(strlen_bounded(p, 255), Some(len));
            }
            libc::munmap(m as *mut libc::c_void, 2 * page);
        }
    }
}

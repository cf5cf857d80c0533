//! The thread's restartable-sequences area (`struct rseq`, registered by
//! glibc 2.35 and later for every thread it creates), for two things on the
//! record path:
//!
//! * the CPU the thread runs on: the kernel keeps `cpu_id` current, so it is
//!   one load from thread-local memory;
//! * a per-CPU reservation without a locked instruction: [`Area::store_if`]
//!   replaces a ring's `head` word only if the thread is still on the ring's
//!   CPU and the word still holds what it read, and the kernel restarts the
//!   sequence (reports failure) if the thread was preempted, migrated or
//!   interrupted by a signal in between. Every writer of the ring must use
//!   it (a compare-and-swap from elsewhere would not be seen), which is why
//!   a process decides once, for all its rings (see `recorder`).
//!
//! Only x86_64 with glibc is supported; elsewhere [`init`] reports no area
//! and callers use `sched_getcpu` and compare-and-swap. The unsafe code of
//! this module is small: one load of the thread pointer and one assembly
//! sequence, each with its argument.

use std::sync::atomic::AtomicU64;

#[cfg(all(target_arch = "x86_64", target_env = "gnu", not(miri)))]
mod imp {
    use std::sync::atomic::{AtomicIsize, AtomicU32, AtomicU64, Ordering};

    /// glibc's `__rseq_offset`: from the thread pointer to the area; 0 until
    /// [`init`] found a registered area (0 is never a valid offset: the
    /// thread control block itself lives there).
    static OFFSET: AtomicIsize = AtomicIsize::new(0);

    /// Offset of `cpu_id` in `struct rseq` (after `cpu_id_start`).
    const CPU_ID: isize = 4;

    /// Looks up glibc's `__rseq_offset` and `__rseq_size` (glibc 2.35+; not
    /// linked directly, so older glibc still loads us); true when an area
    /// is registered.
    pub fn init() -> bool {
        // SAFETY: dlsym with RTLD_DEFAULT and NUL-terminated names; it only
        // looks symbols up.
        let (off, size) = unsafe {
            (
                libc::dlsym(libc::RTLD_DEFAULT, c"__rseq_offset".as_ptr()),
                libc::dlsym(libc::RTLD_DEFAULT, c"__rseq_size".as_ptr()),
            )
        };
        if off.is_null() || size.is_null() {
            return false;
        }
        // SAFETY: glibc defines these as `const ptrdiff_t` and `const
        // unsigned int`, set before any user code runs and never changed.
        let (off, size) = unsafe { (*(off as *const isize), *(size as *const u32)) };
        // glibc sets the size to 0 when it did not register an area; a
        // registered one is at least the original 32-byte-aligned, 20-byte
        // struct rseq.
        if size < 20 || off == 0 {
            return false;
        }
        OFFSET.store(off, Ordering::Relaxed);
        // SAFETY: the area of the calling thread, just found.
        unsafe { cpu_id(area()) }.is_some()
    }

    /// The calling thread's `struct rseq`, null before [`init`] succeeded.
    #[inline(always)]
    pub fn area() -> *mut u8 {
        let off = OFFSET.load(Ordering::Relaxed);
        if off == 0 {
            return std::ptr::null_mut();
        }
        let tp: usize;
        // SAFETY: on x86_64 glibc, %fs:0 holds the thread pointer (the
        // TCB's self pointer, what `__builtin_thread_pointer` reads); the
        // instruction only loads it into the named register.
        unsafe {
            core::arch::asm!("mov {}, fs:0", out(reg) tp,
                options(nostack, preserves_flags, readonly, pure))
        };
        (tp as isize).wrapping_add(off) as *mut u8
    }

    /// The `cpu_id` of the area `a`; `None` if the thread has none
    /// registered.
    ///
    /// # Safety
    /// `a` is the calling thread's area: non-null, from [`area`].
    #[inline(always)]
    pub unsafe fn cpu_id(a: *mut u8) -> Option<u32> {
        // SAFETY: glibc placed the thread's 32-byte-aligned struct rseq at
        // the thread pointer + `__rseq_offset` for every thread it created
        // (registered or not); the kernel writes `cpu_id` asynchronously,
        // hence the atomic load.
        let id = unsafe { &*(a.wrapping_offset(CPU_ID) as *const AtomicU32) }
            .load(Ordering::Relaxed) as i32;
        (id >= 0).then_some(id as u32)
    }

    /// See [`super::Area::store_if`].
    ///
    /// # Safety
    /// As for [`cpu_id`].
    #[inline(always)]
    pub unsafe fn store_if(a: *mut u8, cpu: u32, word: &AtomicU64, expect: u64, new: u64) -> bool {
        // SAFETY: `a` is this thread's registered struct rseq (the
        // caller's contract): `rseq_cs` at +8 is ours to set, `cpu_id` at
        // +4 the kernel's to update. The sequence follows the kernel's rseq
        // ABI: its descriptor (version 0, no flags, start 24, length up to
        // and excluding 25 so the final store is the commit, abort 26
        // outside the range and preceded by glibc's signature, 0x53053053
        // for x86, behind the `ud1` opcode bytes that make it one
        // instruction for disassemblers) lives in a data section for the
        // life of the library (the C library is linked `-z nodelete`, and
        // the Rust library is never unloaded), which matters because
        // `rseq_cs` is left pointing at it, as librseq does: the kernel
        // clears it at the next preemption outside the range. `rseq_cs` is
        // set *before* the start label, so an interruption once it is set
        // finds the IP in range and resumes at 26. The range only compares
        // and stores `word`, valid for the call. Labels avoid 0 and 1
        // (Intel syntax reads `1b` as binary).
        unsafe {
            core::arch::asm!(
                ".pushsection __rseq_cs, \"aw\"",
                ".balign 32",
                "23:",
                ".long 0, 0",
                ".quad 24f, 25f - 24f, 26f",
                ".popsection",
                "lea {tmp}, [rip + 23b]",
                "mov qword ptr [{area} + 8], {tmp}",
                "24:",
                "cmp dword ptr [{area} + 4], {cpu:e}",
                "jne {fail}",
                "cmp qword ptr [{word}], {expect}",
                "jne {fail}",
                "mov qword ptr [{word}], {new}",
                "25:",
                ".pushsection __rseq_failure, \"ax\"",
                ".byte 0x0f, 0xb9, 0x3d",
                ".long 0x53053053",
                "26:",
                "jmp {fail}",
                ".popsection",
                area = in(reg) a,
                cpu = in(reg) cpu,
                word = in(reg) word.as_ptr(),
                expect = in(reg) expect,
                new = in(reg) new,
                tmp = out(reg) _,
                fail = label { return false; },
                options(nostack),
            )
        };
        true
    }
}

#[cfg(not(all(target_arch = "x86_64", target_env = "gnu", not(miri))))]
mod imp {
    use std::sync::atomic::AtomicU64;

    pub fn init() -> bool {
        false
    }

    #[inline(always)]
    pub fn area() -> *mut u8 {
        std::ptr::null_mut()
    }

    #[inline(always)]
    pub unsafe fn cpu_id(_a: *mut u8) -> Option<u32> {
        None
    }

    #[inline(always)]
    pub unsafe fn store_if(
        _a: *mut u8,
        _cpu: u32,
        _w: &AtomicU64,
        _expect: u64,
        _new: u64,
    ) -> bool {
        false
    }
}

/// Finds the thread's area (once per process; later calls are cheap); true
/// when glibc registered one and the kernel keeps its `cpu_id`.
pub fn init() -> bool {
    imp::init()
}

/// The calling thread's CPU from its area; `None` before [`init`] succeeded
/// or when this thread has no registered area.
#[inline(always)]
pub fn cpu_id() -> Option<u32> {
    Area::current()?.cpu_id()
}

/// The calling thread's rseq area. Not `Send`: it is only ever used by the
/// thread that looked it up.
#[derive(Debug, Clone, Copy)]
pub struct Area(*mut u8);

impl Area {
    /// This thread's area; `None` before [`init`] succeeded.
    #[inline(always)]
    pub fn current() -> Option<Area> {
        let a = imp::area();
        (!a.is_null()).then_some(Area(a))
    }

    /// The CPU the thread runs on; `None` when the thread has no
    /// registered area.
    #[inline(always)]
    pub fn cpu_id(self) -> Option<u32> {
        // SAFETY: an `Area` holds the non-null area of the thread that
        // looked it up, and cannot leave that thread (not `Send`).
        unsafe { imp::cpu_id(self.0) }
    }

    /// Stores `new` into `word` if the thread runs on `cpu` and `word`
    /// holds `expect`, as one restartable sequence: no other thread on
    /// `cpu` (nor a signal handler of this one) can run between the check
    /// and the store. False when the thread is on another CPU, has no
    /// registered area, `word` held something else, or the sequence was
    /// interrupted: re-read and retry.
    ///
    /// Atomic only against writers that all use this for `word` on `cpu` —
    /// a thread on another CPU must never store to `word`.
    #[inline(always)]
    pub fn store_if(self, cpu: u32, word: &AtomicU64, expect: u64, new: u64) -> bool {
        // SAFETY: as in `cpu_id`.
        unsafe { imp::store_if(self.0, cpu, word, expect, new) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    fn pin_to(cpu: usize) -> bool {
        // SAFETY: a zeroed cpu_set_t is an empty set; the calls only read it.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) == 0
        }
    }

    static WORD: AtomicU64 = AtomicU64::new(0);
    static HANDLED: AtomicU64 = AtomicU64::new(0);

    /// One increment of WORD, retried until it lands.
    fn increment() {
        loop {
            let area = Area::current().expect("registered area");
            let cpu = area.cpu_id().expect("registered area");
            let cur = WORD.load(Ordering::Relaxed);
            if area.store_if(cpu, &WORD, cur, cur + 1) {
                return;
            }
        }
    }

    extern "C" fn on_signal(_: libc::c_int) {
        increment();
        HANDLED.fetch_add(1, Ordering::Relaxed);
    }

    /// Threads on one CPU increment one word with `store_if` only, while
    /// another thread interrupts them with signals whose handler increments
    /// it too: the kernel preempts and interrupts them between reading and
    /// storing countless times, and not one increment is lost (without the
    /// restart, thousands are).
    #[test]
    #[cfg_attr(miri, ignore)]
    fn increments_from_threads_and_signal_handlers_on_a_cpu_are_never_lost() {
        if !init() {
            eprintln!("no rseq area here (not x86_64 glibc >= 2.35): nothing to test");
            return;
        }
        const THREADS: u64 = 3;
        const EACH: u64 = 3_000_000;
        // SAFETY: installs a handler that only touches atomics and the
        // thread's rseq area (async-signal-safe); SIGUSR2 is used by no
        // other test of this crate.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            sa.sa_flags = libc::SA_RESTART;
            assert_eq!(libc::sigaction(libc::SIGUSR2, &sa, std::ptr::null_mut()), 0);
        }
        use std::os::unix::thread::JoinHandleExt;
        static FINISHED: AtomicU64 = AtomicU64::new(0);
        let workers: Vec<_> = (0..THREADS)
            .map(|_| {
                std::thread::spawn(|| {
                    assert!(pin_to(0), "cannot pin to CPU 0");
                    for _ in 0..EACH {
                        increment();
                    }
                    FINISHED.fetch_add(1, Ordering::Relaxed);
                })
            })
            .collect();
        let targets: Vec<libc::pthread_t> = workers.iter().map(|h| h.as_pthread_t()).collect();
        std::thread::spawn(move || {
            let mut n = 0usize;
            while FINISHED.load(Ordering::Relaxed) < THREADS {
                // SAFETY: the targets are joined only after this thread.
                unsafe { libc::pthread_kill(targets[n % targets.len()], libc::SIGUSR2) };
                n += 1;
            }
        })
        .join()
        .unwrap();
        for h in workers {
            h.join().unwrap();
        }
        let handled = HANDLED.load(Ordering::Relaxed);
        assert!(handled > 0, "no signal was handled");
        assert_eq!(WORD.load(Ordering::Relaxed), THREADS * EACH + handled);
        eprintln!("{handled} increments from signal handlers");
    }

    /// A thread asking for another CPU than its own is refused, and the
    /// word keeps its value.
    #[test]
    #[cfg_attr(miri, ignore)]
    fn a_store_for_another_cpu_is_refused() {
        if !init() {
            return;
        }
        std::thread::spawn(|| {
            assert!(pin_to(0));
            let w = AtomicU64::new(7);
            let area = Area::current().unwrap();
            assert_eq!(area.cpu_id(), Some(0));
            assert!(!area.store_if(1, &w, 7, 8));
            assert!(!area.store_if(0, &w, 6, 8), "expected value differs");
            assert_eq!(w.load(Ordering::Relaxed), 7);
            assert!(area.store_if(0, &w, 7, 8));
            assert_eq!(w.load(Ordering::Relaxed), 8);
        })
        .join()
        .unwrap();
    }
}

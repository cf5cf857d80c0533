//! Timestamps and CPU numbers for the record path.
//!
//! With an invariant TSC that the kernel itself trusts (clocksource `tsc`),
//! `rdtsc` gives the timestamp. The CPU comes from the thread's rseq area
//! when glibc registered one (glibc 2.35 and later do, for every thread):
//! the kernel keeps its `cpu_id` current, so reading it is one load from
//! thread-local memory, cheaper than `rdpid`. Otherwise
//! `rdpid` gives the CPU (it reads `IA32_TSC_AUX`, which Linux sets to the
//! CPU number) — half the cost of `rdtscp`, which waits for earlier
//! instructions to retire — and without it `sched_getcpu`. Otherwise the
//! record path falls back to `clock_gettime(CLOCK_REALTIME)` (vDSO) and
//! `sched_getcpu`. Raw TSC values are converted to Unix time by readers using
//! the calibration stored in each ring header.

use crate::ring::header::Calibration;

/// Where timestamps and CPU numbers come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockSource {
    /// `rdtsc` for ticks, the thread's rseq `cpu_id` for the CPU.
    TscRseq,
    /// `rdtsc` for ticks, `rdpid` (`IA32_TSC_AUX`) for the CPU.
    TscRdpid,
    /// `rdtsc` for ticks, `sched_getcpu` for the CPU.
    TscGetcpu,
    /// `CLOCK_REALTIME` nanoseconds, `sched_getcpu` for the CPU.
    Realtime,
}

impl ClockSource {
    /// True when raw timestamps are TSC ticks that need calibration.
    pub fn is_tsc(self) -> bool {
        !matches!(self, ClockSource::Realtime)
    }
}

/// The user's preference (env `BLKIN_CLOCK`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClockPref {
    /// TSC when trustworthy, else realtime.
    #[default]
    Auto,
    /// TSC if the CPU has one at all.
    Tsc,
    /// Always `CLOCK_REALTIME`.
    Realtime,
}

/// Current `CLOCK_REALTIME` in nanoseconds since the Unix epoch.
#[inline]
pub fn realtime_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// The CPU the calling thread runs on (0 if unknown).
#[inline]
pub fn getcpu() -> u32 {
    // SAFETY: sched_getcpu has no preconditions.
    let c = unsafe { libc::sched_getcpu() };
    if c < 0 {
        0
    } else {
        c as u32
    }
}

/// Reads (timestamp, cpu).
#[inline(always)]
pub fn now_and_cpu(src: ClockSource) -> (u64, u32) {
    (now_raw(src), cpu(src))
}

/// Reads only the CPU number.
#[inline(always)]
pub fn cpu(src: ClockSource) -> u32 {
    match src {
        ClockSource::TscRseq => match crate::rseq::cpu_id() {
            Some(c) => c,
            None => getcpu(),
        },
        #[cfg(target_arch = "x86_64")]
        ClockSource::TscRdpid => {
            let aux: u64;
            // SAFETY: only selected after `detect` confirmed RDPID support;
            // the instruction only writes the named register.
            unsafe {
                core::arch::asm!("rdpid {}", out(reg) aux, options(nomem, nostack, preserves_flags))
            };
            (aux & 0xfff) as u32
        }
        _ => getcpu(),
    }
}

/// Reads only the raw timestamp.
#[inline(always)]
pub fn now_raw(src: ClockSource) -> u64 {
    match src {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: RDTSC exists on every x86_64 CPU.
        ClockSource::TscRseq | ClockSource::TscRdpid | ClockSource::TscGetcpu => unsafe {
            core::arch::x86_64::_rdtsc()
        },
        _ => realtime_ns(),
    }
}

#[cfg(target_arch = "x86_64")]
fn cpu_features() -> (bool, bool) {
    use core::arch::x86_64::{__cpuid, __cpuid_count};
    let rdpid = __cpuid(0).eax >= 7 && __cpuid_count(7, 0).ecx & (1 << 22) != 0;
    let invariant =
        __cpuid(0x8000_0000).eax >= 0x8000_0007 && __cpuid(0x8000_0007).edx & (1 << 8) != 0;
    (rdpid, invariant)
}

#[cfg(not(target_arch = "x86_64"))]
fn cpu_features() -> (bool, bool) {
    (false, false)
}

fn kernel_trusts_tsc() -> bool {
    match std::fs::read_to_string(
        "/sys/devices/system/clocksource/clocksource0/current_clocksource",
    ) {
        Ok(s) => s.trim() == "tsc",
        Err(_) => true, // no sysfs: rely on the CPUID invariant-TSC bit
    }
}

/// Checks that `rdpid`'s value really is the CPU number here.
#[cfg(target_arch = "x86_64")]
fn rdpid_gives_cpu() -> bool {
    let mut agree = 0;
    for _ in 0..16 {
        let (_, aux) = now_and_cpu(ClockSource::TscRdpid);
        if aux == getcpu() {
            agree += 1;
        }
    }
    agree >= 12
}

#[cfg(not(target_arch = "x86_64"))]
fn rdpid_gives_cpu() -> bool {
    false
}

/// Whether glibc registered an rseq area whose `cpu_id` agrees with
/// `sched_getcpu` (finding the area first, see [`crate::rseq::init`]).
fn rseq_gives_cpu() -> bool {
    crate::rseq::init()
        && (0..16)
            .filter(|_| crate::rseq::cpu_id() == Some(getcpu()))
            .count()
            >= 12
}

/// Picks the clock for this process.
pub fn detect(pref: ClockPref) -> ClockSource {
    let (rdpid, invariant) = cpu_features();
    let tsc_ok = cfg!(target_arch = "x86_64")
        && match pref {
            ClockPref::Realtime => false,
            ClockPref::Tsc => true,
            ClockPref::Auto => invariant && kernel_trusts_tsc(),
        };
    if !tsc_ok {
        ClockSource::Realtime
    } else if rseq_gives_cpu() {
        ClockSource::TscRseq
    } else if rdpid && rdpid_gives_cpu() {
        ClockSource::TscRdpid
    } else {
        ClockSource::TscGetcpu
    }
}

/// One (raw, Unix ns) pair, taken as tightly as the machine allows.
pub fn reference_point(src: ClockSource) -> (u64, u64) {
    if !src.is_tsc() {
        let t = realtime_ns();
        return (t, t);
    }
    let mut best = (u64::MAX, 0, 0);
    for _ in 0..5 {
        let a = now_raw(src);
        let ns = realtime_ns();
        let b = now_raw(src);
        let width = b.wrapping_sub(a);
        if width < best.0 {
            best = (width, a + width / 2, ns);
        }
    }
    (best.1, best.2)
}

/// Initial calibration: two reference points about a millisecond apart
/// (the only wait in the library, paid once per process on its first record).
/// Writers refresh the second point 1, 2, 4 … ms later, then once a second
/// (`recorder::refresh_interval`).
pub fn initial_calibration(src: ClockSource) -> Calibration {
    if !src.is_tsc() {
        return Calibration::IDENTITY;
    }
    let (raw0, ns0) = reference_point(src);
    let start = std::time::Instant::now();
    while start.elapsed() < std::time::Duration::from_millis(1) {
        std::hint::spin_loop();
    }
    let (raw1, ns1) = reference_point(src);
    Calibration {
        raw0,
        ns0,
        raw1,
        ns1,
    }
}

/// Raw clock ticks in one second according to `c` (at least 1).
pub fn ticks_per_second(c: &Calibration) -> u64 {
    let draw = c.raw1.saturating_sub(c.raw0) as u128;
    let dns = c.ns1.saturating_sub(c.ns0).max(1) as u128;
    ((draw * 1_000_000_000 / dns) as u64).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calibration_tracks_realtime() {
        let src = detect(ClockPref::Auto);
        let c = initial_calibration(src);
        let (raw, ns) = reference_point(src);
        let conv = c.to_unix_ns(raw).unwrap();
        // Within 1 ms of the system clock right after calibrating.
        assert!(conv.abs_diff(ns) < 1_000_000, "{conv} vs {ns} ({src:?})");
    }

    #[test]
    fn cpu_is_plausible() {
        let src = detect(ClockPref::Auto);
        let (_, cpu) = now_and_cpu(src);
        let n = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1) as u32;
        assert!(cpu < n.max(64));
    }

    /// Every way of reading the CPU this machine offers agrees with
    /// `sched_getcpu` (mostly: the thread may migrate in between), in a
    /// new thread too.
    #[test]
    #[cfg_attr(miri, ignore)]
    fn every_available_cpu_source_agrees_with_sched_getcpu() {
        let mut sources = vec![ClockSource::TscGetcpu];
        if rseq_gives_cpu() {
            sources.push(ClockSource::TscRseq);
        }
        if cpu_features().0 && rdpid_gives_cpu() {
            sources.push(ClockSource::TscRdpid);
        }
        eprintln!("CPU sources here: {sources:?}");
        for src in sources {
            let check = move || {
                let agree = (0..100).filter(|_| cpu(src) == getcpu()).count();
                assert!(agree >= 90, "{src:?}: {agree} of 100");
            };
            check();
            std::thread::spawn(check).join().unwrap();
        }
    }
}

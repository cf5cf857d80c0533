//! The process's rings and the record path.
//!
//! On the first record (or an explicit [`init`]), the process creates one ring
//! per configured CPU in the ring directory, calibrates its clock and
//! registers a fork handler. After that, recording is: read the CPU from the
//! thread's rseq area (`crate::rseq`) and the clock (`rdtsc`), pick that
//! CPU's ring, reserve (a store that the kernel aborts if the thread is
//! preempted or migrated: no atomic read-modify-write), copy, commit. A
//! thread without an rseq area, or a process configured without per-CPU
//! rings, reserves with a compare-and-swap instead. No locks, no
//! allocation, no system call. If the rings cannot be created (full /dev/shm,
//! bad permissions), records are dropped and counted, and one warning goes to
//! stderr.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicU8, Ordering};
use std::sync::OnceLock;

use crate::clock::{self, ClockSource};
use crate::config::Config;
use crate::ring::header::{store_calibration, Calibration, HeaderInit, RingInfo};
use crate::ring::writer::{span_record, RecordIn, Reserve, RingGeometry, RingWriter, WriteError};
use crate::ring::{file, layout};
use crate::sampling::Sampler;

/// Why a record was not written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The ring refused it (full or too big); counted in the ring header.
    #[error(transparent)]
    Ring(#[from] WriteError),
    /// The process has no rings (creation failed or is in progress), or the
    /// recording thread cannot reserve in them (per-CPU reservation, and the
    /// thread has no rseq area); counted in [`ProcessStats::lost_no_ring`].
    #[error("no trace ring available (see the blkin warning on stderr), record dropped")]
    NoRing,
}

/// Errors setting up the process's rings.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// The ring directory or a ring file could not be created.
    #[error("cannot create trace rings in {dir}: {source}")]
    Io {
        /// The ring directory.
        dir: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Another thread is creating the rings right now.
    #[error("trace rings are being created by another thread")]
    InProgress,
    /// An earlier attempt failed; this process records nothing.
    #[error("trace ring creation failed earlier in this process")]
    Failed,
}

/// Process-wide counters that no ring header can hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcessStats {
    /// Records dropped because the process had no rings (or the thread
    /// could not use them, see [`RecordError::NoRing`]).
    pub lost_no_ring: u64,
}

/// The rings of this process.
pub struct ProcessRings {
    clock: ClockSource,
    /// Space is reserved with [`Reserve::OnCpu`] (restartable sequences)
    /// by every writer of these rings, else with [`Reserve::Shared`].
    per_cpu: bool,
    rings: Box<[RingWriter]>,
    paths: Box<[PathBuf]>,
    first_point: (u64, u64),
    ticks_per_second: u64,
    next_refresh: AtomicU64,
    refreshing: AtomicBool,
}

const UNINIT: u8 = 0;
const INITING: u8 = 1;
const READY: u8 = 2;
const FAILED: u8 = 3;

static RINGS: AtomicPtr<ProcessRings> = AtomicPtr::new(std::ptr::null_mut());
static STATE: AtomicU8 = AtomicU8::new(UNINIT);
/// Drops because the process had no rings (cumulative, for `stats()`).
static LOST_NO_RING: AtomicU64 = AtomicU64::new(0);
/// The part of LOST_NO_RING not yet added to a ring header.
static PENDING_NO_RING: AtomicU64 = AtomicU64::new(0);
static CONFIG: OnceLock<Config> = OnceLock::new();
static ATFORK: std::sync::Once = std::sync::Once::new();

/// The process's sampler (configured from the environment on first use).
pub(crate) static SAMPLER: Sampler = Sampler::new_default();

/// The configuration read from the environment (once per process).
pub fn config() -> &'static Config {
    CONFIG.get_or_init(|| {
        let (cfg, warnings) = Config::from_env();
        for w in warnings {
            eprintln!("{w}");
        }
        SAMPLER.configure(&cfg.sampling);
        cfg
    })
}

/// The sampler, configured.
pub(crate) fn sampler() -> &'static Sampler {
    config();
    &SAMPLER
}

extern "C" fn child_after_fork() {
    // The child must not write into its parent's rings: forget them (the
    // mappings stay until exec/exit) and start over on the next record.
    RINGS.store(std::ptr::null_mut(), Ordering::Relaxed);
    STATE.store(UNINIT, Ordering::Relaxed);
    crate::id::after_fork();
}

/// Creates the process's rings now (otherwise the first record does).
pub fn init() -> Result<&'static ProcessRings, InitError> {
    match STATE.compare_exchange(UNINIT, INITING, Ordering::Acquire, Ordering::Acquire) {
        Ok(_) => {}
        Err(READY) => {
            // SAFETY: READY is stored only after RINGS holds a leaked Box.
            return Ok(unsafe { &*RINGS.load(Ordering::Acquire) });
        }
        Err(INITING) => return Err(InitError::InProgress),
        Err(_) => return Err(InitError::Failed),
    }
    ATFORK.call_once(|| {
        // SAFETY: registering a plain extern "C" fn with no captured state.
        unsafe { libc::pthread_atfork(None, None, Some(child_after_fork)) };
    });
    let cfg = config();
    match create_rings(cfg) {
        Ok(rings) => {
            let leaked: &'static ProcessRings = Box::leak(Box::new(rings));
            RINGS.store(
                leaked as *const ProcessRings as *mut ProcessRings,
                Ordering::Release,
            );
            STATE.store(READY, Ordering::SeqCst);
            // Drops while the rings did not exist yet become visible to readers.
            leaked.rings[0].add_lost_no_ring(PENDING_NO_RING.swap(0, Ordering::SeqCst));
            Ok(leaked)
        }
        Err(source) => {
            STATE.store(FAILED, Ordering::Release);
            let e = InitError::Io {
                dir: cfg.shm_dir.clone(),
                source,
            };
            eprintln!("blkin: tracing disabled in pid {}: {e}", std::process::id());
            Err(e)
        }
    }
}

fn create_rings(cfg: &Config) -> std::io::Result<ProcessRings> {
    file::ensure_dir(&cfg.shm_dir)?;
    let clock = clock::detect(cfg.clock);
    let calibration = clock::initial_calibration(clock);
    let pid = std::process::id();
    let start_time = crate::process::start_time(pid).unwrap_or(0);
    // SAFETY: sysconf and geteuid have no preconditions.
    let ncpu = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) }.clamp(1, 4096) as u32;
    // SAFETY: as above.
    let uid = unsafe { libc::geteuid() };
    let boot_id = crate::process::boot_id();
    let geo = RingGeometry {
        data_size: cfg.ring_size as u32,
        max_record: cfg.max_record.min(cfg.ring_size as u32 / 4),
        overwrite: cfg.overwrite,
    };
    let mut flags = 0;
    if cfg.overwrite {
        flags |= layout::FLAG_OVERWRITE;
    }
    if clock.is_tsc() {
        flags |= layout::FLAG_TSC;
    }
    // Per-CPU reservation needs a ring for every CPU number the kernel can
    // hand out: a thread on a CPU without one could not record at all.
    let per_cpu = cfg.rseq
        && crate::rseq::init()
        && crate::process::possible_cpus().is_some_and(|n| n <= ncpu);
    if per_cpu {
        flags |= layout::FLAG_PER_CPU;
    }
    let mut rings = Vec::with_capacity(ncpu as usize);
    let mut paths = Vec::with_capacity(ncpu as usize);
    for cpu in 0..ncpu {
        let path = cfg.shm_dir.join(file::ring_file_name(pid, start_time, cpu));
        let init = HeaderInit {
            info: RingInfo {
                pid,
                uid,
                start_time,
                cpu,
                flags,
                data_size: geo.data_size,
                max_record: geo.max_record,
                created_ns: clock::realtime_ns(),
                boot_id,
            },
            calibration,
        };
        match file::create_ring(&path, &init, geo) {
            Ok(w) => {
                rings.push(w);
                paths.push(path);
            }
            Err(e) => {
                for p in &paths {
                    let _ = std::fs::remove_file(p);
                }
                return Err(std::io::Error::new(
                    e.kind(),
                    format!("{}: {e}", path.display()),
                ));
            }
        }
    }
    let ticks_per_second = clock::ticks_per_second(&calibration);
    let next_refresh = if clock.is_tsc() {
        calibration.raw1.saturating_add(refresh_interval(
            calibration.raw1,
            calibration.raw0,
            ticks_per_second,
        ))
    } else {
        u64::MAX
    };
    Ok(ProcessRings {
        clock,
        per_cpu,
        rings: rings.into_boxed_slice(),
        paths: paths.into_boxed_slice(),
        first_point: (calibration.raw0, calibration.ns0),
        ticks_per_second,
        next_refresh: AtomicU64::new(next_refresh),
        refreshing: AtomicBool::new(false),
    })
}

impl ProcessRings {
    /// The clock this process records with.
    pub fn clock(&self) -> ClockSource {
        self.clock
    }

    /// The ring files of this process, one per CPU.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// Writes one record (timestamp and CPU filled in here).
    #[inline(always)]
    pub fn write(&self, r: &RecordIn<'_>) -> Result<(), RecordError> {
        self.put(r, None)
    }

    /// Writes a whole span as one record (see [`RingWriter::write_span`]);
    /// `start` is a reading of [`ProcessRings::clock`].
    #[inline(always)]
    pub fn write_span(&self, r: &RecordIn<'_>, start: u64) -> Result<(), RecordError> {
        self.put(&span_record(r), Some(start))
    }

    /// Writes into the ring of the CPU the caller runs on; see
    /// [`RingWriter::put`] for `start`.
    #[inline(always)]
    fn put(&self, r: &RecordIn<'_>, start: Option<u64>) -> Result<(), RecordError> {
        let ts = if self.per_cpu {
            let Some(area) = crate::rseq::Area::current() else {
                return Err(lost_no_ring());
            };
            loop {
                // A thread that moves to another CPU between reading its
                // CPU and reserving is refused the reservation: look again.
                let Some(cpu) = area.cpu_id() else {
                    return Err(lost_no_ring());
                };
                let Some(ring) = self.rings.get(cpu as usize) else {
                    return Err(lost_no_ring());
                };
                let now = clock::now_raw(self.clock);
                if let Some(ts) = ring.put(Reserve::OnCpu(cpu, area), now, r, start)? {
                    break ts;
                }
            }
        } else {
            let cpu = clock::cpu(self.clock) as usize;
            let ring = match self.rings.get(cpu) {
                Some(r) => r,
                None => &self.rings[cpu % self.rings.len()],
            };
            ring.put_shared(clock::now_raw(self.clock), r, start)?
        };
        self.wrote_at(ts);
        Ok(())
    }

    /// After a record written at clock reading `ts`: refreshes the
    /// calibration when due.
    #[inline(always)]
    fn wrote_at(&self, ts: u64) {
        if ts >= self.next_refresh.load(Ordering::Relaxed) {
            self.refresh_calibration(ts);
        }
    }

    /// Publishes a fresh calibration point (one thread at a time; see
    /// [`refresh_interval`] for when).
    #[cold]
    fn refresh_calibration(&self, now: u64) {
        if self.refreshing.swap(true, Ordering::Acquire) {
            return;
        }
        let interval = refresh_interval(now, self.first_point.0, self.ticks_per_second);
        self.next_refresh
            .store(now.saturating_add(interval), Ordering::Relaxed);
        let (raw1, ns1) = clock::reference_point(self.clock);
        let c = Calibration {
            raw0: self.first_point.0,
            ns0: self.first_point.1,
            raw1,
            ns1,
        };
        for r in self.rings.iter() {
            store_calibration(r.mem(), &c);
        }
        self.refreshing.store(false, Ordering::Release);
    }
}

/// Ticks from a calibration point at `now` to the next one: as long as the
/// calibration's baseline (`now` − the first point `raw0`), between a
/// millisecond and a second. The slope's error is the reference points'
/// reading error over the baseline, so doubling the baseline early (1, 2,
/// 4 … ms) makes it small within milliseconds — the first points are only
/// a millisecond apart — and readers that convert the same record with the
/// calibrations of different moments agree to well under a microsecond;
/// after a second, one point a second.
fn refresh_interval(now: u64, raw0: u64, ticks_per_second: u64) -> u64 {
    let min = (ticks_per_second / 1000).max(1);
    now.saturating_sub(raw0)
        .clamp(min, ticks_per_second.max(min))
}

/// The process's rings, created on the first call; `None` (the record is
/// then dropped and counted) when they cannot be.
#[inline(always)]
fn rings_for_record() -> Option<&'static ProcessRings> {
    let p = RINGS.load(Ordering::Acquire);
    if p.is_null() {
        // Out of line, and without the record: the hot path then never
        // has to build the record in memory to pass it on.
        return first_rings();
    }
    // SAFETY: non-null RINGS always points to a leaked, never-freed ProcessRings.
    Some(unsafe { &*p })
}

/// The rings for the first record of a process (or for one while they are
/// unavailable).
#[cold]
#[inline(never)]
fn first_rings() -> Option<&'static ProcessRings> {
    init().ok()
}

/// Records one annotation. The hot path: lock-free, allocation-free.
#[inline(always)]
pub fn record(r: &RecordIn<'_>) -> Result<(), RecordError> {
    match rings_for_record() {
        Some(rings) => rings.write(r),
        None => Err(lost_no_ring()),
    }
}

/// A reading of the process's record clock, for the start of a span that
/// [`record_span`] records at its end. Creates the rings if they do not
/// exist yet (the clock is chosen with them); 0 if they cannot be.
#[inline(always)]
pub fn start_tick() -> u64 {
    rings_for_record().map_or(0, |rings| clock::now_raw(rings.clock))
}

/// Records a whole span, started at `start` (from [`start_tick`]) and
/// ending now, as one record. Lock-free, allocation-free.
#[inline(always)]
pub fn record_span(r: &RecordIn<'_>, start: u64) -> Result<(), RecordError> {
    match rings_for_record() {
        // A start of 0: there were no rings when the span started.
        Some(rings) if start != 0 => rings.write_span(r, start),
        _ => Err(lost_no_ring()),
    }
}

/// Counts one record dropped because the process had no rings.
#[cold]
fn lost_no_ring() -> RecordError {
    LOST_NO_RING.fetch_add(1, Ordering::Relaxed);
    PENDING_NO_RING.fetch_add(1, Ordering::SeqCst);
    // If the rings became ready meanwhile, the thread that made them
    // may have flushed the pending count before our increment:
    // flush it ourselves. Either way each drop reaches a header once.
    if STATE.load(Ordering::SeqCst) == READY {
        if let Some(rings) = rings() {
            rings.rings[0].add_lost_no_ring(PENDING_NO_RING.swap(0, Ordering::SeqCst));
        }
    }
    RecordError::NoRing
}

/// Process-wide counters.
pub fn stats() -> ProcessStats {
    ProcessStats {
        lost_no_ring: LOST_NO_RING.load(Ordering::Relaxed),
    }
}

/// The process's rings, if they exist.
pub fn rings() -> Option<&'static ProcessRings> {
    let p = RINGS.load(Ordering::Acquire);
    // SAFETY: see `record`.
    (!p.is_null()).then(|| unsafe { &*p })
}

#[cfg(test)]
mod tests {
    use super::refresh_interval;

    #[test]
    fn calibration_points_double_their_spacing_up_to_a_second() {
        let tps = 1_000_000_000; // a 1 GHz clock
        let raw0 = 5_000;
        // The initial points are a millisecond apart: the first refresh
        // comes a millisecond later, then 2, 4, 8 … ms, then every second.
        assert_eq!(refresh_interval(raw0 + 1_000_000, raw0, tps), 1_000_000);
        assert_eq!(refresh_interval(raw0 + 8_000_000, raw0, tps), 8_000_000);
        assert_eq!(refresh_interval(raw0 + 7 * tps, raw0, tps), tps);
        // Never under a millisecond, whatever the values.
        assert_eq!(refresh_interval(raw0 + 100, raw0, tps), 1_000_000);
        assert_eq!(refresh_interval(0, raw0, tps), 1_000_000);
        assert_eq!(refresh_interval(u64::MAX, 0, 0), 1);
    }
}

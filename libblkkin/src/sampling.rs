//! Root sampling: decided once when a trace starts, inherited by its spans.
//!
//! Three knobs combine: 1-in-N (`BLKIN_RATE`, or `RATE` as ceph/blkin read
//! it), a probability, and a cap on new traces per second. A trace passes when
//! it passes all that are set. Forced (debug) traces bypass them all.

use std::sync::atomic::{AtomicU64, Ordering};

/// Sampling settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingConfig {
    /// Sample one root in `rate`; 1 samples all, 0 samples none.
    pub rate: u64,
    /// Probability in [0, 1] that a root is sampled (1.0 = always).
    pub probability: f64,
    /// At most this many sampled roots per second per process (0 = no cap).
    pub max_per_second: u64,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        SamplingConfig {
            rate: 1,
            probability: 1.0,
            max_per_second: 0,
        }
    }
}

/// The process's sampler. All fields are atomics so it can be reconfigured
/// at run time without locks.
pub struct Sampler {
    rate: AtomicU64,
    threshold: AtomicU64, // probability scaled to u64::MAX
    cap: AtomicU64,
    window: AtomicU64, // current second (Unix)
    count: AtomicU64,  // sampled roots in that second
}

impl Sampler {
    /// A sampler with `cfg`.
    pub const fn new_default() -> Sampler {
        Sampler {
            rate: AtomicU64::new(1),
            threshold: AtomicU64::new(u64::MAX),
            cap: AtomicU64::new(0),
            window: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Applies new settings.
    pub fn configure(&self, cfg: &SamplingConfig) {
        let p = if cfg.probability.is_nan() {
            0.0
        } else {
            cfg.probability.clamp(0.0, 1.0)
        };
        let threshold = if p >= 1.0 {
            u64::MAX
        } else {
            (p * u64::MAX as f64) as u64
        };
        self.rate.store(cfg.rate, Ordering::Relaxed);
        self.threshold.store(threshold, Ordering::Relaxed);
        self.cap.store(cfg.max_per_second, Ordering::Relaxed);
    }

    /// Decides whether a new root trace is sampled.
    pub fn sample(&self) -> bool {
        let rate = self.rate.load(Ordering::Relaxed);
        if rate == 0 {
            return false;
        }
        if rate > 1 && !crate::id::random_u64().is_multiple_of(rate) {
            return false;
        }
        let threshold = self.threshold.load(Ordering::Relaxed);
        if threshold != u64::MAX && crate::id::random_u64() >= threshold {
            return false;
        }
        let cap = self.cap.load(Ordering::Relaxed);
        if cap == 0 {
            return true;
        }
        let now = crate::clock::realtime_ns() / 1_000_000_000;
        let window = self.window.load(Ordering::Relaxed);
        if window != now
            && self
                .window
                .compare_exchange(window, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.count.store(0, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed) < cap
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(cfg: SamplingConfig, n: usize) -> usize {
        let s = Sampler::new_default();
        s.configure(&cfg);
        (0..n).filter(|_| s.sample()).count()
    }

    #[test]
    fn rate_one_samples_all_and_zero_none() {
        assert_eq!(share(SamplingConfig::default(), 1000), 1000);
        assert_eq!(
            share(
                SamplingConfig {
                    rate: 0,
                    ..Default::default()
                },
                1000
            ),
            0
        );
    }

    #[test]
    fn one_in_n_is_close_to_expected() {
        let got = share(
            SamplingConfig {
                rate: 10,
                ..Default::default()
            },
            100_000,
        );
        assert!((9_000..11_000).contains(&got), "{got}");
    }

    #[test]
    fn probability_is_close_to_expected() {
        let got = share(
            SamplingConfig {
                probability: 0.25,
                ..Default::default()
            },
            100_000,
        );
        assert!((23_500..26_500).contains(&got), "{got}");
        assert_eq!(
            share(
                SamplingConfig {
                    probability: 0.0,
                    ..Default::default()
                },
                1000
            ),
            0
        );
    }

    #[test]
    fn per_second_cap_holds() {
        // 10k decisions take far less than a second; allow one window change.
        let got = share(
            SamplingConfig {
                max_per_second: 100,
                ..Default::default()
            },
            10_000,
        );
        assert!((100..=200).contains(&got), "{got}");
    }
}

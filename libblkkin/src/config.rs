//! Library settings, read once from the environment when tracing starts.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `BLKIN_SHM_DIR` | `/dev/shm/blkin-<uid>` | where ring files live |
//! | `BLKIN_RING_SIZE` | `2M` | data bytes per CPU ring (power of two, 64K..1G; K/M/G suffixes) |
//! | `BLKIN_MAX_RECORD` | `4096` | largest record accepted; larger ones are dropped and counted |
//! | `BLKIN_RING_MODE` | `discard` | `discard` (drop new, count) or `overwrite` (flight recorder) |
//! | `BLKIN_CLOCK` | `auto` | `auto`, `tsc` or `realtime` |
//! | `BLKIN_RESERVE` | `auto` | `auto` (per-CPU restartable sequences where glibc registered them, else compare-and-swap) or `cas` (always compare-and-swap) |
//! | `BLKIN_RATE` (or `RATE`) | `1` | sample 1 root trace in N (0 = none) |
//! | `BLKIN_SAMPLE_PROBABILITY` | `1.0` | probability a root trace is sampled |
//! | `BLKIN_MAX_TRACES_PER_SEC` | `0` | cap on sampled roots per second (0 = none) |
//!
//! A value that does not parse is reported once on stderr and the default is
//! used: a typo must not silently disable tracing, nor crash the daemon.

use std::path::PathBuf;

use crate::clock::ClockPref;
use crate::ring::layout;
use crate::sampling::SamplingConfig;

/// Default data bytes per CPU ring.
pub const DEFAULT_RING_SIZE: u64 = 2 << 20;
/// Default maximum record size.
pub const DEFAULT_MAX_RECORD: u32 = 4096;

/// Everything the library reads from the environment.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Directory of ring files.
    pub shm_dir: PathBuf,
    /// Whether `shm_dir` is the per-user default (stricter checks apply).
    pub default_dir: bool,
    /// Data bytes per CPU ring.
    pub ring_size: u64,
    /// Largest record accepted.
    pub max_record: u32,
    /// Overwrite instead of discard when full.
    pub overwrite: bool,
    /// Clock preference.
    pub clock: ClockPref,
    /// Reserve ring space with per-CPU restartable sequences when the
    /// machine allows (false: always with compare-and-swap).
    pub rseq: bool,
    /// Root sampling.
    pub sampling: SamplingConfig,
}

/// The per-user default ring directory.
pub fn default_shm_dir() -> PathBuf {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        "/dev/shm"
    } else {
        "/tmp"
    };
    PathBuf::from(format!("{base}/blkin-{uid}"))
}

/// Parses sizes such as `4096`, `64K`, `2M`, `1G` (binary units).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last()? {
        (i, 'k' | 'K') => (&s[..i], 1u64 << 10),
        (i, 'm' | 'M') => (&s[..i], 1 << 20),
        (i, 'g' | 'G') => (&s[..i], 1 << 30),
        _ => (s, 1),
    };
    num.trim().parse::<u64>().ok()?.checked_mul(mult)
}

/// Parses durations such as `500ms`, `45s`, `30m`, `12h`, `7d`, a sum of
/// them written together (`1h30m`, `2m30s`) or a plain number of seconds
/// (`1.5`). Units: `ms`, `s`, `m` (or `min`), `h`, `d`.
pub fn parse_duration(s: &str) -> Option<std::time::Duration> {
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = std::time::Duration::ZERO;
    while !rest.is_empty() {
        let split = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, after) = rest.split_at(split);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let secs_per_unit = match unit.trim() {
            // A bare number only alone: "1h30" is a typo, not 1 h 30 s.
            "" if total.is_zero() && next.is_empty() => 1.0,
            "s" => 1.0,
            "ms" => 0.001,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            _ => return None,
        };
        let n: f64 = num.parse().ok()?;
        total =
            total.checked_add(std::time::Duration::try_from_secs_f64(n * secs_per_unit).ok()?)?;
        rest = next;
    }
    Some(total)
}

/// A size setting of the daemons: `64M` on a command line; `"64M"` or
/// `67108864` in a config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl std::str::FromStr for Size {
    type Err = String;
    fn from_str(s: &str) -> Result<Size, String> {
        parse_size(s)
            .map(Size)
            .ok_or_else(|| format!("invalid size {s:?} (examples: 4096, 64K, 64M, 1G)"))
    }
}

/// A duration setting of the daemons: `90s`, `12h`, `7d`, `500ms` or a
/// number of seconds, on a command line or (also as a TOML number) in a
/// config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span(pub std::time::Duration);

impl std::str::FromStr for Span {
    type Err = String;
    fn from_str(s: &str) -> Result<Span, String> {
        parse_duration(s)
            .map(Span)
            .ok_or_else(|| format!("invalid duration {s:?} (examples: 1.5, 500ms, 90s, 1h30m, 7d)"))
    }
}

/// Deserializes a setting written as a string (parsed with `FromStr`) or a
/// number (converted by `from_num`).
#[cfg(feature = "serde")]
struct SettingVisitor<T> {
    expecting: &'static str,
    from_num: fn(f64) -> Option<T>,
}

#[cfg(feature = "serde")]
impl<T: std::str::FromStr<Err = String>> serde::de::Visitor<'_> for SettingVisitor<T> {
    type Value = T;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(self.expecting)
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<T, E> {
        v.parse().map_err(E::custom)
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<T, E> {
        self.visit_f64(v as f64)
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<T, E> {
        self.visit_f64(v as f64)
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<T, E> {
        (self.from_num)(v).ok_or_else(|| E::custom(format!("invalid {}: {v}", self.expecting)))
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Size, D::Error> {
        d.deserialize_any(SettingVisitor {
            expecting: "a size (bytes, or a string such as \"64M\")",
            from_num: |v| {
                (v >= 0.0 && v.fract() == 0.0 && v < u64::MAX as f64).then_some(Size(v as u64))
            },
        })
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for Span {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Span, D::Error> {
        d.deserialize_any(SettingVisitor {
            expecting: "a duration (seconds, or a string such as \"30s\" or \"7d\")",
            from_num: |v| std::time::Duration::try_from_secs_f64(v).ok().map(Span),
        })
    }
}

impl Config {
    /// Reads the environment through `get`; returns the config and warnings.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> (Config, Vec<String>) {
        let mut warnings = Vec::new();
        let mut warn = |var: &str, val: &str, why: &str| {
            warnings.push(format!(
                "blkin: ignoring {var}={val:?}: {why}; using the default"
            ));
        };
        let (shm_dir, default_dir) = match get("BLKIN_SHM_DIR").filter(|s| !s.is_empty()) {
            Some(d) => (PathBuf::from(d), false),
            None => (default_shm_dir(), true),
        };
        let mut ring_size = DEFAULT_RING_SIZE;
        if let Some(v) = get("BLKIN_RING_SIZE") {
            match parse_size(&v) {
                Some(n) if (layout::MIN_DATA_SIZE..=layout::MAX_DATA_SIZE).contains(&n) => {
                    ring_size = n.next_power_of_two().min(layout::MAX_DATA_SIZE)
                }
                _ => warn("BLKIN_RING_SIZE", &v, "expected a size between 64K and 1G"),
            }
        }
        let mut max_record = DEFAULT_MAX_RECORD;
        if let Some(v) = get("BLKIN_MAX_RECORD") {
            match parse_size(&v) {
                Some(n)
                    if (layout::record_len(0) as u64..=layout::MAX_RECORD_LIMIT as u64)
                        .contains(&n) =>
                {
                    max_record = n as u32
                }
                _ => warn("BLKIN_MAX_RECORD", &v, "expected 56..65528 bytes"),
            }
        }
        let mut overwrite = false;
        if let Some(v) = get("BLKIN_RING_MODE") {
            match v.trim() {
                "discard" => {}
                "overwrite" => overwrite = true,
                _ => warn("BLKIN_RING_MODE", &v, "expected discard or overwrite"),
            }
        }
        let mut clock = ClockPref::Auto;
        if let Some(v) = get("BLKIN_CLOCK") {
            match v.trim() {
                "auto" => {}
                "tsc" => clock = ClockPref::Tsc,
                "realtime" => clock = ClockPref::Realtime,
                _ => warn("BLKIN_CLOCK", &v, "expected auto, tsc or realtime"),
            }
        }
        let mut rseq = true;
        if let Some(v) = get("BLKIN_RESERVE") {
            match v.trim() {
                "auto" => {}
                "cas" => rseq = false,
                _ => warn("BLKIN_RESERVE", &v, "expected auto or cas"),
            }
        }
        let mut sampling = SamplingConfig::default();
        let rate_var = if get("BLKIN_RATE").is_some() {
            "BLKIN_RATE"
        } else {
            "RATE"
        };
        if let Some(v) = get(rate_var) {
            match v.trim().parse::<u64>() {
                Ok(n) => sampling.rate = n,
                Err(_) => warn(
                    rate_var,
                    &v,
                    "expected a non-negative integer N (sample 1 in N)",
                ),
            }
        }
        if let Some(v) = get("BLKIN_SAMPLE_PROBABILITY") {
            match v.trim().parse::<f64>() {
                Ok(p) if (0.0..=1.0).contains(&p) => sampling.probability = p,
                _ => warn(
                    "BLKIN_SAMPLE_PROBABILITY",
                    &v,
                    "expected a number in [0, 1]",
                ),
            }
        }
        if let Some(v) = get("BLKIN_MAX_TRACES_PER_SEC") {
            match v.trim().parse::<u64>() {
                Ok(n) => sampling.max_per_second = n,
                Err(_) => warn(
                    "BLKIN_MAX_TRACES_PER_SEC",
                    &v,
                    "expected a non-negative integer",
                ),
            }
        }
        let cfg = Config {
            shm_dir,
            default_dir,
            ring_size,
            max_record,
            overwrite,
            clock,
            rseq,
            sampling,
        };
        (cfg, warnings)
    }

    /// Reads the process environment.
    pub fn from_env() -> (Config, Vec<String>) {
        Config::from_lookup(|k| std::env::var(k).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(pairs: &[(&str, &str)]) -> (Config, Vec<String>) {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn defaults() {
        let (c, w) = cfg(&[]);
        assert!(w.is_empty());
        assert!(c.default_dir);
        assert_eq!(c.ring_size, DEFAULT_RING_SIZE);
        assert_eq!(c.sampling, SamplingConfig::default());
        assert!(!c.overwrite);
        assert!(c.rseq);
    }

    #[test]
    fn parses_values_and_rounds_ring_size() {
        let (c, w) = cfg(&[
            ("BLKIN_SHM_DIR", "/x"),
            ("BLKIN_RING_SIZE", "100K"),
            ("BLKIN_RING_MODE", "overwrite"),
            ("RATE", "8"),
            ("BLKIN_MAX_TRACES_PER_SEC", "50"),
            ("BLKIN_RESERVE", "cas"),
        ]);
        assert!(w.is_empty(), "{w:?}");
        assert!(!c.rseq);
        assert_eq!(c.shm_dir, PathBuf::from("/x"));
        assert_eq!(c.ring_size, 128 << 10);
        assert!(c.overwrite);
        assert_eq!(c.sampling.rate, 8);
        assert_eq!(c.sampling.max_per_second, 50);
    }

    #[test]
    fn blkin_rate_wins_over_rate() {
        assert_eq!(
            cfg(&[("RATE", "8"), ("BLKIN_RATE", "3")]).0.sampling.rate,
            3
        );
    }

    #[test]
    fn bad_values_warn_and_keep_defaults() {
        let (c, w) = cfg(&[
            ("BLKIN_RING_SIZE", "12"),
            ("BLKIN_RATE", "often"),
            ("BLKIN_CLOCK", "sundial"),
            ("BLKIN_RESERVE", "rcu"),
        ]);
        assert_eq!(w.len(), 4);
        assert!(c.rseq);
        assert!(w[0].contains("BLKIN_RING_SIZE"));
        assert_eq!(c.ring_size, DEFAULT_RING_SIZE);
        assert_eq!(c.sampling.rate, 1);
    }

    #[test]
    fn durations() {
        use std::time::Duration;
        assert_eq!(parse_duration("7d"), Some(Duration::from_secs(7 * 86400)));
        assert_eq!(parse_duration("12h"), Some(Duration::from_secs(12 * 3600)));
        assert_eq!(parse_duration("30m"), Some(Duration::from_secs(1800)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration(" 45s "), Some(Duration::from_secs(45)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2m30s"), Some(Duration::from_secs(150)));
        assert_eq!(parse_duration("1s500ms"), Some(Duration::from_millis(1500)));
        for bad in ["", "x", "7w", "-1s", "1..2h", "h", "1h30", "m5"] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("2M"), Some(2 << 20));
        assert_eq!(parse_size(" 64k "), Some(64 << 10));
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_size(""), None);
        assert_eq!(parse_size("99999999999G"), None);
    }
}

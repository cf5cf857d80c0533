//! Where things live under the archive root: time partitions, final file
//! names, and the hidden directories (`_tmp/`, `_manifests/`) that Spark,
//! Hive and MapReduce skip because their names start with `_`.

use std::fmt;

use super::{ArchiveError, Compression};

/// Directory of in-progress files, one subdirectory per writer.
pub const TMP_DIR: &str = "_tmp";
/// Directory of commit manifests, one subdirectory per writer.
pub const MANIFEST_DIR: &str = "_manifests";
/// Name of a writer's latest manifest inside `_manifests/<writer>/`.
pub const MANIFEST_FILE: &str = "current.json";

/// An hour of UTC time: the partition `dt=YYYY-MM-DD/hour=HH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Partition {
    /// Hours since the Unix epoch.
    pub epoch_hour: u64,
}

impl Partition {
    /// The partition holding epoch-microsecond timestamp `micros`.
    pub fn of_micros(micros: u64) -> Self {
        Partition {
            epoch_hour: micros / 3_600_000_000,
        }
    }

    /// Epoch microseconds of the first instant of this hour.
    pub fn start_micros(self) -> u64 {
        self.epoch_hour * 3_600_000_000
    }

    /// The relative directory, `dt=YYYY-MM-DD/hour=HH`.
    pub fn dir(self) -> String {
        let (y, m, d) = civil_from_days((self.epoch_hour / 24) as i64);
        format!("dt={y:04}-{m:02}-{d:02}/hour={:02}", self.epoch_hour % 24)
    }

    /// Parses `dt=YYYY-MM-DD/hour=HH` (as found in a path) back.
    pub fn parse_dir(dt: &str, hour: &str) -> Option<Self> {
        let date = dt.strip_prefix("dt=")?;
        let hour: u64 = hour.strip_prefix("hour=")?.parse().ok()?;
        let mut parts = date.split('-');
        let y: i64 = parts.next()?.parse().ok()?;
        let m: u32 = parts.next()?.parse().ok()?;
        let d: u32 = parts.next()?.parse().ok()?;
        if parts.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&d) || hour > 23 {
            return None;
        }
        let days = days_from_civil(y, m, d);
        let days = u64::try_from(days).ok()?;
        Some(Partition {
            epoch_hour: days * 24 + hour,
        })
    }
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.dir())
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month, day) to days since 1970-01-01, the inverse of
/// [`civil_from_days`].
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from(if m > 2 { m - 3 } else { m + 9 });
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Checks that a writer id is usable in file names: 1–64 characters of
/// `[A-Za-z0-9_-]`, not starting with `_` or `-`.
pub fn validate_writer_id(id: &str) -> Result<(), ArchiveError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        && !id.starts_with(['_', '-']);
    if ok {
        Ok(())
    } else {
        Err(ArchiveError::Config(format!(
            "writer id {id:?} must be 1-64 characters of [A-Za-z0-9_-], not starting with '_' or '-'"
        )))
    }
}

/// The final name of the file a commit covering relay positions
/// `first..=last` leaves in each partition it touched:
/// `<writer>-<first>-<last>.ndjson[.gz|.zst]`, positions zero-padded to 20
/// digits so names sort by position.
pub fn final_file_name(writer: &str, first: u64, last: u64, compression: Compression) -> String {
    format!(
        "{writer}-{first:020}-{last:020}.ndjson{}",
        compression.extension()
    )
}

/// The in-progress path of a partition's file of the commit starting at
/// `first`: `_tmp/<writer>/<first>/<dt=..>/<hour=..>/part.ndjson[..].inprogress`.
pub fn tmp_file_path(
    writer: &str,
    first: u64,
    partition: Partition,
    compression: Compression,
) -> String {
    format!(
        "{TMP_DIR}/{writer}/{first:020}/{}/part.ndjson{}.inprogress",
        partition.dir(),
        compression.extension()
    )
}

/// Whether a relative path is part of the data set: no component starts
/// with `_` or `.` (the rule Spark, Hive and MapReduce apply).
pub fn is_visible(rel_path: &str) -> bool {
    rel_path
        .split('/')
        .filter(|c| !c.is_empty())
        .all(|c| !c.starts_with(['_', '.']))
}

/// The compression a data file's name says it has, or `None` for a file
/// that is not an archive data file.
pub fn compression_of(name: &str) -> Option<Compression> {
    if name.ends_with(".ndjson") {
        Some(Compression::None)
    } else if name.ends_with(".ndjson.gz") {
        Some(Compression::Gzip)
    } else if name.ends_with(".ndjson.zst") {
        Some(Compression::Zstd)
    } else {
        None
    }
}

/// The partition a relative data-file path lies in, if it has the
/// `dt=…/hour=…/` layout.
pub fn partition_of(rel_path: &str) -> Option<Partition> {
    let parts: Vec<&str> = rel_path.split('/').filter(|c| !c.is_empty()).collect();
    if parts.len() < 3 {
        return None;
    }
    let n = parts.len();
    Partition::parse_dir(parts[n - 3], parts[n - 2])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_dirs_are_utc_hours() {
        // 2023-11-14T22:13:20Z
        let p = Partition::of_micros(1_700_000_000_000_000);
        assert_eq!(p.dir(), "dt=2023-11-14/hour=22");
        assert_eq!(Partition::of_micros(0).dir(), "dt=1970-01-01/hour=00");
        // Leap day.
        let leap = Partition::parse_dir("dt=2024-02-29", "hour=05").unwrap();
        assert_eq!(leap.dir(), "dt=2024-02-29/hour=05");
        assert_eq!(Partition::of_micros(leap.start_micros()), leap);
    }

    #[test]
    fn partition_round_trips_over_many_days() {
        for h in (0..24 * 366 * 60).step_by(7) {
            let p = Partition { epoch_hour: h };
            let dir = p.dir();
            let (dt, hour) = dir.split_once('/').unwrap();
            assert_eq!(Partition::parse_dir(dt, hour), Some(p), "{dir}");
        }
    }

    #[test]
    fn bad_partition_dirs_are_rejected() {
        assert_eq!(Partition::parse_dir("dt=2024-13-01", "hour=00"), None);
        assert_eq!(Partition::parse_dir("dt=2024-01-01", "hour=24"), None);
        assert_eq!(Partition::parse_dir("date=2024-01-01", "hour=01"), None);
        assert_eq!(Partition::parse_dir("dt=x", "hour=01"), None);
    }

    #[test]
    fn names_and_visibility() {
        let name = final_file_name("c1", 5, 42, Compression::Gzip);
        assert_eq!(
            name,
            "c1-00000000000000000005-00000000000000000042.ndjson.gz"
        );
        assert_eq!(compression_of(&name), Some(Compression::Gzip));
        let tmp = tmp_file_path("c1", 5, Partition { epoch_hour: 1 }, Compression::Zstd);
        assert!(!is_visible(&tmp));
        assert_eq!(compression_of(&tmp), None);
        assert!(is_visible("dt=1970-01-01/hour=01/c1-1-2.ndjson"));
        assert!(!is_visible("dt=1970-01-01/.hidden"));
        assert_eq!(
            partition_of("dt=1970-01-01/hour=01/x.ndjson"),
            Some(Partition { epoch_hour: 1 })
        );
    }

    #[test]
    fn writer_ids_are_checked() {
        assert!(validate_writer_id("collector-1_a").is_ok());
        for bad in ["", "_x", "-x", "a/b", "a.b", &"x".repeat(65)] {
            assert!(validate_writer_id(bad).is_err(), "{bad}");
        }
    }
}

//! Times for `--from`/`--to`: RFC 3339 timestamps, dates, epoch
//! microseconds, or a duration before now (`90s`, `15m`, `1h`, `2d`,
//! `1w`, or several: `1h30m`).

use std::time::{SystemTime, UNIX_EPOCH};

use super::AnalyzeError;
use crate::archive::layout::days_from_civil;

const FORMS: &str = "use RFC 3339 (2024-02-28T22:00:00Z, 2024-02-28T23:00:00+01:00), \
    a date (2024-02-28, UTC midnight), epoch microseconds, or a duration before now \
    (90s, 15m, 1h, 2d, 1w, 1h30m)";

/// Parses a time as epoch microseconds, taking relative forms (`1h`) back
/// from the current clock.
pub fn parse_time_micros(s: &str) -> Result<u64, AnalyzeError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    parse_time_at(s, now)
}

/// [`parse_time_micros`] with "now" given (epoch microseconds).
pub fn parse_time_at(s: &str, now_micros: u64) -> Result<u64, AnalyzeError> {
    let bad = |why: &str| AnalyzeError::Time(format!("{s:?} is not a time ({why}): {FORMS}"));
    let s = s.trim();
    if s.is_empty() {
        return Err(bad("empty"));
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().map_err(|_| bad("too large"));
    }
    if s.as_bytes()[0].is_ascii_digit() && s.ends_with(|c: char| "smhdw".contains(c)) {
        let back = relative_micros(s).ok_or_else(|| bad("bad duration"))?;
        return now_micros
            .checked_sub(back)
            .ok_or_else(|| bad("before 1970"));
    }
    let micros = rfc3339_micros(s).map_err(&bad)?;
    u64::try_from(micros).map_err(|_| bad("before 1970"))
}

/// `1h30m` → microseconds.
fn relative_micros(s: &str) -> Option<u64> {
    let mut total: u64 = 0;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit: u64 = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => return None,
        };
        let n: u64 = num.parse().ok()?;
        num.clear();
        total = total.checked_add(n.checked_mul(unit)?.checked_mul(1_000_000)?)?;
    }
    num.is_empty().then_some(total)
}

fn digits(x: &str, len: usize) -> Result<i64, &'static str> {
    if x.len() == len && x.bytes().all(|b| b.is_ascii_digit()) {
        x.parse().map_err(|_| "bad number")
    } else {
        Err("bad field")
    }
}

/// `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM[:SS[.frac]](Z|±HH:MM)` → epoch
/// microseconds (may be negative).
fn rfc3339_micros(s: &str) -> Result<i64, &'static str> {
    let (date, time) = match s.find(['T', 't', ' ']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let mut d = date.split('-');
    let (y, m, day) = match (d.next(), d.next(), d.next(), d.next()) {
        (Some(y), Some(m), Some(day), None) => (digits(y, 4)?, digits(m, 2)?, digits(day, 2)?),
        _ => return Err("date is not YYYY-MM-DD"),
    };
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return Err("no such date");
    }
    let mut micros = days_from_civil(y, m as u32, day as u32) * 86_400_000_000;
    let Some(time) = time else {
        return Ok(micros);
    };
    let (clock, offset) = if let Some(c) = time.strip_suffix(['Z', 'z']) {
        (c, 0)
    } else {
        let i = time
            .rfind(['+', '-'])
            .ok_or("a time needs a zone: Z or +HH:MM")?;
        let (h, m) = time[i + 1..].split_once(':').ok_or("zone is not +HH:MM")?;
        let (h, m) = (digits(h, 2)?, digits(m, 2)?);
        if h > 23 || m > 59 {
            return Err("bad zone");
        }
        let sign = if time.as_bytes()[i] == b'-' { -1 } else { 1 };
        (&time[..i], sign * (h * 3600 + m * 60) * 1_000_000)
    };
    let (hms, frac) = match clock.split_once('.') {
        Some((hms, f)) if !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()) => {
            // Fractions finer than a microsecond are cut off.
            let f6: String = f.chars().chain(std::iter::repeat('0')).take(6).collect();
            (hms, f6.parse::<i64>().map_err(|_| "bad fraction")?)
        }
        Some(_) => return Err("bad fraction"),
        None => (clock, 0),
    };
    let mut p = hms.split(':');
    let (h, min, sec) = match (p.next(), p.next(), p.next(), p.next()) {
        (Some(h), Some(min), sec, None) => (
            digits(h, 2)?,
            digits(min, 2)?,
            sec.map_or(Ok(0), |x| digits(x, 2))?,
        ),
        _ => return Err("time is not HH:MM[:SS]"),
    };
    if h > 23 || min > 59 || sec > 60 {
        return Err("no such time");
    }
    micros += (h * 3600 + min * 60 + sec) * 1_000_000 + frac - offset;
    Ok(micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = 1_709_157_600_000_000; // 2024-02-28T22:00:00Z

    #[test]
    fn absolute_times_parse() {
        let now = 0;
        for (s, want) in [
            ("1709157600000000", T),
            ("2024-02-28T22:00Z", T),
            ("2024-02-28T22:00:00Z", T),
            ("2024-02-28t22:00:00z", T),
            ("2024-02-28 22:00:00Z", T),
            ("2024-02-28T22:00:01Z", T + 1_000_000),
            ("2024-02-28T22:00:01.5Z", T + 1_500_000),
            ("2024-02-28T22:00:01.000002999Z", T + 1_000_002),
            ("2024-02-28T23:00:00+01:00", T),
            ("2024-02-28T20:30:00-01:30", T),
            ("1970-01-02", 86_400_000_000),
        ] {
            assert_eq!(parse_time_at(s, now).unwrap(), want, "{s}");
        }
    }

    #[test]
    fn relative_times_count_back_from_now() {
        let now = T;
        assert_eq!(parse_time_at("1h", now).unwrap(), T - 3_600_000_000);
        assert_eq!(parse_time_at("90s", now).unwrap(), T - 90_000_000);
        assert_eq!(parse_time_at("1h30m", now).unwrap(), T - 5_400_000_000);
        assert_eq!(parse_time_at("2d", now).unwrap(), T - 2 * 86_400_000_000);
        assert_eq!(parse_time_at("1w", now).unwrap(), T - 7 * 86_400_000_000);
        assert!(parse_time_at("1h", 1000).is_err(), "before 1970");
    }

    #[test]
    fn bad_times_are_refused_with_the_forms() {
        for bad in [
            "",
            "yesterday",
            "2024-13-01",
            "2024-2-28",
            "2024-02-28T22:00",
            "2024-02-28T25:00Z",
            "2024-02-28T22:00:00+1",
            "2024-02-28T22:00:00.Z",
            "-5",
            "1x",
            "h",
            "1h30",
            "99999999999999999999",
        ] {
            let e = parse_time_at(bad, T).unwrap_err().to_string();
            assert!(e.contains("RFC 3339"), "{bad}: {e}");
        }
    }
}

//! Facts about processes: identity (pid + start time + boot id), liveness,
//! and file locks. Used by ring owners (to stamp headers) and readers (to
//! tell a dead writer from a slow one).

use std::fs::File;
use std::os::fd::AsRawFd;

/// The kernel's boot id (random per boot), or zeros if unavailable.
pub fn boot_id() -> [u8; 16] {
    let mut id = [0u8; 16];
    if let Ok(s) = std::fs::read_to_string("/proc/sys/kernel/random/boot_id") {
        let hex: Vec<u8> = s.bytes().filter(|b| b.is_ascii_hexdigit()).collect();
        for (i, pair) in hex.chunks(2).take(16).enumerate() {
            let v = std::str::from_utf8(pair)
                .ok()
                .and_then(|p| u8::from_str_radix(p, 16).ok());
            id[i] = v.unwrap_or(0);
        }
    }
    id
}

/// Start time of `pid` in clock ticks since boot (field 22 of /proc/PID/stat).
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_time(&stat)
}

/// Extracts the start time from the text of a /proc/PID/stat file. The
/// command name (field 2) may contain spaces and parentheses, so fields are
/// counted from the last `)`.
pub fn parse_start_time(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After ")" come fields 3.. ; the start time is field 22.
    rest.split_ascii_whitespace().nth(22 - 3)?.parse().ok()
}

/// Whether the process identified by (pid, start time, boot id) still runs.
/// A reused pid or a reboot both count as dead.
pub fn is_alive(pid: u32, start: u64, boot: &[u8; 16]) -> bool {
    if *boot != [0u8; 16] && *boot != boot_id() {
        return false;
    }
    match start_time(pid) {
        Some(s) => s == start,
        None => false,
    }
}

/// Takes an exclusive, non-blocking advisory lock on `file`.
pub fn try_lock_exclusive(file: &File) -> std::io::Result<()> {
    // SAFETY: flock on a valid, owned file descriptor has no memory effects.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_start_time_with_odd_command_names() {
        let stat = "1234 (a b) c)) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 999 20 21";
        assert_eq!(parse_start_time(stat), Some(999));
        assert_eq!(parse_start_time("garbage"), None);
    }

    #[test]
    fn this_process_is_alive_and_a_fake_one_is_not() {
        let me = std::process::id();
        let st = start_time(me).unwrap();
        assert!(is_alive(me, st, &boot_id()));
        assert!(!is_alive(me, st + 1, &boot_id()));
        assert!(!is_alive(me, st, &[1; 16]));
    }
}

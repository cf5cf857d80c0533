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

/// How many CPU numbers the kernel may ever hand out (the highest possible
/// CPU + 1, from /sys/devices/system/cpu/possible), `None` if unknown.
pub fn possible_cpus() -> Option<u32> {
    parse_cpu_list(&std::fs::read_to_string("/sys/devices/system/cpu/possible").ok()?)
}

/// The highest CPU + 1 of a kernel CPU list such as `0-3,8-11` or `0`.
pub fn parse_cpu_list(s: &str) -> Option<u32> {
    let mut max = None;
    for part in s.trim().split(',') {
        let last = part.rsplit('-').next()?.trim().parse::<u32>().ok()?;
        max = max.max(Some(last));
    }
    max?.checked_add(1)
}

/// Start time of `pid` in clock ticks since boot (field 22 of /proc/PID/stat).
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_time(&stat)
}

/// The state letter of a /proc/PID/stat text (field 3: R, S, D, Z, X, ...).
pub fn parse_state(stat: &str) -> Option<char> {
    stat[stat.rfind(')')? + 1..]
        .split_ascii_whitespace()
        .next()?
        .chars()
        .next()
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
/// A reused pid or a reboot count as dead, and so does a zombie (it will
/// never write again — unless other threads of it still run). A start time of 0 means the writer could not read
/// its own (no /proc where it ran): then only the pid's existence is checked.
pub fn is_alive(pid: u32, start: u64, boot: &[u8; 16]) -> bool {
    if *boot != [0u8; 16] && *boot != boot_id() {
        return false;
    }
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return start == 0 && pid_exists(pid);
    };
    // A zombie leader whose other threads still run (main called
    // pthread_exit) is alive: only a zombie with no other task is done.
    if matches!(parse_state(&stat), Some('Z' | 'X')) && task_count(pid) <= 1 {
        return false;
    }
    start == 0 || parse_start_time(&stat) == Some(start)
}

/// Number of threads of `pid` (entries of /proc/PID/task; 0 if unknown).
fn task_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Whether any process has this pid (`kill(pid, 0)`; EPERM means it exists).
fn pid_exists(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
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
    fn cpu_lists_give_the_highest_cpu_plus_one() {
        assert_eq!(parse_cpu_list("0\n"), Some(1));
        assert_eq!(parse_cpu_list("0-1\n"), Some(2));
        assert_eq!(parse_cpu_list("0-3,8-11"), Some(12));
        assert_eq!(parse_cpu_list("0,2,5"), Some(6));
        assert_eq!(parse_cpu_list(""), None);
        assert_eq!(parse_cpu_list("0-x"), None);
        assert_eq!(parse_cpu_list("4294967295"), None);
    }

    #[test]
    fn parses_start_time_with_odd_command_names() {
        let stat = "1234 (a b) c)) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 999 20 21";
        assert_eq!(parse_start_time(stat), Some(999));
        assert_eq!(parse_start_time("garbage"), None);
    }

    #[test]
    fn zombies_are_dead() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let st = start_time(pid).unwrap();
        // Not reaped yet: a zombie once it has exited.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while is_alive(pid, st, &boot_id()) {
            assert!(
                std::time::Instant::now() < deadline,
                "zombie still counted as alive"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        child.wait().unwrap();
        assert!(!is_alive(pid, st, &boot_id()));
    }

    #[test]
    fn unknown_start_time_falls_back_to_pid_existence() {
        assert!(is_alive(std::process::id(), 0, &boot_id()));
        assert!(parse_state("1 (x) S 0").is_some_and(|c| c == 'S'));
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

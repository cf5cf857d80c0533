//! Ring files on disk: the per-user directory, file names, creation, listing.
//!
//! Files are named `<pid>-<start time>.cpu<N>.ring`; the start time (clock
//! ticks since boot) keeps a reused pid from colliding with a dead process's
//! rings that a consumer has not removed yet.

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::header::{write_header, HeaderInit};
use super::layout;
use super::mem::RingMem;
use super::writer::{RingGeometry, RingWriter};

/// Creates `dir` (mode 0700) if needed and checks it is safe to use: a real
/// directory (not a symlink), owned by us, not writable by anyone else.
pub fn ensure_dir(dir: &Path) -> io::Result<()> {
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("creating {}: {e}", dir.display()),
            ))
        }
    }
    let meta = std::fs::symlink_metadata(dir)?;
    if !meta.file_type().is_dir() {
        return Err(io::Error::other(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if meta.uid() != euid {
        return Err(io::Error::other(format!(
            "{} is owned by uid {}, not by us (uid {euid}); refusing to put rings there",
            dir.display(),
            meta.uid()
        )));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(io::Error::other(format!(
            "{} is writable by group or others (mode {:o}); chmod 700 it",
            dir.display(),
            meta.mode() & 0o777
        )));
    }
    Ok(())
}

/// The file name of a process's ring for one CPU.
pub fn ring_file_name(pid: u32, start_time: u64, cpu: u32) -> String {
    format!("{pid}-{start_time}.cpu{cpu}.ring")
}

/// Parses a ring file name into (pid, start time, cpu).
pub fn parse_ring_file_name(name: &str) -> Option<(u32, u64, u32)> {
    let stem = name.strip_suffix(".ring")?;
    let (proc_part, cpu) = stem.rsplit_once(".cpu")?;
    let (pid, start) = proc_part.split_once('-')?;
    Some((pid.parse().ok()?, start.parse().ok()?, cpu.parse().ok()?))
}

/// Creates, sizes, maps and initialises one ring file (mode 0600).
pub fn create_ring(path: &Path, init: &HeaderInit, geo: RingGeometry) -> io::Result<RingWriter> {
    let open = || {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
    };
    let file = match open() {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            // Same pid and start time: left over from an earlier boot.
            std::fs::remove_file(path)?;
            open()?
        }
        r => r?,
    };
    file.set_len((layout::HEADER_SIZE as u64) + geo.data_size as u64)?;
    // SAFETY: a fresh file of ours, shared with readers by design; RingMem
    // only accesses it through atomics and bounded copies.
    let map = unsafe { memmap2::MmapMut::map_mut(&file)? };
    let mem = RingMem::from_map_mut(map);
    write_header(&mem, init);
    Ok(RingWriter::new(mem, geo))
}

/// Ring files in `dir`, sorted by name. Missing directory = no rings.
pub fn list_rings(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if let Some(name) = entry.file_name().to_str() {
            if parse_ring_file_name(name).is_some() {
                out.push(entry.path());
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let n = ring_file_name(42, 123456, 3);
        assert_eq!(n, "42-123456.cpu3.ring");
        assert_eq!(parse_ring_file_name(&n), Some((42, 123456, 3)));
        assert_eq!(parse_ring_file_name("42.ring"), None);
        assert_eq!(parse_ring_file_name("a-1.cpu0.ring"), None);
    }

    #[test]
    #[cfg_attr(miri, ignore)] // see scripts/test.sh: Miri runs the ring protocol tests
    fn refuses_group_writable_dir() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        ensure_dir(d.path()).unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = ensure_dir(d.path()).unwrap_err();
        assert!(e.to_string().contains("writable by group"), "{e}");
    }

    #[test]
    fn refuses_symlink() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("t");
        std::fs::create_dir(&target).unwrap();
        let link = d.path().join("l");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(ensure_dir(&link).is_err());
    }
}

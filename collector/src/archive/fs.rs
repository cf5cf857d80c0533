//! The few file-system operations the archive needs, behind one trait, and
//! its local-directory implementation. Paths are relative to the archive
//! root and `/`-separated.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::ArchiveError;

/// What a rename that must not replace its target did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renamed {
    /// The source now has the target name.
    Done,
    /// The target already existed; the source was left alone.
    TargetExists,
}

/// One file in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Path relative to the archive root.
    pub path: String,
    /// Length in bytes.
    pub len: u64,
}

/// A file being written; [`FileSink::finish`] makes its bytes durable.
pub trait FileSink {
    /// Appends bytes.
    fn write_all(&mut self, buf: &[u8]) -> Result<(), ArchiveError>;
    /// Flushes, makes the contents durable (fsync, HDFS close) and closes.
    fn finish(self) -> Result<(), ArchiveError>;
}

/// A file system holding an archive: a local directory or HDFS.
pub trait ArchiveFs {
    /// The writer [`ArchiveFs::create`] returns.
    type Sink: FileSink;
    /// Creates (or truncates) a file, making its parent directories.
    fn create(&self, path: &str) -> Result<Self::Sink, ArchiveError>;
    /// Renames, failing with [`Renamed::TargetExists`] rather than replacing
    /// an existing target; makes the rename durable before returning.
    fn rename_no_replace(&self, from: &str, to: &str) -> Result<Renamed, ArchiveError>;
    /// Renames, atomically replacing the target if it exists.
    fn rename_replace(&self, from: &str, to: &str) -> Result<(), ArchiveError>;
    /// Whether a file or directory exists.
    fn exists(&self, path: &str) -> Result<bool, ArchiveError>;
    /// Reads a whole file.
    fn read(&self, path: &str) -> Result<Vec<u8>, ArchiveError>;
    /// Every file under `dir`, recursively (empty when `dir` is missing).
    fn list_files(&self, dir: &str) -> Result<Vec<FileEntry>, ArchiveError>;
    /// Deletes a file or a directory tree; a missing path is not an error.
    fn delete(&self, path: &str) -> Result<(), ArchiveError>;
    /// Where this file system is, for messages.
    fn describe(&self) -> String;

    /// Writes `bytes` to `path` atomically: a sibling `.tmp` file renamed
    /// over it.
    fn write_atomic(&self, path: &str, bytes: &[u8]) -> Result<(), ArchiveError> {
        let tmp = format!("{path}.tmp");
        let mut sink = self.create(&tmp)?;
        sink.write_all(bytes)?;
        sink.finish()?;
        self.rename_replace(&tmp, path)
    }
}

fn io_err(what: &str, path: &Path, e: io::Error) -> ArchiveError {
    ArchiveError::Io(format!("{what} {}: {e}", path.display()))
}

/// An archive in a local directory (or anything mounted as one).
#[derive(Debug, Clone)]
pub struct LocalFs {
    root: PathBuf,
}

impl LocalFs {
    /// An archive rooted at `root` (created if missing).
    pub fn new(root: impl Into<PathBuf>) -> Result<Self, ArchiveError> {
        let root = root.into();
        fs::create_dir_all(&root).map_err(|e| io_err("cannot create", &root, e))?;
        Ok(LocalFs { root })
    }

    fn abs(&self, rel: &str) -> PathBuf {
        self.root.join(rel.trim_start_matches('/'))
    }
}

/// Fsyncs a directory so that a rename or create inside it is durable.
fn sync_dir(dir: &Path) -> Result<(), ArchiveError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err("cannot fsync directory", dir, e))
}

/// A local file being written.
#[derive(Debug)]
pub struct LocalSink {
    file: File,
    path: PathBuf,
}

impl FileSink for LocalSink {
    fn write_all(&mut self, buf: &[u8]) -> Result<(), ArchiveError> {
        self.file
            .write_all(buf)
            .map_err(|e| io_err("cannot write", &self.path, e))
    }

    fn finish(self) -> Result<(), ArchiveError> {
        self.file
            .sync_all()
            .map_err(|e| io_err("cannot fsync", &self.path, e))
    }
}

impl ArchiveFs for LocalFs {
    type Sink = LocalSink;

    fn create(&self, path: &str) -> Result<LocalSink, ArchiveError> {
        let path = self.abs(path);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| io_err("cannot create", parent, e))?;
        }
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| io_err("cannot create", &path, e))?;
        Ok(LocalSink { file, path })
    }

    fn rename_no_replace(&self, from: &str, to: &str) -> Result<Renamed, ArchiveError> {
        let (from, to) = (self.abs(from), self.abs(to));
        let parent = to.parent().unwrap_or(&self.root).to_path_buf();
        fs::create_dir_all(&parent).map_err(|e| io_err("cannot create", &parent, e))?;
        // A hard link cannot replace an existing name: link + unlink is a
        // rename that fails instead of overwriting.
        match fs::hard_link(&from, &to) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(Renamed::TargetExists),
            Err(e) => return Err(io_err("cannot link", &to, e)),
        }
        sync_dir(&parent)?;
        fs::remove_file(&from).map_err(|e| io_err("cannot remove", &from, e))?;
        if let Some(p) = from.parent() {
            sync_dir(p)?;
        }
        Ok(Renamed::Done)
    }

    fn rename_replace(&self, from: &str, to: &str) -> Result<(), ArchiveError> {
        let (from, to) = (self.abs(from), self.abs(to));
        fs::rename(&from, &to).map_err(|e| io_err("cannot rename", &from, e))?;
        sync_dir(to.parent().unwrap_or(&self.root))
    }

    fn exists(&self, path: &str) -> Result<bool, ArchiveError> {
        let path = self.abs(path);
        path.try_exists()
            .map_err(|e| io_err("cannot stat", &path, e))
    }

    fn read(&self, path: &str) -> Result<Vec<u8>, ArchiveError> {
        let path = self.abs(path);
        fs::read(&path).map_err(|e| io_err("cannot read", &path, e))
    }

    fn list_files(&self, dir: &str) -> Result<Vec<FileEntry>, ArchiveError> {
        let mut out = Vec::new();
        let mut stack = vec![dir.trim_matches('/').to_string()];
        while let Some(rel) = stack.pop() {
            let abs = self.abs(&rel);
            let entries = match fs::read_dir(&abs) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("cannot list", &abs, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| io_err("cannot list", &abs, e))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let child = if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                };
                let meta = entry
                    .metadata()
                    .map_err(|e| io_err("cannot stat", &entry.path(), e))?;
                if meta.is_dir() {
                    stack.push(child);
                } else {
                    out.push(FileEntry {
                        path: child,
                        len: meta.len(),
                    });
                }
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    fn delete(&self, path: &str) -> Result<(), ArchiveError> {
        let path = self.abs(path);
        let result = match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => fs::remove_dir_all(&path),
            Ok(_) => fs::remove_file(&path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => Err(e),
        };
        result.map_err(|e| io_err("cannot delete", &path, e))
    }

    fn describe(&self) -> String {
        self.root.display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rename_no_replace_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let fs = LocalFs::new(dir.path()).unwrap();
        for (name, body) in [("a", b"one"), ("b", b"two")] {
            let mut s = fs.create(name).unwrap();
            s.write_all(body).unwrap();
            s.finish().unwrap();
        }
        assert_eq!(
            fs.rename_no_replace("a", "b").unwrap(),
            Renamed::TargetExists
        );
        assert_eq!(fs.read("b").unwrap(), b"two");
        assert!(fs.exists("a").unwrap());
        assert_eq!(fs.rename_no_replace("a", "x/y/c").unwrap(), Renamed::Done);
        assert!(!fs.exists("a").unwrap());
        assert_eq!(fs.read("x/y/c").unwrap(), b"one");
        let files: Vec<_> = fs
            .list_files("")
            .unwrap()
            .into_iter()
            .map(|f| f.path)
            .collect();
        assert_eq!(files, vec!["b", "x/y/c"]);
        fs.delete("x").unwrap();
        fs.delete("missing").unwrap();
        assert_eq!(fs.list_files("").unwrap().len(), 1);
    }

    #[test]
    fn write_atomic_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let fs = LocalFs::new(dir.path()).unwrap();
        fs.write_atomic("m/current.json", b"1").unwrap();
        fs.write_atomic("m/current.json", b"2").unwrap();
        assert_eq!(fs.read("m/current.json").unwrap(), b"2");
        assert_eq!(fs.list_files("m").unwrap().len(), 1);
    }
}

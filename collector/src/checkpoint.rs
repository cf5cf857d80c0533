//! Collector checkpoints: where every relay stream stands and what the
//! assembler holds, at one consistent cut, so a restarted collector resumes
//! each stream where the checkpoint was cut instead of from the oldest
//! record (docs/ARCHITECTURE.md, "Checkpoints").
//!
//! A checkpoint is written only after every durable sink acknowledged every
//! span emitted before its cut (see `pipeline`). [`StateDir`] keeps the last
//! one in `<dir>/checkpoint.json`, replaced atomically (temporary file,
//! fsync, rename, fsync of the directory). The archive sink stores the same
//! checkpoint in its commit manifest; on start the collector takes the one
//! with the highest [`Checkpoint::id`].

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use blkkin::wire::StreamKey;
use serde::{Deserialize, Serialize};

use crate::assemble::AssemblerSnapshot;

/// Format version written into every checkpoint.
pub const CHECKPOINT_VERSION: u32 = 1;

/// What can go wrong reading or writing checkpoints.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// A file operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file is not a checkpoint this collector can use.
    #[error("checkpoint {path} is unusable: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// The next position of one relay stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamPosition {
    /// Node name of the stream.
    pub node: String,
    /// Writer process id.
    pub pid: u32,
    /// Writer process start time.
    pub start_time: u64,
    /// CPU (ring) number.
    pub cpu: u32,
    /// First position not yet taken into the assembler.
    pub next: u64,
}

impl StreamPosition {
    /// The position of `key`.
    pub fn new(key: &StreamKey, next: u64) -> StreamPosition {
        StreamPosition {
            node: key.node.clone(),
            pid: key.pid,
            start_time: key.start_time,
            cpu: key.cpu,
            next,
        }
    }

    /// Its stream key and position.
    pub fn key(&self) -> (StreamKey, u64) {
        (
            StreamKey {
                node: self.node.clone(),
                pid: self.pid,
                start_time: self.start_time,
                cpu: self.cpu,
            },
            self.next,
        )
    }
}

/// One consistent cut of a collector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// [`CHECKPOINT_VERSION`].
    pub version: u32,
    /// Rises with every checkpoint of a collector (across restarts).
    pub id: u64,
    /// Wall-clock time of the cut, epoch milliseconds (for people).
    pub cut_unix_ms: u64,
    /// Spans emitted before the cut, over the collector's whole life.
    pub emitted: u64,
    /// Per relay address, the next position of every stream read.
    pub relays: BTreeMap<String, Vec<StreamPosition>>,
    /// The assembler's open spans at the cut.
    pub assembler: AssemblerSnapshot,
}

impl Checkpoint {
    /// Encodes it as JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a checkpoint always serialises")
    }

    /// Decodes and checks a checkpoint read from `path` (for messages).
    pub fn from_json(bytes: &[u8], path: &Path) -> Result<Checkpoint, CheckpointError> {
        let corrupt = |reason: String| CheckpointError::Corrupt {
            path: path.to_path_buf(),
            reason,
        };
        let c: Checkpoint = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
        if c.version != CHECKPOINT_VERSION {
            return Err(corrupt(format!(
                "version {} (this collector reads {CHECKPOINT_VERSION})",
                c.version
            )));
        }
        Ok(c)
    }

    /// The positions to resume relay `addr` from.
    pub fn resume(&self, addr: &str) -> Vec<(StreamKey, u64)> {
        self.relays
            .get(addr)
            .map(|v| v.iter().map(StreamPosition::key).collect())
            .unwrap_or_default()
    }
}

/// The directory holding a collector's checkpoint.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

const FILE: &str = "checkpoint.json";

impl StateDir {
    /// Uses `dir`, creating it when missing.
    pub fn open(dir: &Path) -> Result<StateDir, CheckpointError> {
        std::fs::create_dir_all(dir).map_err(|source| CheckpointError::Io {
            what: "creating",
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(StateDir {
            dir: dir.to_path_buf(),
        })
    }

    /// The checkpoint file.
    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    /// The last checkpoint written, if any.
    pub fn load(&self) -> Result<Option<Checkpoint>, CheckpointError> {
        let path = self.path();
        match std::fs::read(&path) {
            Ok(bytes) => Checkpoint::from_json(&bytes, &path).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(CheckpointError::Io {
                what: "reading",
                path,
                source,
            }),
        }
    }

    /// Replaces the checkpoint atomically: a crash leaves the old one or
    /// the new one, never a mix.
    pub fn save(&self, c: &Checkpoint) -> Result<(), CheckpointError> {
        let path = self.path();
        let tmp = self.dir.join(format!("{FILE}.tmp"));
        let io = |what, path: &Path| {
            let path = path.to_path_buf();
            move |source| CheckpointError::Io { what, path, source }
        };
        let mut f = std::fs::File::create(&tmp).map_err(io("creating", &tmp))?;
        f.write_all(&c.to_json()).map_err(io("writing", &tmp))?;
        f.sync_all().map_err(io("syncing", &tmp))?;
        drop(f);
        std::fs::rename(&tmp, &path).map_err(io("renaming to", &path))?;
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io("syncing", &self.dir))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint(id: u64) -> Checkpoint {
        let key = StreamKey {
            node: "n1".into(),
            pid: 42,
            start_time: 7,
            cpu: 1,
        };
        Checkpoint {
            version: CHECKPOINT_VERSION,
            id,
            cut_unix_ms: 1,
            emitted: 10,
            relays: [(
                "127.0.0.1:1".to_string(),
                vec![StreamPosition::new(&key, 99)],
            )]
            .into(),
            assembler: AssemblerSnapshot::default(),
        }
    }

    #[test]
    fn saves_replaces_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(&dir.path().join("state")).unwrap();
        assert_eq!(state.load().unwrap(), None);
        state.save(&checkpoint(1)).unwrap();
        state.save(&checkpoint(2)).unwrap();
        let c = state.load().unwrap().unwrap();
        assert_eq!(c, checkpoint(2));
        let resume = c.resume("127.0.0.1:1");
        assert_eq!(resume.len(), 1);
        assert_eq!((resume[0].0.pid, resume[0].1), (42, 99));
        assert!(c.resume("elsewhere").is_empty());
        assert!(!state.dir.join("checkpoint.json.tmp").exists());
    }

    #[test]
    fn a_damaged_or_foreign_file_is_an_error_not_a_fresh_start() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        std::fs::write(state.path(), b"{\"version\":1").unwrap();
        assert!(matches!(state.load(), Err(CheckpointError::Corrupt { .. })));
        let mut c = checkpoint(1);
        c.version = 99;
        std::fs::write(state.path(), c.to_json()).unwrap();
        let e = state.load().unwrap_err().to_string();
        assert!(e.contains("version 99"), "{e}");
    }
}

//! The span archive: every span as one line of Zipkin v2 JSON in files
//! partitioned by UTC hour (`<root>/dt=YYYY-MM-DD/hour=HH/`), on HDFS or in
//! a local directory, for Spark, Hive, MapReduce and `blkkin analyze`
//! (see docs/ARCHIVE.md for the layout, guarantees and example queries).
//!
//! # Exactly once
//!
//! [`ArchiveWriter::append`] takes spans with the relay position that may
//! be acknowledged once they are stored; they go into in-progress files
//! under `_tmp/`, which no reader looks at. [`ArchiveWriter::commit`]
//! closes and syncs those files, writes a manifest (the commit point), then
//! renames each file into its partition under a name made from the writer
//! id and the commit's first and last positions, and returns a
//! [`CommitToken`]. The caller acknowledges relay positions **only up to
//! `CommitToken::position`**. After a crash, [`ArchiveWriter::open`]
//! finishes a commit whose manifest exists, deletes the in-progress files
//! of one that did not reach it (their spans were never acknowledged and
//! come again from the relay), and reports the committed position; appends
//! at or below it are skipped, so a replay cannot duplicate a file, and
//! renames never replace an existing file.
//!
//! In the collector (`crate::sink::archive`) the positions given to
//! `append` are the sink's own span count, not relay positions: the relay
//! positions travel in the collector's checkpoint, which
//! [`ArchiveWriter::commit_with`] writes into the same manifest, so the
//! files and the checkpoint that covers them become durable in one step.
//!
//! The writer is blocking (file system calls, fsync, HDFS RPCs): run it on
//! its own thread or in `spawn_blocking`.

pub mod encode;
pub mod fs;
pub mod hdfs;
pub mod layout;
pub mod writer;

pub use fs::{ArchiveFs, FileEntry, FileSink, LocalFs, Renamed};
pub use hdfs::{HdfsConfig, HdfsFs};
pub use layout::Partition;
pub use writer::{Appended, ArchiveConfig, ArchiveStats, ArchiveWriter, CommitToken};

use std::str::FromStr;

/// Compression of archive data files; the file name says which
/// (`.ndjson`, `.ndjson.gz`, `.ndjson.zst`), as Spark and Hive expect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    /// Plain NDJSON.
    #[default]
    None,
    /// gzip.
    Gzip,
    /// Zstandard.
    Zstd,
}

impl Compression {
    /// The file-name suffix after `.ndjson`.
    pub fn extension(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Gzip => ".gz",
            Compression::Zstd => ".zst",
        }
    }
}

impl FromStr for Compression {
    type Err = ArchiveError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" | "" => Ok(Compression::None),
            "gzip" | "gz" => Ok(Compression::Gzip),
            "zstd" | "zst" => Ok(Compression::Zstd),
            other => Err(ArchiveError::Config(format!(
                "unknown compression {other:?} (none, gzip, zstd)"
            ))),
        }
    }
}

/// Where an archive is: a local directory or an HDFS directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchiveLocation {
    /// A local directory.
    Local(std::path::PathBuf),
    /// A directory on HDFS.
    Hdfs(HdfsConfig),
}

impl ArchiveLocation {
    /// Parses `hdfs://host:port/path` (HDFS) or anything else (a local
    /// directory); `user` applies to HDFS.
    pub fn parse(s: &str, user: Option<String>) -> Result<Self, ArchiveError> {
        let Some(rest) = s.strip_prefix("hdfs://") else {
            return Ok(ArchiveLocation::Local(s.into()));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() {
            return Err(ArchiveError::Config(format!(
                "{s:?}: an HDFS location needs a NameNode, hdfs://host:port/path"
            )));
        }
        Ok(ArchiveLocation::Hdfs(HdfsConfig {
            namenode_url: format!("hdfs://{authority}"),
            root: path.to_string(),
            user,
        }))
    }
}

/// What can go wrong in the archive.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// A file-system or HDFS operation failed.
    #[error("archive I/O: {0}")]
    Io(String),
    /// Bad configuration.
    #[error("archive configuration: {0}")]
    Config(String),
    /// Something in the archive is not what the writer left there.
    #[error("archive corrupt: {0}")]
    Corrupt(String),
    /// `append` was called with a position not above the previous one.
    #[error("relay position {position} is not above the previous append's {last}")]
    PositionNotRising {
        /// The rejected position.
        position: u64,
        /// The previous append's position.
        last: u64,
    },
    /// An earlier I/O error left the writer in an unknown state: reopen it.
    #[error("archive writer failed earlier; reopen it to recover")]
    Failed,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse() {
        assert_eq!(
            ArchiveLocation::parse("hdfs://127.0.0.1:9000/blkkin/spans", Some("u".into())).unwrap(),
            ArchiveLocation::Hdfs(HdfsConfig {
                namenode_url: "hdfs://127.0.0.1:9000".into(),
                root: "/blkkin/spans".into(),
                user: Some("u".into()),
            })
        );
        assert_eq!(
            ArchiveLocation::parse("/tmp/a", None).unwrap(),
            ArchiveLocation::Local("/tmp/a".into())
        );
        assert!(ArchiveLocation::parse("hdfs:///x", None).is_err());
        assert_eq!("zstd".parse::<Compression>().unwrap(), Compression::Zstd);
        assert!("lz4".parse::<Compression>().is_err());
    }
}

//! The archive on HDFS, through `hdfs-native` (the NameNode's and
//! DataNodes' native RPC protocols; no JVM, no libhdfs).
//!
//! Uses the crate's blocking client, which owns a small Tokio runtime of its
//! own: call it from a plain thread or `spawn_blocking`, never directly
//! from inside an async task.

use bytes::Bytes;
use hdfs_native::client::WriteOptions;
use hdfs_native::sync::{Client, ClientBuilder, FileWriter};
use hdfs_native::HdfsError;

use super::fs::{ArchiveFs, FileEntry, FileSink, Renamed};
use super::ArchiveError;

/// Where an HDFS archive lives and as whom to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HdfsConfig {
    /// `hdfs://host:port` of the NameNode (or a name service in the config
    /// files found through `HADOOP_CONF_DIR`).
    pub namenode_url: String,
    /// Absolute directory of the archive, e.g. `/blkkin/spans`.
    pub root: String,
    /// User to act as (simple authentication); `None` takes
    /// `HADOOP_USER_NAME` or the login user.
    pub user: Option<String>,
}

/// Client settings of a reader: three connection attempts about a second
/// apart instead of the default fifteen with back-off up to 15 s, so an
/// unreachable NameNode is reported while the user waits.
const READER_RETRIES: [(&str, &str); 3] = [
    ("dfs.client.failover.max.attempts", "3"),
    ("dfs.client.failover.sleep.base.millis", "300"),
    ("dfs.client.failover.sleep.max.millis", "1000"),
];

/// An archive rooted at a directory of an HDFS cluster.
pub struct HdfsFs {
    client: Client,
    config: HdfsConfig,
}

impl std::fmt::Debug for HdfsFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HdfsFs")
            .field("config", &self.config)
            .finish()
    }
}

fn hdfs_err(what: &str, path: &str, e: HdfsError) -> ArchiveError {
    ArchiveError::Io(format!("HDFS {what} {path}: {e}"))
}

impl HdfsFs {
    /// Connects (lazily: the first operation dials the NameNode) and makes
    /// sure the root directory exists.
    pub fn connect(config: HdfsConfig) -> Result<Self, ArchiveError> {
        let fs = Self::client(config, &[])?;
        fs.client
            .mkdirs(&fs.config.root, 0o755, true)
            .map_err(|e| hdfs_err("cannot create", &fs.config.root, e))?;
        Ok(fs)
    }

    /// Connects to read an archive that must already exist: fails when the
    /// NameNode cannot be reached (after a few seconds of retries, where a
    /// writer keeps trying for minutes) or the root is not a directory,
    /// and creates nothing.
    pub fn open_existing(config: HdfsConfig) -> Result<Self, ArchiveError> {
        let fs = Self::client(config, &READER_RETRIES)?;
        let root = &fs.config.root;
        match fs.client.get_file_info(root) {
            Ok(st) if st.isdir => Ok(fs),
            Ok(_) => Err(ArchiveError::Config(format!(
                "{} is a file, not an archive directory",
                fs.describe()
            ))),
            Err(HdfsError::FileNotFound(_)) => Err(ArchiveError::Config(format!(
                "{} does not exist",
                fs.describe()
            ))),
            Err(e) => Err(hdfs_err("cannot reach the NameNode for", root, e)),
        }
    }

    fn client(config: HdfsConfig, settings: &[(&str, &str)]) -> Result<Self, ArchiveError> {
        if !config.root.starts_with('/') {
            return Err(ArchiveError::Config(format!(
                "HDFS root {:?} must be an absolute path",
                config.root
            )));
        }
        let mut builder = ClientBuilder::new().with_url(config.namenode_url.clone());
        if let Some(user) = &config.user {
            builder = builder.with_user(user.clone());
        }
        if !settings.is_empty() {
            builder = builder.with_config(settings.iter().copied());
        }
        let client = builder
            .build()
            .map_err(|e| hdfs_err("cannot connect to", &config.namenode_url, e))?;
        Ok(HdfsFs { client, config })
    }

    fn abs(&self, rel: &str) -> String {
        let root = self.config.root.trim_end_matches('/');
        let rel = rel.trim_matches('/');
        if rel.is_empty() {
            root.to_string()
        } else {
            format!("{root}/{rel}")
        }
    }

    fn mkdir_parent(&self, abs: &str) -> Result<(), ArchiveError> {
        if let Some((parent, _)) = abs.rsplit_once('/') {
            if !parent.is_empty() {
                self.client
                    .mkdirs(parent, 0o755, true)
                    .map_err(|e| hdfs_err("cannot create", parent, e))?;
            }
        }
        Ok(())
    }

    /// The archive's location, `hdfs://…/root`.
    pub fn config(&self) -> &HdfsConfig {
        &self.config
    }
}

/// An HDFS file being written.
pub struct HdfsSink {
    writer: FileWriter,
    path: String,
}

impl FileSink for HdfsSink {
    fn write_all(&mut self, buf: &[u8]) -> Result<(), ArchiveError> {
        self.writer
            .write_bytes(Bytes::copy_from_slice(buf))
            .map(|_| ())
            .map_err(|e| hdfs_err("cannot write", &self.path, e))
    }

    fn finish(mut self) -> Result<(), ArchiveError> {
        // close() waits for every packet's acknowledgement from the
        // DataNode pipeline and completes the file at the NameNode.
        self.writer
            .close()
            .map_err(|e| hdfs_err("cannot close", &self.path, e))
    }
}

impl ArchiveFs for HdfsFs {
    type Sink = HdfsSink;

    fn create(&self, path: &str) -> Result<HdfsSink, ArchiveError> {
        let abs = self.abs(path);
        let options = WriteOptions::default().overwrite(true).create_parent(true);
        let writer = self
            .client
            .create(&abs, options)
            .map_err(|e| hdfs_err("cannot create", &abs, e))?;
        Ok(HdfsSink { writer, path: abs })
    }

    fn rename_no_replace(&self, from: &str, to: &str) -> Result<Renamed, ArchiveError> {
        let (from, to) = (self.abs(from), self.abs(to));
        self.mkdir_parent(&to)?;
        match self.client.rename(&from, &to, false) {
            Ok(()) => Ok(Renamed::Done),
            Err(e) => {
                // The NameNode answers FileAlreadyExistsException; check
                // rather than parse the exception class.
                if self.client.get_file_info(&to).is_ok() {
                    Ok(Renamed::TargetExists)
                } else {
                    Err(hdfs_err("cannot rename", &from, e))
                }
            }
        }
    }

    fn rename_replace(&self, from: &str, to: &str) -> Result<(), ArchiveError> {
        let (from, to) = (self.abs(from), self.abs(to));
        self.mkdir_parent(&to)?;
        self.client
            .rename(&from, &to, true)
            .map_err(|e| hdfs_err("cannot rename", &from, e))
    }

    fn exists(&self, path: &str) -> Result<bool, ArchiveError> {
        let abs = self.abs(path);
        match self.client.get_file_info(&abs) {
            Ok(_) => Ok(true),
            Err(HdfsError::FileNotFound(_)) => Ok(false),
            Err(e) => Err(hdfs_err("cannot stat", &abs, e)),
        }
    }

    fn read(&self, path: &str) -> Result<Vec<u8>, ArchiveError> {
        let abs = self.abs(path);
        let reader = self
            .client
            .read(&abs)
            .map_err(|e| hdfs_err("cannot open", &abs, e))?;
        let bytes = reader
            .read_range(0, reader.file_length())
            .map_err(|e| hdfs_err("cannot read", &abs, e))?;
        Ok(bytes.to_vec())
    }

    fn list_files(&self, dir: &str) -> Result<Vec<FileEntry>, ArchiveError> {
        let abs = self.abs(dir);
        let statuses = match self.client.list_status(&abs, true) {
            Ok(s) => s,
            Err(HdfsError::FileNotFound(_)) => return Ok(Vec::new()),
            Err(e) => return Err(hdfs_err("cannot list", &abs, e)),
        };
        let prefix = format!("{}/", self.abs(""));
        let mut out: Vec<FileEntry> = statuses
            .into_iter()
            .filter(|s| !s.isdir)
            .map(|s| FileEntry {
                path: s.path.strip_prefix(&prefix).unwrap_or(&s.path).to_string(),
                len: s.length as u64,
            })
            .collect();
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    fn delete(&self, path: &str) -> Result<(), ArchiveError> {
        let abs = self.abs(path);
        match self.client.delete(&abs, true) {
            Ok(_) | Err(HdfsError::FileNotFound(_)) => Ok(()),
            Err(e) => Err(hdfs_err("cannot delete", &abs, e)),
        }
    }

    fn describe(&self) -> String {
        format!(
            "{}{}",
            self.config.namenode_url.trim_end_matches('/'),
            self.config.root
        )
    }
}

//! The archive writer: buffers spans into per-hour in-progress files and
//! commits them with a manifest and renames, exactly once per relay
//! position (the protocol is described in docs/ARCHIVE.md).

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::encode::Encoder;
use super::fs::{ArchiveFs, FileSink, Renamed};
use super::layout::{self, Partition, MANIFEST_DIR, MANIFEST_FILE, TMP_DIR};
use super::{ArchiveError, Compression};
use crate::model::Span;

/// How a writer names, compresses and rolls its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveConfig {
    /// Unique per (collector, relay stream): names files and owns
    /// `_tmp/<id>/` and `_manifests/<id>/`. Two live writers must never
    /// share an id.
    pub writer_id: String,
    /// Compression of data files.
    pub compression: Compression,
    /// A commit is due once this many uncompressed bytes are buffered.
    pub roll_bytes: u64,
    /// A commit is due once the oldest uncommitted span is this old.
    pub roll_interval: Duration,
    /// Compressed bytes gathered per file before they are written out.
    pub flush_bytes: usize,
    /// Most partitions (hours) with a file open at once: spans whose hour
    /// would open one more go to the hour they arrive in instead (their
    /// timestamp unchanged; counted in [`ArchiveStats::spans_repartitioned`])
    /// and a commit is due. Spans with timestamps spread over years cannot
    /// make the writer hold a file (and an encoder) per hour.
    pub max_open_partitions: usize,
}

impl ArchiveConfig {
    /// Defaults: no compression, 128 MiB or 5 minutes per commit, 1 MiB
    /// writes.
    pub fn new(writer_id: impl Into<String>) -> Self {
        ArchiveConfig {
            writer_id: writer_id.into(),
            compression: Compression::None,
            roll_bytes: 64 << 20,
            roll_interval: Duration::from_secs(60),
            flush_bytes: 1 << 20,
            max_open_partitions: 64,
        }
    }
}

/// What a commit made durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitToken {
    /// Every span appended with a relay position up to and including this
    /// one is now in a completed (renamed) file: the caller may acknowledge
    /// the relay up to here. `None` when nothing was ever committed.
    pub position: Option<u64>,
    /// Final paths (relative to the root) of the files this commit made.
    pub files: Vec<String>,
    /// Spans in those files.
    pub spans: u64,
}

/// What [`ArchiveWriter::append`] did with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Buffered into the current commit.
    Buffered,
    /// Skipped: its position is already covered by a committed file (a
    /// replay after a crash); counted in [`ArchiveStats::spans_replayed`].
    AlreadyArchived,
}

/// Counters of everything the writer did, including what it threw away.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArchiveStats {
    /// Spans buffered by `append`.
    pub spans_appended: u64,
    /// Spans skipped because their position was already committed.
    pub spans_replayed: u64,
    /// Spans in completed files.
    pub spans_committed: u64,
    /// Commits completed.
    pub commits: u64,
    /// Files renamed into place.
    pub files_committed: u64,
    /// Uncompressed NDJSON bytes encoded.
    pub bytes_uncompressed: u64,
    /// Bytes written to the file system (after compression).
    pub bytes_written: u64,
    /// Renames whose target already existed (a commit already completed
    /// before a crash); the duplicate in-progress file was deleted.
    pub renames_already_done: u64,
    /// Files finished by recovery from a manifest (crash mid-commit).
    pub recovered_files: u64,
    /// Spans filed under their arrival hour because their own hour would
    /// have opened more than `max_open_partitions` files.
    pub spans_repartitioned: u64,
    /// In-progress files of an unfinished commit deleted by recovery; their
    /// spans were never acknowledged and come again from the relay.
    pub discarded_tmp_files: u64,
}

/// A commit's record: written atomically before the renames, so that a
/// crash between renames is finished on the next open.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Manifest {
    writer: String,
    first: u64,
    last: u64,
    spans: u64,
    files: Vec<ManifestEntry>,
    /// The caller's checkpoint committed with these files (the collector's
    /// relay positions and assembler state), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    checkpoint: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct ManifestEntry {
    tmp: String,
    #[serde(rename = "final")]
    final_path: String,
    spans: u64,
}

struct OpenFile<S> {
    tmp: String,
    sink: S,
    encoder: Encoder,
    spans: u64,
}

/// Writes spans into the archive; see the module docs for the contract.
pub struct ArchiveWriter<F: ArchiveFs> {
    fs: F,
    config: ArchiveConfig,
    committed: Option<u64>,
    open: BTreeMap<Partition, OpenFile<F::Sink>>,
    first: Option<u64>,
    last: Option<u64>,
    started: Option<Instant>,
    buffered_bytes: u64,
    stats: ArchiveStats,
    line: Vec<u8>,
    failed: bool,
    /// The last manifest written or found.
    manifest: Option<Manifest>,
}

impl<F: ArchiveFs> std::fmt::Debug for ArchiveWriter<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveWriter")
            .field("fs", &self.fs.describe())
            .field("config", &self.config)
            .field("committed", &self.committed)
            .field("stats", &self.stats)
            .finish()
    }
}

impl<F: ArchiveFs> ArchiveWriter<F> {
    /// Opens the writer `config.writer_id` on `fs` and recovers from a
    /// previous crash of the same writer: finishes a commit whose manifest
    /// was written, deletes in-progress files of an unfinished one, and
    /// learns the committed position ([`ArchiveWriter::committed_position`]):
    /// resume reading the relay after it.
    pub fn open(fs: F, config: ArchiveConfig) -> Result<Self, ArchiveError> {
        layout::validate_writer_id(&config.writer_id)?;
        if config.roll_bytes == 0 || config.flush_bytes == 0 {
            return Err(ArchiveError::Config(
                "roll and flush sizes must be positive".into(),
            ));
        }
        let mut w = ArchiveWriter {
            fs,
            config,
            committed: None,
            open: BTreeMap::new(),
            first: None,
            last: None,
            started: None,
            buffered_bytes: 0,
            stats: ArchiveStats::default(),
            line: Vec::with_capacity(1024),
            failed: false,
            manifest: None,
        };
        w.recover()?;
        Ok(w)
    }

    fn manifest_path(&self) -> String {
        format!("{MANIFEST_DIR}/{}/{MANIFEST_FILE}", self.config.writer_id)
    }

    fn recover(&mut self) -> Result<(), ArchiveError> {
        let path = self.manifest_path();
        if self.fs.exists(&path)? {
            let bytes = self.fs.read(&path)?;
            let manifest: Manifest = serde_json::from_slice(&bytes)
                .map_err(|e| ArchiveError::Corrupt(format!("manifest {path}: {e}")))?;
            if manifest.writer != self.config.writer_id {
                return Err(ArchiveError::Corrupt(format!(
                    "manifest {path} belongs to writer {:?}",
                    manifest.writer
                )));
            }
            self.stats.recovered_files += self.finish_renames(&manifest)?;
            self.committed = Some(manifest.last);
            self.manifest = Some(manifest);
        }
        self.fs.delete(&format!("{path}.tmp"))?;
        let tmp_dir = format!("{TMP_DIR}/{}", self.config.writer_id);
        self.stats.discarded_tmp_files += self.fs.list_files(&tmp_dir)?.len() as u64;
        self.fs.delete(&tmp_dir)
    }

    /// Renames every in-progress file of `manifest` that is still there;
    /// returns how many it renamed.
    fn finish_renames(&mut self, manifest: &Manifest) -> Result<u64, ArchiveError> {
        let mut renamed = 0;
        for entry in &manifest.files {
            if !self.fs.exists(&entry.tmp)? {
                if !self.fs.exists(&entry.final_path)? {
                    return Err(ArchiveError::Corrupt(format!(
                        "committed file {} is missing (and so is {})",
                        entry.final_path, entry.tmp
                    )));
                }
                continue;
            }
            match self.fs.rename_no_replace(&entry.tmp, &entry.final_path)? {
                Renamed::Done => renamed += 1,
                Renamed::TargetExists => {
                    self.stats.renames_already_done += 1;
                    self.fs.delete(&entry.tmp)?;
                }
            }
        }
        Ok(renamed)
    }

    /// The highest relay position covered by completed files (from this
    /// session's commits or found on open).
    pub fn committed_position(&self) -> Option<u64> {
        self.committed
    }

    /// The checkpoint recorded by the last commit (found on open or written
    /// since by [`ArchiveWriter::commit_with`]).
    pub fn committed_checkpoint(&self) -> Option<&str> {
        self.manifest.as_ref()?.checkpoint.as_deref()
    }

    /// Counters.
    pub fn stats(&self) -> &ArchiveStats {
        &self.stats
    }

    /// The configuration.
    pub fn config(&self) -> &ArchiveConfig {
        &self.config
    }

    /// Where the archive is.
    pub fn describe(&self) -> String {
        self.fs.describe()
    }

    fn check_usable(&self) -> Result<(), ArchiveError> {
        if self.failed {
            return Err(ArchiveError::Failed);
        }
        Ok(())
    }

    /// Buffers `spans`, which the caller may acknowledge up to relay
    /// position `position` once they are committed. Positions must rise
    /// from call to call; a batch at or below the committed position is a
    /// replay and is skipped (and counted).
    ///
    /// A span goes to the partition of its `timestamp` (UTC hour); a span
    /// without one goes to the hour it arrives in.
    pub fn append(&mut self, position: u64, spans: &[Span]) -> Result<Appended, ArchiveError> {
        self.check_usable()?;
        if self.committed.is_some_and(|c| position <= c) {
            self.stats.spans_replayed += spans.len() as u64;
            return Ok(Appended::AlreadyArchived);
        }
        if self.last.is_some_and(|l| position <= l) {
            return Err(ArchiveError::PositionNotRising {
                position,
                last: self.last.unwrap_or_default(),
            });
        }
        let first = *self.first.get_or_insert(position);
        self.last = Some(position);
        self.started.get_or_insert_with(Instant::now);
        let result = self.encode_all(first, spans);
        if result.is_err() {
            self.failed = true;
        }
        result.map(|()| Appended::Buffered)
    }

    fn encode_all(&mut self, first: u64, spans: &[Span]) -> Result<(), ArchiveError> {
        for span in spans {
            let mut partition = Partition::of_micros(span.timestamp.unwrap_or_else(now_micros));
            if !self.open.contains_key(&partition)
                && self.open.len() >= self.config.max_open_partitions
            {
                partition = Partition::of_micros(now_micros());
                self.stats.spans_repartitioned += 1;
            }
            self.line.clear();
            serde_json::to_writer(&mut self.line, span)
                .map_err(|e| ArchiveError::Io(format!("cannot encode span: {e}")))?;
            self.line.push(b'\n');
            if !self.open.contains_key(&partition) {
                let tmp = layout::tmp_file_path(
                    &self.config.writer_id,
                    first,
                    partition,
                    self.config.compression,
                );
                let sink = self.fs.create(&tmp)?;
                let encoder = Encoder::new(self.config.compression)?;
                self.open.insert(
                    partition,
                    OpenFile {
                        tmp,
                        sink,
                        encoder,
                        spans: 0,
                    },
                );
            }
            let Some(file) = self.open.get_mut(&partition) else {
                unreachable!("inserted above")
            };
            file.encoder.write(&self.line)?;
            file.spans += 1;
            if file.encoder.pending() >= self.config.flush_bytes {
                let out = file.encoder.take();
                file.sink.write_all(&out)?;
                self.stats.bytes_written += out.len() as u64;
            }
            self.buffered_bytes += self.line.len() as u64;
            self.stats.bytes_uncompressed += self.line.len() as u64;
            self.stats.spans_appended += 1;
        }
        Ok(())
    }

    /// Whether the buffered spans reached the roll size or age: time to
    /// [`ArchiveWriter::commit`].
    pub fn roll_due(&self) -> bool {
        self.first.is_some()
            && (self.buffered_bytes >= self.config.roll_bytes
                || self.open.len() >= self.config.max_open_partitions
                || self
                    .started
                    .is_some_and(|t| t.elapsed() >= self.config.roll_interval))
    }

    /// Closes every in-progress file, makes it durable, records the commit
    /// in the manifest and renames the files into their partitions. When it
    /// returns `Ok`, every span appended so far is in a completed file and
    /// the token's position may be acknowledged. On `Err` the writer is
    /// unusable: drop it and [`ArchiveWriter::open`] again, which finishes
    /// or discards the commit.
    pub fn commit(&mut self) -> Result<CommitToken, ArchiveError> {
        self.commit_inner(None)
    }

    /// [`ArchiveWriter::commit`], recording `checkpoint` in the manifest so
    /// the files and the checkpoint become durable in one atomic step
    /// ([`ArchiveWriter::committed_checkpoint`] returns it after a crash).
    /// With nothing buffered, the last manifest is rewritten with the new
    /// checkpoint (its files are already in place), so the checkpoint still
    /// advances.
    pub fn commit_with(&mut self, checkpoint: &str) -> Result<CommitToken, ArchiveError> {
        self.commit_inner(Some(checkpoint.to_string()))
    }

    fn commit_inner(&mut self, checkpoint: Option<String>) -> Result<CommitToken, ArchiveError> {
        self.check_usable()?;
        let (Some(first), Some(last)) = (self.first, self.last) else {
            let mut result = Ok(());
            if let (Some(c), Some(m)) = (checkpoint, self.manifest.as_mut()) {
                m.checkpoint = Some(c);
                let m = m.clone();
                result = self.write_manifest(&m);
            }
            if result.is_err() {
                self.failed = true;
            }
            return result.map(|()| CommitToken {
                position: self.committed,
                files: Vec::new(),
                spans: 0,
            });
        };
        let result = self.commit_range(first, last, checkpoint);
        if result.is_err() {
            self.failed = true;
        }
        result
    }

    fn write_manifest(&self, manifest: &Manifest) -> Result<(), ArchiveError> {
        let json = serde_json::to_vec(manifest)
            .map_err(|e| ArchiveError::Io(format!("cannot encode manifest: {e}")))?;
        self.fs.write_atomic(&self.manifest_path(), &json)
    }

    fn commit_range(
        &mut self,
        first: u64,
        last: u64,
        checkpoint: Option<String>,
    ) -> Result<CommitToken, ArchiveError> {
        let mut entries = Vec::with_capacity(self.open.len());
        let mut spans = 0;
        for (partition, file) in std::mem::take(&mut self.open) {
            let OpenFile {
                tmp,
                mut sink,
                encoder,
                spans: n,
            } = file;
            let tail = encoder.finish()?;
            sink.write_all(&tail)?;
            sink.finish()?;
            self.stats.bytes_written += tail.len() as u64;
            let name = layout::final_file_name(
                &self.config.writer_id,
                first,
                last,
                self.config.compression,
            );
            entries.push(ManifestEntry {
                tmp,
                final_path: format!("{}/{name}", partition.dir()),
                spans: n,
            });
            spans += n;
        }
        let manifest = Manifest {
            writer: self.config.writer_id.clone(),
            first,
            last,
            spans,
            files: entries,
            checkpoint,
        };
        // The commit point: from here on the commit completes, now or on
        // the next open.
        self.write_manifest(&manifest)?;
        self.finish_renames(&manifest)?;
        self.fs
            .delete(&format!("{TMP_DIR}/{}/{first:020}", self.config.writer_id))?;

        self.committed = Some(last);
        self.first = None;
        self.last = None;
        self.started = None;
        self.buffered_bytes = 0;
        self.stats.commits += 1;
        self.stats.files_committed += manifest.files.len() as u64;
        self.stats.spans_committed += spans;
        let files = manifest
            .files
            .iter()
            .map(|e| e.final_path.clone())
            .collect();
        self.manifest = Some(manifest);
        Ok(CommitToken {
            position: Some(last),
            files,
            spans,
        })
    }
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::fs::LocalFs;

    fn span(i: u64, ts: u64) -> Span {
        Span {
            trace_id: format!("{:016x}", i / 4 + 1),
            id: format!("{:016x}", i + 1),
            name: Some("read".into()),
            timestamp: Some(ts),
            duration: Some(10 + i),
            ..Span::default()
        }
    }

    fn writer(dir: &std::path::Path) -> ArchiveWriter<LocalFs> {
        ArchiveWriter::open(LocalFs::new(dir).unwrap(), ArchiveConfig::new("w1")).unwrap()
    }

    #[test]
    fn positions_must_rise_and_replays_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(dir.path());
        assert_eq!(w.append(5, &[span(0, 1)]).unwrap(), Appended::Buffered);
        assert!(matches!(
            w.append(5, &[span(1, 1)]),
            Err(ArchiveError::PositionNotRising {
                position: 5,
                last: 5
            })
        ));
        let token = w.commit().unwrap();
        assert_eq!(token.position, Some(5));
        assert_eq!(token.spans, 1);
        assert_eq!(
            w.append(5, &[span(1, 1)]).unwrap(),
            Appended::AlreadyArchived
        );
        assert_eq!(w.stats().spans_replayed, 1);
        // An empty commit changes nothing.
        assert_eq!(w.commit().unwrap().files.len(), 0);
    }

    #[test]
    fn spans_go_to_their_hour() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(dir.path());
        let hour = 3_600_000_000;
        w.append(1, &[span(0, 10 * hour + 5), span(1, 11 * hour)])
            .unwrap();
        let token = w.commit().unwrap();
        assert_eq!(
            token.files,
            vec![
                "dt=1970-01-01/hour=10/w1-00000000000000000001-00000000000000000001.ndjson",
                "dt=1970-01-01/hour=11/w1-00000000000000000001-00000000000000000001.ndjson",
            ]
        );
    }

    #[test]
    fn open_partitions_are_capped_and_the_rest_counted() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ArchiveConfig::new("w1");
        config.max_open_partitions = 3;
        let mut w = ArchiveWriter::open(LocalFs::new(dir.path()).unwrap(), config).unwrap();
        let hour = 3_600_000_000;
        // Ten spans, each in another hour of 1970 (none is the arrival hour).
        let spans: Vec<Span> = (0..10).map(|i| span(i, i * 1000 * hour)).collect();
        w.append(1, &spans).unwrap();
        assert!(w.open.len() <= 4, "three hours and the arrival hour");
        assert_eq!(w.stats().spans_repartitioned, 7);
        assert!(w.roll_due(), "a commit is due at the cap");
        let token = w.commit().unwrap();
        assert_eq!(token.spans, 10, "every span archived");
        assert_eq!(token.files.len(), 4);
    }

    #[test]
    fn roll_is_due_by_size_and_age() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ArchiveConfig::new("w1");
        config.roll_bytes = 200;
        config.roll_interval = Duration::from_millis(50);
        let mut w = ArchiveWriter::open(LocalFs::new(dir.path()).unwrap(), config).unwrap();
        assert!(!w.roll_due());
        w.append(1, &[span(0, 1)]).unwrap();
        assert!(!w.roll_due());
        std::thread::sleep(Duration::from_millis(60));
        assert!(w.roll_due());
        w.commit().unwrap();
        assert!(!w.roll_due());
        w.append(2, &[span(1, 1), span(2, 1), span(3, 1)]).unwrap();
        assert!(w.roll_due(), "three spans exceed 200 bytes");
    }

    #[test]
    fn bad_config_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let fs = LocalFs::new(dir.path()).unwrap();
        assert!(ArchiveWriter::open(fs.clone(), ArchiveConfig::new("_x")).is_err());
        let mut c = ArchiveConfig::new("ok");
        c.roll_bytes = 0;
        assert!(ArchiveWriter::open(fs, c).is_err());
    }

    #[test]
    fn corrupt_manifest_is_an_error_not_a_silent_reset() {
        let dir = tempfile::tempdir().unwrap();
        let fs = LocalFs::new(dir.path()).unwrap();
        fs.write_atomic("_manifests/w1/current.json", b"{nope")
            .unwrap();
        let err = ArchiveWriter::open(fs, ArchiveConfig::new("w1")).unwrap_err();
        assert!(matches!(err, ArchiveError::Corrupt(_)), "{err}");
    }
}

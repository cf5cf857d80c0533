//! The span archive (docs/ARCHIVE.md) as a collector sink: `send` buffers
//! spans into the archive's in-progress files, `commit` (at a checkpoint
//! barrier) completes them and records the collector's checkpoint in the
//! same manifest, so files and checkpoint become durable in one step.
//!
//! Archive positions are the sink's own span count (the collector's
//! relay positions are in the checkpoint): a batch is appended at the count
//! after its last span. Spans not yet committed are also kept in memory:
//! when an I/O error (a NameNode restart, say) fails the writer, it is
//! reopened — which discards the in-progress files — and they are appended
//! again before anything else.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::archive::{
    ArchiveConfig, ArchiveError, ArchiveFs, ArchiveLocation, ArchiveWriter, HdfsFs, LocalFs,
};
use crate::model::Span;
use crate::sink::{Sink, SinkError};

/// An archive writer on either back end.
enum Writer {
    Local(ArchiveWriter<LocalFs>),
    Hdfs(ArchiveWriter<HdfsFs>),
}

macro_rules! each {
    ($w:expr, $v:ident => $e:expr) => {
        match $w {
            Writer::Local($v) => $e,
            Writer::Hdfs($v) => $e,
        }
    };
}

fn open<F: ArchiveFs>(fs: F, config: &ArchiveConfig) -> Result<ArchiveWriter<F>, ArchiveError> {
    ArchiveWriter::open(fs, config.clone())
}

impl Writer {
    fn open(location: &ArchiveLocation, config: &ArchiveConfig) -> Result<Writer, ArchiveError> {
        Ok(match location {
            ArchiveLocation::Local(dir) => Writer::Local(open(LocalFs::new(dir)?, config)?),
            ArchiveLocation::Hdfs(h) => Writer::Hdfs(open(HdfsFs::connect(h.clone())?, config)?),
        })
    }
}

/// Writes spans into an archive, committing at checkpoint barriers.
pub struct ArchiveSink {
    location: ArchiveLocation,
    config: ArchiveConfig,
    writer: Option<Writer>,
    /// Spans appended since the last commit, to append again after a reopen.
    uncommitted: Vec<Span>,
    /// Archive position of the last span appended.
    position: u64,
    roll_wanted: Arc<AtomicBool>,
}

impl ArchiveSink {
    /// Opens the archive (recovering from a crash of the same writer id).
    pub fn open(location: ArchiveLocation, config: ArchiveConfig) -> Result<Self, ArchiveError> {
        let writer = Writer::open(&location, &config)?;
        let position = each!(&writer, w => w.committed_position()).unwrap_or(0);
        Ok(ArchiveSink {
            location,
            config,
            writer: Some(writer),
            uncommitted: Vec::new(),
            position,
            roll_wanted: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The collector checkpoint committed with the archive's last commit.
    pub fn committed_checkpoint(&self) -> Option<String> {
        let w = self.writer.as_ref()?;
        each!(w, w => w.committed_checkpoint().map(str::to_string))
    }

    /// Set once the buffered spans reached the roll size: the collector
    /// then cuts a checkpoint, whose barrier commits them.
    pub fn roll_wanted(&self) -> Arc<AtomicBool> {
        self.roll_wanted.clone()
    }

    /// Where the archive is (for logs).
    pub fn describe(&self) -> String {
        match &self.location {
            ArchiveLocation::Local(dir) => dir.display().to_string(),
            ArchiveLocation::Hdfs(h) => format!("{}{}", h.namenode_url, h.root),
        }
    }

    /// The writer, reopened (and the uncommitted spans appended again)
    /// after a failure.
    fn writer(&mut self) -> Result<&mut Writer, ArchiveError> {
        if self.writer.is_none() {
            let mut w = Writer::open(&self.location, &self.config)?;
            let committed = each!(&w, w => w.committed_position()).unwrap_or(0);
            if committed != self.position - self.uncommitted.len() as u64 {
                return Err(ArchiveError::Corrupt(format!(
                    "the archive's committed position {committed} is not this writer's {}",
                    self.position - self.uncommitted.len() as u64
                )));
            }
            if !self.uncommitted.is_empty() {
                each!(&mut w, w => w.append(self.position, &self.uncommitted))?;
            }
            tracing::info!(archive = %self.describe(), spans = self.uncommitted.len(),
                "archive reopened; uncommitted spans written again");
            self.writer = Some(w);
        }
        Ok(self.writer.as_mut().expect("opened above"))
    }

    fn failed(&mut self, e: ArchiveError) -> SinkError {
        self.writer = None;
        SinkError::Retry(e.to_string())
    }
}

impl Sink for ArchiveSink {
    fn send(&mut self, batch: &[Span]) -> Result<(), SinkError> {
        let position = self.position + batch.len() as u64;
        let result = self
            .writer()
            .and_then(|w| each!(w, w => w.append(position, batch).map(|_| w.roll_due())));
        match result {
            Ok(roll_due) => {
                self.position = position;
                self.uncommitted.extend_from_slice(batch);
                if roll_due {
                    self.roll_wanted.store(true, Ordering::Relaxed);
                }
                Ok(())
            }
            Err(e) => Err(self.failed(e)),
        }
    }

    fn commit(&mut self, checkpoint: &str) -> Result<(), SinkError> {
        match self
            .writer()
            .and_then(|w| each!(w, w => w.commit_with(checkpoint)))
        {
            Ok(_) => {
                self.uncommitted.clear();
                self.roll_wanted.store(false, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => Err(self.failed(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(i: u64) -> Span {
        Span {
            trace_id: "00000000000000aa".into(),
            id: format!("{i:016x}"),
            timestamp: Some(1_700_000_000_000_000 + i),
            ..Span::default()
        }
    }

    fn lines(dir: &std::path::Path) -> Vec<String> {
        let mut out = Vec::new();
        for e in walk(dir) {
            let name = e.to_string_lossy().to_string();
            if name.contains("/dt=") && name.ends_with(".ndjson") {
                let text = std::fs::read_to_string(&e).unwrap();
                out.extend(text.lines().map(str::to_string));
            }
        }
        out
    }

    fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
        out
    }

    #[test]
    fn commits_files_with_the_checkpoint_and_discards_what_a_crash_left_uncommitted() {
        let dir = tempfile::tempdir().unwrap();
        let loc = ArchiveLocation::Local(dir.path().to_path_buf());
        let config = ArchiveConfig::new("c1");
        let mut sink = ArchiveSink::open(loc.clone(), config.clone()).unwrap();
        assert_eq!(sink.committed_checkpoint(), None);
        sink.send(&[span(1), span(2)]).unwrap();
        sink.send(&[span(3)]).unwrap();
        sink.commit("{\"id\":1}").unwrap();
        sink.send(&[span(4)]).unwrap();
        // A crash: the last span was never committed.
        drop(sink);
        assert_eq!(lines(dir.path()).len(), 3);
        let mut sink = ArchiveSink::open(loc.clone(), config.clone()).unwrap();
        assert_eq!(sink.committed_checkpoint().as_deref(), Some("{\"id\":1}"));
        assert_eq!(sink.position, 3);
        // Nothing buffered: the checkpoint still advances.
        sink.commit("{\"id\":2}").unwrap();
        sink.send(&[span(4), span(5)]).unwrap();
        // The writer fails (as on an HDFS error) and is reopened: the
        // uncommitted spans are written again, once.
        sink.writer = None;
        sink.send(&[span(6)]).unwrap();
        sink.commit("{\"id\":3}").unwrap();
        drop(sink);
        let sink = ArchiveSink::open(loc, config).unwrap();
        assert_eq!(sink.committed_checkpoint().as_deref(), Some("{\"id\":3}"));
        let mut ids: Vec<u64> = lines(dir.path())
            .iter()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                u64::from_str_radix(v["id"].as_str().unwrap(), 16).unwrap()
            })
            .collect();
        ids.sort();
        assert_eq!(ids, vec![1, 2, 3, 4, 5, 6]);
    }
}

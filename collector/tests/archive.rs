//! The span archive in a local directory: crash safety, exactly-once
//! replay, rolling, compression, partition layout, and `analyze` agreeing
//! with statistics computed by hand.

mod archive_support;

use std::time::Duration;

use archive_support::*;
use blkkin_collector::analyze::{self, AnalyzeOptions};
use blkkin_collector::archive::{
    layout, ArchiveConfig, ArchiveFs, ArchiveLocation, ArchiveWriter, Compression, LocalFs,
};

fn config(compression: Compression) -> ArchiveConfig {
    let mut c = ArchiveConfig::new("collector-a");
    c.compression = compression;
    c.flush_bytes = 4096;
    c
}

fn open(dir: &std::path::Path, c: ArchiveConfig) -> ArchiveWriter<LocalFs> {
    ArchiveWriter::open(LocalFs::new(dir).unwrap(), c).unwrap()
}

fn visible_files(fs: &LocalFs) -> Vec<String> {
    fs.list_files("")
        .unwrap()
        .into_iter()
        .map(|f| f.path)
        .filter(|p| layout::is_visible(p))
        .collect()
}

#[test]
fn crash_mid_file_leaves_no_visible_partial_file() {
    let dir = tempfile::tempdir().unwrap();
    let spans = workload(400, 2 * 3_600_000_000, 1);
    let mut w = open(dir.path(), config(Compression::None));
    w.append(1, &spans).unwrap();
    // Bytes reached the disk (flush_bytes is small) but nothing committed.
    drop(w);
    let fs = LocalFs::new(dir.path()).unwrap();
    let all = fs.list_files("").unwrap();
    assert!(all.iter().any(|f| f.path.starts_with("_tmp/") && f.len > 0));
    assert!(visible_files(&fs).is_empty(), "{all:?}");

    let w = open(dir.path(), config(Compression::None));
    assert_eq!(w.committed_position(), None);
    assert!(w.stats().discarded_tmp_files >= 2);
    assert!(fs.list_files("").unwrap().is_empty());
}

#[test]
fn replay_after_crashes_yields_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let spans = workload(600, 3 * 3_600_000_000, 2);
    let batches = batches(&spans, 37);
    let c = config(Compression::Gzip);

    // Session 1: commits twice, then crashes with appended, uncommitted
    // batches.
    let mut w = open(dir.path(), c.clone());
    let acked = feed(&mut w, &batches, 0, 4, Stop::CrashAfter(10)).unwrap();
    assert_eq!(acked, 8);
    drop(w);

    // Session 2: resumes from the acknowledged position, commits, then
    // crashes before acknowledging that commit.
    let mut w = open(dir.path(), c.clone());
    assert_eq!(w.committed_position(), Some(8));
    let acked2 = feed(&mut w, &batches, acked, 4, Stop::CrashBeforeAck(6)).unwrap();
    assert_eq!(acked2, 12, "the last commit was not acknowledged");
    let committed = w.committed_position().unwrap();
    assert_eq!(committed, 14);
    drop(w);

    // Session 3: the relay replays from 12; 13 and 14 are skipped.
    let mut w = open(dir.path(), c.clone());
    assert_eq!(w.committed_position(), Some(14));
    let last = feed(&mut w, &batches, acked2, 4, Stop::Completes).unwrap();
    assert_eq!(last, batches.len() as u64);
    assert_eq!(
        w.stats().spans_replayed,
        (batches[12].len() + batches[13].len()) as u64
    );
    let fs = LocalFs::new(dir.path()).unwrap();
    assert_exactly_once(&spans, &read_back(&fs));
    assert!(fs.list_files("_tmp").unwrap().is_empty());
}

#[test]
fn crash_between_renames_is_finished_on_open() {
    let dir = tempfile::tempdir().unwrap();
    // Spread over several hours so a commit renames several files.
    let spans = workload(300, 4 * 3_600_000_000, 3);
    let batches = batches(&spans, 50);
    let c = config(Compression::Zstd);
    // The second rename of the first commit fails: one file renamed, the
    // others still in _tmp, the manifest written.
    let fs = FailingFs::new(LocalFs::new(dir.path()).unwrap(), 2);
    let mut w = ArchiveWriter::open(fs, c.clone()).unwrap();
    let (acked, err) = feed(&mut w, &batches, 0, batches.len(), Stop::Completes).unwrap_err();
    assert_eq!(acked, 0);
    assert!(err.to_string().contains("injected crash"), "{err}");
    assert!(w.append(99, &[]).is_err(), "a failed writer refuses work");
    drop(w);

    let local = LocalFs::new(dir.path()).unwrap();
    let partial = read_back(&local);
    assert!(!partial.is_empty() && partial.len() < spans.len());

    let mut w = open(dir.path(), c);
    assert!(w.stats().recovered_files >= 1);
    assert_eq!(w.committed_position(), Some(batches.len() as u64));
    // The relay replays everything (nothing was acknowledged): all skipped.
    feed(&mut w, &batches, 0, 3, Stop::Completes).unwrap();
    assert_eq!(w.stats().spans_replayed, spans.len() as u64);
    assert_exactly_once(&spans, &read_back(&local));
}

#[test]
fn files_roll_by_size_and_time() {
    let dir = tempfile::tempdir().unwrap();
    let spans = workload(500, 1_000_000, 4);
    let mut c = config(Compression::None);
    c.roll_bytes = 64 * 1024;
    c.roll_interval = Duration::from_secs(3600);
    let mut w = open(dir.path(), c.clone());
    let mut commits = 0;
    for (i, batch) in batches(&spans, 20).iter().enumerate() {
        w.append(i as u64 + 1, batch).unwrap();
        if w.roll_due() {
            let token = w.commit().unwrap();
            assert_eq!(token.position, Some(i as u64 + 1));
            commits += 1;
        }
    }
    w.commit().unwrap();
    let fs = LocalFs::new(dir.path()).unwrap();
    let files = visible_files(&fs);
    let bytes: u64 = fs.list_files("").unwrap().iter().map(|f| f.len).sum();
    assert!(
        commits >= (bytes / (64 * 1024)) as usize - 1,
        "{commits} commits for {bytes} bytes"
    );
    assert!(files.len() > commits, "{files:?}");
    for f in fs.list_files("").unwrap() {
        // A file holds what one roll saw, plus at most one batch.
        assert!(f.len < 64 * 1024 + 20 * 1024, "{f:?}");
    }
    assert_exactly_once(&spans, &read_back(&fs));

    // Time: a tiny interval rolls on every check.
    c.roll_interval = Duration::from_millis(1);
    c.writer_id = "collector-b".into();
    let mut w = open(dir.path(), c);
    w.append(1, &spans[..1]).unwrap();
    std::thread::sleep(Duration::from_millis(5));
    assert!(w.roll_due());
}

#[test]
fn gzip_and_zstd_round_trip() {
    for (c, ext) in [
        (Compression::None, ".ndjson"),
        (Compression::Gzip, ".ndjson.gz"),
        (Compression::Zstd, ".ndjson.zst"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let spans = workload(300, 2 * 3_600_000_000, 5);
        let mut w = open(dir.path(), config(c));
        feed(&mut w, &batches(&spans, 64), 0, 2, Stop::Completes).unwrap();
        let fs = LocalFs::new(dir.path()).unwrap();
        let files = visible_files(&fs);
        assert!(files.iter().all(|f| f.ends_with(ext)), "{c:?}: {files:?}");
        assert_exactly_once(&spans, &read_back(&fs));
        if c != Compression::None {
            // Really compressed: the raw bytes are not JSON.
            assert_ne!(fs.read(&files[0]).unwrap()[0], b'{');
        }
    }
}

#[test]
fn partition_paths_and_names() {
    let dir = tempfile::tempdir().unwrap();
    // T0 is 2024-02-28T22:00Z: three hours reach 2024-02-29T00.
    let spans = workload(200, 3 * 3_600_000_000, 6);
    let mut w = open(dir.path(), config(Compression::None));
    w.append(7, &spans).unwrap();
    let token = w.commit().unwrap();
    let mut dirs: Vec<String> = token
        .files
        .iter()
        .map(|f| f.rsplit_once('/').unwrap().0.to_string())
        .collect();
    dirs.sort();
    assert_eq!(
        dirs,
        [
            "dt=2024-02-28/hour=22",
            "dt=2024-02-28/hour=23",
            "dt=2024-02-29/hour=00",
            "dt=2024-02-29/hour=01",
        ][..dirs.len()]
    );
    assert!(dirs.len() >= 3);
    for f in &token.files {
        assert!(
            f.ends_with("/collector-a-00000000000000000007-00000000000000000007.ndjson"),
            "{f}"
        );
    }
    assert_exactly_once(&spans, &read_back(&LocalFs::new(dir.path()).unwrap()));
}

#[test]
fn analyze_agrees_with_hand_computed_statistics() {
    let dir = tempfile::tempdir().unwrap();
    let spans = workload(1500, 3 * 3_600_000_000, 7);
    let mut w = open(dir.path(), config(Compression::Zstd));
    feed(&mut w, &batches(&spans, 100), 0, 5, Stop::Completes).unwrap();
    // A bad line in a visible file is counted, not fatal; a hidden file is
    // never read.
    let fs = LocalFs::new(dir.path()).unwrap();
    write_file(&fs, "_tmp/junk/x.ndjson", b"garbage\n");

    let mut opts = AnalyzeOptions {
        slowest: 5,
        ..AnalyzeOptions::new(ArchiveLocation::Local(dir.path().to_path_buf()))
    };
    let report = analyze::run(&opts).unwrap();
    assert_eq!(report.slowest.len(), 5);
    assert_report_matches(&report, &spans, None, None);

    // One hour in the middle: files of other hours are pruned.
    let (from, to) = (T0 + 3_600_000_000, T0 + 2 * 3_600_000_000);
    opts.from_micros = Some(from);
    opts.to_micros = Some(to);
    let report = analyze::run(&opts).unwrap();
    assert!(report.files_pruned > 0);
    assert_report_matches(&report, &spans, Some(from), Some(to));

    write_file(&fs, "dt=2024-02-28/hour=22/bad.ndjson", b"{\"traceId\":\n");
    opts.from_micros = None;
    opts.to_micros = None;
    let report = analyze::run(&opts).unwrap();
    assert_eq!(report.bad_lines, 1);
    assert_eq!(report.spans, spans.len() as u64);

    let missing = AnalyzeOptions {
        location: ArchiveLocation::Local(dir.path().join("nope")),
        ..opts
    };
    assert!(analyze::run(&missing).is_err());
}

#[test]
fn analyze_filters_by_service_and_span_name() {
    let dir = tempfile::tempdir().unwrap();
    let mut spans = workload(300, 3_600_000_000, 5);
    // Names that would break naively quoted SQL.
    for s in spans.iter_mut().step_by(7) {
        if let Some(e) = s.local_endpoint.as_mut() {
            e.service_name = Some("o'sd\\x".to_string());
        }
    }
    let mut w = open(dir.path(), config(Compression::None));
    feed(&mut w, &batches(&spans, 100), 0, 5, Stop::Completes).unwrap();
    let service_of = |s: &blkkin_collector::model::Span| {
        s.local_endpoint
            .as_ref()
            .and_then(|e| e.service_name.clone())
            .unwrap()
    };

    for (service, name) in [
        (Some("o'sd\\x"), None),
        (Some("osd"), Some("journal")),
        (None, Some("read")),
    ] {
        let opts = AnalyzeOptions {
            service: service.map(str::to_string),
            span_name: name.map(str::to_string),
            slowest: 3,
            ..AnalyzeOptions::new(ArchiveLocation::Local(dir.path().to_path_buf()))
        };
        let report = analyze::run(&opts).unwrap();
        let matching: Vec<_> = spans
            .iter()
            .filter(|s| service.is_none_or(|x| service_of(s) == x))
            .filter(|s| name.is_none_or(|x| s.name.as_deref() == Some(x)))
            .cloned()
            .collect();
        assert!(!matching.is_empty());
        assert_eq!(report.spans, matching.len() as u64, "{service:?} {name:?}");
        let want = expected_stats(&matching, None, None);
        assert_eq!(report.operations.len(), want.len());
        for op in &report.operations {
            assert_eq!(op.spans, want[&(op.service.clone(), op.name.clone())].count);
        }
        // The slowest traces are the slowest of the traces with a matching
        // span, measured by their root span.
        let traces: std::collections::HashSet<&str> =
            matching.iter().map(|s| s.trace_id.as_str()).collect();
        let in_traces: Vec<_> = spans
            .iter()
            .filter(|s| traces.contains(s.trace_id.as_str()))
            .cloned()
            .collect();
        let got: Vec<(String, i64)> = report
            .slowest
            .iter()
            .map(|t| (t.trace_id.clone(), t.duration_us))
            .collect();
        assert_eq!(got, expected_slowest(&in_traces, 3));
    }
}

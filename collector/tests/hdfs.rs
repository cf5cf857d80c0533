//! The span archive on a real HDFS (scripts/hdfs.sh: Hadoop's
//! MiniDFSCluster, one NameNode and one DataNode on loopback), started once
//! for this test binary. Fails when HDFS cannot start, unless
//! BLKKIN_SKIP_HDFS=1 is set.

mod archive_support;
mod hdfs_support;

use archive_support::*;
use blkkin_collector::analyze::{self, AnalyzeOptions};
use blkkin_collector::archive::{
    ArchiveConfig, ArchiveLocation, ArchiveWriter, Compression, HdfsConfig, HdfsFs,
};
use hdfs_support::{hdfs_fs, skip_hdfs, Hdfs};

/// Opens the writer, retrying while a restarted NameNode is still in safe
/// mode or not yet answering.
fn open_writer(h: &Hdfs, root: &str, c: &ArchiveConfig) -> ArchiveWriter<HdfsFs> {
    let mut last = None;
    for _ in 0..60 {
        match ArchiveWriter::open(hdfs_fs(h, root), c.clone()) {
            Ok(w) => return w,
            Err(e) => last = Some(e),
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    panic!("cannot open the writer: {last:?}");
}

#[test]
fn archive_on_real_hdfs() {
    if skip_hdfs("the real-HDFS archive test") {
        return;
    }
    let started = std::time::Instant::now();
    let mut hdfs = Hdfs::start();
    eprintln!("HDFS up at {} in {:?}", hdfs.url(), started.elapsed());

    let root = "/blkkin/spans";
    let spans = workload(3000, 3 * 3_600_000_000, 11);
    let batches = batches(&spans, 100);
    let mut c = ArchiveConfig::new("collector-h");
    c.compression = Compression::Gzip;

    // Session 1: two commits, then the writer dies mid-stream.
    let mut w = open_writer(&hdfs, root, &c);
    let acked = feed(&mut w, &batches, 0, 5, Stop::CrashAfter(13)).unwrap();
    assert_eq!(acked, 10);
    drop(w);

    // Session 2: resumes; the NameNode restarts in the middle. Whatever
    // fails is retried the way a collector would: reopen the writer and
    // resume from the last acknowledged position.
    let mut w = open_writer(&hdfs, root, &c);
    assert_eq!(w.committed_position(), Some(10));
    let acked = feed(&mut w, &batches, acked, 5, Stop::CrashBeforeAck(7)).unwrap();
    assert_eq!(acked, 15);
    hdfs.restart_namenode();
    let mut acked = acked;
    let mut reopened = 0;
    loop {
        let mut w = open_writer(&hdfs, root, &c);
        match feed(&mut w, &batches, acked, 5, Stop::Completes) {
            Ok(last) => {
                acked = last;
                break;
            }
            Err((a, e)) => {
                eprintln!("writer failed after the NameNode restart ({e}); reopening");
                acked = a;
                reopened += 1;
                assert!(reopened < 10, "the writer keeps failing: {e}");
            }
        }
    }
    assert_eq!(acked, batches.len() as u64);

    // Read back through hdfs-native.
    let fs = hdfs_fs(&hdfs, root);
    let got = read_back(&fs);
    assert_exactly_once(&spans, &got);

    // Read back through WebHDFS: LISTSTATUS, then OPEN (redirected to the
    // DataNode).
    let files = hdfs.webhdfs_archive(root);
    let mut via_http = Vec::new();
    for (rel, text) in &files {
        if let Some(text) = text {
            via_http.extend(parse_ndjson(rel, text));
        }
    }
    let names: Vec<&String> = files.iter().map(|(f, _)| f).collect();
    let visible = files.iter().filter(|(_, t)| t.is_some()).count();
    assert!(visible >= 3, "{names:?}");
    assert_exactly_once(&spans, &via_http);
    assert!(
        names.iter().all(|f| !f.starts_with("_tmp/")),
        "no in-progress file is left: {names:?}"
    );

    // analyze straight from HDFS agrees with the numbers computed here.
    let t = std::time::Instant::now();
    let report = analyze::run(&AnalyzeOptions::new(ArchiveLocation::Hdfs(HdfsConfig {
        namenode_url: hdfs.url(),
        root: root.into(),
        user: None,
    })))
    .unwrap();
    eprintln!(
        "analyze over HDFS: {} spans in {:?}",
        report.spans,
        t.elapsed()
    );
    assert_report_matches(&report, &spans, None, None);
    assert_eq!(report.files, visible as u64);
    eprintln!("real-HDFS archive test done in {:?}", started.elapsed());
}

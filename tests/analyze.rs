//! `blkkin analyze` end to end: an archive written by the collector's
//! archive writer from known spans, the command's JSON and CSV output
//! checked against statistics computed here independently of DataFusion;
//! bad arguments; and the same over a real HDFS (scripts/hdfs.sh; fails
//! when HDFS cannot start unless BLKKIN_SKIP_HDFS=1).

#[path = "../collector/tests/archive_support/mod.rs"]
mod archive_support;
#[path = "../collector/tests/hdfs_support/mod.rs"]
mod hdfs_support;

use std::process::{Command, Output};

use archive_support::*;
use blkkin_collector::archive::{
    ArchiveConfig, ArchiveFs, ArchiveWriter, Compression, HdfsConfig, HdfsFs, LocalFs,
};
use blkkin_collector::model::Span;
use hdfs_support::{skip_hdfs, Hdfs};
use serde_json::Value;

fn blkkin(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_blkkin"))
        .arg("analyze")
        .args(args)
        .env_remove("HADOOP_USER_NAME")
        .output()
        .expect("run blkkin")
}

fn stdout_of(out: &Output) -> String {
    assert!(
        out.status.success(),
        "blkkin analyze failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// Fails with `code` and a message on stderr that contains `needle`.
fn assert_fails(out: &Output, code: i32, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    assert!(err.contains(needle), "{needle:?} not in: {err}");
}

fn write_archive<F: ArchiveFs>(fs: F, spans: &[Span], compression: Compression) {
    let mut c = ArchiveConfig::new("collector-a");
    c.compression = compression;
    let mut w = ArchiveWriter::open(fs, c).unwrap();
    let acked = feed(&mut w, &batches(spans, 100), 0, 4, Stop::Completes).unwrap();
    assert_eq!(acked, spans.len().div_ceil(100) as u64);
}

#[test]
fn json_and_csv_agree_with_statistics_computed_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    let spans = workload(1200, 3 * 3_600_000_000, 21);
    write_archive(LocalFs::new(dir.path()).unwrap(), &spans, Compression::Gzip);
    let archive = dir.path().to_str().unwrap();

    let json = stdout_of(&blkkin(&[archive, "--format", "json", "--slowest", "7"]));
    check_analyze_json(&json, &spans, None, None, 7, 0.0);

    // The second hour, given in RFC 3339 with an offset: other hours'
    // files are not read.
    let (from, to) = (T0 + 3_600_000_000, T0 + 2 * 3_600_000_000);
    let out = blkkin(&[
        archive,
        "--format",
        "json",
        "--from",
        "2024-02-28T23:00:00Z",
        "--to",
        "2024-02-29T01:00:00+01:00",
    ]);
    let json = stdout_of(&out);
    check_analyze_json(&json, &spans, Some(from), Some(to), 10, 0.0);
    let v: Value = serde_json::from_str(&json).unwrap();
    assert!(v["files_pruned"].as_u64().unwrap() > 0, "{v}");

    // CSV: operations in milliseconds (3 decimals), a blank line, then the
    // slowest traces.
    let csv = stdout_of(&blkkin(&[archive, "--format", "csv", "--slowest", "3"]));
    let (ops, slow) = csv.split_once("\n\n").expect("two CSV tables");
    let mut lines = ops.lines();
    assert_eq!(
        lines.next().unwrap(),
        "service,span,count,errors,mean_ms,p50_ms,p95_ms,p99_ms,max_ms"
    );
    let want = expected_stats(&spans, None, None);
    let mut rows = 0;
    for line in lines {
        let c: Vec<&str> = line.split(',').collect();
        assert_eq!(c.len(), 9, "{line}");
        let e = &want[&(c[0].to_string(), c[1].to_string())];
        assert_eq!(c[2].parse::<u64>().unwrap(), e.count, "{line}");
        assert_eq!(c[3].parse::<u64>().unwrap(), e.errors, "{line}");
        let ms = |i: usize| c[i].parse::<f64>().unwrap();
        assert!(close(ms(4), e.mean() / 1000.0, 0.0005), "{line}");
        let spread = 3e-6 * e.durations.iter().copied().fold(0.0, f64::max) / 1000.0;
        for (i, p) in [(5, 0.5), (6, 0.95), (7, 0.99)] {
            let want = e.percentile(p) / 1000.0;
            assert!(close(ms(i), want, 0.0005 + spread), "{line}: want {want}");
        }
        rows += 1;
    }
    assert_eq!(rows, want.len());
    let slow: Vec<&str> = slow.lines().collect();
    assert_eq!(
        slow[0],
        "trace_id,duration_ms,spans,root_service,root_span,start_us"
    );
    let expected = expected_slowest(&spans, 3);
    assert_eq!(slow.len(), 1 + expected.len());
    for (line, (trace, duration)) in slow[1..].iter().zip(&expected) {
        let c: Vec<&str> = line.split(',').collect();
        assert_eq!(c[0], trace);
        assert!(close(
            c[1].parse().unwrap(),
            *duration as f64 / 1000.0,
            0.0005
        ));
    }

    // --service and --span select spans; the table names them.
    let json = stdout_of(&blkkin(&[
        archive,
        "--format",
        "json",
        "--service",
        "osd",
        "--span",
        "journal",
    ]));
    let journal: Vec<Span> = spans
        .iter()
        .filter(|s| s.name.as_deref() == Some("journal"))
        .filter(|s| s.local_endpoint.as_ref().unwrap().service_name.as_deref() == Some("osd"))
        .cloned()
        .collect();
    // (A range given, from 0: all spans, but no slowest-trace check here;
    // collector/tests/archive.rs checks the slowest traces of a selection.)
    check_analyze_json(&json, &journal, Some(0), None, 10, 0.0);
    let table = stdout_of(&blkkin(&[archive, "--service", "osd"]));
    assert!(
        table.contains("journal") && !table.contains("aio_read"),
        "{table}"
    );
}

#[test]
fn bad_arguments_fail_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().to_str().unwrap();
    let missing = dir.path().join("nope");
    let missing = missing.to_str().unwrap();

    assert_fails(&blkkin(&[missing]), 2, "does not exist");
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    assert_fails(&blkkin(&[file.to_str().unwrap()]), 2, "is not a directory");
    assert_fails(
        &blkkin(&[archive, "--from", "yesterday"]),
        2,
        "bad --from: \"yesterday\" is not a time",
    );
    assert_fails(
        &blkkin(&[archive, "--to", "2024-02-30T25:00Z"]),
        2,
        "bad --to",
    );
    assert_fails(
        &blkkin(&[archive, "--from", "1h", "--to", "2h"]),
        2,
        "is not before --to",
    );
    assert_fails(&blkkin(&[archive, "--format", "xml"]), 2, "unknown format");
    assert_fails(&blkkin(&[archive, "--slowest", "x"]), 2, "--slowest");
    assert_fails(&blkkin(&["hdfs:///x"]), 2, "needs a NameNode");
    assert_fails(&blkkin(&[]), 2, "Usage");

    // An empty archive, or a range without spans: exit 1, saying so.
    assert_fails(&blkkin(&[archive]), 1, "no spans in");
    let spans = workload(50, 1_000_000, 3);
    write_archive(LocalFs::new(dir.path()).unwrap(), &spans, Compression::None);
    assert_fails(
        &blkkin(&[archive, "--from", "2030-01-01"]),
        1,
        "no spans (from 2030-01-01) in",
    );
    assert_fails(
        &blkkin(&[archive, "--service", "nosuch"]),
        1,
        "no spans (service nosuch) in",
    );

    // A NameNode that is not there: refused connections, reported within
    // seconds rather than after minutes of retries.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let t = std::time::Instant::now();
    assert_fails(
        &blkkin(&[&format!("hdfs://127.0.0.1:{port}/spans")]),
        2,
        "cannot reach the NameNode",
    );
    assert!(t.elapsed().as_secs() < 60, "took {:?}", t.elapsed());
}

#[test]
fn analyze_reads_an_archive_on_real_hdfs() {
    if skip_hdfs("blkkin analyze over a real HDFS") {
        return;
    }
    let hdfs = Hdfs::start();
    let spans = workload(800, 2 * 3_600_000_000, 33);
    let root = "/blkkin/analyze";
    let fs = HdfsFs::connect(HdfsConfig {
        namenode_url: hdfs.url(),
        root: root.into(),
        user: Some("blkkin".into()),
    })
    .unwrap();
    write_archive(fs, &spans, Compression::Zstd);

    let url = format!("{}{root}", hdfs.url());
    let json = stdout_of(&blkkin(&[
        &url,
        "--hdfs-user",
        "blkkin",
        "--format",
        "json",
        "--slowest",
        "4",
    ]));
    check_analyze_json(&json, &spans, None, None, 4, 0.0);

    // A root that does not exist is an error, and analyze creates nothing.
    let missing = format!("{}/blkkin/none", hdfs.url());
    assert_fails(&blkkin(&[&missing]), 2, "does not exist");
    assert_fails(&blkkin(&[&missing]), 2, "does not exist");
}

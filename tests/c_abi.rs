//! The C ABI end to end: programs in tests/c compiled against include/ and
//! linked with -lblkin, their rings read back with `blkkin dump --json`.

mod common;

use std::collections::HashMap;
use std::process::Command;

use serde_json::Value;

fn by_span(annotations: &[Value]) -> HashMap<String, Vec<&Value>> {
    let mut m: HashMap<String, Vec<&Value>> = HashMap::new();
    for a in annotations {
        m.entry(a["id"].as_str().unwrap().to_string())
            .or_default()
            .push(a);
    }
    // Rings are per CPU and a thread may migrate: order each span by time
    // (stable, so records of one ring keep their ring order on ties).
    for v in m.values_mut() {
        v.sort_by_key(|a| a["timestamp"].as_u64());
    }
    m
}

fn values(v: &[&Value]) -> Vec<String> {
    v.iter()
        .map(|a| a["value"].to_string().trim_matches('"').to_string())
        .collect()
}

fn run_pingpong(static_link: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let libs = common::lib_dir(tmp.path());
    let exe = common::compile(tmp.path(), &libs, "pingpong.c", "pingpong", static_link);
    let rings = tmp.path().join("rings");
    let n = 25;
    let stdout = common::run_traced(&exe, &[&n.to_string()], &rings, &[]);
    let requests: Vec<Vec<&str>> = stdout.lines().map(|l| l.split(' ').collect()).collect();
    assert_eq!(requests.len(), n);

    let (annotations, summary) = common::dump_json(&rings);
    assert_eq!(summary["read"], n as u64 * 6);
    assert_eq!(summary["lost"], 0);
    assert_eq!(summary["skipped"], 0);
    let spans = by_span(&annotations);
    assert_eq!(
        spans.len(),
        n * 2,
        "one client and one server span per request"
    );
    for (i, r) in requests.iter().enumerate() {
        let (trace, client_span, server_span, client_pid, server_pid) =
            (r[0], r[1], r[2], r[3], r[4]);
        assert_eq!(trace, client_span, "root span id equals the trace id");
        let client = &spans[client_span];
        assert_eq!(values(client), ["cs", "cr"]);
        for a in client {
            assert_eq!(a["traceId"], trace);
            assert!(a.get("parentId").is_none(), "roots have no parentId");
            assert_eq!(a["name"], "client_op");
            assert_eq!(a["serviceName"], "client");
            assert_eq!(a["ipv4"], "10.0.0.1");
            assert_eq!(a["port"], 5000);
            assert_eq!(a["kind"], "event");
            assert_eq!(a["pid"].to_string(), client_pid);
        }
        let server = &spans[server_span];
        assert_eq!(
            values(server),
            [
                "sr",
                format!("obj_{i}").as_str(),
                (4096 * i).to_string().as_str(),
                "ss"
            ]
        );
        assert_eq!(server[1]["key"], "object");
        assert_eq!(server[1]["kind"], "string");
        assert_eq!(server[2]["key"], "bytes");
        assert_eq!(server[2]["kind"], "integer");
        assert!(server[2]["value"].is_i64());
        for a in server {
            assert_eq!(a["traceId"], trace);
            assert_eq!(a["parentId"], client_span);
            assert_eq!(a["name"], "server_op");
            assert_eq!(a["serviceName"], "server");
            assert_eq!(a["ipv4"], "10.0.0.2");
            assert_eq!(a["port"], 6800);
            assert_eq!(a["pid"].to_string(), server_pid);
        }
        // Timestamps are epoch µs, close to now, and causally ordered.
        let ts = |a: &Value| a["timestamp"].as_u64().unwrap();
        let now_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros() as u64;
        assert!(now_us - ts(client[0]) < 120_000_000);
        assert!(ts(client[0]) <= ts(server[0]) + 1000 && ts(server[3]) <= ts(client[1]) + 1000);
    }
}

#[test]
fn two_processes_exchange_packed_info_dynamic() {
    run_pingpong(false);
}

#[test]
fn two_processes_exchange_packed_info_static() {
    run_pingpong(true);
}

#[test]
fn ztracer_cpp_wrapper_records_spans() {
    let tmp = tempfile::tempdir().unwrap();
    let libs = common::lib_dir(tmp.path());
    let exe = common::compile(tmp.path(), &libs, "ztracer_demo.cpp", "ztdemo", false);
    let rings = tmp.path().join("rings");
    let stdout = common::run_traced(&exe, &[], &rings, &[]);
    let ids: Vec<&str> = stdout.split_whitespace().collect();
    let (trace, root, child) = (ids[0], ids[1], ids[2]);
    let (annotations, summary) = common::dump_json(&rings);
    assert_eq!(summary["read"], 5);
    let spans = by_span(&annotations);
    assert_eq!(values(&spans[root]), ["sr", "rbd_data.1", "ss"]);
    assert_eq!(values(&spans[child]), ["8192", "journaled"]);
    assert_eq!(spans[child][0]["parentId"], root);
    assert_eq!(
        spans[child][0]["serviceName"], "osd",
        "child inherits the parent's endpoint"
    );
    assert_eq!(
        spans[child][1]["serviceName"], "osd.copy",
        "the annotation's endpoint wins"
    );
    assert!(annotations.iter().all(|a| a["traceId"] == trace));
    assert!(!annotations.iter().any(|a| a["value"] == "never recorded"));
}

#[test]
fn every_function_rejects_null_and_invalid_arguments() {
    let tmp = tempfile::tempdir().unwrap();
    let libs = common::lib_dir(tmp.path());
    let exe = common::compile(tmp.path(), &libs, "nullargs.c", "nullargs", false);
    let out = Command::new(&exe)
        .env("BLKIN_SHM_DIR", tmp.path().join("rings"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.trim(), "0 failures");
    // Only the one valid record landed; the two oversized ones are counted.
    let (annotations, summary) = common::dump_json(&tmp.path().join("rings"));
    assert_eq!(annotations.len(), 1);
    assert_eq!(summary["lost"], 2);
    assert_eq!(annotations[0]["value"], "ok");
}

#[test]
fn sampling_rate_from_env_is_honoured() {
    let tmp = tempfile::tempdir().unwrap();
    let libs = common::lib_dir(tmp.path());
    let exe = common::compile(tmp.path(), &libs, "pingpong.c", "pingpong", false);
    let rings = tmp.path().join("rings");
    let stdout = common::run_traced(&exe, &["200"], &rings, &[("RATE", "0")]);
    // RATE=0 samples nothing: every root gets trace id 0, children inherit it.
    assert!(stdout.lines().all(|l| l.starts_with("0000000000000000 ")));
    let (annotations, summary) = common::dump_json(&rings);
    assert!(annotations.is_empty());
    assert_eq!(summary["lost"], 0);
}

#[test]
fn one_in_n_sampling_records_only_sampled_traces() {
    let tmp = tempfile::tempdir().unwrap();
    let libs = common::lib_dir(tmp.path());
    let exe = common::compile(tmp.path(), &libs, "pingpong.c", "pingpong", false);
    let rings = tmp.path().join("rings");
    // BLKIN_RATE wins over RATE.
    let stdout = common::run_traced(
        &exe,
        &["400"],
        &rings,
        &[("BLKIN_RATE", "4"), ("RATE", "1")],
    );
    let sampled: Vec<&str> = stdout
        .lines()
        .map(|l| &l[..16])
        .filter(|t| *t != "0000000000000000")
        .collect();
    assert!(
        (50..=160).contains(&sampled.len()),
        "{} of 400 sampled at 1 in 4",
        sampled.len()
    );
    let (annotations, _) = common::dump_json(&rings);
    assert_eq!(
        annotations.len(),
        sampled.len() * 6,
        "sampled traces are complete, others absent"
    );
    let traces: std::collections::HashSet<&str> = annotations
        .iter()
        .map(|a| a["traceId"].as_str().unwrap())
        .collect();
    assert_eq!(traces, sampled.into_iter().collect());
}

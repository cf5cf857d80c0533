//! `blkkin demo` end to end: the whole pipeline in one command — sample
//! workload (four processes, C ABI) → rings → consumer → relay → collector →
//! embedded store — with the summary read back from the store.

use std::process::Command;

#[test]
fn demo_runs_the_pipeline_and_summarises_every_trace() {
    let rings = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_blkkin"))
        .args(["demo", "--exit", "--requests", "50"])
        .args(["--relay-listen", "127.0.0.1:0", "--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(state.path())
        .env("BLKIN_SHM_DIR", rings.path())
        .env_remove("BLKIN_RATE")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("workload done: requests=50 ok=48 failed=2 slow=5"),
        "{stderr}"
    );
    // 50 traces of 7 spans: client (client), volume (server + client),
    // mapper (server + client), blocker (server + local disk_io).
    assert!(stdout.starts_with("50 traces, 350 spans\n"), "{stdout}");
    let row = |service: &str, span: &str| -> Vec<String> {
        stdout
            .lines()
            .find(|l| l.starts_with(service) && l.contains(span))
            .unwrap_or_else(|| panic!("no row {service} {span} in {stdout}"))
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    // service, name, (kind), count, errors, p50, p99
    assert_eq!(row("blocker", "disk_io (local)")[3..5], ["50", "2"]);
    assert_eq!(row("mapper", "map (server)")[3..5], ["50", "2"]);
    let reads = row("client", "read (client)");
    let writes = row("client", "write (client)");
    let n: u64 = reads[3].parse::<u64>().unwrap() + writes[3].parse::<u64>().unwrap();
    assert_eq!(n, 50);
    // The slow 10 % take ≥ 20 ms in the blocker, so its p99 does too.
    let p99: u64 = row("blocker", "disk_io (local)")[6].parse().unwrap();
    assert!(p99 >= 20_000, "{stdout}");
    assert!(
        stdout.contains("/api/v2/traces?serviceName=client"),
        "{stdout}"
    );
    // The store is on disk, where --data-dir says.
    assert!(state.path().join("spans.db").exists());
}

//! Helpers shared by the end-to-end tests: locating the built C library,
//! compiling the C/C++ programs in tests/c against include/, and reading
//! `blkkin dump --json`, starting the daemons (relay, consumer).
#![allow(dead_code)]

pub mod collector;
pub mod daemons;

#[allow(unused_imports)] // each test binary uses a different subset
pub use daemons::{bin, free_port, kill9, start_consumer, start_relay, wait_for_port, Daemon};

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// The cargo profile directory (target/debug) this test binary lives in.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_path_buf()
}

/// A directory with libblkin.so, libblkin.so.0 and libblkin.a, freshly built.
pub fn lib_dir(tmp: &Path) -> PathBuf {
    let prof = profile_dir();
    let find = |name: &str| {
        [prof.join("deps").join(name), prof.join(name)]
            .into_iter()
            .filter(|p| p.exists())
            .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
            .unwrap_or_else(|| {
                panic!("{name} not built; run the tests with `cargo test --workspace`")
            })
    };
    let dir = tmp.join("lib");
    std::fs::create_dir_all(&dir).unwrap();
    // Copies, not links: a concurrent cargo build may replace the originals.
    std::fs::copy(find("libblkin.so"), dir.join("libblkin.so")).unwrap();
    std::os::unix::fs::symlink("libblkin.so", dir.join("libblkin.so.0")).unwrap();
    std::fs::copy(find("libblkin.a"), dir.join("libblkin.a")).unwrap();
    dir
}

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Compiles tests/c/<src> into <tmp>/<out>, dynamically linked with -lblkin
/// (or statically when `static_link`).
pub fn compile(tmp: &Path, libs: &Path, src: &str, out: &str, static_link: bool) -> PathBuf {
    let src_path = root().join("tests/c").join(src);
    let compiler = if src.ends_with(".cpp") { "c++" } else { "cc" };
    let exe = tmp.join(out);
    let mut cmd = Command::new(compiler);
    cmd.args(["-Wall", "-Wextra", "-Werror", "-O1", "-g"])
        .arg("-I")
        .arg(root().join("include"))
        .arg(&src_path)
        .arg("-o")
        .arg(&exe);
    if static_link {
        cmd.arg(libs.join("libblkin.a"))
            .args(["-lpthread", "-ldl", "-lm", "-lgcc_s"]);
    } else {
        cmd.arg(format!("-L{}", libs.display()))
            .arg("-lblkin")
            .arg(format!("-Wl,-rpath,{}", libs.display()))
            // DT_RPATH, not DT_RUNPATH: cargo sets LD_LIBRARY_PATH for tests,
            // which must not pick a stale libblkin from elsewhere.
            .arg("-Wl,--disable-new-dtags");
    }
    let status = cmd.status().expect("C compiler available");
    assert!(status.success(), "compiling {src} failed");
    exe
}

/// Runs `blkkin dump --json` on a ring directory: (annotations, summary).
pub fn dump_json(ring_dir: &Path) -> (Vec<Value>, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_blkkin"))
        .args(["dump", "--json", "--dir"])
        .arg(ring_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "dump failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("every line is JSON"))
        .collect();
    let summary = lines.pop().expect("summary line")["summary"].clone();
    assert!(summary.is_object(), "last line is the summary");
    (lines, summary)
}

/// Runs a traced program with its rings in `rings`; asserts success and
/// returns its stdout.
pub fn run_traced(exe: &Path, args: &[&str], rings: &Path, env: &[(&str, &str)]) -> String {
    let out = Command::new(exe)
        .args(args)
        .env("BLKIN_SHM_DIR", rings)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} failed: {}",
        exe.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The spans of the span archive at `root` in committed files (`_tmp/` and
/// `_manifests/` skipped, as Spark and Hive do; uncompressed `.ndjson`).
#[allow(dead_code)] // not every test binary reads an archive
pub fn archived_spans(root: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if e.file_name().to_string_lossy().starts_with('_') {
                continue;
            }
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "ndjson") {
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                out.extend(
                    text.lines()
                        .map(|l| serde_json::from_str::<Value>(l).unwrap()),
                );
            }
        }
    }
    out
}

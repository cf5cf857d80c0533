//! The real Zipkin server's jar for the tests, fetched (once, into the
//! cache) by scripts/zipkin.sh — the one place that knows how.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The jar's path; fetches it from Maven Central on first use.
pub fn zipkin_jar() -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|d| d.join("scripts/zipkin.sh"))
        .find(|s| s.is_file())
        .expect("scripts/zipkin.sh above the package directory");
    let out = Command::new("bash")
        .arg(&script)
        .arg("fetch")
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} fetch failed: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let jar = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(jar.is_file(), "zipkin.sh printed no jar: {}", jar.display());
    jar
}

//! `blkkin dump` and `blkkin clean` end to end, and the C example of
//! docs/C_API.md compiled and run as written.

mod common;

use std::process::Command;

fn blkkin(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_blkkin"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn dump_of_a_missing_directory_is_empty_not_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let (annotations, summary) = common::dump_json(&tmp.path().join("nothing-here"));
    assert!(annotations.is_empty());
    assert_eq!(summary["rings"], 0);
}

#[test]
fn dump_reports_garbage_ring_files_and_keeps_going() {
    let tmp = tempfile::tempdir().unwrap();
    let libs = common::lib_dir(tmp.path());
    let exe = common::compile(tmp.path(), &libs, "pingpong.c", "pingpong", false);
    let rings = tmp.path().join("rings");
    assert!(Command::new(&exe)
        .arg("3")
        .env("BLKIN_SHM_DIR", &rings)
        .output()
        .unwrap()
        .status
        .success());
    // A file that looks like a ring by name: random bytes, and one truncated.
    let junk: Vec<u8> = (0..10_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(rings.join("1-1.cpu0.ring"), &junk).unwrap();
    std::fs::write(rings.join("2-2.cpu0.ring"), b"BLKKRING").unwrap();
    let out = blkkin(&["dump", "--json", "--dir", rings.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "unreadable rings make the exit status 1"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("1-1.cpu0.ring") && stderr.contains("2-2.cpu0.ring"),
        "{stderr}"
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let last: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(last["summary"]["read"], 18, "the good rings are still read");
    assert_eq!(last["summary"]["unreadable"], 2);
}

#[test]
fn a_fifo_named_like_a_ring_does_not_hang_dump_or_clean() {
    let tmp = tempfile::tempdir().unwrap();
    let fifo = tmp.path().join("1-1.cpu0.ring");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    for args in [["dump", "--dir"], ["clean", "--dir"]] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_blkkin"))
            .args(args)
            .arg(tmp.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let start = std::time::Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if start.elapsed() > std::time::Duration::from_secs(10) {
                child.kill().unwrap();
                panic!("blkkin {} hangs on a FIFO", args[0]);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        assert!(status.code().is_some(), "{args:?} exited by a signal");
    }
}

#[test]
fn clean_removes_only_rings_of_exited_processes() {
    let tmp = tempfile::tempdir().unwrap();
    let rings = tmp.path().join("rings");
    // This test process is a live writer (the only test here using the library).
    std::env::set_var("BLKIN_SHM_DIR", &rings);
    let ep = blkkin::Endpoint::new("live", "127.0.0.1", 1);
    blkkin::Span::root_forced("alive", &ep).event("still here");
    let ours = std::fs::read_dir(&rings).unwrap().count();
    assert!(ours >= 1);
    let libs = common::lib_dir(tmp.path());
    let exe = common::compile(tmp.path(), &libs, "pingpong.c", "pingpong", false);
    assert!(Command::new(&exe)
        .arg("2")
        .env("BLKIN_SHM_DIR", &rings)
        .output()
        .unwrap()
        .status
        .success());
    let total = std::fs::read_dir(&rings).unwrap().count();
    assert!(total > ours);
    let dry = blkkin(&["clean", "--dry-run", "--dir", rings.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&dry.stdout).contains("would remove"));
    assert_eq!(std::fs::read_dir(&rings).unwrap().count(), total);
    let out = blkkin(&["clean", "--dir", rings.to_str().unwrap()]);
    assert!(out.status.success());
    let msg = String::from_utf8_lossy(&out.stdout);
    assert!(msg.contains(&format!("removed {}", total - ours)), "{msg}");
    assert!(msg.contains("12 unread records discarded"), "{msg}");
    assert_eq!(std::fs::read_dir(&rings).unwrap().count(), ours);
}

#[test]
fn the_c_example_in_the_docs_compiles_and_records() {
    let doc = std::fs::read_to_string(common::root().join("docs/C_API.md")).unwrap();
    let start = doc.find("```c\n").expect("a C example") + 5;
    let len = doc[start..].find("```").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("example.c");
    std::fs::write(&src, &doc[start..start + len]).unwrap();
    let libs = common::lib_dir(tmp.path());
    let exe = tmp.path().join("example");
    let status = Command::new("cc")
        .args(["-Wall", "-Werror"])
        .arg("-I")
        .arg(common::root().join("include"))
        .arg(&src)
        .arg("-o")
        .arg(&exe)
        .arg(format!("-L{}", libs.display()))
        .arg("-lblkin")
        .arg(format!("-Wl,-rpath,{}", libs.display()))
        .arg("-Wl,--disable-new-dtags")
        .status()
        .unwrap();
    assert!(status.success());
    let rings = tmp.path().join("rings");
    assert!(Command::new(&exe)
        .env("BLKIN_SHM_DIR", &rings)
        .status()
        .unwrap()
        .success());
    let (annotations, summary) = common::dump_json(&rings);
    assert_eq!(summary["read"], 4);
    let values: Vec<String> = annotations.iter().map(|a| a["value"].to_string()).collect();
    assert_eq!(values, ["\"sr\"", "\"rbd_data.1234\"", "4096", "\"ss\""]);
    assert_eq!(annotations[2]["name"], "journal");
    assert_eq!(annotations[2]["serviceName"], "osd.0");
    assert_eq!(annotations[2]["parentId"], annotations[0]["id"]);
}

//! Durability (issue 13, point 4): nothing is acknowledged before a
//! successful sync covered it, and a failed write or sync leaves nothing
//! torn behind. Faults are real: `fdatasync` failing with EIO through an
//! LD_PRELOAD shim in the relay binary, and a full file system (a small
//! tmpfs mounted by the test, as root).

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use blkkin::wire::{ErrorCode, Frame, Role, Start};
use common::*;

/// Compiles the fault-injection shim: `fsync`/`fdatasync` fail with EIO while
/// the file named by `$BLKKIN_FAULT_FILE` exists.
fn shim(dir: &Path) -> PathBuf {
    let src = dir.join("eio.c");
    std::fs::write(
        &src,
        r#"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>
static int failing(void) {
    const char *f = getenv("BLKKIN_FAULT_FILE");
    return f && access(f, F_OK) == 0;
}
int fdatasync(int fd) {
    if (failing()) { errno = EIO; return -1; }
    int (*real)(int) = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    return real(fd);
}
int fsync(int fd) {
    if (failing()) { errno = EIO; return -1; }
    int (*real)(int) = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    return real(fd);
}
"#,
    )
    .unwrap();
    let so = dir.join("libeio.so");
    let st = Command::new("cc")
        .args(["-shared", "-fPIC", "-O1", "-o"])
        .arg(&so)
        .arg(&src)
        .arg("-ldl")
        .status()
        .expect("a C compiler");
    assert!(st.success(), "the shim compiles");
    so
}

/// Every record of `key` a fresh reader gets, with its contents checked.
async fn read_back(addr: SocketAddr, key: &blkkin::wire::StreamKey, to: u64) -> Vec<u64> {
    let mut rd = Client::hello(addr, Role::Reader).await;
    rd.subscribe_all(Start::Oldest).await;
    let mut got = Received::default();
    read_until(&mut rd, &mut got, |g| {
        g.positions(key).last().is_some_and(|p| *p + 1 >= to)
    })
    .await;
    got.check_contents(key);
    got.positions(key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_is_never_followed_by_an_ack_of_unsynced_data() {
    let tmp = tempfile::tempdir().unwrap();
    let so = shim(tmp.path());
    let fault = tmp.path().join("fail-now");
    let data = tmp.path().join("data");
    let relay = start_binary(
        &data,
        &[("LD_PRELOAD", &so), ("BLKKIN_FAULT_FILE", &fault)],
        &["--fsync", "batch"],
    );
    let k = key("node", 0);
    let mut c = Client::hello(relay.1, Role::Consumer).await;
    assert_eq!(c.open(1, &k).await, 0);
    assert_eq!(c.push(1, 0, 10).await, 10);

    // The disk starts failing: the batch is written, its sync fails.
    std::fs::write(&fault, b"").unwrap();
    c.send(&Frame::Records {
        handle: 1,
        first: 10,
        records: records(10, 20),
    })
    .await;
    match c.recv().await {
        Some(Frame::Error { code, message }) => {
            assert_eq!(code, ErrorCode::Unavailable);
            assert!(message.contains("sync"), "{message}");
        }
        other => panic!("expected Unavailable after the failed sync, got {other:?}"),
    }
    // While it fails, a consumer that comes back is told only what is synced,
    // and a resend is not acknowledged either.
    let mut c = Client::hello(relay.1, Role::Consumer).await;
    assert_eq!(c.open(1, &k).await, 10, "only synced records count as held");
    c.send(&Frame::Records {
        handle: 1,
        first: 10,
        records: records(10, 20),
    })
    .await;
    assert!(
        matches!(
            c.recv().await,
            Some(Frame::Error {
                code: ErrorCode::Unavailable,
                ..
            })
        ),
        "no ack while syncs fail"
    );

    // The disk recovers: the resend is written again, synced, acknowledged.
    std::fs::remove_file(&fault).unwrap();
    let mut c = Client::hello(relay.1, Role::Consumer).await;
    assert_eq!(c.open(1, &k).await, 10);
    assert_eq!(c.push(1, 10, 20).await, 20);
    assert_eq!(c.push(1, 20, 25).await, 25);
    drop(relay); // SIGKILL: what was acknowledged must be on disk

    let relay = start_binary(&data, &[], &[]);
    assert_eq!(
        read_back(relay.1, &k, 25).await,
        range(0, 25),
        "each record once"
    );
}

/// Mounts a tmpfs of `size` at `dir`; false when not root.
fn mount_small(dir: &Path, size: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: mounting a small tmpfs needs root (CI runs as root)");
        return false;
    }
    std::fs::create_dir_all(dir).unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .status()
        .expect("mount runs");
    assert!(st.success(), "mounting a tmpfs at {}", dir.display());
    true
}

struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_loses_nothing_acknowledged() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("small");
    if !mount_small(&mnt, "2m") {
        return;
    }
    let _unmount = Unmount(mnt.clone());
    let data = mnt.join("data");
    let relay = start_binary(&data, &[], &["--segment-size", "256K"]);
    let k = key("node", 0);
    let mut c = Client::hello(relay.1, Role::Consumer).await;
    assert_eq!(c.open(1, &k).await, 0);
    // Fill the file system: acknowledged positions only ever grow, until the
    // relay answers Unavailable.
    let mut acked = 0;
    let t0 = Instant::now();
    let err = loop {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the disk never filled"
        );
        c.send(&Frame::Records {
            handle: 1,
            first: acked,
            records: records(acked, acked + 50),
        })
        .await;
        match c.recv().await {
            Some(Frame::Ack { next, .. }) => {
                assert_eq!(next, acked + 50);
                acked = next;
            }
            Some(Frame::Error { code, message }) => break (code, message),
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(err.0, ErrorCode::Unavailable, "{}", err.1);
    assert!(err.1.contains("No space"), "{}", err.1);
    assert!(acked > 1000, "the disk held some records first ({acked})");
    // Reconnecting while full: told exactly what is held.
    let mut c = Client::hello(relay.1, Role::Consumer).await;
    assert_eq!(c.open(1, &k).await, acked);
    drop(c);

    // Space comes back (the file system grows) while the relay runs: the
    // consumer's resend goes in after the acknowledged records, with nothing
    // torn between them.
    let st = Command::new("mount")
        .args(["-o", "remount,size=8m"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(st.success());
    let mut c = Client::hello(relay.1, Role::Consumer).await;
    assert_eq!(c.open(1, &k).await, acked);
    let end = acked + 200;
    assert_eq!(c.push(1, acked, end).await, end);
    assert_eq!(read_back(relay.1, &k, end).await, range(0, end));
    drop(relay); // SIGKILL

    // And after a crash, recovery finds every acknowledged record.
    let relay = start_binary(&data, &[], &["--segment-size", "256K"]);
    assert_eq!(read_back(relay.1, &k, end).await, range(0, end));
}

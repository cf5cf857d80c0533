//! A real HDFS for tests (scripts/hdfs.sh: Hadoop's MiniDFSCluster, one
//! NameNode and one DataNode on loopback), shared by collector/tests/hdfs.rs
//! and the root package's tests/checkpoint.rs and tests/analyze.rs.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use blkkin_collector::archive::{encode, layout, HdfsConfig, HdfsFs};
use serde_json::Value;

/// True (after saying so) when BLKKIN_SKIP_HDFS=1 asks to skip tests
/// that need HDFS; without it they fail when HDFS cannot start.
pub fn skip_hdfs(test: &str) -> bool {
    let skip = std::env::var("BLKKIN_SKIP_HDFS").as_deref() == Ok("1");
    if skip {
        eprintln!("BLKKIN_SKIP_HDFS=1: SKIPPING {test}");
    }
    skip
}

/// A running HDFS, stopped on drop.
pub struct Hdfs {
    state: PathBuf,
    _dir: tempfile::TempDir,
    env: HashMap<String, String>,
}

/// scripts/hdfs.sh, found from the package of the test including this file
/// (the collector's or the root package).
fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|d| d.join("scripts/hdfs.sh"))
        .find(|p| p.exists())
        .expect("scripts/hdfs.sh above the package")
}

impl Hdfs {
    /// Starts a cluster (fails the test when it cannot).
    pub fn start() -> Hdfs {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("hdfs");
        let out = Command::new("bash")
            .arg(script())
            .arg("start")
            .arg(&state)
            .output()
            .expect("run scripts/hdfs.sh");
        let mut hdfs = Hdfs {
            state,
            _dir: dir,
            env: HashMap::new(),
        };
        assert!(
            out.status.success(),
            "scripts/hdfs.sh start failed (set BLKKIN_SKIP_HDFS=1 to skip):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        hdfs.reload_env();
        hdfs
    }

    fn reload_env(&mut self) {
        let text = std::fs::read_to_string(self.state.join("cluster.env")).unwrap();
        self.env = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    }

    /// `hdfs://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.env["NAMENODE_URL"].clone()
    }

    /// Restarts the NameNode on the same port.
    pub fn restart_namenode(&mut self) {
        let out = Command::new("bash")
            .arg(script())
            .arg("restart-namenode")
            .arg(&self.state)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "restart-namenode: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let before = self.url();
        self.reload_env();
        assert_eq!(self.url(), before, "the NameNode came back on its port");
    }

    pub fn webhdfs(&self, path: &str, op: &str) -> ureq::Response {
        let url = format!(
            "http://127.0.0.1:{}/webhdfs/v1{path}?op={op}&user.name=blkkin",
            self.env["WEBHDFS_PORT"]
        );
        ureq::get(&url)
            .call()
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
    }

    /// Every file under `dir`, recursively, through WebHDFS LISTSTATUS.
    pub fn webhdfs_list(&self, dir: &str, out: &mut Vec<String>) {
        let body = self.webhdfs(dir, "LISTSTATUS").into_string().unwrap();
        let v: Value = serde_json::from_str(&body).unwrap();
        for st in v["FileStatuses"]["FileStatus"].as_array().unwrap() {
            let path = format!("{dir}/{}", st["pathSuffix"].as_str().unwrap());
            if st["type"] == "DIRECTORY" {
                self.webhdfs_list(&path, out);
            } else {
                out.push(path);
            }
        }
    }

    /// The archive under `root` read through WebHDFS alone (LISTSTATUS,
    /// then OPEN, which redirects to the DataNode): every file's path
    /// relative to `root`, and the decompressed text of the visible ones
    /// (`None` for in-progress files and markers).
    pub fn webhdfs_archive(&self, root: &str) -> Vec<(String, Option<Vec<u8>>)> {
        let mut files = Vec::new();
        self.webhdfs_list(root, &mut files);
        files
            .iter()
            .map(|path| {
                let rel = path.strip_prefix(&format!("{root}/")).unwrap().to_string();
                if !layout::is_visible(&rel) {
                    return (rel, None);
                }
                let mut raw = Vec::new();
                std::io::Read::read_to_end(&mut self.webhdfs(path, "OPEN").into_reader(), &mut raw)
                    .unwrap();
                let c = layout::compression_of(&rel).unwrap();
                let text = encode::decode(c, &raw).unwrap();
                (rel, Some(text))
            })
            .collect()
    }
}

impl Drop for Hdfs {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(&self.state)
            .status();
    }
}

/// A client of the cluster rooted at `root`, as user `blkkin`.
pub fn hdfs_fs(h: &Hdfs, root: &str) -> HdfsFs {
    HdfsFs::connect(HdfsConfig {
        namenode_url: h.url(),
        root: root.into(),
        user: Some("blkkin".into()),
    })
    .unwrap()
}

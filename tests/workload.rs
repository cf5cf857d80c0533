//! `blkkin workload`: the sample storage stack records the traces it
//! promises — one trace per request across four processes, the right parent
//! links, shared client/server spans, slow and failed requests — checked
//! through `blkkin dump --json`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::Command;

use serde_json::Value;

fn run(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_blkkin"))
        .args(args)
        .env("BLKIN_SHM_DIR", dir)
        .env_remove("BLKIN_RATE")
        .env_remove("RATE")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "blkkin {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn the_storage_stack_traces_every_request_through_four_layers() {
    let tmp = tempfile::tempdir().unwrap();
    let n = 50u64;
    let out = run(tmp.path(), &["workload", "-n", &n.to_string()]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "requests=50 ok=48 failed=2 slow=5"
    );
    let dump = run(tmp.path(), &["dump", "--json"]);
    let lines: Vec<Value> = String::from_utf8_lossy(&dump.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let (summary, annotations) = lines.split_last().unwrap();
    assert_eq!(summary["summary"]["lost"], 0, "{summary}");

    // trace → span id → (name, parent, services, events, keys)
    #[derive(Default, Debug)]
    struct SpanSeen {
        names: BTreeSet<String>,
        parent: Option<String>,
        services: BTreeSet<String>,
        events: Vec<String>,
        keys: BTreeMap<String, Value>,
    }
    let mut traces: HashMap<String, HashMap<String, SpanSeen>> = HashMap::new();
    for a in annotations {
        let s = traces
            .entry(a["traceId"].as_str().unwrap().to_string())
            .or_default()
            .entry(a["id"].as_str().unwrap().to_string())
            .or_default();
        s.names.insert(a["name"].as_str().unwrap().to_string());
        s.parent = a["parentId"].as_str().map(str::to_string);
        s.services
            .insert(a["serviceName"].as_str().unwrap().to_string());
        match a["kind"].as_str().unwrap() {
            "event" => s.events.push(a["value"].as_str().unwrap().to_string()),
            _ => {
                s.keys
                    .insert(a["key"].as_str().unwrap().to_string(), a["value"].clone());
            }
        }
    }
    assert_eq!(traces.len() as u64, n, "one trace per request");
    let mut failed = 0;
    let mut slow = 0;
    for (trace, spans) in &traces {
        // root (client+volume shared) → map (volume+mapper shared) →
        // block_io (mapper+blocker shared) → disk_io (blocker only)
        assert_eq!(spans.len(), 4, "trace {trace}: {spans:?}");
        let by_name = |n: &str| {
            spans
                .iter()
                .find(|(_, s)| s.names.contains(n))
                .unwrap_or_else(|| panic!("trace {trace} has no span {n}: {spans:?}"))
        };
        let (root_id, root) = spans
            .iter()
            .find(|(_, s)| s.parent.is_none())
            .expect("a root span");
        assert_eq!(root_id, trace, "the root span id is the trace id");
        let want = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(root.services, want(&["client", "volume"]));
        let mut ev = root.events.clone();
        ev.sort();
        assert_eq!(ev, ["cr", "cs", "sr", "ss"]);
        let (map_id, map) = by_name("map");
        assert_eq!(map.parent.as_deref(), Some(root_id.as_str()));
        assert_eq!(map.services, want(&["volume", "mapper"]));
        let (bio_id, bio) = by_name("block_io");
        assert_eq!(bio.parent.as_deref(), Some(map_id.as_str()));
        assert_eq!(bio.services, want(&["mapper", "blocker"]));
        let (_, disk) = by_name("disk_io");
        assert_eq!(disk.parent.as_deref(), Some(bio_id.as_str()));
        assert_eq!(disk.services, want(&["blocker"]));
        assert_eq!(disk.events.first().map(String::as_str), Some("start"));
        assert_eq!(disk.events.last().map(String::as_str), Some("end"));
        assert!(disk.keys["bytes"].as_i64().unwrap() >= 4096);
        if disk.events.iter().any(|e| e == "slow_path") {
            slow += 1;
        }
        if disk.keys.contains_key("error") {
            failed += 1;
            for s in [root, map, bio] {
                assert_eq!(s.keys["error"], "Input/output error", "{s:?}");
            }
        } else {
            assert!(!root.keys.contains_key("error"));
        }
    }
    assert_eq!((failed, slow), (2, 5));
}

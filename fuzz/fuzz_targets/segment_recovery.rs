//! Relay recovery of a segment file holding arbitrary bytes (a disk that
//! flipped bits, a truncated copy): opening the store never panics, and
//! whatever it recovers can be read back.
#![no_main]

use blkkin_relayd::{FsyncPolicy, Store, StoreConfig};
use libfuzzer_sys::fuzz_target;

/// A stream directory (node "n", pid 1, start 2, cpu 3) with a valid meta.json.
const DIR: &str = "6e-1-2-3";
const META: &str = r#"{"node":"n","pid":1,"start_time":2,"cpu":3,"calibration":[0,0,1,1],"closed":false,"reader":[0,0,0,0,0,0],"writer":[0,0,0,0,0],"lost_gap":0}"#;

fuzz_target!(|data: &[u8]| {
    let tmp = tempfile::tempdir().unwrap();
    let sdir = tmp.path().join("streams").join(DIR);
    std::fs::create_dir_all(&sdir).unwrap();
    std::fs::write(sdir.join("meta.json"), META).unwrap();
    // Two segments: the bytes split between a sealed one and the last one.
    let cut = data.first().map_or(0, |b| *b as usize * data.len() / 256);
    std::fs::write(sdir.join(format!("{:020}.seg", 0)), &data[..cut]).unwrap();
    std::fs::write(sdir.join(format!("{:020}.seg", 1_000_000)), &data[cut..]).unwrap();
    let mut cfg = StoreConfig::new(tmp.path());
    cfg.fsync = FsyncPolicy::Never; // what is checked is parsing, not the disk
    let Ok(store) = Store::open(cfg) else {
        return;
    };
    for s in store.streams() {
        let mut at = s.first();
        while let Ok(batch) = s.read(at, 1 << 16) {
            let Some(last) = batch.last() else { break };
            assert!(last.0 >= at);
            at = last.0 + 1;
        }
        let _ = s.meta().counters().lost();
    }
});

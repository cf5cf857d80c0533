//! The ring reader on arbitrary ring bytes (a corrupted or hostile ring in
//! shared memory): it reads records or counts damage, never panics, and
//! every record it delivers decodes within its bounds.
#![no_main]

use blkkin::ring::mem::RingMem;
use blkkin::ring::{ReadMode, RingReader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // A header-sized prefix at least, rounded up to whole words.
    let len = (data.len().max(4096) + 7) & !7;
    let mem = RingMem::heap(len);
    mem.write_bytes(0, data);
    let Ok(mut r) = RingReader::from_mem(mem, ReadMode::Consume) else {
        return;
    };
    for _ in 0..4 {
        r.drain(1024, |rec| {
            assert!(rec.raw.len() >= 8);
            let _ = (rec.service.len(), rec.key.len());
        });
    }
    let _ = (r.stats(), r.writer_counters(), r.calibration());
});

//! Prints the ring bytes one typical annotation takes, as JSON lines
//! (used by bench/run.sh). Records into $BLKIN_SHM_DIR (must be set to an
//! empty directory) and reads the rings back with the library's reader.

use blkkin::ring::{file, ReadMode, RingReader};
use blkkin::{Endpoint, Span, TraceContext};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::var_os("BLKIN_SHM_DIR").ok_or("set BLKIN_SHM_DIR to an empty directory")?;
    let ep = Endpoint::new("osd.0", "10.0.0.1", 6800);
    let span = Span::join(TraceContext::new_root_forced(), "osd_op", &ep);
    let n = 1000u64;
    let cases: [(&str, &dyn Fn()); 2] = [
        ("record_bytes_timestamp", &|| span.event("sr")),
        ("record_bytes_keyval_string", &|| {
            span.tag("object", "rbd_data.1234.0000000000000001")
        }),
    ];
    for (name, record) in cases {
        let before = used(&dir)?;
        for _ in 0..n {
            record();
        }
        let (bytes, written) = used(&dir)?;
        let per = (bytes - before.0) as f64 / (written - before.1) as f64;
        println!("{{\"bench\":\"{name}\",\"value\":{per:.1}}}");
    }
    Ok(())
}

/// (bytes in use, records written) over all rings of the directory.
fn used(dir: &std::ffi::OsStr) -> Result<(u64, u64), Box<dyn std::error::Error>> {
    let mut bytes = 0;
    let mut written = 0;
    for path in file::list_rings(std::path::Path::new(dir))? {
        let r = RingReader::open(&path, ReadMode::Peek)?;
        bytes += r.backlog_bytes() as u64;
        written += r.writer_counters().written;
    }
    Ok((bytes, written))
}

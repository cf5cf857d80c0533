//! A tiny traced "storage stack" in one process: a client request fans out to
//! a volume and two object writes. Run it, then `blkkin dump` to see what it
//! recorded:
//!
//! ```sh
//! cargo run --release --example quickstart
//! cargo run --release -- dump
//! ```

use blkkin::{Endpoint, Span};

fn main() {
    if let Err(e) = blkkin::init() {
        eprintln!("quickstart: {e}");
        std::process::exit(1);
    }
    let client = Endpoint::new("client", "10.0.0.1", 0);
    let volume = Endpoint::new("volume", "10.0.0.2", 7000);
    let osd = Endpoint::new("osd.0", "10.0.0.3", 6800);
    for i in 0..3 {
        let req = Span::root("write", &client);
        req.tag("image", "rbd/vm-disk-1");
        req.tag_int("offset", i * 4096);
        // The volume layer receives the packed ids over the wire...
        let wire = req.context().to_packed();
        let ctx = blkkin::TraceContext::from_packed(&wire).expect("24 bytes");
        let vol = Span::child_of(&ctx, "volume_write", &volume);
        for obj in 0..2 {
            let op = vol.child("osd_op");
            op.event_at("sr", &osd);
            op.tag("object", &format!("rbd_data.1234.{:016x}", i * 2 + obj));
            op.event_at("ss", &osd);
        }
    }
    let dir = blkkin::recorder::config().shm_dir.display().to_string();
    println!("recorded 3 traces into {dir}; now run: cargo run --release -- dump");
}

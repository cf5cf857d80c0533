//! The Scribe sink's decoder of a server's Thrift (TBinary) reply to `Log`:
//! any bytes give a result or an error, never a panic.
#![no_main]

#[allow(dead_code, unused_imports)]
#[path = "../../collector/src/model.rs"]
mod model;
#[allow(dead_code, unused_imports)]
#[path = "../../collector/src/tbinary.rs"]
mod tbinary;
#[allow(dead_code, unused_imports)]
#[path = "../../collector/src/v1.rs"]
mod v1;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&seq, body)) = data.split_first() else {
        return;
    };
    let _ = tbinary::parse_scribe_reply(body, i32::from(seq));
});

//! The relay wire protocol's frame decoder (relay, consumer, readers): any
//! bytes, fed in arbitrary pieces, give frames or a clean error, never a
//! panic, and a decoded frame encodes back to what was read.
#![no_main]

use blkkin::wire::{Frame, FrameBuffer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, bytes)) = data.split_first() else {
        return;
    };
    let mut fb = FrameBuffer::new(1 << 20);
    let cut = (split as usize).min(bytes.len());
    for piece in [&bytes[..cut], &bytes[cut..]] {
        fb.extend(piece);
        loop {
            match fb.next_frame() {
                Ok(Some(f)) => {
                    let mut again = Vec::new();
                    f.encode(&mut again);
                    let mut fb2 = FrameBuffer::new(1 << 20);
                    fb2.extend(&again);
                    let back: Frame = fb2.next_frame().unwrap().unwrap();
                    assert_eq!(back, f, "a decoded frame round-trips");
                }
                Ok(None) | Err(_) => break,
            }
        }
    }
});

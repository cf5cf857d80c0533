//! The body of `POST /api/v2/spans` (the embedded store's API): any bytes
//! give spans or a JSON error, never a panic; spans serialize back.
#![no_main]

#[allow(dead_code, unused_imports)]
#[path = "../../collector/src/model.rs"]
mod model;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(spans) = serde_json::from_slice::<Vec<model::Span>>(data) {
        let again = serde_json::to_vec(&spans).expect("spans serialize");
        let back: Vec<model::Span> = serde_json::from_slice(&again).expect("and parse back");
        assert_eq!(back.len(), spans.len());
    }
});

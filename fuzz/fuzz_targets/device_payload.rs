//! The device API's JSON payload parsers (telemetry in its three forms, attributes, attribute
//! requests) on arbitrary bytes: never a panic; whatever parses obeys the rules.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(points) = ib_core::payload::telemetry(data, 0) {
        for p in points {
            assert!(!p.key.is_empty() && p.key.len() <= ib_core::payload::MAX_KEY_LEN);
            assert!(!p.value.is_null());
            assert!(p.ts >= 0);
        }
    }
    let _ = ib_core::payload::attributes(data);
    let _ = ib_core::Platform::attribute_request_keys(data);
});

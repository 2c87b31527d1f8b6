//! The CoAP server on arbitrary datagrams (decoding, dedup, block-wise, routing, the device API
//! behind it on an in-memory database): never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    coap::fuzz::datagram(data);
});

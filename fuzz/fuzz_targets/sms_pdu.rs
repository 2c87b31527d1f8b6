//! SMS PDUs and AT lines from a modem (untrusted: a modem relays whatever the network sends):
//! the decoders never panic; whatever decodes re-encodes and decodes to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use modem::pdu::{self, Incoming};

fuzz_target!(|data: &[u8]| {
    if let Ok((_, tpdu)) = pdu::split_sca(data) {
        if let Ok(m) = pdu::decode_incoming(tpdu) {
            let again = match &m {
                Incoming::Deliver(d) => pdu::encode_deliver(d),
                Incoming::StatusReport(r) => pdu::encode_status_report(r),
            };
            // decoded text may hold what the encoder refuses (a sender name, 8-bit data
            // above what fits): only what encodes must round-trip
            if let Ok(bytes) = again {
                if let Ok(m2) = pdu::decode_incoming(&bytes) {
                    if let (Incoming::Deliver(a), Incoming::Deliver(b)) = (&m, &m2) {
                        assert_eq!(a.data.text, b.data.text);
                    }
                }
            }
        }
    }
    if let Ok(s) = pdu::decode_submit(data) {
        if let Ok(bytes) = pdu::encode_submit(&s) {
            assert_eq!(pdu::decode_submit(&bytes).as_ref(), Ok(&s));
        }
    }
    if let Ok(line) = std::str::from_utf8(data) {
        let _ = modem::at::urc(line);
        let _ = modem::at::final_code(line);
        let _ = modem::at::from_ucs2_hex(line);
        let _ = pdu::unhex(line);
    }
});

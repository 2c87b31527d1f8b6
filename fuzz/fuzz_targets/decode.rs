//! Feeds arbitrary bytes to the streaming decoder. The first byte picks the protocol the
//! connection starts with (a CONNECT in the data may change it). Every packet that decodes is
//! encoded again, which must give exactly `encoded_len` bytes that decode to the same packet.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use mqtt_codec::{encode_packet, encoded_len, Decoder, Protocol};

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let protocol = match first % 3 {
        0 => Protocol::V31,
        1 => Protocol::V311,
        _ => Protocol::V5,
    };
    let mut decoder = Decoder::new(protocol, 1 << 20);
    let mut buf = BytesMut::from(rest);
    loop {
        let before = decoder.protocol;
        let packet = match decoder.decode(&mut buf) {
            Ok(Some(p)) => p,
            Ok(None) | Err(_) => break,
        };
        let mut out = BytesMut::new();
        encode_packet(&packet, before, &mut out);
        assert_eq!(
            out.len(),
            encoded_len(&packet, before),
            "encoded_len of {packet:?}"
        );
        let mut again = Decoder::new(before, usize::MAX);
        let decoded = again.decode(&mut out);
        assert_eq!(decoded, Ok(Some(packet)), "re-decoding");
        assert!(out.is_empty(), "bytes left after re-decoding");
    }
});

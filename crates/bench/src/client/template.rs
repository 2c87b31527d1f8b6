//! What the generator's messages carry, and how they are made fast.
//!
//! A [`PublishTemplate`] is one PUBLISH encoded once per connection with `mqtt-codec`; every
//! message sent is a copy of it with the packet id and the [`Stamp`] (sequence number, send
//! time) patched in place, so the hot path never encodes.
//!
//! The stamp is the first [`STAMP_LEN`] bytes of the payload, little-endian:
//! `seq: u64 | sent_ns: u64 | publisher: u32 | magic "IBb1"`. The rest is filler.

use bytes::{Bytes, BytesMut};
use mqtt_codec::{encode_publish, read_frame, Protocol, Publish, QoS};

/// Bytes of the stamp at the start of the payload.
pub const STAMP_LEN: usize = 24;
const MAGIC: [u8; 4] = *b"IBb1";

/// Sequence number, send time and publisher of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Per-publisher sequence number, from 0.
    pub seq: u64,
    /// CLOCK_MONOTONIC nanoseconds when it was written (comparable across processes).
    pub sent_ns: u64,
    /// The publisher's index in its run.
    pub publisher: u32,
}

impl Stamp {
    /// Reads the stamp at the start of `payload`, if it carries one.
    pub fn read(payload: &[u8]) -> Option<Stamp> {
        let s = payload.get(..STAMP_LEN)?;
        if s[20..24] != MAGIC {
            return None;
        }
        Some(Stamp {
            seq: u64::from_le_bytes(s[0..8].try_into().ok()?),
            sent_ns: u64::from_le_bytes(s[8..16].try_into().ok()?),
            publisher: u32::from_le_bytes(s[16..20].try_into().ok()?),
        })
    }

    /// Writes the stamp over the first [`STAMP_LEN`] bytes of `out`.
    pub fn write(&self, out: &mut [u8]) {
        out[0..8].copy_from_slice(&self.seq.to_le_bytes());
        out[8..16].copy_from_slice(&self.sent_ns.to_le_bytes());
        out[16..20].copy_from_slice(&self.publisher.to_le_bytes());
        out[20..24].copy_from_slice(&MAGIC);
    }
}

/// One encoded PUBLISH and where its variable parts are.
#[derive(Debug, Clone)]
pub struct PublishTemplate {
    bytes: Vec<u8>,
    /// Offset of the packet id (QoS 1 and 2).
    packet_id_at: Option<usize>,
    /// Offset of the payload; a stamp is patched there when the payload is long enough.
    payload_at: usize,
    publisher: u32,
}

impl PublishTemplate {
    /// Encodes a PUBLISH of `payload_len` bytes on `topic` for publisher number `publisher`.
    pub fn new(
        protocol: Protocol,
        topic: &str,
        qos: QoS,
        retain: bool,
        payload_len: usize,
        publisher: u32,
    ) -> PublishTemplate {
        let mut payload = vec![b'x'; payload_len];
        if payload_len >= STAMP_LEN {
            let stamp = Stamp {
                seq: 0,
                sent_ns: 0,
                publisher,
            };
            stamp.write(&mut payload);
        }
        let publish = Publish {
            qos,
            retain,
            topic: topic.into(),
            packet_id: u16::from(qos != QoS::AtMostOnce),
            payload: Bytes::from(payload),
            ..Publish::default()
        };
        let mut out = BytesMut::new();
        encode_publish(&publish, protocol, &mut out);
        let frame = read_frame(&out, usize::MAX)
            .ok()
            .flatten()
            .expect("an encoded PUBLISH has a fixed header");
        let packet_id_at = (qos != QoS::AtMostOnce).then(|| frame.header_len + 2 + topic.len());
        PublishTemplate {
            payload_at: out.len() - payload_len,
            bytes: out.to_vec(),
            packet_id_at,
            publisher,
        }
    }

    /// Encoded size of one message.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Always false: a PUBLISH has a fixed header.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// True when the payload is long enough to carry a stamp.
    pub fn stamped(&self) -> bool {
        self.bytes.len() - self.payload_at >= STAMP_LEN
    }

    /// Appends one message.
    pub fn append(&self, out: &mut BytesMut, packet_id: u16, seq: u64, sent_ns: u64) {
        let start = out.len();
        out.extend_from_slice(&self.bytes);
        self.patch(&mut out[start..], packet_id, seq, sent_ns);
    }

    /// Patches a copy of the template (`msg`, exactly [`Self::len`] bytes) in place.
    pub fn patch(&self, msg: &mut [u8], packet_id: u16, seq: u64, sent_ns: u64) {
        if let Some(at) = self.packet_id_at {
            msg[at..at + 2].copy_from_slice(&packet_id.to_be_bytes());
        }
        if self.stamped() {
            let stamp = Stamp {
                seq,
                sent_ns,
                publisher: self.publisher,
            };
            stamp.write(&mut msg[self.payload_at..]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mqtt_codec::{Decoder, Packet};

    fn decode(bytes: &[u8], protocol: Protocol) -> Publish {
        let mut buf = BytesMut::from(bytes);
        match Decoder::new(protocol, usize::MAX).decode(&mut buf).unwrap() {
            Some(Packet::Publish(p)) => p,
            other => panic!("not a PUBLISH: {other:?}"),
        }
    }

    #[test]
    fn patched_copies_decode_with_the_codec() {
        for protocol in [Protocol::V311, Protocol::V5] {
            for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
                for len in [0, 10, STAMP_LEN, 64, 300] {
                    let t = PublishTemplate::new(protocol, "bench/r1/7", qos, false, len, 7);
                    let mut out = BytesMut::new();
                    t.append(&mut out, 513, 42, 99);
                    assert_eq!(out.len(), t.len());
                    let p = decode(&out, protocol);
                    assert_eq!(&*p.topic, "bench/r1/7");
                    assert_eq!(p.qos, qos);
                    assert_eq!(p.payload.len(), len);
                    if qos != QoS::AtMostOnce {
                        assert_eq!(p.packet_id, 513);
                    }
                    let stamp = Stamp::read(&p.payload);
                    if len >= STAMP_LEN {
                        let want = Stamp {
                            seq: 42,
                            sent_ns: 99,
                            publisher: 7,
                        };
                        assert_eq!(stamp, Some(want));
                    } else {
                        assert_eq!(stamp, None);
                    }
                }
            }
        }
    }

    #[test]
    fn foreign_payloads_carry_no_stamp() {
        assert_eq!(Stamp::read(&[0u8; 64]), None);
        assert_eq!(Stamp::read(b"hello"), None);
    }
}

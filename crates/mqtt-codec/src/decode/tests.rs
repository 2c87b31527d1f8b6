use super::*;
use crate::packet::{Auth, ConnAck, Disconnect, Packet, Protocol, PubResponse, QoS};

const V3: Protocol = Protocol::V311;
const V5: Protocol = Protocol::V5;

/// A little byte-string builder for hand-made packets.
#[derive(Default, Clone)]
struct B(Vec<u8>);

impl B {
    fn new() -> Self {
        B(Vec::new())
    }
    fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }
    fn u16(mut self, v: u16) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn raw(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }
    /// Length-prefixed bytes (string or binary).
    fn s(self, b: &[u8]) -> Self {
        self.u16(b.len() as u16).raw(b)
    }
    fn varint(mut self, mut v: usize) -> Self {
        loop {
            let mut b = (v & 0x7F) as u8;
            v >>= 7;
            if v > 0 {
                b |= 0x80;
            }
            self.0.push(b);
            if v == 0 {
                return self;
            }
        }
    }
    /// Property length + properties.
    fn props(self, p: B) -> Self {
        self.varint(p.0.len()).raw(&p.0)
    }
}

fn dec(header: u8, b: B, p: Protocol) -> Result<Packet, DecodeError> {
    decode_packet(header, Bytes::from(b.0), p)
}

fn malformed(r: Result<Packet, DecodeError>) {
    assert!(
        matches!(r, Err(DecodeError::Malformed(_))),
        "expected Malformed, got {r:?}"
    );
}

fn protocol_err(r: Result<Packet, DecodeError>) {
    assert!(
        matches!(r, Err(DecodeError::Protocol(_))),
        "expected Protocol, got {r:?}"
    );
}

fn connect(name: &[u8], level: u8, flags: u8) -> B {
    B::new().s(name).u8(level).u8(flags).u16(60)
}

// ---- framing ----

#[test]
fn frame_incomplete() {
    assert_eq!(read_frame(&[], 100), Ok(None));
    assert_eq!(read_frame(&[0x30], 100), Ok(None));
    assert_eq!(read_frame(&[0x30, 0x80], 100), Ok(None));
    assert_eq!(read_frame(&[0x30, 0x80, 0x80, 0x80], 1 << 30), Ok(None));
}

#[test]
fn frame_lengths() {
    let f = read_frame(&[0xC0, 0x00], 100).unwrap().unwrap();
    assert_eq!(
        f,
        Frame {
            header: 0xC0,
            header_len: 2,
            remaining: 0
        }
    );
    let f = read_frame(&[0x30, 0x7F], 1000).unwrap().unwrap();
    assert_eq!((f.header_len, f.remaining, f.len()), (2, 127, 129));
    let f = read_frame(&[0x30, 0x80, 0x01], 1000).unwrap().unwrap();
    assert_eq!((f.header_len, f.remaining), (3, 128));
    let f = read_frame(&[0x30, 0xFF, 0x7F], 1 << 20).unwrap().unwrap();
    assert_eq!(f.remaining, 16_383);
    let f = read_frame(&[0x30, 0x80, 0x80, 0x01], 1 << 30)
        .unwrap()
        .unwrap();
    assert_eq!((f.header_len, f.remaining), (4, 16_384));
    let f = read_frame(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F], usize::MAX)
        .unwrap()
        .unwrap();
    assert_eq!((f.header_len, f.remaining), (5, MAX_VARIABLE_INT));
}

#[test]
fn frame_non_minimal_length_accepted() {
    let f = read_frame(&[0xC0, 0x80, 0x00], 100).unwrap().unwrap();
    assert_eq!((f.header_len, f.remaining), (3, 0));
    let f = read_frame(&[0x30, 0x85, 0x80, 0x80, 0x00], 100)
        .unwrap()
        .unwrap();
    assert_eq!((f.header_len, f.remaining), (5, 5));
}

#[test]
fn frame_fifth_length_byte_is_malformed() {
    assert_eq!(
        read_frame(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF], usize::MAX),
        Err(DecodeError::MalformedLength)
    );
    assert_eq!(
        read_frame(&[0x30, 0x80, 0x80, 0x80, 0x80, 0x01], usize::MAX),
        Err(DecodeError::MalformedLength)
    );
}

#[test]
fn frame_too_large_without_waiting_for_body() {
    // 2 + 127 = 129 bytes against a maximum of 128; only the header is present.
    assert_eq!(
        read_frame(&[0x30, 0x7F], 128),
        Err(DecodeError::PacketTooLarge {
            size: 129,
            max: 128
        })
    );
    assert!(read_frame(&[0x30, 0x7E], 128).unwrap().is_some());
    assert!(matches!(
        read_frame(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F], 1 << 20),
        Err(DecodeError::PacketTooLarge { .. })
    ));
}

// ---- fixed header flags and packet types ----

#[test]
fn reserved_flags() {
    let pid = || B::new().u16(1);
    malformed(dec(0x60, pid(), V3)); // PUBREL needs 0b0010
    assert!(dec(0x62, pid(), V3).is_ok());
    malformed(dec(0x80, pid().s(b"a").u8(0), V3)); // SUBSCRIBE
    assert!(dec(0x82, pid().s(b"a").u8(0), V3).is_ok());
    malformed(dec(0xA0, pid().s(b"a"), V3)); // UNSUBSCRIBE
    assert!(dec(0xA2, pid().s(b"a"), V3).is_ok());
    malformed(dec(0x42, pid(), V3)); // PUBACK
    malformed(dec(0x52, pid(), V3)); // PUBREC
    malformed(dec(0x71, pid(), V3)); // PUBCOMP
    malformed(dec(0xC1, B::new(), V3)); // PINGREQ
    malformed(dec(0xD8, B::new(), V3)); // PINGRESP
    malformed(dec(0xE2, B::new(), V3)); // DISCONNECT
    malformed(dec(0x12, connect(b"MQTT", 4, 0x02).s(b"c"), V3)); // CONNECT
    malformed(dec(0x21, B::new().u8(0).u8(0), V3)); // CONNACK
    malformed(dec(0xF1, B::new(), V5)); // AUTH
}

#[test]
fn packet_type_zero_is_malformed() {
    malformed(dec(0x00, B::new(), V3));
    malformed(dec(0x00, B::new(), V5));
}

#[test]
fn auth_only_in_v5() {
    malformed(dec(0xF0, B::new(), V3));
    malformed(dec(0xF0, B::new(), Protocol::V31));
    assert_eq!(dec(0xF0, B::new(), V5), Ok(Packet::Auth(Auth::default())));
    let p = dec(
        0xF0,
        B::new().u8(0x18).props(B::new().u8(0x15).s(b"SCRAM")),
        V5,
    )
    .unwrap();
    let Packet::Auth(a) = p else { panic!() };
    assert_eq!(a.code, ReasonCode::CONTINUE_AUTHENTICATION);
    assert_eq!(a.properties.authentication_method.as_deref(), Some("SCRAM"));
    assert_eq!(
        dec(0xF0, B::new().u8(0x81), V5),
        Err(DecodeError::InvalidReasonCode(0x81))
    );
}

// ---- PUBLISH ----

#[test]
fn publish_v3() {
    let p = dec(0x3B, B::new().s(b"a/b").u16(7).raw(b"hello"), V3).unwrap();
    let Packet::Publish(p) = p else { panic!() };
    assert!(p.dup && p.retain);
    assert_eq!(p.qos, QoS::AtLeastOnce);
    assert_eq!(&*p.topic, "a/b");
    assert_eq!(p.packet_id, 7);
    assert_eq!(&p.payload[..], b"hello");
}

#[test]
fn publish_payload_is_zero_copy() {
    let body = Bytes::from(B::new().s(b"t").raw(b"payload").0);
    let Packet::Publish(p) = decode_packet(0x30, body.clone(), V3).unwrap() else {
        panic!()
    };
    let range = body.as_ptr() as usize..body.as_ptr() as usize + body.len();
    assert!(range.contains(&(p.payload.as_ptr() as usize)));
    assert_eq!(p.packet_id, 0);
}

#[test]
fn publish_qos3_is_malformed() {
    malformed(dec(0x36, B::new().s(b"t").u16(1), V3));
    malformed(dec(0x36, B::new().s(b"t").u16(1).props(B::new()), V5));
}

#[test]
fn publish_dup_at_qos0_is_malformed() {
    malformed(dec(0x38, B::new().s(b"t"), V3));
}

#[test]
fn publish_packet_id_zero_is_malformed() {
    malformed(dec(0x32, B::new().s(b"t").u16(0), V3));
    malformed(dec(0x34, B::new().s(b"t").u16(0), V3));
}

#[test]
fn publish_topic_rules() {
    for bad in [&b"a/+"[..], b"#", b"a/#", b"a\0b"] {
        assert_eq!(
            dec(0x30, B::new().s(bad), V3),
            Err(DecodeError::TopicNameInvalid),
            "{bad:?}"
        );
    }
    assert_eq!(
        dec(0x30, B::new().s(b""), V3),
        Err(DecodeError::TopicNameInvalid)
    );
    assert_eq!(
        dec(0x30, B::new().s(b"").props(B::new()), V5),
        Err(DecodeError::TopicNameInvalid)
    );
    let p = dec(0x30, B::new().s(b"").props(B::new().u8(0x23).u16(3)), V5).unwrap();
    let Packet::Publish(p) = p else { panic!() };
    assert_eq!((&*p.topic, p.properties.topic_alias), ("", Some(3)));
    assert_eq!(
        dec(0x30, B::new().s(&[0xC3, 0x28]), V3),
        Err(DecodeError::InvalidUtf8)
    );
}

#[test]
fn publish_v5_properties() {
    let props = B::new()
        .u8(0x01)
        .u8(1)
        .u8(0x0B)
        .varint(5)
        .u8(0x0B)
        .varint(300)
        .u8(0x26)
        .s(b"k")
        .s(b"v")
        .u8(0x26)
        .s(b"k")
        .s(b"w")
        .u8(0x09)
        .s(b"corr");
    let Packet::Publish(p) = dec(0x32, B::new().s(b"t").u16(9).props(props).raw(b"x"), V5).unwrap()
    else {
        panic!()
    };
    assert_eq!(p.properties.payload_format_indicator, Some(1));
    assert_eq!(p.properties.subscription_identifiers, vec![5, 300]);
    assert_eq!(p.properties.user_properties.len(), 2);
    assert_eq!(p.properties.correlation_data.as_deref(), Some(&b"corr"[..]));
    assert_eq!(&p.payload[..], b"x");
}

// ---- strings ----

#[test]
fn invalid_utf8_and_nul_rejected() {
    let bad = dec(0x10, connect(b"MQTT", 4, 0x02).s(&[0xFF, 0xFE]), V3);
    assert_eq!(bad, Err(DecodeError::InvalidUtf8));
    let nul = dec(0x10, connect(b"MQTT", 4, 0x02).s(b"a\0"), V3);
    assert_eq!(nul, Err(DecodeError::InvalidUtf8));
    // Encoded surrogate halves are not UTF-8.
    let surrogate = dec(0x10, connect(b"MQTT", 4, 0x02).s(&[0xED, 0xA0, 0x80]), V3);
    assert_eq!(surrogate, Err(DecodeError::InvalidUtf8));
    let filter = dec(0x82, B::new().u16(1).s(b"a\0").u8(0), V3);
    assert_eq!(filter, Err(DecodeError::InvalidUtf8));
    let user = dec(0x10, connect(b"MQTT", 4, 0x82).s(b"c").s(&[0x80]), V3);
    assert_eq!(user, Err(DecodeError::InvalidUtf8));
}

#[test]
fn truncated_string_is_malformed() {
    malformed(dec(0x10, connect(b"MQTT", 4, 0x02).u16(5).raw(b"ab"), V3));
}

// ---- CONNECT ----

#[test]
fn connect_minimal_v3() {
    let Packet::Connect(c) = dec(0x10, connect(b"MQTT", 4, 0x02).s(b"cid"), V5).unwrap() else {
        panic!()
    };
    assert_eq!(c.protocol, Some(Protocol::V311));
    assert!(c.clean_start);
    assert_eq!((c.keep_alive, c.client_id.as_str()), (60, "cid"));
    assert!(c.will.is_none() && c.username.is_none() && c.password.is_none());
}

#[test]
fn connect_v31() {
    let Packet::Connect(c) = dec(0x10, connect(b"MQIsdp", 3, 0).s(b"c"), V3).unwrap() else {
        panic!()
    };
    assert_eq!(c.protocol, Some(Protocol::V31));
}

#[test]
fn connect_full_v5() {
    let b = connect(b"MQTT", 5, 0xEE) // user, password, will retain, will QoS 1, will, clean
        .props(
            B::new()
                .u8(0x11)
                .u32(30)
                .u8(0x21)
                .u16(10)
                .u8(0x15)
                .s(b"m")
                .u8(0x16)
                .s(b"d"),
        )
        .s(b"cid")
        .props(B::new().u8(0x18).u32(5).u8(0x03).s(b"text"))
        .s(b"will/t")
        .s(b"bye")
        .s(b"user")
        .s(b"pw");
    let Packet::Connect(c) = dec(0x10, b, V3).unwrap() else {
        panic!()
    };
    assert_eq!(c.protocol, Some(Protocol::V5));
    assert_eq!(c.properties.session_expiry_interval, Some(30));
    assert_eq!(c.properties.receive_maximum, Some(10));
    let w = c.will.unwrap();
    assert_eq!(
        (&*w.topic, &w.payload[..], w.qos, w.retain),
        ("will/t", &b"bye"[..], QoS::AtLeastOnce, true)
    );
    assert_eq!(w.properties.will_delay_interval, Some(5));
    assert_eq!(w.properties.content_type.as_deref(), Some("text"));
    assert_eq!(c.username.as_deref(), Some("user"));
    assert_eq!(c.password.as_deref(), Some(&b"pw"[..]));
}

#[test]
fn connect_protocol_name_and_level() {
    assert_eq!(
        dec(0x10, connect(b"MQTX", 4, 2).s(b"c"), V3),
        Err(DecodeError::InvalidProtocolName)
    );
    assert_eq!(
        dec(0x10, connect(b"mqtt", 4, 2).s(b"c"), V3),
        Err(DecodeError::InvalidProtocolName)
    );
    assert_eq!(
        dec(0x10, connect(b"", 4, 2).s(b"c"), V3),
        Err(DecodeError::InvalidProtocolName)
    );
    assert_eq!(
        dec(0x10, connect(b"MQTT", 6, 2).s(b"c"), V3),
        Err(DecodeError::UnsupportedProtocolVersion(6))
    );
    assert_eq!(
        dec(0x10, connect(b"MQTT", 3, 2).s(b"c"), V3),
        Err(DecodeError::UnsupportedProtocolVersion(3))
    );
    assert_eq!(
        dec(0x10, connect(b"MQIsdp", 4, 2).s(b"c"), V3),
        Err(DecodeError::UnsupportedProtocolVersion(4))
    );
    assert_eq!(
        DecodeError::UnsupportedProtocolVersion(6).reason_code(),
        ReasonCode::UNSUPPORTED_PROTOCOL_VERSION
    );
}

#[test]
fn connect_flag_rules() {
    malformed(dec(0x10, connect(b"MQTT", 4, 0x03).s(b"c"), V3)); // reserved bit
    malformed(dec(
        0x10,
        connect(b"MQTT", 5, 0x01).props(B::new()).s(b"c"),
        V5,
    ));
    // Will QoS 3.
    malformed(dec(
        0x10,
        connect(b"MQTT", 4, 0x1C).s(b"c").s(b"t").s(b"p"),
        V3,
    ));
    // Will QoS or retain without the will flag.
    malformed(dec(0x10, connect(b"MQTT", 4, 0x08).s(b"c"), V3));
    malformed(dec(0x10, connect(b"MQTT", 4, 0x20).s(b"c"), V3));
    // Password without user name: malformed in 3.1.1 and 3.1, allowed in 5.0.
    malformed(dec(0x10, connect(b"MQTT", 4, 0x40).s(b"c").s(b"pw"), V3));
    malformed(dec(0x10, connect(b"MQIsdp", 3, 0x40).s(b"c").s(b"pw"), V3));
    let Packet::Connect(c) = dec(
        0x10,
        connect(b"MQTT", 5, 0x40).props(B::new()).s(b"c").s(b"pw"),
        V3,
    )
    .unwrap() else {
        panic!()
    };
    assert_eq!(
        (c.username, c.password.as_deref()),
        (None, Some(&b"pw"[..]))
    );
}

#[test]
fn connect_will_topic_must_be_a_topic_name() {
    let r = dec(
        0x10,
        connect(b"MQTT", 4, 0x04).s(b"c").s(b"a/#").s(b"p"),
        V3,
    );
    assert_eq!(r, Err(DecodeError::TopicNameInvalid));
    let r = dec(0x10, connect(b"MQTT", 4, 0x04).s(b"c").s(b"").s(b"p"), V3);
    assert_eq!(r, Err(DecodeError::TopicNameInvalid));
}

#[test]
fn connect_trailing_bytes() {
    malformed(dec(0x10, connect(b"MQTT", 4, 0x02).s(b"c").u8(0), V3));
}

#[test]
fn connect_auth_data_needs_method() {
    protocol_err(dec(
        0x10,
        connect(b"MQTT", 5, 0x02)
            .props(B::new().u8(0x16).s(b"d"))
            .s(b"c"),
        V5,
    ));
}

// ---- properties ----

fn v5_puback(props: B) -> Result<Packet, DecodeError> {
    dec(0x40, B::new().u16(1).u8(0x10).props(props), V5)
}

#[test]
fn duplicate_property() {
    let r = v5_puback(B::new().u8(0x1F).s(b"a").u8(0x1F).s(b"b"));
    assert_eq!(r, Err(DecodeError::DuplicateProperty(0x1F)));
    assert_eq!(
        DecodeError::DuplicateProperty(0x1F).reason_code(),
        ReasonCode::PROTOCOL_ERROR
    );
    // User properties repeat freely.
    assert!(v5_puback(B::new().u8(0x26).s(b"a").s(b"1").u8(0x26).s(b"a").s(b"2")).is_ok());
    // Two topic aliases in PUBLISH.
    let r = dec(
        0x30,
        B::new()
            .s(b"t")
            .props(B::new().u8(0x23).u16(1).u8(0x23).u16(2)),
        V5,
    );
    assert_eq!(r, Err(DecodeError::DuplicateProperty(0x23)));
    // Two subscription identifiers: fine in PUBLISH, not in SUBSCRIBE.
    let r = dec(
        0x82,
        B::new()
            .u16(1)
            .props(B::new().u8(0x0B).varint(1).u8(0x0B).varint(2))
            .s(b"a")
            .u8(0),
        V5,
    );
    assert_eq!(r, Err(DecodeError::DuplicateProperty(0x0B)));
}

#[test]
fn property_not_allowed_and_unknown() {
    assert_eq!(
        v5_puback(B::new().u8(0x23).u16(1)),
        Err(DecodeError::PropertyNotAllowed(0x23))
    );
    let r = dec(
        0x10,
        connect(b"MQTT", 5, 2)
            .props(B::new().u8(0x23).u16(1))
            .s(b"c"),
        V5,
    );
    assert_eq!(r, Err(DecodeError::PropertyNotAllowed(0x23)));
    let r = dec(
        0x10,
        connect(b"MQTT", 5, 2)
            .props(B::new().u8(0x18).u32(1))
            .s(b"c"),
        V5,
    );
    assert_eq!(r, Err(DecodeError::PropertyNotAllowed(0x18))); // will delay outside the will
    assert_eq!(
        v5_puback(B::new().u8(0x7F).u8(0)),
        Err(DecodeError::UnknownProperty(0x7F))
    );
    assert_eq!(
        v5_puback(B::new().u8(0x00).u8(0)),
        Err(DecodeError::UnknownProperty(0x00))
    );
    assert_eq!(
        v5_puback(B::new().u8(0x80).u8(0x01)),
        Err(DecodeError::UnknownProperty(0x80))
    );
}

#[test]
fn property_values() {
    let publish = |p: B| dec(0x30, B::new().s(b"t").props(p), V5);
    protocol_err(publish(B::new().u8(0x01).u8(2))); // payload format indicator
    protocol_err(publish(B::new().u8(0x23).u16(0))); // topic alias 0
    protocol_err(publish(B::new().u8(0x0B).varint(0))); // subscription identifier 0
    assert!(publish(B::new().u8(0x0B).varint(MAX_VARIABLE_INT)).is_ok());
    malformed(publish(
        B::new().u8(0x0B).raw(&[0xFF, 0xFF, 0xFF, 0xFF, 0x01]),
    ));
    let conn = |p: B| dec(0x10, connect(b"MQTT", 5, 2).props(p).s(b"c"), V5);
    protocol_err(conn(B::new().u8(0x21).u16(0))); // receive maximum 0
    protocol_err(conn(B::new().u8(0x27).u32(0))); // maximum packet size 0
    protocol_err(conn(B::new().u8(0x17).u8(2))); // request problem information
    protocol_err(conn(B::new().u8(0x19).u8(2))); // request response information
    assert!(conn(B::new().u8(0x22).u16(0)).is_ok()); // topic alias maximum 0 is fine
    let connack = |p: B| dec(0x20, B::new().u8(0).u8(0).props(p), V5);
    for pid in [0x24, 0x25, 0x28, 0x29, 0x2A] {
        protocol_err(connack(B::new().u8(pid).u8(2)));
        assert!(connack(B::new().u8(pid).u8(1)).is_ok());
    }
}

#[test]
fn property_length_overruns() {
    // Property length says 10, only 3 bytes follow.
    malformed(dec(
        0x40,
        B::new().u16(1).u8(0x10).varint(10).u8(0x1F).u16(0),
        V5,
    ));
    // A property value crossing the end of the properties.
    malformed(dec(
        0x40,
        B::new()
            .u16(1)
            .u8(0x10)
            .varint(2)
            .u8(0x1F)
            .u16(1)
            .raw(b"ab"),
        V5,
    ));
}

// ---- acks ----

#[test]
fn pub_responses() {
    for (header, t) in [(0x40u8, 4u8), (0x50, 5), (0x62, 6), (0x70, 7)] {
        malformed(dec(header, B::new().u16(0), V3));
        malformed(dec(header, B::new().u16(0), V5));
        malformed(dec(header, B::new().u16(1).u8(0), V3)); // 3.1.1: exactly two bytes
        let ok = PubResponse {
            packet_id: 1,
            ..Default::default()
        };
        let expected = |r: PubResponse| match t {
            4 => Packet::PubAck(r),
            5 => Packet::PubRec(r),
            6 => Packet::PubRel(r),
            _ => Packet::PubComp(r),
        };
        assert_eq!(dec(header, B::new().u16(1), V5), Ok(expected(ok.clone())));
        assert_eq!(dec(header, B::new().u16(1), V3), Ok(expected(ok.clone())));
        assert_eq!(
            dec(header, B::new().u16(1).u8(0), V5),
            Ok(expected(ok.clone()))
        );
        assert_eq!(
            dec(header, B::new().u16(1).u8(0).props(B::new()), V5),
            Ok(expected(ok))
        );
        let bad = if t >= 6 { 0x10 } else { 0x92 };
        assert_eq!(
            dec(header, B::new().u16(1).u8(bad), V5),
            Err(DecodeError::InvalidReasonCode(bad))
        );
    }
    let r = dec(0x40, B::new().u16(1).u8(0x10), V5).unwrap();
    assert_eq!(
        r,
        Packet::PubAck(PubResponse {
            packet_id: 1,
            code: ReasonCode(0x10),
            ..Default::default()
        })
    );
    malformed(dec(0x40, B::new().u16(1).u8(0).props(B::new()).u8(0), V5)); // trailing
}

#[test]
fn connack() {
    let r = dec(0x20, B::new().u8(1).u8(0), V3).unwrap();
    assert_eq!(
        r,
        Packet::ConnAck(ConnAck {
            session_present: true,
            ..Default::default()
        })
    );
    assert_eq!(
        dec(0x20, B::new().u8(0).u8(6), V3),
        Err(DecodeError::InvalidReasonCode(6))
    );
    malformed(dec(0x20, B::new().u8(2).u8(0), V3));
    protocol_err(dec(0x20, B::new().u8(1).u8(5), V3));
    let r = dec(
        0x20,
        B::new().u8(0).u8(0x87).props(B::new().u8(0x1F).s(b"no")),
        V5,
    )
    .unwrap();
    let Packet::ConnAck(c) = r else { panic!() };
    assert_eq!(
        (c.code, c.properties.reason_string.as_deref()),
        (ReasonCode::NOT_AUTHORIZED, Some("no"))
    );
    assert_eq!(
        dec(0x20, B::new().u8(0).u8(0x01).props(B::new()), V5),
        Err(DecodeError::InvalidReasonCode(1))
    );
    malformed(dec(0x20, B::new().u8(0).u8(0).u8(0), V3));
}

// ---- SUBSCRIBE / UNSUBSCRIBE / SUBACK / UNSUBACK ----

#[test]
fn subscribe() {
    let b = B::new().u16(3).s(b"a/+").u8(1).s(b"a/#/b").u8(2);
    let Packet::Subscribe(s) = dec(0x82, b, V3).unwrap() else {
        panic!()
    };
    assert_eq!(s.packet_id, 3);
    // Wildcard syntax is left to the broker.
    assert_eq!(s.subscriptions[1].filter, "a/#/b");
    assert_eq!(s.subscriptions[1].options.qos, QoS::ExactlyOnce);

    let b = B::new()
        .u16(3)
        .props(B::new().u8(0x0B).varint(42))
        .s(b"x")
        .u8(0b0010_1101);
    let Packet::Subscribe(s) = dec(0x82, b, V5).unwrap() else {
        panic!()
    };
    assert_eq!(s.properties.subscription_identifiers, vec![42]);
    let o = s.subscriptions[0].options;
    assert_eq!(
        (o.qos, o.no_local, o.retain_as_published, o.retain_handling),
        (QoS::AtLeastOnce, true, true, 2)
    );
}

#[test]
fn subscribe_rules() {
    malformed(dec(0x82, B::new().u16(0).s(b"a").u8(0), V3)); // packet id 0
    protocol_err(dec(0x82, B::new().u16(1), V3)); // no filters
    protocol_err(dec(0x82, B::new().u16(1).props(B::new()), V5));
    malformed(dec(0x82, B::new().u16(1).s(b"a").u8(0x04), V3)); // 3.1.1 upper bits
    malformed(dec(0x82, B::new().u16(1).s(b"a").u8(0x03), V3)); // QoS 3
    malformed(dec(
        0x82,
        B::new().u16(1).props(B::new()).s(b"a").u8(0x40),
        V5,
    )); // bits 6-7
    malformed(dec(
        0x82,
        B::new().u16(1).props(B::new()).s(b"a").u8(0x30),
        V5,
    )); // retain handling 3
    malformed(dec(
        0x82,
        B::new().u16(1).props(B::new()).s(b"a").u8(0x03),
        V5,
    )); // QoS 3
    malformed(dec(0x82, B::new().u16(1).s(b"a"), V3)); // missing options byte
    let r = dec(
        0x82,
        B::new()
            .u16(1)
            .props(B::new().u8(0x0B).varint(0))
            .s(b"a")
            .u8(0),
        V5,
    );
    protocol_err(r);
    let r = dec(
        0x82,
        B::new()
            .u16(1)
            .props(B::new().u8(0x1F).s(b"x"))
            .s(b"a")
            .u8(0),
        V5,
    );
    assert_eq!(r, Err(DecodeError::PropertyNotAllowed(0x1F)));
}

#[test]
fn unsubscribe() {
    let Packet::Unsubscribe(u) = dec(0xA2, B::new().u16(4).s(b"a").s(b"b/#"), V3).unwrap() else {
        panic!()
    };
    assert_eq!(
        (u.packet_id, u.filters),
        (4, vec!["a".to_string(), "b/#".to_string()])
    );
    protocol_err(dec(0xA2, B::new().u16(4), V3));
    protocol_err(dec(0xA2, B::new().u16(4).props(B::new()), V5));
    malformed(dec(0xA2, B::new().u16(0).s(b"a"), V3));
    let r = dec(
        0xA2,
        B::new()
            .u16(4)
            .props(B::new().u8(0x26).s(b"k").s(b"v"))
            .s(b"a"),
        V5,
    )
    .unwrap();
    let Packet::Unsubscribe(u) = r else { panic!() };
    assert_eq!(
        u.properties.user_properties,
        vec![("k".to_string(), "v".to_string())]
    );
}

#[test]
fn suback_and_unsuback() {
    let Packet::SubAck(s) = dec(0x90, B::new().u16(2).raw(&[0, 1, 2, 0x80]), V3).unwrap() else {
        panic!()
    };
    assert_eq!(
        s.codes,
        vec![
            ReasonCode(0),
            ReasonCode(1),
            ReasonCode(2),
            ReasonCode(0x80)
        ]
    );
    assert_eq!(
        dec(0x90, B::new().u16(2).raw(&[0x8F]), V3),
        Err(DecodeError::InvalidReasonCode(0x8F))
    );
    assert!(dec(0x90, B::new().u16(2).props(B::new()).raw(&[0x8F]), V5).is_ok());
    assert_eq!(
        dec(0x90, B::new().u16(2).props(B::new()).raw(&[0x03]), V5),
        Err(DecodeError::InvalidReasonCode(3))
    );
    protocol_err(dec(0x90, B::new().u16(2), V3));

    let Packet::UnsubAck(u) = dec(0xB0, B::new().u16(2), V3).unwrap() else {
        panic!()
    };
    assert!(u.codes.is_empty());
    malformed(dec(0xB0, B::new().u16(2).u8(0), V3));
    let Packet::UnsubAck(u) =
        dec(0xB0, B::new().u16(2).props(B::new()).raw(&[0, 0x11]), V5).unwrap()
    else {
        panic!()
    };
    assert_eq!(
        u.codes,
        vec![ReasonCode::SUCCESS, ReasonCode::NO_SUBSCRIPTION_EXISTED]
    );
    assert_eq!(
        dec(0xB0, B::new().u16(2).props(B::new()).raw(&[0x01]), V5),
        Err(DecodeError::InvalidReasonCode(1))
    );
}

// ---- PINGREQ / PINGRESP / DISCONNECT ----

#[test]
fn ping_and_disconnect() {
    assert_eq!(dec(0xC0, B::new(), V3), Ok(Packet::PingReq));
    assert_eq!(dec(0xD0, B::new(), V5), Ok(Packet::PingResp));
    malformed(dec(0xC0, B::new().u8(0), V3));
    malformed(dec(0xD0, B::new().u8(0), V5));
    assert_eq!(
        dec(0xE0, B::new(), V3),
        Ok(Packet::Disconnect(Disconnect::default()))
    );
    malformed(dec(0xE0, B::new().u8(0), V3));
    assert_eq!(
        dec(0xE0, B::new(), V5),
        Ok(Packet::Disconnect(Disconnect::default()))
    );
    let r = dec(0xE0, B::new().u8(0x04), V5);
    assert_eq!(
        r,
        Ok(Packet::Disconnect(Disconnect {
            code: ReasonCode::DISCONNECT_WITH_WILL,
            ..Default::default()
        }))
    );
    let r = dec(
        0xE0,
        B::new().u8(0x8E).props(B::new().u8(0x1C).s(b"other")),
        V5,
    )
    .unwrap();
    let Packet::Disconnect(d) = r else { panic!() };
    assert_eq!(d.properties.server_reference.as_deref(), Some("other"));
    assert_eq!(
        dec(0xE0, B::new().u8(0x01), V5),
        Err(DecodeError::InvalidReasonCode(1))
    );
    let r = dec(0xE0, B::new().u8(0).props(B::new().u8(0x23).u16(1)), V5);
    assert_eq!(r, Err(DecodeError::PropertyNotAllowed(0x23)));
}

// ---- Decoder ----

#[test]
fn decoder_streams_and_learns_protocol() {
    let connect_v5 = connect(b"MQTT", 5, 2).props(B::new()).s(b"c").0;
    let mut wire = vec![0x10, connect_v5.len() as u8];
    wire.extend_from_slice(&connect_v5);
    // A v5 PUBACK with a reason code: only valid once the decoder knows it is v5.
    wire.extend_from_slice(&[0x40, 0x03, 0x00, 0x01, 0x10]);
    wire.extend_from_slice(&[0xC0, 0x00]);

    let mut d = Decoder::new(Protocol::V311, 1024);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for &b in &wire {
        buf.extend_from_slice(&[b]);
        while let Some(p) = d.decode(&mut buf).unwrap() {
            out.push(p);
        }
    }
    assert!(buf.is_empty());
    assert_eq!(out.len(), 3);
    assert_eq!(d.protocol, Protocol::V5);
    assert!(matches!(
        out[1],
        Packet::PubAck(PubResponse {
            code: ReasonCode(0x10),
            ..
        })
    ));
    assert_eq!(out[2], Packet::PingReq);
}

#[test]
fn decoder_rejects_too_large_before_body() {
    let mut d = Decoder::new(Protocol::V311, 10);
    let mut buf = BytesMut::from(&[0x30, 0x20][..]);
    assert_eq!(
        d.decode(&mut buf),
        Err(DecodeError::PacketTooLarge { size: 34, max: 10 })
    );
    let mut buf = BytesMut::from(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF][..]);
    assert_eq!(d.decode(&mut buf), Err(DecodeError::MalformedLength));
}

#[test]
fn decoder_waits_for_body() {
    let mut d = Decoder::new(Protocol::V311, 1024);
    let mut buf = BytesMut::from(&[0x30, 0x05, 0x00, 0x01, b't'][..]);
    assert_eq!(d.decode(&mut buf), Ok(None));
    assert_eq!(buf.len(), 5);
    assert!(buf.capacity() >= 7);
    buf.extend_from_slice(b"xy");
    let Some(Packet::Publish(p)) = d.decode(&mut buf).unwrap() else {
        panic!()
    };
    assert_eq!((&*p.topic, &p.payload[..]), ("t", &b"xy"[..]));
    assert_eq!(d.decode(&mut buf), Ok(None));
}

#[test]
fn decoder_learns_protocol_from_a_bad_connect() {
    // A v5 CONNECT with a property not allowed there: the error comes with the protocol known.
    let body = connect(b"MQTT", 5, 2)
        .props(B::new().u8(0x23).u16(1))
        .s(b"c")
        .0;
    let mut buf = BytesMut::from(&[0x10, body.len() as u8][..]);
    buf.extend_from_slice(&body);
    let mut d = Decoder::new(Protocol::V311, 1024);
    assert_eq!(
        d.decode(&mut buf),
        Err(DecodeError::PropertyNotAllowed(0x23))
    );
    assert_eq!(d.protocol, Protocol::V5);
    // An unknown level leaves the protocol alone.
    let body = connect(b"MQTT", 9, 2).s(b"c").0;
    let mut buf = BytesMut::from(&[0x10, body.len() as u8][..]);
    buf.extend_from_slice(&body);
    let mut d = Decoder::new(Protocol::V311, 1024);
    assert_eq!(
        d.decode(&mut buf),
        Err(DecodeError::UnsupportedProtocolVersion(9))
    );
    assert_eq!(d.protocol, Protocol::V311);
}

#[test]
fn connect_protocol_peek() {
    assert_eq!(
        connect_protocol(&connect(b"MQTT", 4, 0).0),
        Some(Protocol::V311)
    );
    assert_eq!(
        connect_protocol(&connect(b"MQTT", 5, 0).0),
        Some(Protocol::V5)
    );
    assert_eq!(
        connect_protocol(&connect(b"MQIsdp", 3, 0).0),
        Some(Protocol::V31)
    );
    assert_eq!(connect_protocol(&connect(b"MQIsdp", 5, 0).0), None);
    assert_eq!(connect_protocol(&[0, 4, b'M', b'Q', b'T', b'T']), None);
    assert_eq!(connect_protocol(&[0]), None);
    assert_eq!(connect_protocol(&[]), None);
}

#[test]
fn decoder_reserve_is_capped() {
    let mut d = Decoder::new(Protocol::V311, usize::MAX);
    // Announces a 256 MiB PUBLISH.
    let mut buf = BytesMut::from(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F][..]);
    assert_eq!(d.decode(&mut buf), Ok(None));
    assert!(buf.capacity() < 1 << 20, "reserved {}", buf.capacity());
}

#[test]
fn garbage_is_refused_from_its_first_byte() {
    // An HTTP request and a TLS ClientHello on the MQTT port: no body is waited for.
    assert!(matches!(
        read_frame(b"G", 1 << 20),
        Err(DecodeError::Malformed(_))
    ));
    assert!(matches!(
        read_frame(&[0x16, 0x03], 1 << 20),
        Err(DecodeError::Malformed(_))
    ));
    assert!(matches!(
        read_frame(&[0x00], 1 << 20),
        Err(DecodeError::Malformed(_))
    ));
    assert!(
        matches!(read_frame(&[0x36], 1 << 20), Err(DecodeError::Malformed(_))),
        "PUBLISH QoS 3"
    );
    // Valid headers still wait for their length.
    assert_eq!(read_frame(&[0x30], 1 << 20), Ok(None));
    assert_eq!(read_frame(&[0x82], 1 << 20), Ok(None));
}

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::*;
use crate::decode::{decode_packet, read_frame};
use crate::packet::{
    Auth, ConnAck, Disconnect, Packet, PubResponse, SubAck, Subscribe, Subscription, UnsubAck,
    Unsubscribe, Will,
};

fn enc(p: &Packet, proto: Protocol) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode_packet(p, proto, &mut out);
    assert_eq!(
        out.len(),
        encoded_len(p, proto),
        "encoded_len of {}",
        p.name()
    );
    out.to_vec()
}

/// Encodes, checks the bytes, decodes them back and checks the packet.
fn check(p: &Packet, proto: Protocol, wire: &[u8]) {
    assert_eq!(enc(p, proto), wire, "{}", p.name());
    let frame = read_frame(wire, usize::MAX).unwrap().unwrap();
    assert_eq!(frame.len(), wire.len());
    let back = decode_packet(
        frame.header,
        Bytes::copy_from_slice(&wire[frame.header_len..]),
        proto,
    )
    .unwrap();
    assert_eq!(&back, p);
}

#[test]
fn varints() {
    for (v, bytes) in [
        (0usize, &[0x00][..]),
        (127, &[0x7F]),
        (128, &[0x80, 0x01]),
        (16_383, &[0xFF, 0x7F]),
        (16_384, &[0x80, 0x80, 0x01]),
        (2_097_151, &[0xFF, 0xFF, 0x7F]),
        (2_097_152, &[0x80, 0x80, 0x80, 0x01]),
        (MAX_VARIABLE_INT, &[0xFF, 0xFF, 0xFF, 0x7F]),
    ] {
        let mut out = BytesMut::new();
        put_varint(&mut out, v);
        assert_eq!(&out[..], bytes, "{v}");
        assert_eq!(varint_len(v), bytes.len());
    }
}

#[test]
fn pings() {
    check(&Packet::PingReq, Protocol::V311, &[0xC0, 0x00]);
    check(&Packet::PingResp, Protocol::V5, &[0xD0, 0x00]);
}

#[test]
fn connect_v311_bytes() {
    let c = Connect {
        protocol: Some(Protocol::V311),
        clean_start: true,
        keep_alive: 60,
        client_id: "c".into(),
        username: Some("u".into()),
        password: Some(Bytes::from_static(b"p")),
        ..Default::default()
    };
    let wire = [
        0x10, 19, 0, 4, b'M', b'Q', b'T', b'T', 4, 0xC2, 0, 60, 0, 1, b'c', 0, 1, b'u', 0, 1, b'p',
    ];
    check(&Packet::Connect(Box::new(c)), Protocol::V5, &wire);
}

#[test]
fn connect_v31_uses_mqisdp() {
    let c = Connect {
        protocol: Some(Protocol::V31),
        client_id: "c".into(),
        ..Default::default()
    };
    let wire = [
        0x10, 15, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3, 0, 0, 0, 0, 1, b'c',
    ];
    check(&Packet::Connect(Box::new(c)), Protocol::V311, &wire);
    // Without its own protocol, CONNECT takes the one given.
    let c = Connect {
        client_id: "c".into(),
        ..Default::default()
    };
    assert_eq!(enc(&Packet::Connect(Box::new(c)), Protocol::V31), wire);
}

#[test]
fn connect_v5_with_will() {
    let c = Connect {
        protocol: Some(Protocol::V5),
        clean_start: false,
        keep_alive: 0,
        client_id: String::new(),
        will: Some(Will {
            topic: Arc::from("w"),
            payload: Bytes::from_static(b"x"),
            qos: QoS::ExactlyOnce,
            retain: true,
            properties: Properties {
                will_delay_interval: Some(1),
                ..Default::default()
            },
        }),
        properties: Properties {
            session_expiry_interval: Some(2),
            ..Default::default()
        },
        ..Default::default()
    };
    let wire = [
        0x10, 30, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x34, 0,
        0, // header, flags: will, QoS 2, retain
        5, 0x11, 0, 0, 0, 2, // properties
        0, 0, // client id
        5, 0x18, 0, 0, 0, 1, // will properties
        0, 1, b'w', 0, 1, b'x',
    ];
    check(&Packet::Connect(Box::new(c)), Protocol::V5, &wire);
}

#[test]
fn connack() {
    let c = ConnAck {
        session_present: true,
        ..Default::default()
    };
    check(
        &Packet::ConnAck(c.clone()),
        Protocol::V311,
        &[0x20, 2, 1, 0],
    );
    check(&Packet::ConnAck(c), Protocol::V5, &[0x20, 3, 1, 0, 0]);
    let c = ConnAck {
        code: ReasonCode::V3_NOT_AUTHORIZED,
        ..Default::default()
    };
    check(&Packet::ConnAck(c), Protocol::V311, &[0x20, 2, 0, 5]);
}

#[test]
fn publish() {
    let p = Publish {
        qos: QoS::AtLeastOnce,
        retain: true,
        topic: Arc::from("t"),
        packet_id: 0x0102,
        payload: Bytes::from_static(b"hi"),
        ..Default::default()
    };
    check(
        &Packet::Publish(p.clone()),
        Protocol::V311,
        &[0x33, 7, 0, 1, b't', 1, 2, b'h', b'i'],
    );
    check(
        &Packet::Publish(p.clone()),
        Protocol::V5,
        &[0x33, 8, 0, 1, b't', 1, 2, 0, b'h', b'i'],
    );
    let q0 = Publish {
        qos: QoS::AtMostOnce,
        packet_id: 0,
        retain: false,
        ..p.clone()
    };
    check(
        &Packet::Publish(q0),
        Protocol::V311,
        &[0x30, 5, 0, 1, b't', b'h', b'i'],
    );
    let dup = Publish {
        dup: true,
        qos: QoS::ExactlyOnce,
        ..p
    };
    assert_eq!(enc(&Packet::Publish(dup), Protocol::V311)[0], 0x3D);
}

#[test]
fn encode_publish_matches_encode_packet() {
    let p = Publish {
        qos: QoS::ExactlyOnce,
        topic: Arc::from("a/b"),
        packet_id: 9,
        payload: Bytes::from(vec![7u8; 300]),
        properties: Properties {
            subscription_identifiers: vec![1, 200_000],
            user_properties: vec![("k".into(), "v".into())],
            ..Default::default()
        },
        ..Default::default()
    };
    for proto in [Protocol::V31, Protocol::V311, Protocol::V5] {
        let mut fast = BytesMut::new();
        encode_publish(&p, proto, &mut fast);
        assert_eq!(fast.len(), publish_len(&p, proto));
        assert_eq!(&fast[..], &enc(&Packet::Publish(p.clone()), proto)[..]);
    }
    // Appends after what is already there.
    let mut out = BytesMut::from(&b"xx"[..]);
    encode_publish(&p, Protocol::V311, &mut out);
    assert_eq!(out.len(), 2 + publish_len(&p, Protocol::V311));
}

#[test]
fn pub_responses_short_forms() {
    let ok = PubResponse {
        packet_id: 1,
        ..Default::default()
    };
    check(&Packet::PubAck(ok.clone()), Protocol::V5, &[0x40, 2, 0, 1]);
    check(
        &Packet::PubRec(ok.clone()),
        Protocol::V311,
        &[0x50, 2, 0, 1],
    );
    check(&Packet::PubRel(ok.clone()), Protocol::V5, &[0x62, 2, 0, 1]);
    check(&Packet::PubComp(ok), Protocol::V5, &[0x70, 2, 0, 1]);
    let code_only = PubResponse {
        packet_id: 1,
        code: ReasonCode::NO_MATCHING_SUBSCRIBERS,
        ..Default::default()
    };
    check(
        &Packet::PubAck(code_only.clone()),
        Protocol::V5,
        &[0x40, 3, 0, 1, 0x10],
    );
    // 3.1.1 has no reason code.
    assert_eq!(
        enc(&Packet::PubAck(code_only), Protocol::V311),
        [0x40, 2, 0, 1]
    );
    let with_props = PubResponse {
        packet_id: 1,
        code: ReasonCode::SUCCESS,
        properties: Properties {
            reason_string: Some("r".into()),
            ..Default::default()
        },
    };
    check(
        &Packet::PubAck(with_props),
        Protocol::V5,
        &[0x40, 8, 0, 1, 0, 4, 0x1F, 0, 1, b'r'],
    );
}

#[test]
fn subscribe_and_unsubscribe() {
    let options = SubOptions {
        qos: QoS::AtLeastOnce,
        no_local: true,
        retain_as_published: true,
        retain_handling: 2,
    };
    let s = Subscribe {
        packet_id: 5,
        subscriptions: vec![Subscription {
            filter: "a/#".into(),
            options,
        }],
        properties: Properties::default(),
    };
    check(
        &Packet::Subscribe(s.clone()),
        Protocol::V5,
        &[0x82, 9, 0, 5, 0, 0, 3, b'a', b'/', b'#', 0x2D],
    );
    let v3 = Subscribe {
        subscriptions: vec![Subscription {
            filter: "a/#".into(),
            options: SubOptions {
                qos: QoS::AtLeastOnce,
                ..Default::default()
            },
        }],
        ..s
    };
    check(
        &Packet::Subscribe(v3),
        Protocol::V311,
        &[0x82, 8, 0, 5, 0, 3, b'a', b'/', b'#', 0x01],
    );
    let u = Unsubscribe {
        packet_id: 5,
        filters: vec!["a".into()],
        properties: Properties::default(),
    };
    check(
        &Packet::Unsubscribe(u.clone()),
        Protocol::V311,
        &[0xA2, 5, 0, 5, 0, 1, b'a'],
    );
    check(
        &Packet::Unsubscribe(u),
        Protocol::V5,
        &[0xA2, 6, 0, 5, 0, 0, 1, b'a'],
    );
}

#[test]
fn suback_and_unsuback() {
    let s = SubAck {
        packet_id: 5,
        codes: vec![ReasonCode(1), ReasonCode(0x80)],
        properties: Properties::default(),
    };
    check(
        &Packet::SubAck(s.clone()),
        Protocol::V311,
        &[0x90, 4, 0, 5, 1, 0x80],
    );
    check(
        &Packet::SubAck(s),
        Protocol::V5,
        &[0x90, 5, 0, 5, 0, 1, 0x80],
    );
    let u = UnsubAck {
        packet_id: 5,
        codes: vec![ReasonCode(0x11)],
        properties: Properties::default(),
    };
    check(
        &Packet::UnsubAck(u.clone()),
        Protocol::V5,
        &[0xB0, 4, 0, 5, 0, 0x11],
    );
    // 3.1.1 UNSUBACK carries no codes.
    assert_eq!(enc(&Packet::UnsubAck(u), Protocol::V311), [0xB0, 2, 0, 5]);
}

#[test]
fn disconnect_and_auth() {
    check(
        &Packet::Disconnect(Disconnect::default()),
        Protocol::V5,
        &[0xE0, 0],
    );
    check(
        &Packet::Disconnect(Disconnect::default()),
        Protocol::V311,
        &[0xE0, 0],
    );
    let d = Disconnect {
        code: ReasonCode::SESSION_TAKEN_OVER,
        ..Default::default()
    };
    check(
        &Packet::Disconnect(d.clone()),
        Protocol::V5,
        &[0xE0, 1, 0x8E],
    );
    assert_eq!(enc(&Packet::Disconnect(d), Protocol::V311), [0xE0, 0]);
    let d = Disconnect {
        code: ReasonCode::SUCCESS,
        properties: Properties {
            session_expiry_interval: Some(0),
            ..Default::default()
        },
    };
    check(
        &Packet::Disconnect(d),
        Protocol::V5,
        &[0xE0, 7, 0, 5, 0x11, 0, 0, 0, 0],
    );
    check(&Packet::Auth(Auth::default()), Protocol::V5, &[0xF0, 0]);
    let a = Auth {
        code: ReasonCode::REAUTHENTICATE,
        ..Default::default()
    };
    check(&Packet::Auth(a), Protocol::V5, &[0xF0, 1, 0x19]);
}

#[test]
fn all_properties_roundtrip_through_the_length() {
    let p = Properties {
        payload_format_indicator: Some(1),
        message_expiry_interval: Some(1),
        content_type: Some("c".into()),
        response_topic: Some(Arc::from("r")),
        correlation_data: Some(Bytes::from_static(b"d")),
        subscription_identifiers: vec![1, 128, 16_384, MAX_VARIABLE_INT as u32],
        session_expiry_interval: Some(1),
        assigned_client_identifier: Some("a".into()),
        server_keep_alive: Some(1),
        authentication_method: Some("m".into()),
        authentication_data: Some(Bytes::from_static(b"x")),
        request_problem_information: Some(0),
        will_delay_interval: Some(1),
        request_response_information: Some(1),
        response_information: Some("i".into()),
        server_reference: Some("s".into()),
        reason_string: Some("why".into()),
        receive_maximum: Some(1),
        topic_alias_maximum: Some(0),
        topic_alias: Some(1),
        maximum_qos: Some(1),
        retain_available: Some(0),
        user_properties: vec![("k".into(), "v".into()), ("k".into(), String::new())],
        maximum_packet_size: Some(1),
        wildcard_subscription_available: Some(1),
        subscription_identifier_available: Some(0),
        shared_subscription_available: Some(1),
    };
    let mut out = BytesMut::new();
    put_properties(&mut out, &p);
    let len = properties_len(&p);
    assert_eq!(out.len(), varint_len(len) + len);
}

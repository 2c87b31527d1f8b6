//! Property tests: every packet type survives encode → decode unchanged under 3.1, 3.1.1 and 5.0,
//! `encoded_len` is exact, the decoder never panics on arbitrary bytes, and a stream of packets
//! split at arbitrary points decodes to the same packets.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use mqtt_codec::encode::{encode_publish, publish_len};
use mqtt_codec::properties::{allowed_in, PropertyContext};
use mqtt_codec::*;
use proptest::prelude::*;
use proptest::sample::select;

// ---- leaves ----

/// A UTF-8 string without U+0000, short but with any other characters.
fn string() -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>().prop_filter("no NUL", |c| *c != '\0'), 0..8)
        .prop_map(String::from_iter)
}

/// A topic name: non-empty, no wildcards, no NUL; often with levels.
fn topic() -> impl Strategy<Value = Arc<str>> {
    let level = prop::collection::vec(
        any::<char>().prop_filter("topic char", |c| !matches!(c, '\0' | '+' | '#')),
        0..4,
    )
    .prop_map(String::from_iter);
    prop::collection::vec(level, 1..4)
        .prop_map(|levels| levels.join("/"))
        .prop_filter("non-empty", |t| !t.is_empty())
        .prop_map(Arc::from)
}

fn binary() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..16).prop_map(Bytes::from)
}

fn qos() -> impl Strategy<Value = QoS> {
    select(vec![QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce])
}

fn packet_id() -> impl Strategy<Value = u16> {
    1..=u16::MAX
}

/// A reason code valid in `packet_type` (v5).
fn code_for(packet_type: u8) -> impl Strategy<Value = ReasonCode> {
    let codes: Vec<ReasonCode> = (0..=255u8)
        .map(ReasonCode)
        .filter(|c| c.valid_for(packet_type))
        .collect();
    select(codes)
}

// ---- properties ----

/// Number of property kinds known to [`set_property`].
const PROPERTY_KINDS: usize = 27;

/// Sets property number `kind` (0..27) from the raw material, with a valid value.
fn set_property(
    p: &mut Properties,
    kind: usize,
    n: u32,
    s: String,
    s2: String,
    b: Bytes,
    ctx: PropertyContext,
) {
    let flag = (n & 1) as u8;
    let nz16 = (n as u16).max(1);
    match kind {
        0 => p.payload_format_indicator = Some(flag),
        1 => p.message_expiry_interval = Some(n),
        2 => p.content_type = Some(s),
        3 => p.response_topic = Some(Arc::from(s)),
        4 => p.correlation_data = Some(b),
        5 => {
            let id = n % 268_435_455 + 1;
            if ctx == PropertyContext::Subscribe {
                p.subscription_identifiers = vec![id];
            } else {
                p.subscription_identifiers.push(id);
            }
        }
        6 => p.session_expiry_interval = Some(n),
        7 => p.assigned_client_identifier = Some(s),
        8 => p.server_keep_alive = Some(n as u16),
        9 => p.authentication_method = Some(s),
        10 => p.authentication_data = Some(b),
        11 => p.request_problem_information = Some(flag),
        12 => p.will_delay_interval = Some(n),
        13 => p.request_response_information = Some(flag),
        14 => p.response_information = Some(s),
        15 => p.server_reference = Some(s),
        16 => p.reason_string = Some(s),
        17 => p.receive_maximum = Some(nz16),
        18 => p.topic_alias_maximum = Some(n as u16),
        19 => p.topic_alias = Some(nz16),
        20 => p.maximum_qos = Some(flag),
        21 => p.retain_available = Some(flag),
        22 => p.user_properties.push((s, s2)),
        23 => p.maximum_packet_size = Some(n.max(1)),
        24 => p.wildcard_subscription_available = Some(flag),
        25 => p.subscription_identifier_available = Some(flag),
        _ => p.shared_subscription_available = Some(flag),
    }
}

/// The property identifier of kind `kind`, in the order of [`set_property`].
const KIND_IDS: [u8; PROPERTY_KINDS] = [
    0x01, 0x02, 0x03, 0x08, 0x09, 0x0B, 0x11, 0x12, 0x13, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1A, 0x1C,
    0x1F, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2A,
];

/// Any set of properties allowed in `ctx`, with valid values.
fn properties(ctx: PropertyContext) -> impl Strategy<Value = Properties> {
    let kinds: Vec<usize> = (0..PROPERTY_KINDS)
        .filter(|&k| allowed_in(KIND_IDS[k], ctx))
        .collect();
    let item = (select(kinds), any::<u32>(), string(), string(), binary());
    prop::collection::vec(item, 0..6).prop_map(move |items| {
        let mut p = Properties::default();
        for (kind, n, s, s2, b) in items {
            set_property(&mut p, kind, n, s, s2, b, ctx);
        }
        if ctx == PropertyContext::Connect
            && p.authentication_data.is_some()
            && p.authentication_method.is_none()
        {
            p.authentication_method = Some("method".into());
        }
        p
    })
}

/// Properties for `ctx` under v5, none under 3.1.1.
fn props_if(v5: bool, ctx: PropertyContext) -> BoxedStrategy<Properties> {
    if v5 {
        properties(ctx).boxed()
    } else {
        Just(Properties::default()).boxed()
    }
}

// ---- packets ----

fn will(v5: bool) -> impl Strategy<Value = Will> {
    (
        topic(),
        binary(),
        qos(),
        any::<bool>(),
        props_if(v5, PropertyContext::Will),
    )
        .prop_map(|(topic, payload, qos, retain, properties)| Will {
            topic,
            payload,
            qos,
            retain,
            properties,
        })
}

fn connect(protocol: Protocol) -> impl Strategy<Value = Packet> {
    let v5 = protocol.is_v5();
    (
        any::<bool>(),
        any::<u16>(),
        string(),
        prop::option::of(will(v5)),
        prop::option::of(string()),
        prop::option::of(binary()),
        props_if(v5, PropertyContext::Connect),
    )
        .prop_map(
            move |(clean_start, keep_alive, client_id, will, username, password, properties)| {
                // 3.1.1 forbids a password without a user name.
                let password = if v5 || username.is_some() {
                    password
                } else {
                    None
                };
                Packet::Connect(Box::new(Connect {
                    protocol: Some(protocol),
                    clean_start,
                    keep_alive,
                    client_id,
                    will,
                    username,
                    password,
                    properties,
                }))
            },
        )
}

fn connack(v5: bool) -> impl Strategy<Value = Packet> {
    let code = if v5 {
        code_for(2).boxed()
    } else {
        (0..=5u8).prop_map(ReasonCode).boxed()
    };
    (any::<bool>(), code, props_if(v5, PropertyContext::ConnAck)).prop_map(
        |(sp, code, properties)| {
            Packet::ConnAck(ConnAck {
                session_present: sp && code.0 == 0,
                code,
                properties,
            })
        },
    )
}

fn publish(v5: bool) -> impl Strategy<Value = Publish> {
    (
        any::<bool>(),
        qos(),
        any::<bool>(),
        topic(),
        any::<bool>(),
        packet_id(),
        prop::collection::vec(any::<u8>(), 0..64),
        props_if(v5, PropertyContext::Publish),
    )
        .prop_map(
            |(dup, qos, retain, topic, empty_topic, pid, payload, properties)| {
                let at_least_once = qos != QoS::AtMostOnce;
                // An empty topic is only valid with a topic alias (v5).
                let topic = if empty_topic && properties.topic_alias.is_some() {
                    Arc::from("")
                } else {
                    topic
                };
                Publish {
                    dup: dup && at_least_once,
                    qos,
                    retain,
                    topic,
                    packet_id: if at_least_once { pid } else { 0 },
                    payload: Bytes::from(payload),
                    properties,
                }
            },
        )
}

fn pub_response(v5: bool, packet_type: u8) -> impl Strategy<Value = Packet> {
    let code = if v5 {
        code_for(packet_type).boxed()
    } else {
        Just(ReasonCode::SUCCESS).boxed()
    };
    (packet_id(), code, props_if(v5, PropertyContext::Ack)).prop_map(
        move |(packet_id, code, properties)| {
            let r = PubResponse {
                packet_id,
                code,
                properties,
            };
            match packet_type {
                4 => Packet::PubAck(r),
                5 => Packet::PubRec(r),
                6 => Packet::PubRel(r),
                _ => Packet::PubComp(r),
            }
        },
    )
}

fn sub_options(v5: bool) -> impl Strategy<Value = SubOptions> {
    (qos(), any::<bool>(), any::<bool>(), 0..=2u8).prop_map(move |(qos, no_local, rap, rh)| {
        if v5 {
            SubOptions {
                qos,
                no_local,
                retain_as_published: rap,
                retain_handling: rh,
            }
        } else {
            SubOptions {
                qos,
                ..SubOptions::default()
            }
        }
    })
}

fn subscribe(v5: bool) -> impl Strategy<Value = Packet> {
    let sub =
        (string(), sub_options(v5)).prop_map(|(filter, options)| Subscription { filter, options });
    (
        packet_id(),
        prop::collection::vec(sub, 1..5),
        props_if(v5, PropertyContext::Subscribe),
    )
        .prop_map(|(packet_id, subscriptions, properties)| {
            Packet::Subscribe(Subscribe {
                packet_id,
                subscriptions,
                properties,
            })
        })
}

fn suback(v5: bool) -> impl Strategy<Value = Packet> {
    let code = if v5 {
        code_for(9).boxed()
    } else {
        select(vec![0u8, 1, 2, 0x80]).prop_map(ReasonCode).boxed()
    };
    (
        packet_id(),
        prop::collection::vec(code, 1..5),
        props_if(v5, PropertyContext::Ack),
    )
        .prop_map(|(packet_id, codes, properties)| {
            Packet::SubAck(SubAck {
                packet_id,
                codes,
                properties,
            })
        })
}

fn unsubscribe(v5: bool) -> impl Strategy<Value = Packet> {
    (
        packet_id(),
        prop::collection::vec(string(), 1..5),
        props_if(v5, PropertyContext::Unsubscribe),
    )
        .prop_map(|(packet_id, filters, properties)| {
            Packet::Unsubscribe(Unsubscribe {
                packet_id,
                filters,
                properties,
            })
        })
}

fn unsuback(v5: bool) -> impl Strategy<Value = Packet> {
    let codes = if v5 {
        prop::collection::vec(code_for(11), 1..5).boxed()
    } else {
        Just(Vec::new()).boxed()
    };
    (packet_id(), codes, props_if(v5, PropertyContext::Ack)).prop_map(
        |(packet_id, codes, properties)| {
            Packet::UnsubAck(UnsubAck {
                packet_id,
                codes,
                properties,
            })
        },
    )
}

fn disconnect(v5: bool) -> BoxedStrategy<Packet> {
    if !v5 {
        return Just(Packet::Disconnect(Disconnect::default())).boxed();
    }
    (code_for(14), properties(PropertyContext::Disconnect))
        .prop_map(|(code, properties)| Packet::Disconnect(Disconnect { code, properties }))
        .boxed()
}

fn auth() -> impl Strategy<Value = Packet> {
    (code_for(15), properties(PropertyContext::Auth))
        .prop_map(|(code, properties)| Packet::Auth(Auth { code, properties }))
}

/// Any packet valid under `protocol` (CONNECT carries `protocol` itself).
fn packet(protocol: Protocol) -> BoxedStrategy<Packet> {
    let v5 = protocol.is_v5();
    let mut arms: Vec<BoxedStrategy<Packet>> = vec![
        connect(protocol).boxed(),
        connack(v5).boxed(),
        publish(v5).prop_map(Packet::Publish).boxed(),
        pub_response(v5, 4).boxed(),
        pub_response(v5, 5).boxed(),
        pub_response(v5, 6).boxed(),
        pub_response(v5, 7).boxed(),
        subscribe(v5).boxed(),
        suback(v5).boxed(),
        unsubscribe(v5).boxed(),
        unsuback(v5).boxed(),
        Just(Packet::PingReq).boxed(),
        Just(Packet::PingResp).boxed(),
        disconnect(v5),
    ];
    if v5 {
        arms.push(auth().boxed());
    }
    prop::strategy::Union::new(arms).boxed()
}

fn any_protocol() -> impl Strategy<Value = Protocol> {
    select(vec![Protocol::V31, Protocol::V311, Protocol::V5])
}

fn protocol_and_packet() -> impl Strategy<Value = (Protocol, Packet)> {
    any_protocol().prop_flat_map(|p| (Just(p), packet(p)))
}

fn protocol_and_packets() -> impl Strategy<Value = (Protocol, Vec<Packet>)> {
    any_protocol().prop_flat_map(|p| (Just(p), prop::collection::vec(packet(p), 1..8)))
}

fn decode_one(bytes: &[u8], protocol: Protocol) -> Result<Option<Packet>, DecodeError> {
    let mut buf = BytesMut::from(bytes);
    let mut d = Decoder::new(protocol, usize::MAX);
    let p = d.decode(&mut buf)?;
    assert!(buf.is_empty(), "bytes left over");
    Ok(p)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn roundtrip((protocol, p) in protocol_and_packet()) {
        let mut out = BytesMut::new();
        encode_packet(&p, protocol, &mut out);
        prop_assert_eq!(out.len(), encoded_len(&p, protocol));
        let back = decode_one(&out, protocol);
        prop_assert_eq!(back, Ok(Some(p)));
    }

    #[test]
    fn publish_fast_path((protocol, p) in any_protocol().prop_flat_map(|pr| (Just(pr), publish(pr.is_v5())))) {
        let mut fast = BytesMut::new();
        encode_publish(&p, protocol, &mut fast);
        prop_assert_eq!(fast.len(), publish_len(&p, protocol));
        let packet = Packet::Publish(p);
        let mut slow = BytesMut::new();
        encode_packet(&packet, protocol, &mut slow);
        prop_assert_eq!(&fast, &slow);
        prop_assert_eq!(decode_one(&fast, protocol), Ok(Some(packet)));
    }

    #[test]
    fn decoder_never_panics(v5 in any::<bool>(), bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let protocol = if v5 { Protocol::V5 } else { Protocol::V311 };
        let mut d = Decoder::new(protocol, 1 << 16);
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(_)) = d.decode(&mut buf) {}
    }

    #[test]
    fn decoder_never_panics_on_plausible_packets(
        v5 in any::<bool>(),
        header in any::<u8>(),
        body in prop::collection::vec(any::<u8>(), 0..128),
    ) {
        // A well-formed fixed header around an arbitrary body reaches the packet decoders.
        let protocol = if v5 { Protocol::V5 } else { Protocol::V311 };
        let _ = decode_packet(header, Bytes::from(body), protocol);
    }

    #[test]
    fn mutated_packets_never_panic((protocol, p) in protocol_and_packet(), at in any::<usize>(), byte in any::<u8>()) {
        let mut out = BytesMut::new();
        encode_packet(&p, protocol, &mut out);
        let i = at % out.len();
        out[i] = byte;
        let mut d = Decoder::new(protocol, usize::MAX);
        while let Ok(Some(_)) = d.decode(&mut out) {}
    }

    #[test]
    fn split_stream((protocol, packets) in protocol_and_packets(), cuts in prop::collection::vec(any::<usize>(), 0..8)) {
        let mut wire = BytesMut::new();
        for p in &packets {
            encode_packet(p, protocol, &mut wire);
        }
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (wire.len() + 1)).collect();
        cuts.push(wire.len());
        cuts.sort_unstable();

        let mut d = Decoder::new(protocol, usize::MAX);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        let mut from = 0;
        for to in cuts {
            buf.extend_from_slice(&wire[from..to]);
            from = to;
            while let Some(p) = d.decode(&mut buf).expect("valid stream") {
                got.push(p);
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(got, packets);
    }
}

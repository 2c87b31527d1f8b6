//! Encoding, with the encoded size known before writing.
//!
//! Encoding never fails: the caller guarantees that strings and binary fields fit in 65,535 bytes
//! and that the packet fits in the 268,435,455 bytes a remaining length can express (checked with
//! `debug_assert!` only). Packets are written as given, without validation: fields that 3.1.1 does
//! not have (properties, reason codes other than CONNACK's and SUBACK's) are simply left out.
//!
//! For the broker's hot path, [`encode_publish`] and [`publish_len`] work on a [`Publish`]
//! directly, without building a [`Packet`].

use bytes::{BufMut, BytesMut};

use crate::decode::MAX_VARIABLE_INT;
use crate::packet::{Connect, Packet, Protocol, PubResponse, Publish, QoS, SubOptions};
use crate::properties::{id, Properties};
use crate::reason::ReasonCode;

/// Total encoded size of `packet` in bytes, fixed header included.
///
/// For CONNECT the packet's own `protocol` is used when set, as in [`encode_packet`].
pub fn encoded_len(packet: &Packet, protocol: Protocol) -> usize {
    if let Packet::Publish(p) = packet {
        return publish_len(p, protocol);
    }
    let remaining = remaining_len(packet, protocol);
    1 + varint_len(remaining) + remaining
}

/// Appends the encoding of `packet` to `out`.
///
/// `protocol` is the connection's protocol; for CONNECT the packet's own `protocol` wins when
/// set. V31 and V311 encode alike except for CONNECT's protocol name and level. AUTH, which
/// 3.1.1 does not have, is always written in its v5 form.
pub fn encode_packet(packet: &Packet, protocol: Protocol, out: &mut BytesMut) {
    if let Packet::Publish(p) = packet {
        return encode_publish(p, protocol, out);
    }
    let remaining = remaining_len(packet, protocol);
    out.reserve(1 + varint_len(remaining) + remaining);
    out.put_u8(packet.packet_type() << 4 | fixed_flags(packet));
    put_varint(out, remaining);
    let body_start = out.len();
    put_body(packet, protocol, out);
    debug_assert_eq!(
        out.len() - body_start,
        remaining,
        "{} length",
        packet.name()
    );
}

/// A PUBLISH to encode, borrowing its parts: a broker's hot path encodes one per delivery and
/// need not build (and copy) a [`Publish`] with its property set for that.
#[derive(Debug, Clone, Copy)]
pub struct PublishRef<'a> {
    pub dup: bool,
    pub qos: QoS,
    pub retain: bool,
    pub topic: &'a str,
    pub packet_id: u16,
    pub payload: &'a [u8],
    /// Encoded for MQTT 5 only.
    pub properties: &'a Properties,
}

impl<'a> From<&'a Publish> for PublishRef<'a> {
    fn from(p: &'a Publish) -> Self {
        PublishRef {
            dup: p.dup,
            qos: p.qos,
            retain: p.retain,
            topic: &p.topic,
            packet_id: p.packet_id,
            payload: &p.payload,
            properties: &p.properties,
        }
    }
}

/// Encoded size of a PUBLISH, fixed header included: [`encoded_len`] without the [`Packet`].
pub fn publish_len(p: &Publish, protocol: Protocol) -> usize {
    publish_ref_len(&PublishRef::from(p), protocol)
}

/// Appends the encoding of a PUBLISH: [`encode_packet`] without the [`Packet`].
pub fn encode_publish(p: &Publish, protocol: Protocol, out: &mut BytesMut) {
    encode_publish_ref(&PublishRef::from(p), protocol, out)
}

/// Encoded size of a borrowed PUBLISH, fixed header included.
pub fn publish_ref_len(p: &PublishRef<'_>, protocol: Protocol) -> usize {
    let remaining = publish_remaining(p, props_field_len_if(p.properties, protocol.is_v5()));
    1 + varint_len(remaining) + remaining
}

/// Appends the encoding of a borrowed PUBLISH.
pub fn encode_publish_ref(p: &PublishRef<'_>, protocol: Protocol, out: &mut BytesMut) {
    let v5 = protocol.is_v5();
    let props_len = if v5 { properties_len(p.properties) } else { 0 };
    let props_field = if v5 {
        varint_len(props_len) + props_len
    } else {
        0
    };
    let remaining = publish_remaining(p, props_field);
    out.reserve(1 + varint_len(remaining) + remaining);
    let flags = u8::from(p.dup) << 3 | (p.qos as u8) << 1 | u8::from(p.retain);
    out.put_u8(0x30 | flags);
    put_varint(out, remaining);
    put_str(out, p.topic);
    if p.qos != QoS::AtMostOnce {
        out.put_u16(p.packet_id);
    }
    if v5 {
        put_varint(out, props_len);
        put_properties_content(out, p.properties);
    }
    out.put_slice(p.payload);
}

fn publish_remaining(p: &PublishRef<'_>, props_field: usize) -> usize {
    let pid = if p.qos == QoS::AtMostOnce { 0 } else { 2 };
    str_len(p.topic) + pid + props_field + p.payload.len()
}

/// Flags of the fixed header for every packet but PUBLISH.
fn fixed_flags(packet: &Packet) -> u8 {
    match packet {
        Packet::PubRel(_) | Packet::Subscribe(_) | Packet::Unsubscribe(_) => 0b0010,
        _ => 0,
    }
}

/// Bytes taken by a variable byte integer holding `v`.
pub(crate) fn varint_len(v: usize) -> usize {
    match v {
        0..=0x7F => 1,
        0x80..=0x3FFF => 2,
        0x4000..=0x1F_FFFF => 3,
        _ => 4,
    }
}

fn put_varint(out: &mut BytesMut, mut v: usize) {
    debug_assert!(v <= MAX_VARIABLE_INT, "variable byte integer {v} too large");
    loop {
        let mut b = (v & 0x7F) as u8;
        v >>= 7;
        if v > 0 {
            b |= 0x80;
        }
        out.put_u8(b);
        if v == 0 {
            break;
        }
    }
}

fn str_len(s: &str) -> usize {
    2 + s.len()
}

fn put_str(out: &mut BytesMut, s: &str) {
    put_bin(out, s.as_bytes());
}

fn put_bin(out: &mut BytesMut, b: &[u8]) {
    debug_assert!(
        b.len() <= usize::from(u16::MAX),
        "string or binary field of {} bytes",
        b.len()
    );
    out.put_u16(b.len() as u16);
    out.put_slice(b);
}

/// Length of the properties themselves, without the property length in front.
pub(crate) fn properties_len(p: &Properties) -> usize {
    let byte = |o: Option<u8>| if o.is_some() { 2 } else { 0 };
    let two = |o: Option<u16>| if o.is_some() { 3 } else { 0 };
    let four = |o: Option<u32>| if o.is_some() { 5 } else { 0 };
    let string = |o: &Option<String>| o.as_ref().map_or(0, |s| 1 + str_len(s));
    let binary = |o: &Option<bytes::Bytes>| o.as_ref().map_or(0, |b| 3 + b.len());
    byte(p.payload_format_indicator)
        + four(p.message_expiry_interval)
        + string(&p.content_type)
        + p.response_topic.as_ref().map_or(0, |s| 1 + str_len(s))
        + binary(&p.correlation_data)
        + p.subscription_identifiers
            .iter()
            .map(|&v| 1 + varint_len(v as usize))
            .sum::<usize>()
        + four(p.session_expiry_interval)
        + string(&p.assigned_client_identifier)
        + two(p.server_keep_alive)
        + string(&p.authentication_method)
        + binary(&p.authentication_data)
        + byte(p.request_problem_information)
        + four(p.will_delay_interval)
        + byte(p.request_response_information)
        + string(&p.response_information)
        + string(&p.server_reference)
        + string(&p.reason_string)
        + two(p.receive_maximum)
        + two(p.topic_alias_maximum)
        + two(p.topic_alias)
        + byte(p.maximum_qos)
        + byte(p.retain_available)
        + p.user_properties
            .iter()
            .map(|(k, v)| 1 + str_len(k) + str_len(v))
            .sum::<usize>()
        + four(p.maximum_packet_size)
        + byte(p.wildcard_subscription_available)
        + byte(p.subscription_identifier_available)
        + byte(p.shared_subscription_available)
}

/// Property length plus properties.
fn props_field_len(p: &Properties) -> usize {
    let len = properties_len(p);
    varint_len(len) + len
}

fn props_field_len_if(p: &Properties, v5: bool) -> usize {
    if v5 {
        props_field_len(p)
    } else {
        0
    }
}

fn put_properties(out: &mut BytesMut, p: &Properties) {
    put_varint(out, properties_len(p));
    put_properties_content(out, p);
}

/// Writes the properties in identifier order.
fn put_properties_content(out: &mut BytesMut, p: &Properties) {
    fn byte(out: &mut BytesMut, pid: u8, v: Option<u8>) {
        if let Some(v) = v {
            out.put_u8(pid);
            out.put_u8(v);
        }
    }
    fn two(out: &mut BytesMut, pid: u8, v: Option<u16>) {
        if let Some(v) = v {
            out.put_u8(pid);
            out.put_u16(v);
        }
    }
    fn four(out: &mut BytesMut, pid: u8, v: Option<u32>) {
        if let Some(v) = v {
            out.put_u8(pid);
            out.put_u32(v);
        }
    }
    fn string(out: &mut BytesMut, pid: u8, v: Option<&str>) {
        if let Some(v) = v {
            out.put_u8(pid);
            put_str(out, v);
        }
    }
    fn binary(out: &mut BytesMut, pid: u8, v: Option<&[u8]>) {
        if let Some(v) = v {
            out.put_u8(pid);
            put_bin(out, v);
        }
    }
    byte(
        out,
        id::PAYLOAD_FORMAT_INDICATOR,
        p.payload_format_indicator,
    );
    four(out, id::MESSAGE_EXPIRY_INTERVAL, p.message_expiry_interval);
    string(out, id::CONTENT_TYPE, p.content_type.as_deref());
    string(out, id::RESPONSE_TOPIC, p.response_topic.as_deref());
    binary(out, id::CORRELATION_DATA, p.correlation_data.as_deref());
    for &v in &p.subscription_identifiers {
        out.put_u8(id::SUBSCRIPTION_IDENTIFIER);
        put_varint(out, v as usize);
    }
    four(out, id::SESSION_EXPIRY_INTERVAL, p.session_expiry_interval);
    string(
        out,
        id::ASSIGNED_CLIENT_IDENTIFIER,
        p.assigned_client_identifier.as_deref(),
    );
    two(out, id::SERVER_KEEP_ALIVE, p.server_keep_alive);
    string(
        out,
        id::AUTHENTICATION_METHOD,
        p.authentication_method.as_deref(),
    );
    binary(
        out,
        id::AUTHENTICATION_DATA,
        p.authentication_data.as_deref(),
    );
    byte(
        out,
        id::REQUEST_PROBLEM_INFORMATION,
        p.request_problem_information,
    );
    four(out, id::WILL_DELAY_INTERVAL, p.will_delay_interval);
    byte(
        out,
        id::REQUEST_RESPONSE_INFORMATION,
        p.request_response_information,
    );
    string(
        out,
        id::RESPONSE_INFORMATION,
        p.response_information.as_deref(),
    );
    string(out, id::SERVER_REFERENCE, p.server_reference.as_deref());
    string(out, id::REASON_STRING, p.reason_string.as_deref());
    two(out, id::RECEIVE_MAXIMUM, p.receive_maximum);
    two(out, id::TOPIC_ALIAS_MAXIMUM, p.topic_alias_maximum);
    two(out, id::TOPIC_ALIAS, p.topic_alias);
    byte(out, id::MAXIMUM_QOS, p.maximum_qos);
    byte(out, id::RETAIN_AVAILABLE, p.retain_available);
    for (k, v) in &p.user_properties {
        out.put_u8(id::USER_PROPERTY);
        put_str(out, k);
        put_str(out, v);
    }
    four(out, id::MAXIMUM_PACKET_SIZE, p.maximum_packet_size);
    byte(
        out,
        id::WILDCARD_SUBSCRIPTION_AVAILABLE,
        p.wildcard_subscription_available,
    );
    byte(
        out,
        id::SUBSCRIPTION_IDENTIFIER_AVAILABLE,
        p.subscription_identifier_available,
    );
    byte(
        out,
        id::SHARED_SUBSCRIPTION_AVAILABLE,
        p.shared_subscription_available,
    );
}

/// The protocol name written in CONNECT.
fn protocol_name(p: Protocol) -> &'static str {
    match p {
        Protocol::V31 => "MQIsdp",
        Protocol::V311 | Protocol::V5 => "MQTT",
    }
}

/// What follows the packet identifier in a v5 PUBACK/PUBREC/PUBREL/PUBCOMP, and the whole body
/// of a v5 DISCONNECT/AUTH: nothing for success without properties, else the reason code, then
/// the properties unless there are none.
fn reason_tail_len(code: ReasonCode, props: &Properties) -> usize {
    if props.is_empty() {
        usize::from(code != ReasonCode::SUCCESS)
    } else {
        1 + props_field_len(props)
    }
}

fn put_reason_tail(out: &mut BytesMut, code: ReasonCode, props: &Properties) {
    if props.is_empty() {
        if code != ReasonCode::SUCCESS {
            out.put_u8(code.0);
        }
    } else {
        out.put_u8(code.0);
        put_properties(out, props);
    }
}

fn connect_remaining(c: &Connect, protocol: Protocol) -> usize {
    let v5 = protocol.is_v5();
    let mut n = str_len(protocol_name(protocol)) + 1 + 1 + 2;
    n += props_field_len_if(&c.properties, v5);
    n += str_len(&c.client_id);
    if let Some(w) = &c.will {
        n += props_field_len_if(&w.properties, v5) + str_len(&w.topic) + 2 + w.payload.len();
    }
    n += c.username.as_deref().map_or(0, str_len);
    n += c.password.as_ref().map_or(0, |p| 2 + p.len());
    n
}

fn put_connect(out: &mut BytesMut, c: &Connect, protocol: Protocol) {
    let v5 = protocol.is_v5();
    put_str(out, protocol_name(protocol));
    out.put_u8(protocol.level());
    let mut flags = u8::from(c.clean_start) << 1;
    if let Some(w) = &c.will {
        flags |= 0x04 | (w.qos as u8) << 3 | u8::from(w.retain) << 5;
    }
    flags |= u8::from(c.password.is_some()) << 6 | u8::from(c.username.is_some()) << 7;
    out.put_u8(flags);
    out.put_u16(c.keep_alive);
    if v5 {
        put_properties(out, &c.properties);
    }
    put_str(out, &c.client_id);
    if let Some(w) = &c.will {
        if v5 {
            put_properties(out, &w.properties);
        }
        put_str(out, &w.topic);
        put_bin(out, &w.payload);
    }
    if let Some(u) = &c.username {
        put_str(out, u);
    }
    if let Some(p) = &c.password {
        put_bin(out, p);
    }
}

fn pub_response_remaining(r: &PubResponse, v5: bool) -> usize {
    2 + if v5 {
        reason_tail_len(r.code, &r.properties)
    } else {
        0
    }
}

fn put_pub_response(out: &mut BytesMut, r: &PubResponse, v5: bool) {
    out.put_u16(r.packet_id);
    if v5 {
        put_reason_tail(out, r.code, &r.properties);
    }
}

fn sub_options_byte(o: SubOptions, v5: bool) -> u8 {
    let qos = o.qos as u8;
    if v5 {
        qos | u8::from(o.no_local) << 2
            | u8::from(o.retain_as_published) << 3
            | (o.retain_handling & 0b11) << 4
    } else {
        qos
    }
}

/// The remaining length of any packet but PUBLISH (which has its own fast path).
fn remaining_len(packet: &Packet, protocol: Protocol) -> usize {
    let v5 = protocol.is_v5();
    match packet {
        Packet::Connect(c) => connect_remaining(c, c.protocol.unwrap_or(protocol)),
        Packet::ConnAck(c) => 2 + props_field_len_if(&c.properties, v5),
        Packet::Publish(p) => {
            publish_remaining(&PublishRef::from(p), props_field_len_if(&p.properties, v5))
        }
        Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => {
            pub_response_remaining(r, v5)
        }
        Packet::Subscribe(s) => {
            2 + props_field_len_if(&s.properties, v5)
                + s.subscriptions
                    .iter()
                    .map(|s| str_len(&s.filter) + 1)
                    .sum::<usize>()
        }
        Packet::SubAck(s) => 2 + props_field_len_if(&s.properties, v5) + s.codes.len(),
        Packet::Unsubscribe(u) => {
            2 + props_field_len_if(&u.properties, v5)
                + u.filters.iter().map(|f| str_len(f)).sum::<usize>()
        }
        Packet::UnsubAck(u) => {
            2 + if v5 {
                props_field_len(&u.properties) + u.codes.len()
            } else {
                0
            }
        }
        Packet::PingReq | Packet::PingResp => 0,
        Packet::Disconnect(d) => {
            if v5 {
                reason_tail_len(d.code, &d.properties)
            } else {
                0
            }
        }
        Packet::Auth(a) => reason_tail_len(a.code, &a.properties),
    }
}

/// Writes the variable header and payload of any packet but PUBLISH.
fn put_body(packet: &Packet, protocol: Protocol, out: &mut BytesMut) {
    let v5 = protocol.is_v5();
    match packet {
        Packet::Connect(c) => put_connect(out, c, c.protocol.unwrap_or(protocol)),
        Packet::ConnAck(c) => {
            out.put_u8(u8::from(c.session_present));
            out.put_u8(c.code.0);
            if v5 {
                put_properties(out, &c.properties);
            }
        }
        Packet::Publish(_) => unreachable!("PUBLISH is encoded by encode_publish"),
        Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => {
            put_pub_response(out, r, v5)
        }
        Packet::Subscribe(s) => {
            out.put_u16(s.packet_id);
            if v5 {
                put_properties(out, &s.properties);
            }
            for sub in &s.subscriptions {
                put_str(out, &sub.filter);
                out.put_u8(sub_options_byte(sub.options, v5));
            }
        }
        Packet::SubAck(s) => {
            out.put_u16(s.packet_id);
            if v5 {
                put_properties(out, &s.properties);
            }
            out.extend(s.codes.iter().map(|c| c.0));
        }
        Packet::Unsubscribe(u) => {
            out.put_u16(u.packet_id);
            if v5 {
                put_properties(out, &u.properties);
            }
            for f in &u.filters {
                put_str(out, f);
            }
        }
        Packet::UnsubAck(u) => {
            out.put_u16(u.packet_id);
            if v5 {
                put_properties(out, &u.properties);
                out.extend(u.codes.iter().map(|c| c.0));
            }
        }
        Packet::PingReq | Packet::PingResp => {}
        Packet::Disconnect(d) => {
            if v5 {
                put_reason_tail(out, d.code, &d.properties);
            }
        }
        Packet::Auth(a) => put_reason_tail(out, a.code, &a.properties),
    }
}

#[cfg(test)]
mod tests;

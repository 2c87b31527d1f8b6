//! Framing and strict decoding.
//!
//! [`read_frame`] finds where a packet ends; [`decode_packet`] turns its body into a [`Packet`],
//! rejecting everything the specification calls malformed or a protocol error; [`Decoder`] does
//! both over a connection's read buffer. Payloads, binary properties and passwords are slices of
//! the read buffer (no copy); topics are allocated once, as `Arc<str>`.

use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};

use crate::error::DecodeError;
use crate::packet::{
    Auth, ConnAck, Connect, Disconnect, Packet, Protocol, PubResponse, Publish, QoS, SubAck,
    SubOptions, Subscribe, Subscription, UnsubAck, Unsubscribe, Will,
};
use crate::properties::{allowed_in, id, Properties, PropertyContext};
use crate::reason::ReasonCode;

/// Largest value a variable byte integer can hold (four bytes), so the largest remaining length.
pub const MAX_VARIABLE_INT: usize = 268_435_455;

/// The fixed header of one complete-or-pending packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// First byte: type << 4 | flags.
    pub header: u8,
    /// Bytes of the fixed header (1 + length bytes).
    pub header_len: usize,
    /// Remaining length (variable header + payload).
    pub remaining: usize,
}

impl Frame {
    /// Total packet size in bytes.
    #[allow(clippy::len_without_is_empty)] // a frame is never empty: it has a fixed header
    pub fn len(&self) -> usize {
        self.header_len + self.remaining
    }
}

/// Checks the first byte of a packet: a defined packet type with its required flags (PUBLISH:
/// a QoS other than 3). Needs nothing but that byte, so garbage (an HTTP request, a TLS hello)
/// is refused before any body is waited for.
pub fn check_header(header: u8) -> Result<(), DecodeError> {
    let flags = header & 0x0F;
    match header >> 4 {
        0 => Err(DecodeError::Malformed("reserved packet type 0")),
        3 if flags & 0b0110 == 0b0110 => Err(DecodeError::Malformed("PUBLISH with QoS 3")),
        3 => Ok(()),
        6 | 8 | 10 if flags != 0b0010 => Err(DecodeError::Malformed("reserved flags")),
        6 | 8 | 10 => Ok(()),
        _ if flags != 0 => Err(DecodeError::Malformed("reserved flags")),
        _ => Ok(()),
    }
}

/// Reads the fixed header from the start of `buf`.
///
/// `Ok(None)` when more bytes are needed for the header. Fails as soon as the first byte is not a
/// valid packet header ([`check_header`]), the remaining length is malformed or the packet would
/// exceed `max_packet_size`, without waiting for the body.
pub fn read_frame(buf: &[u8], max_packet_size: usize) -> Result<Option<Frame>, DecodeError> {
    let Some(&header) = buf.first() else {
        return Ok(None);
    };
    check_header(header)?;
    let mut remaining = 0usize;
    for i in 0..4 {
        let Some(&b) = buf.get(1 + i) else {
            return Ok(None);
        };
        remaining |= usize::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            // Non-minimal encodings (e.g. 0x80 0x00) are accepted, as the specification allows.
            let frame = Frame {
                header,
                header_len: 2 + i,
                remaining,
            };
            if frame.len() > max_packet_size {
                return Err(DecodeError::PacketTooLarge {
                    size: frame.len(),
                    max: max_packet_size,
                });
            }
            return Ok(Some(frame));
        }
    }
    Err(DecodeError::MalformedLength)
}

/// Decodes the body of one packet whose first byte is `header`.
///
/// For CONNECT the protocol is read from the packet itself; for every other packet `protocol`
/// (learnt from CONNECT) decides whether v5 fields are present.
pub fn decode_packet(header: u8, body: Bytes, protocol: Protocol) -> Result<Packet, DecodeError> {
    let packet_type = header >> 4;
    let flags = header & 0x0F;
    let v5 = protocol.is_v5();
    check_header(header)?;
    if packet_type == 3 {
        return decode_publish(flags, &body, v5).map(Packet::Publish);
    }
    let mut r = Reader::new(&body);
    let packet = match packet_type {
        1 => Packet::Connect(Box::new(decode_connect(&mut r)?)),
        2 => Packet::ConnAck(decode_connack(&mut r, v5)?),
        4 => Packet::PubAck(decode_pub_response(&mut r, 4, v5)?),
        5 => Packet::PubRec(decode_pub_response(&mut r, 5, v5)?),
        6 => Packet::PubRel(decode_pub_response(&mut r, 6, v5)?),
        7 => Packet::PubComp(decode_pub_response(&mut r, 7, v5)?),
        8 => Packet::Subscribe(decode_subscribe(&mut r, v5)?),
        9 => Packet::SubAck(decode_suback(&mut r, v5)?),
        10 => Packet::Unsubscribe(decode_unsubscribe(&mut r, v5)?),
        11 => Packet::UnsubAck(decode_unsuback(&mut r, v5)?),
        12 => Packet::PingReq,
        13 => Packet::PingResp,
        14 => {
            let (code, properties) = decode_reason_tail(&mut r, 14, v5)?;
            Packet::Disconnect(Disconnect { code, properties })
        }
        _ => {
            if !v5 {
                return Err(DecodeError::Malformed("AUTH is not an MQTT 3.1.1 packet"));
            }
            let (code, properties) = decode_reason_tail(&mut r, 15, v5)?;
            Packet::Auth(Auth { code, properties })
        }
    };
    r.finish()?;
    Ok(packet)
}

/// Streaming decoder for one connection.
#[derive(Debug, Clone)]
pub struct Decoder {
    pub protocol: Protocol,
    pub max_packet_size: usize,
}

impl Decoder {
    /// A decoder that expects `protocol` (until a CONNECT says otherwise) and rejects packets
    /// larger than `max_packet_size` bytes, fixed header included.
    pub fn new(protocol: Protocol, max_packet_size: usize) -> Self {
        Decoder {
            protocol,
            max_packet_size,
        }
    }

    /// Takes one whole packet off the front of `buf`, or `Ok(None)` if it is not all there yet.
    /// Learns the protocol from CONNECT.
    ///
    /// A CONNECT sets [`Decoder::protocol`] as soon as its protocol name and level are readable,
    /// even when the rest of it then fails to decode: after an error on CONNECT, `self.protocol`
    /// tells which CONNACK format to answer with.
    ///
    /// When the packet is incomplete, room for (up to 64 KiB of) the rest of it is reserved in
    /// `buf`. After an error the buffer content is unspecified: the connection is to be closed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Packet>, DecodeError> {
        let Some(frame) = read_frame(buf, self.max_packet_size)? else {
            return Ok(None);
        };
        let len = frame.len();
        if buf.len() < len {
            // Capped so that a peer announcing a large packet cannot make us allocate it all.
            buf.reserve((len - buf.len()).min(MAX_RESERVE));
            return Ok(None);
        }
        let mut bytes = buf.split_to(len);
        bytes.advance(frame.header_len);
        if frame.header >> 4 == 1 {
            if let Some(protocol) = connect_protocol(&bytes) {
                self.protocol = protocol;
            }
        }
        decode_packet(frame.header, bytes.freeze(), self.protocol).map(Some)
    }
}

/// Most bytes [`Decoder::decode`] reserves ahead for an incomplete packet.
const MAX_RESERVE: usize = 64 * 1024;

/// The protocol a CONNECT body announces (its name and level), if it names a supported one.
///
/// Lets a server pick the CONNACK format (3.1.1 return code or v5 reason code) for a CONNECT
/// that fails to decode further on.
pub fn connect_protocol(body: &[u8]) -> Option<Protocol> {
    let (len, rest) = body.split_first_chunk::<2>()?;
    let name = rest.get(..usize::from(u16::from_be_bytes(*len)))?;
    let level = *rest.get(name.len())?;
    match (name, level) {
        (b"MQTT", 4) => Some(Protocol::V311),
        (b"MQTT", 5) => Some(Protocol::V5),
        (b"MQIsdp", 3) => Some(Protocol::V31),
        _ => None,
    }
}

const TRUNCATED: DecodeError = DecodeError::Malformed("truncated packet");

/// A cursor over (a window of) a packet body.
struct Reader<'a> {
    buf: &'a Bytes,
    pos: usize,
    end: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a Bytes) -> Self {
        Reader {
            buf,
            pos: 0,
            end: buf.len(),
        }
    }

    fn left(&self) -> usize {
        self.end - self.pos
    }

    fn is_empty(&self) -> bool {
        self.pos == self.end
    }

    fn finish(&self) -> Result<(), DecodeError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Malformed(
                "unexpected bytes at the end of the packet",
            ))
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.left() {
            return Err(TRUNCATED);
        }
        let buf: &'a Bytes = self.buf;
        let s = &buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// `n` bytes as a slice of the underlying buffer (no copy).
    fn take_bytes(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        if n > self.left() {
            return Err(TRUNCATED);
        }
        let b = self.buf.slice(self.pos..self.pos + n);
        self.pos += n;
        Ok(b)
    }

    /// Everything left, as a slice of the underlying buffer.
    fn rest(&mut self) -> Bytes {
        let b = self.buf.slice(self.pos..self.end);
        self.pos = self.end;
        b
    }

    /// A reader over the next `n` bytes, which this one skips.
    fn sub(&mut self, n: usize) -> Result<Reader<'a>, DecodeError> {
        if n > self.left() {
            return Err(TRUNCATED);
        }
        let sub = Reader {
            buf: self.buf,
            pos: self.pos,
            end: self.pos + n,
        };
        self.pos += n;
        Ok(sub)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A variable byte integer of at most four bytes.
    fn varint(&mut self) -> Result<u32, DecodeError> {
        let mut v = 0u32;
        for i in 0..4 {
            let b = self.u8()?;
            v |= u32::from(b & 0x7F) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError::Malformed(
            "variable byte integer longer than four bytes",
        ))
    }

    /// Binary data: u16 length and bytes.
    fn binary(&mut self) -> Result<Bytes, DecodeError> {
        let n = self.u16()?;
        self.take_bytes(usize::from(n))
    }

    /// A UTF-8 string's raw bytes, not yet validated.
    fn raw_str(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }

    /// A UTF-8 encoded string: valid UTF-8 without U+0000.
    fn str(&mut self) -> Result<&'a str, DecodeError> {
        let raw = self.raw_str()?;
        let s = std::str::from_utf8(raw).map_err(|_| DecodeError::InvalidUtf8)?;
        if raw.contains(&0) {
            return Err(DecodeError::InvalidUtf8);
        }
        Ok(s)
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        self.str().map(str::to_owned)
    }

    /// A topic name: valid UTF-8 without wildcards or U+0000 (empty allowed; callers decide).
    fn topic(&mut self) -> Result<Arc<str>, DecodeError> {
        let raw = self.raw_str()?;
        let s = std::str::from_utf8(raw).map_err(|_| DecodeError::InvalidUtf8)?;
        if raw.iter().any(|&b| b == b'+' || b == b'#' || b == 0) {
            return Err(DecodeError::TopicNameInvalid);
        }
        Ok(Arc::from(s))
    }

    /// A packet identifier, which must not be 0.
    fn packet_id(&mut self) -> Result<u16, DecodeError> {
        match self.u16()? {
            0 => Err(DecodeError::Malformed("packet identifier 0")),
            id => Ok(id),
        }
    }
}

fn decode_publish(flags: u8, body: &Bytes, v5: bool) -> Result<Publish, DecodeError> {
    let qos = QoS::from_u8((flags >> 1) & 0b11).ok_or(DecodeError::Malformed("PUBLISH QoS 3"))?;
    let dup = flags & 0b1000 != 0;
    if dup && qos == QoS::AtMostOnce {
        return Err(DecodeError::Malformed("PUBLISH DUP set at QoS 0"));
    }
    let mut r = Reader::new(body);
    let topic = r.topic()?;
    let packet_id = if qos == QoS::AtMostOnce {
        0
    } else {
        r.packet_id()?
    };
    let properties = if v5 {
        decode_properties(&mut r, PropertyContext::Publish)?
    } else {
        Properties::default()
    };
    if topic.is_empty() && properties.topic_alias.is_none() {
        return Err(DecodeError::TopicNameInvalid);
    }
    Ok(Publish {
        dup,
        qos,
        retain: flags & 1 != 0,
        topic,
        packet_id,
        payload: r.rest(),
        properties,
    })
}

fn decode_connect(r: &mut Reader<'_>) -> Result<Connect, DecodeError> {
    let name = r.raw_str()?;
    if name != b"MQTT" && name != b"MQIsdp" {
        return Err(DecodeError::InvalidProtocolName);
    }
    let level = r.u8()?;
    let protocol = match (name, level) {
        (b"MQTT", 4) => Protocol::V311,
        (b"MQTT", 5) => Protocol::V5,
        (b"MQIsdp", 3) => Protocol::V31,
        _ => return Err(DecodeError::UnsupportedProtocolVersion(level)),
    };
    let v5 = protocol.is_v5();
    let flags = r.u8()?;
    if flags & 0x01 != 0 {
        return Err(DecodeError::Malformed("CONNECT reserved flag set"));
    }
    let will_flag = flags & 0x04 != 0;
    let will_qos = QoS::from_u8((flags >> 3) & 0b11).ok_or(DecodeError::Malformed("will QoS 3"))?;
    let will_retain = flags & 0x20 != 0;
    let has_password = flags & 0x40 != 0;
    let has_username = flags & 0x80 != 0;
    if !will_flag && (will_qos != QoS::AtMostOnce || will_retain) {
        return Err(DecodeError::Malformed(
            "will QoS or retain set without a will",
        ));
    }
    if !v5 && has_password && !has_username {
        return Err(DecodeError::Malformed("password without user name"));
    }
    let keep_alive = r.u16()?;
    let properties = if v5 {
        decode_properties(r, PropertyContext::Connect)?
    } else {
        Properties::default()
    };
    if properties.authentication_data.is_some() && properties.authentication_method.is_none() {
        return Err(DecodeError::Protocol(
            "authentication data without authentication method",
        ));
    }
    let client_id = r.string()?;
    let will = if will_flag {
        let properties = if v5 {
            decode_properties(r, PropertyContext::Will)?
        } else {
            Properties::default()
        };
        let topic = r.topic()?;
        if topic.is_empty() {
            return Err(DecodeError::TopicNameInvalid);
        }
        let payload = r.binary()?;
        Some(Will {
            topic,
            payload,
            qos: will_qos,
            retain: will_retain,
            properties,
        })
    } else {
        None
    };
    let username = if has_username {
        Some(r.string()?)
    } else {
        None
    };
    let password = if has_password {
        Some(r.binary()?)
    } else {
        None
    };
    Ok(Connect {
        protocol: Some(protocol),
        clean_start: flags & 0x02 != 0,
        keep_alive,
        client_id,
        will,
        username,
        password,
        properties,
    })
}

fn decode_connack(r: &mut Reader<'_>, v5: bool) -> Result<ConnAck, DecodeError> {
    let flags = r.u8()?;
    if flags & 0xFE != 0 {
        return Err(DecodeError::Malformed("CONNACK reserved flags"));
    }
    let code = ReasonCode(r.u8()?);
    let valid = if v5 { code.valid_for(2) } else { code.0 <= 5 };
    if !valid {
        return Err(DecodeError::InvalidReasonCode(code.0));
    }
    let session_present = flags & 1 != 0;
    if session_present && code.0 != 0 {
        return Err(DecodeError::Protocol(
            "session present with a refused connection",
        ));
    }
    // Lenient: a v5 CONNACK without a property length is read as having none.
    let properties = if v5 && !r.is_empty() {
        decode_properties(r, PropertyContext::ConnAck)?
    } else {
        Properties::default()
    };
    Ok(ConnAck {
        session_present,
        code,
        properties,
    })
}

fn decode_reason(r: &mut Reader<'_>, packet_type: u8) -> Result<ReasonCode, DecodeError> {
    let code = ReasonCode(r.u8()?);
    if code.valid_for(packet_type) {
        Ok(code)
    } else {
        Err(DecodeError::InvalidReasonCode(code.0))
    }
}

/// PUBACK, PUBREC, PUBREL, PUBCOMP: the reason code and properties may be left out in v5.
fn decode_pub_response(
    r: &mut Reader<'_>,
    packet_type: u8,
    v5: bool,
) -> Result<PubResponse, DecodeError> {
    let packet_id = r.packet_id()?;
    let (code, properties) = decode_reason_tail(r, packet_type, v5)?;
    Ok(PubResponse {
        packet_id,
        code,
        properties,
    })
}

/// The optional `reason code [properties]` tail of v5 acks, DISCONNECT and AUTH.
fn decode_reason_tail(
    r: &mut Reader<'_>,
    packet_type: u8,
    v5: bool,
) -> Result<(ReasonCode, Properties), DecodeError> {
    if !v5 || r.is_empty() {
        return Ok((ReasonCode::SUCCESS, Properties::default()));
    }
    let code = decode_reason(r, packet_type)?;
    if r.is_empty() {
        return Ok((code, Properties::default()));
    }
    let ctx = match packet_type {
        14 => PropertyContext::Disconnect,
        15 => PropertyContext::Auth,
        _ => PropertyContext::Ack,
    };
    Ok((code, decode_properties(r, ctx)?))
}

fn decode_subscribe(r: &mut Reader<'_>, v5: bool) -> Result<Subscribe, DecodeError> {
    let packet_id = r.packet_id()?;
    let properties = if v5 {
        decode_properties(r, PropertyContext::Subscribe)?
    } else {
        Properties::default()
    };
    if r.is_empty() {
        return Err(DecodeError::Protocol("SUBSCRIBE without topic filters"));
    }
    let mut subscriptions = Vec::new();
    while !r.is_empty() {
        // Wildcard syntax is not checked here: the broker answers per filter in SUBACK.
        let filter = r.string()?;
        let options = decode_sub_options(r.u8()?, v5)?;
        subscriptions.push(Subscription { filter, options });
    }
    Ok(Subscribe {
        packet_id,
        subscriptions,
        properties,
    })
}

fn decode_sub_options(b: u8, v5: bool) -> Result<SubOptions, DecodeError> {
    let reserved = if v5 { 0xC0 } else { 0xFC };
    if b & reserved != 0 {
        return Err(DecodeError::Malformed("subscription options reserved bits"));
    }
    let qos = QoS::from_u8(b & 0b11).ok_or(DecodeError::Malformed("subscription QoS 3"))?;
    let retain_handling = (b >> 4) & 0b11;
    if retain_handling == 3 {
        return Err(DecodeError::Malformed("retain handling 3"));
    }
    Ok(SubOptions {
        qos,
        no_local: b & 0x04 != 0,
        retain_as_published: b & 0x08 != 0,
        retain_handling,
    })
}

fn decode_suback(r: &mut Reader<'_>, v5: bool) -> Result<SubAck, DecodeError> {
    let packet_id = r.packet_id()?;
    let properties = if v5 {
        decode_properties(r, PropertyContext::Ack)?
    } else {
        Properties::default()
    };
    if r.is_empty() {
        return Err(DecodeError::Protocol("SUBACK without return codes"));
    }
    let mut codes = Vec::with_capacity(r.left());
    while !r.is_empty() {
        let code = ReasonCode(r.u8()?);
        let valid = if v5 {
            code.valid_for(9)
        } else {
            matches!(code.0, 0 | 1 | 2 | 0x80)
        };
        if !valid {
            return Err(DecodeError::InvalidReasonCode(code.0));
        }
        codes.push(code);
    }
    Ok(SubAck {
        packet_id,
        codes,
        properties,
    })
}

fn decode_unsubscribe(r: &mut Reader<'_>, v5: bool) -> Result<Unsubscribe, DecodeError> {
    let packet_id = r.packet_id()?;
    let properties = if v5 {
        decode_properties(r, PropertyContext::Unsubscribe)?
    } else {
        Properties::default()
    };
    if r.is_empty() {
        return Err(DecodeError::Protocol("UNSUBSCRIBE without topic filters"));
    }
    let mut filters = Vec::new();
    while !r.is_empty() {
        filters.push(r.string()?);
    }
    Ok(Unsubscribe {
        packet_id,
        filters,
        properties,
    })
}

fn decode_unsuback(r: &mut Reader<'_>, v5: bool) -> Result<UnsubAck, DecodeError> {
    let packet_id = r.packet_id()?;
    if !v5 {
        return Ok(UnsubAck {
            packet_id,
            ..UnsubAck::default()
        });
    }
    let properties = decode_properties(r, PropertyContext::Ack)?;
    if r.is_empty() {
        return Err(DecodeError::Protocol("UNSUBACK without reason codes"));
    }
    let mut codes = Vec::with_capacity(r.left());
    while !r.is_empty() {
        codes.push(decode_reason(r, 11)?);
    }
    Ok(UnsubAck {
        packet_id,
        codes,
        properties,
    })
}

/// Whether `pid` is a property identifier of MQTT 5 at all.
fn known_property(pid: u8) -> bool {
    use PropertyContext as C;
    [
        C::Connect,
        C::Will,
        C::ConnAck,
        C::Publish,
        C::Ack,
        C::Subscribe,
        C::Unsubscribe,
        C::Disconnect,
        C::Auth,
    ]
    .into_iter()
    .any(|ctx| allowed_in(pid, ctx))
}

/// A byte property that may only be 0 or 1.
fn flag_byte(r: &mut Reader<'_>, what: &'static str) -> Result<u8, DecodeError> {
    match r.u8()? {
        v @ (0 | 1) => Ok(v),
        _ => Err(DecodeError::Protocol(what)),
    }
}

fn nonzero_u16(r: &mut Reader<'_>, what: &'static str) -> Result<u16, DecodeError> {
    match r.u16()? {
        0 => Err(DecodeError::Protocol(what)),
        v => Ok(v),
    }
}

/// A property length followed by that many bytes of properties allowed in `ctx`.
fn decode_properties(r: &mut Reader<'_>, ctx: PropertyContext) -> Result<Properties, DecodeError> {
    let len = r.varint()? as usize;
    let mut p = r.sub(len)?;
    let mut props = Properties::default();
    let mut seen = 0u64;
    while !p.is_empty() {
        // The identifier is a variable byte integer, but every defined one fits in a byte.
        let pid = p.u8()?;
        if !allowed_in(pid, ctx) {
            return Err(if known_property(pid) {
                DecodeError::PropertyNotAllowed(pid)
            } else {
                DecodeError::UnknownProperty(pid)
            });
        }
        let repeatable = pid == id::USER_PROPERTY
            || (pid == id::SUBSCRIPTION_IDENTIFIER && ctx == PropertyContext::Publish);
        if !repeatable {
            // Every known identifier is below 64.
            let bit = 1u64 << pid;
            if seen & bit != 0 {
                return Err(DecodeError::DuplicateProperty(pid));
            }
            seen |= bit;
        }
        decode_property_value(&mut p, pid, &mut props)?;
    }
    Ok(props)
}

fn decode_property_value(
    p: &mut Reader<'_>,
    pid: u8,
    props: &mut Properties,
) -> Result<(), DecodeError> {
    match pid {
        id::PAYLOAD_FORMAT_INDICATOR => {
            props.payload_format_indicator =
                Some(flag_byte(p, "payload format indicator not 0 or 1")?)
        }
        id::MESSAGE_EXPIRY_INTERVAL => props.message_expiry_interval = Some(p.u32()?),
        id::CONTENT_TYPE => props.content_type = Some(p.string()?),
        id::RESPONSE_TOPIC => props.response_topic = Some(Arc::from(p.str()?)),
        id::CORRELATION_DATA => props.correlation_data = Some(p.binary()?),
        id::SUBSCRIPTION_IDENTIFIER => match p.varint()? {
            0 => return Err(DecodeError::Protocol("subscription identifier 0")),
            v => props.subscription_identifiers.push(v),
        },
        id::SESSION_EXPIRY_INTERVAL => props.session_expiry_interval = Some(p.u32()?),
        id::ASSIGNED_CLIENT_IDENTIFIER => props.assigned_client_identifier = Some(p.string()?),
        id::SERVER_KEEP_ALIVE => props.server_keep_alive = Some(p.u16()?),
        id::AUTHENTICATION_METHOD => props.authentication_method = Some(p.string()?),
        id::AUTHENTICATION_DATA => props.authentication_data = Some(p.binary()?),
        id::REQUEST_PROBLEM_INFORMATION => {
            props.request_problem_information =
                Some(flag_byte(p, "request problem information not 0 or 1")?)
        }
        id::WILL_DELAY_INTERVAL => props.will_delay_interval = Some(p.u32()?),
        id::REQUEST_RESPONSE_INFORMATION => {
            props.request_response_information =
                Some(flag_byte(p, "request response information not 0 or 1")?)
        }
        id::RESPONSE_INFORMATION => props.response_information = Some(p.string()?),
        id::SERVER_REFERENCE => props.server_reference = Some(p.string()?),
        id::REASON_STRING => props.reason_string = Some(p.string()?),
        id::RECEIVE_MAXIMUM => props.receive_maximum = Some(nonzero_u16(p, "receive maximum 0")?),
        id::TOPIC_ALIAS_MAXIMUM => props.topic_alias_maximum = Some(p.u16()?),
        id::TOPIC_ALIAS => props.topic_alias = Some(nonzero_u16(p, "topic alias 0")?),
        id::MAXIMUM_QOS => props.maximum_qos = Some(flag_byte(p, "maximum QoS not 0 or 1")?),
        id::RETAIN_AVAILABLE => {
            props.retain_available = Some(flag_byte(p, "retain available not 0 or 1")?)
        }
        id::USER_PROPERTY => {
            let name = p.string()?;
            let value = p.string()?;
            props.user_properties.push((name, value));
        }
        id::MAXIMUM_PACKET_SIZE => match p.u32()? {
            0 => return Err(DecodeError::Protocol("maximum packet size 0")),
            v => props.maximum_packet_size = Some(v),
        },
        id::WILDCARD_SUBSCRIPTION_AVAILABLE => {
            props.wildcard_subscription_available =
                Some(flag_byte(p, "wildcard subscription available not 0 or 1")?)
        }
        id::SUBSCRIPTION_IDENTIFIER_AVAILABLE => {
            props.subscription_identifier_available = Some(flag_byte(
                p,
                "subscription identifier available not 0 or 1",
            )?)
        }
        id::SHARED_SUBSCRIPTION_AVAILABLE => {
            props.shared_subscription_available =
                Some(flag_byte(p, "shared subscription available not 0 or 1")?)
        }
        _ => return Err(DecodeError::UnknownProperty(pid)),
    }
    Ok(())
}

#[cfg(test)]
mod tests;

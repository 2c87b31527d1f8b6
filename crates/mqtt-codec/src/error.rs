//! Decoding errors, each mapped to the MQTT 5 reason code the server answers with.

use crate::reason::ReasonCode;

/// Why bytes could not be decoded into a packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("malformed remaining length")]
    MalformedLength,
    #[error("packet of {size} bytes exceeds the maximum of {max}")]
    PacketTooLarge { size: usize, max: usize },
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    #[error("invalid protocol name")]
    InvalidProtocolName,
    #[error("unsupported protocol level {0}")]
    UnsupportedProtocolVersion(u8),
    #[error("invalid UTF-8 string")]
    InvalidUtf8,
    #[error("invalid topic name")]
    TopicNameInvalid,
    #[error("property 0x{0:02X} appears twice")]
    DuplicateProperty(u8),
    #[error("property 0x{0:02X} is not allowed in this packet")]
    PropertyNotAllowed(u8),
    #[error("unknown property 0x{0:02X}")]
    UnknownProperty(u8),
    #[error("invalid reason code 0x{0:02X}")]
    InvalidReasonCode(u8),
}

impl DecodeError {
    /// The reason code a server sends (in DISCONNECT or CONNACK) for this error.
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            DecodeError::PacketTooLarge { .. } => ReasonCode::PACKET_TOO_LARGE,
            DecodeError::Protocol(_) | DecodeError::DuplicateProperty(_) => {
                ReasonCode::PROTOCOL_ERROR
            }
            DecodeError::UnsupportedProtocolVersion(_) => ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
            DecodeError::TopicNameInvalid => ReasonCode::TOPIC_NAME_INVALID,
            _ => ReasonCode::MALFORMED_PACKET,
        }
    }
}

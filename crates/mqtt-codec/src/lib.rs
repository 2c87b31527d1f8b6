//! MQTT 3.1.1 and 5.0 packets with no I/O: bytes in, packets out, and back.
//!
//! # Layout
//! - [`packet`]: the packet types, one struct per control packet, and [`Packet`] over them.
//! - [`properties`]: the MQTT 5 property set carried by most packets.
//! - [`reason`]: reason codes (v5) and CONNACK return codes (3.1.1).
//! - [`topic`]: topic name and filter validation, and filter matching.
//! - [`decode`]: framing (fixed header, remaining length) and strict decoding.
//! - [`encode`]: encoding, with the encoded size known before writing.
//! - [`error`]: what can go wrong while decoding, mapped to the reason code to answer with.
//!
//! The codec never allocates a topic string twice: topics are `Arc<str>` so a broker can fan a
//! message out to many subscribers without copying it.

pub mod decode;
pub mod encode;
pub mod error;
pub mod packet;
pub mod properties;
pub mod reason;
pub mod topic;

pub use decode::{connect_protocol, decode_packet, read_frame, Decoder, Frame};
pub use encode::{
    encode_packet, encode_publish, encode_publish_ref, encoded_len, publish_len, publish_ref_len,
    PublishRef,
};
pub use error::DecodeError;
pub use packet::*;
pub use properties::Properties;
pub use reason::ReasonCode;

//! Ironbridge's CoAP device API (RFC 7252) on coap-lite messages over our own tokio UDP loop.
//!
//! # Layout
//! - `server` (this crate's [`serve`]): the loop: datagrams in, duplicate detection, block-wise
//!   transfer (coap-lite's `BlockHandler`), dispatch, responses and Observe notifications out.
//! - `dedup`: recently seen message ids per peer and the response each got (CON retransmissions
//!   are answered from it, NON duplicates are dropped).
//! - `resources`: the paths (`api/v1/{token}/telemetry|attributes|rpc[/id]`, `api/v1/provision`)
//!   mapped onto the platform's device API, and errors onto CoAP codes (one place).
//! - `observe`: observations of attributes and RPC: registrations, sinks, sequence numbers.
//! - `firmware`: images for OTA updates (ThingsBoard's `fw/{token}`, chunks or Block2).

mod dedup;
mod firmware;
mod observe;
mod resources;
mod server;

pub use server::serve;

/// Entry points for the fuzz targets (`fuzz/`), not an API.
#[doc(hidden)]
pub mod fuzz {
    /// Feeds one datagram to a fresh server over an in-memory platform.
    pub fn datagram(bytes: &[u8]) {
        crate::server::fuzz_datagram(bytes)
    }
}

//! The voice gateway's SIP daemon: signalling, call control and the glue to
//! media, storage and the API.

pub mod admission;
pub mod blocklist;
pub mod config;
pub mod core;
pub mod daemon;
pub mod kernel_guard;
pub mod metrics;
pub mod routing;
/// The sans-IO SIP layer, its own crate (`sip-proto`).
pub use sip_proto as sip;
pub mod tls;
pub mod transport;

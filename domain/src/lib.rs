//! The gateway's domain model: the shapes that call control (`sip-daemon`),
//! media (`media-userspace`), the SIP layer (`sip-proto`) and the REST API
//! and store (`api`) all speak. Plain data and pure functions: no I/O, no
//! clock, no async.
//!
//! * [`model`]: accounts, numbers and their routes, trunks, SIP users,
//!   blocked callers, call and message records, CDR events;
//! * [`e164`]: E.164 numbers and the patterns numbers are routed by;
//! * [`codec`]: the audio codecs SDP negotiates and media speaks;
//! * [`srtp_keys`]: SRTP suites and master keys as SDES names them.

pub mod codec;
pub mod e164;
pub mod model;
pub mod srtp_keys;

//! The voice gateway's SIP daemon: signalling, call control and the glue to
//! media, storage and the API.

pub mod sip;

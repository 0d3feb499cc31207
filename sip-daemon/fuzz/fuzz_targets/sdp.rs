//! Any SDP body: parsing, re-encoding and answering an offer never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use media_userspace::codec::Codec;
use sip_daemon::sip::sdp::{LocalMedia, SessionDescription, answer};

fuzz_target!(|data: &[u8]| {
    if let Ok(sdp) = SessionDescription::parse(data) {
        let _ = SessionDescription::parse(sdp.encode().as_bytes());
        let local = LocalMedia {
            addr: std::net::IpAddr::from([127, 0, 0, 1]),
            port: 20000,
            session_id: 1,
            session_version: 1,
        };
        let _ = answer(&sdp, &local, &Codec::ALL);
    }
});

//! Any datagram: parse must return Ok or an error, never panic; an
//! accepted message must re-encode and parse again.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sip_daemon::sip::SipMessage;
use sip_daemon::sip::parse::{Framing, parse};

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = parse(data, Framing::Datagram) {
        let again = match &msg {
            SipMessage::Request(r) => r.encode(),
            SipMessage::Response(r) => r.encode(),
        };
        let _ = parse(&again, Framing::Datagram);
    }
});

//! Any datagram: parse must return Ok or an error, never panic; an
//! accepted message must re-encode and parse again.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sip_daemon::sip::parse::{Framing, parse};

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = parse(data, Framing::Datagram) {
        let again = msg.encode();
        let _ = parse(&again, Framing::Datagram);
    }
});

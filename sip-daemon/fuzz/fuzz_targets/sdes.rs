//! Any `a=crypto:` value: parsing never panics, and what parses encodes
//! to a line that parses to the same key, suite and parameters.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sip_daemon::sip::sdes::{Crypto, SrtpSuite, choose};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(c) = Crypto::parse(text) {
        let again = Crypto::parse(&c.encode()).expect("our encoding parses");
        assert_eq!(again, c);
    }
    let _ = choose(text.lines(), &SrtpSuite::ALL);
});

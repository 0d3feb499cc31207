//! Any byte stream, cut into arbitrary reads: the TCP framer must stay
//! bounded and never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sip_daemon::sip::framer::StreamFramer;
use sip_daemon::sip::parse::{Framing, parse};

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let cut = (cut as usize).max(1);
    let mut f = StreamFramer::new(4096);
    for chunk in rest.chunks(cut) {
        f.push(chunk);
        loop {
            match f.next_frame() {
                Ok(Some(sip_daemon::sip::framer::Frame::Message(m))) => {
                    assert!(m.len() <= 4096);
                    let _ = parse(&m, Framing::Stream);
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert!(f.buffered() <= 4096 + cut);
    }
});

//! Any bytes as a voice webhook's TwiML answer: parsing never panics, and
//! what parses stays within the limits the call core relies on.
#![no_main]
use api::twiml::{MAX_PAUSE_S, Url, Verb, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let base = Url::parse("https://app.example/voice").expect("a valid base");
    if let Ok(verbs) = parse(data, &base) {
        assert!(verbs.len() <= 256);
        for v in verbs {
            match v {
                Verb::Pause(s) => assert!(s <= MAX_PAUSE_S),
                Verb::Connect(s) => {
                    assert!(s.url.starts_with("ws://") || s.url.starts_with("wss://"))
                }
                Verb::Redirect(f) => assert!(f.url.starts_with("http")),
                _ => {}
            }
        }
    }
});

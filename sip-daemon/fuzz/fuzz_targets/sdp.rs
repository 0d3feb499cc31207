//! Any SDP body: parsing, re-encoding and answering an offer never panic,
//! under every SRTP policy; an answer keeps the policy (SRTP required
//! never answers plain, plain never keys) and declares our key, which
//! parses back.
#![no_main]
use api::store::MediaSecurity;
use libfuzzer_sys::fuzz_target;
use media_userspace::codec::Codec;
use sip_daemon::sip::sdes::{Crypto, LegKeying};
use sip_daemon::sip::sdp::{LocalMedia, SessionDescription, answer};

fuzz_target!(|data: &[u8]| {
    let Ok(sdp) = SessionDescription::parse(data) else {
        return;
    };
    let _ = SessionDescription::parse(sdp.encode().as_bytes());
    for policy in [
        MediaSecurity::Rtp,
        MediaSecurity::Srtp,
        MediaSecurity::SrtpOptional,
    ] {
        for keys_allowed in [false, true] {
            let mut n = 0u8;
            let keying = LegKeying::new(policy, keys_allowed, &mut |b| {
                for x in b {
                    n = n.wrapping_add(7);
                    *x = n;
                }
            });
            let local = LocalMedia {
                addr: std::net::IpAddr::from([127, 0, 0, 1]),
                port: 20000,
                session_id: 1,
                session_version: 1,
                keying: keying.clone(),
            };
            let Ok((ans, neg)) = answer(&sdp, &local, &Codec::ALL) else {
                continue;
            };
            match policy {
                MediaSecurity::Srtp => assert!(neg.srtp.is_some()),
                MediaSecurity::Rtp => assert!(neg.srtp.is_none()),
                MediaSecurity::SrtpOptional => {}
            }
            if neg.srtp.is_some() {
                assert!(keys_allowed);
            }
            let text = ans.encode();
            let back = SessionDescription::parse(text.as_bytes()).expect("our answer parses");
            let lines: Vec<Crypto> = back
                .media
                .iter()
                .flat_map(|m| m.crypto.iter())
                .map(|c| Crypto::parse(c).expect("our crypto line parses"))
                .collect();
            match neg.srtp {
                Some(s) => {
                    assert_eq!(lines.len(), 1);
                    assert_eq!(lines[0].key, s.local);
                    assert_eq!(Some(s.local), keying.local_key(s.suite));
                }
                None => assert!(lines.is_empty()),
            }
        }
    }
});

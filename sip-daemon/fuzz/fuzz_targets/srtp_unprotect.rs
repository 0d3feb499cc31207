//! SRTP and SRTCP unprotect (RFC 3711 §3.3, §3.4; RFC 7714) on whatever
//! arrives: for each suite, hostile datagrams into one long-lived session
//! never panic, and a genuine packet protected by a fresh peer unprotects
//! to exactly the bytes sent, once (its replay is refused).
#![no_main]
use libfuzzer_sys::fuzz_target;
use media_userspace::srtp::{SrtpError, SrtpKey, SrtpKeys, SrtpSession, SrtpSuite};

const SUITES: [SrtpSuite; 3] = [
    SrtpSuite::AesCm128HmacSha1_80,
    SrtpSuite::AesCm128HmacSha1_32,
    SrtpSuite::AeadAes128Gcm,
];

fn keys(suite: SrtpSuite) -> SrtpKeys {
    let (k, s) = suite.key_salt_len();
    let key = SrtpKey::new(suite, &vec![7u8; k + s]).expect("right length");
    SrtpKeys {
        suite,
        tx: key,
        rx: key,
        replay_window: 64,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let suite = SUITES[usize::from(sel) % SUITES.len()];
    let mut long_lived = SrtpSession::new(keys(suite)).expect("valid keys");
    // Datagrams are split at 0xff so one input carries several.
    for chunk in rest.split(|&b| b == 0xff).filter(|c| !c.is_empty()) {
        let (&op, pkt) = chunk.split_first().expect("non-empty");
        match op % 3 {
            0 => {
                let mut buf = pkt.to_vec();
                if let Ok(n) = long_lived.unprotect_rtp(&mut buf) {
                    assert!(n <= pkt.len());
                }
            }
            1 => {
                let _ = long_lived.unprotect_rtcp(pkt);
            }
            _ => {
                let mut tx = SrtpSession::new(keys(suite)).expect("valid keys");
                let mut rx = SrtpSession::new(keys(suite)).expect("valid keys");
                let Ok(wire) = tx.protect_rtp(pkt) else {
                    continue;
                };
                let mut buf = wire.to_vec();
                let n = rx.unprotect_rtp(&mut buf).expect("a genuine packet");
                assert_eq!(&buf[..n], pkt);
                let mut again = wire.to_vec();
                assert_eq!(rx.unprotect_rtp(&mut again), Err(SrtpError::Replay));
                let _ = long_lived.unprotect_rtp(&mut wire.to_vec());
            }
        }
    }
    let c = long_lived.counters;
    assert!(c.rejected() + c.unprotected <= rest.len() as u64);
});

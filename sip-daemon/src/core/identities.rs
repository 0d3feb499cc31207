//! Fresh identifiers and keys: handles, tags, branches, call ids, SRTP
//! keying, and the local media description an offer or answer carries.

use super::*;

impl Core {
    /// A fresh handle (or id) from the one counter every handle comes
    /// from.
    pub(super) fn new_id<H: handles::Counted>(&mut self) -> H {
        self.next_id += 1;
        H::counted(self.next_id)
    }

    pub(super) fn random_hex(&mut self, bytes: usize) -> String {
        let mut out = String::with_capacity(bytes * 2);
        for _ in 0..bytes {
            let b: u8 = self.rng.random();
            out.push_str(&format!("{b:02x}"));
        }
        out
    }

    pub(super) fn new_tag(&mut self) -> String {
        self.random_hex(8)
    }

    /// Draws SRTP keys from a generator seeded with `seed` instead of the
    /// OS's randomness (tests and fuzzing that replay a run).
    pub fn seed_keys(&mut self, seed: [u8; 32]) {
        self.key_rng = rand::rngs::StdRng::from_seed(seed);
    }

    /// The SRTP keying of a new leg, its keys drawn now.
    pub(super) fn new_keying(
        &mut self,
        policy: domain::model::MediaSecurity,
        keys_allowed: bool,
    ) -> crate::sip::sdes::LegKeying {
        let rng = &mut self.key_rng;
        crate::sip::sdes::LegKeying::new(policy, keys_allowed, &mut |b| rng.fill(b))
    }

    /// Our side of a leg's SDP: the advertised address, `port`, the o=
    /// identity and the leg's keying.
    pub(super) fn local_media(
        &self,
        port: u16,
        session_id: u64,
        session_version: u64,
        keying: &crate::sip::sdes::LegKeying,
    ) -> crate::sip::sdp::LocalMedia {
        crate::sip::sdp::LocalMedia {
            addr: self.cfg.advertised_ip,
            port,
            session_id,
            session_version,
            keying: keying.clone(),
        }
    }

    pub(super) fn new_branch(&mut self) -> String {
        format!("z9hG4bK{}", self.random_hex(8))
    }

    /// Twilio-style call id: "CA" + 32 hex digits. The first 12 digits
    /// are the Unix time in ms and the next 4 count calls within the
    /// node, so ids sort by creation (also within one millisecond: call
    /// listings are newest first) and inserts land at the end of the
    /// primary-key index (random keys dirtied one index page per call in
    /// every CDR commit); the other 16 are random (nodes never collide).
    pub(super) fn new_call_sid(&mut self, now: Instant) -> String {
        let ms = self.clock.unix_ms(now).clamp(0, 0xffff_ffff_ffff);
        self.sid_seq = self.sid_seq.wrapping_add(1);
        let seq = self.sid_seq;
        format!("CA{ms:012x}{seq:04x}{}", self.random_hex(8))
    }
}

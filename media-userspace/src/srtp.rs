//! SRTP and SRTCP on one leg (RFC 3711; AEAD_AES_128_GCM per RFC 7714),
//! keyed by SDES (RFC 4568). Sans-IO: the leg feeds packets in and gets
//! them back protected or in the clear; no socket, no clock.
//!
//! The ciphers come from `rtc-srtp`, the sans-IO successor of the
//! `webrtc-srtp` crate (README gives the measured reason). Around it this
//! module adds what a public media port needs:
//!
//! * a packet is only ever seen in the clear after it authenticated, so a
//!   spoofed packet can neither latch a leg nor reach the AI;
//! * per-SSRC state is bounded. The crate keeps state for every SSRC it is
//!   handed, before the packet authenticates; unknown SSRCs are therefore
//!   tried on a probe context that is thrown away after
//!   [`PROBE_MISSES`] failures, and only an SSRC that authenticated gets a
//!   context of its own (at most [`MAX_SSRCS`] each way);
//! * every refusal is counted by reason ([`SrtpCounters`]);
//! * MKIs are not supported (the SDES parser refuses them), so no packet
//!   carries one.

use bytes::BytesMut;
use rtc_srtp::context::Context;
use rtc_srtp::option::{srtcp_replay_protection, srtp_replay_protection};
use rtc_srtp::protection_profile::ProtectionProfile;
use std::fmt;

pub use domain::srtp_keys::{KEY_SALT_MAX, SrtpKey, SrtpKeys, SrtpSuite};

/// The cipher profile of `rtc-srtp` for a suite.
fn profile(suite: SrtpSuite) -> ProtectionProfile {
    match suite {
        SrtpSuite::AesCm128HmacSha1_80 => ProtectionProfile::Aes128CmHmacSha1_80,
        SrtpSuite::AesCm128HmacSha1_32 => ProtectionProfile::Aes128CmHmacSha1_32,
        SrtpSuite::AeadAes128Gcm => ProtectionProfile::AeadAes128Gcm,
    }
}

/// Why a packet was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SrtpError {
    #[error("SRTP authentication failed")]
    Auth,
    #[error("SRTP replay")]
    Replay,
    #[error("not an RTP or RTCP packet of a usable length")]
    Malformed,
    #[error("too many SSRCs on one leg")]
    SsrcLimit,
    #[error("the key is used up (2^48 packets, RFC 3711 §9.2)")]
    KeyExhausted,
    #[error("the SRTP context could not be keyed")]
    Keying,
}

impl SrtpError {
    /// The reason label of `gateway_srtp_rejected_total`.
    pub fn label(self) -> &'static str {
        match self {
            SrtpError::Auth => "auth",
            SrtpError::Replay => "replay",
            SrtpError::Malformed => "malformed",
            SrtpError::SsrcLimit => "ssrc_limit",
            SrtpError::KeyExhausted => "key_exhausted",
            SrtpError::Keying => "keying",
        }
    }
}

/// What a leg's SRTP counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SrtpCounters {
    pub protected: u64,
    pub unprotected: u64,
    pub auth_failed: u64,
    pub replayed: u64,
    pub malformed: u64,
    pub ssrc_limit: u64,
    pub other: u64,
}

impl SrtpCounters {
    pub fn count(&mut self, e: SrtpError) {
        match e {
            SrtpError::Auth => self.auth_failed += 1,
            SrtpError::Replay => self.replayed += 1,
            SrtpError::Malformed => self.malformed += 1,
            SrtpError::SsrcLimit => self.ssrc_limit += 1,
            SrtpError::KeyExhausted | SrtpError::Keying => self.other += 1,
        }
    }

    /// Refusals of every reason.
    pub fn rejected(&self) -> u64 {
        self.auth_failed + self.replayed + self.malformed + self.ssrc_limit + self.other
    }
}

/// SSRCs a leg keeps SRTP state for, each way. A call has one per
/// direction; a far end that restarts its stream (a re-INVITE, a
/// transfer behind it) adds one.
pub const MAX_SSRCS: usize = 8;
/// Failed unknown-SSRC packets after which the probe context, and the
/// state the crate made for them, is dropped.
pub const PROBE_MISSES: u32 = 16;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Rtp,
    Rtcp,
}

/// The receiving side of one kind (RTP or RTCP): a context per SSRC that
/// authenticated, and a probe for SSRCs not seen yet.
struct Inbound {
    kind: Kind,
    known: Vec<(u32, Context)>,
    probe: Option<Context>,
    probe_misses: u32,
}

/// The sending side: one context, at most [`MAX_SSRCS`] SSRCs through it.
struct Outbound {
    ctx: Context,
    ssrcs: Vec<u32>,
}

/// SRTP and SRTCP state of one leg, both ways.
pub struct SrtpSession {
    keys: SrtpKeys,
    tx_rtp: Outbound,
    tx_rtcp: Outbound,
    rx_rtp: Inbound,
    rx_rtcp: Inbound,
    pub counters: SrtpCounters,
}

impl fmt::Debug for SrtpSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SrtpSession")
            .field("suite", &self.keys.suite)
            .field("counters", &self.counters)
            .finish()
    }
}

fn context(suite: SrtpSuite, key: &SrtpKey, window: Option<u16>) -> Result<Context, SrtpError> {
    let (k, _) = suite.key_salt_len();
    let ks = key.key_salt();
    let provider = rtc_srtp::crypto::providers::RingProvider::new();
    let (rtp_opt, rtcp_opt) = match window {
        Some(w) => (
            Some(srtp_replay_protection(usize::from(w))),
            Some(srtcp_replay_protection(usize::from(w))),
        ),
        None => (None, None),
    };
    use rtc_srtp::crypto::RTCCryptoProvider;
    Context::new(
        &ks[..k],
        &ks[k..],
        profile(suite),
        rtp_opt,
        rtcp_opt,
        provider.crypto(),
    )
    .map_err(|_| SrtpError::Keying)
}

/// The SSRC a packet names: RTP's at 8, RTCP's sender at 4.
fn ssrc_of(kind: Kind, pkt: &[u8]) -> Result<u32, SrtpError> {
    let (min, at) = match kind {
        Kind::Rtp => (12, 8),
        Kind::Rtcp => (8, 4),
    };
    if pkt.len() < min || pkt[0] >> 6 != 2 {
        return Err(SrtpError::Malformed);
    }
    Ok(u32::from_be_bytes([
        pkt[at],
        pkt[at + 1],
        pkt[at + 2],
        pkt[at + 3],
    ]))
}

fn map_err(e: rtc_shared::error::Error) -> SrtpError {
    use rtc_shared::error::Error as E;
    match e {
        E::RtpFailedToVerifyAuthTag
        | E::RtcpFailedToVerifyAuthTag
        | E::ErrFailedToVerifyAuthTag => SrtpError::Auth,
        E::SrtpSsrcDuplicated(..) | E::SrtcpSsrcDuplicated(..) => SrtpError::Replay,
        E::ErrExceededMaxPackets => SrtpError::KeyExhausted,
        _ => SrtpError::Malformed,
    }
}

impl Inbound {
    fn new(kind: Kind) -> Inbound {
        Inbound {
            kind,
            known: Vec::new(),
            probe: None,
            probe_misses: 0,
        }
    }

    fn open(ctx: &mut Context, kind: Kind, pkt: &[u8]) -> Result<BytesMut, SrtpError> {
        match kind {
            Kind::Rtp => ctx.decrypt_rtp(pkt),
            Kind::Rtcp => ctx.decrypt_rtcp(pkt),
        }
        .map_err(map_err)
    }

    fn unprotect(&mut self, keys: &SrtpKeys, pkt: &[u8]) -> Result<BytesMut, SrtpError> {
        let ssrc = ssrc_of(self.kind, pkt)?;
        if let Some((_, ctx)) = self.known.iter_mut().find(|(s, _)| *s == ssrc) {
            return Self::open(ctx, self.kind, pkt);
        }
        if self.known.len() >= MAX_SSRCS {
            return Err(SrtpError::SsrcLimit);
        }
        let probe = match &mut self.probe {
            Some(p) => p,
            None => self
                .probe
                .insert(context(keys.suite, &keys.rx, Some(keys.replay_window))?),
        };
        match Self::open(probe, self.kind, pkt) {
            Ok(plain) => {
                if let Some(ctx) = self.probe.take() {
                    self.known.push((ssrc, ctx));
                }
                self.probe_misses = 0;
                Ok(plain)
            }
            Err(e) => {
                self.probe_misses += 1;
                if self.probe_misses >= PROBE_MISSES {
                    self.probe = None;
                    self.probe_misses = 0;
                }
                Err(e)
            }
        }
    }
}

impl Outbound {
    fn new(keys: &SrtpKeys) -> Result<Outbound, SrtpError> {
        Ok(Outbound {
            ctx: context(keys.suite, &keys.tx, None)?,
            ssrcs: Vec::new(),
        })
    }

    fn protect(&mut self, kind: Kind, pkt: &[u8]) -> Result<BytesMut, SrtpError> {
        let ssrc = ssrc_of(kind, pkt)?;
        if !self.ssrcs.contains(&ssrc) {
            if self.ssrcs.len() >= MAX_SSRCS {
                return Err(SrtpError::SsrcLimit);
            }
            self.ssrcs.push(ssrc);
        }
        match kind {
            Kind::Rtp => self.ctx.encrypt_rtp(pkt),
            Kind::Rtcp => self.ctx.encrypt_rtcp(pkt),
        }
        .map_err(map_err)
    }
}

impl SrtpSession {
    pub fn new(keys: SrtpKeys) -> Result<SrtpSession, SrtpError> {
        Ok(SrtpSession {
            tx_rtp: Outbound::new(&keys)?,
            tx_rtcp: Outbound::new(&keys)?,
            rx_rtp: Inbound::new(Kind::Rtp),
            rx_rtcp: Inbound::new(Kind::Rtcp),
            keys,
            counters: SrtpCounters::default(),
        })
    }

    pub fn keys(&self) -> &SrtpKeys {
        &self.keys
    }

    /// New keys from a re-INVITE. Keys that did not change keep their
    /// state (rollover counters, replay windows); a changed key starts
    /// afresh, as RFC 4568 §7.1.4 asks of a new master key.
    pub fn rekey(&mut self, keys: SrtpKeys) -> Result<(), SrtpError> {
        if keys == self.keys {
            return Ok(());
        }
        let same_suite = keys.suite == self.keys.suite;
        if !same_suite || keys.tx != self.keys.tx {
            self.tx_rtp = Outbound::new(&keys)?;
            self.tx_rtcp = Outbound::new(&keys)?;
        }
        if !same_suite || keys.rx != self.keys.rx || keys.replay_window != self.keys.replay_window {
            self.rx_rtp = Inbound::new(Kind::Rtp);
            self.rx_rtcp = Inbound::new(Kind::Rtcp);
        }
        self.keys = keys;
        Ok(())
    }

    fn counted<T>(
        &mut self,
        r: Result<T, SrtpError>,
        ok: fn(&mut SrtpCounters),
    ) -> Result<T, SrtpError> {
        match &r {
            Ok(_) => ok(&mut self.counters),
            Err(e) => self.counters.count(*e),
        }
        r
    }

    /// Authenticates and decrypts an SRTP packet in place; the length of
    /// the RTP packet it leaves at the front of `pkt`.
    pub fn unprotect_rtp(&mut self, pkt: &mut [u8]) -> Result<usize, SrtpError> {
        let r = self.rx_rtp.unprotect(&self.keys, pkt).map(|plain| {
            pkt[..plain.len()].copy_from_slice(&plain);
            plain.len()
        });
        self.counted(r, |c| c.unprotected += 1)
    }

    /// Authenticates and decrypts an SRTCP packet.
    pub fn unprotect_rtcp(&mut self, pkt: &[u8]) -> Result<BytesMut, SrtpError> {
        let r = self.rx_rtcp.unprotect(&self.keys, pkt);
        self.counted(r, |c| c.unprotected += 1)
    }

    /// Protects an RTP packet.
    pub fn protect_rtp(&mut self, pkt: &[u8]) -> Result<BytesMut, SrtpError> {
        let r = self.tx_rtp.protect(Kind::Rtp, pkt);
        self.counted(r, |c| c.protected += 1)
    }

    /// Protects the RTP packet in `buf[..len]` in place; the protected
    /// length, or `None` when `buf` has no room for the tag.
    pub fn protect_rtp_in_place(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let out = self.protect_rtp(&buf[..len])?;
        let Some(dst) = buf.get_mut(..out.len()) else {
            self.counters.protected -= 1;
            self.counters.count(SrtpError::Malformed);
            return Err(SrtpError::Malformed);
        };
        dst.copy_from_slice(&out);
        Ok(out.len())
    }

    /// Protects an RTCP packet (compound RTCP, RFC 3711 §3.4).
    pub fn protect_rtcp(&mut self, pkt: &[u8]) -> Result<BytesMut, SrtpError> {
        let r = self.tx_rtcp.protect(Kind::Rtcp, pkt);
        self.counted(r, |c| c.protected += 1)
    }
}

/// A media leg's protection as its keys change with re-INVITEs: plain
/// RTP, an SRTP session, or keys that could not be used. Nothing passes
/// in the clear on a leg that asked for SRTP: with unusable keys every
/// packet is refused.
#[derive(Debug)]
pub enum LegSrtp {
    Plain,
    Keyed(Box<SrtpSession>),
    Broken {
        counters: SrtpCounters,
        keys: SrtpKeys,
    },
}

impl LegSrtp {
    pub fn new(keys: Option<SrtpKeys>) -> LegSrtp {
        match keys {
            None => LegSrtp::Plain,
            Some(k) => match SrtpSession::new(k) {
                Ok(s) => LegSrtp::Keyed(Box::new(s)),
                Err(_) => LegSrtp::Broken {
                    counters: SrtpCounters::default(),
                    keys: k,
                },
            },
        }
    }

    /// The leg's new keys (a re-INVITE): unchanged directions keep their
    /// state ([`SrtpSession::rekey`]); SRTP to plain or back starts anew.
    /// Counters carry over.
    pub fn update(&mut self, keys: Option<SrtpKeys>) {
        if self.keys() == keys {
            return;
        }
        let counters = self.counters();
        if let (LegSrtp::Keyed(s), Some(k)) = (&mut *self, keys)
            && s.rekey(k).is_ok()
        {
            return;
        }
        *self = LegSrtp::new(keys);
        match self {
            LegSrtp::Keyed(s) => s.counters = counters,
            LegSrtp::Broken { counters: c, .. } => *c = counters,
            LegSrtp::Plain => {}
        }
    }

    pub fn keys(&self) -> Option<SrtpKeys> {
        match self {
            LegSrtp::Plain => None,
            LegSrtp::Keyed(s) => Some(*s.keys()),
            LegSrtp::Broken { keys, .. } => Some(*keys),
        }
    }

    pub fn is_plain(&self) -> bool {
        matches!(self, LegSrtp::Plain)
    }

    pub fn counters(&self) -> SrtpCounters {
        match self {
            LegSrtp::Plain => SrtpCounters::default(),
            LegSrtp::Keyed(s) => s.counters,
            LegSrtp::Broken { counters, .. } => *counters,
        }
    }

    fn broken(counters: &mut SrtpCounters) -> SrtpError {
        counters.count(SrtpError::Keying);
        SrtpError::Keying
    }

    /// A datagram that arrived, RTP in `pkt`: its RTP packet in the
    /// clear, in place; the length. Plain legs take it as it is.
    pub fn inbound_rtp(&mut self, pkt: &mut [u8]) -> Result<usize, SrtpError> {
        match self {
            LegSrtp::Plain => Ok(pkt.len()),
            LegSrtp::Keyed(s) => s.unprotect_rtp(pkt),
            LegSrtp::Broken { counters, .. } => Err(Self::broken(counters)),
        }
    }

    /// Authenticates and decrypts an arrived RTP packet, leaving `pkt`
    /// as it came (a relay passes it on untouched); the clear packet.
    /// `None` on plain legs.
    pub fn open_rtp(&mut self, pkt: &[u8]) -> Result<Option<BytesMut>, SrtpError> {
        match self {
            LegSrtp::Plain => Ok(None),
            LegSrtp::Keyed(s) => {
                let r = s.rx_rtp.unprotect(&s.keys, pkt);
                s.counted(r, |c| c.unprotected += 1).map(Some)
            }
            LegSrtp::Broken { counters, .. } => Err(Self::broken(counters)),
        }
    }

    /// An arrived RTCP packet in the clear (a copy only on SRTP legs).
    pub fn inbound_rtcp<'a>(
        &mut self,
        pkt: &'a [u8],
    ) -> Result<std::borrow::Cow<'a, [u8]>, SrtpError> {
        match self {
            LegSrtp::Plain => Ok(std::borrow::Cow::Borrowed(pkt)),
            LegSrtp::Keyed(s) => s
                .unprotect_rtcp(pkt)
                .map(|b| std::borrow::Cow::Owned(b.to_vec())),
            LegSrtp::Broken { counters, .. } => Err(Self::broken(counters)),
        }
    }

    /// Protects the RTP packet in `buf[..len]` in place for sending; the
    /// length to send.
    pub fn outbound_rtp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        match self {
            LegSrtp::Plain => Ok(len),
            LegSrtp::Keyed(s) => s.protect_rtp_in_place(buf, len),
            LegSrtp::Broken { counters, .. } => Err(Self::broken(counters)),
        }
    }

    /// Protects an RTP packet the leg made.
    pub fn outbound_rtp_vec(&mut self, pkt: Vec<u8>) -> Result<Vec<u8>, SrtpError> {
        match self {
            LegSrtp::Plain => Ok(pkt),
            // The crate's own buffer becomes the packet: no copy back.
            LegSrtp::Keyed(s) => s.protect_rtp(&pkt).map(Vec::from),
            LegSrtp::Broken { counters, .. } => Err(Self::broken(counters)),
        }
    }

    /// Protects an RTCP packet for sending.
    pub fn outbound_rtcp(&mut self, pkt: &[u8]) -> Result<Vec<u8>, SrtpError> {
        match self {
            LegSrtp::Plain => Ok(pkt.to_vec()),
            LegSrtp::Keyed(s) => s.protect_rtcp(pkt).map(|b| b.to_vec()),
            LegSrtp::Broken { counters, .. } => Err(Self::broken(counters)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8, suite: SrtpSuite) -> SrtpKey {
        let (k, s) = suite.key_salt_len();
        SrtpKey::new(suite, &vec![b; k + s]).unwrap()
    }

    /// A pair of sessions that talk to each other: `a` sends under key 1,
    /// `b` under key 2.
    fn pair(suite: SrtpSuite) -> (SrtpSession, SrtpSession) {
        let (k1, k2) = (key(1, suite), key(2, suite));
        let a = SrtpSession::new(SrtpKeys {
            suite,
            tx: k1,
            rx: k2,
            replay_window: 64,
        })
        .unwrap();
        let b = SrtpSession::new(SrtpKeys {
            suite,
            tx: k2,
            rx: k1,
            replay_window: 64,
        })
        .unwrap();
        (a, b)
    }

    fn rtp(seq: u16, ssrc: u32, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 160, 0, 0, 0, 0];
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p[8..12].copy_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }

    fn rtcp_rr(ssrc: u32) -> Vec<u8> {
        let mut p = vec![0x80, 201, 0, 1];
        p.extend_from_slice(&ssrc.to_be_bytes());
        p
    }

    /// The known-answer vectors every SRTP implementation checks against
    /// (libsrtp's `srtp_driver`, RFC 3711 Appendix B key and salt): a wire
    /// compatible implementation must produce these bytes exactly.
    #[test]
    fn aes_cm_output_matches_the_reference_vectors() {
        let master: Vec<u8> = [
            0xe1, 0xf9, 0x7a, 0x0d, 0x3e, 0x01, 0x8b, 0xe0, 0xd6, 0x4f, 0xa3, 0x2c, 0x06, 0xde,
            0x41, 0x39, 0x0e, 0xc6, 0x75, 0xad, 0x49, 0x8a, 0xfe, 0xeb, 0xb6, 0x96, 0x0b, 0x3a,
            0xab, 0xe6,
        ]
        .to_vec();
        let mut plain = vec![
            0x80, 0x0f, 0x12, 0x34, 0xde, 0xca, 0xfb, 0xad, 0xca, 0xfe, 0xba, 0xbe,
        ];
        plain.extend_from_slice(&[0xab; 16]);
        let cipher80: [u8; 38] = [
            0x80, 0x0f, 0x12, 0x34, 0xde, 0xca, 0xfb, 0xad, 0xca, 0xfe, 0xba, 0xbe, 0x4e, 0x55,
            0xdc, 0x4c, 0xe7, 0x99, 0x78, 0xd8, 0x8c, 0xa4, 0xd2, 0x15, 0x94, 0x9d, 0x24, 0x02,
            0xb7, 0x8d, 0x6a, 0xcc, 0x99, 0xea, 0x17, 0x9b, 0x8d, 0xbb,
        ];
        for (suite, tag) in [
            (SrtpSuite::AesCm128HmacSha1_80, 10),
            (SrtpSuite::AesCm128HmacSha1_32, 4),
        ] {
            let k = SrtpKey::new(suite, &master).unwrap();
            let keys = SrtpKeys {
                suite,
                tx: k,
                rx: k,
                replay_window: 64,
            };
            let mut s = SrtpSession::new(keys).unwrap();
            let out = s.protect_rtp(&plain).unwrap();
            assert_eq!(&out[..], &cipher80[..28 + tag], "{}", suite.name());
            let mut r = SrtpSession::new(keys).unwrap();
            let mut wire = out.to_vec();
            let n = r.unprotect_rtp(&mut wire).unwrap();
            assert_eq!(&wire[..n], &plain[..]);
        }
    }

    #[test]
    fn suites_are_named_and_indexed_as_listed() {
        for (i, s) in SrtpSuite::ALL.into_iter().enumerate() {
            assert_eq!(s.index(), i);
            assert_eq!(SrtpSuite::from_name(s.name()), Some(s));
        }
        assert_eq!(SrtpSuite::from_name("aes_cm_128_hmac_sha1_80"), None);
    }

    #[test]
    fn every_suite_round_trips_rtp_and_rtcp_and_hides_the_payload() {
        for suite in [
            SrtpSuite::AesCm128HmacSha1_80,
            SrtpSuite::AesCm128HmacSha1_32,
            SrtpSuite::AeadAes128Gcm,
        ] {
            let (mut a, mut b) = pair(suite);
            let plain = rtp(7, 0x1234, &[0x55; 160]);
            let wire = a.protect_rtp(&plain).unwrap();
            assert_eq!(wire.len(), plain.len() + suite.rtp_overhead(), "{suite:?}");
            assert_eq!(&wire[..12], &plain[..12], "the header stays in the clear");
            assert!(
                !wire[12..].windows(16).any(|w| w == [0x55; 16]),
                "{suite:?}"
            );
            let mut buf = wire.to_vec();
            let n = b.unprotect_rtp(&mut buf).unwrap();
            assert_eq!(&buf[..n], &plain[..]);

            let rr = rtcp_rr(0x1234);
            let wire = a.protect_rtcp(&rr).unwrap();
            assert!(wire.len() > rr.len());
            assert_eq!(&b.unprotect_rtcp(&wire).unwrap()[..], &rr[..]);
            assert_eq!(a.counters.protected, 2);
            assert_eq!(b.counters.unprotected, 2);
        }
    }

    #[test]
    fn a_tampered_packet_a_wrong_key_and_a_replay_are_refused_and_counted() {
        let (mut a, mut b) = pair(SrtpSuite::AesCm128HmacSha1_80);
        let wire = a.protect_rtp(&rtp(1, 9, &[1; 20])).unwrap().to_vec();
        let mut bad = wire.clone();
        bad[14] ^= 1;
        assert_eq!(b.unprotect_rtp(&mut bad), Err(SrtpError::Auth));
        // Our own key cannot open what we sent (each side has its own).
        assert_eq!(a.unprotect_rtp(&mut wire.clone()), Err(SrtpError::Auth));
        assert!(b.unprotect_rtp(&mut wire.clone()).is_ok());
        assert_eq!(b.unprotect_rtp(&mut wire.clone()), Err(SrtpError::Replay));
        assert_eq!(
            b.unprotect_rtp(&mut [0x80, 0, 1]),
            Err(SrtpError::Malformed)
        );
        assert_eq!(
            b.counters,
            SrtpCounters {
                unprotected: 1,
                auth_failed: 1,
                replayed: 1,
                malformed: 1,
                ..Default::default()
            }
        );
    }

    #[test]
    fn the_rollover_counter_follows_the_sequence_across_its_wrap() {
        let (mut a, mut b) = pair(SrtpSuite::AesCm128HmacSha1_32);
        for i in 0..600u32 {
            let seq = (65_236u32 + i) as u16; // wraps at i = 300
            let mut wire = a
                .protect_rtp(&rtp(seq, 5, &[i as u8; 32]))
                .unwrap()
                .to_vec();
            let n = b
                .unprotect_rtp(&mut wire)
                .unwrap_or_else(|e| panic!("{i}: {e}"));
            assert_eq!(wire[12..n], [i as u8; 32]);
        }
    }

    #[test]
    fn spoofed_ssrcs_cannot_grow_the_state_or_lock_out_the_real_stream() {
        let (mut a, mut b) = pair(SrtpSuite::AesCm128HmacSha1_80);
        let (mut evil, _) = pair(SrtpSuite::AesCm128HmacSha1_80);
        evil.rekey(SrtpKeys {
            tx: key(9, SrtpSuite::AesCm128HmacSha1_80),
            ..*evil.keys()
        })
        .unwrap();
        for ssrc in 0..10_000u32 {
            let mut p = evil
                .protect_rtp(&rtp(1, ssrc % MAX_SSRCS as u32, &[0; 8]))
                .unwrap()
                .to_vec();
            p[8..12].copy_from_slice(&ssrc.to_be_bytes());
            assert_eq!(b.unprotect_rtp(&mut p), Err(SrtpError::Auth));
        }
        assert!(b.rx_rtp.known.is_empty());
        assert!(b.rx_rtp.probe_misses < PROBE_MISSES);
        let mut wire = a.protect_rtp(&rtp(1, 77, &[3; 8])).unwrap().to_vec();
        assert!(b.unprotect_rtp(&mut wire).is_ok());
        assert_eq!(b.counters.auth_failed, 10_000);
    }

    #[test]
    fn more_ssrcs_than_the_limit_are_refused_each_way() {
        let (mut a, mut b) = pair(SrtpSuite::AeadAes128Gcm);
        for ssrc in 0..MAX_SSRCS as u32 {
            let mut w = a.protect_rtp(&rtp(1, ssrc, &[0; 8])).unwrap().to_vec();
            b.unprotect_rtp(&mut w).unwrap();
        }
        assert_eq!(
            a.protect_rtp(&rtp(1, 99, &[0; 8])).unwrap_err(),
            SrtpError::SsrcLimit
        );
        assert_eq!(a.counters.ssrc_limit, 1);
    }

    #[test]
    fn a_rekey_of_one_direction_keeps_the_other() {
        let suite = SrtpSuite::AesCm128HmacSha1_80;
        let (mut a, mut b) = pair(suite);
        let mut w = a.protect_rtp(&rtp(1, 1, &[0; 8])).unwrap().to_vec();
        b.unprotect_rtp(&mut w).unwrap();
        // b changes the key it sends with; a learns it from the re-INVITE.
        let k3 = key(3, suite);
        b.rekey(SrtpKeys {
            tx: k3,
            ..*b.keys()
        })
        .unwrap();
        a.rekey(SrtpKeys {
            rx: k3,
            ..*a.keys()
        })
        .unwrap();
        let mut w = b.protect_rtp(&rtp(1, 2, &[0; 8])).unwrap().to_vec();
        a.unprotect_rtp(&mut w).unwrap();
        // The unchanged direction still refuses the replay of before.
        let mut w = a.protect_rtp(&rtp(2, 1, &[0; 8])).unwrap().to_vec();
        b.unprotect_rtp(&mut w.clone()).unwrap();
        assert_eq!(b.unprotect_rtp(&mut w), Err(SrtpError::Replay));
    }

    #[test]
    fn in_place_protection_needs_room_for_the_tag() {
        let (mut a, mut b) = pair(SrtpSuite::AesCm128HmacSha1_80);
        let plain = rtp(1, 1, &[7; 20]);
        let mut buf = plain.clone();
        buf.resize(plain.len() + 16, 0);
        let n = a.protect_rtp_in_place(&mut buf, plain.len()).unwrap();
        assert_eq!(n, plain.len() + 10);
        let m = b.unprotect_rtp(&mut buf[..n]).unwrap();
        assert_eq!(buf[..m], plain[..]);
        let mut tight = plain.clone();
        assert_eq!(
            a.protect_rtp_in_place(&mut tight, plain.len()),
            Err(SrtpError::Malformed)
        );
    }
}

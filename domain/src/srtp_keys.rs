//! SRTP suites and master keys as SDES names them (RFC 4568 §6.1, RFC
//! 7714 §12): what the SDP layer negotiates and the media layer keys its
//! contexts with.

use std::fmt;

/// An SRTP crypto suite (RFC 4568 §6.2, RFC 7714 §12).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SrtpSuite {
    AesCm128HmacSha1_80,
    AesCm128HmacSha1_32,
    AeadAes128Gcm,
}

impl SrtpSuite {
    /// Every suite we speak, in the order we offer them.
    pub const ALL: [SrtpSuite; 3] = [
        SrtpSuite::AesCm128HmacSha1_80,
        SrtpSuite::AeadAes128Gcm,
        SrtpSuite::AesCm128HmacSha1_32,
    ];

    /// The suite an SDP crypto attribute names (RFC 4568 §6.2, RFC 7714
    /// §12), case as registered.
    pub fn from_name(s: &str) -> Option<SrtpSuite> {
        SrtpSuite::ALL.into_iter().find(|c| c.name() == s)
    }

    /// Index of the suite in [`SrtpSuite::ALL`] (tested below).
    pub fn index(self) -> usize {
        match self {
            SrtpSuite::AesCm128HmacSha1_80 => 0,
            SrtpSuite::AeadAes128Gcm => 1,
            SrtpSuite::AesCm128HmacSha1_32 => 2,
        }
    }

    /// Master key and master salt lengths in bytes.
    pub fn key_salt_len(self) -> (usize, usize) {
        match self {
            SrtpSuite::AesCm128HmacSha1_80 | SrtpSuite::AesCm128HmacSha1_32 => (16, 14),
            SrtpSuite::AeadAes128Gcm => (16, 12),
        }
    }

    /// Bytes the protection adds to an RTP packet (the tag).
    pub fn rtp_overhead(self) -> usize {
        match self {
            SrtpSuite::AesCm128HmacSha1_80 => 10,
            SrtpSuite::AesCm128HmacSha1_32 => 4,
            SrtpSuite::AeadAes128Gcm => 16,
        }
    }

    /// The name in SDP and in the CDR.
    pub fn name(self) -> &'static str {
        match self {
            SrtpSuite::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            SrtpSuite::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
            SrtpSuite::AeadAes128Gcm => "AEAD_AES_128_GCM",
        }
    }
}

/// Longest master key plus salt of the suites we speak.
pub const KEY_SALT_MAX: usize = 30;

/// One direction's master key and salt (RFC 4568 `inline:` key-salt).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SrtpKey {
    material: [u8; KEY_SALT_MAX],
    len: u8,
}

impl SrtpKey {
    /// `key_salt` is the master key followed by the master salt; `None`
    /// when its length is not the suite's.
    pub fn new(suite: SrtpSuite, key_salt: &[u8]) -> Option<SrtpKey> {
        let (k, s) = suite.key_salt_len();
        if key_salt.len() != k + s {
            return None;
        }
        let mut material = [0u8; KEY_SALT_MAX];
        material[..key_salt.len()].copy_from_slice(key_salt);
        Some(SrtpKey {
            material,
            len: key_salt.len() as u8,
        })
    }

    /// A key for `suite` whose bytes `fill` writes (a CSPRNG).
    pub fn generate(suite: SrtpSuite, fill: impl FnOnce(&mut [u8])) -> SrtpKey {
        let (k, s) = suite.key_salt_len();
        let mut material = [0u8; KEY_SALT_MAX];
        fill(&mut material[..k + s]);
        SrtpKey {
            material,
            len: (k + s) as u8,
        }
    }

    pub fn key_salt(&self) -> &[u8] {
        &self.material[..usize::from(self.len)]
    }
}

impl fmt::Debug for SrtpKey {
    // Keys never reach logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SrtpKey(<redacted>)")
    }
}

/// The keys of a leg: what we send under, and what the peer sends under
/// (each side of SDES declares the key it sends with, RFC 4568 §6.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SrtpKeys {
    pub suite: SrtpSuite,
    /// Ours: we protect what we send with it.
    pub tx: SrtpKey,
    /// The peer's: we authenticate and decrypt what arrives with it.
    pub rx: SrtpKey,
    /// Replay window for what arrives (the peer's `WSH`, at least 64).
    pub replay_window: u16,
}

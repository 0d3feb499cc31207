//! SDES keying for SRTP: the SDP `a=crypto:` attribute (RFC 4568 §9.1)
//! for the suites we offer, AES_CM_128_HMAC_SHA1_80 and _32 (RFC 4568
//! §6.2) and AEAD_AES_128_GCM (RFC 7714 §12). Parsing is strict about
//! what we cannot honour: a master key identifier (MKI), more than one
//! key, and session parameters that change the protection (KDR,
//! UNENCRYPTED_*, UNAUTHENTICATED_SRTP, FEC_*) are refused by name, so the
//! offer/answer can drop that line rather than key a stream wrongly.

use base64::Engine;
use std::fmt;

use domain::model::MediaSecurity;
pub use domain::srtp_keys::{SrtpKey, SrtpKeys, SrtpSuite};

/// Why a crypto attribute cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SdesError {
    #[error("malformed crypto attribute: {0}")]
    Syntax(&'static str),
    #[error("crypto suite {0:?} not supported")]
    UnknownSuite(String),
    #[error("the key has an MKI, which we do not support")]
    Mki,
    #[error("more than one key")]
    SeveralKeys,
    #[error("key method {0:?} is not inline")]
    KeyMethod(String),
    #[error("the key and salt are not base64 of {0} bytes")]
    KeyLength(usize),
    #[error("session parameter {0:?} not supported")]
    SessionParam(String),
}

/// One `a=crypto:` attribute.
#[derive(Clone, PartialEq, Eq)]
pub struct Crypto {
    /// Ties the answer to the offer's line (RFC 4568 §5.1).
    pub tag: u32,
    pub suite: SrtpSuite,
    /// Master key followed by master salt.
    pub key: SrtpKey,
    /// `|lifetime`: packets under this key (`2^n` or decimal), if given.
    pub lifetime: Option<u64>,
    /// `WSH=`: the replay window size the sender asks for.
    pub window: Option<u32>,
}

impl fmt::Debug for Crypto {
    // Keys never reach logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Crypto")
            .field("tag", &self.tag)
            .field("suite", &self.suite)
            .field("key_salt", &"<redacted>")
            .field("lifetime", &self.lifetime)
            .field("window", &self.window)
            .finish()
    }
}

/// Longest attribute value we look at: a few keys' worth.
const MAX_LEN: usize = 1024;

impl Crypto {
    /// Parses the value of an `a=crypto:` attribute (what follows the
    /// colon): `tag SP suite SP key-params [SP session-params]`.
    pub fn parse(value: &str) -> Result<Crypto, SdesError> {
        if value.len() > MAX_LEN {
            return Err(SdesError::Syntax("too long"));
        }
        let mut parts = value.split([' ', '\t']).filter(|p| !p.is_empty());
        let tag = parts.next().ok_or(SdesError::Syntax("no tag"))?;
        if tag.is_empty() || tag.len() > 9 || !tag.bytes().all(|b| b.is_ascii_digit()) {
            return Err(SdesError::Syntax("tag is not 1 to 9 digits"));
        }
        let tag: u32 = tag.parse().map_err(|_| SdesError::Syntax("tag"))?;
        let suite_name = parts.next().ok_or(SdesError::Syntax("no crypto suite"))?;
        let suite = SrtpSuite::from_name(suite_name)
            .ok_or_else(|| SdesError::UnknownSuite(suite_name.chars().take(64).collect()))?;
        let key_params = parts.next().ok_or(SdesError::Syntax("no key parameters"))?;
        if key_params.contains(';') {
            return Err(SdesError::SeveralKeys);
        }
        let (method, info) = key_params
            .split_once(':')
            .ok_or(SdesError::Syntax("key parameter without a method"))?;
        if !method.eq_ignore_ascii_case("inline") {
            return Err(SdesError::KeyMethod(method.chars().take(32).collect()));
        }
        let mut fields = info.split('|');
        let key_b64 = fields.next().unwrap_or_default();
        let (k, s) = suite.key_salt_len();
        let key_salt = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(key_b64.trim_end_matches('='))
            .map_err(|_| SdesError::KeyLength(k + s))?;
        let key = SrtpKey::new(suite, &key_salt).ok_or(SdesError::KeyLength(k + s))?;
        let mut lifetime = None;
        for f in fields {
            if f.contains(':') {
                return Err(SdesError::Mki);
            }
            if lifetime.is_some() {
                return Err(SdesError::Syntax("two lifetimes"));
            }
            lifetime = Some(parse_lifetime(f)?);
        }
        let mut window = None;
        for p in parts {
            match p.split_once('=') {
                Some(("WSH", n)) => {
                    let n: u32 = n.parse().map_err(|_| SdesError::Syntax("WSH"))?;
                    // §6.3.7: at least 64.
                    if n < 64 {
                        return Err(SdesError::SessionParam("WSH".into()));
                    }
                    window = Some(n);
                }
                // A key derivation rate of 0 is the default: no re-keying.
                Some(("KDR", "0")) => {}
                _ => {
                    return Err(SdesError::SessionParam(
                        p.split('=').next().unwrap_or(p).chars().take(32).collect(),
                    ));
                }
            }
        }
        Ok(Crypto {
            tag,
            suite,
            key,
            lifetime,
            window,
        })
    }

    /// A fresh key for `suite` under `tag`, from `random` (the caller's
    /// CSPRNG: the core stays free of entropy sources).
    pub fn new_key(tag: u32, suite: SrtpSuite, random: &mut dyn FnMut(&mut [u8])) -> Crypto {
        Crypto::with_key(tag, suite, SrtpKey::generate(suite, |b| random(b)))
    }

    /// A line declaring `key` (ours) for `suite` under `tag`.
    pub fn with_key(tag: u32, suite: SrtpSuite, key: SrtpKey) -> Crypto {
        Crypto {
            tag,
            suite,
            key,
            lifetime: None,
            window: None,
        }
    }

    /// The attribute value, as [`Crypto::parse`] reads it.
    pub fn encode(&self) -> String {
        let key = base64::engine::general_purpose::STANDARD.encode(self.key.key_salt());
        let mut out = format!("{} {} inline:{key}", self.tag, self.suite.name());
        if let Some(l) = self.lifetime {
            if l.is_power_of_two() {
                out.push_str(&format!("|2^{}", l.trailing_zeros()));
            } else {
                out.push_str(&format!("|{l}"));
            }
        }
        if let Some(w) = self.window {
            out.push_str(&format!(" WSH={w}"));
        }
        out
    }

    pub fn master_key(&self) -> &[u8] {
        &self.key.key_salt()[..self.suite.key_salt_len().0]
    }

    pub fn master_salt(&self) -> &[u8] {
        &self.key.key_salt()[self.suite.key_salt_len().0..]
    }
}

fn parse_lifetime(f: &str) -> Result<u64, SdesError> {
    let v = match f.strip_prefix("2^") {
        Some(exp) => {
            let e: u32 = exp.parse().map_err(|_| SdesError::Syntax("lifetime"))?;
            if e > 63 {
                return Err(SdesError::Syntax("lifetime"));
            }
            1u64 << e
        }
        None => f.parse().map_err(|_| SdesError::Syntax("lifetime"))?,
    };
    if v == 0 {
        return Err(SdesError::Syntax("lifetime"));
    }
    Ok(v)
}

/// The offer's first crypto line that we can honour, among `suites` in
/// the offer's order (RFC 4568 §7.1.1: the answerer picks one); the
/// refusals of the others, for the log.
pub fn choose<'a>(
    offered: impl IntoIterator<Item = &'a str>,
    suites: &[SrtpSuite],
) -> (Option<Crypto>, Vec<SdesError>) {
    let mut refused = Vec::new();
    for v in offered {
        match Crypto::parse(v) {
            Ok(c) if suites.contains(&c.suite) => return (Some(c), refused),
            Ok(c) => refused.push(SdesError::UnknownSuite(c.suite.name().into())),
            Err(e) => refused.push(e),
        }
    }
    (None, refused)
}

/// Upper bound on the replay window a peer may ask for (`WSH`): the
/// window is kept per SSRC, so a peer must not size our state.
pub const MAX_WINDOW: u32 = 1024;

/// The SRTP keying of one leg (RFC 4568 §7): what its policy allows and
/// the keys we declare on it. Our keys are drawn once, when the leg is
/// made, one per suite (a key is never used under two suites): later
/// offers and answers declare the same key, so the stream keeps its
/// rollover counter and replay state (§7.1.4 allows it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LegKeying {
    pub policy: MediaSecurity,
    /// SDES keys may cross this leg's signalling: it runs over TLS, or
    /// its trunk allows cleartext keying (§8.3: keys in clear signalling
    /// protect nothing).
    pub keys_allowed: bool,
    /// Our master key and salt per suite ([`SrtpSuite::index`]); `None`
    /// for a leg that never keys (plain RTP).
    own: Option<[SrtpKey; 3]>,
    /// Declared instead of our own key for its suite: the key the party of
    /// the other leg sends with (keys shared end to end), so the relay
    /// passes its ciphertext untouched and the kernel may forward it.
    pub shared: Option<(SrtpSuite, SrtpKey)>,
    /// The leg's signalling runs over TLS. Keys are shared end to end
    /// only between legs whose signalling hides them alike: a key that
    /// came over TLS never goes out in clear.
    pub over_tls: bool,
}

/// Why an offer's audio cannot be keyed as the leg's policy asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyingRefusal {
    #[error("SRTP required: the offer is plain RTP")]
    SrtpRequired,
    #[error("SDES keys are accepted over TLS only")]
    KeysNeedTls,
    #[error("plain RTP only: the offer is RTP/SAVP")]
    PlainOnly,
    #[error("no crypto attribute we support (suite, MKI, parameters)")]
    NoUsableCrypto,
}

impl KeyingRefusal {
    /// The reason label of the rejection counter.
    pub fn label(self) -> &'static str {
        match self {
            KeyingRefusal::SrtpRequired => "srtp_required",
            KeyingRefusal::KeysNeedTls => "srtp_keys_need_tls",
            KeyingRefusal::PlainOnly => "srtp_refused",
            KeyingRefusal::NoUsableCrypto => "srtp_crypto",
        }
    }
}

/// Whether a leg under `policy` can be keyed at all: SRTP required needs
/// keys that may cross its signalling.
pub fn policy_can_key(policy: MediaSecurity, keys_allowed: bool) -> Result<(), KeyingRefusal> {
    match (policy, keys_allowed) {
        (MediaSecurity::Srtp, false) => Err(KeyingRefusal::KeysNeedTls),
        _ => Ok(()),
    }
}

/// The SRTP both sides agreed for a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NegotiatedSrtp {
    /// The offer's tag of the line taken (the answer repeats it).
    pub tag: u32,
    pub suite: SrtpSuite,
    /// The key the peer sends with.
    pub remote: SrtpKey,
    /// The key we send with.
    pub local: SrtpKey,
    /// Replay window for what the peer sends.
    pub window: u16,
}

impl NegotiatedSrtp {
    /// What the media leg is keyed with.
    pub fn keys(&self) -> SrtpKeys {
        SrtpKeys {
            suite: self.suite,
            tx: self.local,
            rx: self.remote,
            replay_window: self.window,
        }
    }

    /// The CDR's name of the leg's protection.
    pub fn record(&self) -> String {
        format!("srtp:{}", self.suite.name())
    }
}

fn window_of(c: &Crypto) -> u16 {
    c.window.unwrap_or(64).clamp(64, MAX_WINDOW) as u16
}

impl LegKeying {
    /// A leg under `policy`, keys drawn from `fill` (a CSPRNG) unless the
    /// leg never keys.
    pub fn new(
        policy: MediaSecurity,
        keys_allowed: bool,
        fill: &mut dyn FnMut(&mut [u8]),
    ) -> LegKeying {
        // ALL is in index order (SrtpSuite::index).
        let own = (policy != MediaSecurity::Rtp && keys_allowed)
            .then(|| SrtpSuite::ALL.map(|s| SrtpKey::generate(s, &mut *fill)));
        LegKeying {
            policy,
            keys_allowed,
            own,
            shared: None,
            over_tls: false,
        }
    }

    /// A leg of plain RTP.
    pub fn plain() -> LegKeying {
        LegKeying {
            policy: MediaSecurity::Rtp,
            keys_allowed: false,
            own: None,
            shared: None,
            over_tls: false,
        }
    }

    /// Whether SRTP may run on this leg at all.
    pub fn srtp_usable(&self) -> bool {
        self.own.is_some()
    }

    /// Whether an offer can meet the policy ([`policy_can_key`]).
    pub fn can_offer(&self) -> Result<(), KeyingRefusal> {
        policy_can_key(self.policy, self.keys_allowed)
    }

    /// The key we declare for `suite`; `None` on a leg that never keys.
    pub fn local_key(&self, suite: SrtpSuite) -> Option<SrtpKey> {
        let own = self.own.as_ref()?;
        Some(match self.shared {
            Some((s, k)) if s == suite => k,
            _ => own[suite.index()],
        })
    }

    /// The transport protocol of our offers (RFC 3711 §12, RFC 4568 §7.1):
    /// RTP/SAVP when SRTP is required, else RTP/AVP (with crypto lines
    /// when SRTP is optional: best-effort SRTP).
    pub fn offer_proto(&self) -> &'static str {
        if self.policy == MediaSecurity::Srtp && self.srtp_usable() {
            "RTP/SAVP"
        } else {
            "RTP/AVP"
        }
    }

    /// The crypto lines of our offer, one per suite, each with its own
    /// key; a shared key's suite first (the answerer takes the first line
    /// it can honour), the others with our own keys so a peer without
    /// that suite can still key.
    pub fn offer_lines(&self) -> Vec<Crypto> {
        if !self.srtp_usable() {
            return Vec::new();
        }
        let first = self.shared.map(|(s, _)| s);
        first
            .into_iter()
            .chain(SrtpSuite::ALL.into_iter().filter(|s| Some(*s) != first))
            .zip(1..)
            .filter_map(|(s, tag)| Some(Crypto::with_key(tag, s, self.local_key(s)?)))
            .collect()
    }

    /// The answerer's choice for one offered audio stream (RFC 4568
    /// §7.1.2, RFC 3264 §6): `Ok(None)` plain RTP, `Ok(Some(_))` SRTP
    /// with the line taken, `Err` when the policy refuses the stream.
    pub fn answer(
        &self,
        proto: &str,
        crypto: &[String],
    ) -> Result<Option<NegotiatedSrtp>, KeyingRefusal> {
        let savp = proto.eq_ignore_ascii_case("RTP/SAVP");
        if savp && self.policy == MediaSecurity::Rtp {
            return Err(KeyingRefusal::PlainOnly);
        }
        if savp && !self.keys_allowed {
            return Err(KeyingRefusal::KeysNeedTls);
        }
        let wants_srtp = savp || self.policy == MediaSecurity::Srtp;
        if !self.srtp_usable() || crypto.is_empty() {
            return match (wants_srtp, self.keys_allowed) {
                (false, _) => Ok(None),
                (true, false) => Err(KeyingRefusal::KeysNeedTls),
                (true, true) if crypto.is_empty() && !savp => Err(KeyingRefusal::SrtpRequired),
                (true, true) => Err(KeyingRefusal::NoUsableCrypto),
            };
        }
        let (chosen, _) = choose(crypto.iter().map(String::as_str), &SrtpSuite::ALL);
        let Some(c) = chosen else {
            return if wants_srtp {
                Err(KeyingRefusal::NoUsableCrypto)
            } else {
                Ok(None)
            };
        };
        let Some(local) = self.local_key(c.suite) else {
            return Err(KeyingRefusal::NoUsableCrypto);
        };
        Ok(Some(NegotiatedSrtp {
            tag: c.tag,
            suite: c.suite,
            remote: c.key,
            local,
            window: window_of(&c),
        }))
    }

    /// Reads the answer to our offer: its crypto line must answer one of
    /// ours by tag and suite (§7.1.3, §7.4); an answer without one is
    /// plain RTP, acceptable only where we did not require SRTP.
    pub fn answered(
        our_proto: &str,
        ours: &[Crypto],
        crypto: &[String],
    ) -> Result<Option<NegotiatedSrtp>, KeyingRefusal> {
        let required = our_proto.eq_ignore_ascii_case("RTP/SAVP");
        let Some(line) = crypto.first() else {
            return if required {
                Err(KeyingRefusal::SrtpRequired)
            } else {
                Ok(None)
            };
        };
        let theirs = Crypto::parse(line).map_err(|_| KeyingRefusal::NoUsableCrypto)?;
        let mine = ours
            .iter()
            .find(|c| c.tag == theirs.tag && c.suite == theirs.suite)
            .ok_or(KeyingRefusal::NoUsableCrypto)?;
        Ok(Some(NegotiatedSrtp {
            tag: theirs.tag,
            suite: theirs.suite,
            remote: theirs.key,
            local: mine.key,
            window: window_of(&theirs),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 4568 §9.1's example key (30 bytes: key and salt).
    const KEY: &str = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";

    #[test]
    fn the_rfc_example_parses_and_round_trips_without_its_mki() {
        let c = Crypto::parse(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|2^20")).unwrap();
        assert_eq!(c.tag, 1);
        assert_eq!(c.suite, SrtpSuite::AesCm128HmacSha1_80);
        assert_eq!(c.master_key().len(), 16);
        assert_eq!(c.master_salt().len(), 14);
        assert_eq!(c.lifetime, Some(1 << 20));
        assert_eq!(Crypto::parse(&c.encode()).unwrap(), c);
        assert!(!format!("{c:?}").contains(KEY), "keys stay out of logs");
        // The same line with the RFC's MKI is refused by name.
        assert_eq!(
            Crypto::parse(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|2^20|1:4")),
            Err(SdesError::Mki)
        );
        assert_eq!(
            Crypto::parse(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|1:4")),
            Err(SdesError::Mki)
        );
    }

    #[test]
    fn gcm_keys_are_28_bytes_and_new_keys_use_the_callers_randomness() {
        let mut n = 0u8;
        let mut rng = |b: &mut [u8]| {
            for x in b {
                n = n.wrapping_add(1);
                *x = n;
            }
        };
        let c = Crypto::new_key(7, SrtpSuite::AeadAes128Gcm, &mut rng);
        assert_eq!(c.key.key_salt().len(), 28);
        let back = Crypto::parse(&c.encode()).unwrap();
        assert_eq!(back, c);
        assert_eq!(back.master_salt(), &(17..=28).collect::<Vec<u8>>()[..]);
        // A 30-byte key is not a GCM key.
        assert_eq!(
            Crypto::parse(&format!("7 AEAD_AES_128_GCM inline:{KEY}")),
            Err(SdesError::KeyLength(28))
        );
    }

    #[test]
    fn what_we_cannot_honour_is_refused_by_name() {
        let line = |rest: &str| Crypto::parse(&format!("1 AES_CM_128_HMAC_SHA1_32 {rest}"));
        assert_eq!(
            line(&format!("inline:{KEY};inline:{KEY}")),
            Err(SdesError::SeveralKeys)
        );
        assert!(matches!(
            line(&format!("uri:{KEY}")),
            Err(SdesError::KeyMethod(_))
        ));
        for p in [
            "UNENCRYPTED_SRTP",
            "UNENCRYPTED_SRTCP",
            "UNAUTHENTICATED_SRTP",
            "KDR=1",
            "FEC_ORDER=FEC_SRTP",
            "WSH=32",
        ] {
            assert!(
                matches!(
                    line(&format!("inline:{KEY} {p}")),
                    Err(SdesError::SessionParam(_))
                ),
                "{p}"
            );
        }
        let ok = line(&format!("inline:{KEY} KDR=0 WSH=128")).unwrap();
        assert_eq!(ok.window, Some(128));
        assert!(matches!(
            Crypto::parse(&format!("1 F8_128_HMAC_SHA1_80 inline:{KEY}")),
            Err(SdesError::UnknownSuite(_))
        ));
        for bad in [
            "",
            "1",
            "x AES_CM_128_HMAC_SHA1_80 inline:abc",
            "1234567890 AES_CM_128_HMAC_SHA1_80 inline:abc",
            "1 AES_CM_128_HMAC_SHA1_80",
            "1 AES_CM_128_HMAC_SHA1_80 inline",
            "1 AES_CM_128_HMAC_SHA1_80 inline:!!!",
            "1 AES_CM_128_HMAC_SHA1_80 inline:WVNf",
        ] {
            assert!(Crypto::parse(bad).is_err(), "{bad:?}");
        }
        for bad_life in ["|2^64", "|0", "|2^x", "|2^20|2^20"] {
            assert!(
                line(&format!("inline:{KEY}{bad_life}")).is_err(),
                "{bad_life}"
            );
        }
        assert!(Crypto::parse(&"1 ".repeat(600)).is_err());
    }

    #[test]
    fn the_answer_takes_the_first_line_we_can_honour() {
        let offer = [
            format!("1 AES_256_CM_HMAC_SHA1_80 inline:{KEY}"),
            format!("2 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|2^20|1:4"),
            format!("3 AES_CM_128_HMAC_SHA1_32 inline:{KEY}"),
            format!("4 AES_CM_128_HMAC_SHA1_80 inline:{KEY}"),
        ];
        let (c, refused) = choose(offer.iter().map(String::as_str), &SrtpSuite::ALL);
        assert_eq!(c.unwrap().tag, 3);
        assert_eq!(refused.len(), 2);
        assert_eq!(refused[1], SdesError::Mki);
        // Only the 80-bit tag allowed: the fourth line.
        let (c, _) = choose(
            offer.iter().map(String::as_str),
            &[SrtpSuite::AesCm128HmacSha1_80],
        );
        assert_eq!(c.unwrap().tag, 4);
        let (c, refused) = choose(offer[..2].iter().map(String::as_str), &SrtpSuite::ALL);
        assert!(c.is_none() && refused.len() == 2);
    }
}

//! HTTP Digest authentication for SIP (RFC 3261 §22.4, RFC 8760: MD5 and
//! SHA-256 with qop=auth). Nonces are stateless: a timestamp and the
//! client's address signed with a server secret, so any node sharing the
//! secret can check them and a nonce is worth nothing from elsewhere.
//! [`NonceCounts`] remembers each nonce's highest `nc` (RFC 7616 §3.4), so
//! a captured request replayed within the nonce's life is refused.

use super::grammar::{self, parse_quoted, trim_lws};
use hmac::{Hmac, Mac};
use md5::Md5;
use sha2::{Digest as _, Sha256};
use std::fmt::Write as _;
use std::net::IpAddr;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    Md5,
    Sha256,
}

impl Algorithm {
    pub fn parse(s: &str) -> Option<Algorithm> {
        if s.eq_ignore_ascii_case("MD5") {
            Some(Algorithm::Md5)
        } else if s.eq_ignore_ascii_case("SHA-256") {
            Some(Algorithm::Sha256)
        } else {
            None
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        }
    }

    pub fn hash(self, data: &str) -> String {
        match self {
            Algorithm::Md5 => hex::encode(Md5::digest(data.as_bytes())),
            Algorithm::Sha256 => hex::encode(Sha256::digest(data.as_bytes())),
        }
    }
}

/// H(username:realm:password), what the store keeps instead of passwords.
pub fn ha1(alg: Algorithm, username: &str, realm: &str, password: &str) -> String {
    alg.hash(&format!("{username}:{realm}:{password}"))
}

/// Parsed `Authorization` / `Proxy-Authorization` digest credentials.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    pub uri: String,
    pub response: String,
    pub algorithm: Option<String>,
    pub cnonce: Option<String>,
    pub nc: Option<String>,
    pub qop: Option<String>,
    pub opaque: Option<String>,
}

impl Credentials {
    pub fn parse(value: &str) -> Result<Credentials, &'static str> {
        let v = trim_lws(value);
        let scheme_end = v.find([' ', '\t']).ok_or("Authorization: missing scheme")?;
        if !v[..scheme_end].eq_ignore_ascii_case("Digest") {
            return Err("Authorization: scheme is not Digest");
        }
        let mut c = Credentials::default();
        let mut rest = trim_lws(&v[scheme_end..]);
        while !rest.is_empty() {
            let eq = rest
                .find('=')
                .ok_or("Authorization: parameter without '='")?;
            let name = trim_lws(&rest[..eq]).to_ascii_lowercase();
            if !grammar::is_token(&name) {
                return Err("Authorization: bad parameter name");
            }
            let after = trim_lws(&rest[eq + 1..]);
            let (val, tail) = if after.starts_with('"') {
                parse_quoted(after).ok_or("Authorization: unterminated quoted value")?
            } else {
                let end = after.find(',').unwrap_or(after.len());
                (trim_lws(&after[..end]).to_string(), &after[end..])
            };
            let tail = trim_lws(tail);
            rest = match tail.strip_prefix(',') {
                Some(t) => trim_lws(t),
                None if tail.is_empty() => tail,
                None => return Err("Authorization: expected ','"),
            };
            match name.as_str() {
                "username" => c.username = val,
                "realm" => c.realm = val,
                "nonce" => c.nonce = val,
                "uri" => c.uri = val,
                "response" => c.response = val.to_ascii_lowercase(),
                "algorithm" => c.algorithm = Some(val),
                "cnonce" => c.cnonce = Some(val),
                "nc" => c.nc = Some(val),
                "qop" => c.qop = Some(val),
                "opaque" => c.opaque = Some(val),
                _ => {}
            }
        }
        if c.username.is_empty() || c.nonce.is_empty() || c.uri.is_empty() || c.response.is_empty()
        {
            return Err("Authorization: missing username, nonce, uri or response");
        }
        Ok(c)
    }

    pub fn algorithm(&self) -> Option<Algorithm> {
        match &self.algorithm {
            None => Some(Algorithm::Md5),
            Some(a) => Algorithm::parse(a),
        }
    }

    /// The expected `response` given HA1 (RFC 2617 §3.2.2.1, RFC 7616 §3.4.1).
    pub fn expected_response(&self, alg: Algorithm, ha1: &str, method: &str) -> Option<String> {
        let ha2 = alg.hash(&format!("{method}:{}", self.uri));
        match self.qop.as_deref() {
            Some(q) if q.eq_ignore_ascii_case("auth") => {
                let (nc, cnonce) = (self.nc.as_deref()?, self.cnonce.as_deref()?);
                Some(alg.hash(&format!("{ha1}:{}:{nc}:{cnonce}:auth:{ha2}", self.nonce)))
            }
            Some(_) => None,
            None => Some(alg.hash(&format!("{ha1}:{}:{ha2}", self.nonce))),
        }
    }

    /// Builds credentials answering `challenge` (UAC side: outbound trunks).
    pub fn answer(
        challenge: &Challenge,
        username: &str,
        password: &str,
        method: &str,
        uri: &str,
        cnonce: &str,
    ) -> Credentials {
        let h1 = ha1(challenge.algorithm, username, &challenge.realm, password);
        let mut c = Credentials {
            username: username.into(),
            realm: challenge.realm.clone(),
            nonce: challenge.nonce.clone(),
            uri: uri.into(),
            algorithm: Some(challenge.algorithm.as_str().into()),
            opaque: challenge.opaque.clone(),
            ..Default::default()
        };
        if challenge.qop_auth {
            c.qop = Some("auth".into());
            c.nc = Some("00000001".into());
            c.cnonce = Some(cnonce.into());
        }
        c.response = c
            .expected_response(challenge.algorithm, &h1, method)
            .unwrap_or_default();
        c
    }

    pub fn encode(&self) -> String {
        let mut s = format!(
            "Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{}\", response=\"{}\"",
            self.username, self.realm, self.nonce, self.uri, self.response
        );
        if let Some(a) = &self.algorithm {
            let _ = write!(s, ", algorithm={a}");
        }
        if let (Some(q), Some(nc), Some(cn)) = (&self.qop, &self.nc, &self.cnonce) {
            let _ = write!(s, ", qop={q}, nc={nc}, cnonce=\"{cn}\"");
        }
        if let Some(o) = &self.opaque {
            let _ = write!(s, ", opaque=\"{o}\"");
        }
        s
    }
}

/// A `WWW-Authenticate` / `Proxy-Authenticate` digest challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub algorithm: Algorithm,
    pub qop_auth: bool,
    pub stale: bool,
    pub opaque: Option<String>,
}

impl Challenge {
    pub fn encode(&self) -> String {
        let mut s = format!(
            "Digest realm=\"{}\", nonce=\"{}\", algorithm={}",
            self.realm,
            self.nonce,
            self.algorithm.as_str()
        );
        if self.qop_auth {
            s.push_str(", qop=\"auth\"");
        }
        if self.stale {
            s.push_str(", stale=true");
        }
        if let Some(o) = &self.opaque {
            let _ = write!(s, ", opaque=\"{o}\"");
        }
        s
    }

    /// Parses a challenge received from a carrier.
    pub fn parse(value: &str) -> Result<Challenge, &'static str> {
        // Same name=value grammar as credentials; reuse that parser by
        // filling the mandatory credential fields.
        let v = trim_lws(value);
        let scheme_end = v.find([' ', '\t']).ok_or("challenge: missing scheme")?;
        if !v[..scheme_end].eq_ignore_ascii_case("Digest") {
            return Err("challenge: scheme is not Digest");
        }
        let mut realm = None;
        let mut nonce = None;
        let mut algorithm = Algorithm::Md5;
        let mut qop_auth = false;
        let mut stale = false;
        let mut opaque = None;
        for part in grammar::split_commas(&v[scheme_end..]) {
            let Some((k, val)) = part.split_once('=') else {
                continue;
            };
            let k = trim_lws(k).to_ascii_lowercase();
            let val = trim_lws(val);
            let val = parse_quoted(val)
                .map(|(s, _)| s)
                .unwrap_or_else(|| val.to_string());
            match k.as_str() {
                "realm" => realm = Some(val),
                "nonce" => nonce = Some(val),
                "algorithm" => {
                    algorithm = Algorithm::parse(&val).ok_or("challenge: unsupported algorithm")?
                }
                "qop" => {
                    qop_auth = val
                        .split(',')
                        .any(|q| trim_lws(q).eq_ignore_ascii_case("auth"))
                }
                "stale" => stale = val.eq_ignore_ascii_case("true"),
                "opaque" => opaque = Some(val),
                _ => {}
            }
        }
        Ok(Challenge {
            realm: realm.ok_or("challenge: missing realm")?,
            nonce: nonce.ok_or("challenge: missing nonce")?,
            algorithm,
            qop_auth,
            stale,
            opaque,
        })
    }
}

/// Issues and checks stateless nonces: `<unix seconds hex>.<salt
/// hex>.<hmac hex>`, the HMAC over the time, the salt (unique per
/// challenge, so two challenges in one second differ) and the client's IP
/// address.
#[derive(Clone)]
pub struct NonceSigner {
    key: Vec<u8>,
    lifetime_secs: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NonceCheck {
    Valid,
    /// Well-signed but too old: challenge again with stale=true.
    Stale,
    Invalid,
}

impl NonceSigner {
    pub fn new(key: &[u8], lifetime_secs: u64) -> NonceSigner {
        NonceSigner {
            key: key.to_vec(),
            lifetime_secs,
        }
    }

    fn mac(&self, ts: &str, salt: &str, client: IpAddr) -> String {
        let mut m = Hmac::<Sha256>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        m.update(ts.as_bytes());
        m.update(b"|");
        m.update(salt.as_bytes());
        m.update(b"|");
        m.update(
            super::transport::canonical_ip(client)
                .to_string()
                .as_bytes(),
        );
        hex::encode(&m.finalize().into_bytes()[..16])
    }

    /// A nonce for `client` issued at `unix_secs`; `salt` makes it unique.
    pub fn issue(&self, unix_secs: u64, salt: u64, client: IpAddr) -> String {
        let ts = format!("{unix_secs:x}");
        let salt = format!("{salt:x}");
        let mac = self.mac(&ts, &salt, client);
        format!("{ts}.{salt}.{mac}")
    }

    /// Checks a nonce presented by `client`: one issued to another address
    /// is as invalid as a forged one.
    pub fn check(&self, nonce: &str, unix_secs: u64, client: IpAddr) -> NonceCheck {
        let mut parts = nonce.splitn(3, '.');
        let (Some(ts), Some(salt), Some(mac)) = (parts.next(), parts.next(), parts.next()) else {
            return NonceCheck::Invalid;
        };
        if ts.len() > 16
            || salt.len() > 16
            || !constant_time_eq(self.mac(ts, salt, client).as_bytes(), mac.as_bytes())
        {
            return NonceCheck::Invalid;
        }
        let Ok(issued) = u64::from_str_radix(ts, 16) else {
            return NonceCheck::Invalid;
        };
        if issued > unix_secs + 5 {
            NonceCheck::Invalid
        } else if unix_secs - issued.min(unix_secs) > self.lifetime_secs {
            NonceCheck::Stale
        } else {
            NonceCheck::Valid
        }
    }
}

/// The issue time of a well-formed nonce (for [`NonceCounts`]).
pub fn nonce_issued(nonce: &str) -> Option<u64> {
    let (ts, _) = nonce.split_once('.')?;
    (ts.len() <= 16)
        .then(|| u64::from_str_radix(ts, 16).ok())
        .flatten()
}

/// Whether a nonce use is new.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NonceUse {
    Fresh,
    /// The nonce was used with this `nc` (or a higher one) already, or
    /// without `qop` at all (RFC 2069 style: one use per nonce).
    Replayed,
    /// The table forgot nonces this old: challenge again (stale=true).
    Forgotten,
}

/// The highest `nc` seen per nonce, for nonces still alive (sans-IO: fed
/// the current Unix time). Bounded: when full, the oldest nonces are
/// forgotten and any nonce issued before them counts as stale, so a
/// replay never passes for want of memory.
#[derive(Debug)]
pub struct NonceCounts {
    lifetime_secs: u64,
    capacity: usize,
    seen: std::collections::HashMap<String, (u64, u32)>,
    /// Nonces issued at or before this were forgotten.
    forgotten_through: Option<u64>,
}

impl NonceCounts {
    pub fn new(lifetime_secs: u64, capacity: usize) -> NonceCounts {
        NonceCounts {
            lifetime_secs,
            capacity: capacity.max(1),
            seen: std::collections::HashMap::new(),
            forgotten_through: None,
        }
    }

    /// Records a use of a valid nonce with `nc` (`None`: no qop) at
    /// `unix_secs`.
    pub fn record(&mut self, nonce: &str, nc: Option<&str>, unix_secs: u64) -> NonceUse {
        let Some(issued) = nonce_issued(nonce) else {
            return NonceUse::Replayed;
        };
        // No qop: the nonce itself is single-use (recorded as the highest
        // count, so no later use passes). With qop, nc counts up.
        let count = match nc {
            None => u32::MAX,
            Some(n) => match u32::from_str_radix(n, 16) {
                Ok(c) if n.len() == 8 => c,
                _ => return NonceUse::Replayed,
            },
        };
        if let Some((_, last)) = self.seen.get_mut(nonce) {
            if nc.is_none() || count <= *last {
                return NonceUse::Replayed;
            }
            *last = count;
            return NonceUse::Fresh;
        }
        if self.forgotten_through.is_some_and(|t| issued <= t) {
            return NonceUse::Forgotten;
        }
        if self.seen.len() >= self.capacity {
            let alive_from = unix_secs.saturating_sub(self.lifetime_secs);
            self.seen.retain(|_, (at, _)| *at >= alive_from);
            if self.seen.len() >= self.capacity {
                // Forget the older half by issue time.
                let mut times: Vec<u64> = self.seen.values().map(|(at, _)| *at).collect();
                times.sort_unstable();
                let cut = times[times.len() / 2];
                self.seen.retain(|_, (at, _)| *at > cut);
                self.forgotten_through = Some(self.forgotten_through.map_or(cut, |t| t.max(cut)));
                if issued <= cut {
                    return NonceUse::Forgotten;
                }
            }
        }
        self.seen.insert(nonce.to_string(), (issued, count));
        NonceUse::Fresh
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc2617_md5_example_shape() {
        // RFC 2617 §3.5 example (HTTP, but the arithmetic is the same).
        let c = Credentials::parse(
            "Digest username=\"Mufasa\", realm=\"testrealm@host.com\", nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", uri=\"/dir/index.html\", qop=auth, nc=00000001, cnonce=\"0a4f113b\", response=\"6629fae49393a05397450978507c4ef1\", opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"",
        )
        .unwrap();
        let h1 = ha1(
            Algorithm::Md5,
            "Mufasa",
            "testrealm@host.com",
            "Circle Of Life",
        );
        assert_eq!(
            c.expected_response(Algorithm::Md5, &h1, "GET").unwrap(),
            c.response
        );
    }

    #[test]
    fn answer_round_trips_sha256() {
        let ch = Challenge {
            realm: "voice".into(),
            nonce: "abc".into(),
            algorithm: Algorithm::Sha256,
            qop_auth: true,
            stale: false,
            opaque: None,
        };
        let parsed = Challenge::parse(&ch.encode()).unwrap();
        assert_eq!(parsed, ch);
        let creds = Credentials::answer(&ch, "alice", "pw", "REGISTER", "sip:voice", "cn");
        let back = Credentials::parse(&creds.encode()).unwrap();
        let h1 = ha1(Algorithm::Sha256, "alice", "voice", "pw");
        assert_eq!(
            back.expected_response(Algorithm::Sha256, &h1, "REGISTER")
                .unwrap(),
            back.response
        );
        assert_eq!(back.algorithm(), Some(Algorithm::Sha256));
    }

    #[test]
    fn nonces_expire_and_reject_forgery() {
        let me: IpAddr = "192.0.2.10".parse().unwrap();
        let s = NonceSigner::new(b"k", 300);
        let n = s.issue(1000, 1, me);
        assert_eq!(s.check(&n, 1100, me), NonceCheck::Valid);
        assert_eq!(s.check(&n, 1400, me), NonceCheck::Stale);
        assert_eq!(s.check(&n.replace('.', "x"), 1100, me), NonceCheck::Invalid);
        let forged = format!("{:x}.1.{}", 1000, "0".repeat(32));
        assert_ne!(s.issue(1000, 2, me), n, "unique per salt");
        assert_eq!(s.check(&forged, 1100, me), NonceCheck::Invalid);
        assert_eq!(
            NonceSigner::new(b"other", 300).check(&n, 1100, me),
            NonceCheck::Invalid
        );
        // Bound to the address it was issued to (a mapped form is the same
        // host); from anywhere else it is worthless.
        let mapped: IpAddr = "::ffff:192.0.2.10".parse().unwrap();
        assert_eq!(s.check(&n, 1100, mapped), NonceCheck::Valid);
        assert_eq!(
            s.check(&n, 1100, "192.0.2.11".parse().unwrap()),
            NonceCheck::Invalid
        );
        // From the future (beyond 5 s of skew): invalid.
        assert_eq!(
            s.check(&s.issue(2000, 2, me), 1100, me),
            NonceCheck::Invalid
        );
    }

    #[test]
    fn nonce_counts_refuse_replays() {
        let s = NonceSigner::new(b"k", 300);
        let me: IpAddr = "192.0.2.10".parse().unwrap();
        let n = s.issue(1000, 1, me);
        let mut c = NonceCounts::new(300, 1024);
        assert_eq!(c.record(&n, Some("00000001"), 1001), NonceUse::Fresh);
        assert_eq!(c.record(&n, Some("00000001"), 1002), NonceUse::Replayed);
        assert_eq!(c.record(&n, Some("00000003"), 1003), NonceUse::Fresh);
        assert_eq!(c.record(&n, Some("00000002"), 1004), NonceUse::Replayed);
        for bad in ["1", "zzzzzzzz", "000000001"] {
            assert_eq!(c.record(&n, Some(bad), 1005), NonceUse::Replayed, "{bad}");
        }
        // Without qop a nonce is good once.
        let m = s.issue(1010, 3, me);
        assert_eq!(c.record(&m, None, 1011), NonceUse::Fresh);
        assert_eq!(c.record(&m, None, 1012), NonceUse::Replayed);
        assert_eq!(c.record(&m, Some("00000005"), 1012), NonceUse::Replayed);
    }

    #[test]
    fn nonce_counts_stay_bounded_and_forget_safely() {
        let s = NonceSigner::new(b"k", 300);
        let me: IpAddr = "192.0.2.10".parse().unwrap();
        let mut c = NonceCounts::new(300, 100);
        let first = s.issue(1000, 1, me);
        assert_eq!(c.record(&first, Some("00000001"), 1000), NonceUse::Fresh);
        // A flood of fresh nonces (all alive) overflows the table.
        for t in 1001..1300 {
            let n = s.issue(t, t, me);
            c.record(&n, Some("00000001"), t);
            assert!(c.len() <= 100);
        }
        // The first nonce was forgotten: a replay of it is not let through.
        assert_eq!(
            c.record(&first, Some("00000001"), 1300),
            NonceUse::Forgotten
        );
        // Nonces past their life are dropped first.
        let late = s.issue(1700, 9, me);
        assert_eq!(c.record(&late, Some("00000001"), 1700), NonceUse::Fresh);
    }

    #[test]
    fn malformed_credentials() {
        assert!(Credentials::parse("Basic abc").is_err());
        assert!(Credentials::parse("Digest username=\"a\"").is_err());
        assert!(Credentials::parse("Digest username=\"a").is_err());
        assert!(Credentials::parse("Digest").is_err());
    }
}

//! HTTP Digest authentication for SIP (RFC 3261 §22.4, RFC 8760: MD5 and
//! SHA-256 with qop=auth). Nonces are stateless: a timestamp signed with a
//! server secret, so any node sharing the secret can check them.

use super::grammar::{self, parse_quoted, trim_lws};
use hmac::{Hmac, Mac};
use md5::Md5;
use sha2::{Digest as _, Sha256};
use std::fmt::Write as _;

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

/// Issues and checks stateless nonces: `<unix seconds hex>.<hmac hex>`.
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

    fn mac(&self, ts: &str) -> String {
        let mut m = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC accepts any key length");
        m.update(ts.as_bytes());
        hex::encode(&m.finalize().into_bytes()[..16])
    }

    pub fn issue(&self, unix_secs: u64) -> String {
        let ts = format!("{unix_secs:x}");
        let mac = self.mac(&ts);
        format!("{ts}.{mac}")
    }

    pub fn check(&self, nonce: &str, unix_secs: u64) -> NonceCheck {
        let Some((ts, mac)) = nonce.split_once('.') else {
            return NonceCheck::Invalid;
        };
        if ts.len() > 16 || !constant_time_eq(self.mac(ts).as_bytes(), mac.as_bytes()) {
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
        let s = NonceSigner::new(b"k", 300);
        let n = s.issue(1000);
        assert_eq!(s.check(&n, 1100), NonceCheck::Valid);
        assert_eq!(s.check(&n, 1400), NonceCheck::Stale);
        assert_eq!(s.check(&n.replace('.', "x"), 1100), NonceCheck::Invalid);
        let forged = format!("{:x}.{}", 1000, "0".repeat(32));
        assert_eq!(s.check(&forged, 1100), NonceCheck::Invalid);
        assert_eq!(
            NonceSigner::new(b"other", 300).check(&n, 1100),
            NonceCheck::Invalid
        );
    }

    #[test]
    fn malformed_credentials() {
        assert!(Credentials::parse("Basic abc").is_err());
        assert!(Credentials::parse("Digest username=\"a\"").is_err());
        assert!(Credentials::parse("Digest username=\"a").is_err());
        assert!(Credentials::parse("Digest").is_err());
    }
}

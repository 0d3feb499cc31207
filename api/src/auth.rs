//! Bearer tokens for the REST API (JWT, RFC 7519): who may call, for which
//! account, and whether they administer the gateway.
//!
//! Every request carries `Authorization: Bearer <jwt>`. The signature is
//! checked with the configured algorithm (an HS* shared secret, or an RS*,
//! PS*, ES* or EdDSA public key), and `exp`, `nbf`, `aud` and `iss` are
//! checked (RFC 7519 §4.1). The `account` claim scopes every request to one
//! account; `admin: true` also allows managing accounts and trunks.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::str::FromStr;

/// The claims we issue and accept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Who the token was minted for (free text, logged).
    #[serde(default)]
    pub sub: String,
    /// The account every request is scoped to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// Manages accounts and trunks.
    #[serde(default)]
    pub admin: bool,
    pub aud: String,
    pub iss: String,
    pub exp: u64,
    #[serde(default)]
    pub nbf: u64,
    #[serde(default)]
    pub iat: u64,
}

/// Whom a verified token speaks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub subject: String,
    pub account: Option<String>,
    pub admin: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token (Authorization: Bearer <jwt>)")]
    Missing,
    #[error("token expired")]
    Expired,
    #[error("token not valid yet (nbf)")]
    Immature,
    #[error("token audience is not {0:?}")]
    Audience(String),
    #[error("token issuer is not {0:?}")]
    Issuer(String),
    #[error("token signature or algorithm rejected")]
    Signature,
    #[error("malformed token: {0}")]
    Malformed(String),
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "unknown JWT algorithm {0:?} (HS256, HS384, HS512, RS256…, PS256…, ES256, ES384, EdDSA)"
    )]
    Algorithm(String),
    #[error("algorithm {0:?} needs api.jwt_secret")]
    NoSecret(String),
    #[error("algorithm {0:?} needs a PEM public key (api.jwt_public_key_file)")]
    NoPublicKey(String),
    #[error("cannot read a key from PEM: {0}")]
    Pem(String),
    #[error("cannot sign: {0}")]
    Sign(String),
}

/// How tokens are verified.
#[derive(Clone)]
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
    audience: String,
    issuer: String,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("algorithms", &self.validation.algorithms)
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .finish()
    }
}

pub fn parse_algorithm(name: &str) -> Result<Algorithm, KeyError> {
    Algorithm::from_str(name).map_err(|_| KeyError::Algorithm(name.to_string()))
}

fn is_hmac(alg: Algorithm) -> bool {
    matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

impl Verifier {
    /// `secret` serves HS*; `public_pem` the public-key algorithms.
    pub fn new(
        algorithm: &str,
        secret: Option<&str>,
        public_pem: Option<&[u8]>,
        audience: &str,
        issuer: &str,
    ) -> Result<Verifier, KeyError> {
        let alg = parse_algorithm(algorithm)?;
        let key: DecodingKey = if is_hmac(alg) {
            match secret {
                Some(s) if !s.is_empty() => DecodingKey::from_secret(s.as_bytes())
                    .map_err(|e| KeyError::Pem(e.to_string()))?,
                _ => return Err(KeyError::NoSecret(algorithm.into())),
            }
        } else {
            let pem = public_pem.ok_or_else(|| KeyError::NoPublicKey(algorithm.into()))?;
            let k = match alg {
                Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512 => DecodingKey::from_rsa_pem(pem),
                Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(pem),
                _ => DecodingKey::from_ed_pem(pem),
            };
            k.map_err(|e| KeyError::Pem(e.to_string()))?
        };
        // Only the configured algorithm: a token cannot pick a weaker one.
        let mut validation = Validation::new(alg);
        validation.set_audience(&[audience]);
        validation.set_issuer(&[issuer]);
        validation.validate_nbf = true;
        validation.leeway = 30;
        validation.set_required_spec_claims(&["exp", "aud", "iss"]);
        Ok(Verifier {
            key,
            validation,
            audience: audience.into(),
            issuer: issuer.into(),
        })
    }

    /// Checks `token` (without the `Bearer ` prefix).
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        use jsonwebtoken::errors::ErrorKind;
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(
            |e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => AuthError::Immature,
                ErrorKind::InvalidAudience => AuthError::Audience(self.audience.clone()),
                ErrorKind::InvalidIssuer => AuthError::Issuer(self.issuer.clone()),
                ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm => AuthError::Signature,
                ErrorKind::MissingRequiredClaim(c) => {
                    AuthError::Malformed(format!("missing claim {c:?}"))
                }
                other => AuthError::Malformed(format!("{other:?}")),
            },
        )?;
        let c = data.claims;
        Ok(Principal {
            subject: c.sub,
            account: c.account.filter(|a| !a.is_empty()),
            admin: c.admin,
        })
    }
}

/// Signs `claims` (for `sip-daemon token` and tests). `key` is the HS*
/// secret, or a PEM private key for the public-key algorithms.
pub fn mint(algorithm: &str, key: &[u8], claims: &Claims) -> Result<String, KeyError> {
    let alg = parse_algorithm(algorithm)?;
    let key: EncodingKey = if is_hmac(alg) {
        EncodingKey::from_secret(key).map_err(|e| KeyError::Pem(e.to_string()))?
    } else {
        match alg {
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => EncodingKey::from_rsa_pem(key),
            Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(key),
            _ => EncodingKey::from_ed_pem(key),
        }
        .map_err(|e| KeyError::Pem(e.to_string()))?
    };
    jsonwebtoken::encode(&Header::new(alg), claims, &key).map_err(|e| KeyError::Sign(e.to_string()))
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp_in: i64, nbf_in: i64) -> Claims {
        let now = unix_now() as i64;
        Claims {
            sub: "test".into(),
            account: Some("acct".into()),
            admin: false,
            aud: "voice-gateway".into(),
            iss: "voice-gateway".into(),
            exp: (now + exp_in) as u64,
            nbf: (now + nbf_in) as u64,
            iat: now as u64,
        }
    }

    fn verifier() -> Verifier {
        Verifier::new(
            "HS256",
            Some("s3cret"),
            None,
            "voice-gateway",
            "voice-gateway",
        )
        .unwrap()
    }

    #[test]
    fn accepts_a_good_token_and_names_each_failure() {
        let v = verifier();
        let ok = mint("HS256", b"s3cret", &claims(3600, 0)).unwrap();
        let p = v.verify(&ok).unwrap();
        assert_eq!(p.account.as_deref(), Some("acct"));
        assert!(!p.admin);

        let expired = mint("HS256", b"s3cret", &claims(-3600, -7200)).unwrap();
        assert!(matches!(v.verify(&expired), Err(AuthError::Expired)));
        let early = mint("HS256", b"s3cret", &claims(7200, 3600)).unwrap();
        assert!(matches!(v.verify(&early), Err(AuthError::Immature)));
        let forged = mint("HS256", b"other", &claims(3600, 0)).unwrap();
        assert!(matches!(v.verify(&forged), Err(AuthError::Signature)));
        let mut c = claims(3600, 0);
        c.aud = "someone-else".into();
        let wrong_aud = mint("HS256", b"s3cret", &c).unwrap();
        assert!(matches!(v.verify(&wrong_aud), Err(AuthError::Audience(_))));
        let mut c = claims(3600, 0);
        c.iss = "mallory".into();
        let wrong_iss = mint("HS256", b"s3cret", &c).unwrap();
        assert!(matches!(v.verify(&wrong_iss), Err(AuthError::Issuer(_))));
        // Same secret, another HMAC: the configured algorithm only.
        let other_alg = mint("HS512", b"s3cret", &claims(3600, 0)).unwrap();
        assert!(matches!(v.verify(&other_alg), Err(AuthError::Signature)));
        for junk in ["", "a.b", "a.b.c", "🙂.🙂.🙂"] {
            assert!(v.verify(junk).is_err(), "{junk:?}");
        }
    }

    #[test]
    fn configuration_errors_are_named() {
        assert!(matches!(
            Verifier::new("HS999", Some("x"), None, "a", "i"),
            Err(KeyError::Algorithm(_))
        ));
        assert!(matches!(
            Verifier::new("HS256", None, None, "a", "i"),
            Err(KeyError::NoSecret(_))
        ));
        assert!(matches!(
            Verifier::new("RS256", None, None, "a", "i"),
            Err(KeyError::NoPublicKey(_))
        ));
        assert!(matches!(
            Verifier::new("ES256", None, Some(b"not pem"), "a", "i"),
            Err(KeyError::Pem(_))
        ));
    }

    /// An ES256 key pair from the openssl CLI (apt package openssl), as an
    /// operator would make one: tokens signed with the private key verify
    /// with the public key, and an HS256 token with the PEM as a "secret"
    /// is refused (no algorithm confusion).
    #[test]
    fn es256_public_key_tokens_verify() {
        let dir = std::env::temp_dir().join(format!("gw-es256-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let run = |args: &[&str]| {
            let ok = std::process::Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .status()
                .expect("openssl (apt package openssl)")
                .success();
            assert!(ok, "openssl {args:?}");
        };
        run(&[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "ec.pem",
        ]);
        run(&[
            "pkcs8",
            "-topk8",
            "-nocrypt",
            "-in",
            "ec.pem",
            "-out",
            "private.pem",
        ]);
        run(&["ec", "-in", "ec.pem", "-pubout", "-out", "public.pem"]);
        let private = std::fs::read(dir.join("private.pem")).unwrap();
        let public = std::fs::read(dir.join("public.pem")).unwrap();
        let v = Verifier::new(
            "ES256",
            None,
            Some(&public),
            "voice-gateway",
            "voice-gateway",
        )
        .unwrap();
        let token = mint("ES256", &private, &claims(3600, 0)).unwrap();
        assert_eq!(v.verify(&token).unwrap().account.as_deref(), Some("acct"));
        let confused = mint("HS256", &public, &claims(3600, 0)).unwrap();
        assert!(matches!(v.verify(&confused), Err(AuthError::Signature)));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

//! SIP over TLS at the socket edge (RFC 3261 §26.3.1, RFC 5630): the
//! listener's certificate, reloaded when its files change or on SIGHUP
//! without touching open connections, and the client side for trunks and
//! `sips:` targets, verified against the system roots or a CA file, with
//! SNI and an optional client certificate (mutual TLS). TLS is only the
//! byte pipe: framing, limits and the connection table are the stream
//! transport's ([`crate::transport`]).

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {why}")]
    File { path: String, why: String },
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn file_err(path: &Path, why: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.display().to_string(),
        why: why.to_string(),
    }
}

/// Every certificate in a PEM file (a chain: leaf first).
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(path, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(path, e))?;
    if certs.is_empty() {
        return Err(file_err(path, "no certificate in the file"));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| file_err(path, e))
}

/// A chain and its key as rustls signs with them; refuses a key that does
/// not match the leaf.
pub fn certified_key(cert_file: &Path, key_file: &Path) -> Result<CertifiedKey, TlsError> {
    let certs = read_certs(cert_file)?;
    let key = read_key(key_file)?;
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| file_err(key_file, e))?;
    let ck = CertifiedKey::new(certs, signing);
    ck.keys_match().map_err(|e| file_err(key_file, e))?;
    Ok(ck)
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The listener's certificate: every new handshake takes the current one,
/// so a reload reaches new connections and leaves open ones alone.
#[derive(Debug)]
pub struct ServerCert {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: RwLock<(Arc<CertifiedKey>, Option<SystemTime>, Option<SystemTime>)>,
}

impl ServerCert {
    pub fn load(cert_file: PathBuf, key_file: PathBuf) -> Result<ServerCert, TlsError> {
        let ck = certified_key(&cert_file, &key_file)?;
        let stamps = (modified(&cert_file), modified(&key_file));
        Ok(ServerCert {
            current: RwLock::new((Arc::new(ck), stamps.0, stamps.1)),
            cert_file,
            key_file,
        })
    }

    /// Reads the files again when `force` or when either changed since the
    /// last load; `Ok(true)` when a new pair is in use. A pair that does
    /// not load (half-written, mismatched) leaves the old one in place.
    pub fn reload(&self, force: bool) -> Result<bool, TlsError> {
        let stamps = (modified(&self.cert_file), modified(&self.key_file));
        {
            let cur = self.current.read().unwrap_or_else(|p| p.into_inner());
            if !force && (cur.1, cur.2) == stamps {
                return Ok(false);
            }
        }
        let ck = certified_key(&self.cert_file, &self.key_file);
        let mut cur = self.current.write().unwrap_or_else(|p| p.into_inner());
        // Remember the stamps either way: a bad pair is reported once, and
        // retried when the files change again.
        cur.1 = stamps.0;
        cur.2 = stamps.1;
        cur.0 = Arc::new(ck?);
        Ok(true)
    }

    /// The leaf certificate in use (DER), for tests and logs.
    pub fn leaf(&self) -> Vec<u8> {
        let cur = self.current.read().unwrap_or_else(|p| p.into_inner());
        cur.0.cert.first().map(|c| c.to_vec()).unwrap_or_default()
    }
}

impl ResolvesServerCert for ServerCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .0
                .clone(),
        )
    }
}

/// The listener's rustls configuration over a reloadable certificate.
pub fn server_config(cert: Arc<ServerCert>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    Ok(Arc::new(cfg))
}

/// How to reach one TLS peer: whom to expect and what to present.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ClientProfile {
    /// The name to send as SNI and verify the certificate for; `None`:
    /// the peer's IP address (verified against the certificate's IP SANs).
    pub server_name: Option<String>,
    /// PEM roots to trust instead of the system's.
    pub ca_file: Option<PathBuf>,
    /// A client certificate chain and key (mutual TLS).
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// The system's trust anchors (Debian's ca-certificates), read once.
fn system_roots() -> Arc<rustls::RootCertStore> {
    static ROOTS: std::sync::OnceLock<Arc<rustls::RootCertStore>> = std::sync::OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut store = rustls::RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::warn!(error = %e, "a system CA certificate could not be read");
            }
            let (added, ignored) = store.add_parsable_certificates(found.certs);
            tracing::debug!(added, ignored, "system CA certificates loaded");
            Arc::new(store)
        })
        .clone()
}

/// A client configuration for `profile`.
pub fn client_config(profile: &ClientProfile) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let roots = match &profile.ca_file {
        Some(path) => {
            let mut store = rustls::RootCertStore::empty();
            for c in read_certs(path)? {
                store.add(c).map_err(|e| file_err(path, e))?;
            }
            Arc::new(store)
        }
        None => system_roots(),
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let cfg = match &profile.client_cert {
        Some((cert, key)) => builder.with_client_auth_cert(read_certs(cert)?, read_key(key)?)?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(cfg))
}

/// The name a connection to `remote` under `profile` verifies.
pub fn server_name(profile: &ClientProfile, remote: SocketAddr) -> Option<ServerName<'static>> {
    match &profile.server_name {
        Some(n) => ServerName::try_from(n.clone()).ok(),
        None => Some(ServerName::IpAddress(remote.ip().into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed pair made by openssl (a real tool, as operators use).
    fn pair(dir: &Path, name: &str, cn: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}.key"));
        let ok = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args(["-nodes", "-days", "2", "-subj", &format!("/CN={cn}")])
            .arg("-addext")
            .arg(format!("subjectAltName=DNS:{cn},IP:127.0.0.1"))
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl")
            .success();
        assert!(ok);
        (cert, key)
    }

    #[test]
    fn a_reload_takes_a_changed_pair_and_keeps_the_old_one_when_the_new_is_bad() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = pair(dir.path(), "a", "one.example");
        let sc = ServerCert::load(cert.clone(), key.clone()).unwrap();
        let first = sc.leaf();
        assert!(!sc.reload(false).unwrap(), "nothing changed");
        // A new pair in place (renamed over, as cert-manager does).
        let (c2, k2) = pair(dir.path(), "b", "two.example");
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::rename(&c2, &cert).unwrap();
        std::fs::rename(&k2, &key).unwrap();
        assert!(sc.reload(false).unwrap());
        let second = sc.leaf();
        assert_ne!(first, second);
        // A half-written certificate: refused, the good pair stays.
        std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nMIIB\n").unwrap();
        assert!(sc.reload(false).is_err());
        assert_eq!(sc.leaf(), second);
        // A key that is not the certificate's.
        let (c3, _) = pair(dir.path(), "c", "three.example");
        std::fs::copy(&c3, &cert).unwrap();
        assert!(sc.reload(true).is_err());
        assert_eq!(sc.leaf(), second);
    }

    #[test]
    fn files_that_are_not_pem_are_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let e = certified_key(&junk, &junk).unwrap_err().to_string();
        assert!(e.contains("junk.pem"), "{e}");
        let e = certified_key(&dir.path().join("missing.pem"), &junk)
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.pem"), "{e}");
        let profile = ClientProfile {
            ca_file: Some(junk),
            ..ClientProfile::default()
        };
        assert!(client_config(&profile).is_err());
    }
}

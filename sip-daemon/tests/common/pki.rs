//! Certificates for TLS tests, made by openssl as an operator's would be.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// A CA and a server certificate it signed for `names` (DNS names and
/// IP addresses), in `dir`: (ca.pem, cert.pem, key.pem).
pub fn pki(dir: &Path, tag: &str, names: &str) -> (PathBuf, PathBuf, PathBuf) {
    pki_for_days(dir, tag, names, 2)
}

/// [`pki`] with a server certificate valid for `days` (negative: expired).
pub fn pki_for_days(dir: &Path, tag: &str, names: &str, days: i32) -> (PathBuf, PathBuf, PathBuf) {
    let p = |f: &str| dir.join(format!("{tag}-{f}"));
    let run = |args: &[&str]| {
        let ok = Command::new("openssl")
            .args(args)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl")
            .success();
        assert!(ok, "openssl {args:?}");
    };
    let s = |p: &PathBuf| p.display().to_string();
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        "2",
        "-subj",
        &format!("/CN={tag} test CA"),
        "-keyout",
        &s(&p("ca.key")),
        "-out",
        &s(&p("ca.pem")),
    ]);
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        "/CN=gateway",
        "-keyout",
        &s(&p("key.pem")),
        "-out",
        &s(&p("csr.pem")),
    ]);
    std::fs::write(p("ext.cnf"), format!("subjectAltName={names}\n")).unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        &s(&p("csr.pem")),
        "-CA",
        &s(&p("ca.pem")),
        "-CAkey",
        &s(&p("ca.key")),
        "-CAcreateserial",
        "-days",
        &days.to_string(),
        "-extfile",
        &s(&p("ext.cnf")),
        "-out",
        &s(&p("cert.pem")),
    ]);
    (p("ca.pem"), p("cert.pem"), p("key.pem"))
}

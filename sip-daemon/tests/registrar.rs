//! The registrar against the real daemon and its SQLite store: digest
//! (RFC 8760 SHA-256 and MD5) over UDP, the binding written to the
//! `registrations` table, kept across a restart, and removed by
//! `Expires: 0`. Wrong passwords and unknown users get the same answer.

mod common;

use common::{Daemon, challenge, header, register};
use sip_daemon::sip::digest::Credentials;
use std::net::UdpSocket;
use std::process::Command;
use std::time::{Duration, Instant};

const USERS: &str = r#"
[[sip_users]]
username = "alice"
account = "acct"
password = "alice-secret"
"#;

fn bindings(d: &Daemon) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg("import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); print(c.execute('select username, contact from registrations order by contact').fetchall())")
        .arg(d.db_path())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn wait_for_bindings(d: &Daemon, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while bindings(d) != want && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(bindings(d), want);
}

#[test]
fn register_with_digest_persists_bindings() {
    let mut d = Daemon::start(USERS);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let contact = format!("sip:alice@{}", sock.local_addr().unwrap());

    let first = register(&sock, &d, "alice", 1, "Expires: 600\r\n");
    assert!(first.starts_with("SIP/2.0 401"), "{first}");
    // Each answer to a fresh challenge: a nonce answered with nc=1 once
    // cannot be answered with nc=1 again (a replay).
    for (cseq, alg) in [(3, "SHA-256"), (5, "MD5")] {
        let fresh = register(&sock, &d, "alice", cseq - 1, "Expires: 600\r\n");
        let auth = Credentials::answer(
            &challenge(&fresh, alg),
            "alice",
            "alice-secret",
            "REGISTER",
            "sip:127.0.0.1",
            "c0ffee",
        )
        .encode();
        let ok = register(
            &sock,
            &d,
            "alice",
            cseq,
            &format!("Expires: 600\r\nAuthorization: {auth}\r\n"),
        );
        assert!(ok.starts_with("SIP/2.0 200"), "{alg}: {ok}");
        assert!(
            header(&ok, "Contact").unwrap().contains("expires=600"),
            "{ok}"
        );
    }
    wait_for_bindings(&d, &format!("[('alice', '{contact}')]"));

    // Wrong password and unknown user: the same status and challenge shape.
    let first = register(&sock, &d, "alice", 6, "");
    let wrong = Credentials::answer(
        &challenge(&first, "SHA-256"),
        "alice",
        "nope",
        "REGISTER",
        "sip:127.0.0.1",
        "c1",
    )
    .encode();
    let r1 = register(
        &sock,
        &d,
        "alice",
        7,
        &format!("Authorization: {wrong}\r\n"),
    );
    let ghost = Credentials::answer(
        &challenge(&first, "SHA-256"),
        "mallory",
        "x",
        "REGISTER",
        "sip:127.0.0.1",
        "c2",
    )
    .encode();
    let r2 = register(
        &sock,
        &d,
        "mallory",
        8,
        &format!("Authorization: {ghost}\r\n"),
    );
    let status = |r: &str| r.split_whitespace().nth(1).unwrap().to_string();
    assert_eq!(
        (status(&r1), status(&r2)),
        ("401".to_string(), "401".to_string())
    );

    // The binding survives a restart (loaded from the store).
    d.stop();
    d.restart();
    assert_eq!(bindings(&d), format!("[('alice', '{contact}')]"));

    // Expires: 0 removes it, in memory and in the store.
    let fresh = register(&sock, &d, "alice", 9, "");
    let auth = Credentials::answer(
        &challenge(&fresh, "SHA-256"),
        "alice",
        "alice-secret",
        "REGISTER",
        "sip:127.0.0.1",
        "c3",
    )
    .encode();
    let ok = register(
        &sock,
        &d,
        "alice",
        10,
        &format!("Expires: 0\r\nAuthorization: {auth}\r\n"),
    );
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
    wait_for_bindings(&d, "[]");
}

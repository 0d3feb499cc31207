//! Digest that resists replay and guessing: nonces bound to the client's
//! address, `nc` tracked, failures throttled with lockouts, bindings
//! capped, INVITEs optionally challenged.

use super::*;

const GUESSER: &str = "203.0.113.66:5070";
const PHONE: &str = "203.0.113.5:5070";

/// A REGISTER for alice answering `chal` with `password`.
fn answered(chal: &str, password: &str, branch: &str, cseq: u32, contact_port: u16) -> String {
    let auth = answer_challenge(chal, "alice", password, "SHA-256");
    register("alice", branch, cseq, &format!("Authorization: {auth}\r\n"))
        .replace("127.0.0.1:5070>", &format!("127.0.0.1:{contact_port}>"))
}

#[test]
fn a_captured_register_replayed_is_refused_and_a_nonce_is_worthless_elsewhere() {
    let mut h = Harness::new();
    let phone = peer(TransportKind::Udp, PHONE);
    let chal = fresh_challenge(&mut h, phone, "alice", 1);
    let ok = answered(&chal, "secret", "z9hG4bK-rp1", 2, 5070);
    h.recv_from(phone, &ok);
    assert_eq!(h.statuses(), vec![200]);
    // The same credentials in a new transaction (a captured request sent
    // again): refused with a fresh nonce, stale=true, counted.
    let replay = ok
        .replace("z9hG4bK-rp1", "z9hG4bK-rp2")
        .replace("CSeq: 2", "CSeq: 3");
    h.recv_from(phone, &replay);
    let r = h.take_sent().pop().unwrap();
    assert!(
        r.starts_with("SIP/2.0 401") && r.contains("stale=true"),
        "{r}"
    );
    assert_eq!(h.core.metrics.rejection_count("auth_replay"), 1);
    // From another address the nonce does not even check out.
    let chal = fresh_challenge(&mut h, phone, "alice", 4);
    let stolen = answered(&chal, "secret", "z9hG4bK-rp3", 5, 5070);
    h.recv_from(peer(TransportKind::Udp, GUESSER), &stolen);
    let r = h.take_sent().pop().unwrap();
    assert!(r.starts_with("SIP/2.0 401") && !r.contains("stale"), "{r}");
    // The phone itself still can use it once (in its own transaction).
    h.recv_from(
        phone,
        &stolen
            .replace("z9hG4bK-rp3", "z9hG4bK-rp4")
            .replace("CSeq: 5", "CSeq: 6"),
    );
    assert_eq!(h.statuses(), vec![200]);
}

#[test]
fn a_password_guesser_is_locked_out_and_the_right_password_no_longer_helps() {
    let mut h = Harness::new_with(|c| c.registrar.guard.max_failures = 5);
    let guesser = peer(TransportKind::Udp, GUESSER);
    for i in 0..5u32 {
        let chal = fresh_challenge(&mut h, guesser, "alice", 10 * i + 1);
        let guess = answered(
            &chal,
            &format!("guess{i}"),
            &format!("z9hG4bK-gs{i}"),
            10 * i + 2,
            5070,
        );
        h.recv_from(guesser, &guess);
        assert_eq!(h.statuses(), vec![401], "guess {i}");
    }
    assert_eq!(h.core.metrics.rejection_count("auth_failure"), 5);
    assert_eq!(h.core.metrics.rejection_count("auth_lockout_source"), 1);
    // The edge is told, so the kernel may drop it before the parse.
    assert!(
        h.hooks.iter().any(|o| matches!(o, Output::SourceLockedOut { source, secs: 600 } if source.to_string() == "203.0.113.66")),
        "{:?}",
        h.hooks
    );
    // Locked: everything from it gets 403 at once, no digest computed
    // (and no new nonce handed out), even the right password.
    h.recv_from(guesser, &register("alice", "z9hG4bK-gs9", 90, ""));
    assert_eq!(h.statuses(), vec![403]);
    // (The nonce was issued before the lockout.)
    let late = answered(
        &fresh_challenge_from_phone(&mut h),
        "secret",
        "z9hG4bK-gs10",
        92,
        5070,
    );
    h.recv_from(guesser, &late);
    assert_eq!(h.statuses(), vec![403]);
    // Ten minutes later it may try again.
    h.advance_to(601_000);
    h.take_sent();
    let chal = fresh_challenge(&mut h, guesser, "alice", 100);
    h.recv_from(
        guesser,
        &answered(&chal, "secret", "z9hG4bK-gs11", 101, 5070),
    );
    assert_eq!(h.statuses(), vec![200]);
}

fn fresh_challenge_from_phone(h: &mut Harness) -> String {
    fresh_challenge(h, peer(TransportKind::Udp, PHONE), "alice", 91)
}

#[test]
fn a_username_guessed_from_many_addresses_locks_only_strangers_out() {
    let mut h = Harness::new_with(|c| c.registrar.guard.max_failures = 3);
    let phone = peer(TransportKind::Udp, PHONE);
    let chal = fresh_challenge(&mut h, phone, "alice", 1);
    h.recv_from(phone, &answered(&chal, "secret", "z9hG4bK-u0", 2, 5070));
    assert_eq!(h.statuses(), vec![200]);
    for i in 0..3u32 {
        let from = peer(TransportKind::Udp, &format!("198.51.100.{i}:5060"));
        let chal = fresh_challenge(&mut h, from, "alice", 10 + 2 * i);
        h.recv_from(
            from,
            &answered(
                &chal,
                "nope",
                &format!("z9hG4bK-u{}", i + 1),
                11 + 2 * i,
                5070,
            ),
        );
        assert_eq!(h.statuses(), vec![401]);
    }
    assert_eq!(h.core.metrics.rejection_count("auth_lockout_user"), 1);
    // A new address, right password: refused while alice is locked.
    let other = peer(TransportKind::Udp, "198.51.100.50:5060");
    let chal = fresh_challenge(&mut h, other, "alice", 30);
    h.recv_from(other, &answered(&chal, "secret", "z9hG4bK-u8", 31, 5070));
    assert_eq!(h.statuses(), vec![403]);
    // The phone that holds alice's binding refreshes as usual.
    let chal = fresh_challenge(&mut h, phone, "alice", 40);
    h.recv_from(phone, &answered(&chal, "secret", "z9hG4bK-u9", 41, 5070));
    assert_eq!(h.statuses(), vec![200]);
}

#[test]
fn a_user_holds_a_bounded_number_of_bindings() {
    let mut h = Harness::new_with(|c| c.registrar.max_bindings_per_user = 2);
    let phone = peer(TransportKind::Udp, PHONE);
    for (i, port) in [6001u16, 6002, 6002, 6003].into_iter().enumerate() {
        let i = i as u32;
        let chal = fresh_challenge(&mut h, phone, "alice", 10 * i + 1);
        h.recv_from(
            phone,
            &answered(&chal, "secret", &format!("z9hG4bK-b{i}"), 10 * i + 2, port),
        );
        let want = if port == 6003 { 403 } else { 200 };
        assert_eq!(h.statuses(), vec![want], "contact {port}");
    }
    assert_eq!(h.core.metrics.rejection_count("registrar"), 1);
}

#[test]
fn invites_from_registered_users_can_be_challenged() {
    let mut h = Harness::new_with(|c| c.challenge_invites = true);
    let phone = peer(TransportKind::Udp, PHONE);
    let chal = fresh_challenge(&mut h, phone, "alice", 1);
    h.recv_from(phone, &answered(&chal, "secret", "z9hG4bK-i0", 2, 5070));
    assert_eq!(h.statuses(), vec![200]);
    // From alice's registered address but without credentials: 407.
    h.recv_from(phone, &invite("+15550001", "ch1", "z9hG4bK-i1", "", SDP));
    let r = h.take_sent().pop().unwrap();
    assert!(r.starts_with("SIP/2.0 407"), "{r}");
    assert!(h.cdr.is_empty(), "a challenge is no call");
    let ch = headers(&r, "Proxy-Authenticate")
        .into_iter()
        .map(|v| Challenge::parse(v).unwrap())
        .find(|c| c.algorithm == Algorithm::Sha256)
        .unwrap();
    let uri = "sip:+15550001@127.0.0.1:5060";
    // Credentials that do not check out: challenged again, counted.
    let wrong = Credentials::answer(&ch, "alice", "x", "INVITE", uri, "c1").encode();
    h.recv_from(
        phone,
        &invite(
            "+15550001",
            "ch2",
            "z9hG4bK-i2",
            &format!("Proxy-Authorization: {wrong}\r\n"),
            SDP,
        ),
    );
    assert_eq!(h.statuses(), vec![407]);
    assert_eq!(h.core.metrics.rejection_count("auth_failure"), 1);
    // Alice's own: the call proceeds.
    h.recv_from(phone, &invite("+15550001", "ch3", "z9hG4bK-i3", "", SDP));
    let r = h.take_sent().pop().unwrap();
    let ch = headers(&r, "Proxy-Authenticate")
        .into_iter()
        .map(|v| Challenge::parse(v).unwrap())
        .find(|c| c.algorithm == Algorithm::Sha256)
        .unwrap();
    let good = Credentials::answer(&ch, "alice", "secret", "INVITE", uri, "c2").encode();
    h.recv_from(
        phone,
        &invite(
            "+15550001",
            "ch4",
            "z9hG4bK-i4",
            &format!("Proxy-Authorization: {good}\r\n"),
            SDP,
        ),
    );
    assert!(
        matches!(h.cdr.first(), Some(CdrEvent::Started(_))),
        "{:?}",
        h.cdr
    );
}

#[test]
fn a_guesser_behind_the_phones_nat_does_not_cut_the_phone_off() {
    let mut h = Harness::new_with(|c| c.registrar.guard.max_failures = 3);
    let phone = peer(TransportKind::Udp, PHONE);
    let chal = fresh_challenge(&mut h, phone, "alice", 1);
    h.recv_from(phone, &answered(&chal, "secret", "z9hG4bK-n0", 2, 5070));
    assert_eq!(h.statuses(), vec![200]);
    // Same public address, another port: guessing bob (unknown here).
    let guesser = peer(TransportKind::Udp, "203.0.113.5:6000");
    for i in 0..5u32 {
        let chal = fresh_challenge(&mut h, guesser, "alice", 10 + 2 * i);
        let auth = answer_challenge(&chal, "bob", "guess", "SHA-256");
        h.recv_from(
            guesser,
            &register(
                "bob",
                &format!("z9hG4bK-n{}", i + 1),
                11 + 2 * i,
                &format!("Authorization: {auth}\r\n"),
            ),
        );
        assert_eq!(h.statuses(), vec![401]);
    }
    // The address holds alice's binding: not locked, not denied at the edge.
    assert!(
        !h.hooks
            .iter()
            .any(|o| matches!(o, Output::SourceLockedOut { .. }))
    );
    let chal = fresh_challenge(&mut h, phone, "alice", 40);
    h.recv_from(phone, &answered(&chal, "secret", "z9hG4bK-n9", 41, 5070));
    assert_eq!(h.statuses(), vec![200]);
}

#[test]
fn only_the_offered_algorithms_are_taken() {
    let mut h = Harness::new_with(|c| c.registrar.algorithms = vec![Algorithm::Sha256]);
    let phone = peer(TransportKind::Udp, PHONE);
    let chal = fresh_challenge(&mut h, phone, "alice", 1);
    assert_eq!(headers(&chal, "WWW-Authenticate").len(), 1);
    // An MD5 answer to the SHA-256 challenge's nonce: challenged again.
    let ch = Challenge::parse(headers(&chal, "WWW-Authenticate")[0]).unwrap();
    let md5 = Challenge {
        algorithm: Algorithm::Md5,
        ..ch.clone()
    };
    let auth =
        Credentials::answer(&md5, "alice", "secret", "REGISTER", "sip:127.0.0.1", "c").encode();
    h.recv_from(
        phone,
        &register(
            "alice",
            "z9hG4bK-a1",
            2,
            &format!("Authorization: {auth}\r\n"),
        ),
    );
    assert_eq!(h.statuses(), vec![401]);
    let auth =
        Credentials::answer(&ch, "alice", "secret", "REGISTER", "sip:127.0.0.1", "c").encode();
    h.recv_from(
        phone,
        &register(
            "alice",
            "z9hG4bK-a2",
            3,
            &format!("Authorization: {auth}\r\n"),
        ),
    );
    assert_eq!(h.statuses(), vec![200]);
}

#[test]
fn a_scanner_over_tcp_is_locked_out_but_udp_knocks_lock_out_nobody() {
    let mut h = Harness::new_with(|c| c.registrar.guard.max_failures = 5);
    let options = |i: u32| {
        format!(
            "OPTIONS sip:gw@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 203.0.113.66:5070;branch=z9hG4bK-sc{i}\r\nMax-Forwards: 70\r\nFrom: <sip:x@203.0.113.66>;tag=s{i}\r\nTo: <sip:gw@127.0.0.1>\r\nCall-ID: scan-{i}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        )
    };
    // Spoofable UDP: answered statelessly, never locked out.
    let udp = peer(TransportKind::Udp, GUESSER);
    for i in 0..20 {
        h.recv_from(udp, &options(i).replace("/TCP", "/UDP"));
    }
    assert_eq!(h.statuses(), vec![403; 20]);
    assert!(
        !h.hooks
            .iter()
            .any(|o| matches!(o, Output::SourceLockedOut { .. }))
    );
    // Over TCP the handshake proved the address: the fifth knock locks it
    // out, and the edge hears it once.
    let tcp = peer(TransportKind::Tcp, "203.0.113.67:5070");
    for i in 0..6 {
        h.recv_from(tcp, &options(100 + i));
    }
    assert_eq!(h.core.metrics.rejection_count("scanner_lockout"), 1);
    let locked: Vec<_> = h
        .hooks
        .iter()
        .filter(|o| matches!(o, Output::SourceLockedOut { source, .. } if source.to_string() == "203.0.113.67"))
        .collect();
    assert_eq!(locked.len(), 1, "{:?}", h.hooks);
    // Locked: its REGISTER gets the lockout's 403, no challenge.
    h.recv_from(tcp, &register("alice", "z9hG4bK-sc-reg", 1, ""));
    assert_eq!(h.statuses().last(), Some(&403));
}

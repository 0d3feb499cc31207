//! One suite of store tests, run against SQLite (a temporary file) and
//! against PostgreSQL (`TEST_DATABASE_URL`, one fresh schema per test).
//!
//! Without `TEST_DATABASE_URL` the PostgreSQL tests fail, unless
//! `GATEWAY_TEST_SKIP_PG=1` is set (they then print that they were skipped).

mod common;

use std::sync::Arc;

use api::store::postgres::PgStore;
use api::store::sqlite::SqliteStore;
use api::store::*;
use common::{call, call_id};

/// Raw SQL access to the database behind a store (to plant corrupt rows).
enum Raw {
    Sqlite(sqlx::SqlitePool),
    Pg(sqlx::PgPool),
}

impl Raw {
    async fn exec(&self, sql: &str) {
        match self {
            Raw::Sqlite(p) => sqlx::query(sql).execute(p).await.map(drop),
            Raw::Pg(p) => sqlx::query(sql).execute(p).await.map(drop),
        }
        .unwrap_or_else(|e| panic!("raw SQL {sql:?}: {e}"));
    }
}

// ------------------------------------------------------------------ suite

async fn accounts_roundtrip(s: Arc<dyn Store>) {
    assert!(s.list_accounts().await.unwrap().is_empty());
    let b = Account {
        id: "acc-b".into(),
        name: "Bravo".into(),
        number_ranges: vec![],
    };
    let a = Account {
        id: "acc-a".into(),
        name: "Alpha".into(),
        number_ranges: vec!["+1555*".into(), "+4930123".into()],
    };
    s.upsert_account(&b).await.unwrap();
    s.upsert_account(&a).await.unwrap();
    assert_eq!(s.list_accounts().await.unwrap(), vec![a.clone(), b.clone()]);

    let a2 = Account {
        name: "Alpha Renamed".into(),
        number_ranges: vec!["*".into()],
        ..a
    };
    s.upsert_account(&a2).await.unwrap();
    assert_eq!(s.list_accounts().await.unwrap(), vec![a2.clone(), b]);

    // The auth token: none at first, set, rotated; a rename keeps it.
    assert_eq!(s.account_auth_token("acc-a").await.unwrap(), None);
    assert!(s.set_account_auth_token("acc-a", "t1").await.unwrap());
    assert!(s.set_account_auth_token("acc-a", "t2").await.unwrap());
    s.upsert_account(&a2).await.unwrap();
    assert_eq!(
        s.account_auth_token("acc-a").await.unwrap().as_deref(),
        Some("t2")
    );
    assert_eq!(s.account_auth_token("acc-b").await.unwrap(), None);
    assert!(!s.set_account_auth_token("nobody", "t").await.unwrap());
    assert_eq!(s.account_auth_token("nobody").await.unwrap(), None);
}

async fn trunks_roundtrip(s: Arc<dyn Store>) {
    let full = Trunk {
        name: "telnyx-east".into(),
        source_cidrs: vec!["192.0.2.0/24".into(), "2001:db8::/32".into()],
        outbound_address: Some("sip.example.net:5060".into()),
        transport: "tls".into(),
        username: Some("user".into()),
        password: Some("p@ss'\"word".into()),
        max_calls: Some(u32::MAX),
        transfer: Some("refer".into()),
        account_id: Some("acc-a".into()),
        requests_per_sec: Some(u32::MAX),
        tls: TrunkTls {
            server_name: Some("sip.example.net".into()),
            ca_file: Some("/etc/gateway/carrier-ca.pem".into()),
            client_cert_file: Some("/etc/gateway/client.pem".into()),
            client_key_file: Some("/etc/gateway/client.key".into()),
        },
        media_security: MediaSecurity::Srtp,
        srtp_cleartext_keying: true,
    };
    let bare = Trunk {
        name: "local".into(),
        source_cidrs: vec![],
        outbound_address: None,
        transport: "tcp".into(),
        username: None,
        password: None,
        max_calls: None,
        transfer: None,
        account_id: None,
        requests_per_sec: None,
        tls: TrunkTls::default(),
        media_security: MediaSecurity::default(),
        srtp_cleartext_keying: false,
    };
    s.upsert_trunk(&full).await.unwrap();
    s.upsert_trunk(&bare).await.unwrap();
    assert_eq!(
        s.list_trunks().await.unwrap(),
        vec![bare.clone(), full.clone()]
    );

    let updated = Trunk {
        source_cidrs: vec!["198.51.100.7/32".into()],
        outbound_address: None,
        transport: "tls".into(),
        username: None,
        password: None,
        max_calls: Some(0),
        ..full.clone()
    };
    s.upsert_trunk(&updated).await.unwrap();
    assert_eq!(s.list_trunks().await.unwrap(), vec![bare.clone(), updated]);

    assert!(s.delete_trunk("telnyx-east").await.unwrap());
    assert!(!s.delete_trunk("telnyx-east").await.unwrap());
    assert_eq!(s.list_trunks().await.unwrap(), vec![bare]);
}

async fn numbers_roundtrip(s: Arc<dyn Store>) {
    let echo = Number {
        pattern: "+15550001234".into(),
        account_id: "acc-a".into(),
        route: RouteKind::Echo,
        target: None,
        dialect: None,
        params: None,
        trunk: None,
        max_calls: None,
        fallback: None,
        voice_webhook: None,
        sms_webhook: None,
        status_webhook: None,
        webhook_format: Default::default(),
        media_security: MediaSecurity::Srtp,
    };
    let stream = Number {
        pattern: "+1555000*".into(),
        account_id: "acc-a".into(),
        route: RouteKind::Stream,
        target: Some("wss://ai.example/stream".into()),
        dialect: Some("twilio".into()),
        params: Some(r#"{"voice":"x"}"#.into()),
        trunk: None,
        max_calls: Some(10),
        fallback: Some("sip:+15550009999@carrier".into()),
        voice_webhook: Some("https://hooks.example/voice".into()),
        sms_webhook: None,
        status_webhook: None,
        webhook_format: WebhookFormat::Twilio,
        media_security: MediaSecurity::Rtp,
    };
    let fwd = Number {
        pattern: "+4930123".into(),
        account_id: "acc-b".into(),
        route: RouteKind::Forward,
        target: Some("sip:+4930999@carrier".into()),
        dialect: None,
        params: None,
        trunk: Some("telnyx-east".into()),
        max_calls: Some(1),
        fallback: None,
        voice_webhook: None,
        sms_webhook: None,
        status_webhook: None,
        webhook_format: Default::default(),
        media_security: MediaSecurity::SrtpOptional,
    };
    for n in [&echo, &stream, &fwd] {
        assert!(s.upsert_number(n).await.unwrap());
    }
    // Ordered by pattern (byte order: '*' < '0').
    assert_eq!(
        s.list_numbers().await.unwrap(),
        vec![stream.clone(), echo.clone(), fwd.clone()]
    );

    // Its account replaces it.
    let echo2 = Number {
        route: RouteKind::Forward,
        target: Some("sip:x@y".into()),
        trunk: Some("local".into()),
        max_calls: Some(3),
        ..echo.clone()
    };
    assert!(s.upsert_number(&echo2).await.unwrap());
    assert_eq!(
        s.list_numbers().await.unwrap(),
        vec![stream.clone(), echo2.clone(), fwd.clone()]
    );
    // Another account's write changes nothing.
    let taken = Number {
        account_id: "acc-b".into(),
        ..echo.clone()
    };
    assert!(!s.upsert_number(&taken).await.unwrap());
    assert_eq!(
        s.list_numbers().await.unwrap(),
        vec![stream.clone(), echo2, fwd.clone()]
    );

    assert!(s.delete_number("+15550001234").await.unwrap());
    assert!(!s.delete_number("+15550001234").await.unwrap());
    assert_eq!(s.list_numbers().await.unwrap(), vec![stream, fwd]);
}

async fn blocked_roundtrip(s: Arc<dyn Store>) {
    let whole = BlockedNumber {
        id: "b1".into(),
        account_id: "acc-a".into(),
        number_pattern: None,
        caller_pattern: "+1900*".into(),
    };
    let one = BlockedNumber {
        id: "b2".into(),
        account_id: "acc-a".into(),
        number_pattern: Some("+15550001234".into()),
        caller_pattern: "+15557770000".into(),
    };
    s.upsert_blocked(&one).await.unwrap();
    s.upsert_blocked(&whole).await.unwrap();
    assert_eq!(
        s.list_blocked().await.unwrap(),
        vec![whole.clone(), one.clone()]
    );

    let whole2 = BlockedNumber {
        number_pattern: Some("+15550009999".into()),
        caller_pattern: "+1800*".into(),
        ..whole
    };
    s.upsert_blocked(&whole2).await.unwrap();
    assert_eq!(s.list_blocked().await.unwrap(), vec![whole2, one.clone()]);

    assert!(s.delete_blocked("b1").await.unwrap());
    assert!(!s.delete_blocked("b1").await.unwrap());
    assert_eq!(s.list_blocked().await.unwrap(), vec![one]);
}

async fn denied_sources_roundtrip(s: Arc<dyn Store>) {
    let host = DeniedSource {
        id: "DS1".into(),
        network: "203.0.113.7/32".into(),
        reason: Some("scanner\u{0}".into()),
        created_at: 1_000,
        expires_at: Some(5_000),
    };
    let net = DeniedSource {
        id: "DS2".into(),
        network: "2001:db8::/32".into(),
        reason: None,
        created_at: 2_000,
        expires_at: None,
    };
    assert!(s.insert_denied_source(&host).await.unwrap());
    assert!(s.insert_denied_source(&net).await.unwrap());
    // One row per network: a second entry for it writes nothing.
    let again = DeniedSource {
        id: "DS3".into(),
        ..net.clone()
    };
    assert!(!s.insert_denied_source(&again).await.unwrap());
    let stored = s.list_denied_sources().await.unwrap();
    // The NUL is stored escaped, identically on both backends.
    let escaped = DeniedSource {
        reason: Some("scanner\\x00".into()),
        ..host.clone()
    };
    assert_eq!(stored, vec![net.clone(), escaped]);
    assert!(stored[1].in_force(4_999) && !stored[1].in_force(5_000));
    assert!(stored[0].in_force(i64::MAX));

    assert_eq!(s.purge_denied_sources(4_999).await.unwrap(), 0);
    assert_eq!(s.purge_denied_sources(5_000).await.unwrap(), 1);
    assert_eq!(s.list_denied_sources().await.unwrap(), vec![net]);
    assert!(s.delete_denied_source("DS2").await.unwrap());
    assert!(!s.delete_denied_source("DS2").await.unwrap());
    assert!(s.list_denied_sources().await.unwrap().is_empty());
}

async fn nodes_heartbeat_and_drain_requests(s: Arc<dyn Store>) {
    let mut n = NodeRecord {
        id: "node-a".into(),
        api_address: Some("198.18.0.1:8080".into()),
        version: "0.1.0".into(),
        started_at: 1_000,
        heartbeat_at: 1_000,
        calls_active: 0,
        draining: false,
        drain_requested: false,
    };
    s.register_node(&n).await.unwrap();
    assert_eq!(s.list_nodes().await.unwrap(), vec![n.clone()]);
    n.heartbeat_at = 2_000;
    n.calls_active = 7;
    assert!(!s.heartbeat_node(&n).await.unwrap());
    assert!(s.request_node_drain("node-a").await.unwrap());
    assert!(
        !s.request_node_drain("node-b").await.unwrap(),
        "no such node"
    );
    n.heartbeat_at = 3_000;
    assert!(
        s.heartbeat_node(&n).await.unwrap(),
        "the request reaches the node"
    );
    let listed = s.list_nodes().await.unwrap();
    assert_eq!(listed[0].calls_active, 7);
    assert!(listed[0].drain_requested);
    // The next run of the node starts without the old request.
    n.started_at = 4_000;
    s.register_node(&n).await.unwrap();
    assert!(!s.list_nodes().await.unwrap()[0].drain_requested);
    assert!(!s.heartbeat_node(&n).await.unwrap());
    // A heartbeat from a node that never registered records it.
    let mut b = n.clone();
    b.id = "node-b".into();
    assert!(!s.heartbeat_node(&b).await.unwrap());
    let ids: Vec<_> = s
        .list_nodes()
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.id)
        .collect();
    assert_eq!(ids, ["node-a", "node-b"]);
    // Forgotten only once lapsed, and not while a call of it is open.
    assert!(!s.delete_node("node-b", 1_000).await.unwrap(), "alive");
    let mut open = call(900, Some("acc-a"), Direction::Inbound, 1_000);
    open.node = Some("node-b".into());
    s.apply_cdr_batch(&[CdrEvent::Started(open.clone())])
        .await
        .unwrap();
    assert!(
        !s.delete_node("node-b", i64::MAX).await.unwrap(),
        "a call is open"
    );
    s.apply_cdr_batch(&[CdrEvent::Ended {
        id: open.id.clone(),
        at: 2_000,
        cause: "node_lost".into(),
        sip_status: 200,
        duration_ms: 0,
    }])
    .await
    .unwrap();
    assert!(s.delete_node("node-b", i64::MAX).await.unwrap());
    assert!(
        !s.delete_node("node-b", i64::MAX).await.unwrap(),
        "gone already"
    );
    assert_eq!(s.list_nodes().await.unwrap().len(), 1);
}

async fn a_lost_nodes_calls_are_closed_unless_resumable(s: Arc<dyn Store>) {
    let t = 1_800_000_000_000;
    let node = |id: &str, heartbeat_at: i64| NodeRecord {
        id: id.into(),
        api_address: None,
        version: "0.1.0".into(),
        started_at: t - 60_000,
        heartbeat_at,
        calls_active: 1,
        draining: false,
        drain_requested: false,
    };
    s.register_node(&node("lost", t - 20_000)).await.unwrap();
    s.register_node(&node("alive", t)).await.unwrap();
    let mut calls = listing_fixture(t - 30_000);
    calls.truncate(3);
    for (c, n) in calls.iter_mut().zip(["lost", "lost", "alive"]) {
        c.node = Some(n.into());
        c.end_at = None;
        c.end_cause = None;
        c.answer_at = Some(t - 25_000);
    }
    let events: Vec<CdrEvent> = calls.iter().cloned().map(CdrEvent::Started).collect();
    s.apply_cdr_batch(&events).await.unwrap();
    // The second call of the lost node was left resumable.
    s.apply_cdr_batch(&[CdrEvent::Resumable {
        id: calls[1].id.clone(),
        node: "lost".into(),
        snapshot: "{}".into(),
        at: t - 21_000,
    }])
    .await
    .unwrap();
    // A heartbeat newer than the lapse keeps a node's calls.
    assert_eq!(
        s.close_lost_node_calls(t, "lost", t - 25_000, false)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        s.close_lost_node_calls(t, "alive", t - 15_000, false)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        s.close_lost_node_calls(t, "lost", t - 15_000, false)
            .await
            .unwrap(),
        1
    );
    let row = |i: usize| {
        let s = s.clone();
        let id = calls[i].id.clone();
        async move { s.get_call(&id).await.unwrap().unwrap() }
    };
    let closed = row(0).await;
    assert_eq!(closed.end_cause.as_deref(), Some("node_lost"));
    assert_eq!(closed.end_at, Some(t));
    assert_eq!(closed.duration_ms, Some(25_000));
    assert_eq!(
        row(1).await.end_at,
        None,
        "resumable: kept for the node's return"
    );
    assert_eq!(row(2).await.end_at, None, "another node's call");
    // Idempotent: a second peer closes nothing more.
    assert_eq!(
        s.close_lost_node_calls(t, "lost", t - 15_000, false)
            .await
            .unwrap(),
        0
    );
    // Its slots, one of a call whose record never reached the store.
    let scope = vec![("number:+1".to_string(), 3)];
    assert!(
        s.reserve_capacity(&calls[1].id, "lost", &scope, t)
            .await
            .unwrap()
    );
    assert!(
        s.reserve_capacity("never-recorded", "lost", &scope, t)
            .await
            .unwrap()
    );
    assert!(
        s.reserve_capacity(&calls[2].id, "alive", &scope, t)
            .await
            .unwrap()
    );
    // Past its resume grace: the resumable call closes too, and its slots go.
    assert_eq!(
        s.close_lost_node_calls(t, "lost", t - 15_000, true)
            .await
            .unwrap(),
        1
    );
    assert_eq!(row(1).await.end_cause.as_deref(), Some("node_lost"));
    assert!(s.list_resumable_calls("lost").await.unwrap().is_empty());
    // Two slots free again, the live node's kept.
    assert!(s.reserve_capacity("x1", "alive", &scope, t).await.unwrap());
    assert!(s.reserve_capacity("x2", "alive", &scope, t).await.unwrap());
    assert!(!s.reserve_capacity("x3", "alive", &scope, t).await.unwrap());
}

async fn call_limit_reservations_hold_and_release(s: Arc<dyn Store>) {
    let both = |n: u32, t: u32| {
        vec![
            ("number:+1555".to_string(), n),
            ("trunk:carrier".to_string(), t),
        ]
    };
    assert!(
        s.reserve_capacity("c1", "n1", &both(2, 1), 1)
            .await
            .unwrap()
    );
    // The trunk is full: nothing is reserved, not even the number's slot.
    assert!(
        !s.reserve_capacity("c2", "n2", &both(2, 1), 2)
            .await
            .unwrap()
    );
    let number = vec![("number:+1555".to_string(), 2)];
    assert!(s.reserve_capacity("c3", "n2", &number, 3).await.unwrap());
    assert!(!s.reserve_capacity("c4", "n2", &number, 4).await.unwrap());
    s.release_capacity("c1").await.unwrap();
    s.release_capacity("c1").await.unwrap();
    assert!(s.reserve_capacity("c4", "n2", &number, 5).await.unwrap());
    // Node n2 starts again: its calls did not survive, nor do their slots.
    assert_eq!(s.release_stale_capacity(Some("n2")).await.unwrap(), 2);
    assert!(
        s.reserve_capacity("c5", "n1", &both(2, 1), 6)
            .await
            .unwrap()
    );

    // Many nodes at once never overbook.
    let mut set = tokio::task::JoinSet::new();
    for i in 0..20 {
        let s = s.clone();
        set.spawn(async move {
            s.reserve_capacity(
                &format!("race-{i}"),
                &format!("n{}", i % 3),
                &[("number:race".to_string(), 5)],
                7,
            )
            .await
            .unwrap()
        });
    }
    let mut granted = 0;
    while let Some(r) = set.join_next().await {
        granted += usize::from(r.unwrap());
    }
    assert_eq!(granted, 5);
}

async fn sip_users_roundtrip(s: Arc<dyn Store>) {
    let bob = SipUser {
        username: "bob".into(),
        account_id: "acc-a".into(),
        realm: "gw.example".into(),
        ha1_md5: "0".repeat(32),
        ha1_sha256: "1".repeat(64),
    };
    let alice = SipUser {
        username: "alice".into(),
        ..bob.clone()
    };
    assert!(s.upsert_sip_user(&bob).await.unwrap());
    assert!(s.upsert_sip_user(&alice).await.unwrap());
    assert_eq!(
        s.list_sip_users().await.unwrap(),
        vec![alice.clone(), bob.clone()]
    );

    // A new password from its account; another account takes nothing.
    let bob2 = SipUser {
        realm: "other.example".into(),
        ha1_md5: "a".repeat(32),
        ha1_sha256: "b".repeat(64),
        ..bob.clone()
    };
    assert!(s.upsert_sip_user(&bob2).await.unwrap());
    let stolen = SipUser {
        account_id: "acc-b".into(),
        ha1_md5: "c".repeat(32),
        ..bob
    };
    assert!(!s.upsert_sip_user(&stolen).await.unwrap());
    assert_eq!(s.list_sip_users().await.unwrap(), vec![alice.clone(), bob2]);

    // Deleting a user takes its registrar bindings with it.
    s.upsert_registration(&Registration {
        username: "bob".into(),
        contact: "sip:bob@192.0.2.1".into(),
        expires_at: i64::MAX / 2,
        source: "192.0.2.1:5060".into(),
        transport: "udp".into(),
        call_id: "c1".into(),
        cseq: 1,
    })
    .await
    .unwrap();
    assert!(s.delete_sip_user("bob").await.unwrap());
    assert!(!s.delete_sip_user("bob").await.unwrap());
    assert_eq!(s.list_sip_users().await.unwrap(), vec![alice]);
    assert!(s.list_registrations(0).await.unwrap().is_empty());
}

/// The lookups the REST API makes: by key, and by account (the same rows,
/// in the same order, as the whole list filtered to the account).
async fn lookups_by_key_and_account(s: Arc<dyn Store>) {
    let alpha = Account {
        id: "acc-a".into(),
        name: "Alpha".into(),
        number_ranges: vec!["+1555*".into()],
    };
    s.upsert_account(&alpha).await.unwrap();
    assert_eq!(s.get_account("acc-a").await.unwrap(), Some(alpha));
    assert_eq!(s.get_account("acc-z").await.unwrap(), None);

    let trunk = Trunk {
        name: "local".into(),
        source_cidrs: vec!["192.0.2.0/24".into()],
        outbound_address: None,
        transport: "udp".into(),
        username: None,
        password: None,
        max_calls: None,
        transfer: None,
        account_id: Some("acc-a".into()),
        requests_per_sec: None,
        tls: TrunkTls::default(),
        media_security: MediaSecurity::default(),
        srtp_cleartext_keying: false,
    };
    s.upsert_trunk(&trunk).await.unwrap();
    assert_eq!(s.get_trunk("local").await.unwrap(), Some(trunk));
    assert_eq!(s.get_trunk("other").await.unwrap(), None);

    let number = |pattern: &str, account: &str| Number {
        pattern: pattern.into(),
        account_id: account.into(),
        route: RouteKind::Echo,
        target: None,
        dialect: None,
        params: None,
        trunk: None,
        max_calls: None,
        fallback: None,
        voice_webhook: None,
        sms_webhook: None,
        status_webhook: None,
        webhook_format: Default::default(),
        media_security: MediaSecurity::default(),
    };
    for (p, a) in [
        ("+15550002", "acc-a"),
        ("+4930*", "acc-b"),
        ("+1555000*", "acc-a"),
        ("+15550001", "acc-b"),
    ] {
        assert!(s.upsert_number(&number(p, a)).await.unwrap());
    }
    for account in ["acc-a", "acc-b", "acc-z"] {
        let mine: Vec<Number> = s
            .list_numbers()
            .await
            .unwrap()
            .into_iter()
            .filter(|n| n.account_id == account)
            .collect();
        assert_eq!(s.list_numbers_for(account).await.unwrap(), mine);
    }
    assert_eq!(
        s.get_number("acc-a", "+1555000*").await.unwrap(),
        Some(number("+1555000*", "acc-a"))
    );
    assert_eq!(s.get_number("acc-a", "+15550001").await.unwrap(), None);
    assert_eq!(s.get_number("acc-a", "+15559999").await.unwrap(), None);

    let block = |id: &str, account: &str, caller: &str| BlockedNumber {
        id: id.into(),
        account_id: account.into(),
        number_pattern: None,
        caller_pattern: caller.into(),
    };
    for (id, a, caller) in [
        ("BL3", "acc-a", "+1900*"),
        ("BL1", "acc-b", "+1900*"),
        ("BL2", "acc-a", "+15557770000"),
    ] {
        s.upsert_blocked(&block(id, a, caller)).await.unwrap();
    }
    assert_eq!(
        s.list_blocked_for("acc-a").await.unwrap(),
        vec![
            block("BL2", "acc-a", "+15557770000"),
            block("BL3", "acc-a", "+1900*")
        ]
    );
    assert!(s.list_blocked_for("acc-z").await.unwrap().is_empty());
    assert_eq!(
        s.get_blocked("acc-b", "BL1").await.unwrap(),
        Some(block("BL1", "acc-b", "+1900*"))
    );
    assert_eq!(s.get_blocked("acc-a", "BL1").await.unwrap(), None);

    let user = |name: &str, account: &str| SipUser {
        username: name.into(),
        account_id: account.into(),
        realm: "gw.example".into(),
        ha1_md5: "0".repeat(32),
        ha1_sha256: "1".repeat(64),
    };
    for (name, a) in [("carol", "acc-a"), ("bob", "acc-b"), ("alice", "acc-a")] {
        assert!(s.upsert_sip_user(&user(name, a)).await.unwrap());
    }
    assert_eq!(
        s.list_sip_users_for("acc-a").await.unwrap(),
        vec![user("alice", "acc-a"), user("carol", "acc-a")]
    );
    assert!(s.list_sip_users_for("acc-z").await.unwrap().is_empty());
    assert_eq!(
        s.get_sip_user("acc-b", "bob").await.unwrap(),
        Some(user("bob", "acc-b"))
    );
    assert_eq!(s.get_sip_user("acc-a", "bob").await.unwrap(), None);
}

async fn idempotency_keys_claim_replay_and_expire(s: Arc<dyn Store>) {
    use api::store::IdempotencyClaim::*;
    let t = 1_700_000_000_000;
    let day = 24 * 3600 * 1000;
    assert_eq!(
        s.claim_idempotency_key("a", "k", "f1", t, day)
            .await
            .unwrap(),
        Claimed
    );
    assert_eq!(
        s.claim_idempotency_key("a", "k", "f1", t, day)
            .await
            .unwrap(),
        InFlight
    );
    assert_eq!(
        s.claim_idempotency_key("a", "k", "f2", t, day)
            .await
            .unwrap(),
        Mismatch
    );
    assert_eq!(
        s.claim_idempotency_key("b", "k", "f1", t, day)
            .await
            .unwrap(),
        Claimed
    );
    s.finish_idempotency_key("a", "k", Some((201, r#"{"id":"CA1"}"#)))
        .await
        .unwrap();
    assert_eq!(
        s.claim_idempotency_key("a", "k", "f1", t + 1, day)
            .await
            .unwrap(),
        Done {
            status: 201,
            body: r#"{"id":"CA1"}"#.into()
        }
    );
    // Released: claimable again; expired: too.
    s.finish_idempotency_key("b", "k", None).await.unwrap();
    assert_eq!(
        s.claim_idempotency_key("b", "k", "f9", t, day)
            .await
            .unwrap(),
        Claimed
    );
    assert_eq!(
        s.claim_idempotency_key("a", "k", "f3", t + day + 1, day)
            .await
            .unwrap(),
        Claimed
    );
}

async fn registrations_expiry_and_delete(s: Arc<dyn Store>) {
    let now = 1_700_000_000_000;
    let reg = |user: &str, contact: &str, expires_at: i64, cseq: u32| Registration {
        username: user.into(),
        contact: contact.into(),
        expires_at,
        source: "203.0.113.5:5060".into(),
        transport: "udp".into(),
        call_id: format!("{user}-{contact}"),
        cseq,
    };
    let live = reg("alice", "sip:alice@203.0.113.5", now + 60_000, 1);
    let lapsed = reg("alice", "sip:alice@10.0.0.1", now - 1, 7);
    let at_now = reg("bob", "sip:bob@203.0.113.9", now, 3);
    let bob_live = reg("bob", "sip:bob@203.0.113.10", now + 1, u32::MAX);
    for r in [&live, &lapsed, &at_now, &bob_live] {
        s.upsert_registration(r).await.unwrap();
    }
    // A binding lapses at expires_at: only expires_at > now is listed.
    assert_eq!(
        s.list_registrations(now).await.unwrap(),
        vec![live.clone(), bob_live.clone()]
    );
    assert_eq!(s.list_registrations(now - 10).await.unwrap().len(), 4);

    // Refresh in place: the lapsed binding comes back with new values.
    let refreshed = Registration {
        expires_at: now + 3_600_000,
        source: "198.51.100.1:5070".into(),
        transport: "tcp".into(),
        call_id: "new-call-id".into(),
        cseq: 8,
        ..lapsed
    };
    s.upsert_registration(&refreshed).await.unwrap();
    assert_eq!(
        s.list_registrations(now).await.unwrap(),
        vec![refreshed.clone(), live.clone(), bob_live.clone()]
    );

    s.delete_registration("alice", "sip:alice@203.0.113.5")
        .await
        .unwrap();
    // Deleting what is not there is not an error.
    s.delete_registration("alice", "sip:nobody@nowhere")
        .await
        .unwrap();
    assert_eq!(
        s.list_registrations(now).await.unwrap(),
        vec![refreshed, bob_live]
    );
}

/// Batches are folded per call before they are written; whatever the cut
/// between batches and whatever is replayed (a commit whose outcome was
/// unknown), every row ends as if each event had been applied alone.
async fn cdr_batches_any_cut_any_replay(s: Arc<dyn Store>) {
    let t = 1_700_000_000_000;
    let mut events = Vec::new();
    for i in 0..6u64 {
        let c = call(100 + i, Some("acc-a"), Direction::Inbound, t + i as i64);
        let id = c.id.clone();
        events.push(CdrEvent::Started(c));
        if i % 2 == 0 {
            events.push(CdrEvent::Answered {
                id: id.clone(),
                at: t + 1_000 + i as i64,
                media_security: None,
            });
            events.push(CdrEvent::Answered {
                id: id.clone(),
                at: t + 9_999,
                media_security: None,
            });
        }
        if i != 5 {
            events.push(CdrEvent::Ended {
                id: id.clone(),
                at: t + 5_000 + i as i64,
                cause: format!("cause-{i}"),
                sip_status: if i % 2 == 0 { 200 } else { 486 },
                duration_ms: 4_000,
            });
            events.push(CdrEvent::Ended {
                id,
                at: t + 99_999,
                cause: "late-duplicate".into(),
                sip_status: 500,
                duration_ms: 1,
            });
        }
    }
    // Reference: one event per batch.
    let ids: Vec<String> = (0..6u64)
        .map(|i| call(100 + i, None, Direction::Inbound, t).id)
        .collect();
    for ev in &events {
        s.apply_cdr_batch(std::slice::from_ref(ev)).await.unwrap();
    }
    let mut reference = Vec::new();
    for id in &ids {
        reference.push(s.get_call(id).await.unwrap().unwrap());
    }
    // Every cut into two batches, each batch replayed together with the
    // next (at-least-once delivery), on fresh ids per cut.
    for cut in 1..events.len() {
        let suffix = format!("-cut{cut}");
        let renamed: Vec<CdrEvent> = events
            .iter()
            .map(|e| match e {
                CdrEvent::Started(c) => CdrEvent::Started(CallRecord {
                    id: format!("{}{suffix}", c.id),
                    ..c.clone()
                }),
                CdrEvent::Answered {
                    id,
                    at,
                    media_security,
                } => CdrEvent::Answered {
                    id: format!("{id}{suffix}"),
                    at: *at,
                    media_security: media_security.clone(),
                },
                CdrEvent::Ended {
                    id,
                    at,
                    cause,
                    sip_status,
                    duration_ms,
                } => CdrEvent::Ended {
                    id: format!("{id}{suffix}"),
                    at: *at,
                    cause: cause.clone(),
                    sip_status: *sip_status,
                    duration_ms: *duration_ms,
                },
                CdrEvent::Resumable { .. } | CdrEvent::NotResumable { .. } => {
                    unreachable!("the reference events are call records only")
                }
            })
            .collect();
        s.apply_cdr_batch(&renamed[..cut]).await.unwrap();
        s.apply_cdr_batch(&renamed).await.unwrap();
        s.apply_cdr_batch(&renamed[cut..]).await.unwrap();
        for (id, want) in ids.iter().zip(&reference) {
            let got = s.get_call(&format!("{id}{suffix}")).await.unwrap().unwrap();
            assert_eq!(
                CallRecord {
                    id: want.id.clone(),
                    ..got
                },
                *want,
                "cut {cut}"
            );
        }
    }
}

async fn cdr_batch_lifecycle_is_idempotent(s: Arc<dyn Store>) {
    let t = 1_700_000_000_000;
    let a = call(1, Some("acc-a"), Direction::Inbound, t);
    let b = CallRecord {
        trunk: None,
        account_id: None,
        media_mode: "none".into(),
        ..call(2, None, Direction::Outbound, t + 5)
    };
    let batch = vec![
        CdrEvent::Started(a.clone()),
        CdrEvent::Started(b.clone()),
        CdrEvent::Answered {
            id: a.id.clone(),
            at: t + 1_000,
            media_security: Some(LegsSecurity {
                caller: Some("srtp:AES_CM_128_HMAC_SHA1_80".into()),
                far: None,
            }),
        },
        CdrEvent::Ended {
            id: a.id.clone(),
            at: t + 61_000,
            cause: "caller_hangup".into(),
            sip_status: 200,
            duration_ms: 60_000,
        },
        CdrEvent::Ended {
            id: b.id.clone(),
            at: t + 2_000,
            cause: "rejected".into(),
            sip_status: 486,
            duration_ms: 0,
        },
    ];
    s.apply_cdr_batch(&batch).await.unwrap();

    let a_done = CallRecord {
        answer_at: Some(t + 1_000),
        media_security: Some(LegsSecurity {
            caller: Some("srtp:AES_CM_128_HMAC_SHA1_80".into()),
            far: None,
        }),
        end_at: Some(t + 61_000),
        end_cause: Some("caller_hangup".into()),
        sip_status: Some(200),
        duration_ms: Some(60_000),
        ..a.clone()
    };
    let b_done = CallRecord {
        end_at: Some(t + 2_000),
        end_cause: Some("rejected".into()),
        sip_status: Some(486),
        duration_ms: Some(0),
        ..b.clone()
    };
    assert_eq!(s.get_call(&a.id).await.unwrap(), Some(a_done.clone()));
    assert_eq!(s.get_call(&b.id).await.unwrap(), Some(b_done.clone()));
    assert_eq!(s.get_call(&call_id(99)).await.unwrap(), None);

    // The same batch again (a retry after an unknown commit outcome).
    let before = s.list_calls(&CallFilter::default()).await.unwrap();
    s.apply_cdr_batch(&batch).await.unwrap();
    assert_eq!(s.list_calls(&CallFilter::default()).await.unwrap(), before);

    // Later events never rewrite what the first ones recorded.
    s.apply_cdr_batch(&[
        CdrEvent::Started(CallRecord {
            from_number: "+19999999999".into(),
            ..a.clone()
        }),
        CdrEvent::Answered {
            id: a.id.clone(),
            at: t + 5_000,
            media_security: None,
        },
        CdrEvent::Ended {
            id: a.id.clone(),
            at: t + 99_000,
            cause: "normal".into(),
            sip_status: 503,
            duration_ms: 1,
        },
    ])
    .await
    .unwrap();
    assert_eq!(s.get_call(&a.id).await.unwrap(), Some(a_done));

    // Events of one call spread over several batches; an empty batch.
    s.apply_cdr_batch(&[]).await.unwrap();
    let c = call(3, Some("acc-a"), Direction::Inbound, t + 10);
    s.apply_cdr_batch(&[CdrEvent::Started(c.clone())])
        .await
        .unwrap();
    assert_eq!(s.get_call(&c.id).await.unwrap(), Some(c.clone()));
    s.apply_cdr_batch(&[CdrEvent::Answered {
        id: c.id.clone(),
        at: t + 20,
        media_security: Some(LegsSecurity {
            caller: Some("rtp".into()),
            far: Some("srtp:AEAD_AES_128_GCM".into()),
        }),
    }])
    .await
    .unwrap();
    s.apply_cdr_batch(&[CdrEvent::Ended {
        id: c.id.clone(),
        at: t + 30,
        cause: "normal".into(),
        sip_status: 200,
        duration_ms: 10,
    }])
    .await
    .unwrap();
    let c_row = s.get_call(&c.id).await.unwrap().unwrap();
    assert_eq!(
        (
            c_row.answer_at,
            c_row.end_at,
            c_row.duration_ms,
            c_row.sip_status
        ),
        (Some(t + 20), Some(t + 30), Some(10), Some(200))
    );
    assert_eq!(
        c_row.media_security,
        Some(LegsSecurity {
            caller: Some("rtp".into()),
            far: Some("srtp:AEAD_AES_128_GCM".into()),
        }),
        "the media security of an answer in a later batch"
    );

    // A Started that already carries final values is stored as given.
    let d = CallRecord {
        answer_at: Some(t + 1),
        end_at: Some(t + 2),
        end_cause: Some("normal".into()),
        sip_status: Some(u16::MAX),
        duration_ms: Some(1),
        ..call(4, None, Direction::Outbound, t)
    };
    s.apply_cdr_batch(&[CdrEvent::Started(d.clone())])
        .await
        .unwrap();
    assert_eq!(s.get_call(&d.id).await.unwrap(), Some(d));
}

/// A batch that fails part-way leaves nothing behind (one transaction).
async fn cdr_batch_is_atomic(s: Arc<dyn Store>, raw: Raw) {
    let t = 1_700_000_000_000;
    let a = call(10, None, Direction::Inbound, t);
    let mut b = call(11, None, Direction::Inbound, t);
    let mut c = call(12, None, Direction::Inbound, t);
    b.sip_call_id = "same".into();
    c.sip_call_id = "same".into();
    // Fault injection that works on both backends: a partial unique index
    // that makes the third insert of the batch fail.
    raw.exec(&format!(
        "CREATE UNIQUE INDEX calls_fault ON calls (sip_call_id) WHERE id = '{}' OR id = '{}'",
        b.id, c.id
    ))
    .await;
    let first = CdrEvent::Started(a.clone());
    let r = s
        .apply_cdr_batch(&[first.clone(), CdrEvent::Started(b), CdrEvent::Started(c)])
        .await;
    assert!(matches!(r, Err(StoreError::Db(_))), "{r:?}");
    assert_eq!(s.get_call(&a.id).await.unwrap(), None, "rolled back");
    assert!(
        s.list_calls(&CallFilter::default())
            .await
            .unwrap()
            .is_empty()
    );

    raw.exec("DROP INDEX calls_fault").await;
    s.apply_cdr_batch(&[first]).await.unwrap();
    assert_eq!(s.get_call(&a.id).await.unwrap(), Some(a));
}

/// Calls used by the listing tests: ties on invite_at (sorted by id then),
/// two accounts and one without, both directions, some ended.
fn listing_fixture(t: i64) -> Vec<CallRecord> {
    (0..25u64)
        .map(|i| {
            let account = match i % 3 {
                0 => Some("acc-a"),
                1 => Some("acc-b"),
                _ => None,
            };
            let dir = if i % 4 == 0 {
                Direction::Outbound
            } else {
                Direction::Inbound
            };
            let mut c = call(i, account, dir, t + (i / 3) as i64);
            c.from_number = format!("+1555000000{}", i % 5);
            c.to_number = format!("+1666000000{}", i % 2);
            if i % 3 == 1 {
                c.end_at = Some(t + 100);
                c.end_cause = Some("normal".into());
                c.sip_status = Some(200);
                c.duration_ms = Some(0);
            }
            c
        })
        .collect()
}

fn newest_first(mut v: Vec<CallRecord>) -> Vec<CallRecord> {
    v.sort_by(|a, b| (b.invite_at, &b.id).cmp(&(a.invite_at, &a.id)));
    v
}

async fn list_calls_filters_and_pages(s: Arc<dyn Store>) {
    let t = 1_700_000_000_000;
    let calls = listing_fixture(t);
    let events: Vec<_> = calls.iter().cloned().map(CdrEvent::Started).collect();
    s.apply_cdr_batch(&events).await.unwrap();

    let check = |f: CallFilter, keep: &dyn Fn(&CallRecord) -> bool| {
        let want = newest_first(calls.iter().filter(|c| keep(c)).cloned().collect());
        let s = s.clone();
        async move {
            let got = s.list_calls(&f).await.unwrap();
            assert!(!want.is_empty(), "fixture covers {f:?}");
            assert_eq!(got, want, "filter {f:?}");
        }
    };
    check(CallFilter::default(), &|_| true).await;
    check(
        CallFilter {
            account_id: Some("acc-a".into()),
            ..Default::default()
        },
        &|c| c.account_id.as_deref() == Some("acc-a"),
    )
    .await;
    check(
        CallFilter {
            direction: Some(Direction::Outbound),
            ..Default::default()
        },
        &|c| c.direction == Direction::Outbound,
    )
    .await;
    check(
        CallFilter {
            from_number: Some("+15550000003".into()),
            ..Default::default()
        },
        &|c| c.from_number == "+15550000003",
    )
    .await;
    check(
        CallFilter {
            to_number: Some("+16660000001".into()),
            ..Default::default()
        },
        &|c| c.to_number == "+16660000001",
    )
    .await;
    check(
        CallFilter {
            active: Some(true),
            ..Default::default()
        },
        &|c| c.end_at.is_none(),
    )
    .await;
    check(
        CallFilter {
            active: Some(false),
            ..Default::default()
        },
        &|c| c.end_at.is_some(),
    )
    .await;
    check(
        CallFilter {
            account_id: Some("acc-b".into()),
            direction: Some(Direction::Inbound),
            active: Some(false),
            to_number: Some("+16660000000".into()),
            ..Default::default()
        },
        &|c| {
            c.account_id.as_deref() == Some("acc-b")
                && c.direction == Direction::Inbound
                && c.end_at.is_some()
                && c.to_number == "+16660000000"
        },
    )
    .await;
    let none = s
        .list_calls(&CallFilter {
            account_id: Some("nobody".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(none.is_empty());

    // Cursor pagination, page size 4, through ties on invite_at.
    for filter in [
        CallFilter::default(),
        CallFilter {
            direction: Some(Direction::Inbound),
            ..Default::default()
        },
    ] {
        let want = s.list_calls(&filter).await.unwrap();
        let mut got = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = s
                .list_calls(&CallFilter {
                    before_id: cursor.clone(),
                    limit: 4,
                    ..filter.clone()
                })
                .await
                .unwrap();
            assert!(page.len() <= 4);
            let Some(last) = page.last() else { break };
            cursor = Some(last.id.clone());
            got.extend(page);
        }
        assert_eq!(got, want, "pages of {filter:?}");
    }
    // A cursor that names no call yields an empty page.
    let page = s
        .list_calls(&CallFilter {
            before_id: Some("CAnope".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(page.is_empty());
}

async fn list_calls_limits(s: Arc<dyn Store>) {
    let t = 1_700_000_000_000;
    let events: Vec<_> = (0..1005u64)
        .map(|i| CdrEvent::Started(call(i, Some("acc-a"), Direction::Inbound, t + i as i64)))
        .collect();
    s.apply_cdr_batch(&events).await.unwrap();
    let n = |limit| {
        let s = s.clone();
        async move {
            s.list_calls(&CallFilter {
                limit,
                ..Default::default()
            })
            .await
            .unwrap()
            .len()
        }
    };
    assert_eq!(n(0).await, DEFAULT_LIMIT as usize);
    assert_eq!(n(7).await, 7);
    assert_eq!(n(1000).await, 1000);
    assert_eq!(n(u32::MAX).await, MAX_LIMIT as usize);
    let first = s.list_calls(&CallFilter::default()).await.unwrap();
    assert_eq!(first[0].id, call_id(1004), "newest first");
}

async fn close_interrupted_calls_closes_open_rows(s: Arc<dyn Store>) {
    let t = 1_700_000_000_000;
    let now = t + 90_000;
    let ringing = call(1, None, Direction::Inbound, t);
    let answered = call(2, None, Direction::Inbound, t);
    let ended = call(3, None, Direction::Inbound, t);
    // Open, with a provisional status already recorded.
    let with_status = CallRecord {
        sip_status: Some(183),
        ..call(4, None, Direction::Outbound, t)
    };
    // Answered "after" now (clock skew): never a negative duration.
    let future = call(5, None, Direction::Inbound, t);
    s.apply_cdr_batch(&[
        CdrEvent::Started(ringing.clone()),
        CdrEvent::Started(answered.clone()),
        CdrEvent::Started(ended.clone()),
        CdrEvent::Started(with_status.clone()),
        CdrEvent::Started(future.clone()),
        CdrEvent::Answered {
            id: answered.id.clone(),
            at: t + 30_000,
            media_security: None,
        },
        CdrEvent::Answered {
            id: ended.id.clone(),
            at: t + 1_000,
            media_security: None,
        },
        CdrEvent::Ended {
            id: ended.id.clone(),
            at: t + 2_000,
            cause: "normal".into(),
            sip_status: 200,
            duration_ms: 1_000,
        },
        CdrEvent::Answered {
            id: future.id.clone(),
            at: now + 5,
            media_security: None,
        },
    ])
    .await
    .unwrap();
    let ended_before = s.get_call(&ended.id).await.unwrap();

    assert_eq!(s.close_interrupted_calls(now, "n1").await.unwrap(), 4);
    let get = |id: String| {
        let s = s.clone();
        async move { s.get_call(&id).await.unwrap().unwrap() }
    };
    let r = get(ringing.id.clone()).await;
    assert_eq!(
        (
            r.end_at,
            r.end_cause.as_deref(),
            r.sip_status,
            r.duration_ms
        ),
        (Some(now), Some("interrupted"), Some(500), Some(0))
    );
    let r = get(answered.id.clone()).await;
    assert_eq!(
        (
            r.end_at,
            r.end_cause.as_deref(),
            r.sip_status,
            r.duration_ms
        ),
        (Some(now), Some("interrupted"), Some(200), Some(60_000))
    );
    let r = get(with_status.id.clone()).await;
    assert_eq!((r.sip_status, r.duration_ms), (Some(183), Some(0)));
    let r = get(future.id.clone()).await;
    assert_eq!(r.duration_ms, Some(0));
    assert_eq!(s.get_call(&ended.id).await.unwrap(), ended_before);

    // Nothing left open.
    assert_eq!(s.close_interrupted_calls(now + 1, "n1").await.unwrap(), 0);
    let open = s
        .list_calls(&CallFilter {
            active: Some(true),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(open.is_empty());
}

async fn resumable_calls_stay_open_for_their_node(s: Arc<dyn Store>) {
    let t = 1_700_000_000_000;
    let [a, b, c, d] = [1, 2, 3, 4].map(|i| call(i, None, Direction::Inbound, t));
    let resumable = |id: &str, node: &str, snapshot: &str, at| CdrEvent::Resumable {
        id: id.into(),
        node: node.into(),
        snapshot: snapshot.into(),
        at,
    };
    s.apply_cdr_batch(&[
        CdrEvent::Started(a.clone()),
        CdrEvent::Started(b.clone()),
        CdrEvent::Started(c.clone()),
        CdrEvent::Started(d.clone()),
        resumable(&a.id, "n1", "a-old", t + 1),
        resumable(&b.id, "n2", "b", t + 2),
        // The last change of a batch wins.
        resumable(&a.id, "n1", "a-new", t + 3),
        resumable(&c.id, "n1", "c", t + 4),
        CdrEvent::NotResumable { id: c.id.clone() },
    ])
    .await
    .unwrap();
    // A later batch replaces a snapshot; a call that ended is not listed.
    s.apply_cdr_batch(&[
        resumable(&d.id, "n1", "d", t + 5),
        CdrEvent::Ended {
            id: d.id.clone(),
            at: t + 6,
            cause: "caller_hangup".into(),
            sip_status: 200,
            duration_ms: 0,
        },
    ])
    .await
    .unwrap();
    let listed = s.list_resumable_calls("n1").await.unwrap();
    assert_eq!(
        listed,
        vec![ResumableCall {
            id: a.id.clone(),
            snapshot: "a-new".into()
        }]
    );
    assert_eq!(s.list_resumable_calls("n2").await.unwrap().len(), 1);
    assert!(s.list_resumable_calls("n3").await.unwrap().is_empty());
    // Only c is closed: a and b are resumable (by n1 and n2), d ended.
    assert_eq!(s.close_interrupted_calls(t + 10, "n1").await.unwrap(), 1);
    let c_now = s.get_call(&c.id).await.unwrap().unwrap();
    assert_eq!(c_now.end_cause.as_deref(), Some("interrupted"));
    assert!(s.get_call(&a.id).await.unwrap().unwrap().end_at.is_none());
    // Once a is not resumable, the next start closes it.
    s.apply_cdr_batch(&[CdrEvent::NotResumable { id: a.id.clone() }])
        .await
        .unwrap();
    assert!(s.list_resumable_calls("n1").await.unwrap().is_empty());
    assert_eq!(s.close_interrupted_calls(t + 11, "n1").await.unwrap(), 1);
    assert_eq!(s.list_resumable_calls("n2").await.unwrap().len(), 1);
}

async fn close_interrupted_calls_leaves_other_nodes_calls_alone(s: Arc<dyn Store>) {
    let t = 1_700_000_000_000;
    let on = |n: u64, node: Option<&str>| CallRecord {
        node: node.map(str::to_string),
        ..call(n, None, Direction::Inbound, t)
    };
    let (mine, theirs, legacy) = (on(1, Some("n1")), on(2, Some("n2")), on(3, None));
    s.apply_cdr_batch(&[
        CdrEvent::Started(mine.clone()),
        CdrEvent::Started(theirs.clone()),
        CdrEvent::Started(legacy.clone()),
    ])
    .await
    .unwrap();
    assert_eq!(
        s.get_call(&mine.id).await.unwrap().unwrap().node.as_deref(),
        Some("n1")
    );
    // n1 starts: its own call and the row from before nodes are closed.
    assert_eq!(s.close_interrupted_calls(t + 1, "n1").await.unwrap(), 2);
    assert!(
        s.get_call(&theirs.id)
            .await
            .unwrap()
            .unwrap()
            .end_at
            .is_none()
    );
    assert!(
        s.get_call(&legacy.id)
            .await
            .unwrap()
            .unwrap()
            .end_at
            .is_some()
    );
    assert_eq!(s.close_interrupted_calls(t + 2, "n2").await.unwrap(), 1);
}

async fn messages_insert_and_list(s: Arc<dyn Store>) {
    let msg = |id: &str, account: &str, dir, at| MessageRecord {
        id: id.into(),
        account_id: account.into(),
        direction: dir,
        from_number: "+15550001111".into(),
        to_number: "+15550002222".into(),
        body: format!("hello ünïcode ✓ '{id}'"),
        status: "queued".into(),
        created_at: at,
    };
    let m1 = msg("SM1", "acc-a", Direction::Outbound, 100);
    let m2 = msg("SM2", "acc-a", Direction::Inbound, 300);
    let m3 = msg("SM3", "acc-a", Direction::Outbound, 200);
    let other = msg("SM4", "acc-b", Direction::Inbound, 400);
    for m in [&m1, &m2, &m3, &other] {
        s.insert_message(m).await.unwrap();
    }
    assert_eq!(
        s.list_messages("acc-a", 0).await.unwrap(),
        vec![m2.clone(), m3.clone(), m1.clone()]
    );
    assert_eq!(
        s.list_messages("acc-a", 2).await.unwrap(),
        vec![m2, m3.clone()]
    );
    assert_eq!(
        s.list_messages("acc-b", 10).await.unwrap(),
        vec![other.clone()]
    );
    assert_eq!(s.get_message("SM3").await.unwrap(), Some(m3));
    assert_eq!(s.get_message("SM4").await.unwrap(), Some(other));
    assert_eq!(s.get_message("SM9").await.unwrap(), None);

    // Recordings: stored once, listed per account newest first, deleted.
    let rec = |id: &str, account: &str, at| RecordingRecord {
        id: id.into(),
        account_id: account.into(),
        call_id: "CA1".into(),
        path: format!("/var/rec/{id}.wav"),
        duration_ms: 1500,
        bytes: 48_044,
        status: "completed".into(),
        error: None,
        created_at: at,
    };
    let (r1, r2) = (rec("RE1", "acc-a", 10), rec("RE2", "acc-a", 20));
    let failed = RecordingRecord {
        status: "failed".into(),
        error: Some("No space left on device".into()),
        ..rec("RE3", "acc-b", 30)
    };
    for r in [&r1, &r2, &failed, &r1] {
        s.insert_recording(r).await.unwrap();
    }
    assert_eq!(
        s.list_recordings("acc-a", 10).await.unwrap(),
        vec![r2.clone(), r1.clone()]
    );
    assert_eq!(s.get_recording("RE3").await.unwrap(), Some(failed));
    assert!(s.delete_recording("RE1").await.unwrap());
    assert!(!s.delete_recording("RE1").await.unwrap());
    assert_eq!(s.list_recordings("acc-a", 10).await.unwrap(), vec![r2]);
    assert!(s.list_messages("acc-c", 10).await.unwrap().is_empty());
    // Ids are unique.
    let dup = s.insert_message(&m1).await;
    assert!(matches!(dup, Err(StoreError::Db(_))), "{dup:?}");
}

fn assert_corrupt<T: std::fmt::Debug>(
    r: Result<T>,
    want_table: &str,
    want_column: &str,
    want_value: &str,
) {
    match r {
        Err(StoreError::Corrupt {
            table,
            column,
            value,
        }) => assert_eq!(
            (table, column, value.as_str()),
            (want_table, want_column, want_value)
        ),
        other => panic!("expected Corrupt({want_table}.{want_column}), got {other:?}"),
    }
}

async fn corrupt_rows_are_reported(s: Arc<dyn Store>, raw: Raw) {
    raw.exec("INSERT INTO numbers (pattern, account_id, route) VALUES ('+1', 'acc', 'teleport')")
        .await;
    assert_corrupt(s.list_numbers().await, "numbers", "route", "teleport");
    raw.exec("UPDATE numbers SET route = 'echo', max_calls = 4294967296")
        .await;
    assert_corrupt(s.list_numbers().await, "numbers", "max_calls", "4294967296");
    raw.exec("UPDATE numbers SET max_calls = -1").await;
    assert_corrupt(s.list_numbers().await, "numbers", "max_calls", "-1");

    raw.exec("INSERT INTO trunks (name, source_cidrs, transport) VALUES ('t', 'not json', 'udp')")
        .await;
    assert_corrupt(s.list_trunks().await, "trunks", "source_cidrs", "not json");

    raw.exec(
        "INSERT INTO registrations (username, contact, expires_at, source, transport, call_id, cseq) \
         VALUES ('u', 'c', 10, 's', 'udp', 'x', -5)",
    )
    .await;
    assert_corrupt(s.list_registrations(0).await, "registrations", "cseq", "-5");

    raw.exec(
        "INSERT INTO calls (id, direction, from_number, to_number, sip_call_id, invite_at, media_mode) \
         VALUES ('CAbad', 'sideways', '+1', '+2', 'x', 1, 'echo')",
    )
    .await;
    assert_corrupt(s.get_call("CAbad").await, "calls", "direction", "sideways");
    assert_corrupt(
        s.list_calls(&CallFilter::default()).await,
        "calls",
        "direction",
        "sideways",
    );
    raw.exec("UPDATE calls SET direction = 'inbound', sip_status = 70000 WHERE id = 'CAbad'")
        .await;
    assert_corrupt(s.get_call("CAbad").await, "calls", "sip_status", "70000");

    raw.exec(
        "INSERT INTO messages (id, account_id, direction, from_number, to_number, body, status, created_at) \
         VALUES ('SMbad', 'acc', 'up', '+1', '+2', 'b', 'sent', 1)",
    )
    .await;
    assert_corrupt(
        s.list_messages("acc", 0).await,
        "messages",
        "direction",
        "up",
    );
}

// ------------------------------------------------------------------ backends

/// A fresh SQLite store in a temporary directory (kept alive by the guard);
/// the file lives in a subdirectory that `open` has to create.
async fn sqlite_store() -> (Arc<dyn Store>, Raw, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/nested/dir/gateway.db", dir.path().display());
    let store = SqliteStore::open(&url).await.unwrap();
    let raw = Raw::Sqlite(store.pool().clone());
    (Arc::new(store), raw, dir)
}

/// Generates one `#[tokio::test]` per suite function and backend.
/// Two accounts write the same number and SIP user at once, many times:
/// the first write decides the owner, and no later write moves the rows.
async fn concurrent_upserts_never_move_a_row(s: Arc<dyn Store>) {
    let number = |account: &str, i: usize| Number {
        pattern: "+15557770000".into(),
        account_id: account.into(),
        route: RouteKind::Echo,
        target: None,
        dialect: None,
        params: None,
        trunk: None,
        max_calls: Some(1 + i as u32),
        fallback: None,
        voice_webhook: None,
        sms_webhook: None,
        status_webhook: None,
        webhook_format: Default::default(),
        media_security: MediaSecurity::default(),
    };
    let user = |account: &str| SipUser {
        username: "shared".into(),
        account_id: account.into(),
        realm: "gw".into(),
        ha1_md5: "0".repeat(32),
        ha1_sha256: "1".repeat(64),
    };
    let mut tasks = Vec::new();
    for i in 0..40 {
        let s = s.clone();
        let account = if i % 2 == 0 { "acc-a" } else { "acc-b" };
        tasks.push(tokio::spawn(async move {
            let n = s.upsert_number(&number(account, i)).await.unwrap();
            let u = s.upsert_sip_user(&user(account)).await.unwrap();
            (account, n, u)
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    let numbers = s.list_numbers().await.unwrap();
    assert_eq!(numbers.len(), 1);
    let owner = numbers[0].account_id.clone();
    let users = s.list_sip_users().await.unwrap();
    assert_eq!(users.len(), 1);
    let user_owner = users[0].account_id.clone();
    for (account, wrote_number, wrote_user) in results {
        assert_eq!(wrote_number, account == owner, "{account} number");
        assert_eq!(wrote_user, account == user_owner, "{account} user");
    }
}

macro_rules! suite {
    (store: [$($name:ident),* $(,)?], raw: [$($raw_name:ident),* $(,)?] $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let (store, _raw, _dir) = super::sqlite_store().await;
                    super::$name(store).await;
                }
            )*
            $(
                #[tokio::test]
                async fn $raw_name() {
                    let (store, raw, _dir) = super::sqlite_store().await;
                    super::$raw_name(store, raw).await;
                }
            )*
        }

        mod postgres {
            use super::*;

            /// A store on a fresh schema, opened through its URL (so
            /// `api::store::open` is what is tested), or `None` when the
            /// PostgreSQL tests are skipped.
            async fn pg_store() -> Option<(Arc<dyn Store>, common::PgSchema)> {
                let url = common::pg_url()?;
                let schema = common::PgSchema::create(&url).await;
                let store = api::store::open(&schema.url).await.unwrap();
                assert_eq!(store.backend(), "postgres");
                Some((store, schema))
            }

            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some((store, schema)) = pg_store().await else { return };
                    super::$name(store).await;
                    schema.drop().await;
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $raw_name() {
                    let Some((store, schema)) = pg_store().await else { return };
                    super::$raw_name(store, Raw::Pg(schema.raw.clone())).await;
                    schema.drop().await;
                }
            )*
        }
    };
}

suite! {
    store: [
        accounts_roundtrip,
        trunks_roundtrip,
        numbers_roundtrip,
        blocked_roundtrip,
        denied_sources_roundtrip,
        nodes_heartbeat_and_drain_requests,
        a_lost_nodes_calls_are_closed_unless_resumable,
        call_limit_reservations_hold_and_release,
        sip_users_roundtrip,
        lookups_by_key_and_account,
        concurrent_upserts_never_move_a_row,
        idempotency_keys_claim_replay_and_expire,
        registrations_expiry_and_delete,
        cdr_batch_lifecycle_is_idempotent,
        cdr_batches_any_cut_any_replay,
        list_calls_filters_and_pages,
        list_calls_limits,
        close_interrupted_calls_closes_open_rows,
        resumable_calls_stay_open_for_their_node,
        close_interrupted_calls_leaves_other_nodes_calls_alone,
        messages_insert_and_list,
    ],
    raw: [
        cdr_batch_is_atomic,
        corrupt_rows_are_reported,
    ],
}

// ------------------------------------------------------------------ SQLite only

#[tokio::test]
async fn sqlite_reopen_keeps_data_and_migrations_are_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    for url in [
        format!("sqlite://{}/a/b/gw.db", dir.path().display()),
        format!("sqlite:{}/c/gw.db", dir.path().display()),
    ] {
        let s = api::store::open(&url).await.unwrap();
        assert_eq!(s.backend(), "sqlite");
        s.upsert_account(&Account {
            id: "x".into(),
            name: "X".into(),
            number_ranges: vec![],
        })
        .await
        .unwrap();
        drop(s);
        let s = api::store::open(&url).await.unwrap();
        assert_eq!(s.list_accounts().await.unwrap().len(), 1, "{url}");
    }
}

#[tokio::test]
async fn sqlite_file_uses_wal() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&format!("sqlite://{}/gw.db", dir.path().display()))
        .await
        .unwrap();
    let (mode,): (String,) = sqlx::query_as("PRAGMA journal_mode")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    let (sync,): (i64,) = sqlx::query_as("PRAGMA synchronous")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(sync, 1, "NORMAL");
}

#[tokio::test]
async fn sqlite_in_memory_store_works() {
    let s = api::store::open("sqlite::memory:").await.unwrap();
    accounts_roundtrip(s.clone()).await;
    // The data outlives idle time on its single connection.
    assert_eq!(s.list_accounts().await.unwrap().len(), 2);
}

#[tokio::test]
async fn unsupported_urls_are_refused() {
    for url in ["mysql://x", "", "sqlite", "http://x"] {
        let r = api::store::open(url).await;
        assert!(
            matches!(r, Err(StoreError::UnsupportedUrl(_))),
            "{url}: {:?}",
            r.err()
        );
    }
    let r = PgStore::open("postgres://127.0.0.1:1/none").await;
    assert!(matches!(r, Err(StoreError::Db(_))));
}

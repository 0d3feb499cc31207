//! Process lifecycle with real calls: a crash leaves no call open in the
//! records (closed as `interrupted` at the next start), SIGTERM drains
//! (new calls refused with 503, calls in progress finish, `/readyz` turns
//! 503 while `/healthz` stays 200), and `--check-config` validates files,
//! `${NAME}` secrets from the environment included.

mod common;

use common::{Caller, Daemon, recv_status};
use std::process::Command;
use std::time::Duration;

fn call_row(db: &std::path::Path, sip_call_id: &str) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg("import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); print(c.execute('select end_cause, sip_status, answer_at is not null, end_at is not null from calls where sip_call_id=?', (sys.argv[2],)).fetchone())")
        .arg(db)
        .arg(sip_call_id)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn crash_leaves_no_open_call_record() {
    let mut d = Daemon::start("");
    let mut caller = Caller::new(d.sip_addr(), "crash-1@test");
    caller.invite(40000);
    // Let the write-behind queue flush the Started/Answered events.
    std::thread::sleep(Duration::from_millis(300));
    d.crash();
    assert_eq!(
        call_row(&d.db_path(), "crash-1@test"),
        "(None, None, 1, 0)",
        "open row before restart"
    );
    d.restart();
    assert_eq!(
        call_row(&d.db_path(), "crash-1@test"),
        "('interrupted', 200, 1, 1)"
    );
}

#[test]
fn sigterm_drains_calls_in_progress() {
    let mut d = Daemon::start("");
    let mut caller = Caller::new(d.sip_addr(), "drain-1@test");
    caller.invite(40002);
    assert_eq!(d.http_get("/readyz"), (200, "ready\n".to_string()));
    assert_eq!(d.metric("gateway_draining"), 0.0);
    d.sigterm();
    std::thread::sleep(Duration::from_millis(200));
    // New calls are refused while draining.
    let late = Caller::new(d.sip_addr(), "drain-2@test");
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40004 RTP/AVP 0\r\n";
    late.sip
        .send_to(
            late.request("INVITE", 1, "late", sdp).as_bytes(),
            d.sip_addr(),
        )
        .unwrap();
    let refused = recv_status(&late.sip, "drain-2@test", 503);
    assert!(refused.contains("Retry-After:"), "{refused}");
    // Load balancers stop sending calls; the process is alive.
    assert_eq!(d.http_get("/readyz"), (503, "draining\n".to_string()));
    assert_eq!(d.http_get("/healthz"), (200, "ok\n".to_string()));
    assert_eq!(d.metric("gateway_draining"), 1.0);
    // The call in progress still works and its end lets the process exit.
    assert!(
        d.wait_exit(Duration::from_millis(300)).is_none(),
        "still serving the call"
    );
    caller.bye();
    let st = d
        .wait_exit(Duration::from_secs(10))
        .expect("exits once the last call ended");
    assert!(st.success(), "{st:?}");
    assert_eq!(
        call_row(&d.db_path(), "drain-1@test"),
        "('caller_hangup', 200, 1, 1)"
    );
    // Refused before any call state exists: no record.
    assert_eq!(call_row(&d.db_path(), "drain-2@test"), "None");
}

#[test]
fn check_config_accepts_the_example_and_names_problems() {
    let bin = env!("CARGO_BIN_EXE_sip-daemon");
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/examples/loopback.toml"
    );
    let ok = Command::new(bin)
        .args(["--check-config", example])
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains(": ok ("));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[accounts]]\nid = \"a\"\n[[numbers]]\npattern = \"12ab\"\naccount = \"nobody\"\nroute = \"teleport\"\n\
         [[numbers]]\npattern = \"+15550000009\"\naccount = \"a\"\nroute = \"forward\"\ntarget = \"not a uri\"\ntrunk = \"nope\"\nfallback = \"nor this\"\n",
    )
    .unwrap();
    let out = Command::new(bin)
        .args(["--check-config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("\"12ab\": not an E.164 number"), "{err}");
    assert!(err.contains("unknown account \"nobody\""), "{err}");
    assert!(
        err.contains("route must be echo, stream or forward"),
        "{err}"
    );
    assert!(err.contains("forward target must be a sip: URI"), "{err}");
    assert!(err.contains("unknown trunk \"nope\""), "{err}");
    assert!(err.contains("fallback must be a sip: URI"), "{err}");

    std::fs::write(
        &bad,
        "[sip]\nlisten = [\"udp:127.0.0.1:5060\"]\ntypo_key = 1\n",
    )
    .unwrap();
    let out = Command::new(bin)
        .args(["--check-config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("typo_key"));

    // Secrets from the environment: an unset one names its key, never a
    // value; set, the file is accepted with the value in place.
    let with_secrets = "[sip]\nadvertised_ip = \"${GW_TEST_NODE_IP}\"\n\
         [api]\nlisten = \"127.0.0.1:0\"\njwt_secret = \"${GW_TEST_JWT}\"\n\
         [[accounts]]\nid = \"a\"\n\
         [[trunks]]\nname = \"carrier\"\nsource_cidrs = [\"192.0.2.0/24\"]\n\
         username = \"gw\"\npassword = \"${GW_TEST_TRUNK_PASSWORD}\"\n";
    std::fs::write(&bad, with_secrets).unwrap();
    let out = Command::new(bin)
        .args(["--check-config"])
        .arg(&bad)
        .env("GW_TEST_JWT", "from-a-kubernetes-secret")
        .env("GW_TEST_NODE_IP", "198.18.0.7")
        .env_remove("GW_TEST_TRUNK_PASSWORD")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("trunks[0].password: environment variable GW_TEST_TRUNK_PASSWORD is not set"),
        "{err}"
    );
    assert!(!err.contains("from-a-kubernetes-secret"), "{err}");
    let out = Command::new(bin)
        .args(["--check-config"])
        .arg(&bad)
        .env("GW_TEST_JWT", "from-a-kubernetes-secret")
        .env("GW_TEST_NODE_IP", "198.18.0.7")
        .env("GW_TEST_TRUNK_PASSWORD", "pa$$word")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

//! SIPVicious (PyPI `sipvicious`, installed by scripts/setup.sh test), the
//! tools attackers point at public SIP servers, against the daemon across
//! real routing: the daemon in a gateway network namespace, the tools in
//! the caller namespace (198.18.0.2), which is no trunk; the carrier trunk
//! is the far network. `svmap` must see the server, `svwar` must find no
//! extension (a SIP user exists), and `svcrack` must be locked out before
//! it can try 100 passwords (the right one is the 60th of its list).
//!
//! Needs root and iproute2: without them the test fails.

mod common;

use common::{Daemon, Opts};
use media_userspace::testnet::{GW_C, Topology};
use std::path::PathBuf;

const PASSWORD: &str = "hunter2-sunrise";

fn tool(name: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/sipvicious-venv/bin")
        .join(name);
    assert!(
        p.exists(),
        "{} is missing: run scripts/setup.sh test (it installs sipvicious 0.3.8)",
        p.display()
    );
    p
}

/// Runs a SIPVicious tool in the caller namespace, bounded in time, in a
/// scratch directory (the tools write session files); its whole output.
fn run(t: &Topology, dir: &std::path::Path, secs: u32, name: &str, args: &[&str]) -> String {
    let out = t
        .exec(0)
        .arg("timeout")
        .arg(secs.to_string())
        .arg(tool(name))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run sipvicious");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn sipvicious_sees_the_server_finds_no_extension_and_cannot_crack_a_password() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "network namespaces need root"
    );
    let t = Topology::new("v");
    let d = Daemon::start_opts(Opts {
        netns: Some(&t.ns[1]),
        ip: Some(GW_C),
        listen: Some(r#"["udp:{ip}:{port}"]"#),
        local_trunk: Some(r#"source_cidrs = ["198.18.1.0/24"]"#),
        // No rate limit: what stops the tools here is the registrar.
        // svcrack answers MD5 only (it crashes on a SHA-256 challenge).
        sip_extra: "source_requests_per_sec = 0\nauth_max_failures = 10\ndigest_algorithms = [\"MD5\"]",
        extra: &format!(
            r#"
[[sip_users]]
username = "150"
account = "acct"
password = "{PASSWORD}"
"#
        ),
        ..Opts::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let port = d.sip_port.to_string();

    // svmap: the server is there, and says what it is.
    let map = run(&t, dir.path(), 60, "sipvicious_svmap", &["-p", &port, GW_C]);
    assert!(map.contains(&format!("{GW_C}:{port}")), "{map}");
    assert!(map.contains("voice-gateway"), "{map}");

    // svwar: whatever the method, extension 150 answers like any other.
    for method in ["REGISTER", "INVITE", "OPTIONS"] {
        let war = run(
            &t,
            dir.path(),
            60,
            "sipvicious_svwar",
            &["-p", &port, "-e100-200", "-m", method, GW_C],
        );
        eprintln!("svwar -m {method}:\n{war}");
        assert!(
            !war.contains("| 150"),
            "svwar -m {method} found 150:\n{war}"
        );
    }

    // svcrack: the right password is the 60th it would try. Unhindered it
    // tries all 200 in about a second; it gets 15.
    let dict = dir.path().join("passwords.txt");
    let mut words: Vec<String> = (0..200).map(|i| format!("guess-{i:03}")).collect();
    words[59] = PASSWORD.into();
    std::fs::write(&dict, words.join("\n") + "\n").unwrap();
    let crack = run(
        &t,
        dir.path(),
        15,
        "sipvicious_svcrack",
        &["-p", &port, "-u", "150", "-d", dict.to_str().unwrap(), GW_C],
    );
    eprintln!("svcrack:\n{crack}");
    assert!(
        !crack.contains(PASSWORD),
        "svcrack found the password:\n{crack}"
    );
    let failures = d.metric("gateway_sip_rejections_total{reason=\"auth_failure\"}");
    let lockouts = d.metric("gateway_sip_rejections_total{reason=\"auth_lockout_source\"}");
    let refused = d.metric("gateway_sip_rejections_total{reason=\"auth_locked\"}");
    eprintln!(
        "svcrack: {failures} wrong passwords checked, {lockouts} lockout, {refused} refused locked"
    );
    assert_eq!(failures, 10.0, "locked out at the 10th wrong password");
    assert_eq!(lockouts, 1.0);
    // It kept asking (it wanted well over 100 tries): each got a stateless
    // 403, and not one more password was checked.
    assert!(failures + refused >= 100.0, "{refused} refused");
    // (Non-INVITE transactions live 32 s after their answer: the refusals
    // would hold thousands.)
    let txns = d.metric("gateway_sip_transactions_active");
    assert!(txns < 100.0, "the refusals hold no transaction: {txns}");
}

//! Schemathesis (PyPI) against the daemon's served OpenAPI document: every
//! operation fuzzed with schema-valid and schema-violating input, then
//! stateful sequences (create → read → delete). It checks that nothing
//! answers 5xx, that every status and body matches the document, that
//! invalid input is refused and that auth is not ignored.
//!
//! `positive_data_acceptance` is left out on purpose: the API refuses
//! schema-valid values that are semantically wrong (a CIDR that does not
//! parse, a trunk that does not exist, a SIP URI that does not parse), and
//! says so with 422 naming the field, which that check counts as a failure.

mod common;

use common::{Caller, Daemon, Opts};
use std::path::PathBuf;
use std::process::Command;

#[test]
fn schemathesis_finds_no_failure_in_the_served_openapi_document() {
    let st = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/schemathesis-venv/bin/st");
    assert!(
        st.exists(),
        "{} is missing: run scripts/setup.sh test (it installs schemathesis 4.32.5)",
        st.display()
    );
    let d = Daemon::start_opts(Opts {
        api_extra: "account_rate = 0.0\nip_rate = 0.0",
        ..Opts::default()
    });
    // One call record, so the call endpoints have something to find.
    let mut c = Caller::new(d.sip_addr(), "schemathesis@test");
    c.invite(42_000);
    c.bye();
    let token = d.token(Some("acct"), true);
    let seed = std::env::var("GATEWAY_SCHEMATHESIS_SEED").unwrap_or_else(|_| "1".into());
    // Bounded: `timeout` ends a run that hangs.
    let out = Command::new("timeout")
        .arg("300")
        .arg(&st)
        .args([
            "run",
            &format!("http://127.0.0.1:{}/v1/openapi.json", d.metrics_port),
            "--header",
            &format!("Authorization: Bearer {token}"),
            "--checks",
            "all",
            // Draining is what the drain operation is for: afterwards the
            // node answers new calls 503 by design, which the fuzzer would
            // take for server errors. It is tested in tests/multi_node.rs.
            "--exclude-path",
            "/v1/nodes/{id}/drain",
            "--exclude-checks",
            "positive_data_acceptance",
            "--max-examples",
            "40",
            // One worker: the tool's generator is not thread-safe (it
            // raised an internal error with two).
            "--workers",
            "1",
            "--seed",
            &seed,
            "--request-timeout",
            "10",
        ])
        .env("NO_COLOR", "1")
        .output()
        .expect("run schemathesis");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "schemathesis failed (seed {seed}):\n{text}"
    );
    // It really ran: every operation of the document was tested.
    let doc = d.api("GET", "/v1/openapi.json", None, None).1;
    let operations: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|p| p.as_object().unwrap().len())
        .sum();
    assert!(operations >= 24, "{operations} operations");
    assert!(doc["paths"]["/v1/nodes/{id}/drain"]["post"].is_object());
    let tested = operations - 1; // all but the drain, excluded above
    assert!(
        text.contains(&format!("Tested: {tested}")),
        "not every one of {tested} operations was tested:\n{text}"
    );
    assert!(
        !d.logs().contains("panicked"),
        "the daemon panicked:\n{}",
        d.logs()
    );
}

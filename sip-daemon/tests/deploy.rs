//! The deployment files (`deploy/k8s`, `deploy/systemd`): the Kubernetes
//! base and both overlays render, lint and validate against a pinned
//! Kubernetes schema (`deploy/k8s/check.sh`: kubectl kustomize, yamllint,
//! kubernetes-validate, the ServiceMonitor CRD schema), and a broken
//! manifest is caught; the configuration the manifests ship is one the
//! daemon accepts once its Secrets are in the environment; the systemd unit
//! passes `systemd-analyze verify`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn venv() -> PathBuf {
    root().join("target/k8s-venv")
}

fn check(k8s_dir: &Path) -> std::process::Output {
    Command::new("bash")
        .arg(k8s_dir.join("check.sh"))
        .env("K8S_VENV", venv())
        .output()
        .expect("bash")
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn the_kubernetes_manifests_render_lint_and_validate() {
    let out = check(&root().join("deploy/k8s"));
    assert!(out.status.success(), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("rendered hostnetwork-daemonset"), "{t}");
    assert!(t.contains("rendered loadbalancer-deployment"), "{t}");
    assert!(t.contains("check.sh: all checks passed"), "{t}");
}

/// The check is not vacuous: a field Kubernetes does not know, and a grace
/// period shorter than the drain, each fail it.
#[test]
fn a_broken_manifest_fails_the_check() {
    let daemonset = "overlays/hostnetwork-daemonset/daemonset.yaml";
    for (from, to, why, named) in [
        (
            "      hostNetwork: true",
            "      hostNetwork: true\n      hostNetwrok: true",
            "an unknown field",
            "hostNetwrok",
        ),
        (
            "terminationGracePeriodSeconds: 330",
            "terminationGracePeriodSeconds: 30",
            "a grace period shorter than the drain",
            "terminationGracePeriodSeconds",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("k8s");
        let cp = Command::new("cp")
            .arg("-r")
            .arg(root().join("deploy/k8s"))
            .arg(&copy)
            .status()
            .unwrap();
        assert!(cp.success());
        let file = copy.join(daemonset);
        let yaml = std::fs::read_to_string(&file).unwrap();
        assert!(yaml.contains(from), "{daemonset} lacks {from:?}");
        std::fs::write(&file, yaml.replace(from, to)).unwrap();
        let out = check(&copy);
        assert!(
            !out.status.success(),
            "{why} passed the check:\n{}",
            text(&out)
        );
        assert!(
            text(&out).contains(named),
            "{why}: the failure does not name {named}:\n{}",
            text(&out)
        );
    }
}

/// The manifests' gateway.toml files, with their Secrets and downward-API
/// values in the environment, pass the daemon's own check; without one,
/// the check names the key.
#[test]
fn the_shipped_configuration_is_accepted_with_its_secrets() {
    let bin = env!("CARGO_BIN_EXE_sip-daemon");
    let env = [
        ("DATABASE_URL", "postgres://gw:secret@127.0.0.1:5432/gw"),
        ("SIP_AUTH_SECRET", "a"),
        ("API_JWT_SECRET", "b"),
        ("WEBHOOKS_SECRET", "c"),
        ("METRICS_TOKEN", "d"),
        ("GATEWAY_ADVERTISED_IP", "198.18.0.1"),
        ("GATEWAY_NODE_ID", "media-node-1"),
        ("GATEWAY_POD_IP", "198.18.0.2"),
    ];
    for file in [
        "deploy/k8s/base/gateway.toml",
        "deploy/k8s/overlays/loadbalancer-deployment/gateway.toml",
    ] {
        let out = Command::new(bin)
            .arg("--check-config")
            .arg(root().join(file))
            .envs(env)
            .output()
            .unwrap();
        assert!(out.status.success(), "{file}: {}", text(&out));
        assert!(!text(&out).contains("secret@"), "the password is shown");
        let out = Command::new(bin)
            .arg("--check-config")
            .arg(root().join(file))
            .envs(env.iter().filter(|(k, _)| *k != "API_JWT_SECRET").copied())
            .env_remove("API_JWT_SECRET")
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(
            text(&out).contains("api.jwt_secret: environment variable API_JWT_SECRET is not set"),
            "{}",
            text(&out)
        );
    }
}

#[test]
fn the_systemd_unit_verifies() {
    let unit =
        std::fs::read_to_string(root().join("deploy/systemd/voice-gateway.service")).unwrap();
    for needed in [
        "ExecStart=/usr/local/bin/sip-daemon --config /etc/voice-gateway/gateway.toml",
        "AmbientCapabilities=CAP_BPF CAP_NET_ADMIN CAP_PERFMON",
        "EnvironmentFile=",
        "Restart=always",
    ] {
        assert!(unit.contains(needed), "the unit lacks {needed:?}");
    }
    // Verified with ExecStart on the binary under test (systemd-analyze
    // checks that the executable exists).
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("voice-gateway.service");
    std::fs::write(
        &copy,
        unit.replace(
            "/usr/local/bin/sip-daemon",
            env!("CARGO_BIN_EXE_sip-daemon"),
        ),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&copy)
        .output()
        .expect("systemd-analyze (Debian systemd)");
    assert!(
        out.status.success() && text(&out).trim().is_empty(),
        "{}",
        text(&out)
    );
}

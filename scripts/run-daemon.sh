#!/usr/bin/env bash
# Runs the daemon on the loopback example (SIP 127.0.0.1:5060 UDP+TCP,
# metrics on 127.0.0.1:8080, SQLite under ./data). Installs what it needs
# first (idempotent). Extra arguments go to sip-daemon.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh daemon
echo "run-daemon: building sip-daemon (release)" >&2
cargo build --release -p sip-daemon --quiet
mkdir -p data
exec target/release/sip-daemon --config "${GATEWAY_CONFIG:-deploy/examples/loopback.toml}" "$@"

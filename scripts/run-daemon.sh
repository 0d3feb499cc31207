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
# The TLS example's listener presents ./tls/{cert,key}.pem: a self-signed
# pair for 127.0.0.1 and localhost when there is none yet.
if grep -q '^cert_file = "./tls/cert.pem"' "${GATEWAY_CONFIG:-deploy/examples/loopback.toml}" \
  && [ ! -e tls/cert.pem ]; then
  mkdir -p tls
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 \
    -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout tls/key.pem -out tls/cert.pem 2>/dev/null
  chmod 600 tls/key.pem
  echo "run-daemon: made a self-signed TLS pair in ./tls" >&2
fi
exec target/release/sip-daemon --config "${GATEWAY_CONFIG:-deploy/examples/loopback.toml}" "$@"

#!/usr/bin/env bash
# Builds every cargo-fuzz target (SIP message, SIP stream framer, SDP,
# AI stream frames, stream media leg, call flows through the core, the
# relay with its latch, the registrar with real digests, TCP bytes into
# the core).
# With a number argument, also runs each target that many seconds:
#   scripts/fuzz-build.sh 60
set -euo pipefail
cd "$(dirname "$0")/../sip-daemon"
NIGHTLY="${GATEWAY_FUZZ_NIGHTLY:-nightly-2026-05-19}"
# No target reaches the XDP loader: skip building the BPF object (a second
# copy of that build under the fuzz target dir cost CI its last GB of disk).
unset GATEWAY_REQUIRE_XDP
export AYA_BUILD_SKIP=1
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --quiet
cargo +"$NIGHTLY" fuzz build --dev
if [ -n "${1:-}" ]; then
  for t in $(cargo +"$NIGHTLY" fuzz list); do
    cargo +"$NIGHTLY" fuzz run --dev "$t" -- -max_total_time="$1" -rss_limit_mb=1024
  done
fi

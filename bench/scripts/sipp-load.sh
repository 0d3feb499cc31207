#!/usr/bin/env bash
# SIPp's built-in `uac` scenario against the release daemon on the echo
# route, over UDP then TCP: offered calls, rate, successes, failures, and
# the check that every call left a complete CDR row.
#
#   bench/scripts/sipp-load.sh [CALLS] [RATE]      (default 20000 1000)
set -euo pipefail
cd "$(dirname "$0")/../.."
export GATEWAY_SIPP_CALLS="${1:-20000}" GATEWAY_SIPP_RATE="${2:-1000}"
cargo test --release -q -p sip-daemon --test sipp_uac -- --test-threads=1 --nocapture 2>&1 \
  | grep -oE "sipp uac over.*|test result.*"

#!/usr/bin/env bash
# SRTP, measured: the crate choice (webrtc-srtp against rtc-srtp and our
# session over it, per packet), then SRTP relayed to plain RTP by our
# userspace relay and by rtpengine 10.5 keyed by SDES, side by side with
# our plain relay, at rising rates (bench/src/bin/relay-bench.rs explains
# the topology and the CPU figures). Needs root and `scripts/setup.sh test`.
#   bench/scripts/srtp.sh            # FLOWS=100 SECS=5 by default
set -euo pipefail
cd "$(dirname "$0")/../.."
FLOWS="${FLOWS:-100}"
SECS="${SECS:-5}"
cargo build --release -q -p bench --bin relay-bench --bin srtp-crates

echo "## SRTP crates: protect and unprotect per packet"
target/release/srtp-crates

echo "## SRTP to RTP: our relay and rtpengine, one core each"
for r in 50000 75000 90000 100000 150000 175000 200000; do
  target/release/relay-bench --flows "$FLOWS" --rate "$r" --secs "$SECS" \
    --modes userspace,userspace-srtp,rtpengine-srtp
done

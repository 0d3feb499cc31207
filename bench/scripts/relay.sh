#!/usr/bin/env bash
# Relayed RTP side by side in one topology and with one generator: our XDP
# fast path, our userspace relay, rtpengine 10.5 in userspace, and the
# drop-at-relay ceiling (bench/src/bin/relay-bench.rs explains the method).
# Needs root and `scripts/setup.sh test` (bpf toolchain, rtpengine-daemon).
#   bench/scripts/relay.sh            # FLOWS=100 SECS=5 by default
set -euo pipefail
cd "$(dirname "$0")/../.."
FLOWS="${FLOWS:-100}"
SECS="${SECS:-5}"
cargo build --release -q -p bench --bin relay-bench
B=target/release/relay-bench

echo "## CPU per relayed packet at 100,000 packets/s, $FLOWS calls"
$B --flows "$FLOWS" --rate 100000 --secs "$SECS"

echo "## throughput: offered as fast as the generator can"
$B --flows "$FLOWS" --rate max --secs "$SECS" --modes ceiling,xdp

echo "## userspace relays: loss as the offered rate grows (one core each)"
for r in 100000 110000 125000 150000 175000 200000 210000 225000 250000; do
  $B --flows "$FLOWS" --rate "$r" --secs "$SECS" --modes userspace,rtpengine
done

# 10,000 concurrent relayed calls in the kernel. A relayed call holds four
# sockets (RTP and RTCP on both legs) and this sandbox caps a process at
# 20,000 descriptors, so relay-bench spreads the calls over several engine
# processes sharing one pinned program (CALLS sets the count).
CALLS="${CALLS:-10000}"
echo "## $CALLS concurrent relayed calls in the kernel, paced"
for r in 100000 200000 300000; do
  $B --flows "$CALLS" --rate "$r" --secs "$SECS" --modes ceiling,xdp
done
echo "## $CALLS concurrent relayed calls in the kernel, as fast as the generator can"
$B --flows "$CALLS" --rate max --secs "$SECS" --modes ceiling,xdp

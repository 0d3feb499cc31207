#!/usr/bin/env bash
# AI stream route under load: the release daemon (pinned to CPU 0) with
# `bench/src/bin/ai-load.rs` (pinned to CPU 1) as both the callers and the
# AI's WebSocket server, on loopback. Prints answered calls, lost frames,
# uplink (RTP in -> WebSocket out) latency percentiles, with --downlink the
# AI -> caller latency too, the daemon's CPU and resident memory per call.
#
#   bench/scripts/ai-streams.sh CALLS SECONDS [tokio|io_uring] [--downlink] [DIALECT]
# MEDIA_WORKERS (default 1) and DAEMON_CPUS (default 0) let the daemon use
# more of the machine; the load generator stays on CPU 1. SRTP=1 makes the
# callers SRTP phones keyed by SDES (the trunk requires SRTP and allows its
# keys over UDP).
set -euo pipefail
cd "$(dirname "$0")/../.."
CALLS="${1:-100}"; SECS="${2:-10}"; BACKEND="${3:-tokio}"; DOWN="${4:-}"; DIALECT="${5:-twilio}"
WORK="$(mktemp -d /tmp/gw-ai-bench.XXXXXX)"
cleanup() { kill "${DPID:-}" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
cargo build --release -p sip-daemon -p bench --quiet
ulimit -n 65536 2>/dev/null || true
IO_URING=true; [ "$BACKEND" = tokio ] && IO_URING=false
cat > "$WORK/gw.toml" <<TOML
[sip]
listen = ["udp:127.0.0.1:15060"]
realm = "bench"
auth_secret = "bench"

[media]
bind_ip = "127.0.0.1"
port_min = 20000
port_max = 40000
timeout_secs = 60
workers = ${MEDIA_WORKERS:-1}
io_uring = $IO_URING

[stream]
answer_timeout_ms = 10000

[store]
url = "sqlite://$WORK/gw.db"

[api]
listen = "127.0.0.1:18080"
allowed_target_networks = ["127.0.0.0/8"]

[log]
level = "warn"

[[accounts]]
id = "bench"

[[trunks]]
name = "local"
source_cidrs = ["127.0.0.0/8"]
$( [ -n "${SRTP:-}" ] && printf 'media_security = "srtp"\nsrtp_cleartext_keying = true\n' )

[[numbers]]
pattern = "+15557000001"
account = "bench"
route = "stream"
target = "ws://127.0.0.1:18765/stream"
dialect = "$DIALECT"
TOML
taskset -c "${DAEMON_CPUS:-0}" target/release/sip-daemon --config "$WORK/gw.toml" > "$WORK/daemon.log" 2>&1 & DPID=$!
for _ in $(seq 100); do sipp -sn uac 127.0.0.1:15060 -s ping -m 1 -nostdin -timeout 2s >/dev/null 2>&1 && break; sleep 0.2; done
echo "calls=$CALLS seconds=$SECS media backend=$BACKEND dialect=$DIALECT workers=${MEDIA_WORKERS:-1} srtp=${SRTP:-0} (daemon on CPU ${DAEMON_CPUS:-0}, load on CPU 1)"
ARGS=(--sip 127.0.0.1:15060 --ai-port 18765 --calls "$CALLS" --seconds "$SECS" --setup-rate 200 --daemon-pid "$DPID")
[ "$DOWN" = "--downlink" ] && ARGS+=(--downlink)
[ -n "${SRTP:-}" ] && ARGS+=(--srtp)
taskset -c 1 target/release/ai-load "${ARGS[@]}"
curl -s 127.0.0.1:18080/metrics | grep -E '^gateway_ai_stream_(dropped|rejected|lost)' || true

#!/usr/bin/env bash
# REST API latency at a fixed rate (default 500 requests/s for 10 s per
# endpoint): the daemon on loopback with 100,000 call records in SQLite;
# outbound calls go through a trunk to a SIPp phone that answers 486, so
# every POST /v1/calls places and ends a real INVITE. Prints p50/p99/max
# per endpoint, with GET /healthz as the HTTP floor of the same run.
#
#   bench/scripts/api.sh [RATE] [SECS] [ROWS]
set -euo pipefail
cd "$(dirname "$0")/../.."
RATE="${1:-500}"; SECS="${2:-10}"; ROWS="${3:-100000}"
WORK="$(mktemp -d /tmp/gw-api-bench.XXXXXX)"
cleanup() { kill "${DPID:-}" "${SPID:-}" 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$WORK"; }
trap cleanup EXIT
cargo build --release -p sip-daemon -p bench --quiet
cat > "$WORK/gw.toml" <<CFG
[sip]
listen = ["udp:127.0.0.1:16060"]
realm = "bench"
auth_secret = "bench"
[media]
bind_ip = "127.0.0.1"
port_min = 30000
port_max = 39999
[store]
url = "sqlite://$WORK/gw.db"
[api]
listen = "127.0.0.1:18090"
jwt_secret = "bench-secret"
account_rate = 0.0
ip_rate = 0.0
allowed_target_networks = ["127.0.0.0/8"]
[log]
level = "warn"
[[accounts]]
id = "loopback"
[[trunks]]
name = "phone"
source_cidrs = ["127.0.0.9/32"]
outbound_address = "127.0.0.1:16070"
[[numbers]]
pattern = "+15550000001"
account = "loopback"
route = "echo"
trunk = "phone"
CFG
target/release/api-load seed "sqlite://$WORK/gw.db" "$ROWS"
TOTAL=$((RATE * SECS + 100))
(cd "$WORK" && sipp -sf "$OLDPWD/sip-daemon/tests/scenarios/uas_busy.xml" -i 127.0.0.1 -p 16070 \
   -m "$TOTAL" -nostdin -timeout "$((SECS * 6 + 60))s" > "$WORK/sipp.log" 2>&1) & SPID=$!
target/release/sip-daemon --config "$WORK/gw.toml" > "$WORK/daemon.log" 2>&1 & DPID=$!
for _ in $(seq 100); do curl -sf 127.0.0.1:18090/healthz >/dev/null && break; sleep 0.1; done
TOKEN=$(target/release/sip-daemon token --config "$WORK/gw.toml" --account loopback)
echo "rate $RATE/s for $SECS s per endpoint; $ROWS call records; $(nproc) cores"
target/release/api-load run http://127.0.0.1:18090 "$TOKEN" +15550000001 +15557654321 "$RATE" "$SECS"
sleep 1
echo "daemon: $(grep -c . "$WORK/daemon.log") log lines; outbound calls ended busy: $(curl -s 127.0.0.1:18090/metrics | grep 'gateway_calls_total{direction="outbound",outcome="busy"}' | awk '{print $2}')"

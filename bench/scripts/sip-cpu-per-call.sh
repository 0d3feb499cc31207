#!/usr/bin/env bash
# CPU time per call: our daemon (echo route: dialog, CDR, media port) and
# Kamailio 5.6 as a stateful responder, under the same SIPp `uac` load in
# the same run. Prints µs of CPU (user+system, all threads/processes) per
# completed call and the ratio.
#
#   bench/scripts/sip-cpu-per-call.sh [CALLS] [RATE] [TRANSPORT u1|t1]
set -euo pipefail
cd "$(dirname "$0")/../.."
CALLS="${1:-20000}"; RATE="${2:-1000}"; TR="${3:-u1}"
WORK="$(mktemp -d /tmp/gw-bench.XXXXXX)"
cleanup() { kill "${DPID:-}" "${KPID:-}" 2>/dev/null || true; pkill -f "kamailio -f $WORK" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
cargo build --release -p sip-daemon --quiet
HZ=$(getconf CLK_TCK)

# utime+stime of a set of pids, in clock ticks.
ticks() { local t=0; for p in "$@"; do [ -r "/proc/$p/stat" ] && t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat"))); done; echo "$t"; }

run_sipp() { # port label
  local out
  if ! out=$(cd "$WORK" && sipp -sn uac "127.0.0.1:$1" -s +15550001234 -i 127.0.0.1 -t "$TR" \
      -m "$CALLS" -r "$RATE" -l 5000 -recv_timeout 10000 -timeout 600s -timeout_error -nostdin 2>&1); then
    echo "sipp against $2 failed:"; echo "$out" | tail -30; exit 1
  fi
  echo "$out" | grep -E "Successful call|Failed call" | tail -2 >&2 || true
}

# --- our daemon ------------------------------------------------------------
sed -e "s|udp:127.0.0.1:5060|udp:127.0.0.1:15060|; s|tcp:127.0.0.1:5060|tcp:127.0.0.1:15060|" \
    -e "s|sqlite://./data/gateway.db|sqlite://$WORK/gw.db|" -e "s|127.0.0.1:8080|127.0.0.1:18080|" \
    -e 's|level = "info"|level = "warn"|' deploy/examples/loopback.toml > "$WORK/gw.toml"
target/release/sip-daemon --config "$WORK/gw.toml" > "$WORK/daemon.log" 2>&1 & DPID=$!
for _ in $(seq 100); do sipp -sn uac 127.0.0.1:15060 -s ping -m 1 -nostdin -timeout 2s >/dev/null 2>&1 && break; sleep 0.2; done
d0=$(ticks "$DPID"); run_sipp 15060 "sip-daemon"; d1=$(ticks "$DPID")
kill -TERM "$DPID"; wait "$DPID" || true; DPID=

# --- Kamailio ----------------------------------------------------------------
sed -e "s|LISTEN|127.0.0.1:15070|g" -e "s|CHILDREN|2|g" bench/peers/kamailio-responder.cfg > "$WORK/kamailio.cfg"
kamailio -f "$WORK/kamailio.cfg" -DD -E -m 256 -M 32 -P "$WORK/k.pid" > "$WORK/kamailio.log" 2>&1 & KPID=$!
sleep 2
kpids=$(pgrep -f "kamailio -f $WORK" | tr '\n' ' ' || true)
[ -n "$kpids" ] || { echo "kamailio did not start:"; cat "$WORK/kamailio.log"; exit 1; }
k0=$(ticks $kpids); run_sipp 15070 "kamailio"; k1=$(ticks $kpids)
kill -TERM "$KPID"; wait "$KPID" 2>/dev/null || true; KPID=

python3 - "$d0" "$d1" "$k0" "$k1" "$HZ" "$CALLS" "$RATE" "$TR" <<'PY'
import sys
d0,d1,k0,k1,hz,calls,rate,tr = sys.argv[1:]
hz=int(hz); calls=int(calls)
d=(int(d1)-int(d0))/hz*1e6/calls; k=(int(k1)-int(k0))/hz*1e6/calls
print(f"calls={calls} rate={rate}/s transport={tr}")
print(f"sip-daemon CPU per call: {d:.1f} us")
print(f"kamailio   CPU per call: {k:.1f} us")
print(f"ratio sip-daemon/kamailio: {d/k:.2f}" if k>0 else "kamailio used no measurable CPU")
PY

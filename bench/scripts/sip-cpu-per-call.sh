#!/usr/bin/env bash
# CPU time per call: our daemon (echo route: dialog, CDR, media port) and
# Kamailio 5.6 as a stateful responder, under the same SIPp `uac` load in
# the same run. Rounds alternate daemon / Kamailio; the servers are pinned
# to CPU 0 and SIPp to CPU 1 so the load generator does not steal from
# either. Prints µs of CPU (user+system, all threads/processes) per
# completed call for each round, the medians and their ratio.
#
#   bench/scripts/sip-cpu-per-call.sh [CALLS] [RATE] [TRANSPORT u1|t1] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
CALLS="${1:-20000}"; RATE="${2:-1000}"; TR="${3:-u1}"; ROUNDS="${4:-3}"
WORK="$(mktemp -d /tmp/gw-bench.XXXXXX)"
cleanup() { kill "${DPID:-}" "${KPID:-}" 2>/dev/null || true; pkill -f "kamailio -f $WORK" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
cargo build --release -p sip-daemon --quiet
HZ=$(getconf CLK_TCK)
NCPU=$(nproc)
SRV_CPU=0; GEN_CPU=$(( NCPU > 1 ? 1 : 0 ))

# utime+stime of a set of pids (all their threads), in clock ticks.
ticks() { local t=0; for p in "$@"; do [ -r "/proc/$p/stat" ] && t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat"))); done; echo "$t"; }

run_sipp() { # port label
  local out
  if ! out=$(cd "$WORK" && taskset -c "$GEN_CPU" sipp -sn uac "127.0.0.1:$1" -s +15550001234 -i 127.0.0.1 -t "$TR" \
      -m "$CALLS" -r "$RATE" -l 5000 -recv_timeout 10000 -timeout 600s -timeout_error -nostdin 2>&1); then
    echo "sipp against $2 failed:" >&2; echo "$out" | tail -30 >&2; exit 1
  fi
}

sed -e "s|udp:127.0.0.1:5060|udp:127.0.0.1:15060|; s|tcp:127.0.0.1:5060|tcp:127.0.0.1:15060|" \
    -e "s|sqlite://./data/gateway.db|sqlite://$WORK/gw.db|" -e "s|127.0.0.1:8080|127.0.0.1:18080|" \
    -e 's|level = "info"|level = "warn"|' deploy/examples/loopback.toml > "$WORK/gw.toml"
sed -e "s|LISTEN|127.0.0.1:15070|g" -e "s|CHILDREN|2|g" bench/peers/kamailio-responder.cfg > "$WORK/kamailio.cfg"

daemon_round() {
  rm -f "$WORK"/gw.db*
  taskset -c "$SRV_CPU" target/release/sip-daemon --config "$WORK/gw.toml" > "$WORK/daemon.log" 2>&1 & DPID=$!
  for _ in $(seq 100); do sipp -sn uac 127.0.0.1:15060 -s ping -m 1 -nostdin -timeout 2s >/dev/null 2>&1 && break; sleep 0.2; done
  local t0 t1; t0=$(ticks "$DPID"); run_sipp 15060 "sip-daemon"; t1=$(ticks "$DPID")
  kill -TERM "$DPID"; wait "$DPID" || true; DPID=
  echo $((t1 - t0))
}

kamailio_round() {
  taskset -c "$SRV_CPU" kamailio -f "$WORK/kamailio.cfg" -DD -E -m 256 -M 32 > "$WORK/kamailio.log" 2>&1 & KPID=$!
  sleep 2
  local kpids; kpids=$(pgrep -f "kamailio -f $WORK" | tr '\n' ' ' || true)
  [ -n "$kpids" ] || { echo "kamailio did not start:" >&2; cat "$WORK/kamailio.log" >&2; exit 1; }
  local t0 t1; t0=$(ticks $kpids); run_sipp 15070 "kamailio"; t1=$(ticks $kpids)
  kill -TERM "$KPID"; wait "$KPID" 2>/dev/null || true; KPID=
  echo $((t1 - t0))
}

D=(); K=()
for r in $(seq "$ROUNDS"); do
  D+=("$(daemon_round)"); K+=("$(kamailio_round)")
  echo "round $r: sip-daemon ${D[-1]} ticks, kamailio ${K[-1]} ticks" >&2
done

python3 - "$HZ" "$CALLS" "$RATE" "$TR" "${D[*]}" "${K[*]}" <<'PY'
import sys, statistics
hz, calls, rate, tr, d, k = sys.argv[1:]
hz = int(hz); calls = int(calls)
us = lambda t: int(t) / hz * 1e6 / calls
d = [us(t) for t in d.split()]; k = [us(t) for t in k.split()]
print(f"calls={calls} rate={rate}/s transport={tr} rounds={len(d)} (servers on CPU 0, SIPp on CPU 1)")
print("sip-daemon CPU per call (us): " + ", ".join(f"{x:.1f}" for x in d) + f"  median {statistics.median(d):.1f}")
print("kamailio   CPU per call (us): " + ", ".join(f"{x:.1f}" for x in k) + f"  median {statistics.median(k):.1f}")
print(f"ratio sip-daemon/kamailio (medians): {statistics.median(d)/statistics.median(k):.2f}")
PY

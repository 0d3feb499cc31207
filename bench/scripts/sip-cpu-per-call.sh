#!/usr/bin/env bash
# CPU time per call: our daemon (echo route: dialog, CDR, media port) and
# Kamailio 5.6 as a stateful responder, under the same SIPp `uac` load in
# the same run. Rounds alternate daemon / Kamailio; the servers are pinned
# to CPU 0 and SIPp to CPU 1 so the load generator does not steal from
# either. Prints µs of CPU (user+system, all threads/processes) per
# completed call for each round, the medians and their ratio.
#
#   bench/scripts/sip-cpu-per-call.sh [CALLS] [RATE] [TRANSPORT u1|t1] [ROUNDS]
#
# With BASELINE=/path/to/sip-daemon (an earlier build of the daemon), each
# round also puts the same load on that binary (same config and ports, its
# own fresh DB; the two daemons swap order every round), and the summary
# adds its median and the ratio sip-daemon/baseline.
set -euo pipefail
BASELINE="${BASELINE:-}"
if [ -n "$BASELINE" ]; then
  if [ ! -f "$BASELINE" ] || [ ! -x "$BASELINE" ]; then echo "BASELINE=$BASELINE is not an executable file" >&2; exit 1; fi
  BASELINE="$(realpath "$BASELINE")"
fi
cd "$(dirname "$0")/../.."
CALLS="${1:-20000}"; RATE="${2:-1000}"; TR="${3:-u1}"; ROUNDS="${4:-3}"
WORK="$(mktemp -d /tmp/gw-bench.XXXXXX)"
# The rounds run in $(...) subshells, so the daemons' pids reach this trap
# through pid files.
cleanup() {
  local f; for f in "$WORK"/*.pid; do if [ -r "$f" ]; then kill "$(cat "$f")" 2>/dev/null || true; fi; done
  kill "${KPID:-}" 2>/dev/null || true; pkill -f "kamailio -f $WORK" 2>/dev/null || true; rm -rf "$WORK"
}
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
# The baseline: the same config but for its database.
sed -e "s|sqlite://$WORK/gw.db|sqlite://$WORK/base.db|" "$WORK/gw.toml" > "$WORK/base.toml"
sed -e "s|LISTEN|127.0.0.1:15070|g" -e "s|CHILDREN|2|g" bench/peers/kamailio-responder.cfg > "$WORK/kamailio.cfg"

daemon_round() { # binary name(config, db, log and pid file) label
  rm -f "$WORK/$2".db*
  local pid
  taskset -c "$SRV_CPU" "$1" --config "$WORK/$2.toml" > "$WORK/$2.log" 2>&1 & pid=$!
  echo "$pid" > "$WORK/$2.pid"
  for _ in $(seq 100); do sipp -sn uac 127.0.0.1:15060 -s ping -m 1 -nostdin -timeout 2s >/dev/null 2>&1 && break; sleep 0.2; done
  local t0 t1; t0=$(ticks "$pid"); run_sipp 15060 "$3"; t1=$(ticks "$pid")
  kill -TERM "$pid"; wait "$pid" || true; rm -f "$WORK/$2.pid"
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

D=(); B=(); K=()
for r in $(seq "$ROUNDS"); do
  if [ -z "$BASELINE" ]; then
    D+=("$(daemon_round target/release/sip-daemon gw "sip-daemon")")
  elif [ $((r % 2)) -eq 1 ]; then
    D+=("$(daemon_round target/release/sip-daemon gw "sip-daemon")")
    B+=("$(daemon_round "$BASELINE" base "baseline sip-daemon")")
  else
    B+=("$(daemon_round "$BASELINE" base "baseline sip-daemon")")
    D+=("$(daemon_round target/release/sip-daemon gw "sip-daemon")")
  fi
  K+=("$(kamailio_round)")
  echo "round $r: sip-daemon ${D[-1]} ticks, ${BASELINE:+baseline ${B[-1]:-} ticks, }kamailio ${K[-1]} ticks" >&2
done

python3 - "$HZ" "$CALLS" "$RATE" "$TR" "${D[*]}" "${K[*]}" "${B[*]:-}" "$BASELINE" <<'PY'
import sys, statistics
hz, calls, rate, tr, d, k, b, base = sys.argv[1:]
hz = int(hz); calls = int(calls)
us = lambda t: int(t) / hz * 1e6 / calls
d = [us(t) for t in d.split()]; k = [us(t) for t in k.split()]; b = [us(t) for t in b.split()]
print(f"calls={calls} rate={rate}/s transport={tr} rounds={len(d)} (servers on CPU 0, SIPp on CPU 1)")
print("sip-daemon CPU per call (us): " + ", ".join(f"{x:.1f}" for x in d) + f"  median {statistics.median(d):.1f}")
if b:
    print("baseline   CPU per call (us): " + ", ".join(f"{x:.1f}" for x in b) + f"  median {statistics.median(b):.1f}  ({base})")
print("kamailio   CPU per call (us): " + ", ".join(f"{x:.1f}" for x in k) + f"  median {statistics.median(k):.1f}")
print(f"ratio sip-daemon/kamailio (medians): {statistics.median(d)/statistics.median(k):.2f}")
if b:
    print(f"ratio sip-daemon/baseline (medians): {statistics.median(d)/statistics.median(b):.2f}")
PY

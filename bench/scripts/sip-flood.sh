#!/usr/bin/env bash
# The XDP SIP guard under a spoofed flood, in network namespaces this
# script creates (198.18.0.0/15 veth; removed on exit): SIPp places calls
# at RATE calls/s from a carrier (a trunk) to the release daemon's echo
# route while sip-flood sends PPS OPTIONS/s from 65,536 spoofed sources.
# Three runs: no flood, flood with sip.xdp_guard, flood without it. Each
# prints failed calls and the daemon's CPU share (its CPU time over the
# wall time, daemon pinned to CPU 0, SIPp on CPU 1). The flood comes from
# two senders, one on each CPU, PPS/2 each from half the sources each: the
# kernel runs a veth's XDP on the sending CPU, so the drops land on both
# CPUs, and each source on one of them, as a multi-queue NIC's RSS spreads
# them (one sender beside SIPp tops out near 280k pps here).
#
#   bench/scripts/sip-flood.sh [RATE] [PPS] [SECONDS] [SOURCES]
#   SKIP_BUILD=1 runs the release binaries as they are built; REPEAT=N
#   rounds (default 3).
#   (default 200 300000 20 1024: each spoofed source far over the guard's
#   5/s here; spread over 65,536 sources each would stay under it)
set -euo pipefail
cd "$(dirname "$0")/../.."
RATE="${1:-200}" PPS="${2:-300000}" SECS="${3:-20}" SOURCES="${4:-1024}"
[ -n "${SKIP_BUILD:-}" ] || cargo build --release -q -p sip-daemon -p bench
C=gfl-c G=gfl-g
cleanup() { ip netns del $C 2>/dev/null || true; ip netns del $G 2>/dev/null || true; }
trap cleanup EXIT
WORK=$(mktemp -d)
run() { # GUARD FLOOD
  cleanup
  ip netns add $C; ip netns add $G
  # As a multi-queue NIC with RSS: two receive queues (a source's packets
  # take one, by flow hash), each served by its own NAPI thread pinned to
  # one CPU, so each source is metered on one CPU and the drops' cost is
  # the NAPI threads', on both CPUs.
  ip link add c0 numtxqueues 2 numrxqueues 2 netns $C type veth peer name gc numtxqueues 2 numrxqueues 2 netns $G
  ip -n $C addr add 198.18.0.2/24 dev c0; ip -n $C link set c0 up; ip -n $C link set lo up
  ip -n $G addr add 198.18.0.1/24 dev gc; ip -n $G link set gc up; ip -n $G link set lo up
  # veth delivers to XDP in driver mode with GRO on (and a program on the peer).
  ip netns exec $G ethtool -K gc gro on >/dev/null 2>&1 || true
  ip netns exec $C ethtool -K c0 gro on >/dev/null 2>&1 || true
  ip netns exec $G sh -c 'echo 1 > /sys/class/net/gc/threaded'
  local cpu=0
  for t in $(pgrep '^napi/gc-' | sort -n); do taskset -pc $cpu "$t" >/dev/null; cpu=$((1 - cpu)); done
  local mac; mac=$(ip -n $G -o link show gc | grep -o 'link/ether [0-9a-f:]*' | cut -d' ' -f2)
  rm -f "$WORK"/gw.db*
  cat > "$WORK/gw.toml" <<CFG
[sip]
listen = ["udp:198.18.0.1:5060"]
realm = "bench"
auth_secret = "bench"
source_requests_per_sec = 100
xdp_guard = $1
xdp_guard_rate_per_sec = 5
xdp_guard_burst = 20
[media]
bind_ip = "198.18.0.1"
port_min = 30000
port_max = 39999
xdp = "on"
xdp_interfaces = ["gc"]
xdp_pin_dir = ""
[store]
url = "sqlite://$WORK/gw.db"
[api]
listen = "127.0.0.1:18095"
[log]
level = "info"
[[accounts]]
id = "bench"
[[trunks]]
name = "carrier"
source_cidrs = ["198.18.0.2/32"]
[[numbers]]
pattern = "*"
account = "bench"
route = "echo"
CFG
  ip netns exec $G taskset -c 0 target/release/sip-daemon --config "$WORK/gw.toml" > "$WORK/daemon.log" 2>&1 &
  local dpid=$!
  for _ in $(seq 100); do ip netns exec $G curl -sf 127.0.0.1:18095/healthz >/dev/null && break; sleep 0.1; done
  local fpids=""
  rm -f "$WORK"/flood*.txt
  if [ "$2" = yes ]; then
    local half=$(( (SOURCES + 1) / 2 ))
    for cpu in 0 1; do
      ip netns exec $C taskset -c $cpu target/release/sip-flood c0 "$mac" 198.18.0.1 5060 $((PPS / 2)) $((SECS + 4)) "$half" $((cpu * half)) > "$WORK/flood$cpu.txt" &
      fpids="$fpids $!"
    done
    sleep 2
  fi
  local t0 c0
  t0=$(date +%s.%N); c0=$(awk '{print $14+$15}' /proc/$dpid/stat)
  rm -f "$WORK"/sipp*.csv
  ip netns exec $C taskset -c 1 timeout $((SECS + 30)) sipp -sn uac -i 198.18.0.2 -p 5070 -r "$RATE" \
    -s +15550001234 -m $((RATE * SECS)) -d 0 -nostdin -trace_stat -stf "$WORK/sipp.csv" -fd 1 198.18.0.1:5060 \
    > "$WORK/sipp.out" 2>&1 || true
  local t1 c1
  t1=$(date +%s.%N); c1=$(awk '{print $14+$15}' /proc/$dpid/stat)
  for p in $fpids; do wait "$p" || true; done
  local hz; hz=$(getconf CLK_TCK)
  local share; share=$(echo "($c1 - $c0) / $hz / ($t1 - $t0) * 100" | bc -l)
  local ok fail
  ok=$(tail -1 "$WORK/sipp.csv" | awk -F';' -v h="$(head -1 "$WORK/sipp.csv")" 'BEGIN{n=split(h,H,";")} {for(i=1;i<=n;i++) if(H[i]=="SuccessfulCall(C)") print $i}')
  fail=$(tail -1 "$WORK/sipp.csv" | awk -F';' -v h="$(head -1 "$WORK/sipp.csv")" 'BEGIN{n=split(h,H,";")} {for(i=1;i<=n;i++) if(H[i]=="FailedCall(C)") print $i}')
  local xdrop; xdrop=$(ip netns exec $G curl -s 127.0.0.1:18095/metrics | awk '/^gateway_xdp_sip_rate_dropped_total/{print $2}')
  # Both senders' totals: packets and the rate over the longer run.
  local flood; flood=$({ cat "$WORK"/flood*.txt 2>/dev/null || true; } | awk -F'[= ]' '{n+=$2; if ($4>s) s=$4} END {if (n) printf "flood_sent=%d flood_pps=%.0f", n, n/s}')
  printf "guard=%s flood=%s calls_ok=%s calls_failed=%s daemon_cpu=%.1f%% xdp_dropped=%s %s\n" \
    "$1" "$2" "${ok:-?}" "${fail:-?}" "$share" "${xdrop:-0}" "$flood"
  kill "$dpid" 2>/dev/null || true; wait "$dpid" 2>/dev/null || true
}
# Interleaved rounds (REPEAT, default 3), so a slow minute of the machine
# weighs on every configuration alike; the medians close the report.
for _ in $(seq "${REPEAT:-3}"); do
  run false no
  run true yes
  run false yes
done | tee "$WORK/rounds.txt"
# The middle value of field KEY over the rounds of configuration CFG.
median() { # CFG KEY
  local vals; vals=$(grep "^$1 " "$WORK/rounds.txt" | grep -o " $2=[0-9.]*" | cut -d= -f2 | sort -n)
  local n; n=$(echo "$vals" | grep -c .)
  [ "$n" -eq 0 ] || echo "$vals" | sed -n "$(( (n + 1) / 2 ))p"
}
echo "medians over ${REPEAT:-3} rounds:"
for cfg in "guard=false flood=no" "guard=true flood=yes" "guard=false flood=yes"; do
  echo "$cfg calls_failed=$(median "$cfg" calls_failed) daemon_cpu=$(median "$cfg" daemon_cpu)% flood_pps=$(median "$cfg" flood_pps)"
done

#!/usr/bin/env bash
# CPU per call over SIP over TLS against SIP over TCP, same daemon build,
# same client (bench bin sip-tls-load: calls on a few long-lived
# connections, as a secure trunk sends them), the echo route. Rounds
# alternate TCP / TLS, each on a fresh daemon pinned to CPU 0 with the
# client on CPU 1. Prints µs of daemon CPU (user+system, all threads) per
# completed call, the medians and their ratio.
#
#   bench/scripts/sip-tls.sh [CALLS] [RATE] [CONNS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
CALLS="${1:-4000}"; RATE="${2:-400}"; CONNS="${3:-4}"; ROUNDS="${4:-3}"
WORK="$(mktemp -d /tmp/gw-tls-bench.XXXXXX)"
cleanup() { kill "${DPID:-}" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
cargo build --release -q -p sip-daemon -p bench --bin sip-daemon --bin sip-tls-load
HZ=$(getconf CLK_TCK)
NCPU=$(nproc)
SRV_CPU=0; GEN_CPU=$(( NCPU > 1 ? 1 : 0 ))
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }

# A CA and a certificate it signed for 127.0.0.1 (a CA certificate itself
# may not serve as the server's).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj "/CN=bench CA" -keyout "$WORK/ca.key" -out "$WORK/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=gateway \
  -keyout "$WORK/key.pem" -out "$WORK/csr.pem" 2>/dev/null
echo "subjectAltName=IP:127.0.0.1" > "$WORK/ext.cnf"
openssl x509 -req -in "$WORK/csr.pem" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" -CAcreateserial \
  -days 2 -extfile "$WORK/ext.cnf" -out "$WORK/cert.pem" 2>/dev/null
sed -e "s|udp:127.0.0.1:5060|udp:127.0.0.1:15060|; s|tcp:127.0.0.1:5060|tcp:127.0.0.1:15060|" \
    -e "s|tls:127.0.0.1:5061|tls:127.0.0.1:15061|" \
    -e "s|./tls/cert.pem|$WORK/cert.pem|; s|./tls/key.pem|$WORK/key.pem|" \
    -e "s|sqlite://./data/gateway.db|sqlite://$WORK/gw.db|" -e "s|127.0.0.1:8080|127.0.0.1:18080|" \
    -e 's|level = "info"|level = "warn"|' deploy/examples/loopback-tls.toml > "$WORK/gw.toml"

round() { # tcp|tls
  rm -f "$WORK"/gw.db*
  taskset -c "$SRV_CPU" target/release/sip-daemon --config "$WORK/gw.toml" > "$WORK/daemon.log" 2>&1 & DPID=$!
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/15061) 2>/dev/null && break; sleep 0.2; done
  local port=15060; [ "$1" = tls ] && port=15061
  local t0 t1; t0=$(ticks "$DPID")
  if ! taskset -c "$GEN_CPU" target/release/sip-tls-load --target "127.0.0.1:$port" --transport "$1" \
      --ca "$WORK/ca.pem" --calls "$CALLS" --rate "$RATE" --conns "$CONNS" >&2; then
    echo "the $1 round failed:" >&2; tail -20 "$WORK/daemon.log" >&2
    kill "$DPID" 2>/dev/null || true; exit 1
  fi
  t1=$(ticks "$DPID")
  kill -TERM "$DPID"; wait "$DPID" || true; DPID=
  echo $((t1 - t0))
}

P=(); S=()
for r in $(seq "$ROUNDS"); do
  P+=("$(round tcp)"); S+=("$(round tls)")
  echo "round $r: tcp ${P[-1]} ticks, tls ${S[-1]} ticks" >&2
done

python3 - "$HZ" "$CALLS" "$RATE" "$CONNS" "${P[*]}" "${S[*]}" <<'PY'
import sys, statistics
hz, calls, rate, conns, p, s = sys.argv[1:]
hz = int(hz); calls = int(calls)
us = lambda t: int(t) / hz * 1e6 / calls
p = [us(t) for t in p.split()]; s = [us(t) for t in s.split()]
print(f"calls={calls} rate={rate}/s connections={conns} rounds={len(p)} (daemon on CPU 0, client on CPU 1)")
print("TCP CPU per call (us): " + ", ".join(f"{x:.1f}" for x in p) + f"  median {statistics.median(p):.1f}")
print("TLS CPU per call (us): " + ", ".join(f"{x:.1f}" for x in s) + f"  median {statistics.median(s):.1f}")
print(f"ratio TLS/TCP (medians): {statistics.median(s)/statistics.median(p):.2f}")
PY

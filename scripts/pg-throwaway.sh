#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the store tests.
#
#   eval "$(scripts/pg-throwaway.sh start /tmp/gw-pg)"   # then: cargo test -p api
#   scripts/pg-throwaway.sh stop /tmp/gw-pg
#   scripts/pg-throwaway.sh destroy /tmp/gw-pg
#
# start: creates the cluster in DIR/data if missing (initdb of the newest
# /usr/lib/postgresql/*/bin, trust auth, user postgres), listening on
# 127.0.0.1 only, on PORT (default 55432, or the next free one; the port is
# kept in DIR/port) with its unix socket in DIR; starts it (pg_ctl -w), creates
# database gateway_test, and prints on stdout, for eval:
#   export TEST_DATABASE_URL=postgres://postgres@127.0.0.1:PORT/gateway_test
#   export TEST_PG_CTL="<pg_ctl … -D DIR/data -w>"   ($TEST_PG_CTL stop|start)
# Idempotent: an existing cluster is reused, a running one left running.
# As root, the server runs as the `postgres` user (runuser) and DIR is owned
# by it; DIR's parent directories must be searchable by that user.
set -euo pipefail

usage() { echo "usage: $0 start|stop|destroy DIR [PORT]" >&2; exit 2; }
say() { echo "pg-throwaway: $*" >&2; }

[ $# -ge 2 ] || usage
cmd=$1
dir=$2
want_port=${3:-${PG_THROWAWAY_PORT:-55432}}
case "$dir" in /*) ;; *) dir="$(pwd)/$dir" ;; esac
data="$dir/data"

# The glob sorts 10 < 9 lexically: pick the highest version numerically.
bindir=$(for d in /usr/lib/postgresql/*/bin; do [ -x "$d/initdb" ] && echo "$d"; done \
  | sort -t/ -k5,5n | tail -n1)
if [ -z "$bindir" ]; then
  say "no PostgreSQL found under /usr/lib/postgresql/*/bin (apt-get install postgresql)"
  exit 1
fi

# Runs a command as the cluster owner, from a directory that owner can read.
if [ "$(id -u)" -eq 0 ]; then
  as_owner() { (cd / && runuser -u postgres -- "$@"); }
  ctl_prefix="runuser -u postgres -- $bindir/pg_ctl"
else
  as_owner() { "$@"; }
  ctl_prefix="$bindir/pg_ctl"
fi
pg_ctl_args=(-D "$data" -l "$dir/server.log" -w)
ctl_cmd="$ctl_prefix -D $data -l $dir/server.log -w"

running() { as_owner "$bindir/pg_ctl" -D "$data" status >/dev/null 2>&1; }

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

case "$cmd" in
start)
  case "$dir" in *" "*) say "DIR must not contain spaces: $dir"; exit 1 ;; esac
  mkdir -p "$dir"
  if [ "$(id -u)" -eq 0 ]; then
    chown postgres:postgres "$dir"
  fi
  chmod 700 "$dir"
  if [ ! -f "$data/PG_VERSION" ]; then
    port=$want_port
    while port_in_use "$port"; do port=$((port + 1)); done
    say "initdb $data ($bindir, port $port)"
    as_owner "$bindir/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --locale=C >/dev/null
    cat >>"$data/postgresql.conf" <<CONF

# pg-throwaway.sh
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
CONF
    echo "$port" >"$dir/port"
    [ "$(id -u)" -ne 0 ] || chown postgres:postgres "$dir/port"
  fi
  port=$(cat "$dir/port")
  if running; then
    say "already running on port $port"
  else
    if port_in_use "$port"; then
      say "port $port is taken by another server; destroy $dir and start again"
      exit 1
    fi
    as_owner "$bindir/pg_ctl" "${pg_ctl_args[@]}" start >/dev/null
    say "started on 127.0.0.1:$port (log $dir/server.log)"
  fi
  if ! as_owner "$bindir/psql" -h "$dir" -p "$port" -U postgres -d postgres -tAc \
      "SELECT 1 FROM pg_database WHERE datname = 'gateway_test'" | grep -q 1; then
    as_owner "$bindir/createdb" -h "$dir" -p "$port" -U postgres gateway_test
  fi
  echo "export TEST_DATABASE_URL=postgres://postgres@127.0.0.1:$port/gateway_test"
  echo "export TEST_PG_CTL=\"$ctl_cmd\""
  ;;
stop)
  if [ -f "$data/PG_VERSION" ] && running; then
    as_owner "$bindir/pg_ctl" "${pg_ctl_args[@]}" stop -m fast >/dev/null
    say "stopped"
  else
    say "not running"
  fi
  ;;
destroy)
  if [ -f "$data/PG_VERSION" ] && running; then
    as_owner "$bindir/pg_ctl" "${pg_ctl_args[@]}" stop -m immediate >/dev/null
  fi
  rm -rf "$dir"
  say "removed $dir"
  ;;
*) usage ;;
esac

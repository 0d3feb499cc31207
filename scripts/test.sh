#!/usr/bin/env bash
# The whole test suite, on a fresh Debian/Ubuntu machine:
#   1. installs what the tests need (scripts/setup.sh test, idempotent);
#   2. starts a throwaway PostgreSQL cluster (stopped and removed on exit);
#   3. fmt, clippy and cargo-deny checks, the workspace tests (nextest),
#      the XDP program test, builds the fuzz targets, then the SIPp peer tests.
# Fails on the first failure. GATEWAY_SIPP_CALLS sets the SIPp call count.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }

say "setup"
scripts/setup.sh test

PGDIR="$(mktemp -d /tmp/gateway-pg.XXXXXX)"
cleanup() { scripts/pg-throwaway.sh destroy "$PGDIR" >/dev/null 2>&1 || true; }
trap cleanup EXIT
say "throwaway PostgreSQL in $PGDIR"
eval "$(scripts/pg-throwaway.sh start "$PGDIR")"
export TEST_DATABASE_URL TEST_PG_CTL

# The XDP program must be built in: its absence is a failure, not a skip.
export GATEWAY_REQUIRE_XDP=1

# RFC 4475 torture corpus: provided by the environment, never committed.
# In CI its absence is a failure; by hand it is skipped, loudly.
if [ ! -f ../shared/corpus/rfc4475/INDEX.tsv ] && [ -z "${GATEWAY_RFC4475_DIR:-}" ]; then
  if [ -n "${CI:-}" ]; then
    say "FAILED: ../shared/corpus/rfc4475/INDEX.tsv is missing (the RFC 4475 test needs it in CI)"
    exit 1
  fi
  say "BLOCKED: ../shared/corpus/rfc4475/INDEX.tsv is missing; the RFC 4475 test is skipped"
  export GATEWAY_TEST_SKIP_RFC4475=1
fi

say "rustfmt"
cargo fmt --all -- --check
say "clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
# Licences, bans and sources of the dependency tree (deny.toml), of the
# workspace and of the fuzz and XDP workspaces beside it; duplicate
# versions warn, on the main workspace only (libfuzzer-sys's licence
# exception is met in the fuzz workspace only). Advisories are not
# checked: their database is cloned from GitHub, which this suite's
# machines do not reach, and the suite must not fail on the network
# (deny.toml says more; CI with network should add
# `cargo deny check advisories`).
say "cargo deny"
cargo deny --locked check --hide-inclusion-graph -A license-exception-not-encountered \
  licenses bans sources
for ws in sip-daemon/fuzz media-ebpf/xdp; do
  cargo deny --manifest-path "$ws/Cargo.toml" --locked --log-level error \
    check --hide-inclusion-graph licenses bans sources
done

say "tests"
if command -v cargo-nextest >/dev/null; then
  cargo nextest run --workspace --no-fail-fast --final-status-level fail
else
  cargo test --workspace --no-fail-fast
fi

say "fuzz targets build"
scripts/fuzz-build.sh

say "done: all tests passed"

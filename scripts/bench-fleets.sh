#!/usr/bin/env bash
# Benchmarks the fleet database on both backends, in one run: change propagation
# between two routers (PostgreSQL LISTEN/NOTIFY vs SQLite polling), writes per
# second, and the routing throughput of one `slum serve` on PostgreSQL vs SQLite
# in front of one real tenement server (in its own network namespace), loaded
# with wrk. Runs under scripts/with-postgres.sh (a throw-away PostgreSQL cluster,
# removed at the end); installs wrk when missing. Needs root.
#
# Settings (defaults): BENCH_CHANGES=200 BENCH_WRITES=5000 BENCH_DURATION=10
# BENCH_WARMUP=2 (seconds) BENCH_THREADS=2 BENCH_CONNECTIONS=32 BENCH_ROUNDS=2.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "bench-fleets needs root (it creates a network namespace for its tenement server)" >&2
  exit 1
fi
if ! command -v wrk >/dev/null; then
  echo "installing wrk..." >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk >&2
fi
if ! command -v ip >/dev/null; then
  apt-get update -qq >&2 && apt-get install -y -qq iproute2 >&2
fi
if ! command -v cargo >/dev/null; then
  echo "cargo is not on root's PATH; try: sudo env PATH=\"\$PATH\" scripts/bench-fleets.sh" >&2
  exit 1
fi
# The command line as typed, with the settings given in the environment.
command_line="scripts/bench-fleets.sh${*:+ $*}"
for v in BENCH_CHANGES BENCH_WRITES BENCH_DURATION BENCH_WARMUP BENCH_THREADS \
  BENCH_CONNECTIONS BENCH_ROUNDS; do
  if [ -n "${!v:-}" ]; then
    command_line="$v=${!v} $command_line"
  fi
done
if [ -n "${SUDO_USER:-}" ]; then
  command_line="sudo $command_line"
fi
SLUM_TEN="$(scripts/ensure-tenement.sh)"
export SLUM_TEN
cargo build --quiet --release --features local-fleet --bin slum --bin slum-demo-app --example bench_fleets
SLUM_BIN="$PWD/target/release/slum"
SLUM_DEMO_APP="$PWD/target/release/slum-demo-app"
WRK="$(command -v wrk)"
BENCH_COMMAND="$command_line"
export SLUM_BIN SLUM_DEMO_APP WRK BENCH_COMMAND
exec scripts/with-postgres.sh target/release/examples/bench_fleets

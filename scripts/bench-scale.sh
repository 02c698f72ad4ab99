#!/usr/bin/env bash
# Benchmarks slum at scale (issue 17): fleets of 1,000, 100,000 and 1,000,000
# domains built in bulk (1,000 servers on loopback answering as tenement
# would, a tenant a domain with its instance, one in ten with a backup), the
# release `slum serve` started on each as a user would, and measured: start
# until the last domain routes, RSS after start and after the route changes,
# route change latency (API returns, routes), a server going offline (API
# returns, traffic reaches the backup), wrk p99 through the router with and
# without changes, and a route change seen by a second router on PostgreSQL;
# with the ratios between the sizes, in one run. See examples/bench_scale.rs.
# Runs under scripts/with-postgres.sh (a throw-away cluster) unless
# BENCH_POSTGRES_SIZES is set empty; installs wrk when missing. Needs root
# only to install wrk or PostgreSQL.
#
# Settings (defaults): BENCH_SIZES="1000 100000 1000000" BENCH_SERVERS=1000
# BENCH_BACKUP_EVERY=10 BENCH_CHANGES=1000 (one count, or one per size)
# BENCH_OFFLINES=3 (one count, or one per size) BENCH_DURATION=10 (seconds of wrk) BENCH_THREADS=2
# BENCH_CONNECTIONS=16 BENCH_CHANGE_RATE=10 (a second, during wrk) BENCH_SETTLE=35
# (seconds from the spawn until the RSS is taken as settled)
# BENCH_POSTGRES_SIZES (default: every size; "" for none) BENCH_RSS_LIMIT_MB
# (default 40 % of the memory: a change to a `slum serve` is made only while its
# RSS plus the most a change added so far fits) BENCH_DIR (where the
# fleet files go, default $TMPDIR; a million domains is ~300 MB).
# Before issue 17 each change reloads the whole table: at a million that took
# 40-70 s and added ~5 GB of RSS that is not given back (docs/benchmarks.md),
# so give few changes there, e.g. BENCH_CHANGES="20 20 5" BENCH_OFFLINES="3 3 1".
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v wrk >/dev/null; then
  if [ "$(id -u)" != 0 ]; then
    echo "wrk is missing: install it, or run this as root" >&2
    exit 1
  fi
  echo "installing wrk..." >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk >&2
fi
if ! command -v cargo >/dev/null; then
  echo "cargo is not on root's PATH; try: sudo env PATH=\"\$PATH\" scripts/bench-scale.sh" >&2
  exit 1
fi
# The command line as typed, with the settings given in the environment.
command_line="scripts/bench-scale.sh${*:+ $*}"
for v in BENCH_SIZES BENCH_SERVERS BENCH_BACKUP_EVERY BENCH_CHANGES BENCH_OFFLINES \
  BENCH_DURATION BENCH_THREADS BENCH_CONNECTIONS BENCH_CHANGE_RATE BENCH_POSTGRES_SIZES \
  BENCH_RSS_LIMIT_MB BENCH_DIR BENCH_SETTLE; do
  if [ -n "${!v+set}" ]; then
    command_line="$v=\"${!v}\" $command_line"
  fi
done
if [ -n "${SUDO_USER:-}" ]; then
  command_line="sudo $command_line"
fi
cargo build --quiet --release --features local-fleet --bin slum --example bench_scale
SLUM_BIN="$PWD/target/release/slum"
WRK="$(command -v wrk)"
BENCH_COMMAND="$command_line"
export SLUM_BIN WRK BENCH_COMMAND
if [ -n "${BENCH_POSTGRES_SIZES+set}" ] && [ -z "${BENCH_POSTGRES_SIZES// /}" ]; then
  unset SLUM_TEST_POSTGRES
  exec target/release/examples/bench_scale
fi
exec scripts/with-postgres.sh target/release/examples/bench_scale

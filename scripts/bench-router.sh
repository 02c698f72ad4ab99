#!/usr/bin/env bash
# Benchmarks the router: one tenant behind one real tenement server (in its own
# network namespace), loaded with wrk straight, through `slum serve` and through
# nginx as the equivalent reverse proxy; plus route lookups with 1,000 and
# 1,000,000 tenants. Installs wrk and nginx (Debian) when missing. Needs root.
#
# Load settings (defaults): BENCH_DURATION=10 BENCH_WARMUP=2 (seconds),
# BENCH_THREADS=2 BENCH_CONNECTIONS=32, BENCH_LOOKUPS=2000000, BENCH_ROUNDS=1 (times each path is measured, taking turns); BENCH_HOLD=1 sets
# the paths up and waits for Ctrl-C (for profiling by hand). The fixed-rate
# runs (oha, open loop): BENCH_RATES=0.25,0.5 (fractions of the slowest
# proxy's throughput under wrk), BENCH_RATE_DURATION=8 (seconds).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "bench-router needs root (it creates a network namespace for its tenement server)" >&2
  exit 1
fi
missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing ${missing[*]}..." >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
if ! command -v ip >/dev/null; then
  apt-get update -qq >&2 && apt-get install -y -qq iproute2 >&2
fi
if ! command -v cargo >/dev/null; then
  echo "cargo is not on root's PATH; try: sudo env PATH=\"\$PATH\" scripts/bench-router.sh" >&2
  exit 1
fi
SLUM_TEN="$(scripts/ensure-tenement.sh)"
export SLUM_TEN
# oha, pinned, for the fixed-rate latency runs (wrk has no rate limit).
OHA="$(scripts/ensure-oha.sh)"
export OHA
cargo build --quiet --release --features local-fleet --bin slum --bin slum-demo-app --example bench_router --example bare_proxy
SLUM_BIN="$PWD/target/release/slum"
BARE_PROXY="$PWD/target/release/examples/bare_proxy"
SLUM_DEMO_APP="$PWD/target/release/slum-demo-app"
WRK="$(command -v wrk)"
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
export SLUM_BIN SLUM_DEMO_APP WRK NGINX BARE_PROXY
exec target/release/examples/bench_router

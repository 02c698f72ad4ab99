#!/usr/bin/env bash
# Runs the demo fleet: three real tenement servers in their own network
# namespaces, the fleet database on the embedded SQLite default, tenants spawned
# and requests answered. Ctrl-C tears it down. Needs root and iproute2.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "run-fleet needs root (it creates network namespaces)" >&2
  exit 1
fi
SLUM_TEN="$(scripts/ensure-tenement.sh)"
export SLUM_TEN
cargo build --quiet --bin slum-demo-app
export SLUM_DEMO_APP="$PWD/target/debug/slum-demo-app"
exec cargo run --quiet --example demo_fleet

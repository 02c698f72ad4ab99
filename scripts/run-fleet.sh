#!/usr/bin/env bash
# Runs the demo fleet: three real tenement servers in their own network
# namespaces, `slum serve` on the embedded SQLite default, servers and tenants
# added with the slum CLI, and requests answered through the router.
# Ctrl-C tears it down. Needs root and iproute2.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "run-fleet needs root (it creates network namespaces)" >&2
  exit 1
fi
SLUM_TEN="$(scripts/ensure-tenement.sh)"
export SLUM_TEN
cargo build --quiet --features local-fleet --bin slum --bin slum-demo-app --example demo_fleet
export SLUM_BIN="$PWD/target/debug/slum"
export SLUM_DEMO_APP="$PWD/target/debug/slum-demo-app"
exec target/debug/examples/demo_fleet

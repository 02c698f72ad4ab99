#!/usr/bin/env bash
# Runs the demo fleet: three real tenement servers in their own network
# namespaces, `slum serve` on the embedded SQLite default, servers and tenants
# added with the slum CLI, and requests answered through the router.
# Ctrl-C tears it down. Needs root (network namespaces); installs iproute2 when
# it is missing, as scripts/test.sh does.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "run-fleet needs root (it creates network namespaces)" >&2
  exit 1
fi
if ! command -v ip >/dev/null; then
  echo "installing iproute2 (the network namespaces need ip)..." >&2
  apt-get update -qq && apt-get install -y -qq iproute2
fi
# The first run builds tenement-cli (several minutes) and slum: cargo shows its
# progress on stderr.
SLUM_TEN="$(scripts/ensure-tenement.sh)"
export SLUM_TEN
echo "building slum and the demo (the first build takes a few minutes)..." >&2
cargo build --features local-fleet --bin slum --bin slum-demo-app --example demo_fleet
export SLUM_BIN="$PWD/target/debug/slum"
export SLUM_DEMO_APP="$PWD/target/debug/slum-demo-app"
exec target/debug/examples/demo_fleet

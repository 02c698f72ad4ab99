#!/usr/bin/env bash
# Runs slum's whole test suite on a fresh machine: installs what the tests need
# (the pinned tenement-cli, cached per machine), then runs every test.
# Integration tests start real `ten serve` processes in network namespaces, so
# this needs root and iproute2.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "the test suite needs root (it creates network namespaces for its tenement servers)" >&2
  exit 1
fi
if ! command -v ip >/dev/null; then
  apt-get update -qq && apt-get install -y -qq iproute2
fi
SLUM_TEN="$(scripts/ensure-tenement.sh)"
export SLUM_TEN
cargo test --all-targets "$@"
cargo test --doc

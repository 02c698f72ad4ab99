#!/usr/bin/env bash
# Runs slum's whole test suite on a fresh machine: installs what the tests need
# (the pinned tenement-cli, cached per machine; PostgreSQL, Debian's pebble ACME
# server, and Chromium with chromedriver for the dashboard's browser test, when
# missing), then runs every test on the embedded SQLite default, next to a
# throw-away ACME server (scripts/with-pebble.sh), and the store and library
# tests a second time against a real PostgreSQL (a throw-away cluster that
# scripts/with-postgres.sh starts, and removes when they end).
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
# The dashboard's test drives headless Chromium through chromedriver.
if ! command -v chromedriver >/dev/null || ! command -v chromium >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver
fi
SLUM_TEN="$(scripts/ensure-tenement.sh)"
# The fleet tests need root; here a missing root fails them instead of skipping them.
SLUM_TEST_NETNS=1
export SLUM_TEST_NETNS
export SLUM_TEN

echo "== SQLite: every test (slum's and its HTTP/1.1 core's)" >&2
# tests/acme.rs orders certificates from pebble; the others ignore it.
scripts/with-pebble.sh cargo test --workspace --all-targets "$@"
cargo test --workspace --doc

# The fleet database's tests and the library's again, on PostgreSQL. The router
# and CLI tests stay on SQLite: they test `slum serve`, not the store. The ACME
# tests run here too: several routers on one PostgreSQL place one order.
echo "== PostgreSQL: the store and library tests" >&2
scripts/with-postgres.sh scripts/with-pebble.sh env SLUM_TEST_BACKEND=postgres \
  cargo test --lib --test fleet_db --test fleet_paging --test seed_page --test orchestration --test api --test routers --test postgres_restart --test acme "$@"

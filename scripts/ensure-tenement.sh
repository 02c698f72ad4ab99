#!/usr/bin/env bash
# Installs the pinned tenement-cli (binary `ten`) once per machine and prints
# the path of the binary (the build takes ~7 minutes on 2 cores; see
# cargo-install-cached.sh for the cache).
set -euo pipefail
exec "$(dirname "$0")/cargo-install-cached.sh" tenement-cli "${TENEMENT_VERSION:-0.2.1}" ten

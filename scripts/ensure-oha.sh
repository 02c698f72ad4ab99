#!/usr/bin/env bash
# Installs the pinned oha (an HTTP load tool that can send at a fixed rate)
# once per machine and prints the path of the binary (the build takes about 5
# minutes on 2 cores; see cargo-install-cached.sh for the cache).
set -euo pipefail
exec "$(dirname "$0")/cargo-install-cached.sh" oha "${OHA_VERSION:-1.16.0}" oha

#!/usr/bin/env bash
# Installs the pinned tenement-cli (binary `ten`) once per machine into a cache
# outside the checkout, and prints the path of the binary. Reuses the cache when
# the right version is already there (the build takes ~7 minutes on 2 cores).
set -euo pipefail
version="${TENEMENT_VERSION:-0.2.1}"
cache="${SLUM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/slum}"
root="$cache/tenement-cli-$version"
bin="$root/bin/ten"
if [ -x "$bin" ] && [ -f "$root/.complete" ]; then
  echo "$bin"
  exit 0
fi
mkdir -p "$root"
echo "installing tenement-cli $version into $root (takes several minutes)..." >&2
cargo install tenement-cli --version "$version" --locked --root "$root" >&2
touch "$root/.complete"
echo "$bin"

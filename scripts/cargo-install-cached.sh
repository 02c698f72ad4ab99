#!/usr/bin/env bash
# Usage: cargo-install-cached.sh CRATE VERSION BINARY
# Installs CRATE at VERSION (with its lock file) once per machine into a cache
# outside the checkout ($SLUM_CACHE, by default ~/.cache/slum/CRATE-VERSION),
# and prints the path of BINARY there. Reuses the cache when that version is
# already there whole.
set -euo pipefail
crate="$1" version="$2" binary="$3"
cache="${SLUM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/slum}"
root="$cache/$crate-$version"
bin="$root/bin/$binary"
if [ -x "$bin" ] && [ -f "$root/.complete" ]; then
  echo "$bin"
  exit 0
fi
mkdir -p "$root"
echo "installing $crate $version into $root (takes several minutes)..." >&2
cargo install "$crate" --version "$version" --locked --root "$root" >&2
touch "$root/.complete"
echo "$bin"

#!/usr/bin/env bash
# Installs the pinned oha (an HTTP load tool that can send at a fixed rate)
# once per machine into the same cache as tenement, and prints the path of the
# binary (the build takes about 5 minutes on 2 cores).
set -euo pipefail
version="${OHA_VERSION:-1.16.0}"
cache="${SLUM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/slum}"
root="$cache/oha-$version"
bin="$root/bin/oha"
if [ -x "$bin" ] && [ -f "$root/.complete" ]; then
  echo "$bin"
  exit 0
fi
mkdir -p "$root"
echo "installing oha $version into $root (takes several minutes)..." >&2
cargo install oha --version "$version" --locked --root "$root" >&2
touch "$root/.complete"
echo "$bin"

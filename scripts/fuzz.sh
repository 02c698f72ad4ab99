#!/usr/bin/env bash
# Usage: scripts/fuzz.sh CRATE [SECONDS]
# Fuzzes a hand-written part with libFuzzer: every target of crates/CRATE/fuzz
# (http1: request heads, response heads, chunked bodies; flat-table: the route
# table's shard against std's HashMap), each for SECONDS (default 60), and
# prints for each how many inputs it tried and whether it found anything.
# Needs the nightly toolchain; installs cargo-fuzz (pinned, cached per
# machine) when missing. Each target starts from the seeds in fuzz/seeds/ (if
# any) and the corpus earlier runs grew in fuzz/corpus/ (not committed). Exits
# non-zero when a target found a crash; libFuzzer's input for it is then in
# crates/CRATE/fuzz/artifacts/TARGET/.
set -euo pipefail
cd "$(dirname "$0")/.."
crate="${1:?usage: scripts/fuzz.sh CRATE [SECONDS]}"
seconds="${2:-60}"
if [ ! -d "crates/$crate/fuzz" ]; then
  echo "no fuzz targets in crates/$crate/fuzz" >&2
  exit 2
fi
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "fuzzing needs the nightly toolchain (rustup toolchain install nightly)" >&2
  exit 1
fi
cargo_fuzz="$(scripts/cargo-install-cached.sh cargo-fuzz 0.13.2 cargo-fuzz)"
export PATH="$(dirname "$cargo_fuzz"):$PATH"
cd "crates/$crate"
mapfile -t targets < <(cargo +nightly fuzz list)
echo "building the fuzz targets (nightly, with AddressSanitizer)..." >&2
cargo +nightly fuzz build >&2
logs="$(mktemp -d)"
found=0
for target in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$target"
  seeds=()
  if [ -d "fuzz/seeds/$target" ]; then
    seeds=("fuzz/seeds/$target")
  fi
  log="$logs/$target.log"
  echo "fuzzing $target for ${seconds}s (log: $log)" >&2
  if cargo +nightly fuzz run "$target" "fuzz/corpus/$target" "${seeds[@]}" -- \
    -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1; then
    verdict="nothing found"
  else
    verdict="FOUND A CRASH: $(grep -o "Test unit written to .*" "$log" | tail -1 || true)"
    found=1
  fi
  # libFuzzer's final statistics; a run stopped by a crash has only its
  # status lines ("#N ...").
  runs="$(grep -oP 'stat::number_of_executed_units:\s*\K[0-9]+' "$log" | tail -1 || true)"
  if [ -z "$runs" ]; then
    runs="$(grep -oP '^#\K[0-9]+' "$log" | tail -1 || true)"
  fi
  corpus="$(find "fuzz/corpus/$target" -type f | wc -l)"
  echo "$target: ${runs:-?} inputs tried in ${seconds}s, corpus of $corpus; $verdict"
done
exit "$found"

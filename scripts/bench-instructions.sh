#!/usr/bin/env bash
# Counts the user-space instructions per request of slum's router and of nginx
# with callgrind: repeatable for the same binaries and load, where CPU time on
# this shared 2-core machine moves 10-20% from run to run. Each proxy runs
# alone under valgrind (slum with one router thread, nginx with one worker and
# no master) in front of the same tenant on the same tenement server as
# scripts/bench-router.sh (whose set-up it borrows, BENCH_HOLD=1), and carries
# 10,000 requests (oha -c32) after 2,000 to warm up; only those 10,000 are
# counted. The kernel's share (system calls, TCP) is not: see bench-router.sh
# for CPU time. Installs valgrind, wrk and nginx (Debian) when missing. Needs
# root.
#
# Settings (defaults): BENCH_REQUESTS=10000 BENCH_CONNECTIONS=32.
# BENCH_BASELINE_SLUM=PATH also counts another build of slum (say, the commit
# before a change) on the same database, load and tenant, and prints the
# ratio; that build must know the database's migrations.
set -euo pipefail
cd "$(dirname "$0")/.."
VG_PIDS=""
if [ "$(id -u)" != 0 ]; then
  echo "bench-instructions needs root (the tenement server lives in a network namespace)" >&2
  exit 1
fi
requests="${BENCH_REQUESTS:-10000}"
connections="${BENCH_CONNECTIONS:-32}"
if ! command -v valgrind >/dev/null; then
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends valgrind >&2
fi
OHA="$(scripts/ensure-oha.sh)"
work="$(mktemp -d)"
hold_log="$work/hold.log"
cleanup() {
  # Only what this script started: other benchmarks may share the machine.
  for p in $VG_PIDS; do kill "$p" 2>/dev/null || true; done
  [ -n "${HOLD_PID:-}" ] && kill -INT "$HOLD_PID" 2>/dev/null || true
  sleep 2
  rm -rf "$work"
}
trap cleanup EXIT

BENCH_HOLD=1 BENCH_WORKERS=1 BENCH_LOOKUPS=1000 scripts/bench-router.sh >"$hold_log" 2>&1 &
HOLD_PID=$!
# A fresh machine builds slum in release first: 13 minutes on 2 busy cores.
for _ in $(seq 1800); do
  grep -q "holding (BENCH_HOLD)" "$hold_log" && break
  if ! kill -0 $! 2>/dev/null; then
    cat "$hold_log" >&2
    exit 1
  fi
  sleep 1
done
grep -q "holding (BENCH_HOLD)" "$hold_log" || {
  echo "the set-up (scripts/bench-router.sh) was not ready within 30 minutes:" >&2
  cat "$hold_log" >&2
  exit 1
}
database="$(sed -n 's/^  database: //p' "$hold_log")"
nginx_conf="$(sed -n 's/^  nginx config: //p' "$hold_log")"
host=bench.example.com

# Waits until $1 answers 200 for the tenant, then counts: prints instructions
# per request of the valgrind process $2, whose counts go to $3.*.
count() {
  local url=$1 pid=$2 out=$3
  for _ in $(seq 120); do
    curl -sf -o /dev/null -H "Host: $host" "$url" && break
    sleep 1
  done
  "$OHA" -n 2000 -c "$connections" --no-tui --host "$host" --output-format quiet "$url"
  callgrind_control -z "$pid" >/dev/null 2>&1
  local report
  report="$("$OHA" -n "$requests" -c "$connections" --no-tui --host "$host" --output-format json "$url")"
  callgrind_control -d "$pid" >/dev/null 2>&1
  local ok
  ok="$(echo "$report" | python3 -c 'import json,sys; print(json.load(sys.stdin)["statusCodeDistribution"].get("200", 0))')"
  if [ "$ok" != "$requests" ]; then
    echo "only $ok of $requests requests through $url answered 200" >&2
    exit 1
  fi
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  local total
  total="$(callgrind_annotate "$(ls "$out".*.1 | head -1)" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')"
  echo $((total / requests))
}

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# Starts `$1 serve` (one router thread) under callgrind, its files named $2;
# sets slum_url and slum_pid.
start_slum() {
  local slum_port
  slum_port="$(port)"
  valgrind --tool=callgrind --callgrind-out-file="$work/$2.%p" "$1" serve \
    --database "$database" --listen "127.0.0.1:$slum_port" --api-listen "127.0.0.1:$(port)" \
    --token-file "$work/$2.token" --router-threads 1 >"$work/$2.log" 2>&1 &
  slum_pid=$!
  VG_PIDS="$VG_PIDS $slum_pid"
  slum_url="http://127.0.0.1:$slum_port/"
}

baseline=""
if [ -n "${BENCH_BASELINE_SLUM:-}" ]; then
  start_slum "$BENCH_BASELINE_SLUM" baseline
  baseline="$(count "$slum_url" "$slum_pid" "$work/baseline")"
fi
start_slum target/release/slum slum
slum="$(count "$slum_url" "$slum_pid" "$work/slum")"

# The benchmark's nginx config, with one worker and no master (callgrind
# follows one process), on a port of its own.
nginx_port="$(port)"
mkdir -p "$work/nginx"
chmod 755 "$work" "$work/nginx"
nginx_dir="$(dirname "$nginx_conf")"
sed -e 's/^master_process on;/master_process off;/' \
  -e 's/^worker_processes [0-9]*;/worker_processes 1;/' \
  -e "s#listen 127.0.0.1:[0-9]*;#listen 127.0.0.1:$nginx_port;#" \
  -e "s#$nginx_dir#$work/nginx#g" "$nginx_conf" >"$work/nginx/nginx.conf"
valgrind --tool=callgrind --callgrind-out-file="$work/nginx.%p" "$(command -v nginx || echo /usr/sbin/nginx)" \
  -p "$work/nginx" -c "$work/nginx/nginx.conf" -e "$work/nginx/error.log" >"$work/nginx.log" 2>&1 &
VG_PIDS="$VG_PIDS $!"
nginx="$(count "http://127.0.0.1:$nginx_port/" $! "$work/nginx")"

echo "user-space instructions per request (callgrind; $requests requests, oha -c$connections, after 2,000 to warm up):"
echo "  slum (one router thread): $slum"
echo "  nginx (one worker):       $nginx"
python3 -c "print('  slum/nginx: %.2fx' % ($slum / $nginx))"
if [ -n "$baseline" ]; then
  echo "  slum, baseline build ($BENCH_BASELINE_SLUM): $baseline"
  python3 -c "print('  slum/baseline: %.3fx (%+d instructions a request)' % ($slum / $baseline, $slum - $baseline))"
fi

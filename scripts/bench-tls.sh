#!/usr/bin/env bash
# Benchmarks the router's HTTPS listener against nginx: one tenant behind one
# real tenement server (in its own network namespace), behind `slum serve
# --tls-listen` and behind nginx with the same certificate (ECDSA P-256, made
# here with openssl; into slum with `slum cert add`, into nginx's config from
# the same files). In one run, taking turns: HTTP/1.1 keep-alive requests per
# second (wrk over https), full handshakes per second (a client of the
# example's own: one request per connection, no session resumption, which wrk
# and h2load would do) and HTTP/2 with many streams per connection (h2load),
# each with the proxy's CPU time per request and slum's
# ratios to nginx; the medians over the rounds at the end. See
# examples/bench_tls.rs. Installs wrk, nginx and h2load (Debian) when missing.
# Needs root (the network namespace, and wrk runs in a mount namespace whose
# /etc/hosts names the tenant domain).
#
# Settings (defaults): BENCH_DURATION=10 BENCH_WARMUP=2 (seconds),
# BENCH_ROUNDS=3, BENCH_THREADS=2 BENCH_CONNECTIONS=32 (wrk),
# BENCH_H2_CONNECTIONS=8 BENCH_H2_STREAMS=16 (h2load), BENCH_WORKERS (slum's
# router threads = nginx's workers; default: one per CPU, and one),
# BENCH_TESTS=keepalive,handshakes,h2; BENCH_HOLD=1 sets the paths up and
# waits for Ctrl-C (for profiling by hand).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "bench-tls needs root (it creates network and mount namespaces)" >&2
  exit 1
fi
missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v h2load >/dev/null || missing+=(nghttp2-client)
command -v openssl >/dev/null || missing+=(openssl)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing ${missing[*]}..." >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
if ! command -v ip >/dev/null; then
  apt-get update -qq >&2 && apt-get install -y -qq iproute2 >&2
fi
if ! command -v cargo >/dev/null; then
  echo "cargo is not on root's PATH; try: sudo env PATH=\"\$PATH\" scripts/bench-tls.sh" >&2
  exit 1
fi
SLUM_TEN="$(scripts/ensure-tenement.sh)"
export SLUM_TEN
cargo build --quiet --release --features local-fleet --bin slum --bin slum-demo-app --example bench_tls

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# The certificate: a P-256 leaf for the tenant domain, signed by a P-256 CA of
# this run's own, served as a chain of two (leaf, then issuer) as a leaf and
# its intermediate are. Workers of nginx read nothing here after start (the
# master loads the files), but its temp paths are elsewhere.
domain=bench.example.com
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj "/CN=slum bench CA" -keyout "$work/ca.key" -out "$work/ca.pem" 2>/dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -subj "/CN=$domain" -keyout "$work/leaf.key" -out "$work/leaf.csr" 2>/dev/null
printf 'subjectAltName=DNS:%s\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n' \
  "$domain" >"$work/leaf.ext"
openssl x509 -req -in "$work/leaf.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" \
  -CAcreateserial -days 2 -extfile "$work/leaf.ext" -out "$work/leaf.pem" 2>/dev/null
cat "$work/leaf.pem" "$work/ca.pem" >"$work/chain.pem"

SLUM_BIN="$PWD/target/release/slum"
SLUM_DEMO_APP="$PWD/target/release/slum-demo-app"
WRK="$(command -v wrk)"
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
H2LOAD="$(command -v h2load)"
BENCH_CERT="$work/chain.pem"
BENCH_KEY="$work/leaf.key"
BENCH_CA="$work/ca.pem"
export SLUM_BIN SLUM_DEMO_APP WRK NGINX H2LOAD BENCH_CERT BENCH_KEY BENCH_CA
# Not exec: the trap removes the key and certificates when it ends.
target/release/examples/bench_tls

#!/usr/bin/env bash
# Runs a command next to a throw-away ACME server, for the tests of slum's
# certificate issuance (tests/acme.rs):
#
#   scripts/with-pebble.sh cargo test --features local-fleet --test acme
#
# The ACME server is Let's Encrypt's test CA, Debian's `pebble` package (installed
# with apt-get when missing), with the `pebble-challtestsrv` it ships as its DNS
# server: every name resolves to 127.0.0.1 unless a test says otherwise through
# challtestsrv's management API (`POST /add-a {"host", "addresses"}`), which is
# how a test sends the CA to its own router (another loopback address) or
# nowhere (a challenge that fails). Pebble validates HTTP-01 challenges on
# SLUM_TEST_PEBBLE_HTTP_PORT and TLS-ALPN-01 on SLUM_TEST_PEBBLE_TLS_PORT of the
# address a name resolves to, so a test's router listens on those ports.
#
# Everything listens on loopback only, on free ports, and is stopped and
# deleted when the command ends. Pebble runs without its random sleeps and
# nonce rejections (PEBBLE_VA_NOSLEEP=1, PEBBLE_WFE_NONCEREJECT=0), never
# reuses an authorization (each order is validated), requires External Account
# Binding (with the key below), and issues certificates valid for
# SLUM_PEBBLE_CERT_VALIDITY seconds (default 30), so that a renewal at two
# thirds of the lifetime happens within a test. The command gets:
#
#   SLUM_TEST_PEBBLE_DIRECTORY   the ACME directory URL (https)
#   SLUM_TEST_PEBBLE_CA          PEM of the CA that signed pebble's own HTTPS
#                                certificate (what `slum serve --acme-ca` trusts)
#   SLUM_TEST_PEBBLE_ROOT        PEM of pebble's issuing root (from its
#                                management port's /roots/0): verifies what it issued
#   SLUM_TEST_PEBBLE_EAB_KID, SLUM_TEST_PEBBLE_EAB_HMAC
#                                the External Account Binding key pebble requires
#                                (HMAC key in base64url, as CAs hand them out)
#   SLUM_TEST_PEBBLE_HTTP_PORT, SLUM_TEST_PEBBLE_TLS_PORT
#                                where pebble sends its HTTP-01 and TLS-ALPN-01 checks
#   SLUM_TEST_PEBBLE_LOG         pebble's log (one "Pulled a task ... Value:\"NAME\""
#                                line per challenge it validates)
#   SLUM_TEST_CHALLTESTSRV       challtestsrv's management URL (http)
set -euo pipefail

if [ "$#" -eq 0 ]; then
  echo "usage: $0 COMMAND [ARGS...]" >&2
  exit 2
fi

if ! command -v pebble >/dev/null || ! command -v pebble-challtestsrv >/dev/null \
  || ! command -v openssl >/dev/null || ! command -v curl >/dev/null; then
  if [ "$(id -u)" != 0 ]; then
    echo "pebble, openssl or curl is missing: install the pebble, openssl and curl packages" >&2
    exit 1
  fi
  echo "installing pebble (apt-get)..." >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pebble openssl curl >/dev/null
fi

PBTMP="$(mktemp -d "${TMPDIR:-/tmp}/slum-pebble.XXXXXX")"
PIDS=()
cleanup() {
  # Only the processes started here, by their ids.
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$PBTMP"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A free loopback port from $1 up (nothing accepts a connection on it), not one
# already taken by this script; into $2.
TAKEN=" "
free_port() {
  local port=$1
  while (: </dev/tcp/127.0.0.1/"$port") 2>/dev/null || [[ "$TAKEN" == *" $port "* ]]; do
    port=$((port + 1))
    if [ "$port" -gt $(($1 + 200)) ]; then
      echo "no free port in $1..$(($1 + 200))" >&2
      exit 1
    fi
  done
  TAKEN="$TAKEN$port "
  printf -v "$2" '%s' "$port"
}
free_port 14000 ACME_PORT
free_port 15000 MGMT_PORT
free_port 8053 DNS_PORT
free_port 8055 CTS_PORT
free_port 5002 HTTP_PORT
free_port 5101 TLS_PORT

# Pebble serves its directory over HTTPS only: a throw-away CA and a
# certificate for 127.0.0.1 and localhost (Debian ships no test certificates).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 7 \
  -subj "/CN=slum test pebble CA" -keyout "$PBTMP/ca.key" -out "$PBTMP/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
  -keyout "$PBTMP/key.pem" -out "$PBTMP/server.csr" 2>/dev/null
printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" "basicConstraints=CA:FALSE" \
  "keyUsage=digitalSignature" "extendedKeyUsage=serverAuth" >"$PBTMP/server.ext"
openssl x509 -req -in "$PBTMP/server.csr" -CA "$PBTMP/ca.pem" -CAkey "$PBTMP/ca.key" \
  -CAcreateserial -days 7 -extfile "$PBTMP/server.ext" -out "$PBTMP/cert.pem" 2>/dev/null

EAB_KID="slum-test"
EAB_HMAC="$(openssl rand -base64 48 | tr '+/' '-_' | tr -d '=\n')"
cat >"$PBTMP/pebble.json" <<JSON
{
  "pebble": {
    "listenAddress": "127.0.0.1:$ACME_PORT",
    "managementListenAddress": "127.0.0.1:$MGMT_PORT",
    "certificate": "$PBTMP/cert.pem",
    "privateKey": "$PBTMP/key.pem",
    "httpPort": $HTTP_PORT,
    "tlsPort": $TLS_PORT,
    "ocspResponderURL": "",
    "externalAccountBindingRequired": true,
    "externalAccountMACKeys": { "$EAB_KID": "$EAB_HMAC" },
    "certificateValidityPeriod": ${SLUM_PEBBLE_CERT_VALIDITY:-30}
  }
}
JSON

# Only the DNS server and the management API: the routers under test answer the
# challenges themselves.
pebble-challtestsrv -dns01 "127.0.0.1:$DNS_PORT" -management "127.0.0.1:$CTS_PORT" \
  -http01 "" -https01 "" -tlsalpn01 "" -defaultIPv4 127.0.0.1 -defaultIPv6 "" \
  >"$PBTMP/challtestsrv.log" 2>&1 &
PIDS+=("$!")
PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 PEBBLE_AUTHZREUSE=0 \
  pebble -config "$PBTMP/pebble.json" -dnsserver "127.0.0.1:$DNS_PORT" -strict=false \
  >"$PBTMP/pebble.log" 2>&1 &
PIDS+=("$!")

up=0
for _ in $(seq 1 100); do
  if curl -sf --cacert "$PBTMP/ca.pem" "https://127.0.0.1:$MGMT_PORT/roots/0" \
    -o "$PBTMP/root.pem" 2>/dev/null \
    && curl -sf --cacert "$PBTMP/ca.pem" "https://127.0.0.1:$ACME_PORT/dir" -o /dev/null \
    && curl -s -o /dev/null "http://127.0.0.1:$CTS_PORT/"; then
    up=1
    break
  fi
  sleep 0.1
done
if [ "$up" != 1 ]; then
  echo "pebble or pebble-challtestsrv did not start:" >&2
  cat "$PBTMP/challtestsrv.log" "$PBTMP/pebble.log" >&2
  exit 1
fi

export SLUM_TEST_PEBBLE_DIRECTORY="https://127.0.0.1:$ACME_PORT/dir"
export SLUM_TEST_PEBBLE_CA="$PBTMP/ca.pem"
export SLUM_TEST_PEBBLE_ROOT="$PBTMP/root.pem"
export SLUM_TEST_PEBBLE_EAB_KID="$EAB_KID"
export SLUM_TEST_PEBBLE_EAB_HMAC="$EAB_HMAC"
export SLUM_TEST_PEBBLE_HTTP_PORT="$HTTP_PORT"
export SLUM_TEST_PEBBLE_TLS_PORT="$TLS_PORT"
export SLUM_TEST_PEBBLE_LOG="$PBTMP/pebble.log"
export SLUM_TEST_CHALLTESTSRV="http://127.0.0.1:$CTS_PORT"
echo "pebble $(dpkg-query -W -f='${Version}' pebble 2>/dev/null || echo '?') at $SLUM_TEST_PEBBLE_DIRECTORY" \
  "(challenges on ports $HTTP_PORT and $TLS_PORT, DNS on $DNS_PORT; throw-away, $PBTMP)" >&2
status=0
"$@" || status=$?
exit "$status"

#!/usr/bin/env bash
# Runs a command next to a throw-away PostgreSQL cluster, for the tests of slum's
# PostgreSQL backend:
#
#   scripts/with-postgres.sh env SLUM_TEST_BACKEND=postgres cargo test --test fleet_db
#
# The cluster lives in a temp dir, listens on 127.0.0.1 only (a free port from
# 54329 up) with trust authentication, and is stopped and deleted when the
# command ends, whether it passed, failed or was interrupted. The command gets
# its admin URL in SLUM_TEST_POSTGRES. PostgreSQL's server binaries come from
# /usr/lib/postgresql/*/bin (installed with apt-get when missing); as root the
# cluster runs as the `postgres` user, since PostgreSQL refuses to run as root.
# Durability settings are off (fsync): nothing here outlives the command.
set -euo pipefail

if [ "$#" -eq 0 ]; then
  echo "usage: $0 COMMAND [ARGS...]" >&2
  exit 2
fi

pg_bin() {
  local dirs
  dirs="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
  [ -n "$dirs" ] && [ -x "$dirs/initdb" ] && [ -x "$dirs/pg_ctl" ] && echo "$dirs"
}

BIN="$(pg_bin || true)"
if [ -z "$BIN" ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "PostgreSQL's server binaries are missing: install the postgresql package" >&2
    exit 1
  fi
  echo "installing PostgreSQL (apt-get)..." >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  BIN="$(pg_bin || true)"
  if [ -z "$BIN" ]; then
    echo "apt-get installed postgresql but no /usr/lib/postgresql/*/bin/initdb appeared" >&2
    exit 1
  fi
fi

# Who runs the cluster: ourselves, or `postgres` when we are root.
as_owner() { "$@"; }
OWNER="$(id -un)"
if [ "$(id -u)" = 0 ]; then
  OWNER=postgres
  if ! id -u postgres >/dev/null 2>&1; then
    useradd --system --user-group --home-dir /var/lib/postgresql --shell /bin/bash postgres
  fi
  if command -v runuser >/dev/null; then
    as_owner() { runuser -u postgres -- "$@"; }
  else
    as_owner() { su -s /bin/sh postgres -c "$(printf '%q ' "$@")"; }
  fi
fi

PGTMP="$(mktemp -d "${TMPDIR:-/tmp}/slum-pg.XXXXXX")"
chmod 755 "$PGTMP"
chown "$OWNER" "$PGTMP"
STARTED=0
cleanup() {
  if [ "$STARTED" = 1 ]; then
    as_owner "$BIN/pg_ctl" -D "$PGTMP/data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$PGTMP"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A free port: nothing accepts a connection on it.
PORT=54329
while (: </dev/tcp/127.0.0.1/"$PORT") 2>/dev/null; do
  PORT=$((PORT + 1))
  if [ "$PORT" -gt 54429 ]; then
    echo "no free port in 54329..54429 for PostgreSQL" >&2
    exit 1
  fi
done

as_owner "$BIN/initdb" -D "$PGTMP/data" -U postgres --auth=trust --encoding=UTF8 \
  --no-locale >"$PGTMP/initdb.log" 2>&1 || {
  cat "$PGTMP/initdb.log" >&2
  exit 1
}
STARTED=1
as_owner "$BIN/pg_ctl" -D "$PGTMP/data" -l "$PGTMP/postgres.log" -w -t 60 start -o \
  "-c listen_addresses=127.0.0.1 -p $PORT -c unix_socket_directories=$PGTMP \
   -c max_connections=300 -c fsync=off -c full_page_writes=off \
   -c dynamic_shared_memory_type=mmap" >/dev/null || {
  cat "$PGTMP/postgres.log" >&2
  exit 1
}
for _ in $(seq 1 60); do
  if "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT"; then
    break
  fi
  sleep 0.5
done
"$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT" || {
  cat "$PGTMP/postgres.log" >&2
  exit 1
}

export SLUM_TEST_POSTGRES="postgres://postgres@127.0.0.1:$PORT/postgres"
# Tests that restart the database under traffic run this (as root or not).
cat >"$PGTMP/restart" <<RESTART
#!/usr/bin/env bash
set -euo pipefail
if [ "\$(id -u)" = 0 ] && [ "$OWNER" != root ]; then
  exec runuser -u "$OWNER" -- "$BIN/pg_ctl" -D "$PGTMP/data" -m fast -w -t 60 restart >/dev/null
fi
exec "$BIN/pg_ctl" -D "$PGTMP/data" -m fast -w -t 60 restart >/dev/null
RESTART
chmod 755 "$PGTMP/restart"
export SLUM_TEST_POSTGRES_RESTART="$PGTMP/restart"
echo "PostgreSQL $("$BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PORT (throw-away, $PGTMP)" >&2
status=0
"$@" || status=$?
exit "$status"

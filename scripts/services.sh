#!/usr/bin/env bash
# Make sure PostgreSQL and Redis answer on loopback for the tests. Idempotent:
#   - a port that already answers is left alone (these machines and CI start both before a session);
#   - otherwise the server is started from Debian's packages, installed first when missing (as root).
# PostgreSQL: cluster "main" of the newest installed version, trust auth on loopback, roles postgres
# and root, databases test and root. Redis: no persistence. Not root and a package missing: say so and
# exit 0, so the tests that need the server skip.
# Overrides (for testing this script on spare ports): PG_PORT, PG_CLUSTER, REDIS_PORT.
set -euo pipefail

PG_PORT="${PG_PORT:-5432}"
PG_CLUSTER="${PG_CLUSTER:-main}"
REDIS_PORT="${REDIS_PORT:-6379}"

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() {  # port, name
  for _ in $(seq 1 100); do answers "$1" && return 0; sleep 0.2; done
  echo "services: $2 did not come up on 127.0.0.1:$1" >&2
  return 1
}

apt_install() {
  if [ "$(id -u)" != 0 ]; then
    echo "services: $* missing and not root; tests that need it will skip" >&2
    return 1
  fi
  echo "services: installing $*" >&2
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

as_postgres() { if [ "$(id -u)" = 0 ]; then su postgres -s /bin/sh -c "$1"; else sh -c "$1"; fi; }

start_postgres() {
  if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    apt_install postgresql || return 0
  fi
  local version
  version="$(ls /usr/lib/postgresql | sort -V | tail -1)"
  if [ ! -d "/etc/postgresql/$version/$PG_CLUSTER" ]; then
    # initdb refuses root: pg_createcluster runs it as the postgres user
    pg_createcluster "$version" "$PG_CLUSTER" --port "$PG_PORT" -- --auth-local=trust --auth-host=trust >/dev/null
  fi
  local conf="/etc/postgresql/$version/$PG_CLUSTER"
  # loopback only, trust auth first (the packaged cluster asks for passwords on TCP)
  if ! grep -q '^# cds-tests' "$conf/pg_hba.conf"; then
    { printf '# cds-tests: trust on loopback for the test suite\n'
      printf 'local all all trust\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n'
      cat "$conf/pg_hba.conf"; } >"$conf/pg_hba.conf.new"
    mv "$conf/pg_hba.conf.new" "$conf/pg_hba.conf"
    chown postgres:postgres "$conf/pg_hba.conf" 2>/dev/null || true
  fi
  local port
  port="$(pg_conftool "$version" "$PG_CLUSTER" show -s port 2>/dev/null || echo "$PG_PORT")"
  if [ "$port" != "$PG_PORT" ]; then
    echo "services: cluster $version/$PG_CLUSTER is set to port $port, not $PG_PORT; leaving it alone" >&2
    return 0
  fi
  pg_ctlcluster --skip-systemctl-redirect "$version" "$PG_CLUSTER" start || \
    pg_ctlcluster --skip-systemctl-redirect "$version" "$PG_CLUSTER" restart
  wait_for "$PG_PORT" PostgreSQL
  local psql="psql -h 127.0.0.1 -p $PG_PORT -U postgres -d postgres -v ON_ERROR_STOP=1 -qtAc"
  as_postgres "$psql \"SELECT 1 FROM pg_roles WHERE rolname='root'\"" | grep -q 1 || \
    as_postgres "$psql 'CREATE ROLE root SUPERUSER LOGIN'"
  for db in test root; do
    as_postgres "$psql \"SELECT 1 FROM pg_database WHERE datname='$db'\"" | grep -q 1 || \
      as_postgres "$psql 'CREATE DATABASE $db'"
  done
  echo "services: PostgreSQL $version/$PG_CLUSTER on 127.0.0.1:$PG_PORT" >&2
}

start_redis() {
  if ! command -v redis-server >/dev/null 2>&1; then
    apt_install redis-server || return 0
  fi
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
    --logfile "/tmp/redis-$REDIS_PORT.log" --pidfile "/tmp/redis-$REDIS_PORT.pid" >/dev/null
  wait_for "$REDIS_PORT" Redis
  echo "services: Redis on 127.0.0.1:$REDIS_PORT" >&2
}

answers "$PG_PORT" || start_postgres
answers "$REDIS_PORT" || start_redis

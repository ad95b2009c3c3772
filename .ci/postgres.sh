#!/usr/bin/env bash
# A throwaway PostgreSQL server on 127.0.0.1 for the distributed Optuna test (tests/test_optuna_postgres.py).
#
#   eval "$(bash .ci/postgres.sh start)"   # installs if needed, starts, prints `export PRUNEGYM_TEST_POSTGRES_URL=...`
#   bash .ci/postgres.sh url               # prints the URL of the running server
#   bash .ci/postgres.sh stop              # stops the server and deletes its data
#
# Idempotent: `start` on a running server only prints its URL again; `stop` on none does nothing. The cluster lives
# in $PRUNEGYM_PG_DIR (default /tmp/prunegym-postgres), owned by the `postgres` user when run as root (PostgreSQL
# refuses to run as root), listens on loopback only (TCP 127.0.0.1 on a free port, and a Unix socket in that
# folder), with a random password for the `prunegym` role over TCP. Logs go to stderr; only the export line goes
# to stdout. Needs python3 (to pick a free port) and, when PostgreSQL is absent, root for apt-get.
set -euo pipefail
NAME=postgres.sh
# shellcheck source=.ci/lib.sh
source "$(dirname "$0")/lib.sh"

STATE="${PRUNEGYM_PG_DIR:-/tmp/prunegym-postgres}"
DATA="$STATE/data"
DB=prunegym_test
ROLE=prunegym

find_bindir() {
    local d
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        [[ -x "$d/pg_ctl" && -x "$d/initdb" ]] && { echo "$d"; return 0; }
    done
    if command -v pg_ctl >/dev/null 2>&1 && command -v initdb >/dev/null 2>&1; then
        dirname "$(command -v pg_ctl)"
        return 0
    fi
    return 1
}

ensure_installed() {
    if find_bindir >/dev/null; then return 0; fi
    apt_install postgresql
    find_bindir >/dev/null || { log "apt-get installed postgresql but no pg_ctl/initdb was found"; exit 1; }
}

# Run a PostgreSQL binary as the cluster's owner (postgres when we are root, else ourselves).
as_owner() {
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

running() {
    [[ -f "$STATE/port" && -f "$DATA/postmaster.pid" ]] || return 1
    as_owner "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1
}

print_url() {
    [[ -f "$STATE/url" ]] || { log "no server in $STATE; run: bash .ci/postgres.sh start"; exit 1; }
    echo "export PRUNEGYM_TEST_POSTGRES_URL=$(cat "$STATE/url")"
}

start() {
    ensure_installed
    BIN=$(find_bindir)
    if running; then
        log "already running on 127.0.0.1:$(cat "$STATE/port") ($STATE)"
        print_url
        return 0
    fi
    if [[ $(id -u) -eq 0 ]] && ! id postgres >/dev/null 2>&1; then
        useradd --system --home-dir "$STATE" --shell /usr/sbin/nologin postgres
    fi
    rm -rf "$STATE"
    mkdir -p "$STATE"
    chmod 700 "$STATE"
    local password port
    password=$(random_password)
    port=$(free_port)
    printf '%s\n' "$password" >"$STATE/pwfile"
    [[ $(id -u) -eq 0 ]] && chown -R postgres:postgres "$STATE"
    log "initializing a cluster in $DATA"
    as_owner "$BIN/initdb" -D "$DATA" -U postgres --pwfile="$STATE/pwfile" --auth-local=trust \
        --auth-host=scram-sha-256 --encoding=UTF8 --no-sync >"$STATE/initdb.log" 2>&1 ||
        { cat "$STATE/initdb.log" >&2; exit 1; }
    log "starting on 127.0.0.1:$port"
    as_owner "$BIN/pg_ctl" -D "$DATA" -l "$STATE/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $STATE -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
        start >&2 || { cat "$STATE/server.log" >&2; exit 1; }
    echo "$port" >"$STATE/port"
    local psql="$BIN/psql"
    [[ -x "$psql" ]] || psql=$(command -v psql)
    as_owner "$psql" -q -v ON_ERROR_STOP=1 -h "$STATE" -p "$port" -U postgres -d postgres >&2 <<SQL
CREATE ROLE $ROLE LOGIN PASSWORD '$password';
CREATE DATABASE $DB OWNER $ROLE;
SQL
    rm -f "$STATE/pwfile"
    echo "postgresql://$ROLE:$password@127.0.0.1:$port/$DB" >"$STATE/url"
    chmod 600 "$STATE/url"
    log "database $DB ready"
    print_url
}

stop() {
    if ! BIN=$(find_bindir); then
        rm -rf "$STATE"
        return 0
    fi
    if [[ -f "$DATA/postmaster.pid" ]]; then
        as_owner "$BIN/pg_ctl" -D "$DATA" -m fast -w stop >&2 || true
    fi
    rm -rf "$STATE"
    log "stopped"
}

dispatch "$@"

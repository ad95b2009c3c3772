#!/usr/bin/env bash
# A throwaway Redis server on 127.0.0.1 for the device-worker tests (tests/test_remote*.py).
#
#   eval "$(bash .ci/redis.sh start)"   # installs if needed, starts, prints `export PRUNEGYM_TEST_REDIS_URL=...`
#   bash .ci/redis.sh url               # prints the URL of the running server
#   bash .ci/redis.sh stop              # stops the server and deletes its folder
#
# Idempotent like .ci/postgres.sh: loopback only, a free port, a random password (requirepass), no persistence;
# state in $PRUNEGYM_REDIS_DIR (default /tmp/prunegym-redis). Logs go to stderr; only the export line to stdout.
set -euo pipefail
NAME=redis.sh
# shellcheck source=.ci/lib.sh
source "$(dirname "$0")/lib.sh"

STATE="${PRUNEGYM_REDIS_DIR:-/tmp/prunegym-redis}"

running() {
    [[ -f "$STATE/url" && -f "$STATE/redis.pid" ]] && kill -0 "$(cat "$STATE/redis.pid")" 2>/dev/null
}

print_url() {
    [[ -f "$STATE/url" ]] || { log "no server in $STATE; run: bash .ci/redis.sh start"; exit 1; }
    echo "export PRUNEGYM_TEST_REDIS_URL=$(cat "$STATE/url")"
}

start() {
    command -v redis-server >/dev/null 2>&1 || apt_install redis-server
    if running; then
        log "already running ($STATE)"
        print_url
        return 0
    fi
    rm -rf "$STATE"
    mkdir -p "$STATE"
    chmod 700 "$STATE"
    local password port
    password=$(random_password)
    port=$(free_port)
    cat >"$STATE/redis.conf" <<CONF
bind 127.0.0.1
port $port
requirepass $password
save ""
appendonly no
daemonize yes
dir $STATE
pidfile $STATE/redis.pid
logfile $STATE/server.log
CONF
    chmod 600 "$STATE/redis.conf"
    log "starting on 127.0.0.1:$port"
    redis-server "$STATE/redis.conf" >&2
    local i
    for i in $(seq 50); do
        [[ -f "$STATE/redis.pid" ]] && redis-cli -p "$port" -a "$password" --no-auth-warning ping >/dev/null 2>&1 && break
        sleep 0.1
    done
    redis-cli -p "$port" -a "$password" --no-auth-warning ping >/dev/null || { cat "$STATE/server.log" >&2; exit 1; }
    echo "redis://:$password@127.0.0.1:$port/0" >"$STATE/url"
    chmod 600 "$STATE/url"
    log "ready"
    print_url
}

stop() {
    if [[ -f "$STATE/redis.pid" ]]; then
        kill "$(cat "$STATE/redis.pid")" 2>/dev/null || true
        sleep 0.2
    fi
    rm -rf "$STATE"
    log "stopped"
}

dispatch "$@"

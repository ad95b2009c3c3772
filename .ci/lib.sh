#!/usr/bin/env bash
# What .ci/postgres.sh and .ci/redis.sh share: logging to stderr, a Debian install when the server is absent, a
# random password, a free loopback port, and the start|stop|url dispatch (exit 2 on a bad verb).
# Source it after setting NAME (the script's name in messages).

log() { echo "${NAME:-ci}: $*" >&2; }

# apt_install PACKAGE: install a Debian package (needs root; says how otherwise).
apt_install() {
    if [[ $(id -u) -ne 0 ]]; then
        log "$1 is not installed and this is not root; run: sudo apt-get install -y $1"
        exit 1
    fi
    log "installing $1 from Debian's packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends "$1" >&2
}

random_password() { python3 -c 'import secrets; print(secrets.token_hex(12))'; }

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# dispatch VERB: run the script's start/stop/print_url functions.
dispatch() {
    case "${1:-start}" in
    start) start ;;
    stop) stop ;;
    url) print_url ;;
    *)
        log "usage: $0 start|stop|url"
        exit 2
        ;;
    esac
}

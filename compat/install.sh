#!/usr/bin/env bash
# Installs the Kafka clients used by the compat checks. Safe to run again:
# each step is skipped when what it installs is already there.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

log() { echo "install: $*"; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# kcat (Debian package; links the system librdkafka).
if command -v kcat >/dev/null 2>&1; then
    log "kcat present ($(kcat -V 2>&1 | head -n1))"
else
    log "installing kcat"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq kcat
fi

# psql (Debian's PostgreSQL client).
if command -v psql >/dev/null 2>&1; then
    log "psql present ($(psql --version))"
else
    log "installing postgresql-client"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq postgresql-client
fi

# Python clients in compat/.venv. A stamp holding a copy of requirements.txt
# tells whether the venv already matches it.
venv="$here/.venv"
stamp="$venv/.requirements.installed"
if [ -x "$venv/bin/python" ] && cmp -s "$here/requirements.txt" "$stamp"; then
    log "python venv up to date ($venv)"
else
    log "installing python clients into $venv"
    # A venv left half made (no pip) by an interrupted run is made again.
    [ -x "$venv/bin/pip" ] || python3 -m venv --clear "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check -r "$here/requirements.txt"
    "$venv/bin/python" -c 'import confluent_kafka, kafka, snappy, lz4.frame, zstandard, psycopg'
    cp "$here/requirements.txt" "$stamp"
fi

# kafkajs, pinned by package-lock.json.
js="$here/kafkajs"
if [ -f "$js/node_modules/kafkajs/package.json" ] &&
   [ -f "$js/node_modules/.package-lock.json" ] &&
   ! [ "$js/package-lock.json" -nt "$js/node_modules/.package-lock.json" ]; then
    log "kafkajs present ($(node -p "require('$js/node_modules/kafkajs/package.json').version"))"
else
    log "installing kafkajs"
    if [ -f "$js/package-lock.json" ]; then
        (cd "$js" && npm ci --no-audit --no-fund --loglevel=error)
    else
        (cd "$js" && npm install --no-audit --no-fund --loglevel=error)
    fi
fi

log "done"

# Shared helpers for the compat scripts. Source it, then call quarry_start:
#
#   . "$(dirname "$0")/../lib.sh"
#   quarry_start            # sets QUARRY_BOOTSTRAP, QUARRY_HTTP, QUARRY_SQL, QUARRY_PID, QUARRY_TMP
#   quarry_restart          # kill -9 the node, start it again: same ports, same data
#
# The node gets free loopback ports, a fresh temporary data directory and a
# config file ($QUARRY_TMP/quarry.toml: no initial rebalance delay, sessions
# from 1 s), and is stopped when the calling script exits. QUARRY_BIN
# overrides the binary (default: target/release/quarry under the repository
# root).

COMPAT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$COMPAT_DIR/.." && pwd)"
COMPAT_PYTHON="$COMPAT_DIR/.venv/bin/python"

die() {
    echo "$COMPAT_NAME: FAIL: $*" >&2
    exit 1
}

# Prints a TCP port that is free on 127.0.0.1 right now.
free_port() {
    python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

# Prints the node's log, shortened to its first and last lines when long.
show_log() {
    if [ "$(wc -l <"$QUARRY_LOG")" -le 60 ]; then
        cat "$QUARRY_LOG"
    else
        head -n 25 "$QUARRY_LOG"
        echo "[...]"
        tail -n 25 "$QUARRY_LOG"
    fi
}

port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

quarry_start() {
    QUARRY_EXE="${QUARRY_BIN:-${CARGO_TARGET_DIR:-target}/${QUARRY_PROFILE:-release}/quarry}"
    case "$QUARRY_EXE" in /*) ;; *) QUARRY_EXE="$REPO_ROOT/$QUARRY_EXE" ;; esac
    [ -x "$QUARRY_EXE" ] || die "quarry binary not found at $QUARRY_EXE (build it, or set QUARRY_BIN)"

    QUARRY_TMP="$(mktemp -d "${TMPDIR:-/tmp}/quarry-compat.XXXXXX")"
    QUARRY_LOG="$QUARRY_TMP/quarry.log"
    mkdir "$QUARRY_TMP/data"
    # The group scenarios need a new group's first generation to start at once,
    # and sessions short enough to wait out a killed member.
    printf '%s\n' 'group_initial_rebalance_delay_ms = 0' 'group_min_session_timeout_ms = 1000' \
        >"$QUARRY_TMP/quarry.toml"
    local kport http_port sql_port
    kport="$(free_port)"
    http_port="$(free_port)"
    while [ "$http_port" = "$kport" ]; do http_port="$(free_port)"; done
    sql_port="$(free_port)"
    while [ "$sql_port" = "$kport" ] || [ "$sql_port" = "$http_port" ]; do sql_port="$(free_port)"; done

    QUARRY_BOOTSTRAP="127.0.0.1:$kport"
    QUARRY_HTTP="127.0.0.1:$http_port"
    QUARRY_SQL="127.0.0.1:$sql_port"
    trap quarry_stop EXIT
    trap 'exit 130' INT TERM
    quarry_launch
    export QUARRY_BOOTSTRAP QUARRY_HTTP QUARRY_SQL QUARRY_TMP
    echo "$COMPAT_NAME: quarry pid $QUARRY_PID on $QUARRY_BOOTSTRAP (data $QUARRY_TMP/data)"
}

# Starts the node on QUARRY_BOOTSTRAP and QUARRY_HTTP with its data and config
# in QUARRY_TMP, appending to its log, and waits until the Kafka port accepts
# connections.
quarry_launch() {
    "$QUARRY_EXE" serve --config "$QUARRY_TMP/quarry.toml" --data-dir "$QUARRY_TMP/data" \
        --kafka-listen "$QUARRY_BOOTSTRAP" --http-listen "$QUARRY_HTTP" --sql-listen "$QUARRY_SQL" \
        >>"$QUARRY_LOG" 2>&1 &
    QUARRY_PID=$!

    local deadline=$((SECONDS + ${QUARRY_START_TIMEOUT:-30}))
    until port_open "${QUARRY_BOOTSTRAP##*:}"; do
        if ! kill -0 "$QUARRY_PID" 2>/dev/null; then
            die "quarry exited during startup (log below)"
        fi
        [ "$SECONDS" -lt "$deadline" ] || die "quarry did not accept connections on $QUARRY_BOOTSTRAP within ${QUARRY_START_TIMEOUT:-30}s"
        sleep 0.1
    done
}

# Kills the node with SIGKILL (no shutdown: nothing is flushed on the way out)
# and starts it again on the same ports and data directory.
quarry_restart() {
    [ -n "${QUARRY_PID:-}" ] || die "quarry_restart: no node running"
    local old=$QUARRY_PID
    kill -9 "$old" 2>/dev/null || true
    wait "$old" 2>/dev/null || true
    echo "--- compat: pid $old killed with SIGKILL, starting again" >>"$QUARRY_LOG"
    quarry_launch
    echo "$COMPAT_NAME: quarry pid $old killed (SIGKILL), restarted as pid $QUARRY_PID on $QUARRY_BOOTSTRAP"
}

# Stops the node. On failure the temporary directory (data and log) is kept
# and the log is shown.
quarry_stop() {
    local status=$?
    if [ -n "${QUARRY_PID:-}" ] && kill -0 "$QUARRY_PID" 2>/dev/null; then
        kill "$QUARRY_PID" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$QUARRY_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$QUARRY_PID" 2>/dev/null || true
        wait "$QUARRY_PID" 2>/dev/null || true
    fi
    QUARRY_PID=
    if [ -n "${QUARRY_TMP:-}" ]; then
        if [ "$status" -eq 0 ]; then
            rm -rf "$QUARRY_TMP"
        else
            echo "$COMPAT_NAME: quarry log ($QUARRY_LOG):" >&2
            show_log >&2
        fi
    fi
    exit "$status"
}

require_venv() {
    [ -x "$COMPAT_PYTHON" ] || die "compat/.venv missing: run compat/install.sh"
}

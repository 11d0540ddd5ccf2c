#!/usr/bin/env bash
# librdkafka's own test suite (its tests/ directory) against a fresh node.
#
#   compat/librdkafka/run.sh               # the tests in allow.txt; exits non-zero if one fails
#   compat/librdkafka/run.sh --all         # every test that needs a broker, one line each
#   compat/librdkafka/run.sh 0012 0107/noautocreate 0081+do_test_DeleteGroups  # just these
#
# Options: -j N (tests run at once, default 10: they mostly wait, not compute),
# --timeout SECONDS (per test, default 300), --quick (librdkafka's quick mode:
# fewer messages, and the sub-tests not marked quick are left out), --logs DIR
# (per-test logs and results.tsv; default
# $CARGO_TARGET_DIR/librdkafka-tests/logs).
#
# The librdkafka sources come from the rdkafka-sys crate in the cargo registry
# (the version bench/Cargo.lock names; `cargo fetch` for bench/ brings it).
# They are copied to $CARGO_TARGET_DIR/librdkafka-tests/<version> (default
# target/) and built there once; later runs reuse that build. Missing Debian
# packages for the build are installed with apt-get first.
#
# Each test number runs in its own test-runner process (`TESTS=<n>
# test-runner -L`: the number's broker tests, not its local ones). Tests of
# librdkafka's default scenario share one node (topics auto-created with 4
# partitions, otherwise Kafka's defaults); those of the "noautocreate"
# scenario (written NUMBER/noautocreate) share a second node with
# auto-creation off. NUMBER+NAME runs only the sub-tests whose name contains
# NAME (librdkafka's SUBTESTS). Tests that need no broker (mock cluster and
# local tests) are not run.
#
# The last line is "librdkafka: N passed, M failed" (with --all, also "K
# skipped"); --all always exits 0, it is for finding what passes. results.tsv
# in the log directory has one line per test: test, result, seconds, first
# error.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
NAME=librdkafka
# What the tests take the broker to be: it decides which tests apply and which
# API versions they expect.
KAFKA_VERSION=4.1.0
CONFIGURE_ARGS=(--no-download --disable-ssl --disable-gssapi --disable-curl)
# rapidjson: the tests that check statistics JSON need it.
APT_PACKAGES=(build-essential python3 zlib1g-dev libzstd-dev liblz4-dev rapidjson-dev)

log() { echo "$NAME: $*"; }
die() {
    echo "$NAME: FAIL: $*" >&2
    echo "$NAME: 0 passed, 1 failed"
    exit 1
}

mode=allow
jobs=10
timeout=300
quick=
logs=
selected=()
while [ $# -gt 0 ]; do
    case "$1" in
        --all) mode=all ;;
        -j) jobs="$2"; shift ;;
        -j*) jobs="${1#-j}" ;;
        --timeout) timeout="$2"; shift ;;
        --quick) quick=-Q ;;
        --logs) logs="$2"; shift ;;
        -h|--help) sed -n '2,/^set -uo/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; exit 0 ;;
        [0-9][0-9][0-9][0-9]|[0-9][0-9][0-9][0-9][/+]*) mode=list; selected+=("$1") ;;
        *) echo "usage: $0 [--all] [-j N] [--timeout S] [--quick] [--logs DIR] [TEST[/noautocreate][+SUBTEST]...]" >&2; exit 2 ;;
    esac
    shift
done

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Installs the Debian packages the build needs that are not installed yet.
install_packages() {
    command -v dpkg-query >/dev/null 2>&1 || { log "no dpkg: assuming ${APT_PACKAGES[*]} are present"; return 0; }
    local missing=() p
    for p in "${APT_PACKAGES[@]}"; do
        [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = "install ok installed" ] || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing ${missing[*]}"
    as_root apt-get update -qq || return 1
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# Prints the librdkafka directory of the rdkafka-sys crate in the cargo registry.
find_source() {
    local want dir
    want="$(awk '/^name = "rdkafka-sys"$/ { getline; gsub(/"/, "", $3); print $3; exit }' "$repo/bench/Cargo.lock" 2>/dev/null)"
    # shellcheck disable=SC2086
    dir="$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/rdkafka-sys-${want:-*}/librdkafka 2>/dev/null | sort -V | tail -n 1)"
    [ -n "$dir" ] && echo "$dir"
}

# --- librdkafka and its test-runner -------------------------------------------

src="$(find_source)"
if [ -z "$src" ]; then
    log "rdkafka-sys not in the cargo registry: cargo fetch for bench/"
    cargo fetch --manifest-path "$repo/bench/Cargo.toml" >/dev/null || die "cargo fetch failed"
    src="$(find_source)"
    [ -n "$src" ] || die "rdkafka-sys sources not found in the cargo registry"
fi
hexver="$(awk '$1 == "#define" && $2 == "RD_KAFKA_VERSION" { print $3 }' "$src/src/rdkafka.h")"
[ -n "$hexver" ] || die "no RD_KAFKA_VERSION in $src/src/rdkafka.h"
version="$(printf '%d.%d.%d' "0x${hexver:2:2}" "0x${hexver:4:2}" "0x${hexver:6:2}")"

target="${CARGO_TARGET_DIR:-target}"
case "$target" in /*) ;; *) target="$repo/$target" ;; esac
build_root="$target/librdkafka-tests"
build="$build_root/$version"
tests_dir="$build/tests"
stamp="$build/.built"
stamp_text="librdkafka $version; configure ${CONFIGURE_ARGS[*]}; with ${APT_PACKAGES[*]}"

install_packages || die "could not install ${APT_PACKAGES[*]}"
if [ -x "$tests_dir/test-runner" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$stamp_text" ]; then
    log "reusing librdkafka $version test build in $build"
else
    log "building librdkafka $version and its tests in $build (a few minutes)"
    build_log="$build_root/build-$version.log"
    rm -rf "$build"
    mkdir -p "$build_root"
    { cp -R "$src" "$build" && chmod -R u+w "$build"; } || die "cannot copy $src"
    started=$SECONDS
    ncpu="$(nproc 2>/dev/null || echo 2)"
    if ! (cd "$build" && ./configure "${CONFIGURE_ARGS[@]}" &&
          make -j"$ncpu" libs && make -C tests -j"$ncpu" test-runner) >"$build_log" 2>&1; then
        tail -n 30 "$build_log" >&2
        die "librdkafka build failed (log: $build_log)"
    fi
    echo "$stamp_text" >"$stamp"
    log "built in $((SECONDS - started))s"
fi

# Prints "NUMBER SCENARIO KNOWN" for each test number and scenario in test.c's
# list that needs a broker: neither local (TEST_F_LOCAL: no broker, or its own
# mock cluster), nor manual, nor a mock-cluster test. SCENARIO is "default" or
# "noautocreate"; KNOWN is "k" when librdkafka marks one of the tests as a
# known issue (those run only with -k), "-" otherwise.
broker_tests() {
    python3 - "$tests_dir/test.c" <<'PY'
import re, sys
src = open(sys.argv[1]).read()
body = src[src.index("struct test tests[] = {"):]
body = body[:body.index("{NULL}")]
units = {}
pos = 0
while (start := body.find("_TEST(", pos)) >= 0:
    depth, i = 0, start + len("_TEST")
    while True:
        depth += {"(": 1, ")": -1}.get(body[i], 0)
        if depth == 0:
            break
        i += 1
    entry, pos = body[start + len("_TEST("):i], i
    name, flags = [a.strip() for a in entry.split(",")[:2]]
    flags = {f.strip() for f in flags.split("|")}
    if flags & {"TEST_F_LOCAL", "TEST_F_MANUAL"} or "_mock" in name or name.endswith("_local"):
        continue
    m = re.search(r'\.scenario\s*=\s*"([^"]*)"', entry)
    for scenario in (m.group(1).split(",") if m else ["default"]):
        if scenario in ("default", "noautocreate"):
            key = (name.split("_")[0], scenario)
            units[key] = units.get(key, False) or "TEST_F_KNOWN_ISSUE" in flags
for (num, scenario), known in units.items():
    print(num, scenario, "k" if known else "-")
PY
}

# A unit is NUMBER[/noautocreate][+SUBTEST].
declare -A known_issue=() quick_unit=()
all_units=()
while read -r num scenario known; do
    unit="$num"
    [ "$scenario" = default ] || unit="$num/$scenario"
    all_units+=("$unit")
    [ "$known" = k ] && known_issue[$unit]=1
done < <(broker_tests)
[ ${#all_units[@]} -gt 0 ] || die "no tests found in $tests_dir/test.c"

case "$mode" in
    all) units=("${all_units[@]}") ;;
    list) units=("${selected[@]}") ;;
    allow)
        # allow.txt: "UNIT [quick|first]  # comment"; "quick" runs it in quick mode,
        # "first" starts it before the others (the longest tests, so that the run
        # does not end waiting on one of them alone).
        units=()
        later=()
        while read -r unit how _; do
            case "$unit" in [0-9][0-9][0-9][0-9]|[0-9][0-9][0-9][0-9][/+]*) ;; *) continue ;; esac
            case "$how" in
                first) units+=("$unit") ;;
                quick) quick_unit[$unit]=1; later+=("$unit") ;;
                *) later+=("$unit") ;;
            esac
        done <"$here/allow.txt"
        units+=("${later[@]}")
        ;;
esac
[ ${#units[@]} -gt 0 ] || die "no tests selected"
need_noauto=
for unit in "${units[@]}"; do
    case "$unit" in */noautocreate*) need_noauto=1 ;; esac
done

# --- the nodes ------------------------------------------------------------------

quarry="${QUARRY_BIN:-$target/${QUARRY_PROFILE:-release}/quarry}"
case "$quarry" in /*) ;; *) quarry="$repo/$quarry" ;; esac
[ -x "$quarry" ] || die "quarry binary not found at $quarry (build it, or set QUARRY_BIN)"

free_port() {
    python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

node_tmp="$(mktemp -d "${TMPDIR:-/tmp}/quarry-librdkafka.XXXXXX")"
declare -A node_pid=() node_addr=()
status=1

stop_nodes() {
    local scenario pid
    for scenario in "${!node_pid[@]}"; do
        pid="${node_pid[$scenario]}"
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null
            for _ in $(seq 50); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
            kill -9 "$pid" 2>/dev/null
        fi
        wait "$pid" 2>/dev/null
    done
    node_pid=()
    if [ "$status" -eq 0 ]; then
        rm -rf "$node_tmp"
    else
        log "node logs and data kept in $node_tmp"
    fi
}
trap stop_nodes EXIT
trap 'exit 130' INT TERM

# start_node SCENARIO CONFIG-LINE...: starts a node on free ports with these
# config lines, and waits for its Kafka port.
start_node() {
    local scenario=$1 dir="$node_tmp/$1" kport hport
    shift
    mkdir -p "$dir/data"
    printf '%s\n' "$@" >"$dir/quarry.toml"
    kport="$(free_port)"
    hport="$(free_port)"
    while [ "$hport" = "$kport" ]; do hport="$(free_port)"; done
    "$quarry" serve --config "$dir/quarry.toml" --data-dir "$dir/data" \
        --kafka-listen "127.0.0.1:$kport" --http-listen "127.0.0.1:$hport" --sql-listen 127.0.0.1:0 \
        >"$dir/quarry.log" 2>&1 &
    node_pid[$scenario]=$!
    node_addr[$scenario]="127.0.0.1:$kport"
    local deadline=$((SECONDS + 30))
    until port_open "$kport"; do
        kill -0 "${node_pid[$scenario]}" 2>/dev/null || { tail -n 20 "$dir/quarry.log" >&2; die "quarry exited during startup"; }
        [ "$SECONDS" -lt "$deadline" ] || die "quarry did not accept connections on 127.0.0.1:$kport within 30s"
        sleep 0.1
    done
    log "quarry pid ${node_pid[$scenario]} on ${node_addr[$scenario]} ($scenario scenario)"
}

# librdkafka's test scenarios: topics have 4 partitions unless asked otherwise,
# and are auto-created except in "noautocreate". Everything else keeps Kafka's
# defaults, which the tests are written for: several group tests count on the
# 3 s group.initial.rebalance.delay.ms to have their consumers join one
# generation together.
start_node default 'num_partitions = 4'
[ -z "$need_noauto" ] || start_node noautocreate 'num_partitions = 4' 'auto_create_topics_enable = false'

# --- the tests ------------------------------------------------------------------

logs="${logs:-$build_root/logs}"
case "$logs" in /*) ;; *) logs="$PWD/$logs" ;; esac
rm -rf "$logs"
mkdir -p "$logs"
for scenario in "${!node_addr[@]}"; do
    sed "s/@BOOTSTRAP@/${node_addr[$scenario]}/" "$here/test.conf.in" >"$logs/test-$scenario.conf"
done
log "${#units[@]} tests, $jobs at a time, ${timeout}s each at most${quick:+, quick mode}"

strip_colors() { sed 's/\x1b\[[0-9;]*m//g; s/\x1b(B//g'; }

# unit_parts UNIT: sets u_num, u_scenario, u_sub and u_file (its log and result
# files without the extension).
unit_parts() {
    local base=${1%%+*}
    u_sub=
    [ "$base" = "$1" ] || u_sub=${1#*+}
    # A space in a sub-test name is written %20 (allow.txt splits on whitespace).
    u_sub=${u_sub//%20/ }
    u_num=${base%%/*}
    u_scenario=default
    [ "$base" = "$u_num" ] || u_scenario=${base#*/}
    u_file="$logs/$(tr '/+:, ' '-----' <<<"${1//%20/}")"
}

# Runs one unit; writes "UNIT RESULT SECONDS FIRST-ERROR" to its .result file
# and prints it as one line.
run_one() {
    local unit=$1 num scenario sub file log rc result why ms secs table u_num u_scenario u_sub u_file
    unit_parts "$unit"
    num=$u_num scenario=$u_scenario sub=$u_sub file=$u_file
    log="$file.log"
    local flags=(-L -s "$scenario")
    local mode_note=
    if [ -n "$quick" ] || [ -n "${quick_unit[$unit]:-}" ]; then
        flags+=(-Q)
        mode_note=" (quick)"
    fi
    [ -n "${known_issue[$unit]:-}" ] && flags+=(-k)
    local started seed
    started=$(date +%s%N)
    # Distinct in every process (see test.conf.in): the pid, mixed with the time.
    seed=$(( (BASHPID * 1000003 + started / 1000) % 2147483647 ))
    # CI (set by CI services) would change timeouts and make some tests skip themselves.
    { (cd "$tests_dir" && exec env -u CI LD_LIBRARY_PATH="../src:../src-cpp${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
        RDKAFKA_TEST_CONF="$logs/test-$scenario.conf" TEST_KAFKA_VERSION="$KAFKA_VERSION" TESTS="$num" TEST_SEED="$seed" ${sub:+SUBTESTS="$sub"} \
        timeout -k 10 "$timeout" ./test-runner "${flags[@]}") >"$log" 2>&1; } 2>/dev/null
    rc=$?
    ms=$(( ($(date +%s%N) - started) / 1000000 ))
    secs="$((ms / 1000)).$((ms % 1000 / 100))"
    # The summary table: "| 0012_produce_consume   |     PASSED |   1.234s | [reason]"
    table="$(strip_colors <"$log" | grep -E "^\| +${num}_[A-Za-z0-9_]+ +\| +[A-Z_]+ +\|")"
    why=
    if [ "$rc" -eq 124 ] || { [ "$rc" -eq 137 ] && [ "$ms" -ge $((timeout * 1000)) ]; }; then
        result=TIMEOUT
        why="no result after ${timeout}s (run.sh --timeout)"
    elif [ "$rc" -ne 0 ] || grep -qE '\| +(FAILED|RUNNING) +\|' <<<"$table"; then
        result=FAIL
    elif [ "$(grep -cE '\| +PASSED +\|' <<<"$table")" -gt 0 ] &&
         [ "$(grep -E '\| +PASSED +\|' <<<"$table" | grep -cvE '\| +0\.000s +\|')" -eq 0 ]; then
        # Every test of the number "passed" in no time: all its sub-tests were left
        # out (in quick mode, most group tests are).
        result=SKIP
        why="no sub-test ran${mode_note:+ in quick mode}"
    elif [ -n "$sub" ] && [ "$(strip_colors <"$log" | grep -F '] [ ' | grep -F -- "$sub" | grep -c ': PASS')" -eq 0 ]; then
        result=SKIP
        why="no sub-test named $sub ran"
    elif grep -qE '\| +PASSED +\|' <<<"$table"; then
        result=PASS
    else
        result=SKIP
        why="$(grep -E '\| +SKIPPED +\|' <<<"$table" | grep -v 'Filtered due to negative test flags' |
               sed -E 's/^[^|]*\|[^|]*\|[^|]*\|[^|]*\| *//' | grep -v '^$' | head -n 1)"
        [ -n "$why" ] || why="skipped (no reason given)"
    fi
    if [ "$result" != PASS ] && [ -z "$why" ]; then
        # The first failure: '### Test "X" failed at FILE:LINE:FUNC() at DATE: ###'
        # and the message on the lines after it.
        why="$(strip_colors <"$log" | awk '
            /^### Test ".*" failed at / {
                sub(/ at [A-Z][a-z][a-z] [A-Z][a-z][a-z] .*/, ""); sub(/^### Test /, ""); out = $0 ":"; n = 1; next }
            n && (/^\[/ || /^%/ || /^###/ || /^test-runner:/ || n > 3) { exit }
            n { out = out " " $0; n++ }
            END { print out }')"
        [ -n "$why" ] || why="exit status $rc: $(strip_colors <"$log" | grep -v '^\s*$' | tail -n 1)"
    fi
    if ! kill -0 "${node_pid[$scenario]}" 2>/dev/null; then
        why="quarry exited during the test; $why"
    fi
    why="$(tr '\t\n' '  ' <<<"$why" | sed 's/  */ /g' | cut -c1-500)"
    printf '%s\t%s\t%s\t%s\n' "$unit" "$result" "$secs" "$why" >"$file.result"
    printf '%-26s %-7s %6ss  %s\n' "$unit$mode_note" "$result" "$secs" "$why"
}

started=$SECONDS
# The pool runs in a subshell so that `wait -n` only sees the tests, not the nodes.
(
    running=0
    for unit in "${units[@]}"; do
        unit_parts "$unit"
        if ! kill -0 "${node_pid[$u_scenario]}" 2>/dev/null; then
            printf '%s\tFAIL\t0\tquarry is not running\n' "$unit" >"$u_file.result"
            printf '%-26s %-7s %6ss  %s\n' "$unit" FAIL 0 "quarry is not running"
            continue
        fi
        run_one "$unit" &
        running=$((running + 1))
        if [ "$running" -ge "$jobs" ]; then
            wait -n
            running=$((running - 1))
        fi
    done
    wait
)
rm -f "$tests_dir"/stats_*.json

for unit in "${units[@]}"; do
    unit_parts "$unit"
    cat "$u_file.result"
done >"$logs/results.tsv"
passed=$(awk -F'\t' '$2 == "PASS"' "$logs/results.tsv" | wc -l)
skipped=$(awk -F'\t' '$2 == "SKIP"' "$logs/results.tsv" | wc -l)
failed=$(awk -F'\t' '$2 != "PASS" && $2 != "SKIP"' "$logs/results.tsv" | wc -l)
log "${#units[@]} tests in $((SECONDS - started))s; logs in $logs"
nodes_ok=1
for scenario in "${!node_pid[@]}"; do
    if ! kill -0 "${node_pid[$scenario]}" 2>/dev/null; then
        log "quarry ($scenario scenario) exited during the run (log: $node_tmp/$scenario/quarry.log)"
        nodes_ok=
    fi
done

if [ "$mode" = all ]; then
    [ -n "$nodes_ok" ] && status=0
    echo "$NAME: $passed passed, $failed failed, $skipped skipped"
    exit 0
fi
# A selected test that skips itself checked nothing: it counts as failed.
failed=$((failed + skipped))
[ -n "$nodes_ok" ] || failed=$((failed + 1))
if [ "$failed" -eq 0 ]; then
    status=0
else
    awk -F'\t' '$2 != "PASS" { print "'"$NAME"': FAIL: " $1 " " $2 ": " $4 }' "$logs/results.tsv" >&2
fi
echo "$NAME: $passed passed, $failed failed"
exit "$status"

#!/usr/bin/env bash
# kcat (Debian's, on librdkafka 2.0.2) against a fresh node: auto-created and
# 3-partition topics, every codec, acks=all and acks=1, read-back of keys,
# values, headers and timestamps, ListOffsets by timestamp, and the tail.
#
# kcat cannot create topics or set record timestamps: the 3-partition topic
# is created with confluent-kafka's admin client from compat/.venv, and each
# timestamp is checked to lie within the time its producer ran.
set -euo pipefail
COMPAT_NAME=kcat
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

command -v kcat >/dev/null || die "kcat not installed: run compat/install.sh"
require_venv
quarry_start

B="$QUARRY_BOOTSTRAP"
W="$QUARRY_TMP/kcat"
mkdir -p "$W"
PER=200             # records per partition per round
HEADER_ARGS=(-H h1=a -H dup=x -H dup=y)
HEADERS="h1=a,dup=x,dup=y"   # as kcat's %h prints them
KCAT=(kcat -b "$B" -m 10)
TOTAL=0

now_ms() { date +%s%3N; }

# gen ROUND PARTITION COUNT: prints COUNT "key:value" lines, values of mixed
# length (up to 6000 bytes) so batches and compression see some variety.
gen() {
    awk -v r="$1" -v p="$2" -v n="$3" 'BEGIN {
        filler = "abcdefghijklmnopqrstuvwxyz0123456789"
        for (i = 0; i < n; i++) {
            len = (i * 37) % 300
            if (i % 50 == 49) len = 6000
            v = ""
            while (length(v) < len) v = v filler
            printf "k-%s-%s-%d:v-%s-%s-%d-%s\n", r, p, i, r, p, i, substr(v, 1, len)
        }
    }'
}

# produce TOPIC PARTITION CODEC ACKS ROUND: sends PER records and appends
# "key|value|headers|t0|t1" lines to the partition's expectation file.
produce() {
    local topic=$1 p=$2 codec=$3 acks=$4 round=$5 t0 t1
    gen "$round" "$p" "$PER" >"$W/in"
    t0=$(now_ms)
    # kcat exits non-zero when any delivery report carries an error.
    "${KCAT[@]}" -P -t "$topic" -p "$p" -K: -z "$codec" -X "acks=$acks" \
        "${HEADER_ARGS[@]}" <"$W/in" 2>"$W/produce.err" ||
        die "produce to $topic/$p (codec=$codec acks=$acks) failed: $(head -c 2000 "$W/produce.err")"
    t1=$(now_ms)
    sed "s/:/|/; s/\$/|$HEADERS|$t0|$t1/" "$W/in" >>"$W/exp.$topic.$p"
}

# verify TOPIC PARTITION: consumes the partition from the beginning to its
# end and compares it record by record with the expectation file.
verify() {
    local topic=$1 p=$2 exp="$W/exp.$1.$2" got="$W/got.$1.$2"
    "${KCAT[@]}" -q -C -t "$topic" -p "$p" -o beginning -e -X check.crcs=true \
        -f '%o|%k|%s|%h|%T\n' >"$got" 2>"$W/consume.err" ||
        die "consume $topic/$p failed: $(head -c 2000 "$W/consume.err")"
    awk -F'|' -v where="$topic/$p" '
        BEGIN { n = 0; got = 0 }
        function fail(msg) { print where ": " msg; failed = 1; exit 1 }
        NR == FNR { ek[n] = $1; ev[n] = $2; eh[n] = $3; t0[n] = $4; t1[n] = $5; n++; next }
        {
            i = got++
            if (i >= n) fail("unexpected extra record at offset " $1 " (key " $2 ")")
            if ($1 != i) fail("record #" i " has offset " $1)
            if ($2 != ek[i]) fail("offset " i ": key \"" $2 "\", want \"" ek[i] "\"")
            if ($3 != ev[i]) fail("offset " i ": value differs (" length($3) " bytes, want " length(ev[i]) "): " substr($3, 1, 60))
            if ($4 != eh[i]) fail("offset " i ": headers \"" $4 "\", want \"" eh[i] "\"")
            if ($5 < t0[i] || $5 > t1[i]) fail("offset " i ": timestamp " $5 " outside the produce window [" t0[i] ", " t1[i] "]")
        }
        END { if (!failed && got != n) { print where ": got " got " records, want " n; exit 1 } }
    ' "$exp" "$got" >"$W/verify.err" || die "$(cat "$W/verify.err")"
    TOTAL=$((TOTAL + $(wc -l <"$got")))
}

partition_count() {
    "${KCAT[@]}" -L -t "$1" 2>/dev/null | sed -n 's/.*topic "'"$1"'" with \([0-9]*\) partitions.*/\1/p'
}

# 1. A topic created by producing to it.
AUTO=kcat-auto
produce "$AUTO" 0 none all auto
n=$(partition_count "$AUTO")
[ "$n" = 1 ] || die "auto-created topic $AUTO has '${n}' partitions in Metadata, want 1"
produce "$AUTO" 0 gzip all auto2
verify "$AUTO" 0

# 2. A 3-partition topic, every codec, acks=all, and one round with acks=1.
TOPIC=kcat-3p
"$COMPAT_PYTHON" - "$B" "$TOPIC" <<'EOF' || die "CreateTopics $TOPIC (3 partitions) failed"
import sys
from confluent_kafka.admin import AdminClient, NewTopic
admin = AdminClient({"bootstrap.servers": sys.argv[1]})
admin.create_topics([NewTopic(sys.argv[2], 3, 1)])[sys.argv[2]].result(30)
EOF
for _ in $(seq 50); do
    n=$(partition_count "$TOPIC")
    [ "$n" = 3 ] && break
    sleep 0.2
done
[ "$n" = 3 ] || die "topic $TOPIC has '${n}' partitions in Metadata after CreateTopics, want 3"

round=0
for spec in none:all gzip:all snappy:all lz4:all zstd:all lz4:1; do
    round=$((round + 1))
    for p in 0 1 2; do
        produce "$TOPIC" "$p" "${spec%:*}" "${spec#*:}" "$round"
    done
done
for p in 0 1 2; do verify "$TOPIC" "$p"; done

# The remaining checks each run even if an earlier one failed.
FAILED=0
soft_fail() {
    echo "$COMPAT_NAME: FAIL: $*" >&2
    FAILED=$((FAILED + 1))
}

# 3. ListOffsets by timestamp: for a record inside each round of each
# partition (away from batch boundaries), the first offset whose timestamp
# is >= that record's.
check_list_offsets() {
    local p round off ts want got wrong=() total=0
    for p in 0 1 2; do
        for round in 0 1 2 3 4 5; do
            off=$((round * PER + PER / 2 + 1))
            ts=$(awk -F'|' -v o="$off" '$1 == o { print $5 }' "$W/got.$TOPIC.$p")
            want=$(awk -F'|' -v ts="$ts" '$5 >= ts { print $1; exit }' "$W/got.$TOPIC.$p")
            got=$("${KCAT[@]}" -Q -t "$TOPIC:$p:$ts" 2>&1) || { soft_fail "ListOffsets $TOPIC/$p at timestamp $ts failed: $got"; return; }
            got=$(echo "$got" | awk '/offset/ { print $NF }')
            total=$((total + 1))
            [ "$got" = "$want" ] || wrong+=("$TOPIC/$p timestamp $ts: offset $got, want $want")
        done
    done
    if [ "${#wrong[@]}" -gt 0 ]; then
        local shown
        shown=$(printf '%s; ' "${wrong[@]:0:6}")
        soft_fail "ListOffsets by timestamp: ${#wrong[@]} of $total lookups wrong: ${shown%; }"
    fi
}

# 4. The tail: reading from the end returns at once with nothing, and a record
# produced while a consumer waits there reaches it promptly.
check_tail() {
    local t0 elapsed end waiter
    t0=$(now_ms)
    timeout 20 "${KCAT[@]}" -q -C -t "$TOPIC" -o end -e -f '%p|%o|%k\n' >"$W/tail" 2>"$W/consume.err" ||
        { soft_fail "consume at the end of $TOPIC failed or hung: $(head -c 2000 "$W/consume.err")"; return; }
    elapsed=$(($(now_ms) - t0))
    [ ! -s "$W/tail" ] || { soft_fail "consuming at the end of $TOPIC returned records: $(head -n 3 "$W/tail")"; return; }
    [ "$elapsed" -lt 5000 ] || soft_fail "consuming the empty tail of $TOPIC took ${elapsed}ms, want < 5000ms"

    end=$(wc -l <"$W/exp.$TOPIC.2")
    timeout 20 "${KCAT[@]}" -q -C -t "$TOPIC" -p 2 -o "$end" -c 1 -f '%o|%k|%s\n' >"$W/late" 2>"$W/late.err" &
    waiter=$!
    sleep 1
    if ! echo "late:record" | "${KCAT[@]}" -P -t "$TOPIC" -p 2 -K: 2>"$W/produce.err"; then
        kill "$waiter" 2>/dev/null || true
        soft_fail "producing the late record failed: $(head -c 2000 "$W/produce.err")"
        return
    fi
    t0=$(now_ms)
    wait "$waiter" ||
        { soft_fail "a consumer waiting at offset $end of $TOPIC/2 got no new record within 20s: $(head -c 2000 "$W/late.err")"; return; }
    elapsed=$(($(now_ms) - t0))
    [ "$(cat "$W/late")" = "$end|late|record" ] || soft_fail "waiting consumer got '$(cat "$W/late")', want '$end|late|record'"
    [ "$elapsed" -lt 5000 ] || soft_fail "a record produced at the tail took ${elapsed}ms to reach a waiting consumer, want < 5000ms"
}

check_list_offsets
check_tail
[ "$FAILED" -eq 0 ] || exit 1
echo "kcat: $TOTAL records ok"

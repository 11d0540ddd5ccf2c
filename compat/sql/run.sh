#!/usr/bin/env bash
# SQL clients against a fresh node whose topics a real Kafka producer (confluent-kafka)
# filled: psql (simple protocol) and psycopg 3 (extended protocol with parameters, text
# and binary results, client-side binding over the simple protocol, prepared
# statements, errors), then again after a restart (the sources are still there).
set -euo pipefail
COMPAT_NAME=sql
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

require_venv
command -v psql >/dev/null || die "psql missing: run compat/install.sh"
quarry_start
check=("$COMPAT_PYTHON" "$COMPAT_DIR/sql/check.py")
"${check[@]}" produce "$QUARRY_BOOTSTRAP" "$QUARRY_SQL"

host="${QUARRY_SQL%:*}"
port="${QUARRY_SQL##*:}"
psql_run() { psql -X -v ON_ERROR_STOP=1 -v VERBOSITY=verbose -h "$host" -p "$port" -U quarry -d quarry "$@"; }

# psql: raw topic, a source made with it, an aligned table, an error with its code.
[ "$(psql_run -At -c 'SELECT count(*) FROM trades')" = 1000 ] || die "psql: count of trades"
psql_run -c "CREATE SOURCE trades_v (symbol TEXT, price DECIMAL(12,4), qty INT, at TIMESTAMPTZ, _partition INT, _offset BIGINT) WITH (topic = 'trades', format = 'json', timestamp = 'at')" >/dev/null
got="$(psql_run -At -F ' ' -c "SELECT symbol, count(*), sum(qty) FROM trades_v GROUP BY symbol ORDER BY symbol")"
want="$("${check[@]}" expect-symbols)"
[ "$got" = "$want" ] || die "psql: per-symbol totals: got [$got], want [$want]"
psql_run -c 'SELECT symbol, price, at FROM trades_v ORDER BY _partition, _offset LIMIT 3' | grep -q '(3 rows)' ||
    die "psql: aligned output"
if err="$(psql_run -c 'SELECT nope FROM trades_v' 2>&1)"; then die "psql: an unknown column did not fail"; fi
echo "$err" | grep -q '42703' || die "psql: no SQLSTATE in [$err]"
echo "$err" | grep -q 'LINE 1: SELECT nope FROM trades_v' || die "psql: no position in [$err]"
echo "sql: psql ok"

"${check[@]}" query "$QUARRY_BOOTSTRAP" "$QUARRY_SQL"
quarry_restart
"${check[@]}" query "$QUARRY_BOOTSTRAP" "$QUARRY_SQL"
echo "sql: ok"

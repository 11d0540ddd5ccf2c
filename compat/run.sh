#!/usr/bin/env bash
# Installs the clients, then runs every client check, each against its own
# fresh node. The last line is "N passed, N failed".
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if ! "$here/install.sh"; then
    echo "compat: install.sh failed"
    echo "0 passed, 1 failed"
    exit 1
fi

passed=0
failed=0
failures=()
for client in kcat confluent-kafka kafka-python kafkajs idempotence sql; do
    echo "=== $client"
    if "$here/$client/run.sh"; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        failures+=("$client")
    fi
done

[ "$failed" -eq 0 ] || echo "compat: failed: ${failures[*]}"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]

"""Test records shared by the Python client checks, and their comparison.

Every record is fully determined by (round, partition, index), so a check
can rebuild what it sent and compare it field by field with what it reads.
"""

import sys

BASE_TS = 1_700_000_000_000

# (codec, acks) per round; codec names are the ones both Python clients use.
ROUNDS = [
    ("none", "all"),
    ("gzip", "all"),
    ("snappy", "all"),
    ("lz4", "all"),
    ("zstd", "all"),
    ("lz4", "1"),
]


class CheckFailed(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise CheckFailed(msg)


def run_steps(client, required, optional, independent=()):
    """Runs the required steps, stopping at the first failure, then every optional
    step (skipped if a required one failed), then every independent step, each
    even if an earlier one failed. Exits 1 if any failed."""
    failures = 0
    try:
        for step in required:
            step()
    except CheckFailed as e:
        print(f"{client}: FAIL: {e}", file=sys.stderr)
        failures += 1
        optional = []
    for step in list(optional) + list(independent):
        try:
            step()
        except Exception as e:  # noqa: BLE001 - any error fails this step only
            msg = str(e) if isinstance(e, CheckFailed) else f"{step.__name__}: {e!r}"
            print(f"{client}: FAIL: {msg}", file=sys.stderr)
            failures += 1
    if failures:
        sys.exit(1)


def run_client_checks(client, topic, partitions, rounds, admin, create_topic, produce_round, consume_all,
                      check_list_offsets, check_tail, check_admin, independent=()):
    """The sequence every Python client check runs: create the topic, produce each round
    and read everything back (stopping on failure), then ListOffsets, the tail (which
    appends a record, so after ListOffsets) and the admin calls, each on its own; then
    the `independent` steps (the group scenarios, on topics of their own)."""
    expected = {p: [] for p in range(partitions)}
    total = []

    def produce_and_consume():
        create_topic(admin, topic, partitions)
        for rnd, (codec, acks) in enumerate(rounds):
            produce_round(rnd, codec, acks, expected)
        total.append(consume_all(expected))

    def list_offsets():
        check_list_offsets(expected)

    def tail():
        check_tail(expected)

    def admin_apis():
        check_admin(admin)

    run_steps(client, [produce_and_consume], [list_offsets, tail, admin_apis], independent)
    print(f"{client}: {total[0]} records ok")


def make_record(rnd, partition, i):
    """Returns (key, value, headers, timestamp_ms) for one record."""
    key = f"k-{rnd}-{partition}-{i}".encode()
    if i % 40 == 7:
        key = None
    if i % 40 == 11:
        value = b""
    elif i % 40 == 13:
        value = None  # tombstone
    elif i % 50 == 49:
        value = bytes((i * 7 + j * 13) % 256 for j in range(20_000))
    else:
        value = f"v-{rnd}-{partition}-{i}-".encode() + b"0123456789abcdef" * (i % 64)
    if i % 10 == 3:
        headers = []
    else:
        headers = [("h1", b"a"), ("dup", b"x"), ("dup", b"y"), ("bin", bytes([0, 255, i % 256]))]
    ts = BASE_TS + rnd * 1_000_000 + partition * 10_000 + i
    if i % 17 == 5:
        ts -= 5_000  # timestamps need not grow with the offset
    return key, value, headers, ts


def show(b, limit=40):
    if b is None:
        return "null"
    if len(b) > limit:
        return f"{bytes(b[:limit])!r}... ({len(b)} bytes)"
    return repr(bytes(b))


def compare(where, offset, want, got):
    """want and got are (key, value, headers, timestamp_ms) tuples; headers
    a list of (str, bytes). Raises CheckFailed naming the first differing field."""
    names = ("key", "value", "headers", "timestamp")
    for name, w, g in zip(names, want, got):
        if name in ("key", "value"):
            same = (w is None and g is None) or (w is not None and g is not None and bytes(w) == bytes(g))
            if not same:
                raise CheckFailed(f"{where} offset {offset}: {name} {show(g)}, want {show(w)}")
        elif name == "headers":
            g = [(k, None if v is None else bytes(v)) for k, v in g]
            if g != w:
                raise CheckFailed(f"{where} offset {offset}: headers {g}, want {w}")
        elif g != w:
            raise CheckFailed(f"{where} offset {offset}: {name} {g}, want {w}")


def timestamp_probes(records, per):
    """Timestamps to look up in one partition: one inside each round (away
    from batch boundaries, which would hide batch-granular answers), one
    before every record and one after every record."""
    probes = [records[start + per // 2 + 1][3] for start in range(0, len(records), per)]
    return probes + [0, max(r[3] for r in records) + 1]


def first_at_or_after(records, ts):
    """(offset, timestamp) ListOffsets must answer for timestamp ts, or None."""
    for offset, rec in enumerate(records):
        if rec[3] >= ts:
            return offset, rec[3]
    return None


def summarize(wrong, total):
    shown = "; ".join(wrong[:6]) + ("; ..." if len(wrong) > 6 else "")
    return f"{len(wrong)} of {total} lookups wrong: {shown}"

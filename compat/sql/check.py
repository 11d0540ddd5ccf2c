"""SQL clients against Quarry: topics filled by confluent-kafka, read with psycopg 3.

Usage: check.py produce BOOTSTRAP SQL_ADDR | expect-symbols | query BOOTSTRAP SQL_ADDR
"""

import datetime as dt
import json
import sys
from decimal import Decimal

SYMBOLS = ["AAA", "BBB", "CCC", "DDD"]
COUNT = 1000
BASE = dt.datetime(2024, 5, 1, 9, 0, 0, tzinfo=dt.timezone.utc)


def trade(i):
    return {
        "symbol": SYMBOLS[i % 4],
        "price": f"{100 + i / 100:.2f}",
        "qty": i % 7 + 1,
        "at": (BASE + dt.timedelta(seconds=i)).isoformat(),
    }


def fail(msg):
    print(f"sql: FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def produce(bootstrap):
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic("trades", num_partitions=2, replication_factor=1)])["trades"].result(30)
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "compression.type": "lz4"})
    for i in range(COUNT):
        t = trade(i)
        # The price goes out as a JSON number with its two decimals.
        value = json.dumps(t).replace(f'"price": "{t["price"]}"', f'"price": {t["price"]}')
        ts = int((BASE + dt.timedelta(seconds=i)).timestamp() * 1000)
        p.produce("trades", key=t["symbol"], value=value, timestamp=ts)
    check(p.flush(30) == 0, "records left unsent")


def expect_symbols():
    for s in SYMBOLS:
        ts = [trade(i) for i in range(COUNT) if trade(i)["symbol"] == s]
        print(f"{s} {len(ts)} {sum(t['qty'] for t in ts)}")


def query(sql_addr):
    import psycopg

    host, port = sql_addr.rsplit(":", 1)
    params = dict(host=host, port=int(port), user="quarry", dbname="quarry")
    trades = [trade(i) for i in range(COUNT)]
    with psycopg.connect(**params, autocommit=True) as conn:
        # Extended protocol, server-side parameters.
        n = conn.execute("SELECT count(*) FROM trades_v WHERE symbol = %s AND qty >= %s", ("AAA", 3)).fetchone()[0]
        check(n == sum(1 for t in trades if t["symbol"] == "AAA" and t["qty"] >= 3), f"count with parameters: {n}")
        n = conn.execute("SELECT count(*) FROM trades_v WHERE symbol = %s", (None,)).fetchone()[0]
        check(n == 0, f"NULL parameter matched {n} rows")
        since = BASE + dt.timedelta(seconds=900)
        n = conn.execute("SELECT count(*) FROM trades_v WHERE at >= %s", (since,)).fetchone()[0]
        check(n == 100, f"rows since a timestamptz parameter: {n}")
        n = conn.execute("SELECT count(*) FROM trades_v WHERE price > %s", (Decimal("109.50"),)).fetchone()[0]
        check(n == sum(1 for t in trades if Decimal(t["price"]) > Decimal("109.50")), f"rows over a numeric parameter: {n}")

        # Typed results, text and binary: the same values as the raw records hold.
        raw = [json.loads(r[0]) for r in conn.execute(
            "SELECT text(_value) FROM trades WHERE _partition = %s ORDER BY _offset LIMIT 5", (0,))]
        for binary in (False, True):
            cur = conn.cursor(binary=binary)
            rows = cur.execute(
                "SELECT symbol, price, qty, at FROM trades_v WHERE _partition = %s ORDER BY _offset LIMIT 5", (0,)
            ).fetchall()
            check(len(rows) == 5, f"binary={binary}: {len(rows)} rows")
            for row, r in zip(rows, raw):
                want = (r["symbol"], Decimal(str(r["price"])).quantize(Decimal("0.0001")), r["qty"],
                        dt.datetime.fromisoformat(r["at"]))
                check(row == want, f"binary={binary}: row {row} != {want}")
            check(isinstance(rows[0][1], Decimal) and isinstance(rows[0][3], dt.datetime),
                  f"binary={binary}: types {[type(v) for v in rows[0]]}")

        # Client-side binding over the simple protocol.
        cur = psycopg.ClientCursor(conn)
        m = cur.execute("SELECT max(qty) FROM trades_v WHERE symbol = %s", ("BBB",)).fetchone()[0]
        check(m == max(t["qty"] for t in trades if t["symbol"] == "BBB"), f"simple protocol max: {m}")

        # A prepared statement run again and again.
        for s in SYMBOLS:
            n = conn.execute("SELECT count(*) FROM trades_v WHERE symbol = %s", (s,), prepare=True).fetchone()[0]
            check(n == COUNT // 4, f"prepared count for {s}: {n}")

        # Errors carry SQLSTATE and position; the connection stays usable.
        try:
            conn.execute("SELECT nope FROM trades_v")
            fail("an unknown column did not fail")
        except psycopg.errors.UndefinedColumn as e:
            check(e.diag.sqlstate == "42703" and e.diag.statement_position == "8",
                  f"error {e.diag.sqlstate} at {e.diag.statement_position}")
        try:
            conn.execute("SELECT count(*) FROM trades_v WHERE qty > %s", ("many",))
            fail("a bad parameter did not fail")
        except psycopg.Error as e:
            check(e.diag.sqlstate == "22P02", f"bad parameter: {e.diag.sqlstate} {e}")
        n = conn.execute("SELECT count(*) FROM trades").fetchone()[0]
        check(n == COUNT, f"count after errors: {n}")

    # Without autocommit psycopg opens a transaction first; every statement is its own.
    with psycopg.connect(**params) as conn:
        n = conn.execute("SELECT count(*) FROM trades_v").fetchone()[0]
        check(n == COUNT, f"count in a transaction: {n}")
        conn.commit()
    print("sql: psycopg ok")


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "produce":
        produce(sys.argv[2])
    elif cmd == "expect-symbols":
        expect_symbols()
    elif cmd == "query":
        query(sys.argv[3])
    else:
        fail(f"unknown command {cmd}")

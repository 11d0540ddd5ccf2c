"""Times two DuckDB queries (median of N runs each) and prints their seconds, then the
first query's total row count, for the SQL benchmark.

Usage: duckdb_query.py N AGGREGATE_SQL RANGE_SQL
"""

import statistics
import sys
import time

import duckdb

runs, aggregate, time_range = int(sys.argv[1]), sys.argv[2], sys.argv[3]
con = duckdb.connect()
for q in (aggregate, time_range):
    took = []
    for _ in range(runs):
        start = time.perf_counter()
        rows = con.execute(q).fetchall()
        took.append(time.perf_counter() - start)
    print(statistics.median(took))
    if q is aggregate:
        total = sum(r[1] for r in rows)
print(total)

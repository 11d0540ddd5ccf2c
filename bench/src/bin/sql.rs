//! SQL benchmark: one million JSON records in a topic, queried through Quarry (HTTP
//! `POST /sql`, a source declared over the topic), and the same records as JSON lines
//! queried by DuckDB, side by side: a full-scan aggregate (records/s) and a query on 1%
//! of the time range.
//!
//! `make bench-sql` (DuckDB comes from PyPI into `bench/.venv`). BENCH_SQL_RECORDS sets
//! the record count, BENCH_REPEAT the runs per query (median shown, default 3),
//! BENCH_SQL_EXPLAIN=1 prints the aggregate's EXPLAIN ANALYZE.

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bench::{wire, Broker};
use bytes::Bytes;

const SYMBOLS: usize = 50;
/// 2024-01-01T00:00:00Z; record `i` is at `T0 + i` ms.
const T0: i64 = 1_704_067_200_000;

fn value(i: usize) -> String {
    let side = if i % 3 == 0 { "sell" } else { "buy" };
    format!(
        r#"{{"id":{i},"ts":{},"user":"u{:04}","symbol":"S{:02}","price":{}.{:02},"qty":{},"side":"{side}"}}"#,
        T0 + i as i64,
        i % 1000,
        i % SYMBOLS,
        10 + i % 990,
        i % 100,
        1 + i % 100
    )
}

/// Runs one statement through `POST /sql`; the response body.
fn sql(port: u16, statement: &str) -> Result<String> {
    let body = format!("{{\"sql\":{}}}", json_string(statement));
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    write!(
        s,
        "POST /sql HTTP/1.0\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    s.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").context("no HTTP body")?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        bail!("{statement}: {head} {body}");
    }
    if body.contains("\"error\"") {
        bail!("{statement}: {body}");
    }
    Ok(body.to_string())
}

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
    let bin = root.join("target/release/quarry");
    let count: usize = std::env::var("BENCH_SQL_RECORDS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let repeat: usize = std::env::var("BENCH_REPEAT").ok().and_then(|v| v.parse().ok()).unwrap_or(3).max(1);
    let python = root.join("bench/.venv/bin/python");

    let broker = Broker::start(&bin)?;
    wire::create_topic(broker.port, "trades", 4)?;
    let make = |i: usize| (Some(Bytes::from(format!("u{:04}", i % 1000))), Bytes::from(value(i)), T0 + i as i64);
    let took = wire::produce_with(broker.port, "trades", 4, 100, count, false, &make)?;
    let lines = std::env::temp_dir().join(format!("quarry-bench-trades-{}.json", std::process::id()));
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&lines)?);
        for i in 0..count {
            writeln!(f, "{}", value(i))?;
        }
    }
    let bytes = std::fs::metadata(&lines)?.len();
    println!(
        "# SQL benchmark: {count} JSON records ({:.1} MB of values), 4 partitions, produced in {:.2} s",
        bytes as f64 / 1e6,
        took.as_secs_f64()
    );
    sql(
        broker.http,
        "CREATE SOURCE trades_v (id BIGINT, \"user\" TEXT, symbol TEXT, price DECIMAL(10,2), qty INT, side TEXT, \
         _timestamp TIMESTAMP) WITH (topic = 'trades', format = 'json')",
    )?;

    let aggregate = "SELECT symbol, count(*) AS n, sum(qty) AS q, avg(price) AS p FROM {t} GROUP BY symbol ORDER BY symbol";
    let from = T0 + count as i64 * 495 / 1000;
    let to = T0 + count as i64 * 505 / 1000;
    let range = format!("SELECT count(*) AS n, sum(qty) AS q FROM {{t}} WHERE {{ts}} >= {from} AND {{ts}} < {to}");
    let quarry_range = range
        .replace("{ts}", "_timestamp")
        .replace(&format!(">= {from}"), &format!(">= to_timestamp_millis({from})"))
        .replace(&format!("< {to}"), &format!("< to_timestamp_millis({to})"));

    let time = |statement: &str| -> Result<(Duration, String)> {
        let mut runs = Vec::new();
        let mut out = String::new();
        for _ in 0..repeat {
            let start = Instant::now();
            out = sql(broker.http, statement)?;
            runs.push(start.elapsed());
        }
        Ok((median(runs), out))
    };
    let (q_agg, agg_rows) = time(&aggregate.replace("{t}", "trades_v"))?;
    // BENCH_SQL_EXPLAIN=1: where the aggregate's time goes, operator by operator.
    if std::env::var_os("BENCH_SQL_EXPLAIN").is_some() {
        let plan = sql(broker.http, &format!("EXPLAIN ANALYZE {}", aggregate.replace("{t}", "trades_v")))?;
        for line in plan.split("\\n") {
            eprintln!("{line}");
        }
    }
    let (q_raw, _) = time("SELECT count(*) FROM trades")?;
    let (q_range, range_rows) = time(&quarry_range.replace("{t}", "trades_v"))?;
    let (q_explain, explain) = time(&format!("EXPLAIN ANALYZE {}", quarry_range.replace("{t}", "trades_v")))?;
    let _ = q_explain;
    let batches = explain
        .split("batches_read=")
        .nth(1)
        .map(|s| s.chars().take_while(|c| c.is_ascii_digit()).collect::<String>())
        .unwrap_or_default();

    // DuckDB over the same records as JSON lines, with the same column types.
    let duck_table = format!(
        "read_json('{}', format = 'newline_delimited', columns = {{id: 'BIGINT', ts: 'BIGINT', user: 'VARCHAR', symbol: 'VARCHAR', \
         price: 'DECIMAL(10,2)', qty: 'INTEGER', side: 'VARCHAR'}})",
        lines.display()
    );
    let duck = Command::new(&python)
        .arg(root.join("bench/duckdb_query.py"))
        .arg(repeat.to_string())
        .arg(aggregate.replace("{t}", &duck_table))
        .arg(range.replace("{t}", &duck_table).replace("{ts}", "ts"))
        .output()
        .context("run DuckDB (make bench-sql installs it into bench/.venv)")?;
    if !duck.status.success() {
        bail!("duckdb: {}", String::from_utf8_lossy(&duck.stderr));
    }
    let duck_out = String::from_utf8_lossy(&duck.stdout).to_string();
    let mut duck_lines = duck_out.lines();
    let d_agg: f64 = duck_lines.next().context("duckdb output")?.parse()?;
    let d_range: f64 = duck_lines.next().context("duckdb output")?.parse()?;
    let d_check = duck_lines.next().unwrap_or_default().to_string();
    let _ = std::fs::remove_file(&lines);

    // The two agree on what they computed.
    let total = |body: &str| -> i64 {
        let rows = body.split_once("\"rows\":[[").map_or("", |(_, r)| r);
        rows.split("],[").filter_map(|row| row.split(',').nth(1)).filter_map(|n| n.trim().parse::<i64>().ok()).sum()
    };
    println!("{:<34} {:>12} {:>12} {:>14}", "query", "quarry", "duckdb", "quarry/duckdb");
    let rate = |d: Duration| count as f64 / d.as_secs_f64();
    println!(
        "{:<34} {:>10.0}/s {:>10.0}/s {:>14.2}",
        "full-scan aggregate (records/s)",
        rate(q_agg),
        count as f64 / d_agg,
        q_agg.as_secs_f64() / d_agg
    );
    println!(
        "{:<34} {:>10.1}ms {:>10.1}ms {:>14.2}",
        "1% time range (ms)",
        q_range.as_secs_f64() * 1e3,
        d_range * 1e3,
        q_range.as_secs_f64() / d_range
    );
    println!("{:<34} {:>10.0}/s", "raw count(*) (records/s)", rate(q_raw));
    println!("# 1% range read {batches} batches; quarry rows {}, duckdb {d_check}", total(&agg_rows));
    println!("# quarry range result {range_rows}");
    drop(broker);
    Ok(())
}

use serde_json::{json, Value};
use tests::requests::*;
use tests::*;

/// Rows of a successful query, checking its columns' names and types.
fn rows(resp: &(u16, Value), columns: &[(&str, &str)]) -> Vec<Value> {
    assert_eq!(resp.0, 200, "{}", resp.1);
    let got: Vec<(String, String)> = resp.1["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap().to_string(), c["type"].as_str().unwrap().to_string()))
        .collect();
    let want: Vec<(String, String)> = columns.iter().map(|(n, t)| (n.to_string(), t.to_string())).collect();
    assert_eq!(got, want);
    resp.1["rows"].as_array().unwrap().clone()
}

/// The error of a failed statement: (code, position).
fn error(resp: &(u16, Value)) -> (String, Option<u64>, String) {
    assert_eq!(resp.0, 400, "{}", resp.1);
    let e = &resp.1["error"];
    (e["code"].as_str().unwrap().to_string(), e["position"].as_u64(), e["message"].as_str().unwrap().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_topic_is_a_table() {
    let dir = temp_dir();
    let server = start(test_config(dir.path())).await;
    let mut c = Client::connect(server.kafka_addr).await;
    assert_eq!(create_topic(&mut c, "orders", 2, &[]).await, 0);
    let order = |k: &str, amount: i64, item: &str, ts: i64| {
        TestRecord::new(k, &format!(r#"{{"amount": {amount}, "item": "{item}"}}"#), ts)
    };
    let p0 = [order("ada", 12, "tea", 1000), order("bob", 7, "jam", 2000), order("ada", 5, "tea", 3000)];
    let p1 = [order("cy", 30, "oil", 1500), order("bob", 1, "tea", 2500)];
    assert_eq!(produce(&mut c, "orders", 0, encode_batch(&p0), -1).await.unwrap().error_code, 0);
    assert_eq!(produce(&mut c, "orders", 1, encode_batch(&p1), -1).await.unwrap().error_code, 0);
    let addr = server.http_addr;
    let sql = move |q: &str| sql_http(addr, q);

    let resp =
        sql("SELECT _partition, _offset, _timestamp, text(_key) AS k, _value FROM orders ORDER BY _partition, _offset")
            .await;
    let got = rows(
        &resp,
        &[
            ("_partition", "integer"),
            ("_offset", "bigint"),
            ("_timestamp", "timestamp"),
            ("k", "text"),
            ("_value", "bytea"),
        ],
    );
    assert_eq!(got.len(), 5);
    assert_eq!(
        got[0],
        json!([0, 0, "1970-01-01 00:00:01", "ada", format!("\\x{}", hex(br#"{"amount": 12, "item": "tea"}"#))])
    );
    assert_eq!(got[4].as_array().unwrap()[..4], [json!(1), json!(1), json!("1970-01-01 00:00:02.500"), json!("bob")]);

    // JSON in values, aggregates, ORDER BY, LIMIT.
    let resp = sql("SELECT text(_key) AS customer, sum(json_get_int(text(_value), 'amount')) AS total, count(*) AS n \
         FROM orders GROUP BY 1 ORDER BY total DESC LIMIT 2")
    .await;
    let got = rows(&resp, &[("customer", "text"), ("total", "bigint"), ("n", "bigint")]);
    assert_eq!(got, vec![json!(["cy", 30, 1]), json!(["ada", 17, 2])]);

    // A join of the topic with itself, a window function.
    let resp =
        sql("SELECT a._offset, b._offset FROM orders a JOIN orders b ON a._key = b._key AND a._offset < b._offset \
         WHERE a._partition = 0 AND b._partition = 0")
        .await;
    assert_eq!(rows(&resp, &[("_offset", "bigint"), ("_offset", "bigint")]), vec![json!([0, 2])]);
    let resp =
        sql("SELECT _offset, row_number() OVER (PARTITION BY _partition ORDER BY _offset DESC) AS r FROM orders \
         WHERE _partition = 1 ORDER BY _offset")
        .await;
    assert_eq!(rows(&resp, &[("_offset", "bigint"), ("r", "bigint")]), vec![json!([0, 2]), json!([1, 1])]);

    let resp = sql("SHOW TOPICS").await;
    assert_eq!(rows(&resp, &[("name", "text"), ("partitions", "integer")]), vec![json!(["orders", 2])]);

    // Errors name the problem and where it is.
    let (code, position, message) = error(&sql("SELECT * FROM nowhere").await);
    assert_eq!((code.as_str(), position), ("42P01", Some(15)), "{message}");
    assert!(message.contains("nowhere"), "{message}");
    let (code, position, message) = error(&sql("SELECT _offset, amount FROM orders").await);
    assert_eq!((code.as_str(), position), ("42703", Some(17)), "{message}");
    assert!(message.contains("amount"), "{message}");
    let (code, position, message) = error(&sql("SELECT _offset FROM orders WHERE").await);
    assert_eq!((code.as_str(), position), ("42601", Some(33)), "{message}");
    let (code, position, message) = error(&sql("SELECT _offset FROM orders ORDER _offset").await);
    assert_eq!((code.as_str(), position), ("42601", Some(28)), "{message}");
    assert!(message.starts_with("syntax error"), "{message}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_on_partition_offset_and_time_narrow_what_is_read() {
    let dir = temp_dir();
    let server = start(test_config(dir.path())).await;
    let mut c = Client::connect(server.kafka_addr).await;
    assert_eq!(create_topic(&mut c, "clicks", 2, &[]).await, 0);
    // 100 batches of 10 records in partition 0, one second apart; 1 batch in partition 1.
    for b in 0..100i64 {
        let records: Vec<TestRecord> =
            (0..10).map(|i| TestRecord::new("k", &format!("v{}", b * 10 + i), 1_000_000 + b * 1000 + i)).collect();
        assert_eq!(produce(&mut c, "clicks", 0, encode_batch(&records), -1).await.unwrap().error_code, 0);
    }
    assert_eq!(
        produce(&mut c, "clicks", 1, encode_batch(&[TestRecord::new("k", "x", 1)]), -1).await.unwrap().error_code,
        0
    );
    let addr = server.http_addr;
    let sql = move |q: &str| sql_http(addr, q);
    let plan = |resp: &(u16, Value)| -> String {
        rows(resp, &[("plan_type", "text"), ("plan", "text")])
            .iter()
            .map(|r| r[1].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
            .join("\n")
    };

    // The last 5 seconds of a 100-second topic: 5 of its 100 batches are read.
    let q = "SELECT count(*) FROM clicks WHERE _timestamp >= TIMESTAMP '1970-01-01 00:18:15'";
    assert_eq!(rows(&sql(q).await, &[("count(*)", "bigint")]), vec![json!([50])]);
    let analyzed = plan(&sql(&format!("EXPLAIN ANALYZE {q}")).await);
    assert!(analyzed.contains("TopicScan: topic=clicks, offsets=[0:950..1000]"), "{analyzed}");
    assert!(analyzed.contains("batches_read=5"), "{analyzed}");
    // Without the filter, all 101.
    let analyzed = plan(&sql("EXPLAIN ANALYZE SELECT count(*) FROM clicks").await);
    assert!(analyzed.contains("batches_read=101"), "{analyzed}");

    // Partition and offset ranges; EXPLAIN shows what the scan will read.
    let q =
        "SELECT min(_offset), max(_offset), count(*) FROM clicks WHERE _partition = 0 AND _offset BETWEEN 95 AND 104";
    assert_eq!(
        rows(
            &sql(q).await,
            &[("min(clicks._offset)", "bigint"), ("max(clicks._offset)", "bigint"), ("count(*)", "bigint")]
        ),
        vec![json!([95, 104, 10])]
    );
    let explained = plan(&sql(&format!("EXPLAIN {q}")).await);
    assert!(explained.contains("TopicScan: topic=clicks, offsets=[0:95..105]"), "{explained}");
    let analyzed = plan(&sql(&format!("EXPLAIN ANALYZE {q}")).await);
    assert!(analyzed.contains("batches_read=2"), "{analyzed}");
    server.shutdown().await;
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

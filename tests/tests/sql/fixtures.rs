//! Topics the SQL tests query, filled through the Kafka protocol: `orders` (2
//! partitions, JSON values keyed by order id, two records that do not decode),
//! `customers` (JSON keys and values), `types` (a value of every source type, their
//! limits, NULLs, a value out of range).

use tests::requests::*;
use tests::*;

/// 2024-03-01T10:00:00Z.
pub const T0: i64 = 1_709_287_200_000;

pub const ORDERS: [&[(&str, &str)]; 2] = [
    &[
        (
            "1",
            r#"{"id": 1, "customer": "c1", "amount": 12.50, "qty": 2, "paid": true, "day": "2024-03-01", "at": "2024-03-01T10:00:00Z", "tags": ["tea"]}"#,
        ),
        (
            "2",
            r#"{"id": 2, "customer": "c2", "amount": 7.25, "qty": 1, "paid": false, "day": "2024-03-01", "at": "2024-03-01T11:30:00Z"}"#,
        ),
        ("x", "not json"),
        (
            "4",
            r#"{"id": 4, "customer": "c1", "amount": 100, "qty": 10, "paid": true, "day": "2024-03-02", "at": "2024-03-02T09:15:00+02:00"}"#,
        ),
    ],
    &[
        (
            "3",
            r#"{"id": 3, "customer": "c3", "amount": 0.99, "qty": 1, "paid": true, "day": "2024-03-01", "at": "2024-03-01T12:00:00Z"}"#,
        ),
        ("5", r#"{"id": "five", "customer": "c2"}"#),
        (
            "6",
            r#"{"id": 6, "customer": "c9", "amount": 55.5, "qty": 3, "paid": null, "day": "2024-03-03", "at": "2024-03-03T00:00:00Z"}"#,
        ),
        ("7", r#"{"id": 7, "customer": "c2", "qty": 4}"#),
    ],
];

pub const CUSTOMERS: [(&str, &str); 4] = [
    (r#"{"id": "c1"}"#, r#"{"name": "Ada", "country": "UK", "since": "2020-01-15"}"#),
    (r#"{"id": "c2"}"#, r#"{"name": "Bob", "country": "US", "since": "2021-06-30"}"#),
    (r#"{"id": "c3"}"#, r#"{"name": "Cy", "country": "UK", "since": "2019-11-01"}"#),
    (r#"{"id": "c4"}"#, r#"{"name": "Dee", "country": "FR", "since": "2023-02-28"}"#),
];

pub const TYPES: [&str; 4] = [
    r#"{"b": true, "s": 32767, "i": 2147483647, "l": 9223372036854775807, "r": 1.5, "d": 2.718281828459045, "n": "12345678901234.5678", "t": "héllo, wörld", "y": "AQID/w==", "dt": "2024-02-29", "ts": "2024-02-29 23:59:59.123", "tz": "2024-02-29T23:59:59.123+01:00", "j": {"a": [1, {"b": null}]}}"#,
    r#"{"b": false, "s": -32768, "i": -2147483648, "l": -9223372036854775808, "r": -0.25, "d": -1e-10, "n": -0.0001, "t": "", "y": "", "dt": "1970-01-01", "ts": 0, "tz": "1970-01-01T00:00:00Z", "j": []}"#,
    r#"{"b": null, "s": null, "t": null, "j": null}"#,
    r#"{"b": true, "s": 40000}"#,
];

/// Creates and fills the topics.
pub async fn load(kafka: std::net::SocketAddr) {
    let mut c = Client::connect(kafka).await;
    assert_eq!(create_topic(&mut c, "orders", 2, &[]).await, 0);
    for (partition, records) in ORDERS.iter().enumerate() {
        let batch: Vec<TestRecord> = records
            .iter()
            .enumerate()
            .map(|(i, (k, v))| TestRecord::new(k, v, T0 + (partition as i64 * 4 + i as i64) * 60_000))
            .collect();
        let r = produce(&mut c, "orders", partition as i32, encode_batch(&batch), -1).await.unwrap();
        assert_eq!(r.error_code, 0);
    }
    assert_eq!(create_topic(&mut c, "customers", 1, &[]).await, 0);
    let batch: Vec<TestRecord> = CUSTOMERS.iter().map(|(k, v)| TestRecord::new(k, v, T0)).collect();
    assert_eq!(produce(&mut c, "customers", 0, encode_batch(&batch), -1).await.unwrap().error_code, 0);
    assert_eq!(create_topic(&mut c, "types", 1, &[]).await, 0);
    let batch: Vec<TestRecord> = TYPES
        .iter()
        .map(|v| TestRecord { key: None, value: Some(bytes::Bytes::copy_from_slice(v.as_bytes())), timestamp: T0 })
        .collect();
    assert_eq!(produce(&mut c, "types", 0, encode_batch(&batch), -1).await.unwrap().error_code, 0);
}

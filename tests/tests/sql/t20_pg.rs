//! The PostgreSQL protocol as a driver uses it: prepared statements with parameters
//! (tokio-postgres sends Parse/Bind/Execute and asks for binary results), type OIDs,
//! errors with SQLSTATE and position, a connection that stays usable after an error.

use std::time::{Duration, UNIX_EPOCH};

use tests::*;
use tokio_postgres::error::ErrorPosition;
use tokio_postgres::types::Type;

use super::fixtures::{self, T0};
use super::t30_slt::connect;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_parameters_types_and_errors() {
    let dir = temp_dir();
    let server = start(test_config(dir.path())).await;
    fixtures::load(server.kafka_addr).await;
    let pg = connect(server.sql_addr).await.expect("connect");

    // Parameters in binary (i64) and as text; results in binary.
    let stmt = pg
        .prepare("SELECT _partition, _offset, _timestamp, text(_key) AS k FROM orders WHERE _offset >= $1 AND text(_key) <> $2 ORDER BY _partition, _offset")
        .await
        .unwrap();
    assert_eq!(stmt.params(), &[Type::INT8, Type::TEXT]);
    let types: Vec<Type> = stmt.columns().iter().map(|c| c.type_().clone()).collect();
    assert_eq!(types, [Type::INT4, Type::INT8, Type::TIMESTAMP, Type::TEXT]);
    let rows = pg.query(&stmt, &[&2i64, &"x"]).await.unwrap();
    let got: Vec<(i32, i64, std::time::SystemTime, String)> =
        rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))).collect();
    let at = |minutes: u64| UNIX_EPOCH + Duration::from_millis(T0 as u64 + minutes * 60_000);
    assert_eq!(got, [(0, 3, at(3), "4".to_string()), (1, 2, at(6), "6".to_string()), (1, 3, at(7), "7".to_string())]);
    // The same statement again with other values.
    let rows = pg.query(&stmt, &[&0i64, &"1"]).await.unwrap();
    assert_eq!(rows.len(), 7);

    // A source: typed columns, binary numeric and JSON results, NULLs.
    pg.batch_execute(
        "CREATE SOURCE o (id BIGINT KEY, customer TEXT, amount DECIMAL(10,2), paid BOOLEAN, day DATE, tags JSON) \
         WITH (topic = 'orders', format = 'json')",
    )
    .await
    .unwrap();
    let rows = pg
        .query("SELECT id, customer, amount::text AS amount, paid, tags, amount AS n FROM o WHERE id = $1", &[&1i64])
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert_eq!(r.columns()[4].type_(), &Type::JSON);
    assert_eq!(r.columns()[5].type_(), &Type::NUMERIC);
    assert_eq!((r.get::<_, i64>(0), r.get::<_, String>(1), r.get::<_, String>(2)), (1, "c1".into(), "12.50".into()));
    assert_eq!(r.get::<_, Option<bool>>(3), Some(true));
    // A record without the field: NULL.
    let rows = pg.query("SELECT paid, amount FROM o WHERE id = 7", &[]).await.unwrap();
    assert_eq!(rows[0].get::<_, Option<bool>>(0), None);

    // Errors: SQLSTATE and position; the connection goes on.
    let e = pg.query("SELECT nope FROM orders", &[]).await.unwrap_err();
    let db = e.as_db_error().expect("a database error");
    assert_eq!((db.code().code(), db.position()), ("42703", Some(&ErrorPosition::Original(8))));
    let e = pg.query("SELECT * FROM nowhere", &[]).await.unwrap_err();
    let db = e.as_db_error().unwrap();
    assert_eq!((db.code().code(), db.position()), ("42P01", Some(&ErrorPosition::Original(15))));
    // A parameter the client sends as text that is no number where a number goes.
    let stmt = pg.prepare_typed("SELECT count(*) FROM orders WHERE _offset > $1", &[Type::TEXT]).await.unwrap();
    let e = pg.query(&stmt, &[&"ten"]).await.unwrap_err();
    assert_eq!(e.as_db_error().unwrap().code().code(), "22P02", "{e}");
    let e = pg.prepare("SELECT 1; SELECT 2").await.unwrap_err();
    assert_eq!(e.as_db_error().unwrap().code().code(), "42601");
    let n: i64 = pg.query_one("SELECT count(*) FROM orders", &[]).await.unwrap().get(0);
    assert_eq!(n, 8);

    // Transactions are accepted (every statement is its own); SET is accepted.
    pg.batch_execute("BEGIN; SET search_path = public; COMMIT").await.unwrap();
    let n: i64 = pg.query_one("SELECT count(*) FROM o", &[]).await.unwrap().get(0);
    assert_eq!(n, 8);

    // A source survives a restart; the catalog is in the controller group.
    drop(pg);
    server.shutdown().await;
    let server = start(test_config(dir.path())).await;
    let pg = connect(server.sql_addr).await.expect("connect");
    let rows = pg.simple_query("SHOW SOURCES").await.unwrap();
    let names: Vec<String> = rows
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .collect();
    assert_eq!(names, ["o"]);
    let n: i64 = pg.query_one("SELECT sum(id) FROM o", &[]).await.unwrap().get(0);
    // The id is the key: "5" reads as 5 (its value's "five" is not asked for), "x" as NULL.
    assert_eq!(n, 1 + 2 + 4 + 3 + 5 + 6 + 7);
    server.shutdown().await;
}

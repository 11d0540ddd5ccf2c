//! SQL logic tests: every `.slt` file under `tests/slt`, run in name order over the
//! PostgreSQL protocol (simple query) against one node holding the fixture topics.

use std::fmt;
use std::path::PathBuf;

use async_trait::async_trait;
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType, Runner};
use tests::*;
use tokio_postgres::{NoTls, SimpleQueryMessage};

use super::fixtures;

/// A connection to the node's SQL listener.
struct Pg {
    client: tokio_postgres::Client,
}

/// An error as the slt files match it: `SQLSTATE: message (at character N)`, on one line.
#[derive(Debug)]
struct PgError(tokio_postgres::Error);

impl fmt::Display for PgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_db_error() {
            Some(db) => {
                // One line, for the files' regular expressions.
                write!(f, "{}: {}", db.code().code(), db.message().replace('\n', " "))?;
                if let Some(tokio_postgres::error::ErrorPosition::Original(p)) = db.position() {
                    write!(f, " (at character {p})")?;
                }
                Ok(())
            }
            None => write!(f, "{}", self.0),
        }
    }
}

impl std::error::Error for PgError {}

pub async fn connect(addr: std::net::SocketAddr) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let config = format!("host={} port={} user=quarry dbname=quarry", addr.ip(), addr.port());
    let (client, connection) = tokio_postgres::connect(&config, NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

#[async_trait]
impl AsyncDB for Pg {
    type Error = PgError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, PgError> {
        let messages = self.client.simple_query(sql).await.map_err(PgError)?;
        let mut columns = None;
        let mut rows = Vec::new();
        let mut count = 0;
        for m in messages {
            match m {
                SimpleQueryMessage::RowDescription(d) => {
                    columns = Some(d.len());
                    rows.clear();
                }
                SimpleQueryMessage::Row(r) => {
                    rows.push(
                        (0..r.len())
                            .map(|i| match r.get(i) {
                                None => "NULL".to_string(),
                                Some("") => "(empty)".to_string(),
                                Some(v) => v.to_string(),
                            })
                            .collect(),
                    );
                }
                SimpleQueryMessage::CommandComplete(n) => count = n,
                _ => {}
            }
        }
        Ok(match columns {
            Some(n) => DBOutput::Rows { types: vec![DefaultColumnType::Any; n], rows },
            None => DBOutput::StatementComplete(count),
        })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "quarry"
    }

    async fn sleep(d: std::time::Duration) {
        tokio::time::sleep(d).await
    }

    fn error_sql_state(e: &PgError) -> Option<String> {
        e.0.code().map(|c| c.code().to_string())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_logic_tests() {
    init_tracing();
    let dir = temp_dir();
    let server = start(test_config(dir.path())).await;
    fixtures::load(server.kafka_addr).await;
    let addr = server.sql_addr;
    let mut files: Vec<PathBuf> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/slt"))
        .expect("slt directory")
        .map(|e| e.expect("slt entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    let mut failures = Vec::new();
    for file in &files {
        let mut runner =
            Runner::new(move || async move { connect(addr).await.map(|client| Pg { client }).map_err(PgError) });
        if let Err(e) = runner.run_file_async(file).await {
            failures.push(format!("{}", e.display(false)));
        }
    }
    server.shutdown().await;
    assert!(failures.is_empty(), "{} of {} files failed:\n{}", failures.len(), files.len(), failures.join("\n\n"));
}

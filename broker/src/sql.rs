//! SQL on this node: its topics as the engine sees them ([`NodeTopics`]), and the HTTP
//! `POST /sql` endpoint, which streams rows as JSON.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use query::datafusion::arrow::array::ArrayRef;
use query::{CatalogError, Engine, Output, SqlError};

use crate::cluster::controller::{ControllerCmd, ControllerRefusal};
use crate::cluster::node::Node;

/// The node's topics for the SQL engine: every topic but the internal ones (`__` names).
pub struct NodeTopics {
    pub node: Arc<Node>,
}

fn internal(topic: &str) -> bool {
    topic.starts_with("__")
}

#[async_trait::async_trait]
impl query::Topics for NodeTopics {
    fn topic_names(&self) -> Vec<String> {
        self.node.metadata().topics.keys().filter(|t| !internal(t)).cloned().collect()
    }

    fn partition_count(&self, topic: &str) -> Option<i32> {
        if internal(topic) {
            return None;
        }
        self.node.metadata().topics.get(topic).map(|t| t.partitions.len() as i32)
    }

    fn bounds(&self, topic: &str, partition: i32) -> Option<(i64, i64)> {
        let o = self.node.partition(topic, partition)?.offsets();
        Some((o.log_start_offset, o.high_watermark))
    }

    fn offset_for_timestamp(&self, topic: &str, partition: i32, timestamp_ms: i64) -> Result<Option<i64>, String> {
        let p = self.node.partition(topic, partition).ok_or_else(|| format!("{topic}/{partition} is not here"))?;
        p.log.offset_for_timestamp(timestamp_ms).map_err(|e| e.to_string())
    }

    fn read(&self, topic: &str, partition: i32, offset: i64, end: i64, max_bytes: usize) -> Result<Bytes, String> {
        let p = self.node.partition(topic, partition).ok_or_else(|| format!("{topic}/{partition} is not here"))?;
        let mut buf = BytesMut::new();
        p.log.read_into(offset, end, max_bytes, true, &mut buf).map_err(|e| e.to_string())?;
        metrics::counter!("quarry_sql_bytes_read_total").increment(buf.len() as u64);
        Ok(buf.freeze())
    }

    fn sources(&self) -> BTreeMap<String, String> {
        self.node.metadata().sources.clone()
    }

    async fn create_source(&self, name: &str, definition: String) -> Result<(), CatalogError> {
        let cmd = ControllerCmd::CreateSource { name: name.to_string(), definition };
        match self.node.write_catalog(cmd).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(ControllerRefusal::SourceExists)) => Err(CatalogError::Exists),
            Ok(Err(other)) => Err(CatalogError::Unavailable(format!("{other:?}"))),
            Err(e) => Err(CatalogError::Unavailable(e)),
        }
    }

    async fn drop_source(&self, name: &str) -> Result<(), CatalogError> {
        match self.node.write_catalog(ControllerCmd::DropSource { name: name.to_string() }).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(ControllerRefusal::UnknownSource)) => Err(CatalogError::Unknown),
            Ok(Err(other)) => Err(CatalogError::Unavailable(format!("{other:?}"))),
            Err(e) => Err(CatalogError::Unavailable(e)),
        }
    }
}

#[derive(serde::Deserialize)]
pub struct SqlRequest {
    sql: String,
}

fn error_json(e: &SqlError) -> String {
    let position = e.position.map_or("null".to_string(), |p| p.to_string());
    format!(
        "{{\"code\":{},\"message\":{},\"position\":{position}}}",
        serde_json::to_string(e.code).unwrap_or_default(),
        serde_json::to_string(&e.message).unwrap_or_default()
    )
}

/// `POST /sql` with `{"sql": "..."}`: runs the statements; answers with the last one's
/// `{"columns": [{"name", "type"}], "rows": [[...], ...]}` (rows streamed as they are
/// produced) or `{"command": "..."}`; an error is `{"error": {"code", "message",
/// "position"}}` with status 400, or, once rows were sent, the rows so far and then
/// `"error": {...}` in place of the rest.
pub async fn handle(State(engine): State<Arc<Engine>>, Json(req): Json<SqlRequest>) -> Response {
    metrics::counter!("quarry_sql_statements_total", "endpoint" => "http").increment(1);
    let outputs = match engine.execute(&req.sql).await {
        Ok(o) => o,
        Err(e) => {
            metrics::counter!("quarry_sql_errors_total", "code" => e.code).increment(1);
            return (
                StatusCode::BAD_REQUEST,
                [(header::CONTENT_TYPE, "application/json")],
                format!("{{\"error\":{}}}\n", error_json(&e)),
            )
                .into_response();
        }
    };
    let Some(last) = outputs.into_iter().last() else {
        return (StatusCode::OK, "{}").into_response();
    };
    match last {
        Output::Done(tag) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            format!("{{\"command\":{}}}\n", serde_json::to_string(&tag).unwrap_or_default()),
        )
            .into_response(),
        Output::Rows(stream) => {
            let schema = stream.schema();
            let columns: Vec<String> = schema
                .fields()
                .iter()
                .map(|f| {
                    format!(
                        "{{\"name\":{},\"type\":\"{}\"}}",
                        serde_json::to_string(f.name()).unwrap_or_default(),
                        query::values::pg_type_name(f.data_type())
                    )
                })
                .collect();
            let head = format!("{{\"columns\":[{}],\"rows\":[", columns.join(","));
            let mut first = true;
            // After an error the rows end with it: `"rows": [...], "error": {...}}`.
            let failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let failed_at_end = failed.clone();
            let rows = stream.scan((), move |_, batch| {
                if failed.load(std::sync::atomic::Ordering::Relaxed) {
                    return futures::future::ready(None);
                }
                let chunk = match batch {
                    Ok(batch) => {
                        let arrays: &[ArrayRef] = batch.columns();
                        let mut out = String::new();
                        for row in 0..batch.num_rows() {
                            if !first {
                                out.push(',');
                            }
                            first = false;
                            out.push('[');
                            for (i, a) in arrays.iter().enumerate() {
                                if i > 0 {
                                    out.push(',');
                                }
                                query::values::push_json(&mut out, a, row);
                            }
                            out.push(']');
                        }
                        out
                    }
                    Err(e) => {
                        failed.store(true, std::sync::atomic::Ordering::Relaxed);
                        let e = SqlError::from_datafusion(e, "");
                        metrics::counter!("quarry_sql_errors_total", "code" => e.code).increment(1);
                        format!("],\"error\":{}}}\n", error_json(&e))
                    }
                };
                futures::future::ready(Some(Ok::<_, std::io::Error>(Bytes::from(chunk))))
            });
            let end = futures::stream::once(async move {
                let end = if failed_at_end.load(std::sync::atomic::Ordering::Relaxed) { "" } else { "]}\n" };
                Ok(Bytes::from_static(end.as_bytes()))
            });
            let body =
                futures::stream::once(async move { Ok::<_, std::io::Error>(Bytes::from(head)) }).chain(rows).chain(end);
            Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from_stream(body))
                .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
        }
    }
}

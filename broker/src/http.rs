//! The HTTP listener: `/metrics` in Prometheus text format, `/health`, `POST /sql`
//! (`sql.rs`), the cluster's state (`GET /cluster`) and administration
//! (`POST /cluster/nodes/{id}/decommission`); with `fault_injection` set,
//! `POST /faults/isolate` and `/faults/heal`.

use std::sync::{Arc, OnceLock};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::cluster::node::Node;

static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide metrics recorder once and returns its handle.
pub fn prometheus() -> &'static PrometheusHandle {
    PROMETHEUS.get_or_init(|| {
        PrometheusBuilder::new()
            .set_buckets(&[
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ])
            .expect("static buckets are valid")
            .install_recorder()
            .expect("metrics recorder is installed once")
    })
}

pub async fn serve(listener: TcpListener, node: Arc<Node>, engine: Arc<query::Engine>, shutdown: CancellationToken) {
    let mut routes = Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/cluster", get(cluster))
        .route("/cluster/nodes/{id}/decommission", post(decommission));
    if node.config.fault_injection {
        routes = routes.route("/faults/isolate", post(isolate)).route("/faults/heal", post(heal));
    }
    let app = routes.with_state(node).merge(Router::new().route("/sql", post(crate::sql::handle)).with_state(engine));
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await {
        tracing::error!(error = %e, "http listener failed");
    }
}

async fn metrics(State(node): State<Arc<Node>>) -> impl IntoResponse {
    for p in node.partitions() {
        let o = p.offsets();
        let labels = [("topic", p.topic.clone()), ("partition", p.index.to_string())];
        metrics::gauge!("quarry_high_watermark", &labels).set(o.high_watermark as f64);
        metrics::gauge!("quarry_log_start_offset", &labels).set(o.log_start_offset as f64);
        metrics::gauge!("quarry_log_bytes", &labels).set(o.log_bytes as f64);
        metrics::gauge!("quarry_fetches_waiting", &labels).set(p.waiting_fetches() as f64);
    }
    ([("content-type", "text/plain; version=0.0.4")], prometheus().render())
}

/// Cuts this node off from every other (fault injection).
async fn isolate(State(node): State<Arc<Node>>) -> impl IntoResponse {
    tracing::warn!("fault injection: isolated from the other nodes");
    node.peers.set_isolated(true);
    "isolated\n"
}

/// Ends an isolation (fault injection).
async fn heal(State(node): State<Arc<Node>>) -> impl IntoResponse {
    tracing::warn!("fault injection: isolation ended");
    node.peers.set_isolated(false);
    "healed\n"
}

/// The cluster as this node knows it: nodes, their state and load, the controller's
/// members, and the partitions whose replicas are moving.
async fn cluster(State(node): State<Arc<Node>>) -> impl IntoResponse {
    let metadata = node.metadata();
    let (voters, learners) = node.controller_members();
    let nodes: Vec<serde_json::Value> = metadata
        .brokers
        .iter()
        .map(|(id, b)| {
            let state = if metadata.draining.contains(id) { "decommissioning" } else { "active" };
            serde_json::json!({
                "id": id,
                "kafka": b.kafka,
                "raft": b.raft,
                "state": state,
                "partitions": metadata.partitions_on(*id),
            })
        })
        .collect();
    let moving: Vec<serde_json::Value> = metadata
        .topics
        .iter()
        .flat_map(|(name, t)| {
            t.moving.iter().map(move |(index, to)| {
                serde_json::json!({"topic": name, "partition": index, "from": t.replicas[*index as usize], "to": to})
            })
        })
        .collect();
    axum::Json(serde_json::json!({
        "cluster_id": metadata.cluster_id,
        "controller": node.controller_leader(),
        "voters": voters,
        "learners": learners,
        "nodes": nodes,
        "decommissioned": metadata.retired,
        "moving": moving,
    }))
}

/// Starts decommissioning a node: its replicas move to the others, then it leaves the
/// cluster (`GET /cluster` shows when; the node can be stopped after that).
async fn decommission(
    State(node): State<Arc<Node>>,
    axum::extract::Path(id): axum::extract::Path<u64>,
) -> impl IntoResponse {
    match node.decommission(id).await {
        Ok(()) => (StatusCode::ACCEPTED, format!("decommissioning node {id}\n")),
        Err((code, message)) => {
            let status = match code {
                crate::error::ResponseError::BrokerIdNotRegistered => StatusCode::NOT_FOUND,
                crate::error::ResponseError::InvalidReplicationFactor => StatusCode::CONFLICT,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            };
            (status, format!("cannot decommission node {id}: {message}\n"))
        }
    }
}

async fn health(State(node): State<Arc<Node>>) -> impl IntoResponse {
    let leaders = node.partitions().iter().filter(|p| p.is_leader()).count();
    let total = node.partitions().len();
    let status = if leaders == total { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (
        status,
        format!(
            "{{\"status\":\"{}\",\"partitions\":{total},\"leaders\":{leaders}}}\n",
            if status == StatusCode::OK { "ok" } else { "degraded" }
        ),
    )
}

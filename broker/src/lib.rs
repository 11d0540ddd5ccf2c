//! The Quarry broker: Kafka listener, API handlers, raft groups, HTTP endpoints.
//!
//! [`Server::start`] binds the listeners and opens the node; `main.rs` only parses the
//! command line. Tests start servers on port 0 the same way.

pub mod api;
pub mod cluster;
pub mod config;
pub mod error;
pub mod group;
pub mod http;
pub mod retention;
pub mod server;
pub mod sql;
pub mod topic_config;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use cluster::node::Node;

#[global_allocator]
static GLOBAL: protocol::alloc::LazyHugeAlloc = protocol::alloc::LazyHugeAlloc;
pub use config::Config;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// A running node with its listeners.
pub struct Server {
    pub node: Arc<Node>,
    pub kafka_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub sql_addr: SocketAddr,
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
}

impl Server {
    /// Binds the listeners, opens the data directory and starts serving.
    ///
    /// A listen port of 0 picks a free port; the advertised address then uses it too.
    pub async fn start(mut config: Config) -> anyhow::Result<Server> {
        http::prometheus();
        let kafka = TcpListener::bind(&config.kafka_listen)
            .await
            .with_context(|| format!("cannot listen for Kafka clients on {}", config.kafka_listen))?;
        let http_listener = TcpListener::bind(&config.http_listen)
            .await
            .with_context(|| format!("cannot listen for HTTP on {}", config.http_listen))?;
        let sql_listener = TcpListener::bind(&config.sql_listen)
            .await
            .with_context(|| format!("cannot listen for SQL clients on {}", config.sql_listen))?;
        let kafka_addr = kafka.local_addr()?;
        let sql_addr = sql_listener.local_addr()?;
        let http_addr = http_listener.local_addr()?;
        if config.advertised_kafka.is_none() && config.kafka_listen.ends_with(":0") {
            config.advertised_kafka = Some(kafka_addr.to_string());
        }
        let shutdown = CancellationToken::new();
        let peer_map = config.peer_map();
        let own = config.join.as_ref().map(|_| config.raft_listen.clone());
        let peers = cluster::network::Peers::new(config.node_id, "quarry", &peer_map, own);
        let raft_addr = if config.clustered() {
            let listener = TcpListener::bind(&config.raft_listen)
                .await
                .with_context(|| format!("cannot listen for other nodes on {}", config.raft_listen))?;
            let addr = listener.local_addr()?;
            peers.start(listener, shutdown.clone());
            Some(addr)
        } else {
            None
        };
        let node = match Node::open(config, peers).await {
            Ok(node) => node,
            Err(e) => {
                shutdown.cancel();
                return Err(e);
            }
        };
        let mut tasks = JoinSet::new();
        tasks.spawn(server::serve(kafka, node.clone(), shutdown.clone()));
        let engine = Arc::new(query::Engine::new(Arc::new(sql::NodeTopics { node: node.clone() }))?);
        tasks.spawn(http::serve(http_listener, node.clone(), engine.clone(), shutdown.clone()));
        tasks.spawn(query::pg::serve(sql_listener, engine, shutdown.clone()));
        tasks.spawn(retention::run(node.clone(), shutdown.clone()));
        tracing::info!(kafka = %kafka_addr, http = %http_addr, sql = %sql_addr, raft = ?raft_addr, advertised = node.config.advertised(), "listening");
        Ok(Server { node, kafka_addr, http_addr, sql_addr, shutdown, tasks })
    }

    /// Stops the listeners and connections, then every raft group.
    ///
    /// Returns once the data directory is closed, so it can be opened again at once.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        while self.tasks.join_next().await.is_some() {}
        self.node.shutdown().await;
        // Connections and their requests end on the cancellation (fetch long polls when
        // their partitions stop); wait for them to let go of the node.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while Arc::strong_count(&self.node) > 1 && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        if Arc::strong_count(&self.node) > 1 {
            tracing::warn!("requests still hold the node after shutdown");
        }
        // Raft's tasks end a moment after their groups shut down; the database closes (and
        // releases its lock) when the last of them lets go.
        let mut closed = self.node.db.closed();
        drop(self.node);
        let wait = tokio::time::timeout_at(deadline.into(), async { while closed.changed().await.is_ok() {} });
        if wait.await.is_err() {
            tracing::warn!("the database is still open after shutdown");
        }
    }
}

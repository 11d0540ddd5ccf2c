//! The `quarry` command.

use std::path::PathBuf;

use anyhow::Context;
use broker::{Config, Server};
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "quarry", version, about = "A Kafka-compatible broker with queryable topics")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node.
    Serve(ServeArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// TOML config file; flags override its values.
    #[arg(long, env = "QUARRY_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory [default: ./data]
    #[arg(long, env = "QUARRY_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Kafka listener HOST:PORT [default: 127.0.0.1:9092]
    #[arg(long, env = "QUARRY_KAFKA_LISTEN")]
    kafka_listen: Option<String>,
    /// Address advertised to Kafka clients [default: the Kafka listener]
    #[arg(long, env = "QUARRY_ADVERTISED_KAFKA")]
    advertised_kafka: Option<String>,
    /// HTTP listener for /metrics and /health [default: 127.0.0.1:8081]
    #[arg(long, env = "QUARRY_HTTP_LISTEN")]
    http_listen: Option<String>,
    /// PostgreSQL wire protocol listener for SQL clients [default: 127.0.0.1:5433]
    #[arg(long, env = "QUARRY_SQL_LISTEN")]
    sql_listen: Option<String>,
    /// This node's id, never reused for another node [default: 1]
    #[arg(long, env = "QUARRY_NODE_ID")]
    node_id: Option<u64>,
    /// Listener for the other nodes (raft) HOST:PORT [default: 127.0.0.1:9093]
    #[arg(long, env = "QUARRY_RAFT_LISTEN")]
    raft_listen: Option<String>,
    /// The cluster's voters, this node included: 1=HOST:PORT,2=HOST:PORT,3=HOST:PORT
    /// [default: none, a single node]
    #[arg(long, env = "QUARRY_PEERS")]
    peers: Option<String>,
    /// Join the running cluster that has a node at this raft address (HOST:PORT); this
    /// node is reached at --raft-listen
    #[arg(long, env = "QUARRY_JOIN")]
    join: Option<String>,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,openraft=warn")))
        .init();
    match cli.command {
        Command::Serve(args) => {
            let mut config = match &args.config {
                Some(path) => Config::from_file(path)?,
                None => Config::default(),
            };
            if let Some(v) = args.data_dir {
                config.data_dir = v;
            }
            if let Some(v) = args.kafka_listen {
                config.kafka_listen = v;
            }
            if let Some(v) = args.advertised_kafka {
                config.advertised_kafka = Some(v);
            }
            if let Some(v) = args.http_listen {
                config.http_listen = v;
            }
            if let Some(v) = args.sql_listen {
                config.sql_listen = v;
            }
            if let Some(v) = args.node_id {
                config.node_id = v;
            }
            if let Some(v) = args.raft_listen {
                config.raft_listen = v;
            }
            if let Some(v) = args.peers {
                config.peers = v;
            }
            if let Some(v) = args.join {
                config.join = Some(v);
            }
            let config = config.validate()?;
            let runtime =
                tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the runtime")?;
            runtime.block_on(serve(config))
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let server = Server::start(config).await?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    server.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

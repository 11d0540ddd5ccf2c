//! Node configuration: defaults, the TOML file, command-line overrides, validation.
//!
//! Keys follow Kafka's broker config names with `_` for `.` (`log.retention.ms` is
//! `log_retention_ms`); the dotted Kafka spelling is accepted in the file as well.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Everything a node needs to start.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// This broker's id; never reused for another node.
    #[serde(alias = "node.id", alias = "broker.id")]
    pub node_id: u64,
    #[serde(alias = "data.dir", alias = "log.dirs")]
    pub data_dir: PathBuf,
    /// Kafka listener, `HOST:PORT`.
    pub kafka_listen: String,
    /// The address clients are told to connect to; defaults to `kafka_listen`.
    pub advertised_kafka: Option<String>,
    /// HTTP listener for `/metrics` and `/health`.
    pub http_listen: String,
    /// PostgreSQL wire protocol listener for SQL clients (psql, psycopg, JDBC).
    pub sql_listen: String,
    /// Listener for the other nodes of the cluster (raft traffic), `HOST:PORT`. Used only
    /// when `peers` names other nodes.
    pub raft_listen: String,
    /// The voters of the cluster with their raft addresses, this node included:
    /// `1=HOST:PORT,2=HOST:PORT,3=HOST:PORT`. Empty: a single node.
    pub peers: String,
    /// The raft address (`HOST:PORT`) of any node of a running cluster for this node to
    /// join, when its data directory is new; kept in the config afterwards, it marks the
    /// node as one of a cluster. Other nodes reach this one at `raft_listen`.
    pub join: Option<String>,
    #[serde(alias = "auto.create.topics.enable")]
    pub auto_create_topics_enable: bool,
    #[serde(alias = "num.partitions")]
    pub num_partitions: u32,
    #[serde(alias = "socket.request.max.bytes")]
    pub socket_request_max_bytes: usize,
    #[serde(alias = "log.retention.ms")]
    pub log_retention_ms: i64,
    #[serde(alias = "log.retention.bytes")]
    pub log_retention_bytes: i64,
    #[serde(alias = "log.retention.check.interval.ms")]
    pub log_retention_check_interval_ms: u64,
    #[serde(alias = "log.cleanup.policy")]
    pub log_cleanup_policy: String,
    #[serde(alias = "message.max.bytes")]
    pub message_max_bytes: i64,
    #[serde(alias = "log.message.timestamp.type")]
    pub log_message_timestamp_type: String,
    /// Partitions of `__consumer_offsets`, made on the first FindCoordinator. Fixed once
    /// made: a group's coordinator is the partition its id hashes to.
    #[serde(alias = "offsets.topic.num.partitions")]
    pub offsets_topic_num_partitions: u32,
    /// How long a new group waits for more members before its first generation.
    #[serde(alias = "group.initial.rebalance.delay.ms")]
    pub group_initial_rebalance_delay_ms: u64,
    #[serde(alias = "group.min.session.timeout.ms")]
    pub group_min_session_timeout_ms: u64,
    #[serde(alias = "group.max.session.timeout.ms")]
    pub group_max_session_timeout_ms: u64,
    /// How long a partition remembers an idempotent producer that stopped writing to it;
    /// a retry after that is accepted at any sequence.
    #[serde(alias = "producer.id.expiration.ms")]
    pub producer_id_expiration_ms: i64,
    /// How long the offsets of a consumer group without members are kept, counted from
    /// the later of its last commit and its last member leaving.
    #[serde(alias = "offsets.retention.minutes")]
    pub offsets_retention_minutes: u64,
    #[serde(alias = "offsets.retention.check.interval.ms")]
    pub offsets_retention_check_interval_ms: u64,
    /// Raft entries after which a group snapshots its state and purges its log. A replica
    /// further behind catches up from a snapshot (copying the batches it lacks).
    #[serde(alias = "raft.snapshot.entries")]
    pub raft_snapshot_entries: u64,
    /// Whether partition leadership moves back to each partition's preferred replica (the
    /// first of its replicas) once that replica is back and caught up.
    #[serde(alias = "auto.leader.rebalance.enable")]
    pub auto_leader_rebalance_enable: bool,
    /// How often a node hands partitions it leads to their preferred replicas.
    #[serde(alias = "leader.imbalance.check.interval.seconds")]
    pub leader_imbalance_check_interval_seconds: u64,
    /// How long a follower may stay behind its leader and still count in the partition's
    /// ISR (Metadata, `min.insync.replicas`). A node not heard from for 2 s leaves every
    /// ISR at once.
    #[serde(alias = "replica.lag.time.max.ms")]
    pub replica_lag_time_max_ms: u64,
    /// The fewest in-sync replicas a partition must have to take an acks=all write
    /// (NOT_ENOUGH_REPLICAS otherwise): the default of the topic config.
    #[serde(alias = "min.insync.replicas")]
    pub min_insync_replicas: i64,
    /// Serves `POST /faults/isolate` and `POST /faults/heal` on the HTTP listener, which
    /// cut this node off from the others (raft and node requests both ways) and restore
    /// it: for fault-injection tests only.
    #[serde(alias = "fault.injection")]
    pub fault_injection: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node_id: 1,
            data_dir: PathBuf::from("./data"),
            kafka_listen: "127.0.0.1:9092".into(),
            advertised_kafka: None,
            http_listen: "127.0.0.1:8081".into(),
            sql_listen: "127.0.0.1:5433".into(),
            raft_listen: "127.0.0.1:9093".into(),
            peers: String::new(),
            join: None,
            auto_create_topics_enable: true,
            num_partitions: 1,
            socket_request_max_bytes: 104_857_600,
            log_retention_ms: 604_800_000,
            log_retention_bytes: -1,
            log_retention_check_interval_ms: 300_000,
            log_cleanup_policy: "delete".into(),
            message_max_bytes: 1_048_588,
            log_message_timestamp_type: "CreateTime".into(),
            offsets_topic_num_partitions: 50,
            group_initial_rebalance_delay_ms: 3000,
            group_min_session_timeout_ms: 6000,
            group_max_session_timeout_ms: 1_800_000,
            producer_id_expiration_ms: 86_400_000,
            offsets_retention_minutes: 10_080,
            offsets_retention_check_interval_ms: 600_000,
            raft_snapshot_entries: 8192,
            auto_leader_rebalance_enable: true,
            leader_imbalance_check_interval_seconds: 300,
            replica_lag_time_max_ms: 30_000,
            min_insync_replicas: 1,
            fault_injection: false,
        }
    }
}

/// A configuration that cannot be used, with what is wrong in it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config file {path}")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("invalid {key} {value:?}: {reason}")]
    Invalid { key: &'static str, value: String, reason: String },
}

impl Config {
    /// Reads a TOML config file; keys it does not set keep their defaults.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse { path: path.into(), source })
    }

    /// Checks values that would otherwise fail later, or silently.
    pub fn validate(self) -> Result<Config, ConfigError> {
        let invalid = |key: &'static str, value: &dyn std::fmt::Display, reason: &str| ConfigError::Invalid {
            key,
            value: value.to_string(),
            reason: reason.into(),
        };
        for (key, addr) in
            [("kafka_listen", &self.kafka_listen), ("http_listen", &self.http_listen), ("sql_listen", &self.sql_listen)]
        {
            check_host_port(addr).map_err(|r| invalid(key, addr, &r))?;
        }
        check_host_port(&self.raft_listen).map_err(|r| invalid("raft_listen", &self.raft_listen, &r))?;
        let peers = parse_peers(&self.peers).map_err(|r| invalid("peers", &self.peers, &r))?;
        if !peers.is_empty() && !peers.contains_key(&self.node_id) {
            return Err(invalid("peers", &self.peers, &format!("does not name this node ({})", self.node_id)));
        }
        if let Some(join) = &self.join {
            check_host_port(join).map_err(|r| invalid("join", join, &r))?;
            if self.raft_listen.ends_with(":0") {
                return Err(invalid("raft_listen", &self.raft_listen, "a joining node needs a fixed port"));
            }
        }
        if let Some(adv) = &self.advertised_kafka {
            check_host_port(adv).map_err(|r| invalid("advertised_kafka", adv, &r))?;
        }
        if self.num_partitions == 0 {
            return Err(invalid("num_partitions", &self.num_partitions, "must be at least 1"));
        }
        if self.group_min_session_timeout_ms > self.group_max_session_timeout_ms {
            return Err(invalid(
                "group_min_session_timeout_ms",
                &self.group_min_session_timeout_ms,
                "must not exceed group_max_session_timeout_ms",
            ));
        }
        if self.offsets_topic_num_partitions == 0 {
            return Err(invalid(
                "offsets_topic_num_partitions",
                &self.offsets_topic_num_partitions,
                "must be at least 1",
            ));
        }
        if self.producer_id_expiration_ms < 1 {
            return Err(invalid("producer_id_expiration_ms", &self.producer_id_expiration_ms, "must be at least 1"));
        }
        if self.socket_request_max_bytes < 1024 {
            return Err(invalid("socket_request_max_bytes", &self.socket_request_max_bytes, "must be at least 1024"));
        }
        let defaults = [
            ("retention.ms", self.log_retention_ms.to_string()),
            ("retention.bytes", self.log_retention_bytes.to_string()),
            ("cleanup.policy", self.log_cleanup_policy.clone()),
            ("max.message.bytes", self.message_max_bytes.to_string()),
            ("message.timestamp.type", self.log_message_timestamp_type.clone()),
            ("min.insync.replicas", self.min_insync_replicas.to_string()),
        ];
        for (name, value) in defaults {
            crate::topic_config::validate(name, &value).map_err(|r| ConfigError::Invalid {
                key: crate::topic_config::broker_key(name),
                value: value.clone(),
                reason: r,
            })?;
        }
        Ok(self)
    }

    /// The cluster's voters (node id → raft address); empty for a single node.
    pub fn peer_map(&self) -> BTreeMap<u64, String> {
        parse_peers(&self.peers).unwrap_or_default()
    }

    /// Whether this node is one of a cluster (talks raft to other nodes).
    pub fn clustered(&self) -> bool {
        self.peer_map().len() > 1 || self.join.is_some()
    }

    /// The Kafka address advertised to clients.
    pub fn advertised(&self) -> &str {
        self.advertised_kafka.as_deref().unwrap_or(&self.kafka_listen)
    }
}

/// `ID=HOST:PORT,...` as a map; ids are distinct.
pub fn parse_peers(text: &str) -> Result<BTreeMap<u64, String>, String> {
    let mut out = BTreeMap::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part.split_once('=').ok_or_else(|| format!("{part:?} is not ID=HOST:PORT"))?;
        let id: u64 = id.trim().parse().map_err(|_| format!("node id {id:?} is not a number"))?;
        check_host_port(addr.trim()).map_err(|r| format!("{addr:?}: {r}"))?;
        if out.insert(id, addr.trim().to_string()).is_some() {
            return Err(format!("node {id} is named twice"));
        }
    }
    Ok(out)
}

/// `HOST:PORT` with a numeric port.
pub fn check_host_port(addr: &str) -> Result<(), String> {
    let (host, port) = addr.rsplit_once(':').ok_or("expected HOST:PORT")?;
    if host.is_empty() {
        return Err("host is empty".into());
    }
    port.parse::<u16>().map_err(|_| format!("port {port:?} is not a number from 0 to 65535"))?;
    Ok(())
}

/// Splits a validated `HOST:PORT`.
pub fn split_host_port(addr: &str) -> (String, i32) {
    let (host, port) = addr.rsplit_once(':').unwrap_or((addr, "0"));
    (host.trim_start_matches('[').trim_end_matches(']').to_string(), port.parse().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_keys_accept_kafka_spelling() {
        let c: Config = toml::from_str("\"auto.create.topics.enable\" = false\nnum_partitions = 4\n").unwrap();
        assert!(!c.auto_create_topics_enable);
        assert_eq!(c.num_partitions, 4);
        assert_eq!(c.kafka_listen, "127.0.0.1:9092");
    }

    #[test]
    fn unknown_key_is_an_error() {
        assert!(toml::from_str::<Config>("no_such_key = 1").is_err());
    }

    #[test]
    fn bad_listen_address_is_rejected() {
        let c = Config { kafka_listen: "localhost".into(), ..Default::default() };
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("kafka_listen"), "{e}");
    }

    #[test]
    fn peers_name_every_voter_this_node_included() {
        let c =
            Config { node_id: 2, peers: "1=127.0.0.1:9001, 2=127.0.0.1:9002,3=h:9003".into(), ..Default::default() };
        let c = c.validate().unwrap();
        assert_eq!(c.peer_map().keys().copied().collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(c.peer_map()[&3], "h:9003");
        for (peers, complaint) in
            [("1=a:1,1=b:2", "named twice"), ("x=a:1", "not a number"), ("1=a", "HOST:PORT"), ("3=a:1", "this node")]
        {
            let c = Config { node_id: 1, peers: peers.into(), ..Default::default() };
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains("peers") && e.contains(complaint), "{e}");
        }
    }

    #[test]
    fn bad_default_topic_config_is_rejected() {
        let c = Config { log_message_timestamp_type: "Wallclock".into(), ..Default::default() };
        assert!(c.validate().unwrap_err().to_string().contains("log_message_timestamp_type"));
    }

    #[test]
    fn group_settings_take_kafka_names_and_are_checked() {
        let c: Config =
            toml::from_str("\"group.initial.rebalance.delay.ms\" = 0\noffsets_topic_num_partitions = 3\n").unwrap();
        assert_eq!((c.group_initial_rebalance_delay_ms, c.offsets_topic_num_partitions), (0, 3));
        let c =
            Config { group_min_session_timeout_ms: 60_000, group_max_session_timeout_ms: 6_000, ..Default::default() };
        assert!(c.validate().unwrap_err().to_string().contains("group_min_session_timeout_ms"));
        let c = Config { offsets_topic_num_partitions: 0, ..Default::default() };
        assert!(c.validate().unwrap_err().to_string().contains("offsets_topic_num_partitions"));
    }
}

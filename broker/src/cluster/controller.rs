//! The controller group's state: topics, their partitions' raft groups, and topic configs.

use std::collections::BTreeMap;
use std::sync::Arc;

use openraft::LogId;
use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};
use storage::GroupId;
use tokio::sync::watch;

use super::machine::Machine;
use super::ControllerTypes;

/// A topic as the controller knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    /// Kafka topic id (UUID bytes), never reused.
    pub id: [u8; 16],
    /// The raft group of each partition, by partition index.
    pub partitions: Vec<GroupId>,
    /// The nodes holding each partition, by partition index; the first is its preferred
    /// leader.
    pub replicas: Vec<Vec<u64>>,
    /// Topic configs set explicitly; everything else is the broker default.
    pub configs: BTreeMap<String, String>,
}

/// Cluster metadata: the controller's whole state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    pub cluster_id: String,
    pub topics: BTreeMap<String, TopicMeta>,
    /// Next raft group id to hand out; group ids are never reused.
    pub next_group: GroupId,
    /// Next idempotent producer id to hand out; ids are handed to nodes in blocks and
    /// never reused.
    pub next_producer_id: i64,
    /// SQL sources: their definitions (JSON, as the SQL engine writes them) by name.
    pub sources: BTreeMap<String, String>,
    /// The nodes of the cluster as they registered.
    pub brokers: BTreeMap<u64, BrokerMeta>,
}

/// A node as the cluster knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerMeta {
    /// Where Kafka clients reach it, `HOST:PORT`.
    pub kafka: String,
    /// Where other nodes reach it.
    pub raft: String,
}

impl Metadata {
    pub fn topic_by_id(&self, id: &[u8; 16]) -> Option<(&String, &TopicMeta)> {
        self.topics.iter().find(|(_, t)| &t.id == id)
    }
}

/// A change to cluster metadata.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ControllerCmd {
    SetClusterId {
        cluster_id: String,
    },
    /// A topic with one partition per entry of `replicas` (the nodes that hold it).
    CreateTopic {
        name: String,
        id: [u8; 16],
        replicas: Vec<Vec<u64>>,
        configs: BTreeMap<String, String>,
    },
    DeleteTopic {
        name: String,
    },
    /// Partitions up to `count` in all, one per entry of `replicas`, after the existing
    /// ones (refused unless there are `count - replicas.len()` now).
    CreatePartitions {
        name: String,
        count: u32,
        replicas: Vec<Vec<u64>>,
    },
    SetTopicConfigs {
        name: String,
        configs: BTreeMap<String, String>,
    },
    /// Reserve `count` producer ids for one node's InitProducerId answers.
    AllocateProducerIds {
        count: u32,
    },
    CreateSource {
        name: String,
        definition: String,
    },
    DropSource {
        name: String,
    },
    /// A node (re)starting says where it can be reached.
    RegisterBroker {
        id: u64,
        broker: BrokerMeta,
    },
}

/// Why the controller refused a command (checked again at apply, deterministically).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControllerRefusal {
    TopicExists,
    UnknownTopic,
    InvalidPartitions,
    SourceExists,
    UnknownSource,
}

impl storage::HasBlobs for ControllerCmd {}

/// What an accepted [`ControllerCmd`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControllerReply {
    Done,
    /// The first of the producer ids reserved.
    ProducerIds {
        first: i64,
    },
}

/// The result of a [`ControllerCmd`].
pub type ControllerResp = Result<ControllerReply, ControllerRefusal>;

/// The controller's state machine logic.
pub struct Controller {
    metadata: Metadata,
    publish: watch::Sender<Arc<Metadata>>,
}

impl Controller {
    pub fn new(publish: watch::Sender<Arc<Metadata>>) -> Self {
        Controller { metadata: Metadata { next_group: 1, ..Default::default() }, publish }
    }
}

impl Machine for Controller {
    type C = ControllerTypes;
    type State = Metadata;

    fn apply(&mut self, _wb: &mut WriteBatch, _log_id: &LogId<u64>, cmd: ControllerCmd) -> ControllerResp {
        let m = &mut self.metadata;
        match cmd {
            ControllerCmd::SetClusterId { cluster_id } => {
                if m.cluster_id.is_empty() {
                    m.cluster_id = cluster_id;
                }
                Ok(ControllerReply::Done)
            }
            ControllerCmd::CreateTopic { name, id, replicas, configs } => {
                if m.topics.contains_key(&name) {
                    return Err(ControllerRefusal::TopicExists);
                }
                if replicas.is_empty() || replicas.iter().any(|r| r.is_empty()) {
                    return Err(ControllerRefusal::InvalidPartitions);
                }
                let groups = (0..replicas.len() as u64).map(|i| m.next_group + i).collect();
                m.next_group += replicas.len() as u64;
                m.topics.insert(name, TopicMeta { id, partitions: groups, replicas, configs });
                Ok(ControllerReply::Done)
            }
            ControllerCmd::DeleteTopic { name } => {
                m.topics.remove(&name).map(|_| ControllerReply::Done).ok_or(ControllerRefusal::UnknownTopic)
            }
            ControllerCmd::CreatePartitions { name, count, replicas } => {
                let topic = m.topics.get_mut(&name).ok_or(ControllerRefusal::UnknownTopic)?;
                if replicas.is_empty()
                    || replicas.iter().any(|r| r.is_empty())
                    || topic.partitions.len() + replicas.len() != count as usize
                {
                    return Err(ControllerRefusal::InvalidPartitions);
                }
                let add = replicas.len() as u64;
                topic.partitions.extend((0..add).map(|i| m.next_group + i));
                topic.replicas.extend(replicas);
                m.next_group += add;
                Ok(ControllerReply::Done)
            }
            ControllerCmd::SetTopicConfigs { name, configs } => {
                let topic = m.topics.get_mut(&name).ok_or(ControllerRefusal::UnknownTopic)?;
                topic.configs = configs;
                Ok(ControllerReply::Done)
            }
            ControllerCmd::CreateSource { name, definition } => {
                if m.sources.contains_key(&name) {
                    return Err(ControllerRefusal::SourceExists);
                }
                m.sources.insert(name, definition);
                Ok(ControllerReply::Done)
            }
            ControllerCmd::DropSource { name } => {
                m.sources.remove(&name).map(|_| ControllerReply::Done).ok_or(ControllerRefusal::UnknownSource)
            }
            ControllerCmd::RegisterBroker { id, broker } => {
                m.brokers.insert(id, broker);
                Ok(ControllerReply::Done)
            }
            ControllerCmd::AllocateProducerIds { count } => {
                let first = m.next_producer_id;
                m.next_producer_id += i64::from(count);
                Ok(ControllerReply::ProducerIds { first })
            }
        }
    }

    fn empty_response(&self) -> ControllerResp {
        Ok(ControllerReply::Done)
    }

    fn state(&self) -> &Metadata {
        &self.metadata
    }

    fn restore(&mut self, state: Metadata) {
        if state.next_group > 0 {
            self.metadata = state;
        }
        self.publish.send_replace(Arc::new(self.metadata.clone()));
    }

    fn published(&mut self) {
        if **self.publish.borrow() != self.metadata {
            self.publish.send_replace(Arc::new(self.metadata.clone()));
        }
    }
}

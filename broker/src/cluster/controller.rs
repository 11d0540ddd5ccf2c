//! The controller group's state: topics, their partitions' raft groups, and topic configs.

use std::collections::{BTreeMap, BTreeSet};
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
    /// Partitions whose replicas are moving, by partition index: the replica set they
    /// move to. The nodes of both sets hold the partition until the move is done.
    pub moving: BTreeMap<u32, Vec<u64>>,
    /// Partitions whose replicas moved at least once: a replica starting one of them
    /// waits to be added by its leader rather than starting the group itself.
    pub moved: BTreeSet<u32>,
}

impl TopicMeta {
    /// The nodes holding partition `index` now: its replicas and, while it moves, the
    /// ones it moves to.
    pub fn holders(&self, index: usize) -> Vec<u64> {
        let mut nodes = self.replicas.get(index).cloned().unwrap_or_default();
        if let Some(target) = self.moving.get(&(index as u32)) {
            nodes.extend(target.iter().filter(|n| !nodes.contains(n)).copied().collect::<Vec<_>>());
        }
        nodes
    }
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
    /// Nodes being decommissioned: their replicas move to other nodes, and new ones are
    /// not placed on them.
    pub draining: BTreeSet<u64>,
    /// Nodes decommissioned: their ids are never used again.
    pub retired: BTreeSet<u64>,
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

    /// Partitions that have or will have a replica on `node`.
    pub fn partitions_on(&self, node: u64) -> usize {
        self.topics.values().map(|t| (0..t.partitions.len()).filter(|i| t.holders(*i).contains(&node)).count()).sum()
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
    /// Starts moving partition `index` of `topic` to `replicas` (the preferred leader
    /// first); its leader adds the new replicas, then removes the old ones. Refused while
    /// the partition is moving already (its group may have changed half way: only its
    /// leader finishes the move); the current set itself changes nothing.
    MoveReplicas {
        topic: String,
        index: u32,
        replicas: Vec<u64>,
    },
    /// The leader of a moving partition has changed its raft group to `replicas`.
    MovedReplicas {
        topic: String,
        index: u32,
        replicas: Vec<u64>,
    },
    /// Starts decommissioning node `id`: its replicas move to other nodes.
    Decommission {
        id: u64,
    },
    /// A decommissioned node holds nothing any more: it leaves the cluster for good.
    RemoveBroker {
        id: u64,
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
    UnknownBroker,
    MoveInProgress,
    /// The id belonged to a decommissioned node.
    RetiredBroker,
    InvalidReplicas,
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
                let topic = TopicMeta {
                    id,
                    partitions: groups,
                    replicas,
                    configs,
                    moving: BTreeMap::new(),
                    moved: BTreeSet::new(),
                };
                m.topics.insert(name, topic);
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
                if m.retired.contains(&id) {
                    return Err(ControllerRefusal::RetiredBroker);
                }
                m.brokers.insert(id, broker);
                Ok(ControllerReply::Done)
            }
            ControllerCmd::MoveReplicas { topic, index, replicas } => {
                let t = m.topics.get_mut(&topic).ok_or(ControllerRefusal::UnknownTopic)?;
                let current = t.replicas.get(index as usize).ok_or(ControllerRefusal::InvalidPartitions)?;
                let distinct: BTreeSet<u64> = replicas.iter().copied().collect();
                if replicas.is_empty()
                    || distinct.len() != replicas.len()
                    || replicas.iter().any(|n| !m.brokers.contains_key(n) || m.retired.contains(n))
                {
                    return Err(ControllerRefusal::InvalidReplicas);
                }
                if t.moving.contains_key(&index) {
                    return Err(ControllerRefusal::MoveInProgress);
                }
                if *current != replicas {
                    t.moving.insert(index, replicas);
                }
                Ok(ControllerReply::Done)
            }
            ControllerCmd::MovedReplicas { topic, index, replicas } => {
                let t = m.topics.get_mut(&topic).ok_or(ControllerRefusal::UnknownTopic)?;
                if t.moving.get(&index) != Some(&replicas) {
                    return Err(ControllerRefusal::InvalidReplicas);
                }
                t.moving.remove(&index);
                t.replicas[index as usize] = replicas;
                t.moved.insert(index);
                Ok(ControllerReply::Done)
            }
            ControllerCmd::Decommission { id } => {
                if !m.brokers.contains_key(&id) {
                    return Err(ControllerRefusal::UnknownBroker);
                }
                m.draining.insert(id);
                Ok(ControllerReply::Done)
            }
            ControllerCmd::RemoveBroker { id } => {
                if !m.draining.contains(&id) || m.partitions_on(id) > 0 {
                    return Err(ControllerRefusal::InvalidReplicas);
                }
                m.draining.remove(&id);
                m.brokers.remove(&id);
                m.retired.insert(id);
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

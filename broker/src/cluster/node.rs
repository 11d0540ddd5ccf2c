//! A node: the controller group, the partition groups it hosts, and topic administration.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use openraft::{BasicNode, Raft};
use storage::{Db, GroupId, PartitionLog, RaftLogStore, StateStore};
use tokio::sync::{watch, Mutex};

use super::controller::{
    BrokerMeta, Controller, ControllerCmd, ControllerRefusal, ControllerReply, ControllerResp, Metadata, TopicMeta,
};
use super::machine::StateMachine;
use super::network::{self, GroupNetwork, Peers, Rpc};
use super::partition::{Nudge, Partition};
use super::ControllerTypes;
use super::PartitionTypes;
use crate::config::Config;
use crate::error::{raft_write_code, ResponseError};
use crate::topic_config::TopicSettings;

/// The controller's raft group id.
pub const CONTROLLER_GROUP: GroupId = 0;

/// How long a request waits for a new partition to elect its leader.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a raft message for a partition not started here yet waits for it.
const GROUP_WAIT: Duration = Duration::from_secs(2);
/// How long a group request waits for its coordinator to load the groups.
const COORDINATOR_LOAD_WAIT: Duration = Duration::from_secs(5);
/// How long a forwarded controller write may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

/// One broker process.
pub struct Node {
    pub config: Config,
    pub db: Arc<Db>,
    /// The other nodes of the cluster (none on a single node).
    pub peers: Arc<Peers>,
    controller: Raft<ControllerTypes>,
    metadata: watch::Receiver<Arc<Metadata>>,
    partitions: RwLock<HashMap<GroupId, Arc<Partition>>>,
    reconcile_lock: Mutex<()>,
    /// Consumer group membership (JoinGroup and the rest) for the groups led here.
    pub groups: Arc<crate::group::service::GroupService>,
    stop_groups: tokio_util::sync::CancellationToken,
    /// Producer ids reserved for this node and not yet handed out.
    producer_ids: Mutex<std::ops::Range<i64>>,
    /// Every raft group's settings.
    raft_config: Arc<openraft::Config>,
    /// The leaders of partitions, as the nodes leading them last reported, and when.
    leaders: RwLock<HashMap<GroupId, (Leadership, Instant)>>,
    /// When each other node's last leadership report came (they come every
    /// [`LEADERSHIP_REPORT`], leading anything or not): node liveness.
    heard: RwLock<HashMap<u64, Instant>>,
    /// When this node started: nodes not heard from yet count as live for a moment.
    started: Instant,
    /// Until stored groups were swept for strays (see `Node::sweep_stray_groups`): the
    /// number of controller log entries there were at start.
    sweep_after: std::sync::Mutex<Option<u64>>,
    /// When this controller voter stands for election without a live controller leader.
    controller_nudge: std::sync::Mutex<Nudge>,
}

/// A partition's leader as it reports itself to the other nodes.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Leadership {
    pub leader: u64,
    pub epoch: i32,
    pub isr: Vec<u64>,
    /// The group is quiescent: its leader sends no heartbeats, and its followers stand
    /// for election only once reports like this one stop coming.
    pub quiet: bool,
    /// The leader's last applied (so committed) log index: a follower of a quiet group
    /// that applied less asks the leader to heartbeat again ([`Rpc::Wake`]).
    pub applied: u64,
}

/// How often a node tells the others which partitions it leads.
const LEADERSHIP_REPORT: Duration = Duration::from_millis(500);
/// How recent the report of a quiet group's leader must be for its followers to hold
/// back their elections.
const QUIET_LIVENESS: Duration = Duration::from_secs(2);

/// Producer ids a node reserves from the controller at a time.
const PRODUCER_ID_BLOCK: u32 = 1000;

/// Voters of the controller group, at most (the other nodes are learners).
const CONTROLLER_VOTERS: usize = 3;
/// How long a partition's leader waits for a new replica to catch up before it tries
/// the move again.
const CATCH_UP_WAIT: Duration = Duration::from_secs(120);

/// The internal topic whose partitions coordinate consumer groups and keep their offsets.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Java's `String.hashCode` over UTF-16 code units: Kafka places a group with it, and
/// tools that compute a group's coordinator partition expect the same answer here.
pub fn java_string_hash(s: &str) -> i32 {
    s.encode_utf16().fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(c as i32))
}

/// The offsets topic partition of `group` among `count` (as Kafka:
/// `abs(hashCode(group)) % partitions`).
fn offsets_partition(group: &str, count: usize) -> i32 {
    let hash = java_string_hash(group);
    (if hash == i32::MIN { 0 } else { hash.abs() } as usize % count.max(1)) as i32
}

/// Writes changed group records through their coordinating partitions, one at a time so
/// each group's records land in the order they were made.
async fn store_group_changes(
    node: std::sync::Weak<Node>,
    mut changes: tokio::sync::mpsc::UnboundedReceiver<crate::group::service::GroupChange>,
) {
    while let Some(change) = changes.recv().await {
        let Some(node) = node.upgrade() else { return };
        let group = change.group;
        let stored = match change.record.as_ref().map(bincode::serialize).transpose() {
            Ok(bytes) => match node.coordinator_for(&group).await {
                Ok(p) => p.store_group(group.clone(), bytes).await,
                Err(code) => Err(code),
            },
            Err(e) => {
                tracing::error!(group, error = %e, "cannot encode group record");
                Err(ResponseError::UnknownServerError)
            }
        };
        if let Err(code) = stored {
            tracing::warn!(group, %code, "group record not stored; it is written again at the group's next change");
            node.groups.not_written(&group);
        }
        let _ = change.written.send(());
    }
}

/// A refused topic operation: the code and a message for the client.
pub type AdminError = (ResponseError, String);

impl Node {
    /// Opens the data directory and starts every raft group stored there; with peers,
    /// joins them in the controller group (and waits until it has a leader).
    pub async fn open(config: Config, peers: Arc<Peers>) -> anyhow::Result<Arc<Node>> {
        let db = Db::open(&config.data_dir)?;
        let (publish, metadata) = watch::channel(Arc::new(Metadata::default()));
        let sm =
            StateMachine::open(db.clone(), StateStore::new(db.clone(), CONTROLLER_GROUP), Controller::new(publish))?;
        let mut log = RaftLogStore::<ControllerTypes>::new(db.clone(), CONTROLLER_GROUP);
        let entries_at_start = {
            use openraft::storage::RaftLogStorage;
            log.get_log_state().await?.last_log_id.map_or(0, |l| l.index + 1)
        };
        let net = GroupNetwork { peers: peers.clone(), group: CONTROLLER_GROUP };
        let raft_config = Arc::new(super::raft_config(config.raft_snapshot_entries));
        let controller = Raft::new(config.node_id, raft_config.clone(), net, log, sm).await?;
        sync_peers(&peers, &metadata.borrow());
        let stop_groups = tokio_util::sync::CancellationToken::new();
        let settings = crate::group::coordinator::Settings {
            initial_rebalance_delay_ms: config.group_initial_rebalance_delay_ms,
            min_session_timeout_ms: config.group_min_session_timeout_ms,
            max_session_timeout_ms: config.group_max_session_timeout_ms,
        };
        let (persist, changes) = tokio::sync::mpsc::unbounded_channel();
        let groups = crate::group::service::GroupService::start(settings, persist, stop_groups.clone());
        let node = Arc::new(Node {
            config,
            db,
            peers: peers.clone(),
            controller,
            metadata,
            partitions: RwLock::new(HashMap::new()),
            reconcile_lock: Mutex::new(()),
            groups,
            stop_groups,
            producer_ids: Mutex::new(0..0),
            raft_config,
            leaders: RwLock::new(HashMap::new()),
            heard: RwLock::new(HashMap::new()),
            started: Instant::now(),
            sweep_after: std::sync::Mutex::new(Some(entries_at_start)),
            controller_nudge: Default::default(),
        });
        // From here the node answers the other nodes (votes for the controller first).
        let handler: std::sync::Weak<dyn network::Handler> = Arc::downgrade(&node) as _;
        peers.set_handler(handler);
        if !node.controller.is_initialized().await? {
            match node.config.join.clone() {
                // The controller's leader adds this node; it learns the metadata from it.
                Some(seed) => node.join(&seed).await?,
                // Every voter initializes with the same members: raft's vote picks one leader.
                None => node.controller.initialize(node.voters()).await?,
            }
        }
        let has_leader = |m: &openraft::RaftMetrics<u64, BasicNode>| m.current_leader.is_some();
        if node.controller.wait(Some(READY_TIMEOUT)).metrics(has_leader, "controller leader").await.is_err() {
            tracing::warn!("no controller leader yet: waiting for a quorum of the peers");
            node.controller.wait(None).metrics(has_leader, "controller leader").await?;
        }
        if node.metadata().cluster_id.is_empty() {
            let cluster_id = uuid::Uuid::new_v4().simple().to_string();
            node.write(ControllerCmd::SetClusterId { cluster_id })
                .await
                .map_err(|(c, m)| anyhow::anyhow!("{c}: {m}"))?;
        }
        let me = BrokerMeta {
            kafka: node.config.advertised().to_string(),
            raft: node.peers.address(node.config.node_id).unwrap_or_default(),
        };
        if node.metadata().brokers.get(&node.config.node_id) != Some(&me) {
            node.write(ControllerCmd::RegisterBroker { id: node.config.node_id, broker: me })
                .await
                .map_err(|(c, m)| anyhow::anyhow!("{c}: {m}"))?;
        }
        // The entries stored before the stop applied again (the state machine replays
        // them), so that the first reconcile can sweep stray groups; if the leader takes
        // longer, a later one does.
        let replayed =
            |m: &openraft::RaftMetrics<u64, BasicNode>| m.last_applied.map_or(0, |l| l.index + 1) >= entries_at_start;
        let _ = node.controller.wait(Some(READY_TIMEOUT)).metrics(replayed, "controller log replayed").await;
        node.reconcile().await?;
        node.load_groups()?;
        tokio::spawn(store_group_changes(Arc::downgrade(&node), changes));
        tokio::spawn(follow_metadata(Arc::downgrade(&node), node.metadata.clone()));
        if node.config.clustered() {
            tokio::spawn(report_leadership(Arc::downgrade(&node)));
            tokio::spawn(manage_cluster(Arc::downgrade(&node)));
            if node.config.auto_leader_rebalance_enable {
                let every = Duration::from_secs(node.config.leader_imbalance_check_interval_seconds.max(1));
                tokio::spawn(rebalance_leaders(Arc::downgrade(&node), every));
            }
        }
        Ok(node)
    }

    /// The controller's voters: every peer, or this node alone.
    fn voters(&self) -> BTreeMap<u64, BasicNode> {
        let peers = self.config.peer_map();
        if peers.is_empty() {
            return BTreeMap::from([(self.config.node_id, BasicNode::default())]);
        }
        peers.into_iter().map(|(id, addr)| (id, BasicNode::new(addr))).collect()
    }

    /// The nodes new partitions are placed on: the configured voters and every registered
    /// node, but for those decommissioned or being decommissioned.
    fn broker_ids(&self) -> Vec<u64> {
        let metadata = self.metadata();
        let mut ids: Vec<u64> = self.config.peer_map().into_keys().collect();
        ids.extend(metadata.brokers.keys());
        ids.retain(|id| !metadata.draining.contains(id) && !metadata.retired.contains(id));
        if ids.is_empty() {
            ids.push(self.config.node_id);
        }
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Joins the cluster that has a node at raft address `seed`: registers through it and
    /// links to every node it names, then waits (below, in `open`) for the controller's
    /// leader to add this node to the controller group. Tries until it is answered.
    async fn join(&self, seed: &str) -> anyhow::Result<()> {
        let me = BrokerMeta {
            kafka: self.config.advertised().to_string(),
            raft: self.peers.address(self.config.node_id).unwrap_or_default(),
        };
        let ask = network::encode(&(self.config.node_id, me)).map_err(anyhow::Error::msg)?;
        loop {
            let answer = self.peers.call(seed, CONTROLLER_GROUP, Rpc::Join(ask.clone()), FORWARD_TIMEOUT).await;
            match answer.map(|b| network::decode::<Result<BTreeMap<u64, String>, String>>(&b)) {
                Ok(Ok(Ok(nodes))) => {
                    for (id, addr) in &nodes {
                        self.peers.add(*id, addr);
                    }
                    tracing::info!(seed, nodes = ?nodes.keys().collect::<Vec<_>>(), "joined the cluster");
                    return Ok(());
                }
                Ok(Ok(Err(refusal))) => anyhow::bail!("the cluster at {seed} refused this node: {refusal}"),
                Ok(Err(e)) => anyhow::bail!("undecodable answer from {seed}: {e}"),
                Err(e) => tracing::warn!(seed, error = %e, "cannot join yet; trying again"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// A node asks to join (answered on a node of the cluster): registers it and answers
    /// with every node's raft address. The controller's leader adds it to the controller
    /// group as a learner (`manage_controller`).
    async fn admit(&self, id: u64, broker: BrokerMeta) -> Result<BTreeMap<u64, String>, String> {
        // The same node asking again (its answer was lost) is welcome; another is not.
        if self.metadata().brokers.get(&id).is_some_and(|known| *known != broker) {
            return Err(format!("node id {id} is taken by another node"));
        }
        match self.write_reply(ControllerCmd::RegisterBroker { id, broker }).await {
            Ok(_) => {}
            Err((_, m)) => return Err(m),
        }
        tracing::info!(node = id, "node joined the cluster");
        let mut nodes: BTreeMap<u64, String> =
            self.metadata().brokers.iter().map(|(id, b)| (*id, b.raft.clone())).collect();
        for (id, addr) in self.config.peer_map() {
            nodes.entry(id).or_insert(addr);
        }
        Ok(nodes)
    }

    /// Starts decommissioning node `id`: its replicas move to the other nodes, then it
    /// leaves the controller group and the cluster (`manage_controller`, on the
    /// controller's leader); after that it can be stopped.
    pub async fn decommission(&self, id: u64) -> Result<(), AdminError> {
        let metadata = self.metadata();
        if !metadata.brokers.contains_key(&id) {
            return Err((ResponseError::BrokerIdNotRegistered, format!("node {id} is not a node of the cluster")));
        }
        let others = metadata.brokers.keys().filter(|n| **n != id && !metadata.draining.contains(n)).count();
        let widest = metadata
            .topics
            .values()
            .flat_map(|t| (0..t.partitions.len()).map(|i| t.holders(i)))
            .filter(|holders| holders.contains(&id))
            .map(|holders| holders.len())
            .max()
            .unwrap_or(1);
        if others < widest {
            return Err((
                ResponseError::InvalidReplicationFactor,
                format!("node {id} holds partitions of {widest} replicas, and {others} other nodes would remain"),
            ));
        }
        self.write(ControllerCmd::Decommission { id }).await?;
        tracing::info!(node = id, "decommissioning");
        Ok(())
    }

    /// Moves the replicas of partition `index` of `topic` to `replicas` (its leader does
    /// it: `drive_moves`).
    pub async fn move_replicas(&self, topic: &str, index: u32, replicas: Vec<u64>) -> Result<(), AdminError> {
        self.write(ControllerCmd::MoveReplicas { topic: topic.to_string(), index, replicas }).await
    }

    /// The controller group's voters and learners as its raft knows them here.
    pub fn controller_members(&self) -> (Vec<u64>, Vec<u64>) {
        let metrics = self.controller.metrics();
        let m = metrics.borrow();
        let membership = m.membership_config.membership();
        (membership.voter_ids().collect(), membership.learner_ids().collect())
    }

    /// Work of the controller's leader: every registered node is a member of the
    /// controller group (a learner, or a voter while there are fewer than three); the
    /// replicas of nodes being decommissioned move to others, least loaded first; such a
    /// node stays a member (it must follow the metadata and write through the leader to
    /// move the partitions it leads) until it holds nothing, then leaves the group (a
    /// learner takes its place among the voters; a leader leaving steps down) and the
    /// cluster. One membership change at a time.
    async fn manage_controller(&self) {
        if self.controller_leader() != Some(self.config.node_id) {
            return;
        }
        let metadata = self.metadata();
        let (voters, learners) = self.controller_members();
        let active: Vec<u64> = metadata.brokers.keys().filter(|id| !metadata.draining.contains(id)).copied().collect();
        for id in &active {
            if !voters.contains(id) && !learners.contains(id) {
                let addr = metadata.brokers[id].raft.clone();
                if let Err(e) = self.controller.add_learner(*id, BasicNode::new(addr), false).await {
                    tracing::warn!(node = id, error = %e, "cannot add the node to the controller group");
                }
                return;
            }
        }
        let leaving = |id: &u64| {
            metadata.retired.contains(id) || (metadata.draining.contains(id) && metadata.partitions_on(*id) == 0)
        };
        let mut wanted: BTreeSet<u64> = voters.iter().filter(|id| !leaving(id)).copied().collect();
        for id in learners.iter().filter(|id| active.contains(id)) {
            if wanted.len() >= CONTROLLER_VOTERS {
                break;
            }
            wanted.insert(*id);
        }
        if !wanted.is_empty() && wanted != voters.iter().copied().collect::<BTreeSet<u64>>() {
            tracing::info!(voters = ?wanted, "changing the controller's voters");
            if let Err(e) = self.controller.change_membership(wanted, false).await {
                tracing::warn!(error = %e, "cannot change the controller's voters");
            }
            return;
        }
        let gone: BTreeSet<u64> = learners.iter().filter(|id| leaving(id)).copied().collect();
        if !gone.is_empty() {
            if let Err(e) = self.controller.change_membership(openraft::ChangeMembers::RemoveNodes(gone), false).await {
                tracing::warn!(error = %e, "cannot remove decommissioned nodes from the controller group");
            }
            return;
        }
        let members: Vec<u64> = voters.into_iter().chain(learners).collect();
        for id in metadata.draining.clone() {
            self.drain(id, &members).await;
        }
    }

    /// Moves each replica on `node` (being decommissioned) to the node holding the fewest
    /// partitions among those not holding that partition; once nothing is left on it
    /// and it is no member of the controller group, it leaves the cluster.
    async fn drain(&self, node: u64, members: &[u64]) {
        let metadata = self.metadata();
        for (name, t) in &metadata.topics {
            for (index, replicas) in t.replicas.iter().enumerate() {
                if !replicas.contains(&node) || t.moving.contains_key(&(index as u32)) {
                    continue;
                }
                let now = self.metadata();
                let to = now
                    .brokers
                    .keys()
                    .filter(|id| !now.draining.contains(id) && !replicas.contains(id))
                    .min_by_key(|id| (now.partitions_on(**id), **id));
                let Some(to) = to else {
                    tracing::debug!(node, topic = %name, partition = index, "no node to move the replica to");
                    continue;
                };
                let target: Vec<u64> = replicas.iter().map(|id| if *id == node { *to } else { *id }).collect();
                if let Err((code, m)) = self.move_replicas(name, index as u32, target).await {
                    tracing::warn!(node, topic = %name, partition = index, %code, m, "cannot move a replica");
                }
            }
        }
        let metadata = self.metadata();
        if metadata.partitions_on(node) == 0 && !members.contains(&node) {
            match self.write(ControllerCmd::RemoveBroker { id: node }).await {
                Ok(()) => tracing::info!(node, "node decommissioned: it holds nothing and can be stopped"),
                Err((code, m)) => tracing::warn!(node, %code, m, "cannot remove the decommissioned node"),
            }
        }
    }

    /// Starts the replica moves of the partitions led here (see [`move_partition`]).
    fn drive_moves(self: &Arc<Self>) {
        let metadata = self.metadata();
        for p in self.partitions() {
            let Some(t) = metadata.topics.get(&p.topic) else { continue };
            let Some(target) = t.moving.get(&(p.index as u32)) else { continue };
            if p.is_leader() && p.start_move() {
                tokio::spawn(move_partition(Arc::downgrade(self), p, target.clone()));
            }
        }
    }

    /// Replica sets for `count` new partitions, `factor` replicas each (at most one per
    /// node): round robin over the nodes, starting after the partitions placed so far,
    /// so that replicas and preferred leaders spread evenly.
    pub fn assign(&self, count: u32, factor: Option<usize>) -> Result<Vec<Vec<u64>>, AdminError> {
        let nodes = self.broker_ids();
        let factor = factor.unwrap_or(nodes.len().min(3));
        if factor == 0 || factor > nodes.len() {
            return Err((
                ResponseError::InvalidReplicationFactor,
                format!("replication factor {factor} with {} nodes", nodes.len()),
            ));
        }
        let placed: usize = self.metadata().topics.values().map(|t| t.partitions.len()).sum();
        Ok((0..count as usize).map(|p| (0..factor).map(|r| nodes[(placed + p + r) % nodes.len()]).collect()).collect())
    }

    /// Deletes a consumer group without members, with its offsets and record (DeleteGroups,
    /// offsets retention): NON_EMPTY_GROUP while it has members, GROUP_ID_NOT_FOUND if
    /// there is nothing to delete. The coordinator forgets the group first, under its lock,
    /// so a member joining from then on starts a new group, and the removal of its record
    /// is queued behind any record still being written.
    pub async fn delete_group(&self, group: &str) -> Result<(), ResponseError> {
        let p = self.coordinator_for(group).await?;
        let known = self.groups.describe(group).is_some();
        self.groups.delete(group)?;
        let has_offsets = !p.offsets_store.list(group).map_err(|e| crate::error::storage_code(&e))?.is_empty();
        if !known && !has_offsets {
            return Err(ResponseError::GroupIdNotFound);
        }
        if has_offsets {
            p.delete_offsets(group.to_string(), None).await?;
        }
        tracing::info!(group, "consumer group deleted");
        Ok(())
    }

    /// Restores the consumer groups whose records the offsets partitions here keep.
    fn load_groups(&self) -> anyhow::Result<()> {
        let count = self.metadata().topics.get(OFFSETS_TOPIC).map_or(0, |t| t.partitions.len());
        for index in 0..count as i32 {
            let Some(p) = self.partition(OFFSETS_TOPIC, index) else { continue };
            load_groups_of(&self.groups, &p, count)?;
        }
        Ok(())
    }

    /// The current cluster metadata.
    pub fn metadata(&self) -> Arc<Metadata> {
        self.metadata.borrow().clone()
    }

    /// The partition `index` of `topic`, when this node hosts it.
    pub fn partition(&self, topic: &str, index: i32) -> Option<Arc<Partition>> {
        let group = *self.metadata().topics.get(topic)?.partitions.get(usize::try_from(index).ok()?)?;
        self.partitions.read().expect("partition map lock").get(&group).cloned()
    }

    /// All partitions hosted here.
    pub fn partitions(&self) -> Vec<Arc<Partition>> {
        self.partitions.read().expect("partition map lock").values().cloned().collect()
    }

    /// The effective settings of a topic.
    pub fn topic_settings(&self, topic: &TopicMeta) -> TopicSettings {
        TopicSettings::resolve(&self.config, &topic.configs)
    }

    /// Writes a metadata change through the controller group.
    pub async fn write(&self, cmd: ControllerCmd) -> Result<(), AdminError> {
        self.write_reply(cmd).await.map(|_| ())
    }

    /// Writes a metadata change; what the controller answered, refusals included.
    pub async fn write_catalog(&self, cmd: ControllerCmd) -> Result<ControllerResp, String> {
        self.controller_write(cmd).await.map_err(|(_, m)| m)
    }

    /// Writes through the controller group, on its leader: here, or forwarded to the
    /// node that leads it (waiting out an election).
    async fn controller_write(&self, cmd: ControllerCmd) -> Result<ControllerResp, AdminError> {
        let deadline = tokio::time::Instant::now() + FORWARD_TIMEOUT;
        loop {
            let leader = match self.controller.client_write(cmd.clone()).await {
                Ok(r) => return Ok(r.data),
                Err(openraft::error::RaftError::APIError(openraft::error::ClientWriteError::ForwardToLeader(f))) => {
                    f.leader_id
                }
                Err(e) => return Err((raft_write_code(&e), e.to_string())),
            };
            let forwarded = match leader {
                Some(leader) if leader != self.config.node_id => {
                    let bytes = network::encode(&cmd).map_err(|e| (ResponseError::UnknownServerError, e))?;
                    match self
                        .peers
                        .request(leader, CONTROLLER_GROUP, Rpc::ControllerWrite(bytes.into()), FORWARD_TIMEOUT)
                        .await
                    {
                        Ok(answer) => match network::decode::<Result<ControllerResp, String>>(&answer) {
                            Ok(Ok(resp)) => return Ok(resp),
                            Ok(Err(e)) | Err(e) => e,
                        },
                        Err(e) => e.to_string(),
                    }
                }
                _ => "no controller leader".to_string(),
            };
            if tokio::time::Instant::now() >= deadline {
                return Err((ResponseError::NotController, forwarded));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn write_reply(&self, cmd: ControllerCmd) -> Result<ControllerReply, AdminError> {
        match self.controller_write(cmd).await {
            Ok(r) => r.map_err(|refusal| match refusal {
                ControllerRefusal::TopicExists => (ResponseError::TopicAlreadyExists, "topic already exists".into()),
                ControllerRefusal::UnknownTopic => (ResponseError::UnknownTopicOrPartition, "unknown topic".into()),
                ControllerRefusal::InvalidPartitions => {
                    (ResponseError::InvalidPartitions, "partition count can only grow".into())
                }
                ControllerRefusal::SourceExists => (ResponseError::InvalidRequest, "source exists".into()),
                ControllerRefusal::UnknownSource => (ResponseError::InvalidRequest, "unknown source".into()),
                ControllerRefusal::UnknownBroker => (ResponseError::BrokerIdNotRegistered, "unknown node".into()),
                ControllerRefusal::MoveInProgress => {
                    (ResponseError::ReassignmentInProgress, "the partition's replicas are moving already".into())
                }
                ControllerRefusal::RetiredBroker => {
                    (ResponseError::InvalidRequest, "the node id belonged to a decommissioned node".into())
                }
                ControllerRefusal::InvalidReplicas => {
                    (ResponseError::InvalidReplicaAssignment, "replicas must be distinct registered nodes".into())
                }
            }),
            Err(e) => Err(e),
        }
    }

    /// A producer id never handed out before, for InitProducerId. Ids are reserved from the
    /// controller in blocks; the rest of a block is skipped after a restart.
    pub async fn new_producer_id(&self) -> Result<i64, AdminError> {
        let mut ids = self.producer_ids.lock().await;
        if ids.is_empty() {
            let reply = self.write_reply(ControllerCmd::AllocateProducerIds { count: PRODUCER_ID_BLOCK }).await?;
            let ControllerReply::ProducerIds { first } = reply else {
                return Err((ResponseError::UnknownServerError, "controller did not reserve producer ids".into()));
            };
            *ids = first..first + i64::from(PRODUCER_ID_BLOCK);
        }
        let id = ids.start;
        ids.start += 1;
        Ok(id)
    }

    /// Starts the groups metadata assigns to this node and stops (and deletes) the groups
    /// of deleted topics.
    pub async fn reconcile(&self) -> anyhow::Result<()> {
        let _guard = self.reconcile_lock.lock().await;
        // Before the metadata, which then holds at least every entry applied.
        let applied = self.controller.metrics().borrow().last_applied.map_or(0, |l| l.index + 1);
        let metadata = self.metadata();
        let me = self.config.node_id;
        // Each partition held here, and the members it starts its group with: its replicas
        // if this node is one of them and they never moved (every founding replica starts
        // the group with the same members, so it is safe); none for a replica added later,
        // which its leader adds to the group.
        let wanted: HashMap<GroupId, (String, i32, Option<Vec<u64>>)> = metadata
            .topics
            .iter()
            .flat_map(|(name, t)| {
                t.partitions.iter().enumerate().filter(|(i, _)| t.holders(*i).contains(&me)).map(move |(i, g)| {
                    let founders = &t.replicas[i];
                    let initial = (founders.contains(&me) && !t.moved.contains(&(i as u32))).then(|| founders.clone());
                    (*g, (name.clone(), i as i32, initial))
                })
            })
            .collect();
        let existing: Vec<GroupId> = self.partitions.read().expect("partition map lock").keys().copied().collect();
        for group in existing.iter().filter(|g| !wanted.contains_key(g)) {
            let removed = self.partitions.write().expect("partition map lock").remove(group);
            if let Some(p) = removed {
                p.shutdown().await;
                destroy_group(&self.db, *group)?;
                tracing::info!(topic = %p.topic, partition = p.index, group, "partition deleted");
            }
        }
        self.sweep_stray_groups(applied, &metadata, &wanted)?;
        for (group, (topic, index, replicas)) in wanted {
            if existing.contains(&group) {
                continue;
            }
            let p = Partition::start(
                self.db.clone(),
                group,
                topic,
                index,
                self.config.producer_id_expiration_ms,
                GroupNetwork { peers: self.peers.clone(), group },
                self.raft_config.clone(),
                replicas.as_deref(),
            )
            .await?;
            if p.topic == OFFSETS_TOPIC {
                let count = metadata.topics.get(OFFSETS_TOPIC).map_or(0, |t| t.partitions.len());
                tokio::spawn(follow_coordination(self.groups.clone(), p.clone(), count));
            }
            self.partitions.write().expect("partition map lock").insert(group, p);
        }
        for p in self.partitions() {
            if let Some(topic) = metadata.topics.get(&p.topic) {
                p.log.segments().set_segment_bytes(self.topic_settings(topic).segment_bytes as u64);
            }
        }
        Ok(())
    }

    /// Deletes what is stored here of partition groups placed here no more: a node that
    /// stopped between applying a topic's deletion (or a move of a replica away) and
    /// deleting the partition's data finds it at start, and nothing else would delete it.
    /// Once only, when the metadata holds every controller entry the node had stored at
    /// start (`applied`: entries applied, counted before `metadata` was read): an older
    /// state could lack the placement of a group stored here. Groups not allocated yet in
    /// `metadata` are left alone all the same.
    fn sweep_stray_groups(
        &self,
        applied: u64,
        metadata: &Metadata,
        wanted: &HashMap<GroupId, (String, i32, Option<Vec<u64>>)>,
    ) -> anyhow::Result<()> {
        let mut sweep_after = self.sweep_after.lock().expect("sweep lock");
        if !sweep_after.is_some_and(|entries| applied >= entries) {
            return Ok(());
        }
        let hosted: BTreeSet<GroupId> = self.partitions.read().expect("partition map lock").keys().copied().collect();
        for group in self.db.stored_groups()? {
            if group == CONTROLLER_GROUP
                || group >= metadata.next_group
                || wanted.contains_key(&group)
                || hosted.contains(&group)
            {
                continue;
            }
            destroy_group(&self.db, group)?;
            tracing::warn!(group, "deleted the stored data of a partition no longer placed on this node");
        }
        *sweep_after = None;
        Ok(())
    }

    /// Creates a topic and waits until its partitions have leaders.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        configs: BTreeMap<String, String>,
    ) -> Result<(), AdminError> {
        let replicas = self.assign(partitions, None)?;
        self.create_placed_topic(name, replicas, configs).await
    }

    /// Creates a topic whose partitions have these replicas (the preferred leader first).
    pub async fn create_placed_topic(
        &self,
        name: &str,
        replicas: Vec<Vec<u64>>,
        configs: BTreeMap<String, String>,
    ) -> Result<(), AdminError> {
        let id = *uuid::Uuid::new_v4().as_bytes();
        let partitions = replicas.len();
        self.write(ControllerCmd::CreateTopic { name: name.to_string(), id, replicas, configs }).await?;
        self.reconcile().await.map_err(|e| (ResponseError::UnknownServerError, e.to_string()))?;
        tracing::info!(topic = name, partitions, "topic created");
        self.wait_topic_ready(name).await;
        Ok(())
    }

    /// Checks replica sets a client asked for: known brokers, none twice in a set, and
    /// as many replicas for every partition.
    pub fn check_assignment(&self, replicas: &[Vec<u64>]) -> Result<(), AdminError> {
        let brokers = self.broker_ids();
        let factor = replicas.first().map_or(0, |r| r.len());
        for (i, set) in replicas.iter().enumerate() {
            let mut distinct = set.clone();
            distinct.sort_unstable();
            distinct.dedup();
            let problem = if set.is_empty() || set.len() != factor {
                "must have as many replicas as every other partition, at least one"
            } else if distinct.len() != set.len() {
                "names a broker twice"
            } else if set.iter().any(|b| !brokers.contains(b)) {
                "names a broker that does not exist"
            } else {
                continue;
            };
            return Err((
                ResponseError::InvalidReplicaAssignment,
                format!("the assignment of partition {i} {problem}"),
            ));
        }
        Ok(())
    }

    /// Whether node `id` is up as far as this one knows: itself, or a node whose last
    /// leadership report is recent (any node, until it has had time to send one).
    pub fn is_live(&self, id: u64) -> bool {
        id == self.config.node_id
            || match self.heard.read().expect("heard lock").get(&id) {
                Some(at) => at.elapsed() < QUIET_LIVENESS,
                None => self.started.elapsed() < QUIET_LIVENESS,
            }
    }

    /// The ISR of a partition led here: the voters caught up within the replica lag, but
    /// for nodes gone silent. A quiet group sends nothing a follower could fail to answer,
    /// so its leader would keep a dead follower in sync until the next write.
    pub fn in_sync(&self, p: &Partition) -> Vec<u64> {
        let lag = Duration::from_millis(self.config.replica_lag_time_max_ms);
        p.in_sync(lag).into_iter().filter(|id| self.is_live(*id)).collect()
    }

    /// What the other nodes last said of a partition group they lead.
    pub fn reported_leader(&self, group: GroupId) -> Option<Leadership> {
        self.leaders.read().expect("leaders lock").get(&group).map(|(l, _)| l.clone())
    }

    /// Quiescence, run with every leadership report. A partition led here goes quiet
    /// (stops its heartbeats) once idle; a follower stands for election only while its
    /// group is not reported quiet by a leader heard from within [`QUIET_LIVENESS`]:
    /// the node's reports stand for the heartbeats of all its quiet groups, so an idle
    /// node sends a few messages a second however many partitions it leads, and the
    /// followers of a node that died or was cut off elect new leaders once its reports
    /// stop.
    fn quiesce(&self) {
        self.nudge_controller();
        let metadata = self.metadata();
        let leaders = self.leaders.read().expect("leaders lock");
        for p in self.partitions() {
            if p.is_leader() {
                p.settle();
                continue;
            }
            let reported = leaders.get(&p.group);
            let calm = reported
                .is_some_and(|(l, at)| l.quiet && l.leader != self.config.node_id && at.elapsed() < QUIET_LIVENESS);
            // Rank among the replicas other than the last leader: the first stands first.
            let leader = reported.map(|(l, _)| l.leader).or(p.leader());
            let replicas = metadata.topics.get(&p.topic).and_then(|t| t.replicas.get(p.index as usize));
            let rank = replicas.map_or(0, |r| {
                r.iter().filter(|id| Some(**id) != leader).position(|id| *id == self.config.node_id).unwrap_or(0)
            });
            // A leader unknown, or on a node silent too long (see `Partition::follow`).
            let leaderless = !p.leader().is_some_and(|id| self.is_live(id));
            p.follow(calm, leaderless, rank);
            // Quiet, but this replica missed the heartbeat telling it the last entries
            // are committed (it was down or cut off then): the leader heartbeats again.
            if let Some(leader) = reported.map(|(l, _)| l).filter(|l| calm && p.applied_index() < l.applied) {
                let (peers, leader, group) = (self.peers.clone(), leader.leader, p.group);
                tokio::spawn(async move { peers.request(leader, group, Rpc::Wake, LEADERSHIP_REPORT).await });
            }
        }
    }

    /// The controller group's elections as partitions' (see [`Nudge`]): a voter without
    /// a live controller leader stands for election itself after a while (later by its
    /// rank among the voters), should raft's own timers keep tying.
    fn nudge_controller(&self) {
        let me = self.config.node_id;
        let (leader, rank) = {
            let metrics = self.controller.metrics();
            let m = metrics.borrow();
            let rank = m.membership_config.membership().voter_ids().position(|id| id == me);
            (m.current_leader, rank)
        };
        let Some(rank) = rank else { return };
        let leaderless = !leader.is_some_and(|id| self.is_live(id));
        if self.controller_nudge.lock().expect("nudge lock").due(leaderless, rank) {
            let raft = self.controller.clone();
            tokio::spawn(async move { raft.trigger().elect().await });
        }
    }

    /// Tells every other node which partitions this one leads, with their epochs and ISR,
    /// so that any node answers Metadata for partitions it does not host.
    async fn report_leadership(&self) {
        let led: Vec<(GroupId, Leadership)> = self
            .partitions()
            .into_iter()
            .filter(|p| p.is_leader())
            .map(|p| {
                let report = Leadership {
                    leader: self.config.node_id,
                    epoch: p.offsets().leader_epoch,
                    isr: self.in_sync(&p),
                    quiet: p.is_quiet(),
                    applied: p.applied_index(),
                };
                (p.group, report)
            })
            .collect();
        let Ok(body) = network::encode(&led) else { return };
        // Sent side by side: a peer slow to answer must not hold back the others' reports,
        // which keep their followers of quiet groups from electing.
        for peer in self.peers.ids() {
            let (peers, rpc) = (self.peers.clone(), Rpc::Leaders(body.clone()));
            tokio::spawn(async move { peers.request(peer, CONTROLLER_GROUP, rpc, LEADERSHIP_REPORT * 4).await });
        }
    }

    /// The offsets topic partition that coordinates `group` (as Kafka:
    /// `abs(hashCode(group)) % partitions`), creating the topic on first use. Errors are
    /// what a group request answers: INVALID_GROUP_ID for an empty id, NOT_COORDINATOR if
    /// another node leads the partition, COORDINATOR_NOT_AVAILABLE without the topic.
    pub async fn coordinator_for(&self, group: &str) -> Result<Arc<Partition>, ResponseError> {
        if group.is_empty() {
            return Err(ResponseError::InvalidGroupId);
        }
        let count = match self.metadata().topics.get(OFFSETS_TOPIC) {
            Some(t) => t.partitions.len(),
            None => {
                let configs = BTreeMap::from([
                    ("cleanup.policy".to_string(), "compact".to_string()),
                    ("segment.bytes".to_string(), "104857600".to_string()),
                ]);
                match self.create_topic(OFFSETS_TOPIC, self.config.offsets_topic_num_partitions, configs).await {
                    Ok(()) => {}
                    // Another request made it first.
                    Err((ResponseError::TopicAlreadyExists, _)) => self.wait_topic_ready(OFFSETS_TOPIC).await,
                    Err((code, message)) => {
                        tracing::warn!(%code, message, "cannot create the offsets topic");
                        return Err(ResponseError::CoordinatorNotAvailable);
                    }
                }
                self.metadata().topics.get(OFFSETS_TOPIC).map_or(0, |t| t.partitions.len())
            }
        };
        if count == 0 {
            return Err(ResponseError::CoordinatorNotAvailable);
        }
        match self.partition(OFFSETS_TOPIC, offsets_partition(group, count)) {
            // Leading, but the groups are loaded once the new term's first entry applied
            // (`follow_coordination`): a moment's wait, then COORDINATOR_LOAD_IN_PROGRESS.
            Some(p) if p.is_leader() => {
                let deadline = tokio::time::Instant::now() + COORDINATOR_LOAD_WAIT;
                while !p.coordinating() {
                    if tokio::time::Instant::now() > deadline || !p.is_leader() {
                        return Err(ResponseError::CoordinatorLoadInProgress);
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Ok(p)
            }
            Some(_) => Err(ResponseError::NotCoordinator),
            None => Err(ResponseError::CoordinatorNotAvailable),
        }
    }

    /// The node coordinating `group`: the leader of its offsets partition (the topic made
    /// on first use).
    pub async fn coordinator_node(&self, group: &str) -> Result<u64, ResponseError> {
        match self.coordinator_for(group).await {
            Ok(_) => Ok(self.config.node_id),
            Err(ResponseError::NotCoordinator) => {
                let count = self.metadata().topics.get(OFFSETS_TOPIC).map_or(0, |t| t.partitions.len());
                self.partition(OFFSETS_TOPIC, offsets_partition(group, count))
                    .and_then(|p| p.leader())
                    .ok_or(ResponseError::CoordinatorNotAvailable)
            }
            Err(e) => Err(e),
        }
    }

    /// Whether metadata places partition group `group` on this node.
    fn places_here(&self, group: GroupId) -> bool {
        let me = self.config.node_id;
        self.metadata()
            .topics
            .values()
            .any(|t| t.partitions.iter().enumerate().any(|(i, g)| *g == group && t.holders(i).contains(&me)))
    }

    /// The node leading the controller group now, if there is one.
    pub fn controller_leader(&self) -> Option<u64> {
        self.controller.metrics().borrow().current_leader
    }

    /// Where Kafka clients reach node `id`, as it registered (this node: as configured).
    pub fn broker_address(&self, id: u64) -> Option<(String, i32)> {
        if id == self.config.node_id {
            return Some(crate::config::split_host_port(self.config.advertised()));
        }
        self.metadata().brokers.get(&id).map(|b| crate::config::split_host_port(&b.kafka))
    }

    /// The nodes Kafka clients are told of (id, host, port): every registered one, and
    /// this one.
    pub fn brokers(&self) -> Vec<(u64, String, i32)> {
        let mut ids: Vec<u64> = self.metadata().brokers.keys().copied().collect();
        if !ids.contains(&self.config.node_id) {
            ids.push(self.config.node_id);
        }
        ids.into_iter().filter_map(|id| self.broker_address(id).map(|(host, port)| (id, host, port))).collect()
    }

    /// Waits (bounded) until every partition of `topic` has a leader.
    pub async fn wait_topic_ready(&self, topic: &str) {
        let Some(t) = self.metadata().topics.get(topic).cloned() else { return };
        for i in 0..t.partitions.len() {
            if let Some(p) = self.partition(topic, i as i32) {
                p.wait_ready(READY_TIMEOUT).await;
            }
        }
    }

    pub async fn delete_topic(&self, name: &str) -> Result<(), AdminError> {
        self.write(ControllerCmd::DeleteTopic { name: name.to_string() }).await?;
        self.reconcile().await.map_err(|e| (ResponseError::UnknownServerError, e.to_string()))?;
        tracing::info!(topic = name, "topic deleted");
        Ok(())
    }

    pub async fn create_partitions(&self, name: &str, count: u32) -> Result<(), AdminError> {
        let now = self.metadata().topics.get(name).map_or(0, |t| t.partitions.len() as u32);
        if count <= now {
            return Err((ResponseError::InvalidPartitions, "partition count can only grow".into()));
        }
        let factor = self.metadata().topics.get(name).and_then(|t| t.replicas.first()).map(|r| r.len());
        let replicas = self.assign(count - now, factor)?;
        self.write(ControllerCmd::CreatePartitions { name: name.to_string(), count, replicas }).await?;
        self.reconcile().await.map_err(|e| (ResponseError::UnknownServerError, e.to_string()))?;
        self.wait_topic_ready(name).await;
        Ok(())
    }

    /// Stops every raft group.
    pub async fn shutdown(&self) {
        self.stop_groups.cancel();
        for p in self.partitions() {
            p.shutdown().await;
        }
        if let Err(e) = self.controller.shutdown().await {
            tracing::warn!(error = %e, "controller raft did not shut down cleanly");
        }
    }
}

/// Hands partitions led here to their preferred replicas (the first of their replicas,
/// as placement spread them) every `leader.imbalance.check.interval.seconds`, when
/// the preferred replica is caught up: after a node comes back, the leaderships it lost
/// return to it and leaders stay balanced over the nodes, as Kafka's preferred leader
/// election does. The hand-overs of one round run together.
async fn rebalance_leaders(node: std::sync::Weak<Node>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(node) = node.upgrade() else { return };
        if node.stop_groups.is_cancelled() {
            return;
        }
        let metadata = node.metadata();
        let me = node.config.node_id;
        let moves: Vec<(Arc<Partition>, u64)> = node
            .partitions()
            .into_iter()
            .filter(|p| p.is_leader())
            .filter_map(|p| {
                let t = metadata.topics.get(&p.topic)?;
                let preferred = *t.replicas.get(p.index as usize)?.first()?;
                (preferred != me && node.in_sync(&p).contains(&preferred)).then_some((p, preferred))
            })
            .collect();
        if moves.is_empty() {
            continue;
        }
        let peers = node.peers.clone();
        drop(node);
        let handed = futures::future::join_all(moves.iter().map(|(p, to)| p.hand_over(*to, &peers))).await;
        let moved = handed.iter().filter(|ok| **ok).count();
        tracing::info!(moved, tried = moves.len(), "partition leadership handed to preferred replicas");
    }
}

/// Reports this node's leaderships to the others every [`LEADERSHIP_REPORT`].
async fn report_leadership(node: std::sync::Weak<Node>) {
    loop {
        tokio::time::sleep(LEADERSHIP_REPORT).await;
        let Some(node) = node.upgrade() else { return };
        if node.stop_groups.is_cancelled() {
            return;
        }
        node.quiesce();
        node.drive_moves();
        node.report_leadership().await;
    }
}

/// Runs [`Node::manage_controller`] every [`LEADERSHIP_REPORT`] (it does something only
/// on the controller's leader). A task of its own: a membership change may wait for a
/// quorum, and must not hold up the leadership reports.
async fn manage_cluster(node: std::sync::Weak<Node>) {
    loop {
        tokio::time::sleep(LEADERSHIP_REPORT).await;
        let Some(node) = node.upgrade() else { return };
        if node.stop_groups.is_cancelled() {
            return;
        }
        node.manage_controller().await;
    }
}

/// Starts the partitions metadata places here (and stops deleted ones) as the
/// controller's state changes, whoever changed it.
async fn follow_metadata(node: std::sync::Weak<Node>, mut metadata: watch::Receiver<Arc<Metadata>>) {
    while metadata.changed().await.is_ok() {
        let Some(node) = node.upgrade() else { return };
        if node.stop_groups.is_cancelled() {
            return;
        }
        sync_peers(&node.peers, &node.metadata());
        if let Err(e) = node.reconcile().await {
            tracing::error!(error = %e, "cannot start or stop partitions after a metadata change");
        }
    }
}

#[async_trait::async_trait]
impl network::Handler for Node {
    async fn handle(&self, from: u64, group: GroupId, rpc: Rpc) -> Result<bytes::Bytes, String> {
        if group == CONTROLLER_GROUP {
            return match rpc {
                Rpc::Join(ask) => {
                    let (id, broker): (u64, BrokerMeta) = network::decode(&ask)?;
                    network::encode(&self.admit(id, broker).await)
                }
                Rpc::ControllerWrite(cmd) => {
                    let cmd: ControllerCmd = network::decode(&cmd)?;
                    let answer = self.controller.client_write(cmd).await.map(|r| r.data).map_err(|e| e.to_string());
                    network::encode(&answer)
                }
                Rpc::Leaders(report) => {
                    let report: Vec<(GroupId, Leadership)> = network::decode(&report)?;
                    let now = Instant::now();
                    self.heard.write().expect("heard lock").insert(from, now);
                    let mut leaders = self.leaders.write().expect("leaders lock");
                    for (group, l) in report {
                        // A report from an older epoch than one already heard is stale.
                        if leaders.get(&group).is_none_or(|(known, _)| known.epoch <= l.epoch) {
                            leaders.insert(group, (l, now));
                        }
                    }
                    network::encode(&())
                }
                rpc => network::answer(&self.controller, rpc).await,
            };
        }
        // A replica of a new partition may ask before this node has applied the
        // metadata that places the partition here: wait for it a little, rather than
        // have the sender's election fail and wait out a whole election timeout.
        let deadline = tokio::time::Instant::now() + GROUP_WAIT;
        loop {
            let partition = self.partitions.read().expect("partition map lock").get(&group).cloned();
            match partition {
                Some(p) => {
                    return match rpc {
                        Rpc::ReadBatches { from, to, max_bytes } => {
                            network::encode(&p.read_batches(from, to, max_bytes))
                        }
                        Rpc::TakeLeadership => {
                            p.take_leadership(&self.raft_config);
                            network::encode(&())
                        }
                        Rpc::Wake => {
                            p.wake();
                            network::encode(&())
                        }
                        rpc => network::answer(&p.raft, rpc).await,
                    }
                }
                // Not in this node's metadata yet, or placed here but not started yet.
                None if tokio::time::Instant::now() < deadline
                    && (group >= self.metadata().next_group || self.places_here(group)) =>
                {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                None => return Err(format!("group {group} is not on node {}", self.config.node_id)),
            }
        }
    }
}

/// Loads the consumer groups whose records offsets partition `p` keeps.
/// The groups of offsets partition `p` (of `count`) as stored; groups of that partition
/// without a record (deleted while another node coordinated them) are forgotten.
fn load_groups_of(
    groups: &crate::group::service::GroupService,
    p: &Partition,
    count: usize,
) -> Result<(), storage::Error> {
    let mut records = Vec::new();
    for (group, bytes) in p.offsets_store.records()? {
        match bincode::deserialize(&bytes) {
            Ok(record) => records.push((group, record)),
            Err(e) => tracing::error!(group, error = %e, "undecodable group record skipped"),
        }
    }
    groups.reload(records, |g| offsets_partition(g, count) == p.index);
    Ok(())
}

/// Moves the coordination of an offsets partition's consumer groups with its leader: when
/// this node becomes the leader it loads the groups' records as last written through raft
/// (once its first entry has applied, so are all earlier ones), and members carry on in
/// their generation here without a rebalance. Ends with the partition's raft.
async fn follow_coordination(groups: Arc<crate::group::service::GroupService>, p: Arc<Partition>, count: usize) {
    let mut metrics = p.raft.metrics();
    // The term whose groups are loaded here (none yet, even if already leading).
    let mut loaded: Option<u64> = None;
    loop {
        let (leading, term) = {
            let m = metrics.borrow_and_update();
            (m.current_leader == Some(m.id), m.current_term)
        };
        if !leading {
            loaded = None;
            p.set_coordinating(None);
        } else if loaded != Some(term) {
            let mut offsets = p.watch();
            let caught_up = offsets.wait_for(|o| o.leader_epoch as u64 >= term);
            if matches!(tokio::time::timeout(Duration::from_secs(10), caught_up).await, Ok(Ok(_))) {
                match load_groups_of(&groups, &p, count) {
                    Ok(()) => {
                        tracing::info!(partition = p.index, term, "coordinating this offsets partition's groups");
                        loaded = Some(term);
                        p.set_coordinating(Some(term));
                    }
                    Err(e) => tracing::error!(partition = p.index, error = %e, "cannot load consumer groups"),
                }
            }
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// Links to every registered node, and drops the links to decommissioned ones.
fn sync_peers(peers: &Arc<Peers>, metadata: &Metadata) {
    for (id, b) in &metadata.brokers {
        if !b.raft.is_empty() {
            peers.add(*id, &b.raft);
        }
    }
    for id in &metadata.retired {
        peers.remove(*id);
    }
}

/// Moves partition `p`'s replicas to `target` while this node leads it: adds the new
/// replicas to its raft group as learners, waits until they hold every entry (raft
/// copies the log, or a snapshot and then the batches), makes `target` the group's
/// voters (joint consensus; a leader not among them steps down once that is
/// committed), and records the move in metadata, upon which the nodes no longer holding
/// the partition delete their replica. Ends early when leadership is lost (the next
/// leader takes the move on); tried again later on any other failure.
async fn move_partition(node: std::sync::Weak<Node>, p: Arc<Partition>, target: Vec<u64>) {
    let result = async {
        let addr = |id: u64| node.upgrade().and_then(|n| n.peers.address(id)).unwrap_or_default();
        let members = p.members();
        for id in target.iter().filter(|id| !members.contains(id)) {
            p.raft.add_learner(*id, BasicNode::new(addr(*id)), false).await.map_err(|e| e.to_string())?;
        }
        let deadline = Instant::now() + CATCH_UP_WAIT;
        while !p.caught_up(&target) {
            if !p.is_leader() {
                return Err("leadership lost".to_string());
            }
            if Instant::now() > deadline {
                return Err(format!("new replicas not caught up within {CATCH_UP_WAIT:?}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let voters: BTreeSet<u64> = target.iter().copied().collect();
        p.raft.change_membership(voters, false).await.map_err(|e| e.to_string())?;
        let Some(node) = node.upgrade() else { return Ok(()) };
        let cmd =
            ControllerCmd::MovedReplicas { topic: p.topic.clone(), index: p.index as u32, replicas: target.clone() };
        node.write(cmd).await.map_err(|(_, m)| m)
    }
    .await;
    match result {
        Ok(()) => tracing::info!(topic = %p.topic, partition = p.index, replicas = ?target, "partition replicas moved"),
        Err(e) => {
            tracing::warn!(topic = %p.topic, partition = p.index, error = %e, "replica move not done; tried again")
        }
    }
    p.end_move();
}

/// Deletes everything stored for a partition group.
fn destroy_group(db: &Arc<Db>, group: GroupId) -> Result<(), storage::Error> {
    let segments = storage::Segments::open(db.segments_dir(group))?;
    let mut wb = rocksdb::WriteBatch::default();
    PartitionLog::new(db.clone(), group, segments.clone()).destroy(&mut wb);
    StateStore::new(db.clone(), group).delete_all(&mut wb);
    storage::OffsetStore::new(db.clone(), group).destroy(&mut wb);
    db.write(wb, storage::Durability::Wal)?;
    RaftLogStore::<PartitionTypes>::new(db.clone(), group).destroy()?;
    // Last: until the index entries are gone, readers may still look into the files.
    Ok(segments.destroy()?)
}

//! Metadata: brokers, topics, partition leaders; creates requested topics when
//! auto-creation is on.

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::{check_topic_name, operations, Call};
use crate::cluster::node::{Leadership, Node};
use crate::error::ResponseError;

pub async fn handle(call: &Call, req: MetadataRequest) -> MetadataResponse {
    let node = &call.node;
    // v0 sends an empty array for "all topics"; later versions send null.
    let requested: Option<Vec<(Option<String>, Uuid)>> = match req.topics {
        Some(t) if !(call.version == 0 && t.is_empty()) => {
            Some(t.into_iter().map(|t| (t.name.map(|n| n.0.to_string()), t.topic_id)).collect())
        }
        _ => None,
    };
    let allow_create = call.version < 4 || req.allow_auto_topic_creation;
    let topic_operations = operations::answer(req.include_topic_authorized_operations, operations::TOPIC);

    let mut topics = Vec::new();
    match requested {
        None => {
            let metadata = node.metadata();
            for name in metadata.topics.keys() {
                topics.push(describe_topic(node, name, topic_operations));
            }
        }
        Some(list) => {
            for (name, id) in list {
                let name = match name {
                    Some(n) => n,
                    None => match node.metadata().topic_by_id(id.as_bytes()) {
                        Some((n, _)) => n.clone(),
                        None => {
                            topics.push(
                                MetadataResponseTopic::default()
                                    .with_error_code(ResponseError::UnknownTopicId.code())
                                    .with_topic_id(id)
                                    .with_topic_authorized_operations(operations::NOT_REQUESTED),
                            );
                            continue;
                        }
                    },
                };
                topics.push(topic_or_create(node, &name, allow_create, topic_operations).await);
            }
        }
    }

    if call.version < 7 {
        // Leader epochs came with v7; a field the version lacks cannot be encoded.
        for p in topics.iter_mut().flat_map(|t| t.partitions.iter_mut()) {
            p.leader_epoch = -1;
        }
    }
    let brokers = node
        .brokers()
        .into_iter()
        .map(|(id, host, port)| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(id as i32))
                .with_host(StrBytes::from_string(host))
                .with_port(port)
        })
        .collect();
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(StrBytes::from_string(node.metadata().cluster_id.clone())))
        .with_controller_id(BrokerId(node.controller_leader().map_or(-1, |id| id as i32)))
        .with_topics(topics)
        .with_cluster_authorized_operations(operations::answer(
            req.include_cluster_authorized_operations,
            operations::CLUSTER,
        ))
}

async fn topic_or_create(node: &Node, name: &str, allow_create: bool, topic_operations: i32) -> MetadataResponseTopic {
    let unknown = |code: ResponseError| {
        MetadataResponseTopic::default()
            .with_error_code(code.code())
            .with_name(Some(TopicName(StrBytes::from_string(name.to_string()))))
            .with_topic_authorized_operations(operations::NOT_REQUESTED)
    };
    if !node.metadata().topics.contains_key(name) {
        if check_topic_name(name).is_err() {
            return unknown(ResponseError::InvalidTopicException);
        }
        if !(allow_create && node.config.auto_create_topics_enable) {
            return unknown(ResponseError::UnknownTopicOrPartition);
        }
        match node.create_topic(name, node.config.num_partitions, Default::default()).await {
            Ok(()) | Err((ResponseError::TopicAlreadyExists, _)) => {}
            Err((code, msg)) => {
                tracing::warn!(topic = name, %code, msg, "auto-creating topic failed");
                return unknown(code);
            }
        }
    }
    describe_topic(node, name, topic_operations)
}

/// The metadata of an existing topic (or UNKNOWN_TOPIC_OR_PARTITION if it just vanished).
pub fn describe_topic(node: &Node, name: &str, topic_operations: i32) -> MetadataResponseTopic {
    let metadata = node.metadata();
    let topic_name = Some(TopicName(StrBytes::from_string(name.to_string())));
    let Some(topic) = metadata.topics.get(name) else {
        return MetadataResponseTopic::default()
            .with_error_code(ResponseError::UnknownTopicOrPartition.code())
            .with_name(topic_name)
            .with_topic_authorized_operations(operations::NOT_REQUESTED);
    };
    let partitions = (0..topic.partitions.len() as i32)
        .map(|index| {
            // While replicas move, both the old and the new ones (as Kafka).
            let replicas: Vec<BrokerId> = topic.holders(index as usize).iter().map(|id| BrokerId(*id as i32)).collect();
            let p = MetadataResponsePartition::default().with_partition_index(index).with_replica_nodes(replicas);
            // A hosted partition as this replica knows it; another (or one whose quiet
            // leader this replica has not heard from since it started) as its leader
            // reported.
            let reported = || topic.partitions.get(index as usize).and_then(|g| node.reported_leader(*g));
            let leadership = match node.partition(name, index) {
                Some(hosted) => match hosted.leader() {
                    // A new leader is named once its epoch is current.
                    Some(_) if !hosted.leader_ready() => None,
                    Some(leader) => Some(Leadership {
                        leader,
                        epoch: hosted.offsets().leader_epoch,
                        isr: node.in_sync(&hosted),
                        quiet: false,
                        applied: 0,
                    }),
                    None => reported(),
                },
                None => reported(),
            };
            match leadership {
                Some(l) => p
                    .with_leader_id(BrokerId(l.leader as i32))
                    .with_leader_epoch(l.epoch)
                    .with_isr_nodes(l.isr.into_iter().map(|id| BrokerId(id as i32)).collect()),
                None => p
                    .with_error_code(ResponseError::LeaderNotAvailable.code())
                    .with_leader_id(BrokerId(-1))
                    .with_leader_epoch(-1),
            }
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(topic_name)
        .with_topic_id(Uuid::from_bytes(topic.id))
        .with_partitions(partitions)
        .with_topic_authorized_operations(topic_operations)
}

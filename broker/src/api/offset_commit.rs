//! OffsetCommit: a group's offsets, written through raft to the offsets topic partition
//! that coordinates the group. Groups without members commit without group management
//! (generation -1), as in Kafka; members commit in their current generation.

use kafka_protocol::messages::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse, TopicName};
use kafka_protocol::ResponseError;
use storage::CommittedOffset;

use super::Call;

/// Kafka's `offset.metadata.max.bytes`.
const MAX_METADATA_BYTES: usize = 4096;

pub async fn handle(call: &Call, req: OffsetCommitRequest) -> OffsetCommitResponse {
    let node = &call.node;
    let metadata = node.metadata();
    let group = req.group_id.0.to_string();
    let coordinator = match node.coordinator_for(&group).await {
        Ok(p) => match node.groups.check_commit(
            &group,
            &req.member_id,
            req.group_instance_id.as_deref(),
            req.generation_id_or_member_epoch,
        ) {
            Some(e) => Err(e),
            None => Ok(p),
        },
        Err(e) => Err(e),
    };

    // Per partition: the error it gets, or its place in the one raft write.
    let now = crate::now_ms();
    let mut results: Vec<(TopicName, uuid::Uuid, Vec<(i32, Option<ResponseError>)>)> = Vec::new();
    let mut batch = Vec::new();
    for topic in req.topics {
        let name = if topic.name.0.is_empty() && !topic.topic_id.is_nil() {
            metadata.topic_by_id(topic.topic_id.as_bytes()).map(|(n, _)| n.clone())
        } else {
            Some(topic.name.0.to_string())
        };
        let known = name.as_ref().and_then(|n| metadata.topics.get(n));
        let mut partitions = Vec::new();
        for p in topic.partitions {
            let error = if let Err(e) = &coordinator {
                Some(*e)
            } else if known.is_none() {
                Some(if name.is_none() {
                    ResponseError::UnknownTopicId
                } else {
                    ResponseError::UnknownTopicOrPartition
                })
            } else if p.partition_index < 0 || p.partition_index as usize >= known.map_or(0, |t| t.partitions.len()) {
                Some(ResponseError::UnknownTopicOrPartition)
            } else if p.committed_metadata.as_ref().is_some_and(|m| m.len() > MAX_METADATA_BYTES) {
                Some(ResponseError::OffsetMetadataTooLarge)
            } else {
                batch.push((
                    name.clone().unwrap_or_default(),
                    p.partition_index,
                    CommittedOffset {
                        offset: p.committed_offset,
                        leader_epoch: p.committed_leader_epoch,
                        metadata: p.committed_metadata.map(|m| m.to_string()).unwrap_or_default(),
                        commit_timestamp: now,
                    },
                ));
                None
            };
            partitions.push((p.partition_index, error));
        }
        results.push((topic.name, topic.topic_id, partitions));
    }
    let written = match (&coordinator, batch.is_empty()) {
        (Ok(p), false) => p.commit_offsets(group, batch).await.err(),
        _ => None,
    };
    let topics = results
        .into_iter()
        .map(|(name, id, partitions)| {
            OffsetCommitResponseTopic::default().with_name(name).with_topic_id(id).with_partitions(
                partitions
                    .into_iter()
                    .map(|(index, error)| {
                        let code = error.or(written).map_or(0, |e| e.code());
                        OffsetCommitResponsePartition::default().with_partition_index(index).with_error_code(code)
                    })
                    .collect(),
            )
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

//! OffsetFetch: a group's committed offsets, read from the coordinating partition. A
//! partition without a commit (or a group that never committed) gets offset -1 and no
//! error, as clients expect. v8+ asks for several groups at once; no topics means all
//! the group committed.

use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions, OffsetFetchResponseTopic,
    OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use storage::CommittedOffset;

use super::Call;
use crate::cluster::node::Node;

/// How long an OffsetFetch waits for its coordinator to confirm its leadership.
const COORDINATOR_CHECK: std::time::Duration = std::time::Duration::from_secs(5);

/// One group's answer: per topic, per partition, the commit if any.
type GroupOffsets = Result<Vec<(String, Vec<(i32, Option<CommittedOffset>)>)>, ResponseError>;

async fn read_group(node: &Node, group: &str, topics: Option<Vec<(String, Vec<i32>)>>) -> GroupOffsets {
    let p = node.coordinator_for(group).await?;
    // A coordinator that lost its offsets partition to another node without knowing it
    // yet (cut off from the others) would answer with offsets older than ones committed
    // since: it confirms its leadership first, so committed offsets never go backwards.
    p.confirm_leader(COORDINATOR_CHECK).await.map_err(|_| ResponseError::NotCoordinator)?;
    let storage_error = |e: storage::Error| {
        tracing::error!(group, error = %e, "cannot read committed offsets");
        ResponseError::UnknownServerError
    };
    match topics {
        Some(topics) => topics
            .into_iter()
            .map(|(topic, partitions)| {
                let found = partitions
                    .into_iter()
                    .map(|i| p.offsets_store.get(group, &topic, i).map(|o| (i, o)))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(storage_error)?;
                Ok((topic, found))
            })
            .collect(),
        None => {
            let mut out: Vec<(String, Vec<(i32, Option<CommittedOffset>)>)> = Vec::new();
            for (topic, partition, offset) in p.offsets_store.list(group).map_err(storage_error)? {
                match out.last_mut() {
                    Some((t, parts)) if *t == topic => parts.push((partition, Some(offset))),
                    _ => out.push((topic, vec![(partition, Some(offset))])),
                }
            }
            Ok(out)
        }
    }
}

fn str(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

pub async fn handle(call: &Call, req: OffsetFetchRequest) -> OffsetFetchResponse {
    let node = &call.node;
    if call.version >= 8 {
        let metadata = node.metadata();
        let mut groups = Vec::new();
        for g in req.groups {
            let topics = g.topics.map(|ts| {
                ts.into_iter()
                    .map(|t| {
                        let name = if t.name.0.is_empty() && !t.topic_id.is_nil() {
                            metadata.topic_by_id(t.topic_id.as_bytes()).map(|(n, _)| n.clone()).unwrap_or_default()
                        } else {
                            t.name.0.to_string()
                        };
                        (name, t.partition_indexes)
                    })
                    .collect()
            });
            let read = read_group(node, &g.group_id, topics).await;
            let group = OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone());
            groups.push(match read {
                Err(e) => group.with_error_code(e.code()),
                Ok(topics) => group.with_topics(
                    topics
                        .into_iter()
                        .map(|(topic, parts)| {
                            let id = metadata.topics.get(&topic).map(|t| t.id).unwrap_or_default();
                            OffsetFetchResponseTopics::default()
                                .with_name(TopicName(str(&topic)))
                                .with_topic_id(uuid::Uuid::from_bytes(id))
                                .with_partitions(
                                    parts
                                        .into_iter()
                                        .map(|(i, o)| {
                                            let (offset, epoch, meta) = fields(o);
                                            OffsetFetchResponsePartitions::default()
                                                .with_partition_index(i)
                                                .with_committed_offset(offset)
                                                .with_committed_leader_epoch(epoch)
                                                .with_metadata(Some(str(&meta)))
                                        })
                                        .collect(),
                                )
                        })
                        .collect(),
                ),
            });
        }
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let topics = req.topics.map(|ts| ts.into_iter().map(|t| (t.name.0.to_string(), t.partition_indexes)).collect());
    match read_group(node, &req.group_id, topics).await {
        Err(e) => OffsetFetchResponse::default().with_error_code(e.code()),
        Ok(topics) => OffsetFetchResponse::default().with_topics(
            topics
                .into_iter()
                .map(|(topic, parts)| {
                    OffsetFetchResponseTopic::default().with_name(TopicName(str(&topic))).with_partitions(
                        parts
                            .into_iter()
                            .map(|(i, o)| {
                                let (offset, epoch, meta) = fields(o);
                                OffsetFetchResponsePartition::default()
                                    .with_partition_index(i)
                                    .with_committed_offset(offset)
                                    .with_committed_leader_epoch(epoch)
                                    .with_metadata(Some(str(&meta)))
                            })
                            .collect(),
                    )
                })
                .collect(),
        ),
    }
}

/// Offset, leader epoch and metadata of a commit; -1, -1 and "" without one.
fn fields(o: Option<CommittedOffset>) -> (i64, i32, String) {
    match o {
        Some(o) => (o.offset, o.leader_epoch, o.metadata),
        None => (-1, -1, String::new()),
    }
}

//! OffsetDelete: drops some of a group's committed offsets, through raft. A group with no
//! offsets is GROUP_ID_NOT_FOUND; the offsets of a topic that members of the group
//! subscribe to are kept, with GROUP_SUBSCRIBED_TO_TOPIC.

use kafka_protocol::messages::offset_delete_response::{OffsetDeleteResponsePartition, OffsetDeleteResponseTopic};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};
use kafka_protocol::ResponseError;

use super::Call;

pub async fn handle(call: &Call, req: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let node = &call.node;
    let group = req.group_id.0.to_string();
    let p = match node.coordinator_for(&group).await {
        Ok(p) => p,
        Err(e) => return OffsetDeleteResponse::default().with_error_code(e.code()),
    };
    match p.offsets_store.list(&group) {
        Ok(offsets) if offsets.is_empty() => {
            return OffsetDeleteResponse::default().with_error_code(ResponseError::GroupIdNotFound.code())
        }
        Ok(_) => {}
        Err(e) => {
            tracing::error!(group, error = %e, "cannot read committed offsets");
            return OffsetDeleteResponse::default().with_error_code(ResponseError::UnknownServerError.code());
        }
    }
    let metadata = node.metadata();
    let subscribed = node.groups.subscribed_topics(&group);
    let mut doomed = Vec::new();
    let mut topics = Vec::new();
    for t in req.topics {
        let known = metadata.topics.get(t.name.0.as_str());
        let mut partitions = Vec::new();
        for part in t.partitions {
            let exists = known
                .is_some_and(|k| part.partition_index >= 0 && (part.partition_index as usize) < k.partitions.len());
            let code = if !exists {
                ResponseError::UnknownTopicOrPartition.code()
            } else if subscribed.contains(t.name.0.as_str()) {
                ResponseError::GroupSubscribedToTopic.code()
            } else {
                doomed.push((t.name.0.to_string(), part.partition_index));
                0
            };
            partitions.push(
                OffsetDeleteResponsePartition::default()
                    .with_partition_index(part.partition_index)
                    .with_error_code(code),
            );
        }
        topics.push(OffsetDeleteResponseTopic::default().with_name(t.name).with_partitions(partitions));
    }
    if !doomed.is_empty() {
        if let Err(e) = p.delete_offsets(group, Some(doomed)).await {
            return OffsetDeleteResponse::default().with_error_code(e.code());
        }
    }
    OffsetDeleteResponse::default().with_topics(topics)
}

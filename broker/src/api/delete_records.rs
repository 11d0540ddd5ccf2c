//! DeleteRecords: moves partitions' log start offsets forward, through raft, as Kafka's
//! `kafka-delete-records` and admin clients' `deleteRecords` do. The records before the new
//! start are no longer served; whole batches below it are deleted. Offset -1 means the high
//! watermark.

use futures::future::join_all;
use kafka_protocol::messages::delete_records_response::{DeleteRecordsPartitionResult, DeleteRecordsTopicResult};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};
use kafka_protocol::ResponseError;

use super::Call;
use crate::cluster::node::OFFSETS_TOPIC;

pub async fn handle(call: &Call, req: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let node = &call.node;
    let metadata = node.metadata();
    let mut topics = Vec::new();
    for t in req.topics {
        let name = t.name.0.to_string();
        let settings = metadata.topics.get(&name).map(|topic| node.topic_settings(topic));
        let results = join_all(t.partitions.into_iter().map(|p| {
            let name = name.clone();
            async move {
                let result = DeleteRecordsPartitionResult::default().with_partition_index(p.partition_index);
                let moved = async {
                    let Some(settings) = settings else { return Err(ResponseError::UnknownTopicOrPartition) };
                    let partition =
                        node.partition(&name, p.partition_index).ok_or(ResponseError::UnknownTopicOrPartition)?;
                    if name == OFFSETS_TOPIC {
                        // As Kafka: an internal topic's records cannot be deleted.
                        return Err(ResponseError::InvalidTopicException);
                    }
                    if !settings.delete {
                        // As Kafka: only under a cleanup.policy that includes delete.
                        return Err(ResponseError::PolicyViolation);
                    }
                    if !partition.is_leader() {
                        return Err(ResponseError::NotLeaderOrFollower);
                    }
                    let high_watermark = partition.offsets().high_watermark;
                    let offset = if p.offset == -1 { high_watermark } else { p.offset };
                    if offset < 0 || offset > high_watermark {
                        return Err(ResponseError::OffsetOutOfRange);
                    }
                    partition.advance_log_start(offset).await
                }
                .await;
                match moved {
                    Ok(low_watermark) => {
                        metrics::counter!("quarry_delete_records_total", "topic" => name).increment(1);
                        result.with_low_watermark(low_watermark)
                    }
                    Err(code) => result.with_low_watermark(-1).with_error_code(code.code()),
                }
            }
        }))
        .await;
        topics.push(DeleteRecordsTopicResult::default().with_name(t.name).with_partitions(results));
    }
    DeleteRecordsResponse::default().with_topics(topics)
}

//! OffsetForLeaderEpoch: where a leader epoch ended. A consumer asks after a leader change
//! (its position carries the epoch of the record it came from) to learn whether the log
//! it read was truncated behind it; committed raft entries never are, so the answer only
//! confirms the position, but clients wait for it before fetching on.

use kafka_protocol::messages::offset_for_leader_epoch_response::{EpochEndOffset, OffsetForLeaderTopicResult};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use super::Call;
use crate::error::ResponseError;

pub fn handle(call: &Call, req: OffsetForLeaderEpochRequest) -> OffsetForLeaderEpochResponse {
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let name = t.topic.0.to_string();
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let r = EpochEndOffset::default().with_partition(p.partition);
                    let answer =
                        call.node.partition(&name, p.partition).ok_or(ResponseError::UnknownTopicOrPartition).and_then(
                            |partition| {
                                partition.check_leader(p.current_leader_epoch)?;
                                Ok(partition.epoch_end(p.leader_epoch))
                            },
                        );
                    match answer {
                        // v0 answers with the end offset alone.
                        Ok((epoch, end)) => {
                            r.with_leader_epoch(if call.version >= 1 { epoch } else { -1 }).with_end_offset(end)
                        }
                        Err(code) => r.with_error_code(code.code()).with_leader_epoch(-1).with_end_offset(-1),
                    }
                })
                .collect();
            OffsetForLeaderTopicResult::default().with_topic(t.topic).with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}

//! ListOffsets: earliest, latest, max timestamp, and the first offset at or after a time.

use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use protocol::batch::{self, BatchHeader};
use storage::StoredBatch;

use super::Call;
use crate::cluster::partition::Partition;
use crate::error::{storage_code, ResponseError};

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;
const EARLIEST_PENDING_UPLOAD: i64 = -5;
/// The replica id of Kafka's debugging consumers, which may read from any replica.
pub const DEBUGGING_CONSUMER: i32 = -2;

pub fn handle(call: &Call, req: ListOffsetsRequest) -> ListOffsetsResponse {
    let replica_id = req.replica_id.0;
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let name = t.name.0.to_string();
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let r = ListOffsetsPartitionResponse::default().with_partition_index(p.partition_index);
                    let answer = call
                        .node
                        .partition(&name, p.partition_index)
                        .ok_or(ResponseError::UnknownTopicOrPartition)
                        .and_then(|partition| {
                            // Consumers ask the leader; replica id -2 is a debugging read.
                            if replica_id != DEBUGGING_CONSUMER {
                                partition.check_leader(p.current_leader_epoch)?;
                            }
                            lookup(&partition, p.timestamp).map(|found| (found, partition.offsets().leader_epoch))
                        });
                    match answer {
                        // Leader epochs came with v4.
                        Ok(((offset, timestamp), epoch)) => r
                            .with_offset(offset)
                            .with_timestamp(timestamp)
                            .with_leader_epoch(if call.version >= 4 { epoch } else { -1 }),
                        Err(code) => {
                            r.with_error_code(code.code()).with_offset(-1).with_timestamp(-1).with_leader_epoch(-1)
                        }
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default().with_name(t.name).with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}

/// `(offset, timestamp)` for a ListOffsets query; `(-1, -1)` when no record matches.
fn lookup(partition: &Partition, timestamp: i64) -> Result<(i64, i64), ResponseError> {
    let offsets = partition.offsets();
    match timestamp {
        LATEST => Ok((offsets.high_watermark, -1)),
        EARLIEST | EARLIEST_LOCAL | EARLIEST_PENDING_UPLOAD => Ok((offsets.log_start_offset, -1)),
        MAX_TIMESTAMP if offsets.max_timestamp_batch < offsets.log_start_offset => Ok((-1, -1)),
        MAX_TIMESTAMP => {
            let stored =
                partition.log.batches_from(offsets.max_timestamp_batch, 1).map_err(|e| storage_code(&e))?.pop();
            Ok(stored
                .map_or((-1, -1), |b| first_record_at_or_after(&b, offsets.max_timestamp, offsets.log_start_offset)))
        }
        t if t < 0 => Err(ResponseError::InvalidRequest),
        t => match partition.log.batch_for_timestamp(t).map_err(|e| storage_code(&e))? {
            Some(stored) => Ok(first_record_at_or_after(&stored, t, offsets.log_start_offset)),
            None => Ok((-1, -1)),
        },
    }
}

/// `(offset, timestamp)` of the first record of `stored` at or after `t` and at or after
/// the log start (DeleteRecords may have moved it into the batch), decompressing if
/// needed; should its records not parse, the batch's first offset and max timestamp.
fn first_record_at_or_after(stored: &StoredBatch, t: i64, log_start: i64) -> (i64, i64) {
    BatchHeader::parse(&stored.bytes)
        .ok()
        .and_then(|h| batch::record_timestamps(&h, &stored.bytes))
        .and_then(|ts| {
            ts.into_iter()
                .map(|(delta, ts)| (stored.base_offset + delta as i64, ts))
                .find(|(o, ts)| *ts >= t && *o >= log_start)
        })
        .unwrap_or((stored.base_offset.max(log_start), stored.max_timestamp))
}

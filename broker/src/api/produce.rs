//! Produce: validate each partition's batches, append them through the partition's raft
//! group, answer with base offsets once committed (acks 1 and -1), or not at all (acks 0).
//!
//! [`submit`] runs in the connection's read loop, so the batches of consecutive requests
//! reach each partition's batcher in the order the client sent them; the returned future
//! waits for the commits.

use std::future::Future;

use bytes::Bytes;
use futures::future::join_all;
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, TopicName};
use protocol::batch::{self, BatchError};
use tokio::sync::oneshot;
use uuid::Uuid;

use super::{message, Call};
use crate::cluster::partition::{Appended, BatchResult};
use crate::error::ResponseError;

type Failure = (ResponseError, Option<String>);

/// One partition's write: refused at once, or waiting for its commit.
enum Pending {
    Failed(Failure),
    Refused(Refusal),
    Queued {
        rx: oneshot::Receiver<Result<Appended, ResponseError>>,
        records: u64,
        bytes: u64,
        log_append_time: bool,
        log_start_offset: i64,
    },
}

/// Validates and queues every partition's batches; the future resolves to the response
/// (`None` for acks=0).
pub async fn submit(call: Call, req: ProduceRequest) -> impl Future<Output = Option<ProduceResponse>> + Send {
    let node = &call.node;
    let acks = req.acks;
    let transactional = req.transactional_id.as_ref().is_some_and(|t| !t.is_empty());
    let mut topics: Vec<(String, Uuid, Vec<(i32, Pending)>)> = Vec::new();
    for topic in req.topic_data {
        let metadata = node.metadata();
        let name = if topic.name.0.is_empty() && !topic.topic_id.is_nil() {
            metadata.topic_by_id(topic.topic_id.as_bytes()).map(|(n, _)| n.clone()).unwrap_or_default()
        } else {
            topic.name.0.to_string()
        };
        let settings = metadata.topics.get(&name).map(|t| node.topic_settings(t));
        let mut partitions = Vec::new();
        for pd in topic.partition_data {
            let pending = async {
                if call.version < 3 {
                    // Magic 0/1 message sets are not stored (KAFKA-18659: advertised, refused).
                    return Pending::Failed((ResponseError::UnsupportedVersion, None));
                }
                if !(acks == 0 || acks == 1 || acks == -1) {
                    return Pending::Failed((ResponseError::InvalidRequiredAcks, None));
                }
                if transactional {
                    return Pending::Failed((ResponseError::TransactionalIdAuthorizationFailed, Some(NO_TRANSACTIONS.into())));
                }
                let (Some(settings), Some(partition)) = (settings, node.partition(&name, pd.index)) else {
                    return Pending::Failed((ResponseError::UnknownTopicOrPartition, None));
                };
                // Kafka's rule for acks=all: refused, not written, while too few replicas
                // are in sync (a follower answers NOT_LEADER_OR_FOLLOWER below). One is
                // always: the leader.
                if acks == -1 && settings.min_insync_replicas > 1 && partition.is_leader() {
                    let in_sync = node.in_sync(&partition).len() as i64;
                    if in_sync < settings.min_insync_replicas {
                        let why = format!(
                            "{in_sync} in-sync replicas, min.insync.replicas is {}",
                            settings.min_insync_replicas
                        );
                        return Pending::Failed((ResponseError::NotEnoughReplicas, Some(why)));
                    }
                }
                let records = pd.records.unwrap_or_default();
                let batches = match check_batches(&records, settings.max_message_bytes, settings.compact) {
                    Ok(b) => b,
                    Err(refusal) => {
                        metrics::counter!("quarry_produce_rejected_total", "topic" => name.clone(), "reason" => refusal.code.to_string()).increment(1);
                        return Pending::Refused(refusal);
                    }
                };
                let count = batches.iter().map(|(h, _)| h.offset_count()).sum::<i64>() as u64;
                let parts = batches.into_iter().map(|(_, b)| b).collect();
                match partition.enqueue(parts, settings.log_append_time).await {
                    Ok(rx) => Pending::Queued {
                        rx,
                        records: count,
                        bytes: records.len() as u64,
                        log_append_time: settings.log_append_time,
                        log_start_offset: partition.offsets().log_start_offset,
                    },
                    Err(code) => Pending::Failed((code, None)),
                }
            }
            .await;
            partitions.push((pd.index, pending));
        }
        topics.push((name, topic.topic_id, partitions));
    }

    async move {
        let mut responses = Vec::new();
        for (name, id, partitions) in topics {
            let outcomes = join_all(partitions.into_iter().map(|(index, pending)| {
                let name = name.clone();
                async move {
                    let r = PartitionProduceResponse::default().with_index(index).with_log_start_offset(-1);
                    let failed = |(code, msg): Failure| {
                        r.clone()
                            .with_error_code(code.code())
                            .with_base_offset(-1)
                            .with_log_append_time_ms(-1)
                            .with_error_message(msg.and_then(message))
                    };
                    match pending {
                        Pending::Failed(f) => failed(f),
                        Pending::Refused(Refusal { code, text, records }) => {
                            let record_errors = records
                                .into_iter()
                                .map(|(batch_index, why)| {
                                    BatchIndexAndErrorMessage::default()
                                        .with_batch_index(batch_index)
                                        .with_batch_index_error_message(message(why))
                                })
                                .collect();
                            failed((code, Some(text))).with_record_errors(record_errors)
                        }
                        Pending::Queued { rx, records, bytes, log_append_time, log_start_offset } => {
                            match rx.await.unwrap_or(Err(ResponseError::NotLeaderOrFollower)) {
                                Ok(appended) => match outcome(&appended.batches) {
                                    Ok((base, written)) => {
                                        if written {
                                            metrics::counter!("quarry_bytes_in_total", "topic" => name.clone())
                                                .increment(bytes);
                                            metrics::counter!("quarry_records_in_total", "topic" => name)
                                                .increment(records);
                                        } else {
                                            metrics::counter!("quarry_produce_duplicates_total", "topic" => name)
                                                .increment(1);
                                        }
                                        r.with_base_offset(base)
                                            .with_log_append_time_ms(if log_append_time {
                                                appended.append_time_ms
                                            } else {
                                                -1
                                            })
                                            .with_log_start_offset(log_start_offset)
                                    }
                                    Err(f) => failed(f),
                                },
                                Err(code) => failed((code, None)),
                            }
                        }
                    }
                }
            }))
            .await;
            responses.push(
                TopicProduceResponse::default()
                    .with_name(TopicName(name.into()))
                    .with_topic_id(id)
                    .with_partition_responses(outcomes),
            );
        }
        (acks != 0).then(|| ProduceResponse::default().with_responses(responses))
    }
}

const NO_TRANSACTIONS: &str = "transactions are not supported";

/// The response for one partition's batches: the first batch's base offset and whether
/// anything was written (`false`: every batch was an idempotent retry), or the first
/// refusal. A client sends one batch per partition; with several, one refused fails all.
fn outcome(batches: &[BatchResult]) -> Result<(i64, bool), Failure> {
    let mut first = None;
    let mut written = false;
    for b in batches {
        match *b {
            BatchResult::Appended(base) => {
                first.get_or_insert(base);
                written = true;
            }
            BatchResult::Duplicate(base) => {
                first.get_or_insert(base);
            }
            BatchResult::Refused(code) => {
                let code = ResponseError::try_from_code(code).unwrap_or(ResponseError::UnknownServerError);
                return Err((code, None));
            }
        }
    }
    first.map(|base| (base, written)).ok_or((ResponseError::CorruptMessage, None))
}

/// Why a partition's records were refused; `records` names single records (their index
/// among the partition's records, and why), as Kafka's `record_errors`, so that a client
/// can resend the others.
struct Refusal {
    code: ResponseError,
    text: String,
    records: Vec<(i32, String)>,
}

impl Refusal {
    fn new(code: ResponseError, text: impl Into<String>) -> Self {
        Refusal { code, text: text.into(), records: Vec::new() }
    }
}

/// Splits and checks a partition's records: v2 batches only, whole, CRC intact, each no
/// larger than the topic's `max.message.bytes`, keyed on a compacted topic. Nothing is
/// written unless every batch passes.
fn check_batches(
    records: &Bytes,
    max_message_bytes: i64,
    compacted: bool,
) -> Result<Vec<(batch::BatchHeader, Bytes)>, Refusal> {
    if records.is_empty() {
        return Err(Refusal::new(ResponseError::InvalidRecord, "no record batch"));
    }
    let split = batch::split_batches(records).map_err(|e| match e {
        BatchError::Magic(m) => {
            Refusal::new(ResponseError::UnsupportedForMessageFormat, format!("record batch magic {m} is not supported"))
        }
        other => Refusal::new(ResponseError::CorruptMessage, other.to_string()),
    })?;
    if split.len() > 1 && split.iter().any(|(h, _)| h.producer_id >= 0) {
        // As Kafka: one batch per partition, so that an idempotent write is all or nothing.
        return Err(Refusal::new(
            ResponseError::InvalidRecord,
            format!("{} record batches for one partition; an idempotent producer sends one", split.len()),
        ));
    }
    let mut out = Vec::with_capacity(split.len());
    let mut keyless = Vec::new();
    let mut index = 0i32;
    for (header, range) in split {
        if range.len() as i64 > max_message_bytes {
            return Err(Refusal::new(
                ResponseError::MessageTooLarge,
                format!("record batch of {} bytes exceeds max.message.bytes {max_message_bytes}", range.len()),
            ));
        }
        let bytes = records.slice(range);
        batch::validate(&header, &bytes).map_err(|e| Refusal::new(ResponseError::CorruptMessage, e.to_string()))?;
        if header.is_transactional() || header.is_control() {
            return Err(Refusal::new(ResponseError::TransactionalIdAuthorizationFailed, NO_TRANSACTIONS));
        }
        if header.producer_id >= 0 && (header.producer_epoch < 0 || header.base_sequence < 0) {
            return Err(Refusal::new(
                ResponseError::InvalidRecord,
                format!(
                    "record batch of producer id {} has epoch {} and base sequence {}; an idempotent batch needs both",
                    header.producer_id, header.producer_epoch, header.base_sequence
                ),
            ));
        }
        if compacted {
            // Compaction keeps the latest record per key; a record without one cannot be kept.
            let Some(found) = batch::keyless_records(&bytes) else {
                return Err(Refusal::new(ResponseError::CorruptMessage, "the batch's records do not decode"));
            };
            keyless.extend(found.into_iter().map(|i| index + i));
        }
        index += header.records_count.max(0);
        out.push((header, bytes));
    }
    if !keyless.is_empty() {
        let why = "a compacted topic accepts only records with a key";
        return Err(Refusal {
            code: ResponseError::InvalidRecord,
            text: format!("{} of {index} records have no key; {why}", keyless.len()),
            records: keyless.into_iter().map(|i| (i, why.to_string())).collect(),
        });
    }
    Ok(out)
}

//! Fetch: read stored batches from the requested offsets. Data that is already there is
//! returned at once; the request waits up to `max_wait_ms` only while fewer than
//! `min_bytes` are available (a real long poll, woken by appends).

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures::future::select_all;
use futures::FutureExt;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse, TopicName};
use tokio::time::Instant;
use uuid::Uuid;

use super::list_offsets::DEBUGGING_CONSUMER;
use super::Call;
use crate::cluster::partition::Partition;
use crate::error::{storage_code, ResponseError};

/// One requested partition, resolved.
struct Wanted {
    topic: usize,
    index: i32,
    offset: i64,
    max_bytes: usize,
    partition: Result<Arc<Partition>, ResponseError>,
}

pub async fn handle(call: &Call, req: FetchRequest) -> FetchResponse {
    let node = &call.node;
    let metadata = node.metadata();
    let replica_id = if call.version >= 15 { req.replica_state.replica_id.0 } else { req.replica_id.0 };
    let mut topic_keys: Vec<(String, Uuid)> = Vec::new();
    let mut wanted = Vec::new();
    for topic in &req.topics {
        let (name, err) = if call.version >= 13 {
            match metadata.topic_by_id(topic.topic_id.as_bytes()) {
                Some((n, _)) => (n.clone(), None),
                None => (String::new(), Some(ResponseError::UnknownTopicId)),
            }
        } else {
            (topic.topic.0.to_string(), None)
        };
        topic_keys.push((name.clone(), topic.topic_id));
        for p in &topic.partitions {
            let partition = match err {
                Some(e) => Err(e),
                None => node.partition(&name, p.partition).ok_or(ResponseError::UnknownTopicOrPartition),
            };
            // Consumers read from the leader, at the leader epoch they know of.
            let partition = partition.and_then(|partition| {
                if replica_id != DEBUGGING_CONSUMER {
                    partition.check_leader(p.current_leader_epoch)?;
                }
                Ok(partition)
            });
            wanted.push(Wanted {
                topic: topic_keys.len() - 1,
                index: p.partition,
                offset: p.fetch_offset,
                max_bytes: p.partition_max_bytes.max(0) as usize,
                partition,
            });
        }
    }

    let max_bytes = if call.version >= 3 { req.max_bytes.max(0) as usize } else { usize::MAX };
    let deadline = Instant::now() + Duration::from_millis(req.max_wait_ms.max(0) as u64);
    let mut watchers: Vec<_> = wanted.iter().filter_map(|w| w.partition.as_ref().ok().map(|p| p.watch())).collect();
    for w in &mut watchers {
        w.borrow_and_update();
    }
    let results = loop {
        let (results, total, any_error) = read_all(&wanted, max_bytes);
        if total >= req.min_bytes.max(0) as usize || any_error || Instant::now() >= deadline || watchers.is_empty() {
            break results;
        }
        // Wait for any requested partition to change, or the deadline.
        let _waiting: Vec<_> =
            wanted.iter().filter_map(|w| w.partition.as_ref().ok().map(|p| p.fetch_waiting())).collect();
        let changed = select_all(watchers.iter_mut().map(|w| w.changed().boxed()));
        if tokio::time::timeout_at(deadline, changed).await.is_err() {
            let (results, _, _) = read_all(&wanted, max_bytes);
            break results;
        }
    };

    let mut responses: Vec<FetchableTopicResponse> = topic_keys
        .iter()
        .map(|(name, id)| {
            FetchableTopicResponse::default().with_topic(TopicName(name.clone().into())).with_topic_id(*id)
        })
        .collect();
    for (w, data) in wanted.iter().zip(results) {
        if let Some(records) = data.records.as_ref().filter(|r| !r.is_empty()) {
            let topic = topic_keys[w.topic].0.clone();
            // Counted from the batch headers; the records themselves are not decoded.
            let count: i64 = protocol::batch::split_batches(records)
                .map(|b| b.iter().map(|(h, _)| h.offset_count()).sum())
                .unwrap_or(0);
            metrics::counter!("quarry_bytes_out_total", "topic" => topic.clone()).increment(records.len() as u64);
            metrics::counter!("quarry_records_out_total", "topic" => topic).increment(count as u64);
        }
        responses[w.topic].partitions.push(data);
    }
    FetchResponse::default().with_responses(responses).with_session_id(0)
}

/// Reads every wanted partition once; returns the partitions' data, the bytes read and
/// whether any partition had an error.
fn read_all(wanted: &[Wanted], max_bytes: usize) -> (Vec<PartitionData>, usize, bool) {
    let mut total = 0usize;
    let mut any_error = false;
    let out = wanted
        .iter()
        .map(|w| {
            let data = PartitionData::default().with_partition_index(w.index);
            let partition = match &w.partition {
                Ok(p) => p,
                Err(code) => {
                    any_error = true;
                    return data.with_error_code(code.code());
                }
            };
            let offsets = partition.offsets();
            let data = data
                .with_high_watermark(offsets.high_watermark)
                .with_last_stable_offset(offsets.high_watermark)
                .with_log_start_offset(offsets.log_start_offset)
                .with_aborted_transactions(Some(Vec::new()));
            if w.offset < offsets.log_start_offset || w.offset > offsets.high_watermark {
                any_error = true;
                return data.with_error_code(ResponseError::OffsetOutOfRange.code());
            }
            // KIP-74: the first partition with data always gets one whole batch; after it,
            // only batches that fit in what is left of the request's max_bytes.
            let first = total == 0;
            let budget = w.max_bytes.min(max_bytes.saturating_sub(total));
            if w.offset == offsets.high_watermark || budget == 0 && !first {
                return data.with_records(Some(Default::default()));
            }
            let mut buf = BytesMut::new();
            match partition.log.read_into(w.offset, offsets.high_watermark, budget.max(1), first, &mut buf) {
                Ok(_) => {
                    total += buf.len();
                    data.with_records(Some(buf.freeze()))
                }
                Err(e) => {
                    any_error = true;
                    tracing::error!(topic = %partition.topic, partition = w.index, error = %e, "fetch read failed");
                    data.with_error_code(storage_code(&e).code())
                }
            }
        })
        .collect();
    (out, total, any_error)
}

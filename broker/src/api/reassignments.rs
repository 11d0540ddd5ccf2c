//! AlterPartitionReassignments and ListPartitionReassignments: moving a partition's
//! replicas to other nodes (what `kafka-reassign-partitions` and admin clients use). The
//! partition's leader adds the new replicas to its raft group, waits until they hold
//! every record, then removes the old ones (`Node::move_replicas`).

use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId,
    ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::{message, Call};
use crate::error::ResponseError;

pub async fn alter(call: &Call, req: AlterPartitionReassignmentsRequest) -> AlterPartitionReassignmentsResponse {
    let node = &call.node;
    let mut responses = Vec::new();
    for topic in req.topics {
        let name = topic.name.0.to_string();
        let mut partitions = Vec::new();
        for p in topic.partitions {
            let outcome = match node.metadata().topics.get(&name) {
                None => Err((ResponseError::UnknownTopicOrPartition, format!("topic {name} does not exist"))),
                Some(t) if p.partition_index < 0 || p.partition_index as usize >= t.partitions.len() => Err((
                    ResponseError::UnknownTopicOrPartition,
                    format!("{name} has no partition {}", p.partition_index),
                )),
                Some(t) => match p.replicas {
                    // A cancellation: refused while the move is under way (its raft group
                    // may already have changed), as there is nothing to cancel otherwise.
                    None if t.moving.contains_key(&(p.partition_index as u32)) => Err((
                        ResponseError::ReassignmentInProgress,
                        "a move under way is finished by the partition's leader; move it again after".into(),
                    )),
                    None => Err((ResponseError::NoReassignmentInProgress, "the partition is not moving".into())),
                    Some(replicas) => {
                        let replicas: Vec<u64> = replicas.iter().map(|b| b.0.max(0) as u64).collect();
                        let current = t.replicas[p.partition_index as usize].len();
                        if !req.allow_replication_factor_change && replicas.len() != current {
                            Err((
                                ResponseError::InvalidReplicationFactor,
                                format!("{} replicas instead of {current}", replicas.len()),
                            ))
                        } else {
                            match node.check_assignment(std::slice::from_ref(&replicas)) {
                                Ok(()) => node.move_replicas(&name, p.partition_index as u32, replicas).await,
                                Err(e) => Err(e),
                            }
                        }
                    }
                },
            };
            let result = ReassignablePartitionResponse::default().with_partition_index(p.partition_index);
            partitions.push(match outcome {
                Ok(()) => result,
                Err((code, m)) => result.with_error_code(code.code()).with_error_message(message(m)),
            });
        }
        responses.push(ReassignableTopicResponse::default().with_name(topic.name).with_partitions(partitions));
    }
    AlterPartitionReassignmentsResponse::default()
        .with_allow_replication_factor_change(req.allow_replication_factor_change)
        .with_responses(responses)
}

pub fn list(call: &Call, req: ListPartitionReassignmentsRequest) -> ListPartitionReassignmentsResponse {
    let metadata = call.node.metadata();
    let ids = |nodes: &mut dyn Iterator<Item = u64>| nodes.map(|id| BrokerId(id as i32)).collect::<Vec<_>>();
    let mut topics = Vec::new();
    for (name, t) in &metadata.topics {
        let wanted: Option<&Vec<i32>> = match &req.topics {
            None => None,
            Some(asked) => match asked.iter().find(|a| a.name.0.as_str() == name) {
                Some(a) => Some(&a.partition_indexes),
                None => continue,
            },
        };
        let partitions: Vec<OngoingPartitionReassignment> = t
            .moving
            .iter()
            .filter(|(index, _)| wanted.is_none_or(|w| w.contains(&(**index as i32))))
            .map(|(index, target)| {
                let current = &t.replicas[*index as usize];
                OngoingPartitionReassignment::default()
                    .with_partition_index(*index as i32)
                    .with_replicas(ids(&mut t.holders(*index as usize).into_iter()))
                    .with_adding_replicas(ids(&mut target.iter().copied().filter(|n| !current.contains(n))))
                    .with_removing_replicas(ids(&mut current.iter().copied().filter(|n| !target.contains(n))))
            })
            .collect();
        if !partitions.is_empty() {
            let name = TopicName(StrBytes::from_string(name.clone()));
            topics.push(OngoingTopicReassignment::default().with_name(name).with_partitions(partitions));
        }
    }
    ListPartitionReassignmentsResponse::default().with_topics(topics)
}

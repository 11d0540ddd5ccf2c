//! Kafka API handlers, one file per API, and the table of what is advertised.

pub mod api_versions;
pub mod configs;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_cluster;
pub mod fetch;
pub mod find_coordinator;
pub mod group_admin;
pub mod groups;
pub mod init_producer_id;
pub mod list_offsets;
pub mod metadata;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod offset_for_leader_epoch;
pub mod produce;
pub mod reassignments;

use std::sync::Arc;

use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::protocol::VersionRange;

use crate::cluster::node::Node;

/// The APIs implemented here. Each is advertised with the full range the codec knows
/// (Apache Kafka 4.1), except Produce, which is advertised from version 0 (see
/// `produce::handle`).
pub const IMPLEMENTED: &[ApiKey] = &[
    ApiKey::Produce,
    ApiKey::Fetch,
    ApiKey::ListOffsets,
    ApiKey::Metadata,
    ApiKey::ApiVersions,
    ApiKey::CreateTopics,
    ApiKey::DeleteTopics,
    ApiKey::DescribeConfigs,
    ApiKey::AlterConfigs,
    ApiKey::CreatePartitions,
    ApiKey::IncrementalAlterConfigs,
    ApiKey::DescribeCluster,
    ApiKey::FindCoordinator,
    ApiKey::OffsetCommit,
    ApiKey::OffsetFetch,
    ApiKey::OffsetDelete,
    ApiKey::JoinGroup,
    ApiKey::SyncGroup,
    ApiKey::Heartbeat,
    ApiKey::LeaveGroup,
    ApiKey::InitProducerId,
    ApiKey::DescribeGroups,
    ApiKey::ListGroups,
    ApiKey::DeleteGroups,
    ApiKey::DeleteRecords,
    ApiKey::OffsetForLeaderEpoch,
    ApiKey::AlterPartitionReassignments,
    ApiKey::ListPartitionReassignments,
];

/// The version range advertised for an API, if it is implemented.
pub fn advertised(key: ApiKey) -> Option<VersionRange> {
    if !IMPLEMENTED.contains(&key) {
        return None;
    }
    let mut range = key.valid_versions();
    if key == ApiKey::Produce {
        range.min = 0;
    }
    Some(range)
}

/// A request with what its handler needs to know about the caller.
pub struct Call {
    pub node: Arc<Node>,
    pub version: i16,
    /// The request header's client id ("" if none) and the peer's address as Kafka shows
    /// it (`/127.0.0.1`): group members are described with them.
    pub client_id: String,
    pub client_host: String,
}

/// Runs one request other than Produce, which the connection hands to
/// [`produce::submit`] in its read loop to keep per-partition order.
pub async fn handle(call: Call, body: RequestKind) -> Option<ResponseKind> {
    let call = &call;
    Some(match body {
        RequestKind::ApiVersions(req) => ResponseKind::ApiVersions(api_versions::handle(call, req)),
        RequestKind::Metadata(req) => ResponseKind::Metadata(metadata::handle(call, req).await),
        RequestKind::Fetch(req) => ResponseKind::Fetch(fetch::handle(call, req).await),
        RequestKind::ListOffsets(req) => ResponseKind::ListOffsets(list_offsets::handle(call, req)),
        RequestKind::CreateTopics(req) => ResponseKind::CreateTopics(create_topics::handle(call, req).await),
        RequestKind::DeleteTopics(req) => ResponseKind::DeleteTopics(delete_topics::handle(call, req).await),
        RequestKind::CreatePartitions(req) => {
            ResponseKind::CreatePartitions(create_partitions::handle(call, req).await)
        }
        RequestKind::DescribeConfigs(req) => ResponseKind::DescribeConfigs(configs::describe(call, req)),
        RequestKind::AlterConfigs(req) => ResponseKind::AlterConfigs(configs::alter(call, req).await),
        RequestKind::IncrementalAlterConfigs(req) => {
            ResponseKind::IncrementalAlterConfigs(configs::incremental_alter(call, req).await)
        }
        RequestKind::DescribeCluster(req) => ResponseKind::DescribeCluster(describe_cluster::handle(call, req)),
        RequestKind::FindCoordinator(req) => ResponseKind::FindCoordinator(find_coordinator::handle(call, req).await),
        RequestKind::OffsetCommit(req) => ResponseKind::OffsetCommit(offset_commit::handle(call, req).await),
        RequestKind::OffsetFetch(req) => ResponseKind::OffsetFetch(offset_fetch::handle(call, req).await),
        RequestKind::OffsetDelete(req) => ResponseKind::OffsetDelete(offset_delete::handle(call, req).await),
        RequestKind::JoinGroup(req) => ResponseKind::JoinGroup(groups::join(call, req).await),
        RequestKind::SyncGroup(req) => ResponseKind::SyncGroup(groups::sync(call, req).await),
        RequestKind::Heartbeat(req) => ResponseKind::Heartbeat(groups::heartbeat(call, req).await),
        RequestKind::LeaveGroup(req) => ResponseKind::LeaveGroup(groups::leave(call, req).await),
        RequestKind::DescribeGroups(req) => ResponseKind::DescribeGroups(group_admin::describe(call, req).await),
        RequestKind::ListGroups(req) => ResponseKind::ListGroups(group_admin::list(call, req).await),
        RequestKind::DeleteGroups(req) => ResponseKind::DeleteGroups(group_admin::delete(call, req).await),
        RequestKind::OffsetForLeaderEpoch(req) => {
            ResponseKind::OffsetForLeaderEpoch(offset_for_leader_epoch::handle(call, req))
        }
        RequestKind::DeleteRecords(req) => ResponseKind::DeleteRecords(delete_records::handle(call, req).await),
        RequestKind::AlterPartitionReassignments(req) => {
            ResponseKind::AlterPartitionReassignments(reassignments::alter(call, req).await)
        }
        RequestKind::ListPartitionReassignments(req) => {
            ResponseKind::ListPartitionReassignments(reassignments::list(call, req))
        }
        RequestKind::InitProducerId(req) => ResponseKind::InitProducerId(init_producer_id::handle(call, req).await),
        other => {
            // Not reachable: Produce goes through `produce::submit`, and the connection
            // refuses APIs that are not advertised before dispatching.
            tracing::error!(request = ?std::mem::discriminant(&other), "request not handled here");
            return None;
        }
    })
}

/// Operations a client may do on a resource, as bits of Kafka's `AclOperation` codes
/// (READ 3, WRITE 4, CREATE 5, DELETE 6, ALTER 7, DESCRIBE 8, CLUSTER_ACTION 9,
/// DESCRIBE_CONFIGS 10, ALTER_CONFIGS 11, IDEMPOTENT_WRITE 12). With no ACLs, as Kafka
/// without an authorizer, every client may do everything the resource type supports.
pub mod operations {
    const fn bits(codes: &[i8]) -> i32 {
        let mut out = 0;
        let mut i = 0;
        while i < codes.len() {
            out |= 1 << codes[i];
            i += 1;
        }
        out
    }
    pub const TOPIC: i32 = bits(&[3, 4, 5, 6, 7, 8, 10, 11]);
    pub const GROUP: i32 = bits(&[3, 6, 8]);
    pub const CLUSTER: i32 = bits(&[5, 7, 8, 9, 10, 11, 12]);
    /// Kafka's "authorized operations not requested".
    pub const NOT_REQUESTED: i32 = i32::MIN;

    /// `operations` if the request asked for them.
    pub fn answer(requested: bool, operations: i32) -> i32 {
        if requested {
            operations
        } else {
            NOT_REQUESTED
        }
    }
}

/// `Some(message)` as the codec's string type.
pub fn message(text: impl Into<String>) -> Option<StrBytes> {
    Some(StrBytes::from_string(text.into()))
}

/// Topic names Kafka accepts: 1-249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn check_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("topic name is empty".into());
    }
    if name == "." || name == ".." {
        return Err(format!("topic name {name:?} is not allowed"));
    }
    if name.len() > 249 {
        return Err(format!("topic name is {} characters long; at most 249 are allowed", name.len()));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(format!(
            "topic name {name:?} contains {c:?}; only ASCII letters, digits, '.', '_' and '-' are allowed"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(check_topic_name("orders.v1_a-b").is_ok());
        assert!(check_topic_name("").is_err());
        assert!(check_topic_name("..").is_err());
        assert!(check_topic_name("a b").is_err());
        assert!(check_topic_name(&"x".repeat(250)).is_err());
    }

    #[test]
    fn produce_is_advertised_from_zero_and_unimplemented_apis_not_at_all() {
        assert_eq!(advertised(ApiKey::Produce).unwrap().min, 0);
        assert_eq!(advertised(ApiKey::JoinGroup).unwrap().min, ApiKey::JoinGroup.valid_versions().min);
        assert!(advertised(ApiKey::AddPartitionsToTxn).is_none());
    }
}

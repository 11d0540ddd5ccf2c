//! DescribeGroups, ListGroups and DeleteGroups.
//!
//! A group exists while the coordinator knows it (members joined since the node started)
//! or while it has committed offsets; a group known only by its offsets is Empty, as in
//! Kafka after its members have gone.

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{
    DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse, GroupId,
    ListGroupsRequest, ListGroupsResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{message, operations, Call};
use crate::cluster::node::OFFSETS_TOPIC;
use crate::cluster::partition::Partition;
use crate::group::coordinator::{GroupSummary, State};

fn str(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// Whether the partition keeps offsets of `group`.
fn has_offsets(p: &Partition, group: &str) -> Result<bool, ResponseError> {
    p.offsets_store.list(group).map(|o| !o.is_empty()).map_err(|e| {
        tracing::error!(group, error = %e, "cannot read committed offsets");
        ResponseError::UnknownServerError
    })
}

/// The group as the coordinator knows it, or as its offsets show it.
async fn summary(call: &Call, group: &str) -> Result<Option<GroupSummary>, ResponseError> {
    let p = call.node.coordinator_for(group).await?;
    if let Some(s) = call.node.groups.describe(group) {
        return Ok(Some(s));
    }
    Ok(has_offsets(&p, group)?.then(|| GroupSummary {
        state: State::Empty,
        protocol_type: String::new(),
        protocol: String::new(),
        members: Vec::new(),
    }))
}

pub async fn describe(call: &Call, req: DescribeGroupsRequest) -> DescribeGroupsResponse {
    let operations = operations::answer(req.include_authorized_operations, operations::GROUP);
    let mut groups = Vec::new();
    for id in req.groups {
        let base = DescribedGroup::default().with_group_id(id.clone()).with_authorized_operations(operations);
        let described = match summary(call, &id).await {
            Err(code) => base.with_error_code(code.code()),
            Ok(None) => {
                // Kafka answers an unknown group as Dead; v6 adds the error.
                let base = base.with_group_state(str(State::Dead.name()));
                if call.version >= 6 {
                    base.with_error_code(ResponseError::GroupIdNotFound.code())
                        .with_error_message(message(format!("group {} does not exist", id.0.as_str())))
                } else {
                    base
                }
            }
            Ok(Some(s)) => base
                .with_group_state(str(s.state.name()))
                .with_protocol_type(str(&s.protocol_type))
                .with_protocol_data(str(&s.protocol))
                .with_members(
                    s.members
                        .into_iter()
                        .map(|m| {
                            DescribedGroupMember::default()
                                .with_member_id(str(&m.member_id))
                                .with_group_instance_id(m.group_instance_id.as_deref().map(str))
                                .with_client_id(str(&m.client_id))
                                .with_client_host(str(&m.client_host))
                                .with_member_metadata(m.metadata)
                                .with_member_assignment(m.assignment)
                        })
                        .collect(),
                ),
        };
        groups.push(described);
    }
    DescribeGroupsResponse::default().with_groups(groups)
}

pub async fn list(call: &Call, req: ListGroupsRequest) -> ListGroupsResponse {
    let node = &call.node;
    // Groups known to the coordinator, then groups that only have offsets.
    let mut found: std::collections::BTreeMap<String, (State, String)> =
        node.groups.list().into_iter().map(|(id, state, protocol_type)| (id, (state, protocol_type))).collect();
    let metadata = node.metadata();
    let offsets_partitions = metadata.topics.get(OFFSETS_TOPIC).map_or(0, |t| t.partitions.len());
    for index in 0..offsets_partitions as i32 {
        let Some(p) = node.partition(OFFSETS_TOPIC, index) else { continue };
        if !p.is_leader() {
            continue;
        }
        match p.offsets_store.groups() {
            Ok(ids) => {
                for id in ids {
                    found.entry(id).or_insert((State::Empty, String::new()));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot list consumer groups with offsets");
                return ListGroupsResponse::default().with_error_code(ResponseError::UnknownServerError.code());
            }
        }
    }
    // v4 filters by state, v5 by type (every group here is a classic one), case aside.
    let wanted =
        |filter: &[StrBytes], value: &str| filter.is_empty() || filter.iter().any(|f| f.eq_ignore_ascii_case(value));
    let groups = found
        .into_iter()
        .filter(|(_, (state, _))| wanted(&req.states_filter, state.name()))
        .filter(|_| wanted(&req.types_filter, "classic"))
        .map(|(id, (state, protocol_type))| {
            ListedGroup::default()
                .with_group_id(GroupId(str(&id)))
                .with_protocol_type(str(&protocol_type))
                .with_group_state(str(state.name()))
                .with_group_type(str("classic"))
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}

pub async fn delete(call: &Call, req: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let mut results = Vec::new();
    for id in req.groups_names {
        let result = call.node.delete_group(&id).await;
        results.push(
            DeletableGroupResult::default().with_group_id(id).with_error_code(result.err().map_or(0, |e| e.code())),
        );
    }
    DeleteGroupsResponse::default().with_results(results)
}

//! JoinGroup, SyncGroup, Heartbeat and LeaveGroup: the classic group protocol, answered by
//! the node's group service (`crate::group`) for groups whose offsets partition is led
//! here.

use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse,
    SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::Call;
use crate::group::coordinator::{JoinRequest, Protocol, SyncRequest};

fn str(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// Whether this node coordinates `group`.
async fn coordinates(call: &Call, group: &str) -> Result<(), ResponseError> {
    call.node.coordinator_for(group).await.map(|_| ())
}

pub async fn join(call: &Call, req: JoinGroupRequest) -> JoinGroupResponse {
    let group = req.group_id.0.to_string();
    // Before v7 the protocol name is a plain string, never null.
    let name = |n: Option<String>| match (n, call.version >= 7) {
        (Some(n), _) => Some(str(&n)),
        (None, true) => None,
        (None, false) => Some(StrBytes::default()),
    };
    if let Err(e) = coordinates(call, &group).await {
        return JoinGroupResponse::default()
            .with_error_code(e.code())
            .with_generation_id(-1)
            .with_member_id(req.member_id)
            .with_protocol_name(name(None));
    }
    let session = req.session_timeout_ms.max(0) as u64;
    // v0 has no rebalance timeout: Kafka uses the session timeout.
    let rebalance = if call.version >= 1 { req.rebalance_timeout_ms.max(0) as u64 } else { session };
    let resp = call
        .node
        .groups
        .join(JoinRequest {
            group_id: group,
            member_id: req.member_id.to_string(),
            group_instance_id: req.group_instance_id.map(|i| i.to_string()),
            client_id: call.client_id.clone(),
            client_host: call.client_host.clone(),
            session_timeout_ms: session,
            rebalance_timeout_ms: rebalance,
            protocol_type: req.protocol_type.to_string(),
            protocols: req
                .protocols
                .into_iter()
                .map(|p| Protocol { name: p.name.to_string(), metadata: p.metadata })
                .collect(),
            require_known_member_id: call.version >= 4,
            supports_skip_assignment: call.version >= 9,
        })
        .await;
    JoinGroupResponse::default()
        .with_error_code(resp.error.map_or(0, |e| e.code()))
        .with_generation_id(resp.generation_id)
        .with_protocol_type(resp.protocol_type.as_deref().map(str))
        .with_protocol_name(name(resp.protocol_name))
        .with_leader(str(&resp.leader))
        // Only v9+ has the field; the coordinator never sets it for older versions.
        .with_skip_assignment(resp.skip_assignment && call.version >= 9)
        .with_member_id(str(&resp.member_id))
        .with_members(
            resp.members
                .into_iter()
                .map(|m| {
                    JoinGroupResponseMember::default()
                        .with_member_id(str(&m.member_id))
                        .with_group_instance_id(m.group_instance_id.as_deref().map(str))
                        .with_metadata(m.metadata)
                })
                .collect(),
        )
}

pub async fn sync(call: &Call, req: SyncGroupRequest) -> SyncGroupResponse {
    let group = req.group_id.0.to_string();
    if let Err(e) = coordinates(call, &group).await {
        return SyncGroupResponse::default().with_error_code(e.code());
    }
    let resp = call
        .node
        .groups
        .sync(SyncRequest {
            group_id: group,
            generation_id: req.generation_id,
            member_id: req.member_id.to_string(),
            group_instance_id: req.group_instance_id.map(|i| i.to_string()),
            protocol_type: req.protocol_type.map(|t| t.to_string()),
            protocol_name: req.protocol_name.map(|n| n.to_string()),
            assignments: req.assignments.into_iter().map(|a| (a.member_id.to_string(), a.assignment)).collect(),
        })
        .await;
    SyncGroupResponse::default()
        .with_error_code(resp.error.map_or(0, |e| e.code()))
        .with_protocol_type(resp.protocol_type.as_deref().map(str))
        .with_protocol_name(resp.protocol_name.as_deref().map(str))
        .with_assignment(resp.assignment)
}

pub async fn heartbeat(call: &Call, req: HeartbeatRequest) -> HeartbeatResponse {
    let group = req.group_id.0.to_string();
    let error = match coordinates(call, &group).await {
        Err(e) => Some(e),
        Ok(()) => {
            call.node.groups.heartbeat(&group, &req.member_id, req.group_instance_id.as_deref(), req.generation_id)
        }
    };
    HeartbeatResponse::default().with_error_code(error.map_or(0, |e| e.code()))
}

pub async fn leave(call: &Call, req: LeaveGroupRequest) -> LeaveGroupResponse {
    let group = req.group_id.0.to_string();
    if let Err(e) = coordinates(call, &group).await {
        return LeaveGroupResponse::default().with_error_code(e.code());
    }
    // v0-2 name one member; v3+ a list, by member id or instance id.
    let members: Vec<(String, Option<String>)> = if call.version >= 3 {
        req.members
            .iter()
            .map(|m| (m.member_id.to_string(), m.group_instance_id.as_deref().map(str::to_string)))
            .collect()
    } else {
        vec![(req.member_id.to_string(), None)]
    };
    let errors = call.node.groups.leave(&group, &members);
    if call.version < 3 {
        return LeaveGroupResponse::default()
            .with_error_code(errors.first().copied().flatten().map_or(0, |e| e.code()));
    }
    LeaveGroupResponse::default().with_members(
        members
            .into_iter()
            .zip(errors)
            .map(|((member, instance), error)| {
                MemberResponse::default()
                    .with_member_id(str(&member))
                    .with_group_instance_id(instance.as_deref().map(str))
                    .with_error_code(error.map_or(0, |e| e.code()))
            })
            .collect(),
    )
}

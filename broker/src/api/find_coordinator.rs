//! FindCoordinator: the node leading the `__consumer_offsets` partition a group hashes
//! to, the topic made on first use. v4+ asks for several
//! keys at once. Transactions are not implemented: a transaction coordinator is refused
//! with TRANSACTIONAL_ID_AUTHORIZATION_FAILED, an error clients treat as fatal, so
//! `init_transactions()` fails at once rather than retrying until its timeout.

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{message, Call};

const GROUP: i8 = 0;
const TRANSACTION: i8 = 1;

pub async fn handle(call: &Call, req: FindCoordinatorRequest) -> FindCoordinatorResponse {
    let node = &call.node;
    let keys = if call.version >= 4 { req.coordinator_keys.clone() } else { vec![req.key.clone()] };
    let mut coordinators = Vec::new();
    for key in keys {
        let found = match req.key_type {
            GROUP => node.coordinator_node(&key).await.map_err(|code| {
                let why = match code {
                    ResponseError::InvalidGroupId => "the group id is empty",
                    ResponseError::NotCoordinator => "this node does not lead the group's partition",
                    _ => "the offsets topic is not available",
                };
                (code, why)
            }),
            TRANSACTION => Err((ResponseError::TransactionalIdAuthorizationFailed, "transactions are not supported")),
            _ => Err((ResponseError::InvalidRequest, "unknown coordinator key type")),
        };
        let found = found.and_then(|id| {
            let (host, port) = node.broker_address(id).ok_or((
                ResponseError::CoordinatorNotAvailable,
                "the coordinating node has not registered its address",
            ))?;
            Ok((id, host, port))
        });
        coordinators.push(match found {
            Ok((id, host, port)) => Coordinator::default()
                .with_key(key)
                .with_node_id(BrokerId(id as i32))
                .with_host(StrBytes::from_string(host))
                .with_port(port),
            Err((code, why)) => Coordinator::default()
                .with_key(key)
                .with_node_id(BrokerId(-1))
                .with_host(StrBytes::default())
                .with_port(-1)
                .with_error_code(code.code())
                .with_error_message(message(why)),
        });
    }
    if call.version >= 4 {
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let c = coordinators.pop().unwrap_or_default();
    FindCoordinatorResponse::default()
        .with_error_code(c.error_code)
        .with_error_message(c.error_message)
        .with_node_id(c.node_id)
        .with_host(c.host)
        .with_port(c.port)
}

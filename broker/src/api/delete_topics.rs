//! DeleteTopics, by name (v0-5) or topic id (v6+).

use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse, TopicName};
use uuid::Uuid;

use super::{message, Call};
use crate::error::ResponseError;

pub async fn handle(call: &Call, req: DeleteTopicsRequest) -> DeleteTopicsResponse {
    let node = &call.node;
    let mut targets: Vec<(Option<String>, Uuid)> =
        req.topic_names.iter().map(|n| (Some(n.0.to_string()), Uuid::nil())).collect();
    targets.extend(req.topics.iter().map(|t| (t.name.as_ref().map(|n| n.0.to_string()), t.topic_id)));
    let mut responses = Vec::new();
    for (name, id) in targets {
        let metadata = node.metadata();
        let resolved = match &name {
            Some(n) => metadata.topics.get(n).map(|t| (n.clone(), Uuid::from_bytes(t.id))),
            None => metadata.topic_by_id(id.as_bytes()).map(|(n, t)| (n.clone(), Uuid::from_bytes(t.id))),
        };
        let result =
            DeletableTopicResult::default().with_name(name.clone().map(|n| TopicName(n.into()))).with_topic_id(id);
        let result = match resolved {
            None => {
                let code =
                    if name.is_some() { ResponseError::UnknownTopicOrPartition } else { ResponseError::UnknownTopicId };
                result.with_error_code(code.code())
            }
            Some((n, topic_id)) => {
                let result = result.with_name(Some(TopicName(n.clone().into()))).with_topic_id(topic_id);
                match node.delete_topic(&n).await {
                    Ok(()) => result,
                    Err((code, msg)) => result.with_error_code(code.code()).with_error_message(message(msg)),
                }
            }
        };
        responses.push(result);
    }
    DeleteTopicsResponse::default().with_responses(responses)
}

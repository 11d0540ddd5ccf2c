//! CreatePartitions: grow a topic's partition count.

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};

use super::{message, Call};
use crate::error::ResponseError;

pub async fn handle(call: &Call, req: CreatePartitionsRequest) -> CreatePartitionsResponse {
    let node = &call.node;
    let mut results = Vec::new();
    for topic in req.topics {
        let name = topic.name.0.to_string();
        let result = CreatePartitionsTopicResult::default().with_name(topic.name.clone());
        let current = node.metadata().topics.get(&name).map(|t| t.partitions.len() as i32);
        let outcome = match current {
            None => Err((ResponseError::UnknownTopicOrPartition, format!("topic {name} does not exist"))),
            Some(n) if topic.count <= n => Err((
                ResponseError::InvalidPartitions,
                format!("topic {name} has {n} partitions; the new count {} must be larger", topic.count),
            )),
            Some(_) if req.validate_only => Ok(()),
            Some(_) => node.create_partitions(&name, topic.count as u32).await,
        };
        results.push(match outcome {
            Ok(()) => result,
            Err((code, msg)) => result.with_error_code(code.code()).with_error_message(message(msg)),
        });
    }
    CreatePartitionsResponse::default().with_results(results)
}

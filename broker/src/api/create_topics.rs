//! CreateTopics, with validate-only, config validation and topic name rules.

use std::collections::BTreeMap;

use kafka_protocol::messages::create_topics_response::{CreatableTopicConfigs, CreatableTopicResult};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::{check_topic_name, message, Call};
use crate::error::ResponseError;
use crate::topic_config;

/// DescribeConfigs' source codes, shared with CreateTopics v5+.
pub const SOURCE_TOPIC: i8 = 1;
pub const SOURCE_DEFAULT: i8 = 5;

pub async fn handle(call: &Call, req: CreateTopicsRequest) -> CreateTopicsResponse {
    let node = &call.node;
    let mut results = Vec::new();
    for topic in req.topics {
        let name = topic.name.0.to_string();
        let result = CreatableTopicResult::default().with_name(topic.name.clone());
        let outcome = async {
            check_topic_name(&name).map_err(|m| (ResponseError::InvalidTopicException, m))?;
            if node.metadata().topics.contains_key(&name) {
                return Err((ResponseError::TopicAlreadyExists, format!("topic {name} already exists")));
            }
            let replicas = if !topic.assignments.is_empty() {
                if topic.num_partitions != -1 || topic.replication_factor != -1 {
                    return Err((
                        ResponseError::InvalidRequest,
                        "num_partitions and replication_factor must be -1 when assignments are given".into(),
                    ));
                }
                let mut assignments: Vec<_> = topic.assignments.iter().collect();
                assignments.sort_by_key(|a| a.partition_index);
                if assignments.iter().enumerate().any(|(i, a)| a.partition_index != i as i32) {
                    return Err((
                        ResponseError::InvalidReplicaAssignment,
                        "assignments must cover partitions 0 to n-1, each once".into(),
                    ));
                }
                let replicas: Vec<Vec<u64>> =
                    assignments.iter().map(|a| a.broker_ids.iter().map(|b| b.0.max(-1) as u64).collect()).collect();
                node.check_assignment(&replicas)?;
                replicas
            } else {
                let partitions =
                    if topic.num_partitions == -1 { node.config.num_partitions as i32 } else { topic.num_partitions };
                if partitions <= 0 {
                    return Err((
                        ResponseError::InvalidPartitions,
                        format!("number of partitions must be at least 1, not {partitions}"),
                    ));
                }
                let factor = match topic.replication_factor {
                    -1 => None,
                    rf if rf <= 0 => {
                        return Err((
                            ResponseError::InvalidReplicationFactor,
                            format!("replication factor must be at least 1, not {rf}"),
                        ))
                    }
                    rf => Some(rf as usize),
                };
                node.assign(partitions as u32, factor)?
            };
            let mut configs = BTreeMap::new();
            for c in &topic.configs {
                let key = c.name.to_string();
                let Some(value) = &c.value else {
                    return Err((ResponseError::InvalidConfig, format!("config {key} has a null value")));
                };
                topic_config::validate(&key, value).map_err(|m| (ResponseError::InvalidConfig, m))?;
                configs.insert(key, value.to_string());
            }
            Ok((replicas, configs))
        }
        .await;
        let result = match outcome {
            Err((code, msg)) => result
                .with_error_code(code.code())
                .with_error_message(message(msg))
                .with_num_partitions(-1)
                .with_replication_factor(-1),
            Ok((replicas, configs)) => {
                let described = describe(node, &configs);
                let (partitions, factor) = (replicas.len() as i32, replicas[0].len() as i16);
                let created = if req.validate_only {
                    Ok(Uuid::nil())
                } else {
                    node.create_placed_topic(&name, replicas, configs)
                        .await
                        .map(|()| node.metadata().topics.get(&name).map(|t| Uuid::from_bytes(t.id)).unwrap_or_default())
                };
                match created {
                    Ok(id) => result
                        .with_topic_id(id)
                        .with_num_partitions(partitions)
                        .with_replication_factor(factor)
                        .with_configs(Some(described)),
                    Err((code, msg)) => result
                        .with_error_code(code.code())
                        .with_error_message(message(msg))
                        .with_num_partitions(-1)
                        .with_replication_factor(-1),
                }
            }
        };
        results.push(result);
    }
    CreateTopicsResponse::default().with_topics(results)
}

/// Every topic config with its value and source, for the CreateTopics v5+ response.
fn describe(node: &crate::cluster::node::Node, set: &BTreeMap<String, String>) -> Vec<CreatableTopicConfigs> {
    topic_config::names()
        .map(|name| {
            let (value, source) = match set.get(name) {
                Some(v) => (v.clone(), SOURCE_TOPIC),
                None => (topic_config::default_value(&node.config, name).unwrap_or_default(), SOURCE_DEFAULT),
            };
            CreatableTopicConfigs::default()
                .with_name(StrBytes::from_static_str(name))
                .with_value(Some(StrBytes::from_string(value)))
                .with_config_source(source)
        })
        .collect()
}

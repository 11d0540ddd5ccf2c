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
            let partitions = if !topic.assignments.is_empty() {
                if topic.num_partitions != -1 || topic.replication_factor != -1 {
                    return Err((
                        ResponseError::InvalidRequest,
                        "num_partitions and replication_factor must be -1 when assignments are given".into(),
                    ));
                }
                for a in &topic.assignments {
                    if a.broker_ids.iter().any(|b| b.0 as u64 != node.config.node_id) || a.broker_ids.len() != 1 {
                        return Err((
                            ResponseError::InvalidReplicaAssignment,
                            format!("partition {} is assigned to brokers that do not exist", a.partition_index),
                        ));
                    }
                }
                topic.assignments.len() as i32
            } else if topic.num_partitions == -1 {
                node.config.num_partitions as i32
            } else {
                topic.num_partitions
            };
            if partitions <= 0 {
                return Err((
                    ResponseError::InvalidPartitions,
                    format!("number of partitions must be at least 1, not {partitions}"),
                ));
            }
            let rf = topic.replication_factor;
            if rf != -1 && rf != 1 {
                return Err((
                    ResponseError::InvalidReplicationFactor,
                    format!("replication factor {rf} is invalid: this cluster has 1 broker"),
                ));
            }
            let mut configs = BTreeMap::new();
            for c in &topic.configs {
                let key = c.name.to_string();
                let Some(value) = &c.value else {
                    return Err((ResponseError::InvalidConfig, format!("config {key} has a null value")));
                };
                topic_config::validate(&key, value).map_err(|m| (ResponseError::InvalidConfig, m))?;
                configs.insert(key, value.to_string());
            }
            Ok((partitions, configs))
        }
        .await;
        let result = match outcome {
            Err((code, msg)) => result
                .with_error_code(code.code())
                .with_error_message(message(msg))
                .with_num_partitions(-1)
                .with_replication_factor(-1),
            Ok((partitions, configs)) => {
                let described = describe(node, &configs);
                let created = if req.validate_only {
                    Ok(Uuid::nil())
                } else {
                    node.create_topic(&name, partitions as u32, configs)
                        .await
                        .map(|()| node.metadata().topics.get(&name).map(|t| Uuid::from_bytes(t.id)).unwrap_or_default())
                };
                match created {
                    Ok(id) => result
                        .with_topic_id(id)
                        .with_num_partitions(partitions)
                        .with_replication_factor(1)
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

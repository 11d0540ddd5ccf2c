//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs for topics (and a read-only
//! view of broker configs).

use std::collections::BTreeMap;

use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::create_topics::{SOURCE_DEFAULT, SOURCE_TOPIC};
use super::{message, Call};
use crate::cluster::controller::ControllerCmd;
use crate::cluster::node::{AdminError, Node};
use crate::error::ResponseError;
use crate::topic_config;

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
const SOURCE_STATIC_BROKER: i8 = 4;

pub fn describe(call: &Call, req: DescribeConfigsRequest) -> DescribeConfigsResponse {
    let node = &call.node;
    let results = req
        .resources
        .into_iter()
        .map(|r| {
            let result = DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            let wanted =
                |name: &str| r.configuration_keys.as_ref().is_none_or(|keys| keys.iter().any(|k| k.as_str() == name));
            match r.resource_type {
                RESOURCE_TOPIC => {
                    let Some(topic) = node.metadata().topics.get(r.resource_name.as_str()).cloned() else {
                        return result
                            .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                            .with_error_message(message(format!("topic {} does not exist", r.resource_name.as_str())));
                    };
                    let configs = topic_config::names()
                        .filter(|n| wanted(n))
                        .map(|name| {
                            let default = topic_config::default_value(&node.config, name).unwrap_or_default();
                            let (value, source) = match topic.configs.get(name) {
                                Some(v) => (v.clone(), SOURCE_TOPIC),
                                None => (default.clone(), SOURCE_DEFAULT),
                            };
                            let mut synonyms = Vec::new();
                            if req.include_synonyms {
                                if source == SOURCE_TOPIC {
                                    synonyms.push(synonym(name, &value, SOURCE_TOPIC));
                                }
                                if let Some(broker_name) = topic_config::broker_synonym(name) {
                                    synonyms.push(synonym(broker_name, &default, SOURCE_STATIC_BROKER));
                                }
                            }
                            DescribeConfigsResourceResult::default()
                                .with_name(StrBytes::from_static_str(name))
                                .with_value(Some(StrBytes::from_string(value)))
                                .with_config_source(source)
                                .with_is_sensitive(topic_config::is_sensitive(name))
                                .with_synonyms(synonyms)
                        })
                        .collect();
                    result.with_configs(configs)
                }
                RESOURCE_BROKER => {
                    if r.resource_name.as_str() != node.config.node_id.to_string() && !r.resource_name.is_empty() {
                        return result.with_error_code(ResponseError::InvalidRequest.code()).with_error_message(
                            message(format!("broker {} is not this node", r.resource_name.as_str())),
                        );
                    }
                    let configs = broker_configs(node)
                        .into_iter()
                        .filter(|(n, _)| wanted(n))
                        .map(|(name, value)| {
                            DescribeConfigsResourceResult::default()
                                .with_name(StrBytes::from_static_str(name))
                                .with_value(Some(StrBytes::from_string(value)))
                                .with_read_only(true)
                                .with_config_source(SOURCE_STATIC_BROKER)
                        })
                        .collect();
                    result.with_configs(configs)
                }
                other => result
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(message(format!("resource type {other} is not supported"))),
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

fn synonym(name: &str, value: &str, source: i8) -> DescribeConfigsSynonym {
    DescribeConfigsSynonym::default()
        .with_name(StrBytes::from_string(name.to_string()))
        .with_value(Some(StrBytes::from_string(value.to_string())))
        .with_source(source)
}

fn broker_configs(node: &Node) -> Vec<(&'static str, String)> {
    let c = &node.config;
    vec![
        ("auto.create.topics.enable", c.auto_create_topics_enable.to_string()),
        ("broker.id", c.node_id.to_string()),
        ("log.cleanup.policy", c.log_cleanup_policy.clone()),
        ("log.message.timestamp.type", c.log_message_timestamp_type.clone()),
        ("log.retention.bytes", c.log_retention_bytes.to_string()),
        ("log.retention.check.interval.ms", c.log_retention_check_interval_ms.to_string()),
        ("log.retention.ms", c.log_retention_ms.to_string()),
        ("message.max.bytes", c.message_max_bytes.to_string()),
        ("min.insync.replicas", c.min_insync_replicas.to_string()),
        ("num.partitions", c.num_partitions.to_string()),
        ("replica.lag.time.max.ms", c.replica_lag_time_max_ms.to_string()),
        ("socket.request.max.bytes", c.socket_request_max_bytes.to_string()),
    ]
}

/// A requested change to one config of a topic.
enum Change {
    Set(String, String),
    Delete(String),
    Append(String, String),
    Subtract(String, String),
}

/// Applies changes to a topic's configs (all or nothing) and writes them through the
/// controller unless `validate_only`.
async fn change_topic(
    node: &Node,
    name: &str,
    replace: bool,
    changes: Vec<Change>,
    validate_only: bool,
) -> Result<(), AdminError> {
    let Some(topic) = node.metadata().topics.get(name).cloned() else {
        return Err((ResponseError::UnknownTopicOrPartition, format!("topic {name} does not exist")));
    };
    let mut configs: BTreeMap<String, String> = if replace { BTreeMap::new() } else { topic.configs.clone() };
    let current = |configs: &BTreeMap<String, String>, key: &str| {
        configs.get(key).cloned().or_else(|| topic_config::default_value(&node.config, key)).unwrap_or_default()
    };
    for change in changes {
        match change {
            Change::Set(k, v) => {
                configs.insert(k, v);
            }
            Change::Delete(k) => {
                configs.remove(&k);
            }
            Change::Append(k, v) => {
                let mut list: Vec<String> =
                    current(&configs, &k).split(',').filter(|s| !s.is_empty()).map(str::to_string).collect();
                for item in v.split(',') {
                    if !list.iter().any(|x| x == item) {
                        list.push(item.to_string());
                    }
                }
                configs.insert(k, list.join(","));
            }
            Change::Subtract(k, v) => {
                let remove: Vec<&str> = v.split(',').collect();
                let list: Vec<String> = current(&configs, &k)
                    .split(',')
                    .filter(|s| !s.is_empty() && !remove.contains(s))
                    .map(str::to_string)
                    .collect();
                configs.insert(k, list.join(","));
            }
        }
    }
    for (k, v) in &configs {
        topic_config::validate(k, v).map_err(|m| (ResponseError::InvalidConfig, m))?;
    }
    if validate_only {
        return Ok(());
    }
    node.write(ControllerCmd::SetTopicConfigs { name: name.to_string(), configs }).await
}

fn outcome(resource_type: i8, resource_name: StrBytes, r: Result<(), AdminError>) -> AlterConfigsResourceResponse {
    let resp =
        AlterConfigsResourceResponse::default().with_resource_type(resource_type).with_resource_name(resource_name);
    match r {
        Ok(()) => resp,
        Err((code, msg)) => resp.with_error_code(code.code()).with_error_message(message(msg)),
    }
}

/// Alters one resource: topics take `changes` (already parsed from the request); broker
/// configs are read-only here.
async fn alter_resource(
    node: &Node,
    resource_type: i8,
    name: &str,
    replace: bool,
    changes: Result<Vec<Change>, AdminError>,
    validate_only: bool,
) -> Result<(), AdminError> {
    match resource_type {
        RESOURCE_TOPIC => change_topic(node, name, replace, changes?, validate_only).await,
        RESOURCE_BROKER => Err((
            ResponseError::InvalidRequest,
            "broker configs are read from the config file and cannot be altered at run time".into(),
        )),
        other => Err((ResponseError::InvalidRequest, format!("resource type {other} is not supported"))),
    }
}

/// AlterConfigs: replaces a topic's whole set of configs.
pub async fn alter(call: &Call, req: AlterConfigsRequest) -> AlterConfigsResponse {
    let mut responses = Vec::new();
    for r in req.resources {
        let changes = r
            .configs
            .into_iter()
            .map(|c| match c.value {
                Some(v) => Ok(Change::Set(c.name.to_string(), v.to_string())),
                None => Err((ResponseError::InvalidConfig, format!("config {} has a null value", c.name.as_str()))),
            })
            .collect();
        let result =
            alter_resource(&call.node, r.resource_type, r.resource_name.as_str(), true, changes, req.validate_only)
                .await;
        responses.push(outcome(r.resource_type, r.resource_name, result));
    }
    AlterConfigsResponse::default().with_responses(responses)
}

/// IncrementalAlterConfigs: SET, DELETE, APPEND and SUBTRACT on single configs.
pub async fn incremental_alter(call: &Call, req: IncrementalAlterConfigsRequest) -> IncrementalAlterConfigsResponse {
    let mut responses = Vec::new();
    for r in req.resources {
        let changes = r
            .configs
            .into_iter()
            .map(|c| {
                let name = c.name.to_string();
                match (c.config_operation, c.value.map(|v| v.to_string())) {
                    (0, Some(v)) => Ok(Change::Set(name, v)),
                    (1, _) => Ok(Change::Delete(name)),
                    (2, Some(v)) => Ok(Change::Append(name, v)),
                    (3, Some(v)) => Ok(Change::Subtract(name, v)),
                    (op, _) => Err((ResponseError::InvalidConfig, format!("operation {op} on {name} needs a value"))),
                }
            })
            .collect();
        let result =
            alter_resource(&call.node, r.resource_type, r.resource_name.as_str(), false, changes, req.validate_only)
                .await;
        let resp = outcome(r.resource_type, r.resource_name, result);
        responses.push(
            kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                .with_error_code(resp.error_code)
                .with_error_message(resp.error_message)
                .with_resource_type(resp.resource_type)
                .with_resource_name(resp.resource_name),
        );
    }
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

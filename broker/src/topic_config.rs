//! Topic configs: which Kafka topic configs exist, their defaults, and validation.
//!
//! Some have behaviour here (retention, size limits, timestamps, cleanup policy,
//! min.insync.replicas); the other Kafka topic configs are accepted and stored so that
//! clients and tools that set them keep working, and are reported by DescribeConfigs
//! like any other.

use std::collections::BTreeMap;

use crate::config::Config;

/// How a config's value is checked.
#[derive(Clone, Copy)]
enum Kind {
    Long {
        min: i64,
    },
    Int {
        min: i64,
    },
    Bool,
    OneOf(&'static [&'static str]),
    /// Comma-separated list of the given values.
    ListOf(&'static [&'static str]),
    Ratio,
}

struct Def {
    name: &'static str,
    kind: Kind,
    /// Kafka's default, for configs without a broker-level setting here.
    default: &'static str,
}

const TIMESTAMP_TYPES: &[&str] = &["CreateTime", "LogAppendTime"];
const CLEANUP_POLICIES: &[&str] = &["delete", "compact"];
const COMPRESSION_TYPES: &[&str] = &["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"];

const DEFS: &[Def] = &[
    Def { name: "cleanup.policy", kind: Kind::ListOf(CLEANUP_POLICIES), default: "delete" },
    Def { name: "compression.type", kind: Kind::OneOf(COMPRESSION_TYPES), default: "producer" },
    Def { name: "delete.retention.ms", kind: Kind::Long { min: 0 }, default: "86400000" },
    Def { name: "file.delete.delay.ms", kind: Kind::Long { min: 0 }, default: "60000" },
    Def { name: "flush.messages", kind: Kind::Long { min: 1 }, default: "9223372036854775807" },
    Def { name: "flush.ms", kind: Kind::Long { min: 0 }, default: "9223372036854775807" },
    Def { name: "index.interval.bytes", kind: Kind::Int { min: 0 }, default: "4096" },
    Def { name: "local.retention.bytes", kind: Kind::Long { min: -2 }, default: "-2" },
    Def { name: "local.retention.ms", kind: Kind::Long { min: -2 }, default: "-2" },
    Def { name: "max.compaction.lag.ms", kind: Kind::Long { min: 1 }, default: "9223372036854775807" },
    Def { name: "max.message.bytes", kind: Kind::Int { min: 0 }, default: "1048588" },
    Def { name: "message.timestamp.after.max.ms", kind: Kind::Long { min: 0 }, default: "3600000" },
    Def { name: "message.timestamp.before.max.ms", kind: Kind::Long { min: 0 }, default: "9223372036854775807" },
    Def { name: "message.timestamp.type", kind: Kind::OneOf(TIMESTAMP_TYPES), default: "CreateTime" },
    Def { name: "min.cleanable.dirty.ratio", kind: Kind::Ratio, default: "0.5" },
    Def { name: "min.compaction.lag.ms", kind: Kind::Long { min: 0 }, default: "0" },
    Def { name: "min.insync.replicas", kind: Kind::Int { min: 1 }, default: "1" },
    Def { name: "preallocate", kind: Kind::Bool, default: "false" },
    Def { name: "remote.storage.enable", kind: Kind::Bool, default: "false" },
    Def { name: "retention.bytes", kind: Kind::Long { min: -1 }, default: "-1" },
    Def { name: "retention.ms", kind: Kind::Long { min: -1 }, default: "604800000" },
    Def { name: "segment.bytes", kind: Kind::Int { min: 14 }, default: "1073741824" },
    Def { name: "segment.index.bytes", kind: Kind::Int { min: 4 }, default: "10485760" },
    Def { name: "segment.jitter.ms", kind: Kind::Long { min: 0 }, default: "0" },
    Def { name: "segment.ms", kind: Kind::Long { min: 1 }, default: "604800000" },
    Def { name: "unclean.leader.election.enable", kind: Kind::Bool, default: "false" },
];

fn def(name: &str) -> Option<&'static Def> {
    DEFS.iter().find(|d| d.name == name)
}

/// Checks one topic config; the error says why it is invalid.
pub fn validate(name: &str, value: &str) -> Result<(), String> {
    let d = def(name).ok_or_else(|| format!("unknown topic config {name}"))?;
    let number = |min: i64, max: i64| -> Result<(), String> {
        let v: i64 = value.trim().parse().map_err(|_| format!("{name} must be a number, not {value:?}"))?;
        if v < min || v > max {
            return Err(format!("{name} must be between {min} and {max}, not {v}"));
        }
        Ok(())
    };
    match d.kind {
        Kind::Long { min } => number(min, i64::MAX),
        Kind::Int { min } => number(min, i32::MAX as i64),
        Kind::Bool => match value.trim() {
            "true" | "false" => Ok(()),
            _ => Err(format!("{name} must be true or false, not {value:?}")),
        },
        Kind::OneOf(allowed) => {
            if allowed.contains(&value.trim()) {
                Ok(())
            } else {
                Err(format!("{name} must be one of {}, not {value:?}", allowed.join(", ")))
            }
        }
        Kind::ListOf(allowed) => {
            for part in value.split(',') {
                if !allowed.contains(&part.trim()) {
                    return Err(format!("{name} must be a list of {}, not {value:?}", allowed.join(", ")));
                }
            }
            Ok(())
        }
        Kind::Ratio => match value.trim().parse::<f64>() {
            Ok(v) if (0.0..=1.0).contains(&v) => Ok(()),
            _ => Err(format!("{name} must be a number from 0 to 1, not {value:?}")),
        },
    }
}

/// The broker config key that sets a topic config's default, where there is one.
pub fn broker_key(name: &str) -> &'static str {
    match name {
        "retention.ms" => "log_retention_ms",
        "retention.bytes" => "log_retention_bytes",
        "cleanup.policy" => "log_cleanup_policy",
        "max.message.bytes" => "message_max_bytes",
        "message.timestamp.type" => "log_message_timestamp_type",
        "min.insync.replicas" => "min_insync_replicas",
        _ => "",
    }
}

/// The Kafka broker config name behind a topic config's default (for DescribeConfigs
/// synonyms).
pub fn broker_synonym(name: &str) -> Option<&'static str> {
    match name {
        "retention.ms" => Some("log.retention.ms"),
        "retention.bytes" => Some("log.retention.bytes"),
        "cleanup.policy" => Some("log.cleanup.policy"),
        "max.message.bytes" => Some("message.max.bytes"),
        "message.timestamp.type" => Some("log.message.timestamp.type"),
        "min.insync.replicas" => Some("min.insync.replicas"),
        _ => None,
    }
}

/// The default value of a topic config on this broker.
pub fn default_value(config: &Config, name: &str) -> Option<String> {
    Some(match name {
        "retention.ms" => config.log_retention_ms.to_string(),
        "retention.bytes" => config.log_retention_bytes.to_string(),
        "cleanup.policy" => config.log_cleanup_policy.clone(),
        "max.message.bytes" => config.message_max_bytes.to_string(),
        "message.timestamp.type" => config.log_message_timestamp_type.clone(),
        "min.insync.replicas" => config.min_insync_replicas.to_string(),
        other => def(other)?.default.to_string(),
    })
}

/// Every topic config name, sorted.
pub fn names() -> impl Iterator<Item = &'static str> {
    DEFS.iter().map(|d| d.name)
}

/// Whether the config is sensitive (none of the topic configs are).
pub fn is_sensitive(_name: &str) -> bool {
    false
}

/// A topic's effective settings that change broker behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicSettings {
    pub retention_ms: i64,
    pub retention_bytes: i64,
    pub max_message_bytes: i64,
    pub log_append_time: bool,
    pub compact: bool,
    pub delete: bool,
    pub segment_bytes: i64,
    pub min_insync_replicas: i64,
}

impl TopicSettings {
    pub fn resolve(config: &Config, set: &BTreeMap<String, String>) -> TopicSettings {
        let get = |name: &str| set.get(name).cloned().or_else(|| default_value(config, name)).unwrap_or_default();
        let long = |name: &str, fallback: i64| get(name).trim().parse().unwrap_or(fallback);
        let policy = get("cleanup.policy");
        TopicSettings {
            retention_ms: long("retention.ms", 604_800_000),
            retention_bytes: long("retention.bytes", -1),
            max_message_bytes: long("max.message.bytes", 1_048_588),
            log_append_time: get("message.timestamp.type").trim() == "LogAppendTime",
            compact: policy.split(',').any(|p| p.trim() == "compact"),
            delete: policy.split(',').any(|p| p.trim() == "delete"),
            segment_bytes: long("segment.bytes", 1 << 30),
            min_insync_replicas: long("min.insync.replicas", 1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_checked_by_kind() {
        assert!(validate("retention.ms", "1000").is_ok());
        assert!(validate("retention.ms", "-1").is_ok());
        assert!(validate("retention.ms", "-5").is_err());
        assert!(validate("retention.ms", "soon").is_err());
        assert!(validate("cleanup.policy", "compact,delete").is_ok());
        assert!(validate("cleanup.policy", "shred").is_err());
        assert!(validate("message.timestamp.type", "LogAppendTime").is_ok());
        assert!(validate("max.message.bytes", "99999999999").is_err());
        assert!(validate("no.such.config", "1").is_err());
    }

    #[test]
    fn settings_fall_back_to_broker_defaults() {
        let config = Config { log_retention_ms: 5, ..Default::default() };
        let mut set = BTreeMap::new();
        set.insert("cleanup.policy".to_string(), "compact".to_string());
        let s = TopicSettings::resolve(&config, &set);
        assert_eq!(s.retention_ms, 5);
        assert!(s.compact && !s.delete);
    }
}

//! Retention: every `log.retention.check.interval.ms`, each partition led here drops its
//! oldest batches past `retention.ms` or beyond `retention.bytes`, by moving its log start
//! offset through raft (so every replica drops the same batches). Every
//! `offsets.retention.check.interval.ms`, consumer groups without members lose their
//! offsets once `offsets.retention.minutes` have passed since they emptied.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::cluster::node::{Node, OFFSETS_TOPIC};
use crate::cluster::partition::Partition;
use crate::error::ResponseError;
use crate::group::coordinator::Activity;
use crate::topic_config::TopicSettings;

pub async fn run(node: Arc<Node>, shutdown: CancellationToken) {
    let logs = every(node.config.log_retention_check_interval_ms, shutdown.clone(), || enforce(&node));
    let offsets = every(node.config.offsets_retention_check_interval_ms, shutdown.clone(), || expire_offsets(&node));
    tokio::join!(logs, offsets);
}

/// Runs `pass` every `period_ms` until shutdown.
async fn every<F: std::future::Future<Output = ()>>(
    period_ms: u64,
    shutdown: CancellationToken,
    mut pass: impl FnMut() -> F,
) {
    let period = Duration::from_millis(period_ms.max(10));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        pass().await;
    }
}

/// One pass of offsets retention over the offsets partitions led here. A group without
/// members is deleted, offsets and record, `offsets.retention.minutes` after the later of
/// its last commit and the moment its last member left; groups with members keep theirs.
pub async fn expire_offsets(node: &Node) {
    let retention_ms = i64::try_from(node.config.offsets_retention_minutes.saturating_mul(60_000)).unwrap_or(i64::MAX);
    let count = node.metadata().topics.get(OFFSETS_TOPIC).map_or(0, |t| t.partitions.len());
    for index in 0..count as i32 {
        let Some(p) = node.partition(OFFSETS_TOPIC, index) else { continue };
        if !p.is_leader() {
            continue;
        }
        // Groups with offsets, and groups with only a record (never committed).
        let groups = p.offsets_store.groups().and_then(|mut g| {
            g.extend(p.offsets_store.records()?.into_iter().map(|(name, _)| name));
            Ok(g)
        });
        let mut groups = match groups {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!(partition = index, error = %e, "offsets retention scan failed");
                continue;
            }
        };
        groups.sort();
        groups.dedup();
        for group in groups {
            let emptied = match node.groups.activity(&group) {
                Activity::Active => continue,
                Activity::EmptySince(ms) => ms as i64,
                Activity::Unknown => 0,
            };
            let last_commit = match p.offsets_store.list(&group) {
                Ok(offsets) => offsets.iter().map(|(_, _, o)| o.commit_timestamp).max().unwrap_or(0),
                Err(e) => {
                    tracing::warn!(group, error = %e, "offsets retention scan failed");
                    continue;
                }
            };
            if crate::now_ms().saturating_sub(emptied.max(last_commit)) <= retention_ms {
                continue;
            }
            match node.delete_group(&group).await {
                Ok(()) => tracing::info!(group, "empty group expired with its offsets"),
                // A member joined meanwhile.
                Err(ResponseError::NonEmptyGroup) => {}
                Err(code) => tracing::warn!(group, %code, "offsets retention failed"),
            }
        }
    }
}

/// One retention pass over every partition led here.
pub async fn enforce(node: &Node) {
    let metadata = node.metadata();
    for p in node.partitions() {
        let Some(topic) = metadata.topics.get(&p.topic) else { continue };
        let settings = node.topic_settings(topic);
        // segment.bytes may have changed since the partition started.
        p.log.segments().set_segment_bytes(settings.segment_bytes as u64);
        if !settings.delete || !p.is_leader() {
            continue;
        }
        match new_log_start(&p, &settings, crate::now_ms()) {
            Ok(Some(offset)) => match p.advance_log_start(offset).await {
                Ok(start) => {
                    tracing::info!(topic = %p.topic, partition = p.index, log_start_offset = start, "retention moved log start")
                }
                Err(code) => tracing::warn!(topic = %p.topic, partition = p.index, %code, "retention failed"),
            },
            Ok(None) => {}
            Err(e) => tracing::warn!(topic = %p.topic, partition = p.index, error = %e, "retention scan failed"),
        }
    }
}

/// The offset the log should start at under `settings`, if later than now: the oldest
/// batches go while they are past `retention.ms` or the log is over `retention.bytes`.
fn new_log_start(p: &Partition, settings: &TopicSettings, now_ms: i64) -> Result<Option<i64>, storage::Error> {
    let offsets = p.offsets();
    let mut excess =
        if settings.retention_bytes >= 0 { offsets.log_bytes as i64 - settings.retention_bytes } else { 0 };
    let cutoff = if settings.retention_ms >= 0 { now_ms - settings.retention_ms } else { i64::MIN };
    let (start, _) = p.log.skip_while(offsets.log_start_offset, |b| {
        let expired = b.max_timestamp < cutoff || excess > 0;
        if expired && b.base_offset < offsets.high_watermark {
            excess -= b.size as i64;
            return true;
        }
        false
    })?;
    Ok((start > offsets.log_start_offset).then_some(start))
}

//! Retention: every `log.retention.check.interval.ms`, each partition led here drops its
//! oldest batches past `retention.ms` or beyond `retention.bytes`, by moving its log start
//! offset through raft (so every replica drops the same batches).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::cluster::node::Node;
use crate::cluster::partition::Partition;
use crate::topic_config::TopicSettings;

pub async fn run(node: Arc<Node>, shutdown: CancellationToken) {
    let period = Duration::from_millis(node.config.log_retention_check_interval_ms.max(10));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        enforce(&node).await;
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

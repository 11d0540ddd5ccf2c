//! One Kafka partition: its raft group, its state machine, and the produce batcher.
//!
//! Offsets are assigned when an entry is applied, so every replica stores identical
//! batches. The leader batches produce requests per partition: while one raft write is in
//! flight the next requests queue, and go out together as one entry (openraft makes one
//! entry per `client_write` and appends one at a time per group).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use openraft::error::RaftError;
use openraft::{BasicNode, LogId, Raft, SnapshotMeta};
use protocol::batch::{self, BatchHeader};
use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};
use storage::{
    Blob, CommittedOffset, Db, GroupId, HasBlobs, OffsetStore, PartitionLog, RaftLogStore, RecordsLoc, Segments,
    StateStore,
};
use tokio::sync::{mpsc, oneshot, watch};

use super::machine::{Machine, StateMachine};
use super::network::{self, GroupNetwork, Rpc};
use super::producers::{ProducerState, Producers, Verdict};
use super::PartitionTypes;
use crate::error::{raft_write_code, ResponseError};

/// A change to a partition's log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum PartitionCmd {
    /// Append batches, validated by the leader. `now_ms` is the leader's clock, used as the
    /// append time; `producer_id_expiration_ms` the leader's setting, so that whether an
    /// idempotent producer expired is decided from the log alone. The batches' bytes live
    /// in the group's segment files.
    Produce { batches: Vec<Blob>, now_ms: i64, log_append_time: bool, producer_id_expiration_ms: i64 },
    /// Move the log start offset forward (retention, DeleteRecords).
    AdvanceLogStart { offset: i64 },
    /// Consumer group offsets (on a partition of the offsets topic, the group's
    /// coordinator): set, as OffsetCommit sends them.
    CommitOffsets { group: String, offsets: Vec<(String, i32, CommittedOffset)> },
    /// Drop some of a consumer group's offsets (OffsetDelete), or all and the group's
    /// record (DeleteGroups, offsets retention).
    DeleteOffsets { group: String, partitions: Option<Vec<(String, i32)>> },
    /// Set a consumer group's membership record (opaque here), or drop it.
    StoreGroup { group: String, record: Option<Vec<u8>> },
}

impl HasBlobs for PartitionCmd {
    fn blobs_mut(&mut self) -> &mut [Blob] {
        match self {
            PartitionCmd::Produce { batches, .. } => batches,
            _ => &mut [],
        }
    }
}

/// What became of one produced batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BatchResult {
    /// Written at this base offset.
    Appended(i64),
    /// An idempotent producer's retry of a batch already written at this base offset.
    Duplicate(i64),
    /// Refused with this Kafka error code.
    Refused(i16),
}

/// What applying a [`PartitionCmd`] returned.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum PartitionResp {
    /// What became of each batch, in order.
    Appended(Vec<BatchResult>),
    LogStart(i64),
    Empty,
}

/// The offsets readers of a partition care about, published after each apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offsets {
    pub log_start_offset: i64,
    /// Next offset to be assigned: the high watermark, since only committed entries apply.
    pub high_watermark: i64,
    /// Kafka leader epoch: the raft term of the leader whose blank entry applied last.
    pub leader_epoch: i32,
    /// Running maximum of batch max timestamps, and the base offset of the batch holding it.
    pub max_timestamp: i64,
    pub max_timestamp_batch: i64,
    /// Bytes of stored batches.
    pub log_bytes: u64,
    /// The partition clock: the latest leader time of any produce applied. Idle idempotent
    /// producers expire on it, so that every replica forgets them at the same entry.
    pub clock_ms: i64,
}

impl Default for Offsets {
    fn default() -> Self {
        Offsets {
            log_start_offset: 0,
            high_watermark: 0,
            leader_epoch: 0,
            max_timestamp: -1,
            max_timestamp_batch: -1,
            log_bytes: 0,
            clock_ms: 0,
        }
    }
}

/// The partition's state machine logic.
pub struct PartitionMachine {
    log: PartitionLog,
    offsets_store: OffsetStore,
    state_store: StateStore,
    producers: Producers,
    offsets: Offsets,
    publish: watch::Sender<Offsets>,
    /// Reaches the other replicas, for the batches a snapshot does not carry.
    network: GroupNetwork,
    /// Leader epochs and the offset each started at, oldest first (shared with readers).
    epochs: Arc<std::sync::RwLock<Vec<(i32, i64)>>>,
}

/// Tag of the leader epoch history in the group's [`StateStore`].
const EPOCHS_TAG: u64 = 16;

/// What a partition's snapshot carries besides its [`Offsets`]: the state that lives
/// outside them. Not the batches: a replica installing the snapshot copies the ones it
/// lacks from another replica ([`PartitionMachine::catch_up`]).
#[derive(Debug, Default, Serialize, Deserialize)]
struct SnapshotExtra {
    /// The node that built the snapshot: it holds every batch below its high watermark.
    built_by: u64,
    producers: Vec<(i64, ProducerState)>,
    /// Consumer group offsets and records (partitions of the offsets topic).
    offsets: Vec<(Vec<u8>, Vec<u8>)>,
    epochs: Vec<(i32, i64)>,
}

/// A replica's answer to [`Rpc::ReadBatches`]: stored batches, as served.
#[derive(Debug, Serialize, Deserialize)]
pub struct BatchesAnswer {
    pub log_start_offset: i64,
    pub high_watermark: i64,
    pub batches: Bytes,
}

/// Most bytes of batches asked for at once when catching up.
const CATCH_UP_BYTES: u32 = 8 << 20;
/// How long one catch-up read may take.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);

/// Tags of producer states in the group's [`StateStore`]: this bit, or'ed with the
/// producer id (never negative), keeps them clear of the state machine's own tags.
const PRODUCER_TAG: u64 = 1 << 63;

/// How often (on the partition clock) idle producers are swept out of memory and storage;
/// between sweeps an expired producer is already treated as unknown.
const PRODUCER_SWEEP_MS: i64 = 60_000;

impl PartitionMachine {
    fn produce(
        &mut self,
        wb: &mut WriteBatch,
        entry: u64,
        batches: &[Blob],
        now_ms: i64,
        log_append_time: bool,
    ) -> Vec<BatchResult> {
        let before = self.offsets.clock_ms;
        self.offsets.clock_ms = before.max(now_ms);
        if self.offsets.clock_ms / PRODUCER_SWEEP_MS != before / PRODUCER_SWEEP_MS {
            self.producers.expire(self.offsets.clock_ms);
        }
        let results = batches.iter().map(|b| self.append(wb, entry, b, now_ms, log_append_time)).collect();
        for (id, state) in self.producers.take_changed() {
            let tag = PRODUCER_TAG | id as u64;
            let stored = match state {
                Some(state) => self.state_store.put(wb, tag, &state),
                None => Ok(self.state_store.delete(wb, tag)),
            };
            if let Err(e) = stored {
                tracing::error!(producer_id = id, error = %e, "cannot store producer state");
            }
        }
        results
    }

    fn append(
        &mut self,
        wb: &mut WriteBatch,
        entry: u64,
        blob: &Blob,
        now_ms: i64,
        log_append_time: bool,
    ) -> BatchResult {
        let corrupt = BatchResult::Refused(ResponseError::CorruptMessage.code());
        let raw = &blob.bytes;
        let Ok(header) = BatchHeader::parse(raw) else {
            return corrupt;
        };
        // Every entry read back for apply has its bytes and where they lie.
        let Some(loc) = blob.loc else {
            return corrupt;
        };
        if header.size() != raw.len() || loc.len as usize != raw.len() {
            return corrupt;
        }
        let idempotent = header.producer_id >= 0;
        if idempotent {
            match self.producers.check(&header, self.offsets.clock_ms) {
                Verdict::Append => {}
                Verdict::Duplicate(base) => return BatchResult::Duplicate(base),
                Verdict::Refuse(code) => return BatchResult::Refused(code.code()),
            }
        }
        let base = self.offsets.high_watermark;
        let mut head = [0u8; batch::HEADER_SIZE];
        head.copy_from_slice(&raw[..batch::HEADER_SIZE]);
        let tail = &raw[batch::HEADER_SIZE..];
        batch::set_base_offset(&mut head, base);
        batch::set_partition_leader_epoch(&mut head, self.offsets.leader_epoch);
        let max_timestamp = if log_append_time {
            batch::set_log_append_time(&mut head, tail, now_ms);
            now_ms
        } else {
            header.max_timestamp
        };
        let last = base + header.offset_count() - 1;
        let raises = max_timestamp > self.offsets.max_timestamp;
        if raises {
            // The record inside the batch is found when ListOffsets asks, not here: that
            // would mean decompressing every batch on the produce path.
            self.offsets.max_timestamp = max_timestamp;
            self.offsets.max_timestamp_batch = base;
        }
        let records =
            RecordsLoc { segment: loc.segment, pos: loc.pos + batch::HEADER_SIZE as u64, len: tail.len() as u32 };
        self.log.append(wb, base, last, max_timestamp, entry, &head, records, raises);
        self.offsets.high_watermark = last + 1;
        self.offsets.log_bytes += raw.len() as u64;
        if idempotent {
            self.producers.record(&header, base, self.offsets.clock_ms);
        }
        BatchResult::Appended(base)
    }

    /// Moves the log start to `offset` (at most the high watermark), as retention and
    /// DeleteRecords ask: batches wholly below it are deleted; the one that holds it stays,
    /// its earlier records no longer served. Returns the log start.
    fn advance_log_start(&mut self, wb: &mut WriteBatch, applied: u64, offset: i64) -> i64 {
        let target = offset.min(self.offsets.high_watermark);
        if target <= self.offsets.log_start_offset {
            return self.offsets.log_start_offset;
        }
        let (boundary, freed) = match self.log.skip_while(self.offsets.log_start_offset, |b| b.last_offset < target) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot read partition log to move its start");
                return self.offsets.log_start_offset;
            }
        };
        if boundary > self.offsets.log_start_offset {
            if let Err(e) = self.log.delete_before(wb, boundary) {
                tracing::error!(error = %e, "cannot delete partition log prefix");
                return self.offsets.log_start_offset;
            }
            self.offsets.log_bytes = self.offsets.log_bytes.saturating_sub(freed);
            // Segment files below the entry of the first remaining batch hold no live
            // batch; with none left, any later batch comes in an entry after this one.
            let floor = match self.log.info_at(boundary) {
                Ok(Some(b)) => b.entry,
                _ => applied,
            };
            self.log.segments().raise_data_floor(applied, floor);
        }
        self.offsets.log_start_offset = target;
        target
    }
}

impl PartitionMachine {
    /// Copies from other replicas the batches this one lacks below `target`'s high
    /// watermark (the state of a snapshot whose last entry is `at`), into the snapshot's
    /// data file. `sources` are tried in turn until one has them; network failures are
    /// retried, since an error would stop the group. Each chunk is written (synced) as it
    /// comes: should this node stop halfway, the snapshot is installed again and the copy
    /// resumes from the high watermark still stored, overwriting what it finds.
    async fn catch_up(&mut self, at: u64, target: &Offsets, sources: &[u64]) -> Result<(), storage::Error> {
        let group = self.network.group;
        if sources.is_empty() && self.offsets.high_watermark < target.high_watermark {
            return Err(storage::Error::BadValue(format!("group {group}: no replica to copy batches from")));
        }
        let mut turn = 0;
        while self.offsets.high_watermark < target.high_watermark {
            let source = sources[turn % sources.len()];
            let rpc = Rpc::ReadBatches {
                from: self.offsets.high_watermark,
                to: target.high_watermark,
                max_bytes: CATCH_UP_BYTES,
            };
            let answer = match self.network.peers.request(source, group, rpc, CATCH_UP_TIMEOUT).await {
                Ok(body) => network::decode::<Result<BatchesAnswer, String>>(&body).and_then(|a| a),
                Err(e) => Err(e.to_string()),
            };
            match answer {
                Ok(a) if !a.batches.is_empty() || a.log_start_offset >= target.high_watermark => {
                    self.store_copied(at, target, &a)?;
                }
                Ok(a) => {
                    tracing::info!(
                        group,
                        source,
                        high_watermark = a.high_watermark,
                        "replica is behind; trying another"
                    );
                    turn += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => {
                    tracing::warn!(group, source, error = %e, "cannot copy batches for a snapshot; trying another replica");
                    turn += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        Ok(())
    }

    /// Writes copied batches after the local ones. Where the source has deleted batches
    /// this replica lacks (retention there), the local log restarts at the first batch
    /// copied, or at the snapshot's high watermark when none is left.
    fn store_copied(&mut self, at: u64, target: &Offsets, answer: &BatchesAnswer) -> Result<(), storage::Error> {
        let corrupt = |e: protocol::batch::BatchError| storage::Error::BadValue(format!("copied batch: {e}"));
        let batches = batch::split_batches(&answer.batches).map_err(corrupt)?;
        let mut wb = WriteBatch::default();
        let next = self.offsets.high_watermark;
        let first = batches.first().map_or(target.high_watermark, |(h, _)| h.base_offset);
        if first > next {
            tracing::info!(
                group = self.network.group,
                from = next,
                to = first,
                "history deleted at the source; restarting the log"
            );
            self.log.destroy(&mut wb);
            // The local batches were all carried by entries before the snapshot's.
            self.log.segments().raise_data_floor(at, at);
            self.offsets.log_start_offset = first;
            self.offsets.high_watermark = first;
            self.offsets.max_timestamp = -1;
            self.offsets.max_timestamp_batch = -1;
            self.offsets.log_bytes = 0;
        }
        // Checked whole before anything is written: intact, and following on without a gap.
        let mut tails = Vec::with_capacity(batches.len());
        let mut expected = self.offsets.high_watermark;
        for (header, range) in &batches {
            batch::validate(header, &answer.batches[range.clone()]).map_err(corrupt)?;
            if header.base_offset != expected {
                let at = header.base_offset;
                return Err(storage::Error::BadValue(format!("copied batch at {at}, expected {expected}")));
            }
            expected = header.last_offset() + 1;
            tails.push(answer.batches.slice(range.start + batch::HEADER_SIZE..range.end));
        }
        let locs = if tails.is_empty() { Vec::new() } else { self.log.segments().write_data(at, &tails)? };
        for ((header, range), loc) in batches.iter().zip(locs) {
            let raises = header.max_timestamp > self.offsets.max_timestamp;
            if raises {
                self.offsets.max_timestamp = header.max_timestamp;
                self.offsets.max_timestamp_batch = header.base_offset;
            }
            let records = RecordsLoc { segment: loc.segment, pos: loc.pos, len: loc.len };
            let head = &answer.batches[range.start..range.start + batch::HEADER_SIZE];
            self.log.append(
                &mut wb,
                header.base_offset,
                header.last_offset(),
                header.max_timestamp,
                at,
                head,
                records,
                raises,
            );
            self.offsets.high_watermark = header.last_offset() + 1;
            self.offsets.log_bytes += range.len() as u64;
        }
        // The copied batches are durable in their data file; their index must be too
        // before raft purges the entries that would otherwise bring them.
        self.log.db().write(wb, storage::Durability::Wal)
    }
}

impl Machine for PartitionMachine {
    type C = PartitionTypes;
    type State = Offsets;

    fn apply(&mut self, wb: &mut WriteBatch, log_id: &LogId<u64>, cmd: PartitionCmd) -> PartitionResp {
        match cmd {
            PartitionCmd::Produce { batches, now_ms, log_append_time, producer_id_expiration_ms } => {
                self.producers.set_expiration(producer_id_expiration_ms);
                PartitionResp::Appended(self.produce(wb, log_id.index, &batches, now_ms, log_append_time))
            }
            PartitionCmd::AdvanceLogStart { offset } => {
                PartitionResp::LogStart(self.advance_log_start(wb, log_id.index, offset))
            }
            PartitionCmd::CommitOffsets { group, offsets } => {
                for (topic, partition, offset) in &offsets {
                    if let Err(e) = self.offsets_store.put(wb, &group, topic, *partition, offset) {
                        tracing::error!(group, error = %e, "cannot store committed offset");
                    }
                }
                PartitionResp::Empty
            }
            PartitionCmd::DeleteOffsets { group, partitions } => {
                match partitions {
                    Some(partitions) => {
                        for (topic, partition) in &partitions {
                            self.offsets_store.delete(wb, &group, topic, *partition);
                        }
                    }
                    None => self.offsets_store.delete_group(wb, &group),
                }
                PartitionResp::Empty
            }
            PartitionCmd::StoreGroup { group, record } => {
                match record {
                    Some(record) => self.offsets_store.put_record(wb, &group, &record),
                    None => self.offsets_store.delete_record(wb, &group),
                }
                PartitionResp::Empty
            }
        }
    }

    fn on_blank(&mut self, wb: &mut WriteBatch, log_id: &LogId<u64>) {
        let epoch = i32::try_from(log_id.leader_id.term).unwrap_or(i32::MAX);
        self.offsets.leader_epoch = epoch;
        // A new leader's records start at the log end (Kafka's leader epoch cache). Epochs
        // that ended before the log start are forgotten, but for the last of them.
        let mut epochs = self.epochs.write().unwrap_or_else(|p| p.into_inner());
        if epochs.last().is_some_and(|(e, _)| *e >= epoch) {
            return;
        }
        epochs.push((epoch, self.offsets.high_watermark));
        let log_start = self.offsets.log_start_offset;
        let ended = epochs.windows(2).take_while(|w| w[1].1 <= log_start).count();
        epochs.drain(..ended);
        if let Err(e) = self.state_store.put(wb, EPOCHS_TAG, &*epochs) {
            tracing::error!(error = %e, "cannot store leader epochs");
        }
    }

    fn empty_response(&self) -> PartitionResp {
        PartitionResp::Empty
    }

    fn state(&self) -> &Offsets {
        &self.offsets
    }

    fn restore(&mut self, state: Offsets) {
        self.offsets = state;
        self.publish.send_replace(state);
    }

    fn published(&mut self) {
        self.publish.send_replace(self.offsets);
    }

    fn snapshot_extra(&self) -> Result<Vec<u8>, storage::Error> {
        let extra = SnapshotExtra {
            built_by: self.network.peers.node_id,
            producers: self.producers.states(),
            offsets: self.offsets_store.export()?,
            epochs: self.epochs.read().unwrap_or_else(|p| p.into_inner()).clone(),
        };
        bincode::serialize(&extra).map_err(|source| storage::Error::Corrupt { what: "partition snapshot", source })
    }

    fn install(
        &mut self,
        wb: &mut WriteBatch,
        meta: &SnapshotMeta<u64, BasicNode>,
        state: Offsets,
        extra: Vec<u8>,
    ) -> impl Future<Output = Result<(), storage::Error>> + Send {
        let at = meta.last_log_id.map_or(0, |l| l.index);
        let voters: Vec<u64> = meta.last_membership.membership().voter_ids().collect();
        async move {
            let extra: SnapshotExtra = bincode::deserialize(&extra)
                .map_err(|source| storage::Error::Corrupt { what: "partition snapshot", source })?;
            let me = self.network.peers.node_id;
            let mut sources: Vec<u64> = voters.into_iter().filter(|id| *id != me).collect();
            sources.sort_by_key(|id| *id != extra.built_by);
            tracing::info!(
                group = self.network.group,
                at,
                from = self.offsets.high_watermark,
                to = state.high_watermark,
                "installing a snapshot"
            );
            self.catch_up(at, &state, &sources).await?;
            let log_start = self.offsets.log_start_offset;
            self.offsets = Offsets { log_start_offset: log_start, log_bytes: self.offsets.log_bytes, ..state };
            self.advance_log_start(wb, at, state.log_start_offset);
            self.producers.replace(extra.producers.iter().cloned());
            self.state_store.delete_from(wb, PRODUCER_TAG);
            for (id, producer) in &extra.producers {
                self.state_store.put(wb, PRODUCER_TAG | *id as u64, producer)?;
            }
            self.offsets_store.import(wb, &extra.offsets);
            self.state_store.put(wb, EPOCHS_TAG, &extra.epochs)?;
            *self.epochs.write().unwrap_or_else(|p| p.into_inner()) = extra.epochs;
            Ok(())
        }
    }
}

/// Where a produce request's batches went, and the append time the leader stamped.
#[derive(Debug, Clone)]
pub struct Appended {
    pub batches: Vec<BatchResult>,
    pub append_time_ms: i64,
}

/// One produce request's batches for one partition, waiting for the batcher.
pub struct ProduceJob {
    pub batches: Vec<Bytes>,
    pub log_append_time: bool,
    pub done: oneshot::Sender<Result<Appended, ResponseError>>,
}

/// When a follower of a group (a partition's or the controller's) without a live
/// leader stands for election besides raft's own timer, whose timeout openraft draws once
/// per group and counts in ticks of 1.5 heartbeat intervals, so two followers may tie
/// round after round: after [`NUDGE_AFTER`] without a leader (longer than a leader
/// lease), at random times drawn afresh each time, later by `rank`.
#[derive(Default)]
pub struct Nudge {
    leaderless_since: Option<std::time::Instant>,
    next: Option<std::time::Instant>,
}

impl Nudge {
    /// Called every leadership report; whether to stand for election now.
    pub fn due(&mut self, leaderless: bool, rank: usize) -> bool {
        let now = std::time::Instant::now();
        if !leaderless {
            (self.leaderless_since, self.next) = (None, None);
            return false;
        }
        if now.duration_since(*self.leaderless_since.get_or_insert(now)) < NUDGE_AFTER {
            return false;
        }
        let next = |now: std::time::Instant| {
            use std::hash::{BuildHasher, Hasher};
            let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
            now + NUDGE_STAGGER * rank as u32 + Duration::from_millis(random % NUDGE_JITTER_MS)
        };
        let due = *self.next.get_or_insert_with(|| next(now));
        if now < due {
            return false;
        }
        self.next = Some(next(now));
        true
    }
}

/// A replica's quiescence and election state, updated with every leadership report.
struct Liveness {
    /// As leader: the last log index seen and since when; whether heartbeats are off.
    last_index: Option<u64>,
    last_append: std::time::Instant,
    quiet: bool,
    /// As follower: whether raft may elect on its own timer, and since when the group
    /// has not been calm (`None`: calm, elections held back).
    elect: bool,
    not_calm_since: Option<std::time::Instant>,
    /// As follower: when to stand for election without a live leader.
    nudge: Nudge,
    /// As leader: when each follower last held every entry the leader had at the
    /// previous [`Partition::settle`] (`last_index`; Kafka's lastCaughtUpTime), for the
    /// term `term`.
    term: u64,
    caught_up_at: std::collections::HashMap<u64, std::time::Instant>,
}

impl Liveness {
    fn new() -> Liveness {
        let now = std::time::Instant::now();
        Liveness {
            last_index: None,
            last_append: now,
            quiet: false,
            elect: true,
            not_calm_since: Some(now),
            nudge: Nudge::default(),
            term: 0,
            caught_up_at: Default::default(),
        }
    }
}

/// A partition hosted on this node.
pub struct Partition {
    pub group: GroupId,
    pub topic: String,
    pub index: i32,
    pub raft: Raft<PartitionTypes>,
    pub log: PartitionLog,
    /// Consumer group offsets this partition keeps (offsets topic partitions only).
    pub offsets_store: OffsetStore,
    offsets: watch::Receiver<Offsets>,
    produce: mpsc::Sender<ProduceJob>,
    /// While true the batcher submits nothing (a leadership hand-over is under way).
    paused: watch::Sender<bool>,
    /// Quiescence and elections (see `Node::quiesce`).
    liveness: std::sync::Mutex<Liveness>,
    /// Offsets partitions: 1 + the raft term whose consumer groups this node has loaded
    /// as their coordinator (0: none).
    coordinating: std::sync::atomic::AtomicU64,
    /// A move of this partition's replicas is being driven from here.
    moving: std::sync::atomic::AtomicBool,
    waiting_fetches: Arc<std::sync::atomic::AtomicUsize>,
    epochs: Arc<std::sync::RwLock<Vec<(i32, i64)>>>,
}

/// Marks one fetch as parked on a partition until dropped.
pub struct FetchWaiting(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for FetchWaiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Kafka's `LeaderEpochFileCache.endOffsetFor` over `epochs` (epoch, start offset) with
/// `current` the latest epoch; a log written before epochs were kept counts as one epoch.
fn epoch_end(epochs: &[(i32, i64)], current: i32, log_start: i64, log_end: i64, requested: i32) -> (i32, i64) {
    let fallback = [(current, log_start)];
    let epochs = if epochs.is_empty() { &fallback[..] } else { epochs };
    if requested < 0 {
        return (-1, -1);
    }
    if requested == current {
        return (current, log_end);
    }
    let Some(next) = epochs.iter().position(|(e, _)| *e > requested) else {
        return (-1, -1);
    };
    let end = epochs[next].1;
    match next.checked_sub(1) {
        Some(floor) => (epochs[floor].0, end),
        None => (requested, end),
    }
}

/// Opens a partition group's raft log and state machine; the receiver follows its offsets.
pub(crate) fn open_stores(
    db: &Arc<Db>,
    group: GroupId,
    network: &GroupNetwork,
) -> anyhow::Result<(RaftLogStore<PartitionTypes>, StateMachine<PartitionMachine>, watch::Receiver<Offsets>)> {
    let segments = Segments::open(db.segments_dir(group))?;
    let log = PartitionLog::new(db.clone(), group, segments.clone());
    let (publish, offsets) = watch::channel(Offsets::default());
    let state_store = StateStore::new(db.clone(), group);
    let epochs: Vec<(i32, i64)> = state_store.get(EPOCHS_TAG)?.unwrap_or_default();
    let machine = PartitionMachine {
        log: log.clone(),
        offsets_store: OffsetStore::new(db.clone(), group),
        state_store: state_store.clone(),
        producers: Producers::new(stored_producers(&state_store)?),
        offsets: Offsets::default(),
        publish,
        network: network.clone(),
        epochs: Arc::new(std::sync::RwLock::new(epochs)),
    };
    let sm = StateMachine::open(db.clone(), state_store, machine)?;
    // Nothing is applied yet, so what is stored is what was flushed: files below the
    // first batch, or below the next entry to apply, hold nothing live.
    let floor = match log.first_info()? {
        Some(b) => b.entry,
        None => sm.applied_index().map_or(0, |i| i + 1),
    };
    segments.init_data_floor(floor);
    let log_store = RaftLogStore::<PartitionTypes>::with_segments(db.clone(), group, segments)?;
    Ok((log_store, sm, offsets))
}

/// The idempotent producers a partition group stores, by id.
fn stored_producers(store: &StateStore) -> Result<Vec<(i64, ProducerState)>, storage::Error> {
    let states = store.range::<ProducerState>(PRODUCER_TAG)?;
    Ok(states.into_iter().map(|(tag, state)| ((tag & !PRODUCER_TAG) as i64, state)).collect())
}

/// How long a replica waits for the preferred leader to start a new partition's group
/// before starting it itself.
const INITIALIZE_FALLBACK: std::time::Duration = std::time::Duration::from_secs(3);

/// Most bytes one raft entry carries when the batcher merges produce requests.
const MAX_ENTRY_BYTES: usize = 4 << 20;
/// How long a follower sees no live leader before it stands for election itself, and
/// the spread of its attempts (see [`Partition::follow`]).
const NUDGE_AFTER: Duration = Duration::from_millis(3500);
const NUDGE_STAGGER: Duration = Duration::from_millis(500);
const NUDGE_JITTER_MS: u64 = 1500;
/// When a quiet group's leader falls silent, how much later than the one before each
/// follower (by rank) may stand for election: less than an election timeout.
const UNFREEZE_STAGGER: Duration = Duration::from_secs(1);
/// How long a partition leader sees nothing appended before it goes quiet.
const QUIESCE_AFTER: Duration = Duration::from_secs(2);
/// How long a hand-over waits for the new leader to hold every entry.
const HAND_OVER_CATCH_UP: Duration = Duration::from_secs(2);
/// How long a hand-over waits for the new leader's election (its leader lease, 3 s,
/// and the election).
const HAND_OVER_ELECTION: Duration = Duration::from_secs(8);
/// Most produce entries of a partition in raft (appended, not yet applied) at once. An
/// entry takes every job queued while the ones before it were in raft, so entries grow
/// with the load; with more in flight they stay small and per-entry costs dominate.
/// Measured (`make bench BENCH_ARGS=cluster`, 3 replicas, 3 runs each): 2 in flight
/// 43-47% of a single node's throughput, 3: 38-44%, 4: 34%, 8: 33%.
const ENTRIES_IN_FLIGHT: usize = 2;
/// Bytes produced after which the batcher asks raft for a snapshot, so that the raft log
/// is purged and stops holding segment files (see `storage::segments`).
const SNAPSHOT_BYTES: usize = 512 << 20;

impl Partition {
    /// Opens (or creates) the partition's group and starts its raft and batcher.
    /// `replicas` hold the partition (this node among them), the preferred leader first;
    /// `network` reaches the others; `raft_config` is every group's.
    pub async fn start(
        db: Arc<Db>,
        group: GroupId,
        topic: String,
        index: i32,
        producer_id_expiration_ms: i64,
        network: GroupNetwork,
        raft_config: Arc<openraft::Config>,
        founders: Option<&[u64]>,
    ) -> anyhow::Result<Arc<Partition>> {
        let node_id = network.peers.node_id;
        let (log_store, sm, offsets) = open_stores(&db, group, &network)?;
        let machine = sm.machine();
        let (log, offsets_store, epochs) = (machine.log.clone(), machine.offsets_store.clone(), machine.epochs.clone());
        let raft_peers = network.peers.clone();
        let raft = Raft::new(node_id, raft_config, network, log_store, sm).await?;
        if let (Some(replicas), false) = (founders, raft.is_initialized().await?) {
            let members: std::collections::BTreeMap<u64, BasicNode> =
                replicas.iter().map(|id| (*id, BasicNode::new(raft_peers.address(*id).unwrap_or_default()))).collect();
            if replicas.first() == Some(&node_id) {
                // The preferred leader starts the group and wins its first vote; the others
                // learn the members from it. Were all to start at once, their votes would
                // split and the first leader would wait out an election timeout.
                raft.initialize(members).await?;
            } else {
                // Unless it is down: then they start it themselves (same members, so safe).
                let raft = raft.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(INITIALIZE_FALLBACK).await;
                    if matches!(raft.is_initialized().await, Ok(false)) {
                        let _ = raft.initialize(members).await;
                    }
                });
            }
        }
        let (tx, rx) = mpsc::channel(1024);
        let (paused, paused_rx) = watch::channel(false);
        let partition = Arc::new(Partition {
            group,
            topic,
            index,
            raft: raft.clone(),
            log,
            offsets_store,
            offsets,
            produce: tx,
            paused,
            liveness: std::sync::Mutex::new(Liveness::new()),
            coordinating: Default::default(),
            moving: Default::default(),
            waiting_fetches: Default::default(),
            epochs,
        });
        tokio::spawn(run_batcher(raft, rx, paused_rx, producer_id_expiration_ms));
        Ok(partition)
    }

    pub fn offsets(&self) -> Offsets {
        *self.offsets.borrow()
    }

    /// Counts a fetch as waiting for new data on this partition while the guard lives.
    pub fn fetch_waiting(&self) -> FetchWaiting {
        self.waiting_fetches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        FetchWaiting(self.waiting_fetches.clone())
    }

    /// Fetches now waiting (long polls) for new data on this partition.
    pub fn waiting_fetches(&self) -> usize {
        self.waiting_fetches.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A receiver that changes whenever the partition's offsets do.
    pub fn watch(&self) -> watch::Receiver<Offsets> {
        self.offsets.clone()
    }

    /// Queues validated batches for the partition's next raft write, in call order; the
    /// receiver yields each batch's base offset once the write is committed.
    pub async fn enqueue(
        &self,
        batches: Vec<Bytes>,
        log_append_time: bool,
    ) -> Result<oneshot::Receiver<Result<Appended, ResponseError>>, ResponseError> {
        let (done, rx) = oneshot::channel();
        self.produce
            .send(ProduceJob { batches, log_append_time, done })
            .await
            .map_err(|_| ResponseError::NotLeaderOrFollower)?;
        Ok(rx)
    }

    /// Writes one command through raft and returns what applying it returned.
    async fn write(&self, cmd: PartitionCmd) -> Result<PartitionResp, ResponseError> {
        self.raft.client_write(cmd).await.map(|r| r.data).map_err(|e| raft_write_code(&e))
    }

    /// Moves the log start offset forward through raft; returns the new log start.
    pub async fn advance_log_start(&self, offset: i64) -> Result<i64, ResponseError> {
        match self.write(PartitionCmd::AdvanceLogStart { offset }).await? {
            PartitionResp::LogStart(o) => Ok(o),
            _ => Err(ResponseError::UnknownServerError),
        }
    }

    /// Writes a consumer group's offsets through raft; they are readable from
    /// `offsets_store` once this returns.
    pub async fn commit_offsets(
        &self,
        group: String,
        offsets: Vec<(String, i32, CommittedOffset)>,
    ) -> Result<(), ResponseError> {
        self.write(PartitionCmd::CommitOffsets { group, offsets }).await.map(|_| ())
    }

    /// Deletes some of a consumer group's offsets, or all of them, through raft.
    pub async fn delete_offsets(
        &self,
        group: String,
        partitions: Option<Vec<(String, i32)>>,
    ) -> Result<(), ResponseError> {
        self.write(PartitionCmd::DeleteOffsets { group, partitions }).await.map(|_| ())
    }

    /// Writes a consumer group's membership record through raft (`None` drops it).
    pub async fn store_group(&self, group: String, record: Option<Vec<u8>>) -> Result<(), ResponseError> {
        self.write(PartitionCmd::StoreGroup { group, record }).await.map(|_| ())
    }

    /// Checks a consumer's request against this replica: it must lead the partition, and
    /// the client's `current_leader_epoch` (-1: none given) must be the current one
    /// (FENCED_LEADER_EPOCH if older, UNKNOWN_LEADER_EPOCH if newer, as Kafka answers).
    pub fn check_leader(&self, current_leader_epoch: i32) -> Result<(), ResponseError> {
        if !self.is_leader() {
            return Err(ResponseError::NotLeaderOrFollower);
        }
        let epoch = self.offsets().leader_epoch;
        match current_leader_epoch {
            e if e < 0 || e == epoch => Ok(()),
            e if e < epoch => Err(ResponseError::FencedLeaderEpoch),
            _ => Err(ResponseError::UnknownLeaderEpoch),
        }
    }

    /// OffsetsForLeaderEpoch: the largest epoch at or below `requested` and the offset it
    /// ended at (where the next began; the log end for the current one). `(-1, -1)` for
    /// an epoch after the current one.
    pub fn epoch_end(&self, requested: i32) -> (i32, i64) {
        let offsets = self.offsets();
        let epochs = self.epochs.read().unwrap_or_else(|p| p.into_inner());
        epoch_end(&epochs, offsets.leader_epoch, offsets.log_start_offset, offsets.high_watermark, requested)
    }

    /// Whether this node leads the partition now.
    pub fn is_leader(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.current_leader == Some(m.id)
    }

    /// Confirms with a quorum that this node still leads, and waits until everything
    /// committed before is applied here: a read after it sees every acknowledged write
    /// (raft's read index). A leader cut off from the others cannot confirm.
    pub async fn confirm_leader(&self, timeout: Duration) -> Result<(), ResponseError> {
        match tokio::time::timeout(timeout, self.raft.ensure_linearizable()).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(ResponseError::NotLeaderOrFollower),
        }
    }

    /// Hands leadership to replica `to`, which must be caught up: the batcher stops
    /// submitting produce requests and the leader its heartbeats, so the followers'
    /// leases run out; once `to` holds every entry it is asked to stand for election
    /// then, before any other follower's election timer fires. Produce requests queued
    /// meanwhile wait (a few seconds), then go to raft here and, leadership gone, are
    /// answered NOT_LEADER_OR_FOLLOWER for the client to retry at the new leader.
    /// Whether `to` leads at the end; if not, this node leads on as before.
    pub async fn hand_over(&self, to: u64, peers: &network::Peers) -> bool {
        let me = peers.node_id;
        let _ = self.paused.send(true);
        self.raft.runtime_config().heartbeat(false);
        let handed = async {
            // Entries already in raft reach `to` first.
            let deadline = tokio::time::Instant::now() + HAND_OVER_CATCH_UP;
            while !self.caught_up(&[to]) {
                if tokio::time::Instant::now() > deadline || !self.is_leader() {
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if peers.request(to, self.group, Rpc::TakeLeadership, Duration::from_secs(2)).await.is_err() {
                return false;
            }
            let moved = self.raft.wait(Some(HAND_OVER_ELECTION));
            let moved = moved.metrics(|m| m.current_leader.is_some_and(|l| l != me), "leader moved").await;
            moved.is_ok() && self.leader() == Some(to)
        }
        .await;
        self.raft.runtime_config().heartbeat(true);
        let _ = self.paused.send(false);
        handed
    }

    /// As leader: goes quiet (no heartbeats) once nothing was appended for
    /// [`QUIESCE_AFTER`] and every voter holds every entry, and wakes (heartbeats again)
    /// on the first entry appended after. A hand-over sets heartbeats itself.
    pub fn settle(&self) {
        let voters: Vec<u64> = {
            let m = self.raft.metrics();
            let m = m.borrow();
            let mut l = self.liveness();
            // A follower is caught up when it holds what the leader held at the previous
            // settle (500 ms ago), so a follower steadily a moment behind under load stays
            // in sync; one stuck further behind drops out after the replica lag.
            let held = if l.term == m.current_term { l.last_index } else { m.last_log_index };
            if l.term != m.current_term {
                l.term = m.current_term;
                l.caught_up_at.clear();
            }
            let now = std::time::Instant::now();
            for (id, matched) in m.replication.iter().flatten() {
                if matched.map(|log| log.index) >= held {
                    l.caught_up_at.insert(*id, now);
                }
            }
            if l.last_index != m.last_log_index {
                (l.last_index, l.last_append) = (m.last_log_index, now);
            }
            m.membership_config.membership().voter_ids().collect()
        };
        if *self.paused.borrow() {
            return;
        }
        let caught_up = self.caught_up(&voters);
        let mut l = self.liveness();
        l.quiet = l.last_append.elapsed() >= QUIESCE_AFTER && caught_up;
        self.raft.runtime_config().heartbeat(!l.quiet);
    }

    /// As leader: heartbeats again, as if an entry had just been appended, so that a
    /// follower learns what is committed; quiet again after [`QUIESCE_AFTER`].
    pub fn wake(&self) {
        let mut l = self.liveness();
        (l.last_append, l.quiet) = (std::time::Instant::now(), false);
        self.raft.runtime_config().heartbeat(true);
    }

    /// The index of the last log entry applied here.
    pub fn applied_index(&self) -> u64 {
        self.raft.metrics().borrow().last_applied.map_or(0, |l| l.index)
    }

    /// Whether this leader is quiet (reported so to the other nodes).
    pub fn is_quiet(&self) -> bool {
        self.liveness().quiet
    }

    fn liveness(&self) -> std::sync::MutexGuard<'_, Liveness> {
        self.liveness.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// As follower, with every leadership report. `calm`: the leader reports the group
    /// quiet, so elections are held back. When a quiet group's reports stop, every
    /// follower's lease ran out long ago and all would stand at once and split the vote:
    /// each waits `UNFREEZE_STAGGER` times its `rank` first. `leaderless`: no live leader
    /// is known, so this replica stands when its [`Nudge`] says.
    pub fn follow(&self, calm: bool, leaderless: bool, rank: usize) {
        let now = std::time::Instant::now();
        let mut l = self.liveness();
        l.quiet = false;
        let elect = if calm {
            l.not_calm_since = None;
            false
        } else {
            now.duration_since(*l.not_calm_since.get_or_insert(now)) >= UNFREEZE_STAGGER * rank as u32
        };
        if l.elect != elect {
            l.elect = elect;
            tracing::debug!(group = self.group, elect, "partition elections");
        }
        self.raft.runtime_config().elect(elect);

        if l.nudge.due(leaderless, rank) {
            let raft = self.raft.clone();
            tokio::spawn(async move { raft.trigger().elect().await });
        }
    }

    /// An offsets partition: the term whose groups were loaded here (`None`: not leading).
    pub fn set_coordinating(&self, term: Option<u64>) {
        self.coordinating.store(term.map_or(0, |t| t + 1), std::sync::atomic::Ordering::SeqCst);
    }

    /// An offsets partition: whether this node coordinates its groups in the current term.
    pub fn coordinating(&self) -> bool {
        let term = self.raft.metrics().borrow().current_term;
        self.coordinating.load(std::sync::atomic::Ordering::SeqCst) == term + 1
    }

    /// Stands for election once the current leader's lease has surely run out (it
    /// stopped its heartbeats to hand leadership here: see [`Partition::hand_over`]).
    pub fn take_leadership(&self, config: &openraft::Config) {
        let raft = self.raft.clone();
        // The lease lasts election_timeout_max from the last message of the leader.
        let wait = Duration::from_millis(config.election_timeout_max + 300);
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            if let Err(e) = raft.trigger().elect().await {
                tracing::warn!(error = %e, "cannot stand for election");
            }
        });
    }

    /// The node that leads the partition now, as far as this replica knows.
    /// The group's leader as this replica knows it; none once it is no voter (moved off,
    /// stepping down) and no other has been elected yet.
    pub fn leader(&self) -> Option<u64> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        m.current_leader.filter(|id| m.membership_config.membership().voter_ids().any(|v| v == *id))
    }

    /// The group's voters and learners.
    pub fn members(&self) -> Vec<u64> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        m.membership_config.membership().nodes().map(|(id, _)| *id).collect()
    }

    /// Whether, as this node leads, every one of `nodes` holds every entry of the log.
    pub fn caught_up(&self, nodes: &[u64]) -> bool {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let Some(progress) = m.replication.as_ref().filter(|_| m.current_leader == Some(m.id)) else { return false };
        nodes.iter().all(|id| *id == m.id || progress.get(id).is_some_and(|l| l.map(|l| l.index) >= m.last_log_index))
    }

    /// Marks a replica move as under way here; false if one already is.
    pub fn start_move(&self) -> bool {
        !self.moving.swap(true, std::sync::atomic::Ordering::SeqCst)
    }

    pub fn end_move(&self) {
        self.moving.store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// The replicas in sync with the leader (Kafka's ISR): as leader, the voters holding
    /// every entry now or caught up within `lag` (Kafka's replica.lag.time.max.ms; see
    /// [`Partition::settle`]). A follower does not know, and reports every voter.
    pub fn in_sync(&self, lag: Duration) -> Vec<u64> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let voters: Vec<u64> = m.membership_config.membership().voter_ids().collect();
        match &m.replication {
            Some(progress) if m.current_leader == Some(m.id) => {
                let last = m.last_log_index;
                let l = self.liveness();
                let recent =
                    |id: &u64| l.term == m.current_term && l.caught_up_at.get(id).is_some_and(|at| at.elapsed() < lag);
                voters
                    .into_iter()
                    .filter(|id| {
                        *id == m.id
                            || progress.get(id).is_some_and(|log| log.map(|log| log.index) >= last)
                            || recent(id)
                    })
                    .collect()
            }
            _ => voters,
        }
    }

    /// Stored batches from the one holding `from` up to `to` (at most the high watermark),
    /// about `max_bytes` of them, for a replica that installs a snapshot.
    pub fn read_batches(&self, from: i64, to: i64, max_bytes: u32) -> Result<BatchesAnswer, String> {
        let offsets = self.offsets();
        let mut out = BytesMut::new();
        self.log
            .read_into(from, to.min(offsets.high_watermark), max_bytes as usize, true, &mut out)
            .map_err(|e| e.to_string())?;
        Ok(BatchesAnswer {
            log_start_offset: offsets.log_start_offset,
            high_watermark: offsets.high_watermark,
            batches: out.freeze(),
        })
    }

    /// The idempotent producers this replica has stored, by id.
    pub fn producers(&self) -> Result<Vec<(i64, ProducerState)>, storage::Error> {
        stored_producers(&StateStore::new(self.log.db().clone(), self.group))
    }

    /// Waits until the partition has a leader.
    pub async fn wait_ready(&self, timeout: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        if self.raft.wait(Some(timeout)).metrics(|m| m.current_leader.is_some(), "partition leader").await.is_err() {
            return false;
        }
        // A leader is ready once its term's first entry applied: its epoch is current.
        let term = self.raft.metrics().borrow().current_term;
        let mut offsets = self.watch();
        let current =
            tokio::time::timeout_at(deadline, offsets.wait_for(|o| !self.is_leader() || o.leader_epoch as u64 >= term))
                .await;
        matches!(current, Ok(Ok(_)))
    }

    /// False while this replica leads but its term's first entry has not applied yet:
    /// its epoch is not the term's, so clients must not be told of it (they would
    /// present an epoch older than the next answer's and be fenced).
    pub fn leader_ready(&self) -> bool {
        let term = self.raft.metrics().borrow().current_term;
        !self.is_leader() || self.offsets().leader_epoch as u64 >= term
    }

    /// Stops the group's raft and batcher.
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(group = self.group, error = %e, "partition raft did not shut down cleanly");
        }
    }
}

/// Merges queued produce jobs into raft entries, and keeps up to [`ENTRIES_IN_FLIGHT`]
/// of them in raft at once: while one is being replicated and synced, the next is
/// already appended, so the leader does not wait a whole round trip per entry. Entries enter the raft log in the order
/// their jobs were queued (one task submits them), and offsets are assigned when they
/// apply, so the order of produce requests is kept.
async fn run_batcher(
    raft: Raft<PartitionTypes>,
    mut rx: mpsc::Receiver<ProduceJob>,
    mut paused: watch::Receiver<bool>,
    producer_id_expiration_ms: i64,
) {
    let in_flight = Arc::new(tokio::sync::Semaphore::new(ENTRIES_IN_FLIGHT));
    // A job that could not join the previous entry starts the next one.
    let mut held: Option<ProduceJob> = None;
    let mut since_snapshot = 0usize;
    loop {
        let first = match held.take() {
            Some(job) => job,
            None => match rx.recv().await {
                Some(job) => job,
                None => return,
            },
        };
        // During a hand-over jobs wait here (and queue up behind).
        while *paused.borrow_and_update() {
            if paused.changed().await.is_err() {
                return;
            }
        }
        // Waiting for a free slot lets more jobs queue up for this entry.
        let Ok(permit) = in_flight.clone().acquire_owned().await else { return };
        let log_append_time = first.log_append_time;
        let mut size: usize = first.batches.iter().map(|b| b.len()).sum();
        let mut jobs = vec![first];
        while size < MAX_ENTRY_BYTES {
            match rx.try_recv() {
                // One entry carries one timestamp mode (the topic's config changed between).
                Ok(job) if job.log_append_time != log_append_time => {
                    held = Some(job);
                    break;
                }
                Ok(job) => {
                    size += job.batches.iter().map(|b| b.len()).sum::<usize>();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        let batches: Vec<Blob> = jobs.iter().flat_map(|j| j.batches.iter().cloned().map(Blob::from)).collect();
        let now_ms = crate::now_ms();
        let started = std::time::Instant::now();
        let cmd = PartitionCmd::Produce { batches, now_ms, log_append_time, producer_id_expiration_ms };
        let answer = match raft.client_write_ff(cmd).await {
            Ok(answer) => answer,
            Err(fatal) => {
                let code = raft_write_code::<BasicNode>(&RaftError::Fatal(fatal));
                for job in jobs {
                    let _ = job.done.send(Err(code));
                }
                continue;
            }
        };
        since_snapshot += size;
        if since_snapshot >= SNAPSHOT_BYTES {
            since_snapshot = 0;
            let _ = raft.trigger().snapshot().await;
        }
        tokio::spawn(async move {
            let result = answer.await;
            drop(permit);
            let took = started.elapsed();
            metrics::histogram!("quarry_raft_write_seconds").record(took.as_secs_f64());
            if took > std::time::Duration::from_millis(50) {
                tracing::warn!(took_ms = took.as_millis() as u64, bytes = size, jobs = jobs.len(), "slow raft write");
            }
            let offsets = match result {
                Ok(Ok(written)) => match written.data {
                    PartitionResp::Appended(offsets) => offsets,
                    _ => {
                        for job in jobs {
                            let _ = job.done.send(Err(ResponseError::UnknownServerError));
                        }
                        return;
                    }
                },
                Ok(Err(e)) => {
                    let code = raft_write_code(&RaftError::APIError(e));
                    for job in jobs {
                        let _ = job.done.send(Err(code));
                    }
                    return;
                }
                // The group stopped before answering (shut down, or failed).
                Err(_) => {
                    for job in jobs {
                        let _ = job.done.send(Err(ResponseError::NotLeaderOrFollower));
                    }
                    return;
                }
            };
            let mut it = offsets.into_iter();
            for job in jobs {
                let batches = it.by_ref().take(job.batches.len()).collect();
                let _ = job.done.send(Ok(Appended { batches, append_time_ms: now_ms }));
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::epoch_end;

    #[test]
    fn epoch_end_answers_as_kafka_does() {
        // Epoch 2 wrote offsets 0..10, epoch 4 wrote 10..25, epoch 7 is current from 25.
        let epochs = [(2, 0), (4, 10), (7, 25)];
        let end = |requested| epoch_end(&epochs, 7, 0, 40, requested);
        assert_eq!(end(7), (7, 40), "the current epoch ends at the log end");
        assert_eq!(end(4), (4, 25));
        assert_eq!(end(5), (4, 25), "an epoch with no leader here: the one before it");
        assert_eq!(end(2), (2, 10));
        assert_eq!(end(1), (1, 0), "before the first: the first's start");
        assert_eq!(end(8), (-1, -1), "after the current");
        assert_eq!(end(-1), (-1, -1));
        // A log kept from before epochs were recorded is one epoch.
        assert_eq!(epoch_end(&[], 3, 5, 9, 3), (3, 9));
        assert_eq!(epoch_end(&[], 3, 5, 9, 2), (2, 5));
    }
}

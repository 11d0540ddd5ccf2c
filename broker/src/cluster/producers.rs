//! Idempotent producers as a partition sees them: each producer's epoch and its last few
//! batches' sequence numbers, so that a retried batch is answered with the offset it was
//! first written at, a gap in the sequence is refused, and an older epoch is fenced.
//!
//! The rules follow Kafka's `ProducerStateManager`:
//! - a producer the partition does not know (new, or expired) may start at any sequence;
//! - a newer epoch must start at sequence 0 and replaces the old epoch's state;
//! - an older epoch is refused with INVALID_PRODUCER_EPOCH;
//! - within an epoch, a batch whose first and last sequence equal one of the last
//!   [`RETAINED_BATCHES`] is a duplicate; any other batch must start right after the last
//!   sequence written, or it gets OUT_OF_ORDER_SEQUENCE_NUMBER.
//!
//! Everything here runs inside the state machine, so it depends only on the log: time is
//! the partition clock (the largest leader time applied), never the local clock.

use std::collections::{BTreeSet, HashMap, VecDeque};

use protocol::batch::BatchHeader;
use serde::{Deserialize, Serialize};

use crate::error::ResponseError;

/// Batches remembered per producer for duplicate detection: librdkafka and the Java client
/// keep at most five requests in flight per connection with idempotence on.
pub const RETAINED_BATCHES: usize = 5;

/// One written batch's sequence range and where it went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeqBatch {
    pub first_seq: i32,
    pub last_seq: i32,
    pub base_offset: i64,
}

/// What a partition remembers about one producer id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerState {
    pub epoch: i16,
    /// The most recent batches of `epoch`, oldest first.
    pub batches: VecDeque<SeqBatch>,
    /// Partition clock at the producer's last write.
    pub last_write_ms: i64,
}

/// The verdict on an idempotent batch before it is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Append,
    /// Already written at this base offset.
    Duplicate(i64),
    Refuse(ResponseError),
}

/// Last sequence of a batch, wrapping past `i32::MAX` to 0 as producers do.
pub fn last_sequence(first: i32, last_offset_delta: i32) -> i32 {
    if first > i32::MAX - last_offset_delta {
        first - (i32::MAX - last_offset_delta) - 1
    } else {
        first + last_offset_delta
    }
}

fn in_sequence(last: i32, next: i32) -> bool {
    next == last.wrapping_add(1) || (next == 0 && last == i32::MAX)
}

/// The producers of one partition.
#[derive(Debug)]
pub struct Producers {
    states: HashMap<i64, ProducerState>,
    /// `producer.id.expiration.ms` as the entry being applied carries it: taken from the
    /// log, not the local config, so a replay (or another replica) decides the same.
    expiration_ms: i64,
    /// Producer ids changed since [`Producers::take_changed`] last ran.
    changed: BTreeSet<i64>,
}

impl Producers {
    pub fn new(states: impl IntoIterator<Item = (i64, ProducerState)>) -> Self {
        Producers { states: states.into_iter().collect(), expiration_ms: i64::MAX, changed: BTreeSet::new() }
    }

    /// The expiration in force from the entry being applied on.
    pub fn set_expiration(&mut self, expiration_ms: i64) {
        self.expiration_ms = expiration_ms.max(1);
    }

    fn live(&self, id: i64, clock_ms: i64) -> Option<&ProducerState> {
        self.states.get(&id).filter(|s| !self.expired(s, clock_ms))
    }

    fn expired(&self, state: &ProducerState, clock_ms: i64) -> bool {
        clock_ms.saturating_sub(state.last_write_ms) > self.expiration_ms
    }

    /// Decides what to do with an idempotent batch (producer id >= 0).
    pub fn check(&self, h: &BatchHeader, clock_ms: i64) -> Verdict {
        let Some(state) = self.live(h.producer_id, clock_ms) else {
            return Verdict::Append;
        };
        if h.producer_epoch < state.epoch {
            return Verdict::Refuse(ResponseError::InvalidProducerEpoch);
        }
        if h.producer_epoch > state.epoch {
            return if h.base_sequence == 0 {
                Verdict::Append
            } else {
                Verdict::Refuse(ResponseError::OutOfOrderSequenceNumber)
            };
        }
        let last = last_sequence(h.base_sequence, h.last_offset_delta);
        if let Some(dup) = state.batches.iter().find(|b| b.first_seq == h.base_sequence && b.last_seq == last) {
            return Verdict::Duplicate(dup.base_offset);
        }
        match state.batches.back() {
            Some(b) if !in_sequence(b.last_seq, h.base_sequence) => {
                Verdict::Refuse(ResponseError::OutOfOrderSequenceNumber)
            }
            _ => Verdict::Append,
        }
    }

    /// Records a batch that [`Producers::check`] let through, now written at `base_offset`.
    pub fn record(&mut self, h: &BatchHeader, base_offset: i64, clock_ms: i64) {
        let fresh = ProducerState { epoch: h.producer_epoch, batches: VecDeque::new(), last_write_ms: clock_ms };
        let expired = self.live(h.producer_id, clock_ms).is_none();
        let state = self.states.entry(h.producer_id).or_insert_with(|| fresh.clone());
        if expired || state.epoch != h.producer_epoch {
            *state = fresh;
        }
        if state.batches.len() == RETAINED_BATCHES {
            state.batches.pop_front();
        }
        state.batches.push_back(SeqBatch {
            first_seq: h.base_sequence,
            last_seq: last_sequence(h.base_sequence, h.last_offset_delta),
            base_offset,
        });
        state.last_write_ms = clock_ms;
        self.changed.insert(h.producer_id);
    }

    /// Forgets every producer idle for longer than the expiration.
    pub fn expire(&mut self, clock_ms: i64) {
        let gone: Vec<i64> = self.states.iter().filter(|(_, s)| self.expired(s, clock_ms)).map(|(id, _)| *id).collect();
        for id in gone {
            self.states.remove(&id);
            self.changed.insert(id);
        }
    }

    /// The producers changed since the last call, with their state (`None`: forgotten).
    pub fn take_changed(&mut self) -> Vec<(i64, Option<ProducerState>)> {
        std::mem::take(&mut self.changed).into_iter().map(|id| (id, self.states.get(&id).cloned())).collect()
    }

    /// Every producer's state, by id: what a snapshot carries.
    pub fn states(&self) -> Vec<(i64, ProducerState)> {
        let mut out: Vec<(i64, ProducerState)> = self.states.iter().map(|(id, s)| (*id, s.clone())).collect();
        out.sort_unstable_by_key(|(id, _)| *id);
        out
    }

    /// Replaces every state by a snapshot's.
    pub fn replace(&mut self, states: impl IntoIterator<Item = (i64, ProducerState)>) {
        self.states = states.into_iter().collect();
        self.changed.clear();
    }

    pub fn len(&self) -> usize {
        self.states.len()
    }

    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(id: i64, epoch: i16, seq: i32, records: i32) -> BatchHeader {
        BatchHeader {
            base_offset: 0,
            batch_length: 49,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: records - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: id,
            producer_epoch: epoch,
            base_sequence: seq,
            records_count: records,
        }
    }

    /// Checks and, when allowed, records the batch at `next` offset; returns the verdict.
    fn write(p: &mut Producers, h: &BatchHeader, next: &mut i64, clock: i64) -> Verdict {
        let v = p.check(h, clock);
        if v == Verdict::Append {
            p.record(h, *next, clock);
            *next += h.offset_count();
        }
        v
    }

    #[test]
    fn retries_of_recent_batches_get_their_first_offset() {
        let mut p = Producers::new([]);
        p.set_expiration(1000);
        let mut next = 0;
        for seq in (0..30).step_by(5) {
            assert_eq!(write(&mut p, &batch(7, 0, seq, 5), &mut next, 0), Verdict::Append);
        }
        // The last five batches (sequences 5..30) are remembered; the first is not.
        assert_eq!(p.check(&batch(7, 0, 25, 5), 0), Verdict::Duplicate(25));
        assert_eq!(p.check(&batch(7, 0, 5, 5), 0), Verdict::Duplicate(5));
        assert_eq!(p.check(&batch(7, 0, 0, 5), 0), Verdict::Refuse(ResponseError::OutOfOrderSequenceNumber));
        // Same first sequence, different length: not the same batch.
        assert_eq!(p.check(&batch(7, 0, 25, 4), 0), Verdict::Refuse(ResponseError::OutOfOrderSequenceNumber));
        assert_eq!(p.check(&batch(7, 0, 30, 1), 0), Verdict::Append);
    }

    #[test]
    fn gaps_and_old_epochs_are_refused_and_new_epochs_start_at_zero() {
        let mut p = Producers::new([]);
        p.set_expiration(1000);
        let mut next = 0;
        // An unknown producer may start anywhere (its earlier state may have expired).
        assert_eq!(write(&mut p, &batch(1, 3, 40, 2), &mut next, 0), Verdict::Append);
        assert_eq!(p.check(&batch(1, 3, 43, 1), 0), Verdict::Refuse(ResponseError::OutOfOrderSequenceNumber));
        assert_eq!(p.check(&batch(1, 2, 42, 1), 0), Verdict::Refuse(ResponseError::InvalidProducerEpoch));
        assert_eq!(p.check(&batch(1, 4, 42, 1), 0), Verdict::Refuse(ResponseError::OutOfOrderSequenceNumber));
        assert_eq!(write(&mut p, &batch(1, 4, 0, 1), &mut next, 0), Verdict::Append);
        // The old epoch is fenced now, and its batches are no longer duplicates.
        assert_eq!(p.check(&batch(1, 3, 40, 2), 0), Verdict::Refuse(ResponseError::InvalidProducerEpoch));
        assert_eq!(p.check(&batch(1, 4, 0, 1), 0), Verdict::Duplicate(2));
        // Another producer is independent.
        assert_eq!(write(&mut p, &batch(2, 0, 0, 1), &mut next, 0), Verdict::Append);
    }

    #[test]
    fn sequences_wrap_after_i32_max() {
        assert_eq!(last_sequence(i32::MAX - 1, 3), 1);
        let mut p = Producers::new([]);
        p.set_expiration(1000);
        let mut next = 0;
        assert_eq!(write(&mut p, &batch(1, 0, i32::MAX - 1, 2), &mut next, 0), Verdict::Append);
        assert_eq!(write(&mut p, &batch(1, 0, 0, 1), &mut next, 0), Verdict::Append);
        assert_eq!(p.check(&batch(1, 0, i32::MAX - 1, 2), 0), Verdict::Duplicate(0));
    }

    #[test]
    fn idle_producers_expire_on_the_partition_clock() {
        let mut p = Producers::new([]);
        p.set_expiration(1000);
        let mut next = 0;
        write(&mut p, &batch(1, 0, 0, 1), &mut next, 0);
        write(&mut p, &batch(2, 0, 0, 1), &mut next, 600);
        assert_eq!(p.take_changed().len(), 2);
        // At 1500, producer 1 is past its expiration: any sequence is accepted again.
        assert_eq!(p.check(&batch(1, 0, 9, 1), 1500), Verdict::Append);
        assert_eq!(p.check(&batch(2, 0, 9, 1), 1500), Verdict::Refuse(ResponseError::OutOfOrderSequenceNumber));
        p.expire(1500);
        assert_eq!(p.take_changed(), vec![(1, None)]);
        assert_eq!(p.len(), 1);
        // A write after expiry starts the state afresh.
        write(&mut p, &batch(2, 0, 50, 1), &mut next, 5000);
        assert_eq!(p.take_changed()[0].1.as_ref().unwrap().batches.len(), 1);
    }
}

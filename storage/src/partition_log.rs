//! A Kafka partition's record batches, keyed by base offset, and its timestamp index.
//!
//! The batch bytes themselves stay where the raft log wrote them, in the group's segment
//! files. A value here is `last_offset (i64) ++ max_timestamp (i64) ++ raft index (u64)
//! ++ header ++ segment (u64) ++ position (u64) ++ length (u32)`: the batch header as
//! served to consumers (base offset and leader epoch set at apply), then where the rest of
//! the batch (its records, unchanged) lies. The raft index of the entry that carried the
//! batch tells the segment files which of them still hold live batches. The index in [`Cf::TimeIndex`] holds `(group, max_timestamp,
//! base_offset)` for each batch that raised the partition's running maximum timestamp, so
//! one seek finds the first batch that can hold a record at or after a given time.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use rocksdb::{Direction, IteratorMode, WriteBatch};

use crate::segments::Segments;
use crate::{key, key_suffix, Cf, Db, Error, GroupId};

const VALUE_PREFIX: usize = 24;
const VALUE_SUFFIX: usize = 20;

/// A stored value, taken apart.
struct Value<'a> {
    last_offset: i64,
    max_timestamp: i64,
    entry: u64,
    header: &'a [u8],
    segment: u64,
    pos: u64,
    len: u32,
}

impl<'a> Value<'a> {
    fn parse(v: &'a [u8]) -> Result<Value<'a>, Error> {
        if v.len() < VALUE_PREFIX + VALUE_SUFFIX {
            return Err(Error::BadValue(format!("partition log value of {} bytes", v.len())));
        }
        let u64_at = |i: usize| u64::from_be_bytes(v[i..i + 8].try_into().expect("8 bytes"));
        let tail = v.len() - VALUE_SUFFIX;
        Ok(Value {
            last_offset: u64_at(0) as i64,
            max_timestamp: u64_at(8) as i64,
            entry: u64_at(16),
            header: &v[VALUE_PREFIX..tail],
            segment: u64_at(tail),
            pos: u64_at(tail + 8),
            len: u32::from_be_bytes(v[tail + 16..].try_into().expect("4 bytes")),
        })
    }

    fn size(&self) -> usize {
        self.header.len() + self.len as usize
    }

    fn info(&self, base_offset: i64) -> BatchInfo {
        BatchInfo {
            base_offset,
            last_offset: self.last_offset,
            max_timestamp: self.max_timestamp,
            size: self.size() as u64,
            entry: self.entry,
        }
    }
}

/// Where the records of a batch (everything after its header) lie in the segment files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordsLoc {
    pub segment: u64,
    pub pos: u64,
    pub len: u32,
}

/// One stored batch, as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBatch {
    pub base_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
    pub bytes: Bytes,
}

/// What the log knows of a batch without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
    /// Bytes of the batch as stored.
    pub size: u64,
    /// Raft index of the entry that carried the batch.
    pub entry: u64,
}

/// The record batches of one partition.
#[derive(Clone)]
pub struct PartitionLog {
    db: Arc<Db>,
    group: GroupId,
    segments: Arc<Segments>,
}

/// Signed timestamps ordered as unsigned big-endian bytes.
fn ts_key(group: GroupId, timestamp: i64, base_offset: i64) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..8].copy_from_slice(&group.to_be_bytes());
    k[8..16].copy_from_slice(&((timestamp as u64) ^ (1 << 63)).to_be_bytes());
    k[16..].copy_from_slice(&(base_offset as u64).to_be_bytes());
    k
}

fn ts_of_key(k: &[u8]) -> i64 {
    (u64::from_be_bytes(k[8..16].try_into().expect("24-byte key")) ^ (1 << 63)) as i64
}

fn offset_of_ts_key(k: &[u8]) -> i64 {
    u64::from_be_bytes(k[16..24].try_into().expect("24-byte key")) as i64
}

impl PartitionLog {
    pub fn new(db: Arc<Db>, group: GroupId, segments: Arc<Segments>) -> Self {
        PartitionLog { db, group, segments }
    }

    pub fn db(&self) -> &Arc<Db> {
        &self.db
    }

    /// The segment files the batches' records are in.
    pub fn segments(&self) -> &Arc<Segments> {
        &self.segments
    }

    /// Adds a batch to `wb`: its header as served and where its records are. `entry` is
    /// the raft index of the entry that carried it; `index` says whether the batch raised
    /// the running maximum timestamp and so gets an index entry.
    #[allow(clippy::too_many_arguments)]
    pub fn append(
        &self,
        wb: &mut WriteBatch,
        base_offset: i64,
        last_offset: i64,
        max_timestamp: i64,
        entry: u64,
        header: &[u8],
        records: RecordsLoc,
        index: bool,
    ) {
        let mut value = Vec::with_capacity(VALUE_PREFIX + header.len() + VALUE_SUFFIX);
        value.extend_from_slice(&last_offset.to_be_bytes());
        value.extend_from_slice(&max_timestamp.to_be_bytes());
        value.extend_from_slice(&entry.to_be_bytes());
        value.extend_from_slice(header);
        value.extend_from_slice(&records.segment.to_be_bytes());
        value.extend_from_slice(&records.pos.to_be_bytes());
        value.extend_from_slice(&records.len.to_be_bytes());
        wb.put_cf(self.db.cf(Cf::PartitionLog), key(self.group, base_offset as u64), value);
        if index {
            wb.put_cf(self.db.cf(Cf::TimeIndex), ts_key(self.group, max_timestamp, base_offset), []);
        }
    }

    fn decode(&self, k: &[u8], v: &[u8]) -> Result<StoredBatch, Error> {
        let value = Value::parse(v)?;
        let mut bytes = BytesMut::with_capacity(value.size());
        bytes.put_slice(value.header);
        self.segments.read_into(value.segment, value.pos, value.len, &mut bytes)?;
        Ok(StoredBatch {
            base_offset: key_suffix(k) as i64,
            last_offset: value.last_offset,
            max_timestamp: value.max_timestamp,
            bytes: bytes.freeze(),
        })
    }

    /// Appends to `out` the whole batches that hold offsets from `offset` up to (not
    /// including) `end`, starting with the batch containing `offset`, as long as they fit in
    /// `max_bytes`. With `min_one` the first batch is included whatever its size (KIP-74:
    /// the first partition of a fetch with data always gets one). Returns how many batches
    /// were added.
    pub fn read_into(
        &self,
        offset: i64,
        end: i64,
        max_bytes: usize,
        min_one: bool,
        out: &mut BytesMut,
    ) -> Result<usize, Error> {
        if offset >= end {
            return Ok(0);
        }
        let start = self.batch_start(offset)?.unwrap_or(offset);
        let upper = key(self.group, end as u64);
        let mut opts = rocksdb::ReadOptions::default();
        opts.set_iterate_upper_bound(upper);
        opts.set_readahead_size(2 << 20);
        let it = self.db.rocks().iterator_cf_opt(
            self.db.cf(Cf::PartitionLog),
            opts,
            IteratorMode::From(&key(self.group, start as u64), Direction::Forward),
        );
        let mut n = 0;
        let budget_start = out.len();
        for item in it {
            let (k, v) = item?;
            if k.as_ref() >= upper.as_slice() {
                break;
            }
            let value = Value::parse(&v)?;
            if (n > 0 || !min_one) && out.len() - budget_start + value.size() > max_bytes {
                break;
            }
            out.reserve(value.size());
            out.put_slice(value.header);
            self.segments.read_into(value.segment, value.pos, value.len, out)?;
            n += 1;
            if out.len() - budget_start >= max_bytes {
                break;
            }
        }
        Ok(n)
    }

    /// Base offset of the batch that contains `offset`, if one does.
    fn batch_start(&self, offset: i64) -> Result<Option<i64>, Error> {
        let probe = key(self.group, offset as u64);
        let mut it =
            self.db.rocks().iterator_cf(self.db.cf(Cf::PartitionLog), IteratorMode::From(&probe, Direction::Reverse));
        if let Some(item) = it.next() {
            let (k, v) = item?;
            if k[..8] == self.group.to_be_bytes() {
                if Value::parse(&v)?.last_offset >= offset {
                    return Ok(Some(key_suffix(&k) as i64));
                }
            }
        }
        Ok(None)
    }

    /// Walks the batches from the one holding `from` in offset order while `pass` accepts them (it sees each
    /// batch's offsets, max timestamp and size, not its bytes). Returns the offset after the
    /// last batch passed (`from` if none) and the bytes passed.
    pub fn skip_while(&self, from: i64, mut pass: impl FnMut(&BatchInfo) -> bool) -> Result<(i64, u64), Error> {
        let from = from.max(0);
        let first = self.batch_start(from)?.unwrap_or(from);
        let upper = key(self.group + 1, 0);
        let mut opts = rocksdb::ReadOptions::default();
        opts.set_iterate_upper_bound(upper);
        let it = self.db.rocks().iterator_cf_opt(
            self.db.cf(Cf::PartitionLog),
            opts,
            IteratorMode::From(&key(self.group, first as u64), Direction::Forward),
        );
        let (mut end, mut bytes) = (from, 0u64);
        for item in it {
            let (k, v) = item?;
            let info = Value::parse(&v)?.info(key_suffix(&k) as i64);
            if !pass(&info) {
                break;
            }
            end = info.last_offset + 1;
            bytes += info.size;
        }
        Ok((end, bytes))
    }

    /// What the log knows of the batch at `base_offset`, if one starts there.
    pub fn info_at(&self, base_offset: i64) -> Result<Option<BatchInfo>, Error> {
        let v = self.db.rocks().get_pinned_cf(self.db.cf(Cf::PartitionLog), key(self.group, base_offset as u64))?;
        v.map(|v| Value::parse(&v).map(|value| value.info(base_offset))).transpose()
    }

    /// The first batch, if any.
    pub fn first_info(&self) -> Result<Option<BatchInfo>, Error> {
        let mut first = None;
        self.skip_while(0, |b| {
            first = Some(*b);
            false
        })?;
        Ok(first)
    }

    /// Batches from the one containing `offset` onwards, in offset order, at most `limit`.
    pub fn batches_from(&self, offset: i64, limit: usize) -> Result<Vec<StoredBatch>, Error> {
        let start = self.batch_start(offset)?.unwrap_or(offset);
        let upper = key(self.group + 1, 0);
        let it = self.db.rocks().iterator_cf(
            self.db.cf(Cf::PartitionLog),
            IteratorMode::From(&key(self.group, start.max(0) as u64), Direction::Forward),
        );
        let mut out = Vec::new();
        for item in it {
            let (k, v) = item?;
            if k.as_ref() >= upper.as_slice() || out.len() >= limit {
                break;
            }
            out.push(self.decode(&k, &v)?);
        }
        Ok(out)
    }

    /// The first batch that may hold a record with a timestamp at or after `timestamp`:
    /// every batch before it has only earlier records.
    pub fn batch_for_timestamp(&self, timestamp: i64) -> Result<Option<StoredBatch>, Error> {
        match self.offset_for_timestamp(timestamp)? {
            Some(offset) => Ok(self.batches_from(offset, 1)?.pop()),
            None => Ok(None),
        }
    }

    /// The base offset of the first batch whose timestamp (the running maximum of the
    /// log) reaches `timestamp`: every batch before it holds only earlier timestamps.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<i64>, Error> {
        let mut it = self.db.rocks().iterator_cf(
            self.db.cf(Cf::TimeIndex),
            IteratorMode::From(&ts_key(self.group, timestamp, 0), Direction::Forward),
        );
        let Some(item) = it.next() else { return Ok(None) };
        let (k, _) = item?;
        if k[..8] != self.group.to_be_bytes() {
            return Ok(None);
        }
        Ok(Some(offset_of_ts_key(&k)))
    }

    /// The highest timestamp indexed so far (the running maximum), if any.
    pub fn max_indexed_timestamp(&self) -> Result<Option<i64>, Error> {
        let mut it = self.db.rocks().iterator_cf(
            self.db.cf(Cf::TimeIndex),
            IteratorMode::From(&ts_key(self.group, i64::MAX, i64::MAX), Direction::Reverse),
        );
        match it.next() {
            Some(item) => {
                let (k, _) = item?;
                Ok((k[..8] == self.group.to_be_bytes()).then(|| ts_of_key(&k)))
            }
            None => Ok(None),
        }
    }

    /// Adds to `wb` the deletion of every batch below `new_log_start` (a batch boundary),
    /// keeping the timestamp index exact for the batches that remain: the head batches
    /// up to the next index entry are indexed again with their own running maximum.
    pub fn delete_before(&self, wb: &mut WriteBatch, new_log_start: i64) -> Result<(), Error> {
        wb.delete_range_cf(self.db.cf(Cf::PartitionLog), key(self.group, 0), key(self.group, new_log_start as u64));
        let index = self.db.cf(Cf::TimeIndex);
        let it = self
            .db
            .rocks()
            .iterator_cf(index, IteratorMode::From(&ts_key(self.group, i64::MIN, 0), Direction::Forward));
        let mut next_indexed = None;
        for item in it {
            let (k, _) = item?;
            if k[..8] != self.group.to_be_bytes() {
                break;
            }
            let base = offset_of_ts_key(&k);
            if base >= new_log_start {
                next_indexed = Some(base);
                break;
            }
            wb.delete_cf(index, &k);
        }
        let mut running = i64::MIN;
        for b in self.batches_from(new_log_start, 10_000)? {
            if Some(b.base_offset) == next_indexed {
                break;
            }
            if b.max_timestamp > running {
                running = b.max_timestamp;
                wb.put_cf(index, ts_key(self.group, running, b.base_offset), []);
            }
        }
        Ok(())
    }

    /// Adds to `wb` the deletion of everything of this partition.
    pub fn destroy(&self, wb: &mut WriteBatch) {
        wb.delete_range_cf(self.db.cf(Cf::PartitionLog), key(self.group, 0), key(self.group + 1, 0));
        wb.delete_range_cf(self.db.cf(Cf::TimeIndex), key(self.group, 0), key(self.group + 1, 0));
    }
}

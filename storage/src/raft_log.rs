//! openraft log storage for any number of raft groups in one column family.
//!
//! Entries live at `(group, index)` in [`Cf::RaftLog`]; the vote, the committed log id and
//! the last purged log id at `(group, tag)` in [`Cf::RaftMeta`]. The store is generic over
//! the group's type config and never looks inside an entry's payload.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    AnyError, ErrorSubject, ErrorVerb, LogId, LogState, OptionalSend, RaftLogId, RaftLogReader, RaftTypeConfig,
    StorageError, StorageIOError, Vote,
};
use rocksdb::{Direction, IteratorMode, WriteBatch};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::segments::{Blob, HasBlobs, RecordLoc, Segments};
use crate::{key, Cf, Db, Durability, GroupId};

const META_VOTE: u64 = 1;
const META_COMMITTED: u64 = 2;
const META_LAST_PURGED: u64 = 3;

/// One raft group's log, as openraft sees it.
pub struct RaftLogStore<C: RaftTypeConfig> {
    db: Arc<Db>,
    group: GroupId,
    segments: Option<Arc<Segments>>,
    /// The last entries appended, payloads included, with their total payload bytes:
    /// openraft reads each entry back to apply it, and this spares that read.
    recent: Arc<Mutex<(VecDeque<C::Entry>, usize)>>,
    _config: PhantomData<C>,
}

fn payload_bytes<C>(entry: &mut openraft::Entry<C>) -> usize
where
    C: RaftTypeConfig,
    C::D: HasBlobs,
{
    blobs_of(entry).iter().map(|b| b.bytes.len()).sum()
}

/// Most entries, and payload bytes, kept in [`RaftLogStore`]'s recent entries.
const RECENT_ENTRIES: usize = 64;
const RECENT_BYTES: usize = 64 << 20;

impl<C: RaftTypeConfig> Clone for RaftLogStore<C> {
    fn clone(&self) -> Self {
        RaftLogStore {
            db: self.db.clone(),
            group: self.group,
            segments: self.segments.clone(),
            recent: self.recent.clone(),
            _config: PhantomData,
        }
    }
}

fn blobs_of<C>(entry: &mut openraft::Entry<C>) -> &mut [Blob]
where
    C: RaftTypeConfig,
    C::D: HasBlobs,
{
    match &mut entry.payload {
        openraft::EntryPayload::Normal(d) => d.blobs_mut(),
        _ => &mut [],
    }
}

fn io_err<C: RaftTypeConfig>(
    subject: ErrorSubject<C::NodeId>,
    verb: ErrorVerb,
    e: impl std::error::Error + 'static,
) -> StorageError<C::NodeId> {
    StorageIOError::new(subject, verb, AnyError::new(&e)).into()
}

impl<C> RaftLogStore<C>
where
    C: RaftTypeConfig<Entry = openraft::Entry<C>>,
    C::Entry: Serialize + DeserializeOwned + Clone,
    C::D: HasBlobs,
{
    /// A store that keeps whole entries in RocksDB.
    pub fn new(db: Arc<Db>, group: GroupId) -> Self {
        RaftLogStore { db, group, segments: None, recent: Default::default(), _config: PhantomData }
    }

    /// A store whose entries live in `segments` (see [`crate::segments`]); RocksDB holds
    /// each entry's record location and its encoding without payloads, as an index.
    ///
    /// Opening repairs what a machine crash may have left: index entries past the
    /// committed one whose records did not all reach the disk are dropped with everything
    /// after them (never acknowledged), and records past the last indexed one (synced,
    /// but their index entries were still in the unsynced WAL) are indexed again.
    pub fn with_segments(db: Arc<Db>, group: GroupId, segments: Arc<Segments>) -> Result<Self, crate::Error> {
        let store = RaftLogStore {
            db,
            group,
            segments: Some(segments.clone()),
            recent: Default::default(),
            _config: PhantomData,
        };
        let committed: Option<LogId<C::NodeId>> = store.get_meta::<Option<_>>(META_COMMITTED).ok().flatten().flatten();
        let from = committed.map(|l: LogId<C::NodeId>| l.index + 1).unwrap_or(0);
        let cf = store.db.cf(Cf::RaftLog);
        let it = store.db.rocks().iterator_cf(cf, IteratorMode::From(&key(group, from), Direction::Forward));
        let mut torn = None;
        for item in it {
            let (k, v) = item?;
            if k[..8] != group.to_be_bytes() {
                break;
            }
            if !RecordLoc::from_bytes(&v).is_some_and(|r| segments.verify(&r)) {
                torn = Some(crate::key_suffix(&k));
                break;
            }
        }
        if let Some(index) = torn {
            tracing::warn!(group, index, "dropping raft entries whose data did not reach the disk");
            let mut batch = WriteBatch::default();
            batch.delete_range_cf(cf, key(group, index), key(group + 1, 0));
            store.db.write(batch, Durability::Wal)?;
        }

        // Index again the records after the last indexed one.
        let last =
            store.db.rocks().iterator_cf(cf, IteratorMode::From(&key(group, u64::MAX), Direction::Reverse)).next();
        let (mut next, from) = match last {
            Some(Ok((k, v))) if k[..8] == group.to_be_bytes() => {
                let r = RecordLoc::from_bytes(&v).ok_or_else(|| crate::Error::BadValue("raft log index".into()))?;
                (crate::key_suffix(&k) + 1, Some((r.segment, r.pos + r.len)))
            }
            Some(Err(e)) => return Err(e.into()),
            _ => {
                let purged: Option<LogId<C::NodeId>> = store.get_meta(META_LAST_PURGED).ok().flatten();
                (purged.map_or(0, |l| l.index + 1), None)
            }
        };
        let mut batch = WriteBatch::default();
        let mut gap = None;
        let found = segments.scan(from, |index, entry, record| {
            if index < next {
                return true;
            }
            if index > next {
                gap = Some((index, record));
                return false;
            }
            let mut value = record.to_bytes().to_vec();
            value.extend_from_slice(entry);
            batch.put_cf(cf, key(group, index), value);
            next += 1;
            true
        })?;
        if let Some((index, record)) = gap {
            // Records of entries truncated away, or cut short: nothing after is ours.
            tracing::warn!(group, index, expected = next, "raft log records skip an index; cutting there");
            segments.truncate_at(record.segment, record.pos)?;
        }
        if !batch.is_empty() {
            tracing::info!(
                group,
                entries = batch.len(),
                records = found,
                "indexed raft entries found in segment files"
            );
            store.db.write(batch, Durability::Wal)?;
        }
        Ok(store)
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, (VecDeque<C::Entry>, usize)> {
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps just-appended entries (payloads included) for reads that follow: only a run
    /// that continues the one kept, within [`RECENT_ENTRIES`] and [`RECENT_BYTES`].
    fn remember(&self, appended: Vec<C::Entry>) {
        let Some(first) = appended.first().map(|e| e.get_log_id().index) else { return };
        let mut recent = self.recent();
        let (entries, bytes) = &mut *recent;
        if entries.back().map(|e| e.get_log_id().index + 1) != Some(first) {
            entries.clear();
            *bytes = 0;
        }
        for mut entry in appended {
            *bytes += payload_bytes(&mut entry);
            entries.push_back(entry);
        }
        while entries.len() > RECENT_ENTRIES || (*bytes > RECENT_BYTES && entries.len() > 1) {
            if let Some(mut e) = entries.pop_front() {
                *bytes -= payload_bytes(&mut e);
            }
        }
    }

    /// Drops the recent entries `drop` says to.
    fn forget_recent(&self, mut drop: impl FnMut(u64) -> bool) {
        let mut recent = self.recent();
        let (entries, bytes) = &mut *recent;
        entries.retain_mut(|e| {
            let gone = drop(e.get_log_id().index);
            if gone {
                *bytes -= payload_bytes(e);
            }
            !gone
        });
    }

    /// The entry encoding in a stored value (after the record location, for segments).
    fn encoded<'a>(&self, v: &'a [u8]) -> &'a [u8] {
        if self.segments.is_some() {
            &v[v.len().min(24)..]
        } else {
            v
        }
    }

    /// Deletes the entries and meta this group stored (not its segment files).
    pub fn destroy(&self) -> Result<(), crate::Error> {
        self.forget_recent(|_| true);
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.db.cf(Cf::RaftLog), key(self.group, 0), key(self.group + 1, 0));
        batch.delete_range_cf(self.db.cf(Cf::RaftMeta), key(self.group, 0), key(self.group + 1, 0));
        self.db.write(batch, Durability::Wal)
    }

    /// Decodes a stored entry, reading its blobs back from the segment files.
    fn decode_entry(&self, v: &[u8]) -> Result<C::Entry, StorageError<C::NodeId>> {
        let mut entry: C::Entry =
            bincode::deserialize(self.encoded(v)).map_err(|e| io_err::<C>(ErrorSubject::Logs, ErrorVerb::Read, e))?;
        if let Some(segments) = &self.segments {
            for blob in blobs_of(&mut entry) {
                if let Some(loc) = blob.loc {
                    blob.bytes = segments
                        .read(loc.segment, loc.pos, loc.len)
                        .map_err(|e| io_err::<C>(ErrorSubject::Logs, ErrorVerb::Read, e))?;
                }
            }
        }
        Ok(entry)
    }

    fn get_meta<T: DeserializeOwned>(&self, tag: u64) -> Result<Option<T>, StorageError<C::NodeId>> {
        let raw = self
            .db
            .rocks()
            .get_pinned_cf(self.db.cf(Cf::RaftMeta), key(self.group, tag))
            .map_err(|e| io_err::<C>(ErrorSubject::Store, ErrorVerb::Read, e))?;
        match raw {
            None => Ok(None),
            Some(v) => {
                bincode::deserialize(&v).map(Some).map_err(|e| io_err::<C>(ErrorSubject::Store, ErrorVerb::Read, e))
            }
        }
    }

    fn put_meta<T: Serialize>(&self, tag: u64, value: &T) -> Result<(), StorageError<C::NodeId>> {
        let bytes = bincode::serialize(value).map_err(|e| io_err::<C>(ErrorSubject::Store, ErrorVerb::Write, e))?;
        let mut batch = WriteBatch::default();
        batch.put_cf(self.db.cf(Cf::RaftMeta), key(self.group, tag), bytes);
        self.db.write(batch, Durability::Wal).map_err(|e| io_err::<C>(ErrorSubject::Store, ErrorVerb::Write, e))
    }

    fn last_entry_log_id(&self) -> Result<Option<LogId<C::NodeId>>, StorageError<C::NodeId>> {
        let upper = key(self.group, u64::MAX);
        let mut it =
            self.db.rocks().iterator_cf(self.db.cf(Cf::RaftLog), IteratorMode::From(&upper, Direction::Reverse));
        match it.next() {
            None => Ok(None),
            Some(Err(e)) => Err(io_err::<C>(ErrorSubject::Logs, ErrorVerb::Read, e)),
            Some(Ok((k, v))) => {
                if k[..8] != self.group.to_be_bytes() {
                    return Ok(None);
                }
                let entry: C::Entry = bincode::deserialize(self.encoded(&v))
                    .map_err(|e| io_err::<C>(ErrorSubject::Logs, ErrorVerb::Read, e))?;
                Ok(Some(entry.get_log_id().clone()))
            }
        }
    }
}

impl<C> RaftLogReader<C> for RaftLogStore<C>
where
    C: RaftTypeConfig<Entry = openraft::Entry<C>>,
    C::Entry: Serialize + DeserializeOwned + Clone,
    C::D: HasBlobs,
{
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<C::Entry>, StorageError<C::NodeId>> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i + 1,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(i) => i.saturating_add(1),
            Bound::Excluded(i) => *i,
            Bound::Unbounded => u64::MAX,
        };
        let mut out = Vec::new();
        if start >= end {
            return Ok(out);
        }
        {
            let recent = self.recent();
            let (entries, _) = &*recent;
            if let (Some(first), Some(last)) = (entries.front(), entries.back()) {
                let (first, last) = (first.get_log_id().index, last.get_log_id().index);
                if first <= start && (end == u64::MAX || end - 1 <= last) {
                    let skip = (start - first) as usize;
                    let take = (end.min(last + 1) - start) as usize;
                    return Ok(entries.iter().skip(skip).take(take).cloned().collect());
                }
            }
        }
        let upper = key(self.group, end);
        let it = self
            .db
            .rocks()
            .iterator_cf(self.db.cf(Cf::RaftLog), IteratorMode::From(&key(self.group, start), Direction::Forward));
        for item in it {
            let (k, v) = item.map_err(|e| io_err::<C>(ErrorSubject::Logs, ErrorVerb::Read, e))?;
            if k.as_ref() >= upper.as_slice() {
                break;
            }
            out.push(self.decode_entry(&v)?);
        }
        Ok(out)
    }
}

impl<C> RaftLogStorage<C> for RaftLogStore<C>
where
    C: RaftTypeConfig<Entry = openraft::Entry<C>>,
    C::Entry: Serialize + DeserializeOwned + Clone,
    C::D: HasBlobs,
{
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<C>, StorageError<C::NodeId>> {
        let last_purged_log_id: Option<LogId<C::NodeId>> = self.get_meta(META_LAST_PURGED)?;
        let last_log_id = self.last_entry_log_id()?.or(last_purged_log_id.clone());
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        self.put_meta(META_VOTE, vote)?;
        // The vote must be on disk before this returns: a node that forgets its vote can
        // vote twice in one term.
        self.db.sync().await.map_err(|e| io_err::<C>(ErrorSubject::Vote, ErrorVerb::Write, e))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<C::NodeId>>, StorageError<C::NodeId>> {
        self.get_meta(META_VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId<C::NodeId>>) -> Result<(), StorageError<C::NodeId>> {
        // Not synced: losing it only means re-learning the commit index from the leader.
        self.put_meta(META_COMMITTED, &committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<C::NodeId>>, StorageError<C::NodeId>> {
        Ok(self.get_meta::<Option<LogId<C::NodeId>>>(META_COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<C>) -> Result<(), StorageError<C::NodeId>>
    where
        I: IntoIterator<Item = C::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = WriteBatch::default();
        let cf = self.db.cf(Cf::RaftLog);
        let mut files: Vec<Arc<std::fs::File>> = Vec::new();
        let mut remembered: Vec<C::Entry> = Vec::new();
        let werr = |e| io_err::<C>(ErrorSubject::Logs, ErrorVerb::Write, e);
        for mut entry in entries {
            let index = entry.get_log_id().index;
            let Some(segments) = &self.segments else {
                let bytes = bincode::serialize(&entry).map_err(|e| werr(AnyError::new(&e)))?;
                batch.put_cf(cf, key(self.group, index), bytes);
                continue;
            };
            let payloads: Vec<bytes::Bytes> =
                blobs_of(&mut entry).iter_mut().map(|b| std::mem::take(&mut b.bytes)).collect();
            let appended = segments
                .append(index, &payloads, |locs| {
                    for (blob, loc) in blobs_of(&mut entry).iter_mut().zip(locs) {
                        blob.loc = Some(*loc);
                    }
                    bincode::serialize(&entry).unwrap_or_default()
                })
                .map_err(|e| werr(AnyError::new(&e)))?;
            let mut value = appended.record.to_bytes().to_vec();
            value.extend_from_slice(&appended.entry);
            batch.put_cf(cf, key(self.group, index), value);
            if !files.last().is_some_and(|f| Arc::ptr_eq(f, &appended.file)) {
                files.push(appended.file);
            }
            for (blob, payload) in blobs_of(&mut entry).iter_mut().zip(payloads) {
                blob.bytes = payload;
            }
            remembered.push(entry);
        }
        self.db.write(batch, Durability::Wal).map_err(|e| werr(AnyError::new(&e)))?;
        self.remember(remembered);
        // Readable now. Acknowledged to raft once the group sync has it on disk: the
        // segment files alone for a store with segments (its WAL records are an index that
        // opening rebuilds), the WAL otherwise.
        let wal = self.segments.is_none();
        self.db.after_sync_files(files, wal, move |r| callback.log_io_completed(r));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        self.forget_recent(|i| i >= log_id.index);
        if let Some(segments) = &self.segments {
            // The records go too, or opening would index them again.
            let derr = |e| io_err::<C>(ErrorSubject::Logs, ErrorVerb::Delete, e);
            let v =
                self.db.rocks().get_pinned_cf(self.db.cf(Cf::RaftLog), key(self.group, log_id.index)).map_err(derr)?;
            if let Some(r) = v.as_deref().and_then(RecordLoc::from_bytes) {
                segments
                    .truncate_at(r.segment, r.pos)
                    .map_err(|e| io_err::<C>(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
            }
        }
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.db.cf(Cf::RaftLog), key(self.group, log_id.index), key(self.group + 1, 0));
        self.db.write(batch, Durability::Wal).map_err(|e| io_err::<C>(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        // Durable before returning: entries that reappear after a crash could be taken
        // for entries of the new leader.
        self.db.sync().await.map_err(|e| io_err::<C>(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }

    async fn purge(&mut self, log_id: LogId<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        self.forget_recent(|i| i <= log_id.index);
        let bytes = bincode::serialize(&log_id).map_err(|e| io_err::<C>(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        let mut batch = WriteBatch::default();
        batch.put_cf(self.db.cf(Cf::RaftMeta), key(self.group, META_LAST_PURGED), bytes);
        batch.delete_range_cf(self.db.cf(Cf::RaftLog), key(self.group, 0), key(self.group, log_id.index + 1));
        self.db.write(batch, Durability::Wal).map_err(|e| io_err::<C>(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        if let Some(segments) = &self.segments {
            // Entries that point into a deleted file must not come back after a crash.
            self.db.sync().await.map_err(|e| io_err::<C>(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
            // A file that outlives its use only costs space: log and carry on.
            if let Err(e) = segments.release(log_id.index) {
                tracing::warn!(group = self.group, error = %e, "cannot delete segment files");
            }
        }
        Ok(())
    }
}

//! openraft log storage for any number of raft groups in one column family.
//!
//! Entries live at `(group, index)` in [`Cf::RaftLog`]; the vote, the committed log id and
//! the last purged log id at `(group, tag)` in [`Cf::RaftMeta`]. The store is generic over
//! the group's type config and never looks inside an entry's payload.

use std::fmt::Debug;
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    AnyError, ErrorSubject, ErrorVerb, LogId, LogState, OptionalSend, RaftLogId, RaftLogReader, RaftTypeConfig,
    StorageError, StorageIOError, Vote,
};
use rocksdb::{Direction, IteratorMode, WriteBatch};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{key, Cf, Db, Durability, GroupId};

const META_VOTE: u64 = 1;
const META_COMMITTED: u64 = 2;
const META_LAST_PURGED: u64 = 3;

/// One raft group's log, as openraft sees it.
pub struct RaftLogStore<C: RaftTypeConfig> {
    db: Arc<Db>,
    group: GroupId,
    _config: PhantomData<C>,
}

impl<C: RaftTypeConfig> Clone for RaftLogStore<C> {
    fn clone(&self) -> Self {
        RaftLogStore { db: self.db.clone(), group: self.group, _config: PhantomData }
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
    C: RaftTypeConfig,
    C::Entry: Serialize + DeserializeOwned,
{
    pub fn new(db: Arc<Db>, group: GroupId) -> Self {
        RaftLogStore { db, group, _config: PhantomData }
    }

    /// Deletes everything this group stored: entries and meta.
    pub fn destroy(&self) -> Result<(), crate::Error> {
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.db.cf(Cf::RaftLog), key(self.group, 0), key(self.group + 1, 0));
        batch.delete_range_cf(self.db.cf(Cf::RaftMeta), key(self.group, 0), key(self.group + 1, 0));
        self.db.write(batch, Durability::Wal)
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
                let entry: C::Entry =
                    bincode::deserialize(&v).map_err(|e| io_err::<C>(ErrorSubject::Logs, ErrorVerb::Read, e))?;
                Ok(Some(entry.get_log_id().clone()))
            }
        }
    }
}

impl<C> RaftLogReader<C> for RaftLogStore<C>
where
    C: RaftTypeConfig,
    C::Entry: Serialize + DeserializeOwned,
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
            out.push(bincode::deserialize(&v).map_err(|e| io_err::<C>(ErrorSubject::Logs, ErrorVerb::Read, e))?);
        }
        Ok(out)
    }
}

impl<C> RaftLogStorage<C> for RaftLogStore<C>
where
    C: RaftTypeConfig,
    C::Entry: Serialize + DeserializeOwned,
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
        for entry in entries {
            let index = entry.get_log_id().index;
            let bytes = bincode::serialize(&entry).map_err(|e| io_err::<C>(ErrorSubject::Logs, ErrorVerb::Write, e))?;
            batch.put_cf(cf, key(self.group, index), bytes);
        }
        self.db.write(batch, Durability::Wal).map_err(|e| io_err::<C>(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        // Readable now; acknowledged to raft only once the group sync has it on disk.
        self.db.after_sync(move |r| callback.log_io_completed(r));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.db.cf(Cf::RaftLog), key(self.group, log_id.index), key(self.group + 1, 0));
        self.db.write(batch, Durability::Wal).map_err(|e| io_err::<C>(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        // Durable before returning: entries that reappear after a crash could be taken
        // for entries of the new leader.
        self.db.sync().await.map_err(|e| io_err::<C>(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }

    async fn purge(&mut self, log_id: LogId<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        let bytes = bincode::serialize(&log_id).map_err(|e| io_err::<C>(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        let mut batch = WriteBatch::default();
        batch.put_cf(self.db.cf(Cf::RaftMeta), key(self.group, META_LAST_PURGED), bytes);
        batch.delete_range_cf(self.db.cf(Cf::RaftLog), key(self.group, 0), key(self.group, log_id.index + 1));
        self.db.write(batch, Durability::Wal).map_err(|e| io_err::<C>(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }
}

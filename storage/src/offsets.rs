//! Consumer group offsets, kept by the state machine of the offsets topic partition that
//! coordinates the group: `(raft group, consumer group, topic, partition)` in
//! [`Cf::Offsets`], so one prefix scan lists a consumer group's offsets and one range
//! delete drops them. The key `(raft group, consumer group)` alone holds the group's
//! membership record, opaque here.

use std::sync::Arc;

use rocksdb::{Direction, IteratorMode, WriteBatch};
use serde::{Deserialize, Serialize};

use crate::{Cf, Db, Error, GroupId};

/// One committed offset, as OffsetCommit sent it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedOffset {
    pub offset: i64,
    /// -1 when the client sent none.
    pub leader_epoch: i32,
    pub metadata: String,
    /// When it was committed (leader's clock, ms): offsets retention counts from here.
    pub commit_timestamp: i64,
}

/// The offsets one raft group keeps.
#[derive(Clone)]
pub struct OffsetStore {
    db: Arc<Db>,
    group: GroupId,
}

/// `raft group ++ len ++ consumer group`, the prefix of every key of a consumer group.
fn group_prefix(raft: GroupId, consumer_group: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(12 + consumer_group.len());
    k.extend_from_slice(&raft.to_be_bytes());
    k.extend_from_slice(&(consumer_group.len() as u32).to_be_bytes());
    k.extend_from_slice(consumer_group.as_bytes());
    k
}

fn offset_key(raft: GroupId, consumer_group: &str, topic: &str, partition: i32) -> Vec<u8> {
    let mut k = group_prefix(raft, consumer_group);
    k.extend_from_slice(&(topic.len() as u32).to_be_bytes());
    k.extend_from_slice(topic.as_bytes());
    k.extend_from_slice(&(partition as u32).to_be_bytes());
    k
}

/// The topic and partition at the end of a key that starts with `prefix`.
fn topic_partition(prefix: &[u8], k: &[u8]) -> Option<(String, i32)> {
    let rest = k.get(prefix.len()..)?;
    let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let topic = std::str::from_utf8(rest.get(4..4 + len)?).ok()?.to_string();
    let partition = u32::from_be_bytes(rest.get(4 + len..8 + len)?.try_into().ok()?) as i32;
    Some((topic, partition))
}

/// The consumer group a key belongs to.
fn group_of(k: &[u8]) -> Result<String, Error> {
    k.get(8..12)
        .map(|l| u32::from_be_bytes(l.try_into().expect("4 bytes")) as usize)
        .and_then(|len| k.get(12..12 + len))
        .and_then(|n| std::str::from_utf8(n).ok())
        .map(str::to_string)
        .ok_or_else(|| Error::BadValue("offsets key".into()))
}

/// The first key after every key starting with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    vec![u8::MAX; prefix.len() + 1]
}

impl OffsetStore {
    pub fn new(db: Arc<Db>, group: GroupId) -> Self {
        OffsetStore { db, group }
    }

    /// Adds a commit to `wb`.
    pub fn put(
        &self,
        wb: &mut WriteBatch,
        consumer_group: &str,
        topic: &str,
        partition: i32,
        offset: &CommittedOffset,
    ) -> Result<(), Error> {
        let value = bincode::serialize(offset).map_err(|source| Error::Corrupt { what: "committed offset", source })?;
        wb.put_cf(self.db.cf(Cf::Offsets), offset_key(self.group, consumer_group, topic, partition), value);
        Ok(())
    }

    pub fn get(&self, consumer_group: &str, topic: &str, partition: i32) -> Result<Option<CommittedOffset>, Error> {
        let key = offset_key(self.group, consumer_group, topic, partition);
        match self.db.rocks().get_pinned_cf(self.db.cf(Cf::Offsets), key)? {
            None => Ok(None),
            Some(v) => {
                bincode::deserialize(&v).map(Some).map_err(|source| Error::Corrupt { what: "committed offset", source })
            }
        }
    }

    /// Every offset the consumer group committed, by topic and partition.
    pub fn list(&self, consumer_group: &str) -> Result<Vec<(String, i32, CommittedOffset)>, Error> {
        let prefix = group_prefix(self.group, consumer_group);
        let mut opts = rocksdb::ReadOptions::default();
        opts.set_iterate_upper_bound(prefix_end(&prefix));
        let it = self.db.rocks().iterator_cf_opt(
            self.db.cf(Cf::Offsets),
            opts,
            IteratorMode::From(&prefix, Direction::Forward),
        );
        let mut out = Vec::new();
        for item in it {
            let (k, v) = item?;
            if k.len() == prefix.len() {
                continue; // the group's record
            }
            let Some((topic, partition)) = topic_partition(&prefix, &k) else {
                return Err(Error::BadValue("offsets key".into()));
            };
            let offset =
                bincode::deserialize(&v).map_err(|source| Error::Corrupt { what: "committed offset", source })?;
            out.push((topic, partition, offset));
        }
        Ok(out)
    }

    /// Adds a consumer group's membership record to `wb`.
    pub fn put_record(&self, wb: &mut WriteBatch, consumer_group: &str, record: &[u8]) {
        wb.put_cf(self.db.cf(Cf::Offsets), group_prefix(self.group, consumer_group), record);
    }

    /// Adds the deletion of a consumer group's membership record to `wb`.
    pub fn delete_record(&self, wb: &mut WriteBatch, consumer_group: &str) {
        wb.delete_cf(self.db.cf(Cf::Offsets), group_prefix(self.group, consumer_group));
    }

    /// Every consumer group's membership record kept here.
    pub fn records(&self) -> Result<Vec<(String, Vec<u8>)>, Error> {
        let mut out = Vec::new();
        self.walk_groups(|name, record, _| {
            if let Some(r) = record {
                out.push((name, r));
            }
        })?;
        Ok(out)
    }

    /// Every consumer group with at least one offset kept here, in key order.
    pub fn groups(&self) -> Result<Vec<String>, Error> {
        let mut out = Vec::new();
        self.walk_groups(|name, _, has_offsets| {
            if has_offsets {
                out.push(name);
            }
        })?;
        Ok(out)
    }

    /// Calls `f` once per consumer group kept here, in key order, with its record (which
    /// comes first among its keys) and whether it has offsets, seeking past the rest.
    fn walk_groups(&self, mut f: impl FnMut(String, Option<Vec<u8>>, bool)) -> Result<(), Error> {
        let mut opts = rocksdb::ReadOptions::default();
        opts.set_iterate_upper_bound((self.group + 1).to_be_bytes().to_vec());
        let mut it = self.db.rocks().raw_iterator_cf_opt(self.db.cf(Cf::Offsets), opts);
        it.seek(self.group.to_be_bytes());
        while let Some(k) = it.key() {
            let name = group_of(k)?;
            let prefix = group_prefix(self.group, &name);
            let mut record = None;
            if k.len() == prefix.len() {
                record = Some(it.value().unwrap_or_default().to_vec());
                it.next();
            }
            let has_offsets = it.key().is_some_and(|k| k.starts_with(&prefix));
            f(name, record, has_offsets);
            it.seek(prefix_end(&prefix));
        }
        it.status()?;
        Ok(())
    }

    /// Adds the deletion of one offset to `wb`.
    pub fn delete(&self, wb: &mut WriteBatch, consumer_group: &str, topic: &str, partition: i32) {
        wb.delete_cf(self.db.cf(Cf::Offsets), offset_key(self.group, consumer_group, topic, partition));
    }

    /// Adds the deletion of every offset of the consumer group to `wb`.
    pub fn delete_group(&self, wb: &mut WriteBatch, consumer_group: &str) {
        let prefix = group_prefix(self.group, consumer_group);
        wb.delete_range_cf(self.db.cf(Cf::Offsets), &prefix, &prefix_end(&prefix));
    }

    /// Everything this raft group keeps, as `(key without the raft group, value)` pairs in
    /// key order: what a snapshot carries to another replica.
    pub fn export(&self) -> Result<Vec<(Vec<u8>, Vec<u8>)>, Error> {
        let mut opts = rocksdb::ReadOptions::default();
        opts.set_iterate_upper_bound((self.group + 1).to_be_bytes().to_vec());
        let it = self.db.rocks().iterator_cf_opt(
            self.db.cf(Cf::Offsets),
            opts,
            IteratorMode::From(&self.group.to_be_bytes(), Direction::Forward),
        );
        it.map(|item| item.map(|(k, v)| (k[8..].to_vec(), v.to_vec())).map_err(Error::from)).collect()
    }

    /// Adds to `wb` the replacement of everything kept here by `entries` (from [`export`]).
    ///
    /// [`export`]: OffsetStore::export
    pub fn import(&self, wb: &mut WriteBatch, entries: &[(Vec<u8>, Vec<u8>)]) {
        self.destroy(wb);
        for (k, v) in entries {
            let mut key = self.group.to_be_bytes().to_vec();
            key.extend_from_slice(k);
            wb.put_cf(self.db.cf(Cf::Offsets), key, v);
        }
    }

    /// Adds the deletion of everything this raft group kept to `wb`.
    pub fn destroy(&self, wb: &mut WriteBatch) {
        wb.delete_range_cf(self.db.cf(Cf::Offsets), self.group.to_be_bytes(), (self.group + 1).to_be_bytes());
    }
}

//! Small per-group values in [`Cf::State`], written in the same batch as the data they
//! describe.

use std::sync::Arc;

use rocksdb::WriteBatch;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{key, key_suffix, Cf, Db, Error, GroupId};

/// Typed access to one group's values, keyed by a small tag.
#[derive(Clone)]
pub struct StateStore {
    db: Arc<Db>,
    group: GroupId,
}

impl StateStore {
    pub fn new(db: Arc<Db>, group: GroupId) -> Self {
        StateStore { db, group }
    }

    pub fn get<T: DeserializeOwned>(&self, tag: u64) -> Result<Option<T>, Error> {
        match self.db.rocks().get_pinned_cf(self.db.cf(Cf::State), key(self.group, tag))? {
            None => Ok(None),
            Some(v) => {
                bincode::deserialize(&v).map(Some).map_err(|source| Error::Corrupt { what: "state value", source })
            }
        }
    }

    /// Adds the value to `batch`; it becomes visible when the batch is written.
    pub fn put<T: Serialize>(&self, batch: &mut WriteBatch, tag: u64, value: &T) -> Result<(), Error> {
        let bytes = bincode::serialize(value).map_err(|source| Error::Corrupt { what: "state value", source })?;
        batch.put_cf(self.db.cf(Cf::State), key(self.group, tag), bytes);
        Ok(())
    }

    /// Every value of this group whose tag is `from` or above, in tag order.
    pub fn range<T: DeserializeOwned>(&self, from: u64) -> Result<Vec<(u64, T)>, Error> {
        let start = key(self.group, from);
        let mut opts = rocksdb::ReadOptions::default();
        opts.set_iterate_upper_bound(self.group.checked_add(1).map_or(vec![0xff; 9], |g| key(g, 0).to_vec()));
        let it = self.db.rocks().iterator_cf_opt(
            self.db.cf(Cf::State),
            opts,
            rocksdb::IteratorMode::From(&start, rocksdb::Direction::Forward),
        );
        let mut out = Vec::new();
        for item in it {
            let (k, v) = item?;
            let value = bincode::deserialize(&v).map_err(|source| Error::Corrupt { what: "state value", source })?;
            out.push((key_suffix(&k), value));
        }
        Ok(out)
    }

    /// Adds the deletion of one value to `batch`.
    pub fn delete(&self, batch: &mut WriteBatch, tag: u64) {
        batch.delete_cf(self.db.cf(Cf::State), key(self.group, tag));
    }

    /// Adds the deletion of every value of this group whose tag is `from` or above.
    pub fn delete_from(&self, batch: &mut WriteBatch, from: u64) {
        let end = self.group.checked_add(1).map_or(vec![0xff; 17], |g| key(g, 0).to_vec());
        batch.delete_range_cf(self.db.cf(Cf::State), key(self.group, from).as_slice(), end.as_slice());
    }

    /// Adds the deletion of every value of this group to `batch`.
    pub fn delete_all(&self, batch: &mut WriteBatch) {
        batch.delete_range_cf(self.db.cf(Cf::State), key(self.group, 0), key(self.group + 1, 0));
    }
}

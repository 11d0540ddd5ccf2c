//! Small per-group values in [`Cf::State`], written in the same batch as the data they
//! describe.

use std::sync::Arc;

use rocksdb::WriteBatch;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{key, Cf, Db, Error, GroupId};

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

    /// Adds the deletion of every value of this group to `batch`.
    pub fn delete_all(&self, batch: &mut WriteBatch) {
        batch.delete_range_cf(self.db.cf(Cf::State), key(self.group, 0), key(self.group + 1, 0));
    }
}

//! openraft's storage conformance suite, run against the stores every group uses: the
//! controller's (raft log in RocksDB) and a partition's (raft log in segment files), each
//! with its state machine, on a fresh RocksDB per case.

use std::collections::BTreeMap;
use std::sync::Arc;

use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;
use storage::{Db, RaftLogStore, StateStore};
use tempfile::TempDir;

use super::controller::Controller;
use super::machine::StateMachine;
use super::network::{GroupNetwork, Peers};
use super::partition::{open_stores, PartitionMachine};
use super::{ControllerTypes, PartitionTypes};

fn fresh_db() -> (TempDir, Arc<Db>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = Db::open(dir.path()).expect("open db");
    (dir, db)
}

fn storage_error(e: impl std::fmt::Display) -> StorageError<u64> {
    openraft::StorageIOError::read(&std::io::Error::other(e.to_string())).into()
}

struct PartitionStores;

impl StoreBuilder<PartitionTypes, RaftLogStore<PartitionTypes>, StateMachine<PartitionMachine>, TempDir>
    for PartitionStores
{
    async fn build(
        &self,
    ) -> Result<(TempDir, RaftLogStore<PartitionTypes>, StateMachine<PartitionMachine>), StorageError<u64>> {
        let (dir, db) = fresh_db();
        let network = GroupNetwork { peers: Peers::new(1, "conformance", &BTreeMap::new(), None), group: 7 };
        let (log, sm, _) = open_stores(&db, 7, &network).map_err(storage_error)?;
        Ok((dir, log, sm))
    }
}

struct ControllerStores;

impl StoreBuilder<ControllerTypes, RaftLogStore<ControllerTypes>, StateMachine<Controller>, TempDir>
    for ControllerStores
{
    async fn build(
        &self,
    ) -> Result<(TempDir, RaftLogStore<ControllerTypes>, StateMachine<Controller>), StorageError<u64>> {
        let (dir, db) = fresh_db();
        let (publish, _) = tokio::sync::watch::channel(Default::default());
        let sm = StateMachine::open(db.clone(), StateStore::new(db.clone(), 0), Controller::new(publish))
            .map_err(storage_error)?;
        Ok((dir, RaftLogStore::new(db, 0), sm))
    }
}

#[test]
fn partition_stores_pass_the_openraft_storage_suite() {
    Suite::test_all(PartitionStores).expect("partition stores conform");
}

#[test]
fn controller_stores_pass_the_openraft_storage_suite() {
    Suite::test_all(ControllerStores).expect("controller stores conform");
}

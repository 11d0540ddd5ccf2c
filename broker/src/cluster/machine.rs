//! The openraft state machine shared by all groups: the group-specific logic is a
//! [`Machine`], this module does storage, applied-state bookkeeping and snapshots.
//!
//! A snapshot is the machine's state (offsets, metadata) and what the machine adds to it
//! ([`Machine::snapshot_extra`]), never bulk data: it exists so raft can purge applied
//! entries. A replica that installs one fetches the data it lacks itself (for a
//! partition, the batches it lagged behind: see `partition.rs`). Building one first
//! flushes the memtables, because state machine writes skip the WAL (see `storage::db`).

use std::future::Future;
use std::io::Cursor;
use std::sync::Arc;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    AnyError, Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftSnapshotBuilder, RaftTypeConfig,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership,
};
use rocksdb::WriteBatch;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use storage::{Db, Durability, StateStore};

use openraft::BasicNode;

const TAG_APPLIED: u64 = 1;
const TAG_SNAPSHOT: u64 = 2;

/// Group-specific state machine logic.
pub trait Machine: Send + Sync + 'static {
    type C: RaftTypeConfig<NodeId = u64, Node = BasicNode, Entry = Entry<Self::C>, SnapshotData = Cursor<Vec<u8>>>;
    /// The state a snapshot carries and `applied_state` restores.
    type State: Serialize + DeserializeOwned + Default + Clone + Send + Sync;

    /// Applies one command, adding its writes to `wb`. Must be deterministic.
    fn apply(
        &mut self,
        wb: &mut WriteBatch,
        log_id: &LogId<u64>,
        cmd: <Self::C as RaftTypeConfig>::D,
    ) -> <Self::C as RaftTypeConfig>::R;

    /// A new leader's blank entry, first of its term.
    fn on_blank(&mut self, _wb: &mut WriteBatch, _log_id: &LogId<u64>) {}

    /// The response for entries that carry no command.
    fn empty_response(&self) -> <Self::C as RaftTypeConfig>::R;

    fn state(&self) -> &Self::State;
    fn restore(&mut self, state: Self::State);

    /// What a snapshot carries besides [`Machine::state`], as of the last apply.
    fn snapshot_extra(&self) -> Result<Vec<u8>, storage::Error> {
        Ok(Vec::new())
    }

    /// Installs a snapshot another replica built (`state` and `extra` as its
    /// [`Machine::state`] and [`Machine::snapshot_extra`] gave them): writes go to `wb`,
    /// written with the applied state, or are written before. An error here stops the
    /// group's raft, so a machine retries what can succeed later.
    fn install(
        &mut self,
        _wb: &mut WriteBatch,
        _meta: &SnapshotMeta<u64, BasicNode>,
        state: Self::State,
        _extra: Vec<u8>,
    ) -> impl Future<Output = Result<(), storage::Error>> + Send {
        self.restore(state);
        async { Ok(()) }
    }

    /// Called after a batch of entries is written, to publish the new state.
    fn published(&mut self) {}
}

#[derive(Serialize, Deserialize, Clone, Default)]
struct Applied<S> {
    log_id: Option<LogId<u64>>,
    membership: StoredMembership<u64, BasicNode>,
    state: S,
}

/// A snapshot's bytes.
#[derive(Serialize, Deserialize)]
struct SnapshotBytes<S> {
    applied: Applied<S>,
    extra: Vec<u8>,
}

/// An openraft state machine around a [`Machine`].
pub struct StateMachine<M: Machine> {
    db: Arc<Db>,
    store: StateStore,
    machine: M,
    applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, BasicNode>,
}

fn io_err(verb: ErrorVerb, e: impl std::error::Error + 'static) -> StorageError<u64> {
    StorageIOError::new(ErrorSubject::StateMachine, verb, AnyError::new(&e)).into()
}

impl<M: Machine> StateMachine<M> {
    /// Opens the machine with the state last written for `store`'s group.
    pub fn open(db: Arc<Db>, store: StateStore, mut machine: M) -> Result<Self, storage::Error> {
        let applied: Applied<M::State> = store.get(TAG_APPLIED)?.unwrap_or_default();
        machine.restore(applied.state);
        Ok(StateMachine { db, store, machine, applied: applied.log_id, membership: applied.membership })
    }

    pub fn machine(&self) -> &M {
        &self.machine
    }

    /// Raft index of the last entry applied, as stored.
    pub fn applied_index(&self) -> Option<u64> {
        self.applied.map(|l| l.index)
    }

    fn save_applied(&self, wb: &mut WriteBatch) -> Result<(), StorageError<u64>> {
        let applied =
            Applied { log_id: self.applied, membership: self.membership.clone(), state: self.machine.state().clone() };
        self.store.put(wb, TAG_APPLIED, &applied).map_err(|e| io_err(ErrorVerb::Write, e))
    }

    fn snapshot_of(&self) -> Result<Snapshot<M::C>, StorageError<u64>> {
        let applied =
            Applied { log_id: self.applied, membership: self.membership.clone(), state: self.machine.state().clone() };
        let extra = self.machine.snapshot_extra().map_err(|e| io_err(ErrorVerb::Read, e))?;
        let data = bincode::serialize(&SnapshotBytes { applied, extra }).map_err(|e| io_err(ErrorVerb::Read, e))?;
        let meta = SnapshotMeta {
            last_log_id: self.applied,
            last_membership: self.membership.clone(),
            snapshot_id: format!("{}", self.applied.map(|l| l.index).unwrap_or(0)),
        };
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}

/// Writes the memtables to SST files: what applies wrote without the WAL becomes durable.
async fn flush(db: &Arc<Db>) -> Result<(), StorageError<u64>> {
    let db = db.clone();
    tokio::task::spawn_blocking(move || db.flush_memtables())
        .await
        .map_err(|e| io_err(ErrorVerb::Write, e))?
        .map_err(|e| io_err(ErrorVerb::Write, e))
}

/// Builds snapshots from the machine's state at the moment it is asked.
pub struct SnapshotBuilder<M: Machine> {
    db: Arc<Db>,
    snapshot: Result<Snapshot<M::C>, StorageError<u64>>,
    store: StateStore,
}

impl<M: Machine> RaftSnapshotBuilder<M::C> for SnapshotBuilder<M> {
    async fn build_snapshot(&mut self) -> Result<Snapshot<M::C>, StorageError<u64>> {
        // Everything applied up to the snapshot must be in SST files before raft may purge
        // the entries that could rebuild it.
        flush(&self.db).await?;
        let snapshot = std::mem::replace(
            &mut self.snapshot,
            Err(io_err(ErrorVerb::Read, std::io::Error::other("snapshot taken"))),
        )?;
        let mut wb = WriteBatch::default();
        self.store
            .put(&mut wb, TAG_SNAPSHOT, &(snapshot.meta.clone(), snapshot.snapshot.get_ref().clone()))
            .map_err(|e| io_err(ErrorVerb::Write, e))?;
        self.db.write(wb, Durability::Wal).map_err(|e| io_err(ErrorVerb::Write, e))?;
        Ok(snapshot)
    }
}

impl<M: Machine> RaftStateMachine<M::C> for StateMachine<M> {
    type SnapshotBuilder = SnapshotBuilder<M>;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>), StorageError<u64>> {
        Ok((self.applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<<M::C as RaftTypeConfig>::R>, StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<M::C>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut wb = WriteBatch::default();
        let mut out = Vec::new();
        for entry in entries {
            self.applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => {
                    self.machine.on_blank(&mut wb, &entry.log_id);
                    out.push(self.machine.empty_response());
                }
                EntryPayload::Normal(cmd) => out.push(self.machine.apply(&mut wb, &entry.log_id, cmd)),
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), m);
                    out.push(self.machine.empty_response());
                }
            }
        }
        self.save_applied(&mut wb)?;
        // No WAL: the raft log is the durable copy and these writes are replayed from it.
        self.db.write(wb, Durability::Replayable).map_err(|e| io_err(ErrorVerb::Write, e))?;
        self.machine.published();
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder { db: self.db.clone(), snapshot: self.snapshot_of(), store: self.store.clone() }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError<u64>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<u64>> {
        let bytes = snapshot.into_inner();
        let data: SnapshotBytes<M::State> = bincode::deserialize(&bytes).map_err(|e| io_err(ErrorVerb::Read, e))?;
        // What earlier applies wrote skipped the WAL, and the entries that would replay it
        // are purged once this returns: it goes to SST files first.
        flush(&self.db).await?;
        let mut wb = WriteBatch::default();
        self.machine
            .install(&mut wb, meta, data.applied.state, data.extra)
            .await
            .map_err(|e| io_err(ErrorVerb::Write, e))?;
        self.applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.save_applied(&mut wb)?;
        // The snapshot installed is this replica's current one, to send on if it leads.
        self.store.put(&mut wb, TAG_SNAPSHOT, &(meta.clone(), bytes)).map_err(|e| io_err(ErrorVerb::Write, e))?;
        self.db.write(wb, Durability::Wal).map_err(|e| io_err(ErrorVerb::Write, e))?;
        self.machine.published();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<M::C>>, StorageError<u64>> {
        let stored: Option<(SnapshotMeta<u64, BasicNode>, Vec<u8>)> =
            self.store.get(TAG_SNAPSHOT).map_err(|e| io_err(ErrorVerb::Read, e))?;
        Ok(stored.map(|(meta, data)| Snapshot { meta, snapshot: Box::new(Cursor::new(data)) }))
    }
}

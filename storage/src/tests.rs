//! Storage tests on a real RocksDB in a temporary directory.

use std::io::Cursor;

use bytes::BytesMut;
use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
use openraft::{BasicNode, CommittedLeaderId, Entry, EntryPayload, LogId, RaftLogReader, Vote};
use rocksdb::WriteBatch;

use crate::{Db, Durability, PartitionLog, RaftLogStore};

openraft::declare_raft_types!(
    TestTypes: D = u64, R = u64, NodeId = u64, Node = BasicNode, Entry = Entry<TestTypes>, SnapshotData = Cursor<Vec<u8>>
);

fn entry(term: u64, index: u64, value: u64) -> Entry<TestTypes> {
    Entry { log_id: LogId::new(CommittedLeaderId::new(term, 1), index), payload: EntryPayload::Normal(value) }
}

/// Appends and waits for the group sync to report the entries durable.
async fn append(store: &mut RaftLogStore<TestTypes>, entries: Vec<Entry<TestTypes>>) {
    store.blocking_append(entries).await.unwrap();
}

#[tokio::test]
async fn raft_log_survives_reopen_and_groups_stay_apart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = Db::open(dir.path()).unwrap();
        let mut a = RaftLogStore::<TestTypes>::new(db.clone(), 1);
        let mut b = RaftLogStore::<TestTypes>::new(db.clone(), 2);
        append(&mut a, (1..=5).map(|i| entry(1, i, i * 10)).collect()).await;
        append(&mut b, vec![entry(3, 1, 99)]).await;
        a.save_vote(&Vote::new(4, 1)).await.unwrap();
        a.truncate(LogId::new(CommittedLeaderId::new(1, 1), 4)).await.unwrap();
        a.purge(LogId::new(CommittedLeaderId::new(1, 1), 1)).await.unwrap();
    }
    let db = Db::open(dir.path()).unwrap();
    let mut a = RaftLogStore::<TestTypes>::new(db.clone(), 1);
    let mut b = RaftLogStore::<TestTypes>::new(db.clone(), 2);
    assert_eq!(a.read_vote().await.unwrap(), Some(Vote::new(4, 1)));
    let state = a.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id.map(|l| l.index), Some(1));
    assert_eq!(state.last_log_id.map(|l| l.index), Some(3));
    let got: Vec<u64> = a.try_get_log_entries(0..10).await.unwrap().iter().map(|e| e.log_id.index).collect();
    assert_eq!(got, vec![2, 3]);
    let got = b.try_get_log_entries(..).await.unwrap();
    assert_eq!(got.len(), 1);
    assert!(matches!(got[0].payload, EntryPayload::Normal(99)));
    assert_eq!(b.read_vote().await.unwrap(), None);
}

fn put(db: &Db, log: &PartitionLog, base: i64, last: i64, max_ts: i64, body: &[u8], index: bool) {
    let mut wb = WriteBatch::default();
    log.append(&mut wb, base, last, max_ts, &[body], index);
    db.write(wb, Durability::Replayable).unwrap();
}

#[test]
fn partition_log_reads_from_the_batch_holding_an_offset() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path()).unwrap();
    let log = PartitionLog::new(db.clone(), 5);
    let other = PartitionLog::new(db.clone(), 6);
    put(&db, &log, 0, 9, 100, b"aaaa", true);
    put(&db, &log, 10, 19, 200, b"bbbb", true);
    put(&db, &log, 20, 29, 150, b"cccc", false);
    put(&db, &other, 0, 0, 1, b"zz", true);

    let mut out = BytesMut::new();
    assert_eq!(log.read_into(15, 30, 1 << 20, &mut out).unwrap(), 2);
    assert_eq!(&out[..], b"bbbbcccc");
    // At least one whole batch, whatever max_bytes says.
    let mut out = BytesMut::new();
    assert_eq!(log.read_into(0, 30, 1, &mut out).unwrap(), 1);
    assert_eq!(&out[..], b"aaaa");
    // Never past the end offset.
    let mut out = BytesMut::new();
    assert_eq!(log.read_into(0, 10, 1 << 20, &mut out).unwrap(), 1);

    assert_eq!(log.batch_for_timestamp(150).unwrap().unwrap().base_offset, 10);
    assert_eq!(log.batch_for_timestamp(100).unwrap().unwrap().base_offset, 0);
    assert!(log.batch_for_timestamp(201).unwrap().is_none());
    assert_eq!(log.max_indexed_timestamp().unwrap(), Some(200));

    let mut wb = WriteBatch::default();
    log.delete_before(&mut wb, 20).unwrap();
    db.write(wb, Durability::Wal).unwrap();
    let mut out = BytesMut::new();
    assert_eq!(log.read_into(0, 30, 1 << 20, &mut out).unwrap(), 1);
    assert_eq!(&out[..], b"cccc");
    // The head batch is indexed again, so a lookup before it lands on it.
    assert_eq!(log.batch_for_timestamp(0).unwrap().unwrap().base_offset, 20);
    assert_eq!(other.batches_from(0, 10).unwrap().len(), 1, "other partitions untouched");
}

#[test]
fn flushes_make_replayable_writes_durable() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = Db::open(dir.path()).unwrap();
        let log = PartitionLog::new(db.clone(), 1);
        put(&db, &log, 0, 0, 1, b"kept", true);
        db.flush_memtables().unwrap();
        db.flush_memtables().unwrap();
    }
    let db = Db::open(dir.path()).unwrap();
    let log = PartitionLog::new(db.clone(), 1);
    assert_eq!(log.batches_from(0, 10).unwrap().len(), 1);
}

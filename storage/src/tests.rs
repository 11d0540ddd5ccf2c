//! Storage tests on a real RocksDB in a temporary directory.

use std::io::Cursor;

use bytes::BytesMut;
use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
use openraft::{BasicNode, CommittedLeaderId, Entry, EntryPayload, LogId, RaftLogReader, Vote};
use rocksdb::WriteBatch;

use crate::{Blob, Db, Durability, HasBlobs, PartitionLog, RaftLogStore, RecordsLoc, Segments};

openraft::declare_raft_types!(
    TestTypes: D = u64, R = u64, NodeId = u64, Node = BasicNode, Entry = Entry<TestTypes>, SnapshotData = Cursor<Vec<u8>>
);

impl HasBlobs for u64 {}

/// A command that carries bytes, as a produce does.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Payload(Vec<Blob>);

impl HasBlobs for Payload {
    fn blobs_mut(&mut self) -> &mut [Blob] {
        &mut self.0
    }
}

openraft::declare_raft_types!(
    BlobTypes: D = Payload, R = u64, NodeId = u64, Node = BasicNode, Entry = Entry<BlobTypes>,
        SnapshotData = Cursor<Vec<u8>>
);

fn blob_entry(index: u64, parts: &[&[u8]]) -> Entry<BlobTypes> {
    let blobs = parts.iter().map(|p| Blob::from(bytes::Bytes::copy_from_slice(p))).collect();
    Entry { log_id: LogId::new(CommittedLeaderId::new(1, 1), index), payload: EntryPayload::Normal(Payload(blobs)) }
}

/// A log store with segment files, as partitions have, opened (and repaired) on `db`.
fn blob_store(db: &std::sync::Arc<Db>, group: u64) -> RaftLogStore<BlobTypes> {
    RaftLogStore::with_segments(db.clone(), group, Segments::open(db.segments_dir(group)).unwrap()).unwrap()
}

fn payload_of(entry: &Entry<BlobTypes>) -> Vec<Vec<u8>> {
    match &entry.payload {
        EntryPayload::Normal(p) => p.0.iter().map(|b| b.bytes.to_vec()).collect(),
        _ => vec![],
    }
}

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

#[tokio::test]
async fn stored_groups_are_found_by_raft_state_or_segment_files() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path()).unwrap();
    assert!(db.stored_groups().unwrap().is_empty());
    // A vote only; a log of many entries; entries with segment files.
    RaftLogStore::<TestTypes>::new(db.clone(), 3).save_vote(&Vote::new(1, 1)).await.unwrap();
    append(&mut RaftLogStore::<TestTypes>::new(db.clone(), 5), (1..=50).map(|i| entry(1, i, i)).collect()).await;
    blob_store(&db, 9).blocking_append(vec![blob_entry(1, &[b"x"])]).await.unwrap();
    assert_eq!(db.stored_groups().unwrap().into_iter().collect::<Vec<_>>(), [3, 5, 9]);
    // Raft state gone, segment files left (as after a crash in the middle of deleting).
    RaftLogStore::<TestTypes>::new(db.clone(), 9).destroy().unwrap();
    RaftLogStore::<TestTypes>::new(db.clone(), 5).destroy().unwrap();
    assert_eq!(db.stored_groups().unwrap().into_iter().collect::<Vec<_>>(), [3, 9]);
    Segments::open(db.segments_dir(9)).unwrap().destroy().unwrap();
    assert_eq!(db.stored_groups().unwrap().into_iter().collect::<Vec<_>>(), [3]);
}

/// Stores `body` as a batch whose first two bytes are its header: the rest goes to a
/// segment file, as the raft log store would write it, from an entry at `base + 1`.
fn put(db: &Db, log: &PartitionLog, base: i64, last: i64, max_ts: i64, body: &[u8], index: bool) {
    let entry = base as u64 + 1;
    let payload = [bytes::Bytes::copy_from_slice(&body[2..])];
    let loc = log.segments().append(entry, &payload, |_| Vec::new()).unwrap().locs[0];
    let records = RecordsLoc { segment: loc.segment, pos: loc.pos, len: loc.len };
    let mut wb = WriteBatch::default();
    log.append(&mut wb, base, last, max_ts, entry, &body[..2], records, index);
    db.write(wb, Durability::Replayable).unwrap();
}

fn partition_log(db: &std::sync::Arc<Db>, group: u64) -> PartitionLog {
    PartitionLog::new(db.clone(), group, Segments::open(db.segments_dir(group)).unwrap())
}

#[test]
fn partition_log_reads_from_the_batch_holding_an_offset() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path()).unwrap();
    let log = partition_log(&db, 5);
    let other = partition_log(&db, 6);
    put(&db, &log, 0, 9, 100, b"aaaa", true);
    put(&db, &log, 10, 19, 200, b"bbbb", true);
    put(&db, &log, 20, 29, 150, b"cccc", false);
    put(&db, &other, 0, 0, 1, b"zz", true);

    let mut out = BytesMut::new();
    assert_eq!(log.read_into(15, 30, 1 << 20, true, &mut out).unwrap(), 2);
    assert_eq!(&out[..], b"bbbbcccc");
    // At least one whole batch, whatever max_bytes says.
    let mut out = BytesMut::new();
    assert_eq!(log.read_into(0, 30, 1, true, &mut out).unwrap(), 1);
    assert_eq!(&out[..], b"aaaa");
    // Without min_one, a batch that does not fit is left out.
    let mut out = BytesMut::new();
    assert_eq!(log.read_into(0, 30, 3, false, &mut out).unwrap(), 0);
    assert!(out.is_empty());
    assert_eq!(log.read_into(0, 30, 6, false, &mut out).unwrap(), 1);
    assert_eq!(&out[..], b"aaaa");
    // Never past the end offset.
    let mut out = BytesMut::new();
    assert_eq!(log.read_into(0, 10, 1 << 20, true, &mut out).unwrap(), 1);

    assert_eq!(log.batch_for_timestamp(150).unwrap().unwrap().base_offset, 10);
    assert_eq!(log.batch_for_timestamp(100).unwrap().unwrap().base_offset, 0);
    assert!(log.batch_for_timestamp(201).unwrap().is_none());
    assert_eq!(log.max_indexed_timestamp().unwrap(), Some(200));

    let mut wb = WriteBatch::default();
    log.delete_before(&mut wb, 20).unwrap();
    db.write(wb, Durability::Wal).unwrap();
    let mut out = BytesMut::new();
    assert_eq!(log.read_into(0, 30, 1 << 20, true, &mut out).unwrap(), 1);
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
        let log = partition_log(&db, 1);
        put(&db, &log, 0, 0, 1, b"kept", true);
        db.flush_memtables().unwrap();
        db.flush_memtables().unwrap();
    }
    let db = Db::open(dir.path()).unwrap();
    let log = partition_log(&db, 1);
    assert_eq!(log.batches_from(0, 10).unwrap().len(), 1);
}

#[tokio::test]
async fn blobs_live_in_segment_files_and_come_back_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = Db::open(dir.path()).unwrap();
        let segments = Segments::open(db.segments_dir(7)).unwrap();
        let mut store = RaftLogStore::<BlobTypes>::with_segments(db.clone(), 7, segments).unwrap();
        store.blocking_append(vec![blob_entry(1, &[b"one", b"two"]), blob_entry(2, &[b"three"])]).await.unwrap();
        store.save_committed(Some(LogId::new(CommittedLeaderId::new(1, 1), 2))).await.unwrap();
    }
    // The bytes are in the segment file, not in RocksDB.
    let file = std::fs::read(dir.path().join("segments/7").join(format!("{:020}.log", 1))).unwrap();
    assert!(file.windows(6).any(|w| w == b"onetwo") && file.windows(5).any(|w| w == b"three"));
    let db = Db::open(dir.path()).unwrap();
    let stored = db.rocks().get_cf(db.cf(crate::Cf::RaftLog), crate::key(7, 2)).unwrap().unwrap();
    assert!(!stored.windows(5).any(|w| w == b"three"));
    let mut store = blob_store(&db, 7);
    let got = store.try_get_log_entries(1..3).await.unwrap();
    assert_eq!(payload_of(&got[0]), vec![b"one".to_vec(), b"two".to_vec()]);
    assert_eq!(payload_of(&got[1]), vec![b"three".to_vec()]);
}

#[tokio::test]
async fn entries_whose_bytes_were_lost_are_dropped_at_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = Db::open(dir.path()).unwrap();
        let mut store = blob_store(&db, 7);
        let entries: Vec<_> = (1..=4).map(|i| blob_entry(i, &[b"0123456789"])).collect();
        store.blocking_append(entries).await.unwrap();
        store.save_committed(Some(LogId::new(CommittedLeaderId::new(1, 1), 2))).await.unwrap();
    }
    // A machine crash kept the WAL but not the tail of the file: entry 3 is cut short.
    let db = Db::open(dir.path()).unwrap();
    let third = db.rocks().get_cf(db.cf(crate::Cf::RaftLog), crate::key(7, 3)).unwrap().unwrap();
    let third = crate::segments::RecordLoc::from_bytes(&third).unwrap();
    drop(db);
    let path = dir.path().join("segments/7").join(format!("{:020}.log", 1));
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(third.pos + 10).unwrap();
    let db = Db::open(dir.path()).unwrap();
    let mut store = blob_store(&db, 7);
    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id.map(|l| l.index), Some(2), "entries 3 and 4 are gone");
    assert_eq!(store.try_get_log_entries(1..10).await.unwrap().len(), 2);
}

#[tokio::test]
async fn entries_synced_to_segments_but_not_indexed_are_found_at_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = Db::open(dir.path()).unwrap();
        let mut store = blob_store(&db, 7);
        let entries: Vec<_> = (1..=5).map(|i| blob_entry(i, &[format!("payload {i}").as_bytes()])).collect();
        store.blocking_append(entries).await.unwrap();
        // The index entries of 3..5 were still in the WAL, unsynced, when the machine
        // went down: only the segment file was synced for them.
        let mut wb = WriteBatch::default();
        wb.delete_range_cf(db.cf(crate::Cf::RaftLog), crate::key(7, 3), crate::key(8, 0));
        db.write(wb, Durability::Wal).unwrap();
    }
    let db = Db::open(dir.path()).unwrap();
    let mut store = blob_store(&db, 7);
    let got = store.try_get_log_entries(1..10).await.unwrap();
    assert_eq!(got.iter().map(|e| e.log_id.index).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
    assert_eq!(payload_of(&got[4]), vec![b"payload 5".to_vec()]);
    // Appends go on after them.
    store.blocking_append(vec![blob_entry(6, &[b"six"])]).await.unwrap();
    assert_eq!(payload_of(&store.try_get_log_entries(6..7).await.unwrap()[0]), vec![b"six".to_vec()]);
}

#[tokio::test]
async fn truncated_entries_do_not_come_back_at_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = Db::open(dir.path()).unwrap();
        let mut store = blob_store(&db, 7);
        let entries: Vec<_> = (1..=4).map(|i| blob_entry(i, &[b"old"])).collect();
        store.blocking_append(entries).await.unwrap();
        store.truncate(LogId::new(CommittedLeaderId::new(1, 1), 3)).await.unwrap();
        store.blocking_append(vec![blob_entry(3, &[b"new"])]).await.unwrap();
        // Read back at once (from memory), and again after reopening (from the files).
        let got = store.try_get_log_entries(2..).await.unwrap();
        assert_eq!(got.iter().map(payload_of).collect::<Vec<_>>(), vec![vec![b"old".to_vec()], vec![b"new".to_vec()]]);
    }
    let db = Db::open(dir.path()).unwrap();
    let mut store = blob_store(&db, 7);
    let got = store.try_get_log_entries(1..10).await.unwrap();
    assert_eq!(got.len(), 3);
    assert_eq!(payload_of(&got[2]), vec![b"new".to_vec()]);
}

#[tokio::test]
async fn segment_files_go_once_nothing_refers_into_them() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path()).unwrap();
    let segments = Segments::open(db.segments_dir(3)).unwrap();
    // A record is 32 + 61 + 10 bytes: two per file.
    segments.set_segment_bytes(150);
    let mut store = RaftLogStore::<BlobTypes>::with_segments(db.clone(), 3, segments.clone()).unwrap();
    // 10 entries of 10 bytes: a new file every two entries (1, 3, 5, 7, 9).
    for i in 1..=10 {
        store.blocking_append(vec![blob_entry(i, &[b"0123456789"])]).await.unwrap();
    }
    assert_eq!(segments.usage().0, 5);
    segments.init_data_floor(1);
    let purge = |i| LogId::new(CommittedLeaderId::new(1, 1), i);
    // Raft purged up to 6, but the data floor keeps everything from entry 1.
    store.purge(purge(6)).await.unwrap();
    assert_eq!(segments.usage().0, 5);
    // The log start moved to the batch of entry 6 (applied at index 10): files 1 and 3 go
    // once raft has purged past that apply, file 5 stays since entry 6 is in it.
    segments.raise_data_floor(10, 6);
    store.purge(purge(8)).await.unwrap();
    assert_eq!(segments.usage().0, 5, "the raise applied at 10 waits for a purge past 10");
    store.blocking_append(vec![blob_entry(11, &[b"x"])]).await.unwrap();
    store.purge(purge(10)).await.unwrap();
    assert_eq!(segments.usage().0, 4);
    let mut names: Vec<String> =
        std::fs::read_dir(db.segments_dir(3)).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names[0], format!("{:020}.log", 5));
}

#[tokio::test]
async fn data_files_of_snapshots_are_read_back_reopened_and_freed_by_the_data_floor() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path()).unwrap();
    let segments = Segments::open(db.segments_dir(4)).unwrap();
    let mut store = RaftLogStore::<BlobTypes>::with_segments(db.clone(), 4, segments.clone()).unwrap();
    for i in 1..=3 {
        store.blocking_append(vec![blob_entry(i, &[b"entry"])]).await.unwrap();
    }
    // Batches copied for a snapshot whose last entry is 20, in two chunks.
    let first =
        segments.write_data(20, &[bytes::Bytes::from_static(b"alpha"), bytes::Bytes::from_static(b"beta")]).unwrap();
    let second = segments.write_data(20, &[bytes::Bytes::from_static(b"gamma")]).unwrap();
    assert_eq!((first[1].pos, second[0].pos), (5, 9), "appended one after the other");
    let read = |s: &Segments, l: &crate::BlobLoc| s.read(l.segment, l.pos, l.len).unwrap();
    assert_eq!(read(&segments, &first[1]), bytes::Bytes::from_static(b"beta"));
    // Truncating the raft log leaves data files alone; reopening finds them.
    segments.truncate_at(1, 0).unwrap();
    drop(store);
    let segments = Segments::open(db.segments_dir(4)).unwrap();
    assert_eq!(read(&segments, &second[0]), bytes::Bytes::from_static(b"gamma"));
    assert_eq!(segments.usage().0, 2, "the raft log file and the data file");
    // The data file stays while a batch carried by entry 20 or before is live.
    let mut store = RaftLogStore::<BlobTypes>::with_segments(db.clone(), 4, segments.clone()).unwrap();
    segments.init_data_floor(20);
    store.blocking_append(vec![blob_entry(21, &[b"after"])]).await.unwrap();
    store.purge(LogId::new(CommittedLeaderId::new(1, 1), 21)).await.unwrap();
    assert!(segments.read(first[0].segment, first[0].pos, first[0].len).is_ok());
    segments.raise_data_floor(21, 21);
    store.blocking_append(vec![blob_entry(22, &[b"later"])]).await.unwrap();
    store.purge(LogId::new(CommittedLeaderId::new(1, 1), 22)).await.unwrap();
    assert!(segments.read(first[0].segment, first[0].pos, first[0].len).is_err(), "freed");
    let names: Vec<String> =
        std::fs::read_dir(db.segments_dir(4)).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert!(!names.iter().any(|n| n.ends_with(".data")), "{names:?}");
}

#[test]
fn offsets_are_kept_per_consumer_group_and_survive_a_reopen() {
    use crate::{CommittedOffset, OffsetStore};
    let dir = tempfile::tempdir().unwrap();
    let committed =
        |offset| CommittedOffset { offset, leader_epoch: 3, metadata: format!("m{offset}"), commit_timestamp: 7 };
    {
        let db = Db::open(dir.path()).unwrap();
        let (one, two) = (OffsetStore::new(db.clone(), 1), OffsetStore::new(db.clone(), 2));
        let mut wb = WriteBatch::default();
        one.put(&mut wb, "a", "orders", 0, &committed(10)).unwrap();
        one.put(&mut wb, "a", "orders", 1, &committed(11)).unwrap();
        one.put(&mut wb, "a", "payments", 0, &committed(12)).unwrap();
        // Names that share a prefix, and another raft group, stay apart.
        one.put(&mut wb, "ab", "orders", 0, &committed(20)).unwrap();
        two.put(&mut wb, "a", "orders", 0, &committed(30)).unwrap();
        db.write(wb, Durability::Replayable).unwrap();
        db.flush_memtables().unwrap();
    }
    let db = Db::open(dir.path()).unwrap();
    let one = OffsetStore::new(db.clone(), 1);
    let listed = one.list("a").unwrap();
    assert_eq!(
        listed.iter().map(|(t, p, o)| (t.as_str(), *p, o.offset)).collect::<Vec<_>>(),
        vec![("orders", 0, 10), ("orders", 1, 11), ("payments", 0, 12)]
    );
    assert_eq!(one.get("a", "orders", 1).unwrap(), Some(committed(11)));
    assert_eq!(one.get("a", "orders", 9).unwrap(), None);
    assert_eq!(OffsetStore::new(db.clone(), 2).get("a", "orders", 0).unwrap().unwrap().offset, 30);
    assert_eq!(one.groups().unwrap(), ["a", "ab"]);
    // A group's record sits beside its offsets without being one.
    let mut wb = WriteBatch::default();
    one.put_record(&mut wb, "a", b"members of a");
    one.put_record(&mut wb, "rec-only", b"r");
    db.write(wb, Durability::Replayable).unwrap();
    assert_eq!(one.list("a").unwrap().len(), 3);
    assert_eq!(one.groups().unwrap(), ["a", "ab"], "a group with only a record has no offsets");
    assert_eq!(
        one.records().unwrap(),
        [("a".to_string(), b"members of a".to_vec()), ("rec-only".to_string(), b"r".to_vec())]
    );
    let mut wb = WriteBatch::default();
    one.delete_record(&mut wb, "rec-only");
    db.write(wb, Durability::Replayable).unwrap();
    assert_eq!(one.records().unwrap().len(), 1);
    assert_eq!(OffsetStore::new(db.clone(), 2).groups().unwrap(), ["a"]);
    assert!(OffsetStore::new(db.clone(), 3).groups().unwrap().is_empty());

    let mut wb = WriteBatch::default();
    one.delete(&mut wb, "a", "orders", 0);
    db.write(wb, Durability::Replayable).unwrap();
    assert_eq!(one.list("a").unwrap().len(), 2);
    let mut wb = WriteBatch::default();
    one.delete_group(&mut wb, "a");
    db.write(wb, Durability::Replayable).unwrap();
    assert!(one.list("a").unwrap().is_empty());
    assert_eq!(one.list("ab").unwrap().len(), 1, "a group whose name extends another's is untouched");
    assert_eq!(one.groups().unwrap(), ["ab"]);
}

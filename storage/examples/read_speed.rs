//! Measures PartitionLog append and read speed on a temp dir: `cargo run --release -p storage --example read_speed`.
use std::time::Instant;

use bytes::BytesMut;
use storage::{Db, Durability, PartitionLog, RecordsLoc, Segments};

fn main() {
    let dir = std::env::temp_dir().join(format!("read-speed-{}", std::process::id()));
    let db = Db::open(&dir).unwrap();
    let log = PartitionLog::new(db.clone(), 7, Segments::open(db.segments_dir(7)).unwrap());
    let batch = vec![7u8; 1 << 20];
    let t = Instant::now();
    for i in 0..200i64 {
        let payload = [bytes::Bytes::copy_from_slice(&batch[61..])];
        let loc = log.segments().append(i as u64 + 1, &payload, |_| Vec::new()).unwrap().locs[0];
        let records = RecordsLoc { segment: loc.segment, pos: loc.pos, len: loc.len };
        let mut wb = rocksdb::WriteBatch::default();
        log.append(&mut wb, i * 10_000, i * 10_000 + 9_999, i, i as u64 + 1, &batch[..61], records, true);
        db.write(wb, Durability::Replayable).unwrap();
    }
    println!("append 200 MiB: {:?}", t.elapsed());
    for round in 0..2 {
        let t = Instant::now();
        let mut total = 0;
        let mut offset = 0;
        while offset < 2_000_000 {
            let mut out = BytesMut::new();
            let n = log.read_into(offset, 2_000_000, 10 << 20, true, &mut out).unwrap();
            total += out.len();
            offset += n as i64 * 10_000;
        }
        println!("round {round}: read {} MiB in {:?}", total >> 20, t.elapsed());
        if round == 0 {
            db.flush_memtables().unwrap();
        }
    }
    drop(log);
    drop(db);
    std::fs::remove_dir_all(&dir).unwrap();
}

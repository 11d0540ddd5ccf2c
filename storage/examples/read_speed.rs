//! Measures PartitionLog append and read speed on a temp dir: `cargo run --release -p storage --example read_speed`.
use std::time::Instant;

use bytes::BytesMut;
use storage::{Db, Durability, PartitionLog};

fn main() {
    let dir = std::env::temp_dir().join(format!("read-speed-{}", std::process::id()));
    let db = Db::open(&dir).unwrap();
    let log = PartitionLog::new(db.clone(), 7);
    let batch = vec![7u8; 1 << 20];
    let t = Instant::now();
    for i in 0..200i64 {
        let mut wb = rocksdb::WriteBatch::default();
        log.append(&mut wb, i * 10_000, i * 10_000 + 9_999, i, &[&batch], true);
        db.write(wb, Durability::Replayable).unwrap();
    }
    println!("append 200 MiB: {:?}", t.elapsed());
    for round in 0..2 {
        let t = Instant::now();
        let mut total = 0;
        let mut offset = 0;
        while offset < 2_000_000 {
            let mut out = BytesMut::new();
            let n = log.read_into(offset, 2_000_000, 10 << 20, &mut out).unwrap();
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

//! Idempotent producers at the wire level: InitProducerId, retried batches stored once,
//! sequence gaps and stale epochs refused, producer state kept across a restart.

use kafka_protocol::ResponseError;
use tests::requests::*;
use tests::*;

fn records(tag: &str, n: usize) -> Vec<TestRecord> {
    (0..n).map(|i| TestRecord::new(&format!("k{i}"), &format!("{tag}-{i}"), 1_000 + i as i64)).collect()
}

/// Produces an idempotent batch: `(error, base offset)`.
async fn send(c: &mut Client, topic: &str, records: &[TestRecord], id: i64, epoch: i16, seq: i32) -> (i16, i64) {
    let r = produce(c, topic, 0, encode_producer_batch(records, id, epoch, seq), -1).await.unwrap();
    (r.error_code, r.base_offset)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_ids_are_unique_durable_and_epochs_bump() {
    let dir = temp_dir();
    let server = start(test_config(dir.path())).await;
    let mut c = Client::connect(server.kafka_addr).await;
    let (err, first, epoch) = init_producer_id(&mut c, None, None).await;
    assert_eq!((err, epoch), (0, 0));
    let (_, second, _) = init_producer_id(&mut c, None, None).await;
    assert_ne!(first, second);
    // A producer that asks with its current id and epoch gets the next epoch (KIP-360).
    assert_eq!(init_producer_id(&mut c, Some((first, 0)), None).await, (0, first, 1));
    assert_eq!(init_producer_id(&mut c, Some((first, 7)), None).await, (0, first, 8));
    // An id never handed out, or half of one, is refused.
    let unknown = init_producer_id(&mut c, Some((1 << 40, 0)), None).await;
    assert_eq!(unknown.0, ResponseError::InvalidProducerIdMapping.code());
    assert_eq!(init_producer_id(&mut c, Some((first, -1)), None).await.0, ResponseError::InvalidRequest.code());
    // Transactions are not implemented; a transactional id gets a clear refusal.
    let txn = init_producer_id(&mut c, None, Some("txn-1")).await;
    assert_eq!(txn.0, ResponseError::TransactionalIdAuthorizationFailed.code());
    drop(c);
    server.shutdown().await;

    // Ids handed out before the restart are never handed out again.
    let server = start(test_config(dir.path())).await;
    let mut c = Client::connect(server.kafka_addr).await;
    let (err, third, _) = init_producer_id(&mut c, None, None).await;
    assert_eq!(err, 0);
    assert!(third > first.max(second), "{third} after {first} and {second}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_batches_are_stored_once_and_gaps_and_old_epochs_refused() {
    let dir = temp_dir();
    let server = start(test_config(dir.path())).await;
    let mut c = Client::connect(server.kafka_addr).await;
    assert_eq!(create_topic(&mut c, "idem", 1, &[]).await, 0);
    let (_, id, _) = init_producer_id(&mut c, None, None).await;

    let a = records("a", 3);
    assert_eq!(send(&mut c, "idem", &a, id, 0, 0).await, (0, 0));
    // The same batch again (a retry after a lost response): answered with its offset.
    assert_eq!(send(&mut c, "idem", &a, id, 0, 0).await, (0, 0));
    let b = records("b", 2);
    assert_eq!(send(&mut c, "idem", &b, id, 0, 3).await, (0, 3));
    assert_eq!(send(&mut c, "idem", &a, id, 0, 0).await, (0, 0));
    // A gap: sequence 9 when 5 is next.
    let gap = send(&mut c, "idem", &records("gap", 1), id, 0, 9).await;
    assert_eq!(gap.0, ResponseError::OutOfOrderSequenceNumber.code());
    // A new epoch starts at 0; after it, the old epoch is fenced.
    let bumped = send(&mut c, "idem", &records("late", 1), id, 1, 4).await;
    assert_eq!(bumped.0, ResponseError::OutOfOrderSequenceNumber.code());
    let c1 = records("c", 2);
    assert_eq!(send(&mut c, "idem", &c1, id, 1, 0).await, (0, 5));
    let stale = send(&mut c, "idem", &records("stale", 1), id, 0, 5).await;
    assert_eq!(stale.0, ResponseError::InvalidProducerEpoch.code());
    // Non-idempotent batches are not affected.
    let plain = produce(&mut c, "idem", 0, encode_batch(&records("plain", 1)), -1).await.unwrap();
    assert_eq!(plain.base_offset, 7);

    let data = fetch(&mut c, "idem", 0, 0, 0, 1).await;
    assert_eq!(data.high_watermark, 8);
    assert_eq!(values(data), ["a-0", "a-1", "a-2", "b-0", "b-1", "c-0", "c-1", "plain-0"]);
    drop(c);
    server.shutdown().await;

    // After a restart the partition still knows the producer's recent batches.
    let server = start(test_config(dir.path())).await;
    let mut c = Client::connect(server.kafka_addr).await;
    assert_eq!(send(&mut c, "idem", &c1, id, 1, 0).await, (0, 5));
    let gap = send(&mut c, "idem", &records("gap", 1), id, 1, 3).await;
    assert_eq!(gap.0, ResponseError::OutOfOrderSequenceNumber.code());
    assert_eq!(send(&mut c, "idem", &records("d", 1), id, 1, 2).await, (0, 8));
    let data = fetch(&mut c, "idem", 0, 0, 0, 1).await;
    assert_eq!(data.high_watermark, 9);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_producers_expire() {
    let dir = temp_dir();
    let config = broker::config::Config { producer_id_expiration_ms: 300, ..test_config(dir.path()) };
    let server = start(config).await;
    let mut c = Client::connect(server.kafka_addr).await;
    assert_eq!(create_topic(&mut c, "exp", 1, &[]).await, 0);
    let (_, id, _) = init_producer_id(&mut c, None, None).await;
    assert_eq!(send(&mut c, "exp", &records("a", 1), id, 0, 0).await, (0, 0));
    let gap = send(&mut c, "exp", &records("x", 1), id, 0, 7).await;
    assert_eq!(gap.0, ResponseError::OutOfOrderSequenceNumber.code());
    // Expiry runs on the partition's clock, the leader's time of each produce applied.
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    // The producer is forgotten: like a new one, it may start at any sequence.
    assert_eq!(send(&mut c, "exp", &records("y", 1), id, 0, 7).await, (0, 1));
    server.shutdown().await;
}

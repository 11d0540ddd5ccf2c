//! kill -9 during an acks=all produce load: after a restart every acknowledged record is
//! there, at the offset it was acknowledged with, exactly once. With idempotent producers,
//! the batches in flight at the kill are sent again after the restart, as a client's
//! retries would be, and are still stored once.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tests::requests::*;
use tests::*;
use tokio::sync::Mutex;

struct Process {
    child: Child,
    port: u16,
}

async fn spawn_node(dir: &std::path::Path) -> Process {
    let port = free_port();
    let child = Command::new(quarry_binary())
        .args(["serve", "--data-dir"])
        .arg(dir)
        .args(["--kafka-listen", &format!("127.0.0.1:{port}"), "--http-listen", &format!("127.0.0.1:{}", free_port())])
        // Nodes run side by side: the SQL listener takes any free port.
        .args(["--sql-listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start quarry");
    for _ in 0..600 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Process { child, port };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("quarry did not start listening on {port}");
}

/// What a producer saw acknowledged: payload id -> (partition, offset).
type Acked = Arc<Mutex<HashMap<u64, (i32, i64)>>>;

const PARTITIONS: i32 = 3;
const PRODUCERS: u64 = 4;

/// A batch sent, with the ids of its records.
#[derive(Clone)]
struct Sent {
    partition: i32,
    ids: Vec<u64>,
    batch: Bytes,
}

async fn record_ack(acked: &Acked, sent: &Sent, base: i64) {
    let mut a = acked.lock().await;
    for (i, id) in sent.ids.iter().enumerate() {
        let at = (sent.partition, base + i as i64);
        // A retry of an acknowledged batch must be acknowledged at the same offsets.
        assert_eq!(*a.entry(*id).or_insert(at), at, "record {id:#x} acknowledged at two offsets");
    }
}

/// Produces batches of 10 records round-robin over the partitions until the node fails;
/// returns the batch that was in flight then (unacknowledged) and the last acknowledged
/// one. `producer_id` makes the batches idempotent (epoch 0, sequences per partition).
async fn produce_until_error(
    port: u16,
    producer: u64,
    producer_id: Option<i64>,
    acked: Acked,
) -> (Option<Sent>, Option<Sent>) {
    let mut c = Client::connect(([127, 0, 0, 1], port).into()).await;
    let mut sequences = [0i32; PARTITIONS as usize];
    let mut last_acked = None;
    for n in 0u64.. {
        let partition = (n % PARTITIONS as u64) as i32;
        // Each record's value names its producer and sequence.
        let ids: Vec<u64> = (0..10).map(|i| producer << 40 | n << 8 | i).collect();
        let records: Vec<TestRecord> =
            ids.iter().map(|id| TestRecord::new("k", &id.to_string(), broker::now_ms())).collect();
        let batch = match producer_id {
            Some(pid) => {
                let seq = &mut sequences[partition as usize];
                let batch = encode_producer_batch(&records, pid, 0, *seq);
                *seq += records.len() as i32;
                batch
            }
            None => encode_batch(&records),
        };
        let sent = Sent { partition, ids, batch };
        let resp = tokio::time::timeout(
            Duration::from_secs(5),
            produce_checked(&mut c, "crash", partition, sent.batch.clone()),
        )
        .await;
        match resp {
            Ok(Some(base)) => {
                record_ack(&acked, &sent, base).await;
                last_acked = Some(sent);
            }
            _ => return (Some(sent), last_acked),
        }
    }
    unreachable!()
}

/// Produces with acks=all; `None` if the connection failed or the broker refused.
async fn produce_checked(c: &mut Client, topic: &str, partition: i32, batch: Bytes) -> Option<i64> {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ApiKey, ProduceRequest, RequestKind, ResponseKind, TopicName};
    let req = ProduceRequest::default().with_acks(-1).with_timeout_ms(10_000).with_topic_data(vec![
        TopicProduceData::default()
            .with_name(TopicName(topic.to_string().into()))
            .with_partition_data(vec![PartitionProduceData::default().with_index(partition).with_records(Some(batch))]),
    ]);
    c.try_send(ApiKey::Produce, 9, &RequestKind::Produce(req)).await?;
    let frame = c.read_frame().await?;
    let (_, ResponseKind::Produce(r)) = protocol::frame::decode_response(frame, ApiKey::Produce, 9).ok()? else {
        return None;
    };
    let p = &r.responses[0].partition_responses[0];
    (p.error_code == 0).then_some(p.base_offset)
}

/// A new producer id from the node.
async fn init_producer_id(c: &mut Client) -> i64 {
    use kafka_protocol::messages::{InitProducerIdRequest, ProducerId, RequestKind, ResponseKind};
    let req = InitProducerIdRequest::default().with_producer_id(ProducerId(-1)).with_producer_epoch(-1);
    match c.call(4, RequestKind::InitProducerId(req)).await {
        ResponseKind::InitProducerId(r) if r.error_code == 0 => r.producer_id.0,
        other => panic!("InitProducerId failed: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_survive_kill_9() {
    kill_9_under_load(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_retries_after_kill_9_are_stored_once() {
    kill_9_under_load(true).await;
}

async fn kill_9_under_load(idempotent: bool) {
    let _serial = one_at_a_time().await;
    init_tracing();
    let dir = temp_dir();
    let mut node = spawn_node(dir.path()).await;
    let mut admin = Client::connect(([127, 0, 0, 1], node.port).into()).await;
    assert_eq!(create_topic(&mut admin, "crash", PARTITIONS, &[]).await, 0);
    let mut producer_ids = Vec::new();
    for _ in 0..PRODUCERS {
        producer_ids.push(if idempotent { Some(init_producer_id(&mut admin).await) } else { None });
    }
    drop(admin);

    let acked: Acked = Default::default();
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| tokio::spawn(produce_until_error(node.port, p, producer_ids[p as usize], acked.clone())))
        .collect();
    // Kill once a good number of writes were acknowledged, with the load still running.
    for _ in 0..600 {
        if acked.lock().await.len() >= 80_000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    node.child.kill().expect("kill -9");
    node.child.wait().unwrap();
    let mut retries = Vec::new();
    for p in producers {
        let (in_flight, last_acked) = p.await.unwrap();
        retries.extend(in_flight.into_iter().chain(last_acked));
    }
    let before = acked.lock().await.len();
    assert!(before >= 1_000, "only {before} records acknowledged before the kill");

    let mut node = spawn_node(dir.path()).await;
    let mut c = Client::connect(([127, 0, 0, 1], node.port).into()).await;
    if idempotent {
        // The client's retries: the batch each producer had in flight (stored or not
        // before the kill) and its last acknowledged one, byte for byte.
        for sent in &retries {
            let base = produce_checked(&mut c, "crash", sent.partition, sent.batch.clone()).await;
            record_ack(&acked, sent, base.expect("a retried batch is accepted")).await;
        }
    }
    let acked = acked.lock().await.clone();
    let mut seen: HashMap<u64, Vec<(i32, i64)>> = HashMap::new();
    for partition in 0..PARTITIONS {
        let mut offset = 0;
        loop {
            let data = fetch(&mut c, "crash", partition, offset, 0, 1).await;
            assert_eq!(data.error_code, 0);
            let records = decode_records(data.records.unwrap_or_default());
            let Some(last) = records.last() else { break };
            offset = last.0 + 1;
            for (o, r) in records {
                let id: u64 = std::str::from_utf8(r.value.as_deref().unwrap()).unwrap().parse().unwrap();
                seen.entry(id).or_default().push((partition, o));
            }
            if offset >= data.high_watermark {
                break;
            }
        }
    }
    for (id, at) in &acked {
        assert_eq!(seen.get(id), Some(&vec![*at]), "acknowledged record {id:#x} must be stored once at {at:?}");
    }
    assert!(seen.values().all(|v| v.len() == 1), "no record is stored twice");
    println!(
        "acknowledged {before} records before kill -9, {} with retries; all present once after restart ({} stored)",
        acked.len(),
        seen.len()
    );
    node.child.kill().unwrap();
    node.child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_cleanly_and_data_is_kept() {
    let _serial = one_at_a_time().await;
    init_tracing();
    let dir = temp_dir();
    let mut node = spawn_node(dir.path()).await;
    let mut c = Client::connect(([127, 0, 0, 1], node.port).into()).await;
    assert_eq!(create_topic(&mut c, "t", 1, &[]).await, 0);
    let resp = produce(&mut c, "t", 0, encode_batch(&[TestRecord::new("k", "v", broker::now_ms())]), -1).await.unwrap();
    assert_eq!(resp.error_code, 0);
    let pid = node.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = tokio::task::spawn_blocking(move || node.child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "quarry exits 0 on SIGTERM, got {status}");
    assert!(c.is_closed(Duration::from_secs(10)).await, "connections are closed");

    let mut node = spawn_node(dir.path()).await;
    let mut c = Client::connect(([127, 0, 0, 1], node.port).into()).await;
    let data = fetch(&mut c, "t", 0, 0, 0, 1).await;
    assert_eq!(data.high_watermark, 1);
    node.child.kill().unwrap();
    node.child.wait().unwrap();
}

//! A short Jepsen-style run on three real nodes: idempotent acks=all producers write while
//! a nemesis kills nodes with SIGKILL and restarts them. At the end every acknowledged
//! record is stored exactly once, at the offset it was acknowledged with, in its
//! producer's order within its partition, and every replica holds the same records.
//! Partitions snapshot every 64 entries, so restarted nodes often catch up from a
//! snapshot. `QUARRY_NEMESIS_SECS` sets how long the nemesis runs (default 120).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, ProduceRequest, RequestKind, ResponseKind, TopicName};
use tests::requests::*;
use tests::*;
use tokio::sync::Mutex;

const TOPIC: &str = "jepsen";
const PARTITIONS: i32 = 3;
const PRODUCERS: u64 = 3;

struct Process {
    id: u64,
    kafka: u16,
    raft: u16,
    http: u16,
    dir: PathBuf,
    /// A config file for what no flag sets.
    config: PathBuf,
    child: Option<Child>,
}

/// A node left running when a test fails is killed with its test.
impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Process {
    fn spawn(&mut self, peers: &str) {
        let child = Command::new(quarry_binary())
            .args(["serve", "--node-id", &self.id.to_string(), "--data-dir"])
            .arg(&self.dir)
            .arg("--config")
            .arg(&self.config)
            .args(["--kafka-listen", &format!("127.0.0.1:{}", self.kafka)])
            .args(["--raft-listen", &format!("127.0.0.1:{}", self.raft), "--peers", peers])
            .args(["--http-listen", &format!("127.0.0.1:{}", self.http), "--sql-listen", "127.0.0.1:0"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("start quarry");
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A client of node 1 once it listens (it does once the controller has a leader), or
/// `None` if a node exits first or a minute passes.
async fn first_listening(nodes: &mut [Process]) -> Option<Client> {
    for _ in 0..1200 {
        if let Some(c) = Client::try_connect(([127, 0, 0, 1], nodes[0].kafka).into()).await {
            return Some(c);
        }
        for n in nodes.iter_mut() {
            if let Some(Ok(Some(status))) = n.child.as_mut().map(|c| c.try_wait()) {
                eprintln!("node {} exited at start ({status}); starting again", n.id);
                return None;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// Files under `dir` (at any depth) whose names end with `suffix`.
fn files_ending(dir: &std::path::Path, suffix: &str) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => files_ending(&e.path(), suffix),
            _ => usize::from(e.file_name().to_string_lossy().ends_with(suffix)),
        })
        .sum()
}

/// A small deterministic random source (xorshift).
struct Random(u64);

impl Random {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Produces with acks=all to `port`; the base offset, or the error code (-1: no answer).
async fn produce_at(port: u16, partition: i32, batch: Bytes) -> Result<i64, i16> {
    let attempt = async {
        let mut c = Client::try_connect(([127, 0, 0, 1], port).into()).await?;
        let req = ProduceRequest::default().with_acks(-1).with_timeout_ms(5_000).with_topic_data(vec![
            TopicProduceData::default().with_name(TopicName(TOPIC.to_string().into())).with_partition_data(vec![
                PartitionProduceData::default().with_index(partition).with_records(Some(batch)),
            ]),
        ]);
        c.try_send(ApiKey::Produce, 9, &RequestKind::Produce(req)).await?;
        let frame = c.read_frame().await?;
        let (_, ResponseKind::Produce(r)) = protocol::frame::decode_response(frame, ApiKey::Produce, 9).ok()? else {
            return None;
        };
        let p = &r.responses[0].partition_responses[0];
        Some(if p.error_code == 0 { Ok(p.base_offset) } else { Err(p.error_code) })
    };
    tokio::time::timeout(Duration::from_secs(8), attempt).await.ok().flatten().unwrap_or(Err(-1))
}

/// The Kafka port of each partition's leader, asked of any node that answers.
async fn leader_ports(ports: &[u16]) -> Option<Vec<u16>> {
    for port in ports {
        let ask = async {
            let mut c = Client::try_connect(([127, 0, 0, 1], *port).into()).await?;
            let m = try_metadata(&mut c).await?;
            let by_id: HashMap<i32, u16> = m.brokers.iter().map(|b| (b.node_id.0, b.port as u16)).collect();
            let t = m.topics.first()?;
            t.partitions
                .iter()
                .map(|p| (p.error_code == 0).then(|| by_id.get(&p.leader_id.0).copied()).flatten())
                .collect()
        };
        if let Ok(Some(l)) = tokio::time::timeout(Duration::from_secs(3), ask).await {
            return Some(l);
        }
    }
    None
}

/// Metadata of the topic, if the node answers (it may die meanwhile).
async fn try_metadata(c: &mut Client) -> Option<kafka_protocol::messages::MetadataResponse> {
    use kafka_protocol::messages::{metadata_request, MetadataRequest};
    let req = MetadataRequest::default().with_topics(Some(vec![
        metadata_request::MetadataRequestTopic::default().with_name(Some(TopicName(TOPIC.to_string().into())))
    ]));
    c.try_send(ApiKey::Metadata, 12, &RequestKind::Metadata(req)).await?;
    let frame = c.read_frame().await?;
    match protocol::frame::decode_response(frame, ApiKey::Metadata, 12).ok()? {
        (_, ResponseKind::Metadata(m)) => Some(m),
        _ => None,
    }
}

/// What was acknowledged: record id -> (partition, offset).
type Acked = Arc<Mutex<HashMap<u64, (i32, i64)>>>;

/// Writes batches of 5 records round robin over the partitions until `stop`, each batch
/// retried (same producer id and sequence) at whichever node leads its partition until
/// it is acknowledged.
async fn producer(ports: Vec<u16>, p: u64, pid: i64, stop: Arc<AtomicBool>, acked: Acked) -> (u64, u64) {
    let mut sequences = [0i32; PARTITIONS as usize];
    let mut leaders: Option<Vec<u16>> = None;
    let (mut batches, mut retries) = (0u64, 0u64);
    for n in 0u64.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let partition = (n % PARTITIONS as u64) as i32;
        let ids: Vec<u64> = (0..5).map(|i| p << 40 | n << 8 | i).collect();
        let records: Vec<TestRecord> = ids.iter().map(|id| TestRecord::new("k", &id.to_string(), 1000)).collect();
        let seq = &mut sequences[partition as usize];
        let batch = encode_producer_batch(&records, pid, 0, *seq);
        *seq += records.len() as i32;
        let give_up = Instant::now() + Duration::from_secs(90);
        loop {
            if leaders.is_none() {
                leaders = leader_ports(&ports).await;
            }
            let port = leaders.as_ref().map(|l| l[partition as usize]);
            let answer = match port {
                Some(port) => produce_at(port, partition, batch.clone()).await,
                None => Err(-1),
            };
            match answer {
                Ok(base) => {
                    let mut a = acked.lock().await;
                    for (i, id) in ids.iter().enumerate() {
                        let at = (partition, base + i as i64);
                        assert_eq!(*a.entry(*id).or_insert(at), at, "record {id:#x} acknowledged at two offsets");
                    }
                    break;
                }
                // Not the leader, no answer, no leader yet: find the leader again.
                Err(code) if [-1, 6, 5, 7, 3].contains(&code) => {
                    retries += 1;
                    leaders = None;
                    assert!(Instant::now() < give_up, "batch {n} of producer {p} not acknowledged in 90 s");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(code) => panic!("producer {p} batch {n}: error {code}"),
            }
        }
        batches += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (batches, retries)
}

/// Every record of a partition in one node's replica, read with SQL (a follower serves
/// no Kafka fetches): (offset, id).
async fn read_all(http: u16, partition: i32) -> Vec<(i64, u64)> {
    // A node restarted last may not listen yet.
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = ([127, 0, 0, 1], http).into();
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "port {http} does not accept connections");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sql =
        format!("SELECT _offset, text(_value) AS id FROM {TOPIC} WHERE _partition = {partition} ORDER BY _offset");
    let (status, body) = sql_http(addr, &sql).await;
    assert_eq!(status, 200, "{body}");
    body["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|row| (row[0].as_i64().expect("offset"), row[1].as_str().expect("id").parse().expect("numeric id")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_records_survive_kill_9_of_any_node() {
    let _serial = one_at_a_time().await;
    init_tracing();
    let secs: u64 = std::env::var("QUARRY_NEMESIS_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(120);
    let dirs: Vec<_> = (0..3).map(|_| temp_dir()).collect();
    // Partitions snapshot (and purge their raft log) every 64 entries, so a node that was
    // down a second or two usually comes back behind the purged log and catches up from
    // a snapshot, copying the records it missed.
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(config.path(), "raft_snapshot_entries = 64\n").unwrap();
    let mut nodes: Vec<Process> = (0..3)
        .map(|i| Process {
            id: i as u64 + 1,
            kafka: 0,
            raft: 0,
            http: 0,
            dir: dirs[i].path().to_path_buf(),
            config: config.path().to_path_buf(),
            child: None,
        })
        .collect();
    // Ports are picked free but bound later, by the nodes: a test running beside this one
    // may take one first. Then a node exits before it listens, and all start again, with
    // fresh ports and empty directories.
    let mut peers = String::new();
    let mut admin = None;
    for _ in 0..3 {
        for n in nodes.iter_mut() {
            n.kill();
            n.kafka = free_port();
            n.raft = free_port();
            n.http = free_port();
            let _ = std::fs::remove_dir_all(&n.dir);
            std::fs::create_dir_all(&n.dir).unwrap();
        }
        peers = nodes.iter().map(|n| format!("{}=127.0.0.1:{}", n.id, n.raft)).collect::<Vec<_>>().join(",");
        for n in nodes.iter_mut() {
            n.spawn(&peers);
        }
        admin = first_listening(&mut nodes).await;
        if admin.is_some() {
            break;
        }
    }
    let ports: Vec<u16> = nodes.iter().map(|n| n.kafka).collect();
    let mut admin = admin.expect("node 1 listens");
    assert_eq!(create_topic(&mut admin, TOPIC, PARTITIONS, &[]).await, 0);
    let mut pids = Vec::new();
    for _ in 0..PRODUCERS {
        use kafka_protocol::messages::{InitProducerIdRequest, ProducerId};
        let req = InitProducerIdRequest::default().with_producer_id(ProducerId(-1)).with_producer_epoch(-1);
        match admin.call(4, RequestKind::InitProducerId(req)).await {
            ResponseKind::InitProducerId(r) if r.error_code == 0 => pids.push(r.producer_id.0),
            other => panic!("InitProducerId failed: {other:?}"),
        }
    }
    drop(admin);

    let stop = Arc::new(AtomicBool::new(false));
    let acked: Acked = Default::default();
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| tokio::spawn(producer(ports.clone(), p, pids[p as usize], stop.clone(), acked.clone())))
        .collect();

    // The nemesis: one node at a time killed with SIGKILL, then restarted.
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    println!("nemesis seed {seed}");
    let mut random = Random(seed);
    let end = Instant::now() + Duration::from_secs(secs);
    let mut kills = 0;
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(1500 + random.below(2000))).await;
        let victim = random.below(3) as usize;
        nodes[victim].kill();
        kills += 1;
        tokio::time::sleep(Duration::from_millis(500 + random.below(2500))).await;
        nodes[victim].spawn(&peers);
    }
    stop.store(true, Ordering::Relaxed);
    let (mut batches, mut retries) = (0, 0);
    for p in producers {
        let (b, r) = p.await.expect("producer");
        batches += b;
        retries += r;
    }
    let acked = acked.lock().await.clone();
    assert!(acked.len() >= 100, "only {} records acknowledged", acked.len());

    // Every replica converges on the same records, which hold every acknowledged one once.
    let leaders = {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(l) = leader_ports(&ports).await {
                break l;
            }
            assert!(Instant::now() < deadline, "no leaders after the nemesis");
        }
    };
    let mut seen: HashMap<u64, Vec<(i32, i64)>> = HashMap::new();
    let http_of = |kafka: u16| nodes.iter().find(|n| n.kafka == kafka).expect("a node's port").http;
    for partition in 0..PARTITIONS {
        let on_leader = read_all(http_of(leaders[partition as usize]), partition).await;
        for (o, id) in &on_leader {
            seen.entry(*id).or_default().push((partition, *o));
        }
        // Within a partition each producer's records are in the order it wrote them.
        let mut last: HashMap<u64, u64> = HashMap::new();
        for (_, id) in &on_leader {
            let (producer, n) = (id >> 40, id & ((1 << 40) - 1));
            if let Some(before) = last.insert(producer, n) {
                assert!(n > before, "partition {partition}: producer {producer} record {n:#x} after {before:#x}");
            }
        }
        for port in nodes.iter().map(|n| n.http) {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let replica = read_all(port, partition).await;
                if replica == on_leader {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "replica on port {port} of partition {partition} has {} records, the leader {}",
                    replica.len(),
                    on_leader.len()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    for (id, at) in &acked {
        assert_eq!(seen.get(id), Some(&vec![*at]), "acknowledged record {id:#x} must be stored once at {at:?}");
    }
    assert!(seen.values().all(|v| v.len() == 1), "no record is stored twice");
    // Batches a replica copied when it installed a snapshot lie in `.data` files.
    let copied = nodes.iter().map(|n| files_ending(&n.dir, ".data")).sum::<usize>();
    println!(
        "nemesis: {secs} s, {kills} kill -9 + restart; {batches} batches, {retries} retries; {} records acknowledged, \
         all present once on every replica ({} stored); {copied} snapshot installs copied batches",
        acked.len(),
        seen.len()
    );
    for n in nodes.iter_mut() {
        n.kill();
    }
}

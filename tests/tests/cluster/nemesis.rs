//! A short Jepsen-style run on three real nodes: idempotent acks=all producers write, and
//! a consumer group reads and commits, while a nemesis kills nodes with SIGKILL and
//! restarts them, or cuts one off from the others (the nodes' fault hook, over HTTP) and
//! heals it. At the end every acknowledged record is stored exactly once, at the offset
//! it was acknowledged with, in its producer's order within its partition, every replica
//! holds the same records, and the group's committed offsets never went back (every
//! OffsetFetch answered at least the last acknowledged commit). Partitions snapshot every
//! 64 entries, so restarted nodes often catch up from a snapshot. `QUARRY_NEMESIS_SECS`
//! sets how long the nemesis runs (default 120).

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
const GROUP: &str = "jepsen-readers";

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

/// Asks `body` of the node listening on Kafka port `port` on a new connection; `None` if
/// it does not answer within 6 s (it may be down or cut off).
async fn ask(port: u16, version: i16, body: RequestKind) -> Option<ResponseKind> {
    let call = async {
        let mut c = Client::try_connect(([127, 0, 0, 1], port).into()).await?;
        c.try_call(version, body).await
    };
    tokio::time::timeout(Duration::from_secs(6), call).await.ok().flatten()
}

/// Posts to a fault-injection route of the node with HTTP port `http`; whether it answered.
async fn fault(http: u16, route: &str) -> bool {
    let path = format!("/faults/{route}");
    let call = tests::http(([127, 0, 0, 1], http).into(), "POST", &path, "");
    matches!(tokio::time::timeout(Duration::from_secs(5), call).await, Ok(Some((200, _))))
}

/// The group's committed offset of each partition (-1: none), as its coordinator at
/// `port` answers; `None` if it does not (moved, loading, down).
async fn committed_offsets(port: u16) -> Option<[i64; PARTITIONS as usize]> {
    use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
    use kafka_protocol::messages::{GroupId, OffsetFetchRequest};
    let req = OffsetFetchRequest::default().with_group_id(GroupId(GROUP.to_string().into())).with_topics(Some(vec![
        OffsetFetchRequestTopic::default()
            .with_name(TopicName(TOPIC.to_string().into()))
            .with_partition_indexes((0..PARTITIONS).collect()),
    ]));
    let Some(ResponseKind::OffsetFetch(r)) = ask(port, 7, RequestKind::OffsetFetch(req)).await else { return None };
    if r.error_code != 0 {
        return None;
    }
    let mut out = [-1; PARTITIONS as usize];
    for p in &r.topics.first()?.partitions {
        if p.error_code != 0 {
            return None;
        }
        out[p.partition_index as usize] = p.committed_offset;
    }
    Some(out)
}

/// Commits `positions` for the member in `generation` at the coordinator at `port`: the
/// first error code of the answer (0: all committed), `None` without an answer.
async fn commit(port: u16, generation: i32, member: &str, positions: &[i64]) -> Option<i16> {
    use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
    use kafka_protocol::messages::{GroupId, OffsetCommitRequest};
    let partitions = positions
        .iter()
        .enumerate()
        .map(|(p, o)| OffsetCommitRequestPartition::default().with_partition_index(p as i32).with_committed_offset(*o))
        .collect();
    let req = OffsetCommitRequest::default()
        .with_group_id(GroupId(GROUP.to_string().into()))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(member.to_string().into())
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(TOPIC.to_string().into()))
            .with_partitions(partitions)]);
    let Some(ResponseKind::OffsetCommit(r)) = ask(port, 8, RequestKind::OffsetCommit(req)).await else { return None };
    Some(r.topics.iter().flat_map(|t| &t.partitions).map(|p| p.error_code).find(|c| *c != 0).unwrap_or(0))
}

/// The offset after the last record a fetch at `offset` from the leader at `port` returns
/// (`offset` itself if none); `None` on an error or no answer.
async fn fetch_next(port: u16, partition: i32, offset: i64) -> Option<i64> {
    let req = fetch_request(TOPIC, partition, offset, 100, 1, -1);
    let Some(ResponseKind::Fetch(mut r)) = ask(port, 12, RequestKind::Fetch(req)).await else { return None };
    let data = r.responses.pop()?.partitions.pop()?;
    if data.error_code != 0 {
        return None;
    }
    let records = decode_records(data.records.unwrap_or_default());
    Some(records.iter().map(|(o, _)| o + 1).filter(|next| *next > offset).max().unwrap_or(offset))
}

/// What the consumer group did.
#[derive(Debug, Default)]
struct GroupReport {
    joins: u64,
    commits: u64,
    /// OffsetFetch answers checked against the last acknowledged commit.
    checks: u64,
    consumed: i64,
    /// The last acknowledged commit of each partition (-1: none yet).
    committed: [i64; PARTITIONS as usize],
}

impl GroupReport {
    /// Committed offsets read back may be ahead of the last acknowledged commit (one not
    /// answered may have been written) but never behind it.
    fn check(&mut self, read: &[i64; PARTITIONS as usize]) {
        for p in 0..PARTITIONS as usize {
            assert!(
                read[p] >= self.committed[p],
                "partition {p}: the committed offset read back is {} after a commit of {} was acknowledged",
                read[p],
                self.committed[p]
            );
        }
        self.checks += 1;
    }
}

/// One consumer of group [`GROUP`] reading every partition from its leader and committing
/// its positions after each round, until `stop`. It finds the coordinator through any
/// node, and when the coordinator fails it finds it again, joins again and goes on from
/// the committed offsets, which it checks against its acknowledged commits every time.
async fn consumer(ports: Vec<u16>, stop: Arc<AtomicBool>) -> GroupReport {
    let mut report = GroupReport { committed: [-1; PARTITIONS as usize], ..Default::default() };
    let mut member = String::new();
    let mut turn = 0;
    'session: while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        turn += 1;
        let asked = ports[turn % ports.len()];
        let coordinator = match ask(asked, 3, RequestKind::FindCoordinator(find_coordinator_request(GROUP))).await {
            Some(ResponseKind::FindCoordinator(f)) if f.error_code == 0 => f.port as u16,
            _ => continue,
        };
        // A new member is first handed its id, then joins with it.
        let mut generation = None;
        for _ in 0..2 {
            match ask(coordinator, 9, RequestKind::JoinGroup(join_group_request(GROUP, &member))).await {
                Some(ResponseKind::JoinGroup(j)) if j.error_code == 0 => {
                    member = j.member_id.to_string();
                    generation = Some(j.generation_id);
                    break;
                }
                Some(ResponseKind::JoinGroup(j)) if j.error_code == 79 => member = j.member_id.to_string(),
                // Forgotten (the session expired while the coordinator moved): join anew.
                Some(ResponseKind::JoinGroup(j)) if j.error_code == 25 => member.clear(),
                _ => break,
            }
        }
        let Some(generation) = generation else { continue };
        report.joins += 1;
        match ask(coordinator, 5, RequestKind::SyncGroup(sync_group_request(GROUP, &member, generation))).await {
            Some(ResponseKind::SyncGroup(s)) if s.error_code == 0 => {}
            _ => continue,
        }
        let Some(start) = committed_offsets(coordinator).await else { continue };
        report.check(&start);
        let mut positions = start.map(|o| o.max(0));
        while !stop.load(Ordering::Relaxed) {
            let Some(leaders) = leader_ports(&ports).await else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            for (p, position) in positions.iter_mut().enumerate() {
                if let Some(next) = fetch_next(leaders[p], p as i32, *position).await {
                    report.consumed += next - *position;
                    *position = next;
                }
            }
            match commit(coordinator, generation, &member, &positions).await {
                Some(0) => {
                    report.committed = positions;
                    report.commits += 1;
                }
                Some(code) => {
                    // Coordinator moved or loading, generation or member stale, rebalance,
                    // timed out: find the coordinator and join again. Anything else is a bug.
                    assert!([7, 14, 15, 16, 22, 25, 27].contains(&code), "commit failed with error {code}");
                    continue 'session;
                }
                None => continue 'session,
            }
            match committed_offsets(coordinator).await {
                Some(read) => report.check(&read),
                None => continue 'session,
            }
            match ask(coordinator, 4, RequestKind::Heartbeat(heartbeat_request(GROUP, &member, generation))).await {
                Some(ResponseKind::Heartbeat(h)) if h.error_code == 0 => {}
                _ => continue 'session,
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    report
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
    std::fs::write(
        config.path(),
        "raft_snapshot_entries = 64\nfault_injection = true\ngroup_initial_rebalance_delay_ms = 0\n",
    )
    .unwrap();
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
    let readers = tokio::spawn(consumer(ports.clone(), stop.clone()));

    // The nemesis: one node at a time killed with SIGKILL and restarted, or cut off from
    // the others and healed.
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    println!("nemesis seed {seed}");
    let mut random = Random(seed);
    let end = Instant::now() + Duration::from_secs(secs);
    let (mut kills, mut isolations) = (0, 0);
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(1500 + random.below(2000))).await;
        let victim = random.below(3) as usize;
        let down = Duration::from_millis(500 + random.below(2500));
        if random.below(3) == 0 {
            // A node just restarted may not listen yet: then this round cuts nothing.
            if fault(nodes[victim].http, "isolate").await {
                isolations += 1;
                tokio::time::sleep(down).await;
                assert!(fault(nodes[victim].http, "heal").await, "node {} does not answer heal", nodes[victim].id);
            }
        } else {
            nodes[victim].kill();
            kills += 1;
            tokio::time::sleep(down).await;
            nodes[victim].spawn(&peers);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut group = readers.await.expect("consumer");
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

    // The group's commits: at least one acknowledged, and the committed offsets read from
    // the coordinator now are no older than the last acknowledged ones, and no further
    // than the records there are.
    assert!(group.commits > 0, "no commit acknowledged: {group:?}");
    let last = {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut read = None;
            for port in &ports {
                if let Some(ResponseKind::FindCoordinator(f)) =
                    ask(*port, 3, RequestKind::FindCoordinator(find_coordinator_request(GROUP))).await
                {
                    if f.error_code == 0 {
                        read = committed_offsets(f.port as u16).await;
                        break;
                    }
                }
            }
            if let Some(read) = read {
                break read;
            }
            assert!(Instant::now() < deadline, "no coordinator answers OffsetFetch after the nemesis");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    group.check(&last);
    for partition in 0..PARTITIONS {
        let records = seen.values().filter(|v| v[0].0 == partition).count() as i64;
        assert!(last[partition as usize] <= records, "partition {partition}: committed {last:?}, {records} records");
    }
    // Batches a replica copied when it installed a snapshot lie in `.data` files.
    let copied = nodes.iter().map(|n| files_ending(&n.dir, ".data")).sum::<usize>();
    println!(
        "nemesis: {secs} s, {kills} kill -9 + restart, {isolations} isolations; {batches} batches, {retries} retries; \
         {} records acknowledged, all present once on every replica ({} stored); {copied} snapshot installs copied \
         batches; consumer group: {} joins, {} records consumed, {} commits, {} committed offsets read back, none \
         behind an acknowledged commit",
        acked.len(),
        seen.len(),
        group.joins,
        group.consumed,
        group.commits,
        group.checks
    );
    for n in nodes.iter_mut() {
        n.kill();
    }
}

//! Three nodes on loopback forming one cluster: the controller group spans them, every
//! partition is replicated by its own raft group, and a partition's records survive the
//! loss of its leader.

mod membership;
mod nemesis;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use kafka_protocol::messages::MetadataResponse;
use tests::requests::*;
use tests::*;

/// Configs of three nodes that name each other as peers.
fn three_configs(dirs: &[tempfile::TempDir]) -> Vec<Config> {
    let mut configs: Vec<Config> =
        (0..3).map(|i| Config { node_id: i as u64 + 1, ..test_config(dirs[i].path()) }).collect();
    fresh_raft_ports(&mut configs);
    configs
}

fn fresh_raft_ports(configs: &mut [Config]) {
    let raft: Vec<u16> = configs.iter().map(|_| free_port()).collect();
    let peers = raft.iter().enumerate().map(|(i, port)| format!("{}=127.0.0.1:{port}", i + 1)).collect::<Vec<_>>();
    for (c, port) in configs.iter_mut().zip(&raft) {
        c.raft_listen = format!("127.0.0.1:{port}");
        c.peers = peers.join(",");
    }
}

/// Starts the three nodes together (each waits for a controller leader, which needs a
/// quorum). Their raft ports are picked free but bound later: should one be taken in
/// between (by another test, or as the local port of a connection between the nodes),
/// all start again on fresh ports with empty directories.
async fn start_three(configs: &mut [Config]) -> Vec<Server> {
    init_tracing();
    for attempt in 0.. {
        let (a, b, c) = tokio::join!(
            Server::start(configs[0].clone()),
            Server::start(configs[1].clone()),
            Server::start(configs[2].clone())
        );
        let started: Vec<Result<Server, _>> = vec![a, b, c];
        if started.iter().all(|s| s.is_ok()) {
            return started.into_iter().map(|s| s.unwrap()).collect();
        }
        for s in started {
            match s {
                Ok(s) => s.shutdown().await,
                Err(e) => eprintln!("a node did not start ({e:#}); starting all three again"),
            }
        }
        assert!(attempt < 3, "three nodes did not start");
        fresh_raft_ports(configs);
        for c in configs.iter() {
            std::fs::remove_dir_all(&c.data_dir).unwrap();
            std::fs::create_dir_all(&c.data_dir).unwrap();
        }
    }
    unreachable!()
}

async fn three_nodes(dirs: &[tempfile::TempDir]) -> Vec<Server> {
    start_three(&mut three_configs(dirs)).await
}

/// Waits until every node knows the three brokers (each registers once it is up).
async fn three_registered(servers: &[Server]) -> MetadataResponse {
    eventually("three registered brokers", || async {
        let mut c = Client::connect(servers[1].kafka_addr).await;
        let m = metadata(&mut c, &[], false).await;
        (m.brokers.len() == 3).then_some(m)
    })
    .await
}

/// The leader of each partition of `topic`, as `servers[at]` reports them once all have one.
async fn topic_leaders(servers: &[Server], at: usize, topic: &str) -> (MetadataResponse, Vec<i32>) {
    eventually("partition leaders", || async {
        let mut c = Client::connect(servers[at].kafka_addr).await;
        let m = metadata(&mut c, &[topic], false).await;
        leaders(&m).map(|l| (m, l))
    })
    .await
}

/// Polls `f` until it returns `Some`, for at most 30 s.
async fn eventually<T, F: std::future::Future<Output = Option<T>>>(what: &str, mut f: impl FnMut() -> F) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The leader of each partition of `topic` per `m`, once all have one.
fn leaders(m: &MetadataResponse) -> Option<Vec<i32>> {
    let t = m.topics.first()?;
    if t.error_code != 0 || t.partitions.is_empty() {
        return None;
    }
    t.partitions.iter().map(|p| (p.error_code == 0 && p.leader_id.0 >= 0).then_some(p.leader_id.0)).collect()
}

/// The leader of partition 0 of `topic` as the node at `addr` reports it, once it is
/// another than `old`.
async fn leader_other_than(addr: std::net::SocketAddr, topic: &str, old: i32) -> i32 {
    leader_other_than_in(addr, topic, 0, old).await
}

/// The leader of `partition` of `topic` as the node at `addr` reports it, once it is
/// another than `old`.
async fn leader_other_than_in(addr: std::net::SocketAddr, topic: &str, partition: i32, old: i32) -> i32 {
    eventually("a new leader", || async {
        let m = metadata(&mut Client::connect(addr).await, &[topic], false).await;
        let p = m.topics.first()?.partitions.iter().find(|p| p.partition_index == partition)?;
        (p.error_code == 0 && p.leader_id.0 >= 0 && p.leader_id.0 != old).then_some(p.leader_id.0)
    })
    .await
}

fn kafka_addr(servers: &[Server], id: i32) -> std::net::SocketAddr {
    servers.iter().find(|s| s.node.config.node_id == id as u64).expect("node").kafka_addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_replicate_partitions_and_survive_a_leader() {
    let _serial = one_at_a_time().await;
    let dirs: Vec<_> = (0..3).map(|_| temp_dir()).collect();
    let mut servers = three_nodes(&dirs).await;

    // Every node learns the three brokers and the controller.
    let mut c = Client::connect(servers[1].kafka_addr).await;
    let m = three_registered(&servers).await;
    let ids: BTreeSet<i32> = m.brokers.iter().map(|b| b.node_id.0).collect();
    assert_eq!(ids, BTreeSet::from([1, 2, 3]));
    assert!(m.controller_id.0 >= 1, "controller {:?}", m.controller_id);

    // A topic created through any node: three replicas per partition, on every node.
    assert_eq!(create_topic(&mut c, "t", 3, &[]).await, 0);
    let (m, leaders) = topic_leaders(&servers, 2, "t").await;
    for p in &m.topics[0].partitions {
        let replicas: BTreeSet<i32> = p.replica_nodes.iter().map(|b| b.0).collect();
        assert_eq!(replicas, BTreeSet::from([1, 2, 3]), "partition {}", p.partition_index);
    }

    // Each partition takes records at its leader (acks=all), and a follower refuses them.
    for (partition, leader) in leaders.iter().enumerate() {
        let mut c = Client::connect(kafka_addr(&servers, *leader)).await;
        let records: Vec<TestRecord> = (0..10).map(|i| TestRecord::new("k", &format!("v{i}"), 1000 + i)).collect();
        let r = produce(&mut c, "t", partition as i32, encode_batch(&records), -1).await.unwrap();
        assert_eq!((r.error_code, r.base_offset), (0, 0), "partition {partition}");
        let follower = (1..=3).find(|id| id != leader).unwrap();
        let mut f = Client::connect(kafka_addr(&servers, follower)).await;
        let r = produce(&mut f, "t", partition as i32, encode_batch(&records[..1]), -1).await.unwrap();
        assert_eq!(r.error_code, 6, "NOT_LEADER_OR_FOLLOWER from node {follower}");
    }
    // Every replica holds them.
    for s in &servers {
        for partition in 0..3 {
            eventually("replicated records", || async {
                let p = s.node.partition("t", partition)?;
                (p.offsets().high_watermark == 10).then_some(())
            })
            .await;
        }
    }

    // Consumers read from the leader at its epoch (the raft term, as Metadata says).
    let m = metadata(&mut c, &["t"], false).await;
    let epoch = m.topics[0].partitions[0].leader_epoch;
    assert!(epoch >= 1, "leader epoch {epoch}");
    let mut lc = Client::connect(kafka_addr(&servers, leaders[0])).await;
    let follower = (1..=3).find(|id| *id != leaders[0]).unwrap();
    let mut fc = Client::connect(kafka_addr(&servers, follower)).await;
    assert_eq!(fetch(&mut fc, "t", 0, 0, 0, 1).await.error_code, 6, "NOT_LEADER_OR_FOLLOWER from a follower");
    assert_eq!(list_offset(&mut fc, "t", 0, -1).await.0, 6);
    assert_eq!(fetch_at_epoch(&mut lc, "t", 0, 0, 0, 1, epoch).await.error_code, 0);
    assert_eq!(fetch_at_epoch(&mut lc, "t", 0, 0, 0, 1, epoch - 1).await.error_code, 74, "FENCED_LEADER_EPOCH");
    assert_eq!(fetch_at_epoch(&mut lc, "t", 0, 0, 0, 1, epoch + 1).await.error_code, 75, "UNKNOWN_LEADER_EPOCH");
    assert_eq!(epoch_end(&mut lc, "t", 0, epoch, epoch).await, (0, epoch, 10));
    assert_eq!(epoch_end(&mut fc, "t", 0, epoch, epoch).await.0, 6);

    // The leader of partition 0 stops: another replica takes over with every record, and
    // takes new ones.
    let old = leaders[0];
    let at = servers.iter().position(|s| s.node.config.node_id == old as u64).unwrap();
    servers.remove(at).shutdown().await;
    let new = leader_other_than(servers[0].kafka_addr, "t", old).await;
    let mut c = Client::connect(kafka_addr(&servers, new)).await;
    let r = produce(&mut c, "t", 0, encode_batch(&[TestRecord::new("k", "after", 2000)]), -1).await.unwrap();
    assert_eq!((r.error_code, r.base_offset), (0, 10));
    let data = fetch(&mut c, "t", 0, 0, 0, 1).await;
    let records = decode_records(data.records.unwrap());
    assert_eq!(records.len(), 11);
    assert_eq!(records.iter().map(|(o, _)| *o).collect::<Vec<_>>(), (0..11).collect::<Vec<_>>());
    // A new epoch, which began where the old one ended.
    let m = metadata(&mut c, &["t"], false).await;
    let new_epoch = m.topics[0].partitions[0].leader_epoch;
    assert!(new_epoch > epoch, "epoch {new_epoch} after {epoch}");
    assert_eq!(epoch_end(&mut c, "t", 0, new_epoch, epoch).await, (0, epoch, 10));
    assert_eq!(epoch_end(&mut c, "t", 0, new_epoch, new_epoch).await, (0, new_epoch, 11));
    assert_eq!(fetch_at_epoch(&mut c, "t", 0, 0, 0, 1, epoch).await.error_code, 74);

    for s in servers {
        s.shutdown().await;
    }
}

/// A replica that was down while its group snapshotted and purged the entries it missed
/// catches up from a snapshot: it copies the batches it lacks from another replica, and
/// the snapshot brings the idempotent producers' state. It can then lead.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_behind_the_purged_log_catches_up_from_a_snapshot() {
    let _serial = one_at_a_time().await;
    let dirs: Vec<_> = (0..3).map(|_| temp_dir()).collect();
    // A snapshot every 16 entries, so a few dozen produce requests purge the log.
    let mut configs: Vec<Config> =
        three_configs(&dirs).into_iter().map(|c| Config { raft_snapshot_entries: 16, ..c }).collect();
    let mut servers = start_three(&mut configs).await;
    three_registered(&servers).await;
    let mut c = Client::connect(servers[0].kafka_addr).await;
    assert_eq!(create_topic(&mut c, "s", 1, &[]).await, 0);
    let (_, leaders) = topic_leaders(&servers, 0, "s").await;
    let leader = leaders[0];
    let mut lc = Client::connect(kafka_addr(&servers, leader)).await;
    let first = [TestRecord::new("k", "first", 1000)];
    let r = produce(&mut lc, "s", 0, encode_batch(&first), -1).await.unwrap();
    assert_eq!((r.error_code, r.base_offset), (0, 0));
    for s in &servers {
        eventually("the first record everywhere", || async {
            (s.node.partition("s", 0)?.offsets().high_watermark == 1).then_some(())
        })
        .await;
    }

    // A follower stops; the partition goes on without it.
    let lagging = servers.iter().position(|s| s.node.config.node_id != leader as u64).unwrap();
    let lagging_id = servers[lagging].node.config.node_id;
    let last_seen = servers[lagging].node.partition("s", 0).unwrap().raft.metrics().borrow().last_log_index.unwrap();
    servers.remove(lagging).shutdown().await;
    let (code, producer_id, epoch) = init_producer_id(&mut lc, None, None).await;
    assert_eq!(code, 0);
    let batches = 60;
    for i in 0..batches {
        let records: Vec<TestRecord> =
            (0..3).map(|j| TestRecord::new("k", &format!("v{i}-{j}"), 2000 + i as i64)).collect();
        let batch = encode_producer_batch(&records, producer_id, epoch, 3 * i);
        let r = produce(&mut lc, "s", 0, batch, -1).await.unwrap();
        assert_eq!((r.error_code, r.base_offset), (0, 1 + 3 * i as i64), "batch {i}");
    }
    let high_watermark = 1 + 3 * batches as i64;
    let leading = servers.iter().find(|s| s.node.config.node_id == leader as u64).unwrap();
    let p = leading.node.partition("s", 0).unwrap();
    let purged = eventually("the leader purging its log", || async {
        let purged = p.raft.metrics().borrow().purged.map(|l| l.index)?;
        (purged > last_seen + 1).then_some(purged)
    })
    .await;

    // Back, it is sent a snapshot (the entries it missed are gone) and copies the batches.
    let back = start(configs[lagging].clone()).await;
    let q = eventually("the lagging replica caught up", || async {
        let q = back.node.partition("s", 0)?;
        (q.offsets().high_watermark == high_watermark).then_some(q)
    })
    .await;
    let theirs = p.log.batches_from(0, 10_000).unwrap();
    let ours = q.log.batches_from(0, 10_000).unwrap();
    assert_eq!(ours.len(), batches as usize + 1);
    assert_eq!(ours, theirs, "the copied batches are the leader's");
    assert_eq!(q.offsets(), p.offsets());
    assert_eq!(q.producers().unwrap(), p.producers().unwrap());
    let data_files = std::fs::read_dir(back.node.db.segments_dir(q.group))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".data"))
        .count();
    assert_eq!(data_files, 1, "batches copied for a snapshot (purged up to {purged})");
    servers.push(back);

    // The leader stops: whichever replica takes over (the one that caught up, or the
    // other) has every record, knows the producer (a retry of its last batch is a
    // duplicate) and takes new records after them.
    let at = servers.iter().position(|s| s.node.config.node_id == leader as u64).unwrap();
    servers.remove(at).shutdown().await;
    let new = leader_other_than(servers[0].kafka_addr, "s", leader).await;
    let mut nc = Client::connect(kafka_addr(&servers, new)).await;
    let last: Vec<TestRecord> =
        (0..3).map(|j| TestRecord::new("k", &format!("v{}-{j}", batches - 1), 2000 + batches as i64 - 1)).collect();
    let retry = encode_producer_batch(&last, producer_id, epoch, 3 * (batches - 1));
    let r = produce(&mut nc, "s", 0, retry, -1).await.unwrap();
    assert_eq!((r.error_code, r.base_offset), (0, high_watermark - 3), "a retry on node {new}");
    let next = encode_producer_batch(&[TestRecord::new("k", "after", 9000)], producer_id, epoch, 3 * batches);
    let r = produce(&mut nc, "s", 0, next, -1).await.unwrap();
    assert_eq!((r.error_code, r.base_offset), (0, high_watermark), "on node {new}");
    // The replica that caught up holds every record, the new one included.
    let leading = servers.iter().find(|s| s.node.config.node_id == new as u64).unwrap();
    let lagging = servers.iter().find(|s| s.node.config.node_id == lagging_id).unwrap();
    let (p, q) = (leading.node.partition("s", 0).unwrap(), lagging.node.partition("s", 0).unwrap());
    eventually("every record on the replica that caught up", || async {
        let ours = q.log.batches_from(0, 10_000).ok()?;
        (ours.len() == batches as usize + 2 && ours == p.log.batches_from(0, 10_000).ok()?).then_some(())
    })
    .await;
    for s in servers {
        s.shutdown().await;
    }
}

/// A consumer group's coordinator is the leader of its offsets partition; when that node
/// stops, the new leader coordinates the group and knows its members in their generation.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_consumer_group_moves_with_its_coordinator() {
    let _serial = one_at_a_time().await;
    let dirs: Vec<_> = (0..3).map(|_| temp_dir()).collect();
    let mut configs: Vec<Config> = three_configs(&dirs)
        .into_iter()
        .map(|c| Config { offsets_topic_num_partitions: 1, group_initial_rebalance_delay_ms: 0, ..c })
        .collect();
    let mut servers = start_three(&mut configs).await;
    three_registered(&servers).await;
    let coordinator_seen_by = |addr| async move {
        let (error, id) = find_coordinator(&mut Client::connect(addr).await, "g").await;
        (error == 0).then_some(id)
    };
    let first = servers[0].kafka_addr;
    let coordinator = eventually("a coordinator", || coordinator_seen_by(first)).await;
    let mut cc = Client::connect(kafka_addr(&servers, coordinator)).await;
    let member = join_group(&mut cc, "g", "").await.member_id.to_string();
    let joined = join_group(&mut cc, "g", &member).await;
    assert_eq!((joined.error_code, joined.generation_id), (0, 1));
    assert_eq!(sync_group(&mut cc, "g", &member, 1).await.error_code, 0);
    assert_eq!(heartbeat(&mut cc, "g", &member, 1).await, 0);
    // The group's record reaches every replica of the offsets partition through raft.
    for s in &servers {
        eventually("the group record on every replica", || async {
            let p = s.node.partition("__consumer_offsets", 0)?;
            (p.offsets_store.records().ok()?.len() == 1).then_some(())
        })
        .await;
    }
    let follower = (1..=3).find(|id| *id != coordinator).unwrap();
    let mut fc = Client::connect(kafka_addr(&servers, follower)).await;
    assert_eq!(heartbeat(&mut fc, "g", &member, 1).await, 16, "NOT_COORDINATOR off the leader");

    let at = servers.iter().position(|s| s.node.config.node_id == coordinator as u64).unwrap();
    servers.remove(at).shutdown().await;
    let survivor = servers[0].kafka_addr;
    let new = eventually("a new coordinator", || async {
        coordinator_seen_by(survivor).await.filter(|id| *id != coordinator)
    })
    .await;
    let new_addr = kafka_addr(&servers, new);
    let beat = eventually("the member's heartbeat at the new coordinator", || async {
        let code = heartbeat(&mut Client::connect(new_addr).await, "g", &member, 1).await;
        (code != 16 && code != 14 && code != 15).then_some(code)
    })
    .await;
    assert_eq!(beat, 0, "the member carries on in generation 1 on node {new}");
    for s in servers {
        s.shutdown().await;
    }
}

/// A leader cut off from the other nodes can no longer acknowledge a write: the others
/// elect a new leader that takes records, and once the network heals the old leader's
/// unacknowledged write is gone and its replica holds the new leader's records.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_isolated_leader_acknowledges_nothing() {
    let _serial = one_at_a_time().await;
    let dirs: Vec<_> = (0..3).map(|_| temp_dir()).collect();
    let servers = three_nodes(&dirs).await;
    three_registered(&servers).await;
    let mut c = Client::connect(servers[0].kafka_addr).await;
    assert_eq!(create_topic(&mut c, "i", 1, &[]).await, 0);
    let (_, leaders) = topic_leaders(&servers, 0, "i").await;
    let old = leaders[0];
    let isolated = servers.iter().find(|s| s.node.config.node_id == old as u64).unwrap();
    let mut oc = Client::connect(isolated.kafka_addr).await;
    let r = produce(&mut oc, "i", 0, encode_batch(&[TestRecord::new("k", "before", 1000)]), -1).await.unwrap();
    assert_eq!((r.error_code, r.base_offset), (0, 0));

    isolated.node.peers.set_isolated(true);
    let cut_off = tokio::spawn(async move {
        let r = produce(&mut oc, "i", 0, encode_batch(&[TestRecord::new("k", "cut off", 2000)]), -1).await;
        r.map(|r| r.error_code)
    });
    // The others elect a leader among themselves, which takes records after offset 0.
    let others: Vec<&Server> = servers.iter().filter(|s| s.node.config.node_id != old as u64).collect();
    let new = leader_other_than(others[0].kafka_addr, "i", old).await;
    let mut nc = Client::connect(kafka_addr(&servers, new)).await;
    let r = produce(&mut nc, "i", 0, encode_batch(&[TestRecord::new("k", "after", 3000)]), -1).await.unwrap();
    assert_eq!((r.error_code, r.base_offset), (0, 1));
    assert!(!cut_off.is_finished(), "the isolated leader answered a write it cannot commit");

    isolated.node.peers.set_isolated(false);
    let answer = tokio::time::timeout(Duration::from_secs(30), cut_off).await.expect("an answer once healed");
    assert_ne!(answer.unwrap(), Some(0), "the cut-off write was never acknowledged");
    let p = isolated.node.partition("i", 0).unwrap();
    let q = others[0].node.partition("i", 0).unwrap();
    eventually("the old leader holding the new leader's records", || async {
        let ours = p.log.batches_from(0, 100).ok()?;
        (ours.len() == 2 && ours == q.log.batches_from(0, 100).ok()?).then_some(())
    })
    .await;
    let values: Vec<_> = decode_records(
        p.log
            .batches_from(0, 100)
            .unwrap()
            .into_iter()
            .fold(bytes::BytesMut::new(), |mut b, batch| {
                b.extend_from_slice(&batch.bytes);
                b
            })
            .freeze(),
    )
    .into_iter()
    .map(|(o, r)| (o, r.value.unwrap()))
    .collect();
    assert_eq!(values, vec![(0, bytes::Bytes::from("before")), (1, bytes::Bytes::from("after"))]);
    for s in servers {
        s.shutdown().await;
    }
}

/// CreateTopics honours a replication factor and replica assignments, and every node
/// names the leader of every partition, whether it holds a replica or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replication_factors_and_assignments_are_honoured() {
    let _serial = one_at_a_time().await;
    let dirs: Vec<_> = (0..3).map(|_| temp_dir()).collect();
    let servers = three_nodes(&dirs).await;
    three_registered(&servers).await;
    let mut c = Client::connect(servers[0].kafka_addr).await;
    assert_eq!(create_placed_topic(&mut c, "one", 3, 1, &[]).await, 0);
    assert_eq!(create_placed_topic(&mut c, "four", 1, 4, &[]).await, 38, "INVALID_REPLICATION_FACTOR");
    assert_eq!(create_placed_topic(&mut c, "fixed", -1, -1, &[&[3, 1], &[2, 3]]).await, 0);
    assert_eq!(create_placed_topic(&mut c, "twice", -1, -1, &[&[1, 1]]).await, 39, "INVALID_REPLICA_ASSIGNMENT");
    assert_eq!(create_placed_topic(&mut c, "nobody", -1, -1, &[&[9]]).await, 39);
    assert_eq!(create_placed_topic(&mut c, "ragged", -1, -1, &[&[1, 2], &[3]]).await, 39);

    for s in &servers {
        let addr = s.kafka_addr;
        let m = eventually("every partition's leader from every node", || async {
            let m = metadata(&mut Client::connect(addr).await, &["one", "fixed"], false).await;
            m.topics
                .iter()
                .all(|t| leaders(&MetadataResponse::default().with_topics(vec![t.clone()])).is_some())
                .then_some(m)
        })
        .await;
        for t in &m.topics {
            let replicas: Vec<Vec<i32>> =
                t.partitions.iter().map(|p| p.replica_nodes.iter().map(|b| b.0).collect()).collect();
            match t.name.as_ref().unwrap().as_str() {
                "one" => assert!(replicas.iter().all(|r| r.len() == 1), "{replicas:?}"),
                _ => assert_eq!(replicas, vec![vec![3, 1], vec![2, 3]]),
            }
            for p in &t.partitions {
                assert!(p.replica_nodes.contains(&p.leader_id), "leader {:?} of {:?}", p.leader_id, p.replica_nodes);
            }
        }
    }
    // Each partition of the unreplicated topic takes records at its one replica.
    let m = metadata(&mut c, &["one"], false).await;
    for p in &m.topics[0].partitions {
        let mut lc = Client::connect(kafka_addr(&servers, p.leader_id.0)).await;
        let records = [TestRecord::new("k", "v", 1000)];
        let r = produce(&mut lc, "one", p.partition_index, encode_batch(&records), -1).await.unwrap();
        assert_eq!((r.error_code, r.base_offset), (0, 0), "partition {}", p.partition_index);
    }
    for s in servers {
        s.shutdown().await;
    }
}

/// A node that comes back gets the leadership of the partitions it is the preferred
/// replica of (first in their replica lists) once it has caught up, and takes their
/// writes again; the partitions keep every record through both moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leadership_returns_to_the_preferred_replica() {
    let _serial = one_at_a_time().await;
    let dirs: Vec<_> = (0..3).map(|_| temp_dir()).collect();
    let mut configs: Vec<Config> =
        three_configs(&dirs).into_iter().map(|c| Config { leader_imbalance_check_interval_seconds: 1, ..c }).collect();
    let mut servers = start_three(&mut configs).await;
    three_registered(&servers).await;
    let mut c = Client::connect(servers[0].kafka_addr).await;
    assert_eq!(create_placed_topic(&mut c, "r", -1, -1, &[&[1, 2, 3], &[2, 3, 1], &[3, 1, 2]]).await, 0);
    let preferred = vec![1, 2, 3];
    eventually("the preferred leaders", || async {
        let m = metadata(&mut Client::connect(servers[0].kafka_addr).await, &["r"], false).await;
        (leaders(&m)? == preferred).then_some(())
    })
    .await;
    for (partition, leader) in preferred.iter().enumerate() {
        let mut lc = Client::connect(kafka_addr(&servers, *leader)).await;
        let r = produce(&mut lc, "r", partition as i32, encode_batch(&[TestRecord::new("k", "a", 1)]), -1).await;
        assert_eq!(r.map(|r| (r.error_code, r.base_offset)), Some((0, 0)));
    }

    // Node 2 stops: another replica leads partition 1 and takes a record.
    let at = servers.iter().position(|s| s.node.config.node_id == 2).unwrap();
    servers.remove(at).shutdown().await;
    let interim = leader_other_than_in(servers[0].kafka_addr, "r", 1, 2).await;
    let mut ic = Client::connect(kafka_addr(&servers, interim)).await;
    let r = produce(&mut ic, "r", 1, encode_batch(&[TestRecord::new("k", "b", 2)]), -1).await;
    assert_eq!(r.map(|r| (r.error_code, r.base_offset)), Some((0, 1)));

    // Back, node 2 catches up and is handed partition 1 again; the others stay.
    servers.push(start(configs[at].clone()).await);
    eventually("partition 1 led by node 2 again", || async {
        let m = metadata(&mut Client::connect(servers[0].kafka_addr).await, &["r"], false).await;
        (leaders(&m)? == preferred).then_some(())
    })
    .await;
    let back_addr = kafka_addr(&servers, 2);
    let produced = eventually("a write taken by node 2", || async {
        let mut back = Client::connect(back_addr).await;
        let r = produce(&mut back, "r", 1, encode_batch(&[TestRecord::new("k", "c", 3)]), -1).await?;
        // Until node 2 learns it leads (and applied its first entry), it refuses.
        (r.error_code == 0).then_some(r.base_offset)
    })
    .await;
    assert_eq!(produced, 2);
    let data = fetch(&mut Client::connect(back_addr).await, "r", 1, 0, 0, 0).await;
    assert_eq!(values(data), ["a", "b", "c"]);
    for s in servers {
        s.shutdown().await;
    }
}

/// The controller group loses its leader: the two other voters elect another, which
/// takes metadata changes (a topic is created through either node).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_controller_elects_a_new_leader_when_its_leader_stops() {
    let _serial = one_at_a_time().await;
    let dirs: Vec<_> = (0..3).map(|_| temp_dir()).collect();
    let mut servers = three_nodes(&dirs).await;
    three_registered(&servers).await;
    let old = servers[0].node.controller_leader().expect("a controller leader");
    let at = servers.iter().position(|s| s.node.config.node_id == old).unwrap();
    servers.remove(at).shutdown().await;
    let new = eventually("a new controller leader both nodes know", || async {
        let leaders: BTreeSet<Option<u64>> = servers.iter().map(|s| s.node.controller_leader()).collect();
        match leaders.into_iter().collect::<Vec<_>>()[..] {
            [Some(id)] if id != old => Some(id),
            _ => None,
        }
    })
    .await;
    for (i, s) in servers.iter().enumerate() {
        let mut c = Client::connect(s.kafka_addr).await;
        let topic = format!("after-{i}");
        assert_eq!(create_topic(&mut c, &topic, 2, &[]).await, 0, "through node {}", s.node.config.node_id);
        let (m, _) = topic_leaders(&servers, i, &topic).await;
        assert_eq!(m.controller_id.0 as u64, new);
    }
    for s in servers {
        s.shutdown().await;
    }
}

/// min.insync.replicas as Kafka: while fewer replicas are in sync, an acks=all write is
/// refused with NOT_ENOUGH_REPLICAS and not written; acks=1 still goes through; once the
/// replica is back and caught up, acks=all writes go through again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acks_all_needs_min_insync_replicas() {
    let _serial = one_at_a_time().await;
    let dirs: Vec<_> = (0..3).map(|_| temp_dir()).collect();
    let mut configs = three_configs(&dirs);
    let mut servers = start_three(&mut configs).await;
    three_registered(&servers).await;
    let mut c = Client::connect(servers[0].kafka_addr).await;
    assert_eq!(create_topic(&mut c, "strict", 1, &[("min.insync.replicas", "3")]).await, 0);
    let (_, leader) = topic_leaders(&servers, 0, "strict").await;
    let leader = leader[0];
    let write = |servers: &[Server], value: &'static str, acks: i16| {
        // To the partition's leader now (a restarted replica may have been elected).
        let addr = servers[0].kafka_addr;
        let addrs: Vec<(i32, std::net::SocketAddr)> =
            servers.iter().map(|s| (s.node.config.node_id as i32, s.kafka_addr)).collect();
        async move {
            let m = metadata(&mut Client::connect(addr).await, &["strict"], false).await;
            let leader = m.topics[0].partitions[0].leader_id.0;
            let Some((_, at)) = addrs.iter().find(|(id, _)| *id == leader) else { return (-2, -1) };
            let mut c = Client::connect(*at).await;
            let r = produce(&mut c, "strict", 0, encode_batch(&[TestRecord::new("k", value, 1)]), acks).await.unwrap();
            (r.error_code, r.base_offset)
        }
    };
    // Every replica in sync: taken (once the followers have shown they are caught up).
    let first = eventually("an acks=all write with three replicas in sync", || async {
        let r = write(&servers, "a", -1).await;
        (r.0 == 0).then_some(r)
    })
    .await;
    assert_eq!(first, (0, 0));

    // A follower stops: once it leaves the ISR, acks=all is refused and writes nothing.
    let follower = if leader == 3 { 2 } else { 3 };
    let at = servers.iter().position(|s| s.node.config.node_id == follower as u64).unwrap();
    servers.remove(at).shutdown().await;
    eventually("the stopped replica out of the ISR", || async {
        let m = metadata(&mut Client::connect(servers[0].kafka_addr).await, &["strict"], false).await;
        let isr: BTreeSet<i32> = m.topics[0].partitions[0].isr_nodes.iter().map(|b| b.0).collect();
        (isr.len() == 2 && !isr.contains(&follower)).then_some(())
    })
    .await;
    assert_eq!(write(&servers, "refused", -1).await, (19, -1), "NOT_ENOUGH_REPLICAS");
    assert_eq!(write(&servers, "b", 1).await, (0, 1), "acks=1 needs no in-sync replicas but the leader");

    // Back and caught up: acks=all is taken again, after "b" and nothing refused.
    servers.push(start(configs[at].clone()).await);
    let third = eventually("an acks=all write once the replica is back", || async {
        let r = write(&servers, "c", -1).await;
        (r.0 == 0).then_some(r)
    })
    .await;
    assert_eq!(third, (0, 2));
    let (_, now) = topic_leaders(&servers, 0, "strict").await;
    let data = fetch(&mut Client::connect(kafka_addr(&servers, now[0])).await, "strict", 0, 0, 0, 0).await;
    assert_eq!(values(data), ["a", "b", "c"]);
    for s in servers {
        s.shutdown().await;
    }
}

/// Idle partitions go quiet: their leaders stop heartbeating and each node's leadership
/// reports stand for all its groups, so an idle cluster sends next to no partition raft
/// messages however many partitions it holds. A write still goes through at once, and
/// when a node stops, the quiet partitions it led elect new leaders that take writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_partitions_go_quiet_and_still_fail_over() {
    let _serial = one_at_a_time().await;
    const PARTITIONS: i32 = 60;
    let dirs: Vec<_> = (0..3).map(|_| temp_dir()).collect();
    let mut servers = three_nodes(&dirs).await;
    three_registered(&servers).await;
    let mut c = Client::connect(servers[0].kafka_addr).await;
    assert_eq!(create_topic(&mut c, "idle", PARTITIONS, &[]).await, 0);
    let (_, initial) = topic_leaders(&servers, 0, "idle").await;

    // Heartbeating, 60 partitions would send 2 x 60 / 0.15 s = 800 messages a second.
    let sent = |servers: &[Server]| servers.iter().map(|s| s.node.peers.partition_messages()).sum::<u64>();
    let quiet = eventually("idle partitions quiet", || async {
        let before = sent(&servers);
        tokio::time::sleep(Duration::from_secs(3)).await;
        let during = sent(&servers) - before;
        (during < PARTITIONS as u64).then_some(during)
    })
    .await;
    println!("partition raft messages in 3 s of quiet: {quiet}");

    // A quiet partition takes a write at once.
    let mut lc = Client::connect(kafka_addr(&servers, initial[0])).await;
    let r = produce(&mut lc, "idle", 0, encode_batch(&[TestRecord::new("k", "v", 1)]), -1).await.unwrap();
    assert_eq!((r.error_code, r.base_offset), (0, 0));

    // The node leading partition 0 stops; its partitions elect new leaders.
    let gone = initial[0];
    let at = servers.iter().position(|s| s.node.config.node_id == gone as u64).unwrap();
    servers.remove(at).shutdown().await;
    let started = Instant::now();
    let new = leader_other_than_in(servers[0].kafka_addr, "idle", 0, gone).await;
    println!("a quiet partition elected a new leader {:?} after its leader stopped", started.elapsed());
    let new_addr = kafka_addr(&servers, new);
    let r = eventually("a write at the new leader", || async {
        let r =
            produce(&mut Client::connect(new_addr).await, "idle", 0, encode_batch(&[TestRecord::new("k", "w", 2)]), -1)
                .await?;
        (r.error_code == 0).then_some(r.base_offset)
    })
    .await;
    assert_eq!(r, 1);
    let moved: Vec<i32> = (0..PARTITIONS).filter(|p| initial[*p as usize] == gone).collect();
    eventually("every partition of the stopped node led elsewhere", || async {
        let m = metadata(&mut Client::connect(servers[0].kafka_addr).await, &["idle"], false).await;
        let now = leaders(&m)?;
        moved.iter().all(|p| now[*p as usize] != gone).then_some(())
    })
    .await;
    // Nor is it in sync for any partition, though the groups it followed were quiet (no
    // heartbeat went unanswered): its node's reports stopped.
    eventually("the stopped node out of every ISR", || async {
        let m = metadata(&mut Client::connect(servers[0].kafka_addr).await, &["idle"], false).await;
        m.topics[0].partitions.iter().all(|p| p.isr_nodes.iter().all(|b| b.0 != gone)).then_some(())
    })
    .await;
    for s in servers {
        s.shutdown().await;
    }
}

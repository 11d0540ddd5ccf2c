//! Membership: a node joins a running cluster, partitions move their replicas (Kafka's
//! reassignment API), a node is decommissioned.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_protocol::messages::{BrokerId, ListPartitionReassignmentsRequest, RequestKind, ResponseKind, TopicName};
use tests::requests::*;
use tests::*;

use super::{eventually, kafka_addr, leader_other_than_in, three_nodes, three_registered, topic_leaders};

/// Starts node `id` in `dir`, joining the cluster through `seed`'s raft address.
async fn join(seed: &Server, id: u64, dir: &tempfile::TempDir) -> anyhow::Result<Server> {
    let seed = seed.node.peers.address(seed.node.config.node_id).expect("the seed's raft address");
    let config = Config {
        node_id: id,
        raft_listen: format!("127.0.0.1:{}", free_port()),
        join: Some(seed),
        ..test_config(dir.path())
    };
    Server::start(config).await
}

/// Three nodes formed from `--peers`, and node 4 joined through node 1 (`dirs`: four).
async fn four_nodes(dirs: &[tempfile::TempDir]) -> Vec<Server> {
    let mut servers = three_nodes(&dirs[..3]).await;
    three_registered(&servers).await;
    servers.push(join(&servers[0], 4, &dirs[3]).await.expect("node 4 joins"));
    servers
}

/// AlterPartitionReassignments of one partition (`None`: cancel).
fn reassign(topic: &str, partition: i32, replicas: Option<Vec<i32>>) -> RequestKind {
    use kafka_protocol::messages::alter_partition_reassignments_request::*;
    let p = ReassignablePartition::default()
        .with_partition_index(partition)
        .with_replicas(replicas.map(|r| r.into_iter().map(BrokerId).collect()));
    let t = ReassignableTopic::default().with_name(TopicName(topic.to_string().into())).with_partitions(vec![p]);
    RequestKind::AlterPartitionReassignments(AlterPartitionReassignmentsRequest::default().with_topics(vec![t]))
}

/// The error code of the first partition of an AlterPartitionReassignments answer.
fn reassign_error(r: ResponseKind) -> i16 {
    match r {
        ResponseKind::AlterPartitionReassignments(r) => r.responses[0].partitions[0].error_code,
        other => panic!("unexpected {other:?}"),
    }
}

/// The cluster as `GET /cluster` on the node at `addr` describes it.
async fn cluster_state(addr: std::net::SocketAddr) -> Option<serde_json::Value> {
    let (status, body) = http(addr, "GET", "/cluster", "").await?;
    (status == 200).then(|| serde_json::from_str(&body).expect("JSON"))?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_joins_and_another_is_decommissioned() {
    let _serial = one_at_a_time().await;
    let dirs: Vec<_> = (0..4).map(|_| temp_dir()).collect();
    let mut servers = three_nodes(&dirs[..3]).await;
    three_registered(&servers).await;
    let mut c = Client::connect(servers[0].kafka_addr).await;
    assert_eq!(create_topic(&mut c, "before", 3, &[]).await, 0);
    let (_, leaders) = topic_leaders(&servers, 0, "before").await;
    for (partition, leader) in leaders.iter().enumerate() {
        let mut c = Client::connect(kafka_addr(&servers, *leader)).await;
        let records: Vec<TestRecord> = (0..10).map(|i| TestRecord::new("k", &format!("v{i}"), 1000 + i)).collect();
        let r = produce(&mut c, "before", partition as i32, encode_batch(&records), -1).await.unwrap();
        assert_eq!((r.error_code, r.base_offset), (0, 0), "partition {partition}");
    }

    // A connection opened with a joining hello is answered Join and nothing else: here
    // a leadership report of a node that is none.
    use broker::cluster::network::{encode, Peers, Rpc};
    let stranger = Peers::new(9, "quarry", &Default::default(), None);
    let seed = servers[0].node.peers.address(1).expect("node 1's raft address");
    let report = encode(&Vec::<(u64, broker::cluster::node::Leadership)>::new()).unwrap();
    let refused = stranger.call(&seed, 0, Rpc::Leaders(report), Duration::from_secs(10)).await;
    assert!(refused.as_ref().is_err_and(|e| e.to_string().contains("only Join")), "{refused:?}");

    // Node 4 joins through node 1, knowing nothing but its raft address.
    servers.push(join(&servers[0], 4, &dirs[3]).await.expect("node 4 joins"));
    for s in &servers {
        eventually("four brokers", || async {
            let m = metadata(&mut Client::connect(s.kafka_addr).await, &[], false).await;
            (m.brokers.len() == 4).then_some(())
        })
        .await;
    }
    // It is a member of the controller group: a learner, as there are three voters.
    let state = eventually("node 4 in the controller group", || async {
        let state = cluster_state(servers[3].http_addr).await?;
        state["learners"].as_array()?.contains(&4.into()).then_some(state)
    })
    .await;
    assert_eq!(state["voters"], serde_json::json!([1, 2, 3]), "{state}");

    // New partitions are placed on it too (4 partitions x 3 replicas over 4 nodes: each
    // node holds 3), and the ones it leads take records.
    assert_eq!(create_topic(&mut c, "after", 4, &[]).await, 0);
    let (m, after_leaders) = topic_leaders(&servers, 3, "after").await;
    let on_four = m.topics[0].partitions.iter().filter(|p| p.replica_nodes.iter().any(|b| b.0 == 4)).count();
    assert_eq!(on_four, 3, "{m:?}");
    for (partition, leader) in after_leaders.iter().enumerate() {
        let mut c = Client::connect(kafka_addr(&servers, *leader)).await;
        let r = produce(&mut c, "after", partition as i32, encode_batch(&[TestRecord::new("k", "a", 1)]), -1).await;
        assert_eq!(r.unwrap().error_code, 0, "partition {partition} led by {leader}");
    }

    // Kafka's reassignment API moves one partition's replicas: partition 0 of `before`
    // from nodes 1, 2 and 3 to 4, 1 and 3.
    let alter = |replicas: Option<Vec<i32>>| reassign("before", 0, replicas);
    assert_eq!(reassign_error(c.call(0, alter(Some(vec![4, 1, 9]))).await), 39, "INVALID_REPLICA_ASSIGNMENT");
    assert_eq!(reassign_error(c.call(0, alter(None)).await), 85, "NO_REASSIGNMENT_IN_PROGRESS");
    assert_eq!(reassign_error(c.call(0, alter(Some(vec![4, 1, 3]))).await), 0);
    let list = RequestKind::ListPartitionReassignments(ListPartitionReassignmentsRequest::default());
    let ResponseKind::ListPartitionReassignments(listed) = c.call(0, list).await else { panic!() };
    for p in listed.topics.iter().flat_map(|t| &t.partitions) {
        // Under way still: adding node 4, removing node 2.
        assert_eq!((p.adding_replicas.clone(), p.removing_replicas.clone()), (vec![BrokerId(4)], vec![BrokerId(2)]));
    }
    eventually("partition 0 moved", || async {
        let m = metadata(&mut Client::connect(servers[0].kafka_addr).await, &["before"], false).await;
        let p = &m.topics[0].partitions[0];
        (p.replica_nodes == [BrokerId(4), BrokerId(1), BrokerId(3)] && p.leader_id.0 > 0).then_some(())
    })
    .await;
    eventually("node 2 let go of partition 0", || async {
        servers[1].node.partition("before", 0).is_none().then_some(())
    })
    .await;

    // Node 2 is decommissioned (asked at node 3): its replicas move to the others, node 4
    // becomes a voter of the controller in its place, and it leaves the cluster.
    let (status, body) = http(servers[2].http_addr, "POST", "/cluster/nodes/2/decommission", "").await.unwrap();
    assert_eq!(status, 202, "{body}");
    let (status, _) = http(servers[2].http_addr, "POST", "/cluster/nodes/9/decommission", "").await.unwrap();
    assert_eq!(status, 404, "an unknown node");
    let state = eventually("node 2 decommissioned", || async {
        let state = cluster_state(servers[0].http_addr).await?;
        state["decommissioned"].as_array()?.contains(&2.into()).then_some(state)
    })
    .await;
    assert_eq!(state["voters"], serde_json::json!([1, 3, 4]), "{state}");
    assert_eq!(state["moving"], serde_json::json!([]), "{state}");
    // It stayed in the controller group while its replicas moved; now it has left it.
    eventually("node 2 out of the controller group", || async {
        let state = cluster_state(servers[0].http_addr).await?;
        (state["learners"] == serde_json::json!([])).then_some(())
    })
    .await;
    let ids: Vec<u64> = state["nodes"].as_array().unwrap().iter().map(|n| n["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, [1, 3, 4], "{state}");
    let m = metadata(&mut c, &["before", "after"], false).await;
    assert_eq!(m.brokers.iter().map(|b| b.node_id.0).collect::<BTreeSet<_>>(), BTreeSet::from([1, 3, 4]));
    for t in &m.topics {
        for p in &t.partitions {
            let replicas: BTreeSet<i32> = p.replica_nodes.iter().map(|b| b.0).collect();
            assert!(!replicas.contains(&2) && replicas.len() == 3, "{:?} {}: {replicas:?}", t.name, p.partition_index);
        }
    }
    let on_four = servers[3].node.partitions().len();
    assert_eq!(on_four, 3 + 4, "node 4 holds every partition: only three nodes remain");
    eventually("node 2 holds nothing", || async { servers[1].node.partitions().is_empty().then_some(()) }).await;

    // Three nodes remain for partitions of three replicas: none of them can leave.
    let (status, body) = http(servers[0].http_addr, "POST", "/cluster/nodes/3/decommission", "").await.unwrap();
    assert_eq!(status, 409, "{body}");
    // Node ids are never used twice: not that of a decommissioned node, not that of a
    // node of the cluster.
    for (id, complaint) in [(2, "decommissioned"), (3, "taken")] {
        let refused = join(&servers[0], id, &temp_dir()).await.err().expect("refused");
        assert!(format!("{refused:#}").contains(complaint), "{refused:#}");
    }

    // Node 2 stops, then node 1: nodes 3 and 4 are a quorum of every group. The moved
    // replicas hold every record, and take new ones.
    servers.remove(1).shutdown().await;
    servers.remove(0).shutdown().await;
    for partition in 0..3 {
        // Two elections may follow one another here (the controller's and the
        // partition's), on a loaded machine: a minute, and what was seen if not.
        let started = std::time::Instant::now();
        let (leader, base) = loop {
            let m = metadata(&mut Client::connect(servers[0].kafka_addr).await, &["before"], false).await;
            let p = &m.topics[0].partitions[partition as usize];
            let leader = p.leader_id.0;
            let mut seen = format!("metadata error {} leader {leader} epoch {}", p.error_code, p.leader_epoch);
            if let Some(s) = servers.iter().find(|s| s.node.config.node_id == leader as u64) {
                let mut c = Client::connect(s.kafka_addr).await;
                let batch = encode_batch(&[TestRecord::new("k", "later", 3000)]);
                match produce(&mut c, "before", partition, batch, -1).await {
                    Some(r) if r.error_code == 0 => break (leader, r.base_offset),
                    Some(r) => seen = format!("{seen}; produce error {}", r.error_code),
                    None => seen = format!("{seen}; no produce answer"),
                }
            }
            let waited = started.elapsed();
            assert!(waited < Duration::from_secs(60), "no write to partition {partition} in {waited:?}: {seen}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(base, 10, "partition {partition}");
        let mut c = Client::connect(kafka_addr(&servers, leader)).await;
        let data = fetch(&mut c, "before", partition, 0, 0, 1).await;
        let offsets: Vec<i64> = decode_records(data.records.unwrap()).iter().map(|(o, _)| *o).collect();
        assert_eq!(offsets, (0..11).collect::<Vec<_>>(), "partition {partition}");
    }
    // The controller too: topics are still created.
    let mut c = Client::connect(servers[1].kafka_addr).await;
    assert_eq!(create_topic(&mut c, "later", 1, &[]).await, 0);
    for s in servers {
        s.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn records_acknowledged_while_replicas_move_are_kept() {
    let _serial = one_at_a_time().await;
    let dirs: Vec<_> = (0..4).map(|_| temp_dir()).collect();
    let servers = four_nodes(&dirs).await;
    let mut c = Client::connect(servers[0].kafka_addr).await;
    assert_eq!(create_placed_topic(&mut c, "moving", -1, -1, &[&[1, 2, 3]]).await, 0);
    let (code, producer_id, epoch) = init_producer_id(&mut c, None, None).await;
    assert_eq!(code, 0);
    let addrs: Vec<(i32, std::net::SocketAddr)> =
        servers.iter().map(|s| (s.node.config.node_id as i32, s.kafka_addr)).collect();

    // An idempotent producer (acks=all) writes one record per batch, v0, v1, ..., to
    // whichever node leads the partition, retrying a batch until it is acknowledged.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::<(i64, i64)>::new()));
    let producer = tokio::spawn({
        let (stop, acked, addrs) = (stop.clone(), acked.clone(), addrs.clone());
        async move {
            let mut value = 0i64;
            while !stop.load(Ordering::SeqCst) {
                let m = metadata(&mut Client::connect(addrs[0].1).await, &["moving"], false).await;
                let leader = m.topics[0].partitions[0].leader_id.0;
                let Some((_, addr)) = addrs.iter().find(|(id, _)| *id == leader) else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                let Some(mut c) = Client::try_connect(*addr).await else { continue };
                let record = TestRecord::new("k", &format!("v{value}"), value);
                let batch = encode_producer_batch(&[record], producer_id, epoch, value as i32);
                match produce(&mut c, "moving", 0, batch, -1).await {
                    Some(r) if r.error_code == 0 => {
                        acked.lock().unwrap().push((value, r.base_offset));
                        value += 1;
                    }
                    _ => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        }
    });

    // The partition moves three times while records flow, each time leaving one node
    // and adding another; some moves drop the leader.
    let mut holders = vec![1, 2, 3];
    for target in [vec![4, 1, 3], vec![2, 4, 1], vec![3, 2, 4]] {
        let before = acked.lock().unwrap().len();
        eventually("records flowing", || async { (acked.lock().unwrap().len() >= before + 20).then_some(()) }).await;
        let written = acked.lock().unwrap().len();
        assert_eq!(reassign_error(c.call(0, reassign("moving", 0, Some(target.clone()))).await), 0);
        eventually("the move done", || async {
            let m = metadata(&mut Client::connect(servers[0].kafka_addr).await, &["moving"], false).await;
            let p = &m.topics[0].partitions[0];
            (p.replica_nodes == target.iter().map(|id| BrokerId(*id)).collect::<Vec<_>>()).then_some(())
        })
        .await;
        // Nodes left out let go of their replica.
        for s in servers.iter().filter(|s| !target.contains(&(s.node.config.node_id as i32))) {
            eventually("the old replica deleted", || async { s.node.partition("moving", 0).is_none().then_some(()) })
                .await;
        }
        holders = target;
        let during = acked.lock().unwrap().len() - written;
        eprintln!("move to {holders:?}: {during} records acknowledged meanwhile");
    }
    let before = acked.lock().unwrap().len();
    eventually("records after the last move", || async { (acked.lock().unwrap().len() >= before + 20).then_some(()) })
        .await;
    stop.store(true, Ordering::SeqCst);
    producer.await.unwrap();

    // Every acknowledged record is where it was acknowledged, on every replica: the
    // offsets of the log follow on from 0, and no value acknowledged is missing.
    let acked = acked.lock().unwrap().clone();
    let leader = leader_other_than_in(servers[0].kafka_addr, "moving", 0, -1).await;
    let mut c = Client::connect(kafka_addr(&servers, leader)).await;
    let mut records = Vec::new();
    let end = acked.last().unwrap().1 as usize + 1;
    while records.len() < end {
        let data = fetch(&mut c, "moving", 0, records.len() as i64, 0, 1).await;
        let got = decode_records(data.records.unwrap());
        assert!(!got.is_empty(), "fetch at {} returned nothing", records.len());
        records.extend(got);
    }
    // A last batch sent as the producer stopped may have been written unacknowledged.
    records.truncate(end);
    for (i, (offset, _)) in records.iter().enumerate() {
        assert_eq!(*offset, i as i64);
    }
    for (value, offset) in &acked {
        let stored = records[*offset as usize].1.value.clone().unwrap_or_default();
        assert_eq!(stored, format!("v{value}").as_bytes(), "offset {offset}");
    }
    let values: BTreeSet<Vec<u8>> = records.iter().map(|(_, r)| r.value.clone().unwrap_or_default().to_vec()).collect();
    assert_eq!((values.len(), records.len()), (acked.len(), acked.len()), "each value once: no retry wrote twice");
    let end = records.len() as i64;
    for s in servers.iter().filter(|s| holders.contains(&(s.node.config.node_id as i32))) {
        eventually("every replica holding every record", || async {
            (s.node.partition("moving", 0)?.offsets().high_watermark >= end).then_some(())
        })
        .await;
    }
    eprintln!("{} records acknowledged during three moves, all kept", acked.len());
    for s in servers {
        s.shutdown().await;
    }
}

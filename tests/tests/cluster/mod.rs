//! Three nodes on loopback forming one cluster: the controller group spans them, every
//! partition is replicated by its own raft group, and a partition's records survive the
//! loss of its leader.

mod nemesis;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use kafka_protocol::messages::MetadataResponse;
use tests::requests::*;
use tests::*;

/// Starts three nodes that name each other as peers.
async fn three_nodes(dirs: &[tempfile::TempDir]) -> Vec<Server> {
    let raft: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let peers = (0..3).map(|i| format!("{}=127.0.0.1:{}", i + 1, raft[i])).collect::<Vec<_>>().join(",");
    let config = |i: usize| Config {
        node_id: i as u64 + 1,
        raft_listen: format!("127.0.0.1:{}", raft[i]),
        peers: peers.clone(),
        ..test_config(dirs[i].path())
    };
    // Each waits for a controller leader, which needs a quorum: start them together.
    let (a, b, c) = tokio::join!(start(config(0)), start(config(1)), start(config(2)));
    vec![a, b, c]
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

fn kafka_addr(servers: &[Server], id: i32) -> std::net::SocketAddr {
    servers.iter().find(|s| s.node.config.node_id == id as u64).expect("node").kafka_addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_replicate_partitions_and_survive_a_leader() {
    let _serial = one_at_a_time().await;
    let dirs: Vec<_> = (0..3).map(|_| temp_dir()).collect();
    let mut servers = three_nodes(&dirs).await;

    // Every node learns the three brokers (each registers once it is up) and the controller.
    let mut c = Client::connect(servers[1].kafka_addr).await;
    let m = eventually("three registered brokers", || async {
        let mut c = Client::connect(servers[1].kafka_addr).await;
        let m = metadata(&mut c, &[], false).await;
        (m.brokers.len() == 3).then_some(m)
    })
    .await;
    let ids: BTreeSet<i32> = m.brokers.iter().map(|b| b.node_id.0).collect();
    assert_eq!(ids, BTreeSet::from([1, 2, 3]));
    assert!(m.controller_id.0 >= 1, "controller {:?}", m.controller_id);

    // A topic created through any node: three replicas per partition, on every node.
    assert_eq!(create_topic(&mut c, "t", 3, &[]).await, 0);
    let m = eventually("partition leaders", || async {
        let mut c = Client::connect(servers[2].kafka_addr).await;
        let m = metadata(&mut c, &["t"], false).await;
        leaders(&m).map(|_| m)
    })
    .await;
    for p in &m.topics[0].partitions {
        let replicas: BTreeSet<i32> = p.replica_nodes.iter().map(|b| b.0).collect();
        assert_eq!(replicas, BTreeSet::from([1, 2, 3]), "partition {}", p.partition_index);
    }
    let leaders = leaders(&m).unwrap();

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

    // The leader of partition 0 stops: another replica takes over with every record, and
    // takes new ones.
    let old = leaders[0];
    let at = servers.iter().position(|s| s.node.config.node_id == old as u64).unwrap();
    servers.remove(at).shutdown().await;
    let survivor = servers[0].kafka_addr;
    let new = eventually("a new leader", || async {
        let mut c = Client::connect(survivor).await;
        let m = metadata(&mut c, &["t"], false).await;
        let p = m.topics.first()?.partitions.first()?;
        (p.error_code == 0 && p.leader_id.0 >= 0 && p.leader_id.0 != old).then_some(p.leader_id.0)
    })
    .await;
    let mut c = Client::connect(kafka_addr(&servers, new)).await;
    let r = produce(&mut c, "t", 0, encode_batch(&[TestRecord::new("k", "after", 2000)]), -1).await.unwrap();
    assert_eq!((r.error_code, r.base_offset), (0, 10));
    let data = fetch(&mut c, "t", 0, 0, 0, 1).await;
    let records = decode_records(data.records.unwrap());
    assert_eq!(records.len(), 11);
    assert_eq!(records.iter().map(|(o, _)| *o).collect::<Vec<_>>(), (0..11).collect::<Vec<_>>());

    for s in servers {
        s.shutdown().await;
    }
}

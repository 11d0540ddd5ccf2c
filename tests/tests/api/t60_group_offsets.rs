//! Consumer group offsets go through the coordinating partition's raft group and survive
//! a restart. (The group APIs that will drive them come next.)

use storage::CommittedOffset;
use tests::requests::*;
use tests::*;

fn committed(offset: i64) -> CommittedOffset {
    CommittedOffset { offset, leader_epoch: 2, metadata: format!("note {offset}"), commit_timestamp: broker::now_ms() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offsets_are_raft_writes_that_survive_a_restart() {
    let dir = temp_dir();
    let server = start(test_config(dir.path())).await;
    let mut c = Client::connect(server.kafka_addr).await;
    assert_eq!(create_topic(&mut c, "coordinating", 1, &[]).await, 0);
    let p = server.node.partition("coordinating", 0).unwrap();
    let before = p.raft.metrics().borrow().last_applied.map(|l| l.index);
    p.commit_offsets(
        "billing".into(),
        vec![
            ("orders".into(), 0, committed(42)),
            ("orders".into(), 1, committed(7)),
            ("refunds".into(), 0, committed(3)),
        ],
    )
    .await
    .unwrap();
    let after = p.raft.metrics().borrow().last_applied.map(|l| l.index);
    assert!(after > before, "the commit is a raft entry");
    p.commit_offsets("billing".into(), vec![("orders".into(), 0, committed(50))]).await.unwrap();
    p.delete_offsets("billing".into(), Some(vec![("refunds".into(), 0)])).await.unwrap();
    p.commit_offsets("audit".into(), vec![("orders".into(), 0, committed(1))]).await.unwrap();
    drop(p);
    server.shutdown().await;

    let server = start(test_config(dir.path())).await;
    let p = server.node.partition("coordinating", 0).unwrap();
    let listed: Vec<(String, i32, i64, String)> = p
        .offsets_store
        .list("billing")
        .unwrap()
        .into_iter()
        .map(|(t, part, o)| (t, part, o.offset, o.metadata))
        .collect();
    assert_eq!(listed, vec![("orders".into(), 0, 50, "note 50".into()), ("orders".into(), 1, 7, "note 7".into())]);
    assert_eq!(p.offsets_store.get("billing", "orders", 1).unwrap().unwrap().leader_epoch, 2);
    p.delete_offsets("billing".into(), None).await.unwrap();
    assert!(p.offsets_store.list("billing").unwrap().is_empty());
    assert_eq!(p.offsets_store.list("audit").unwrap().len(), 1);
    drop(p);
    server.shutdown().await;
}

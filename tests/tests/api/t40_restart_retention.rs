use kafka_protocol::ResponseError;
use tests::requests::*;
use tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_survives_a_restart() {
    let dir = temp_dir();
    let server = start(test_config(dir.path())).await;
    let mut c = Client::connect(server.kafka_addr).await;
    assert_eq!(create_topic(&mut c, "keep", 2, &[("retention.bytes", "123456")]).await, 0);
    let mut sent = Vec::new();
    let base = broker::now_ms();
    for i in 0..50 {
        let r = TestRecord::new(&format!("k{i}"), &format!("v{i}"), base + i);
        produce(&mut c, "keep", (i % 2) as i32, encode_batch(std::slice::from_ref(&r)), -1).await.unwrap();
        sent.push(r);
    }
    let cluster_id = server.node.metadata().cluster_id.clone();
    drop(c);
    server.shutdown().await;

    let server = start(test_config(dir.path())).await;
    assert_eq!(server.node.metadata().cluster_id, cluster_id);
    let mut c = Client::connect(server.kafka_addr).await;
    for p in 0..2 {
        let data = fetch(&mut c, "keep", p, 0, 0, 1).await;
        assert_eq!(data.high_watermark, 25);
        let got: Vec<TestRecord> = decode_records(data.records.unwrap()).into_iter().map(|(_, r)| r).collect();
        let want: Vec<TestRecord> = sent.iter().skip(p as usize).step_by(2).cloned().collect();
        assert_eq!(got, want);
    }
    let configs = server.node.metadata().topics["keep"].configs.clone();
    assert_eq!(configs.get("retention.bytes").map(String::as_str), Some("123456"));
    // Offsets continue where they stopped.
    let resp = produce(&mut c, "keep", 0, encode_batch(&[TestRecord::new("k", "after", base)]), -1).await.unwrap();
    assert_eq!(resp.base_offset, 25);
    // The timestamp index survived too.
    assert_eq!(list_offset(&mut c, "keep", 0, base + 10).await, (0, 5, base + 10));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_by_time_and_size_moves_log_start() {
    let dir = temp_dir();
    let server = start(test_config(dir.path())).await;
    let mut c = Client::connect(server.kafka_addr).await;
    let now = broker::now_ms();
    assert_eq!(create_topic(&mut c, "old", 1, &[("retention.ms", "60000")]).await, 0);
    // Three batches an hour old, then two fresh ones.
    for i in 0..5 {
        let ts = if i < 3 { now - 3_600_000 } else { now };
        produce(&mut c, "old", 0, encode_batch(&[TestRecord::new("k", "v", ts), TestRecord::new("k", "w", ts)]), -1)
            .await
            .unwrap();
    }
    assert_eq!(create_topic(&mut c, "big", 1, &[("retention.bytes", "300")]).await, 0);
    let batch = encode_batch(&[TestRecord::new("k", &"x".repeat(100), now)]);
    let batch_len = batch.len() as i64;
    for _ in 0..6 {
        produce(&mut c, "big", 0, batch.clone(), -1).await.unwrap();
    }

    broker::retention::enforce(&server.node).await;

    assert_eq!(list_offset(&mut c, "old", 0, -2).await.1, 6, "the three old batches are gone");
    let gone = fetch(&mut c, "old", 0, 0, 0, 1).await;
    assert_eq!(gone.error_code, ResponseError::OffsetOutOfRange.code());
    assert_eq!(gone.log_start_offset, 6);
    let kept = decode_records(fetch(&mut c, "old", 0, 6, 0, 1).await.records.unwrap());
    assert_eq!(kept.len(), 4);
    // The timestamp index still finds the first remaining record.
    assert_eq!(list_offset(&mut c, "old", 0, 0).await.1, 6);

    let start = list_offset(&mut c, "big", 0, -2).await.1;
    let kept_bytes = (6 - start) * batch_len;
    assert!(kept_bytes <= 300 && kept_bytes + batch_len > 300, "kept {kept_bytes} bytes from offset {start}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segment_files_are_deleted_behind_the_log_start_and_reads_survive_a_restart() {
    let dir = temp_dir();
    let server = start(test_config(dir.path())).await;
    let mut c = Client::connect(server.kafka_addr).await;
    // Tiny segments: a new file about every other produce request.
    assert_eq!(create_topic(&mut c, "seg", 1, &[("segment.bytes", "300")]).await, 0);
    let value = "v".repeat(200);
    let partition = server.node.partition("seg", 0).unwrap();
    // Raft purges in runs of 512 entries, so the log needs more than that.
    for i in 0..600 {
        if i == 40 {
            // Drop everything below offset 30. The files go once raft has purged past
            // this entry (so it is never replayed onto files already deleted).
            assert_eq!(partition.advance_log_start(30).await.unwrap(), 30);
        }
        let r = TestRecord::new(&format!("k{i}"), &value, broker::now_ms());
        produce(&mut c, "seg", 0, encode_batch(&[r]), -1).await.unwrap();
    }
    let (files_before, _) = partition.log.segments().usage();
    assert!(files_before >= 300, "{files_before} files");
    partition.raft.trigger().snapshot().await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    // About 15 files hold only offsets below 30.
    while partition.log.segments().usage().0 > files_before - 10 {
        assert!(std::time::Instant::now() < deadline, "files kept: {:?}", partition.log.segments().usage());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let data = fetch(&mut c, "seg", 0, 30, 0, 1 << 20).await;
    assert_eq!(decode_records(data.records.unwrap()).len(), 570);
    drop(partition);
    server.shutdown().await;

    let server = start(test_config(dir.path())).await;
    let mut c = Client::connect(server.kafka_addr).await;
    let data = fetch(&mut c, "seg", 0, 30, 0, 1 << 20).await;
    assert_eq!(data.log_start_offset, 30);
    let got = decode_records(data.records.unwrap());
    assert_eq!(got.len(), 570);
    assert_eq!(got[0].0, 30);
    let before = fetch(&mut c, "seg", 0, 0, 0, 1 << 20).await;
    assert_eq!(before.error_code, ResponseError::OffsetOutOfRange.code());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_records_moves_the_log_start_to_the_offset_asked() {
    use kafka_protocol::messages::delete_records_request::{DeleteRecordsPartition, DeleteRecordsTopic};
    use kafka_protocol::messages::{DeleteRecordsRequest, RequestKind, ResponseKind, TopicName};
    let dir = temp_dir();
    let server = start(test_config(dir.path())).await;
    let mut c = Client::connect(server.kafka_addr).await;
    assert_eq!(create_topic(&mut c, "t", 2, &[]).await, 0);
    assert_eq!(create_topic(&mut c, "table", 1, &[("cleanup.policy", "compact")]).await, 0);
    // Partition 0: batches of 10 records at 0, 10, 20; partition 1: one batch of 10.
    for base in [0, 10, 20] {
        let records: Vec<TestRecord> = (0..10).map(|i| TestRecord::new("k", &format!("v{}", base + i), 1)).collect();
        assert_eq!(produce(&mut c, "t", 0, encode_batch(&records), -1).await.unwrap().error_code, 0);
    }
    let records: Vec<TestRecord> = (0..10).map(|i| TestRecord::new("k", &format!("v{i}"), 1)).collect();
    assert_eq!(produce(&mut c, "t", 1, encode_batch(&records), -1).await.unwrap().error_code, 0);

    let delete = |topic: &str, parts: &[(i32, i64)]| {
        let topic = DeleteRecordsTopic::default().with_name(TopicName(topic.to_string().into())).with_partitions(
            parts
                .iter()
                .map(|&(p, o)| DeleteRecordsPartition::default().with_partition_index(p).with_offset(o))
                .collect(),
        );
        RequestKind::DeleteRecords(DeleteRecordsRequest::default().with_topics(vec![topic]).with_timeout_ms(10_000))
    };
    let answers = |r: ResponseKind| match r {
        ResponseKind::DeleteRecords(r) => r.topics[0]
            .partitions
            .iter()
            .map(|p| (p.partition_index, p.error_code, p.low_watermark))
            .collect::<Vec<_>>(),
        other => panic!("unexpected {other:?}"),
    };
    // Mid-batch on partition 0, the high watermark (-1) on partition 1, past the end on a
    // partition that does not exist.
    let got = answers(c.call(2, delete("t", &[(0, 15), (1, -1), (7, 0)])).await);
    assert_eq!(got, vec![(0, 0, 15), (1, 0, 10), (7, ResponseError::UnknownTopicOrPartition.code(), -1)]);
    let got = answers(c.call(2, delete("t", &[(0, 31)])).await);
    assert_eq!(got, vec![(0, ResponseError::OffsetOutOfRange.code(), -1)]);
    // Never backwards.
    assert_eq!(answers(c.call(2, delete("t", &[(0, 5)])).await), vec![(0, 0, 15)]);
    let got = answers(c.call(2, delete("table", &[(0, 0)])).await);
    assert_eq!(got, vec![(0, ResponseError::PolicyViolation.code(), -1)]);

    // The earliest offset is the one asked for; below it is out of range; a fetch from it
    // starts inside the batch that holds it, as in Kafka.
    assert_eq!(list_offset(&mut c, "t", 0, -2).await.1, 15);
    assert_eq!(list_offset(&mut c, "t", 1, -2).await.1, 10);
    assert_eq!(fetch(&mut c, "t", 0, 14, 0, 1).await.error_code, ResponseError::OffsetOutOfRange.code());
    let data = fetch(&mut c, "t", 0, 15, 0, 1).await;
    assert_eq!((data.error_code, data.log_start_offset), (0, 15));
    let offsets: Vec<i64> = decode_records(data.records.unwrap()).into_iter().map(|(o, _)| o).collect();
    assert_eq!(offsets, (10..30).collect::<Vec<_>>());

    // Survives a restart.
    drop(c);
    server.shutdown().await;
    let server = start(test_config(dir.path())).await;
    let mut c = Client::connect(server.kafka_addr).await;
    assert_eq!(list_offset(&mut c, "t", 0, -2).await.1, 15);
    // Deleting up to the end leaves an empty log that takes new records at the end.
    assert_eq!(answers(c.call(2, delete("t", &[(0, -1)])).await), vec![(0, 0, 30)]);
    let resp = produce(&mut c, "t", 0, encode_batch(&[TestRecord::new("k", "new", 1)]), -1).await.unwrap();
    assert_eq!((resp.error_code, resp.base_offset), (0, 30));
    server.shutdown().await;
}

/// A node that stopped between deleting a topic in its metadata and deleting the
/// partition's files finds those files at its next start and deletes them. (Here the
/// segment files of a deleted topic are put back while the node is stopped, as a stop
/// after the partition's raft state was deleted but before its files were would leave.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_of_a_deleted_partition_left_behind_are_deleted_at_start() {
    use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
    use kafka_protocol::messages::{DeleteTopicsRequest, RequestKind, ResponseKind, TopicName};

    let dir = temp_dir();
    let server = start(test_config(dir.path())).await;
    let mut c = Client::connect(server.kafka_addr).await;
    assert_eq!(create_topic(&mut c, "gone", 1, &[]).await, 0);
    assert_eq!(create_topic(&mut c, "kept", 1, &[]).await, 0);
    for topic in ["gone", "kept"] {
        let r = produce(&mut c, topic, 0, encode_batch(&[TestRecord::new("k", "v", 1)]), -1).await.unwrap();
        assert_eq!((r.error_code, r.base_offset), (0, 0));
    }
    let group = server.node.partition("gone", 0).unwrap().group;
    let files = dir.path().join("segments").join(group.to_string());
    assert!(files.is_dir(), "{files:?}");
    drop(c);
    server.shutdown().await;
    let aside = temp_dir();
    let copy = |from: &std::path::Path, to: &std::path::Path| {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    };
    copy(&files, aside.path());

    let server = start(test_config(dir.path())).await;
    let mut c = Client::connect(server.kafka_addr).await;
    let delete = DeleteTopicsRequest::default().with_topics(vec![DeleteTopicState::default()
        .with_name(Some(TopicName(kafka_protocol::protocol::StrBytes::from_static_str("gone"))))]);
    let ResponseKind::DeleteTopics(r) = c.call(6, RequestKind::DeleteTopics(delete)).await else { panic!() };
    assert_eq!(r.responses[0].error_code, 0);
    // Deleted with the topic, as always.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while files.exists() {
        assert!(std::time::Instant::now() < deadline, "{files:?} not deleted with its topic");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    drop(c);
    server.shutdown().await;

    copy(aside.path(), &files);
    let server = start(test_config(dir.path())).await;
    assert!(!files.exists(), "{files:?} left behind");
    // The other partition is untouched, and the topic can be made anew.
    let mut c = Client::connect(server.kafka_addr).await;
    let data = fetch(&mut c, "kept", 0, 0, 0, 1).await;
    assert_eq!(data.high_watermark, 1);
    assert_eq!(create_topic(&mut c, "gone", 1, &[]).await, 0);
    let r = produce(&mut c, "gone", 0, encode_batch(&[TestRecord::new("k", "again", 1)]), -1).await.unwrap();
    assert_eq!((r.error_code, r.base_offset), (0, 0));
    server.shutdown().await;
}

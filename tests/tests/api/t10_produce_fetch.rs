use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{ApiVersionsRequest, BrokerId, FetchRequest, RequestKind, ResponseKind, TopicName};
use kafka_protocol::ResponseError;
use tests::requests::*;
use tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produced_batches_come_back_in_order_with_offsets() {
    let dir = temp_dir();
    let server = start(test_config(dir.path())).await;
    let mut c = Client::connect(server.kafka_addr).await;
    assert_eq!(create_topic(&mut c, "orders", 3, &[]).await, 0);

    let mut expected = vec![Vec::new(); 3];
    for round in 0..5 {
        for p in 0..3 {
            let records: Vec<TestRecord> = (0..4)
                .map(|i| TestRecord::new(&format!("k{p}-{round}-{i}"), &format!("v{round}{i}"), 1_000 + round * 10 + i))
                .collect();
            let resp = produce(&mut c, "orders", p, encode_batch(&records), -1).await.unwrap();
            assert_eq!(resp.error_code, 0);
            assert_eq!(resp.base_offset, round * 4, "partition {p} round {round}");
            expected[p as usize].extend(records);
        }
    }
    for p in 0..3 {
        let data = fetch(&mut c, "orders", p, 0, 0, 1).await;
        assert_eq!(data.error_code, 0);
        assert_eq!(data.high_watermark, 20);
        assert_eq!(data.last_stable_offset, 20);
        assert_eq!(data.aborted_transactions, Some(vec![]));
        let got = decode_records(data.records.unwrap());
        let offsets: Vec<i64> = got.iter().map(|(o, _)| *o).collect();
        assert_eq!(offsets, (0..20).collect::<Vec<_>>());
        let records: Vec<TestRecord> = got.into_iter().map(|(_, r)| r).collect();
        assert_eq!(records, expected[p as usize]);
    }
    // A fetch from the middle of a batch returns that whole batch.
    let data = fetch(&mut c, "orders", 1, 6, 0, 1).await;
    let records = data.records.unwrap();
    let got = decode_records(records);
    assert_eq!(got.first().unwrap().0, 4);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_at_high_watermark_waits_for_new_data() {
    let dir = temp_dir();
    let server = start(test_config(dir.path())).await;
    let mut consumer = Client::connect(server.kafka_addr).await;
    let mut producer = Client::connect(server.kafka_addr).await;
    assert_eq!(create_topic(&mut producer, "events", 1, &[]).await, 0);

    // The long poll is parked before the record exists; it must wake up with it rather
    // than return empty at its 60 s deadline.
    let waiter = tokio::spawn(async move { fetch(&mut consumer, "events", 0, 0, 60_000, 1).await });
    let partition = server.node.partition("events", 0).unwrap();
    while partition.waiting_fetches() == 0 {
        tokio::task::yield_now().await;
    }
    let resp = produce(&mut producer, "events", 0, encode_batch(&[TestRecord::new("a", "late", 5)]), 1).await.unwrap();
    assert_eq!(resp.error_code, 0);
    let data = waiter.await.unwrap();
    let got = decode_records(data.records.unwrap());
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1.value.as_deref(), Some(&b"late"[..]));
    // The partition handle holds the database open; shutdown waits for it.
    drop(partition);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_out_of_range_and_empty_tail() {
    let dir = temp_dir();
    let server = start(test_config(dir.path())).await;
    let mut c = Client::connect(server.kafka_addr).await;
    assert_eq!(create_topic(&mut c, "t", 1, &[]).await, 0);
    produce(&mut c, "t", 0, encode_batch(&[TestRecord::new("k", "v", 1)]), -1).await.unwrap();
    let past = fetch(&mut c, "t", 0, 5, 0, 1).await;
    assert_eq!(past.error_code, ResponseError::OffsetOutOfRange.code());
    assert_eq!(past.high_watermark, 1);
    let tail = fetch(&mut c, "t", 0, 1, 0, 1).await;
    assert_eq!(tail.error_code, 0);
    assert!(tail.records.unwrap_or_default().is_empty());
    let unknown = fetch(&mut c, "nope", 0, 0, 0, 1).await;
    assert_eq!(unknown.error_code, ResponseError::UnknownTopicOrPartition.code());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_offsets_earliest_latest_and_by_time() {
    let dir = temp_dir();
    let server = start(test_config(dir.path())).await;
    let mut c = Client::connect(server.kafka_addr).await;
    assert_eq!(create_topic(&mut c, "t", 1, &[]).await, 0);
    for b in 0..3 {
        let records: Vec<TestRecord> = (0..3).map(|i| TestRecord::new("k", "v", 10_000 + b * 100 + i * 10)).collect();
        produce(&mut c, "t", 0, encode_batch(&records), -1).await.unwrap();
    }
    assert_eq!(list_offset(&mut c, "t", 0, -2).await, (0, 0, -1));
    assert_eq!(list_offset(&mut c, "t", 0, -1).await, (0, 9, -1));
    // The first record at or after 10_110 is the second record of the second batch.
    assert_eq!(list_offset(&mut c, "t", 0, 10_105).await, (0, 4, 10_110));
    assert_eq!(list_offset(&mut c, "t", 0, 0).await, (0, 0, 10_000));
    assert_eq!(list_offset(&mut c, "t", 0, 99_999).await, (0, -1, -1));
    // Max timestamp: the last record.
    assert_eq!(list_offset(&mut c, "t", 0, -3).await, (0, 8, 10_220));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_versions_advertises_produce_from_zero_and_answers_future_versions_in_v0() {
    let dir = temp_dir();
    let server = start(test_config(dir.path())).await;
    let mut c = Client::connect(server.kafka_addr).await;
    let ResponseKind::ApiVersions(r) = c.call(3, RequestKind::ApiVersions(ApiVersionsRequest::default())).await else {
        panic!()
    };
    assert_eq!(r.error_code, 0);
    let produce = r.api_keys.iter().find(|k| k.api_key == 0).unwrap();
    assert_eq!((produce.min_version, produce.max_version), (0, 13));
    assert!(r.api_keys.iter().any(|k| k.api_key == 1), "fetch advertised");

    // ApiVersions v99: header with a null client id, empty body.
    let mut raw = Vec::new();
    raw.extend_from_slice(&10i32.to_be_bytes());
    raw.extend_from_slice(&18i16.to_be_bytes());
    raw.extend_from_slice(&99i16.to_be_bytes());
    raw.extend_from_slice(&42i32.to_be_bytes());
    raw.extend_from_slice(&(-1i16).to_be_bytes());
    c.send_raw(&raw).await.unwrap();
    let frame = c.read_frame().await.unwrap();
    let (corr, resp) =
        protocol::frame::decode_response(frame, kafka_protocol::messages::ApiKey::ApiVersions, 0).unwrap();
    assert_eq!(corr, 42);
    let ResponseKind::ApiVersions(r) = resp else { panic!() };
    assert_eq!(r.error_code, ResponseError::UnsupportedVersion.code());
    assert!(!r.api_keys.is_empty());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_zero_gets_no_response_but_is_stored() {
    let dir = temp_dir();
    let server = start(test_config(dir.path())).await;
    let mut c = Client::connect(server.kafka_addr).await;
    assert_eq!(create_topic(&mut c, "t", 1, &[]).await, 0);
    assert!(produce(&mut c, "t", 0, encode_batch(&[TestRecord::new("k", "zero", 1)]), 0).await.is_none());
    // The next response on the connection belongs to the next request.
    let resp = produce(&mut c, "t", 0, encode_batch(&[TestRecord::new("k", "one", 2)]), 1).await.unwrap();
    assert_eq!(resp.base_offset, 1);
    let got = decode_records(fetch(&mut c, "t", 0, 0, 0, 1).await.records.unwrap());
    assert_eq!(got.len(), 2);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_stays_within_max_bytes_but_for_the_first_batch() {
    let dir = temp_dir();
    let server = start(test_config(dir.path())).await;
    let mut c = Client::connect(server.kafka_addr).await;
    assert_eq!(create_topic(&mut c, "big", 3, &[]).await, 0);
    // Two batches of about 300 KB in each of three partitions.
    let value = "x".repeat(300_000);
    for p in 0..3 {
        for i in 0..2 {
            let resp = produce(&mut c, "big", p, encode_batch(&[TestRecord::new("k", &value, i)]), -1).await.unwrap();
            assert_eq!(resp.error_code, 0);
        }
    }
    let fetch_all = |max_bytes: i32, partition_max_bytes: i32| {
        FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_bytes(max_bytes)
            .with_isolation_level(1)
            .with_session_epoch(-1)
            .with_topics(vec![FetchTopic::default().with_topic(TopicName("big".to_string().into())).with_partitions(
                (0..3)
                    .map(|p| {
                        FetchPartition::default()
                            .with_partition(p)
                            .with_fetch_offset(0)
                            .with_partition_max_bytes(partition_max_bytes)
                    })
                    .collect(),
            )])
    };
    // 700 KB: both batches of the first partition, nothing that would go over.
    let (batches, bytes) = read(&mut c, fetch_all(700_000, 1 << 20)).await;
    assert_eq!(batches, vec![2, 0, 0]);
    assert!(bytes <= 700_000, "{bytes} bytes");
    // 1 MB: the first partition whole, then one batch of the second.
    let (batches, bytes) = read(&mut c, fetch_all(1_000_000, 1 << 20)).await;
    assert_eq!(batches, vec![2, 1, 0]);
    assert!(bytes <= 1_000_000, "{bytes} bytes");
    // Limits below one batch: the first partition's first batch all the same (KIP-74),
    // nothing more.
    let (batches, _) = read(&mut c, fetch_all(1000, 1 << 20)).await;
    assert_eq!(batches, vec![1, 0, 0]);
    let (batches, _) = read(&mut c, fetch_all(50 << 20, 1000)).await;
    assert_eq!(batches, vec![1, 0, 0]);
    server.shutdown().await;
}

/// Batches per partition of a fetch, and the records' bytes in all.
async fn read(c: &mut Client, req: FetchRequest) -> (Vec<usize>, usize) {
    let ResponseKind::Fetch(r) = c.call(12, RequestKind::Fetch(req)).await else { panic!() };
    let parts = &r.responses[0].partitions;
    let batches = parts.iter().map(|p| decode_records(p.records.clone().unwrap_or_default()).len()).collect();
    let bytes = parts.iter().map(|p| p.records.as_ref().map_or(0, |r| r.len())).sum();
    (batches, bytes)
}

use std::time::Duration;

use bytes::{BufMut, BytesMut};
use kafka_protocol::ResponseError;
use tests::requests::*;
use tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_frame_closes_only_its_connection() {
    let dir = temp_dir();
    let server = start(test_config(dir.path())).await;
    let mut good = Client::connect(server.kafka_addr).await;
    assert_eq!(create_topic(&mut good, "t", 1, &[]).await, 0);

    let garbage: &[&[u8]] = &[
        // A Metadata v1 request claiming 5 topics and holding none.
        &[0, 0, 0, 14, 0, 3, 0, 1, 0, 0, 0, 1, 0xff, 0xff, 0, 0, 0, 5],
        // An unknown api key.
        &[0, 0, 0, 10, 0x7f, 0x7f, 0, 0, 0, 0, 0, 1, 0xff, 0xff],
        // A negative size.
        &[0xff, 0xff, 0xff, 0xf0, 1, 2, 3],
        // A Produce v9 whose topic array claims four billion entries: the codec reserves
        // room for all of them before reading one.
        &[
            0, 0, 0, 23, 0, 0, 0, 9, 0, 0, 0, 1, 0xff, 0xff, 0, 0, 0xff, 0xff, 0, 0, 0x30, 0x39, 0xff, 0xff, 0xff,
            0xff, 0x0f,
        ],
        // A truncated varint.
        &[0, 0, 0, 20, 0, 0, 0, 9, 0, 0, 0, 1, 0xff, 0xff, 0, 0, 0xff, 0xff, 0, 0, 0x30, 0x39, 0xff, 0xff],
    ];
    for bytes in garbage {
        let mut bad = Client::connect(server.kafka_addr).await;
        bad.send_raw(bytes).await.unwrap();
        assert!(bad.is_closed(Duration::from_secs(10)).await, "connection closed after {bytes:?}");
    }
    // The other connection and the data are unaffected.
    let resp = produce(&mut good, "t", 0, encode_batch(&[TestRecord::new("k", "v", 1)]), -1).await.unwrap();
    assert_eq!((resp.error_code, resp.base_offset), (0, 0));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frame_closes_connection() {
    let dir = temp_dir();
    let server = start(Config { socket_request_max_bytes: 4096, ..test_config(dir.path()) }).await;
    let mut bad = Client::connect(server.kafka_addr).await;
    let mut b = BytesMut::new();
    b.put_i32(1 << 20);
    b.put_bytes(0, 64);
    bad.send_raw(&b).await.unwrap();
    assert!(bad.is_closed(Duration::from_secs(10)).await);
    let mut good = Client::connect(server.kafka_addr).await;
    assert_eq!(create_topic(&mut good, "t", 1, &[]).await, 0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_and_oversized_batches_are_refused_and_not_written() {
    let dir = temp_dir();
    let server = start(test_config(dir.path())).await;
    let mut c = Client::connect(server.kafka_addr).await;
    assert_eq!(create_topic(&mut c, "t", 1, &[("max.message.bytes", "200")]).await, 0);

    let mut corrupt = BytesMut::from(&encode_batch(&[TestRecord::new("k", "v", 1)])[..]);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0x55;
    let resp = produce(&mut c, "t", 0, corrupt.freeze(), -1).await.unwrap();
    assert_eq!(resp.error_code, ResponseError::CorruptMessage.code());

    let big = encode_batch(&[TestRecord::new("k", &"x".repeat(500), 1)]);
    let resp = produce(&mut c, "t", 0, big, -1).await.unwrap();
    assert_eq!(resp.error_code, ResponseError::MessageTooLarge.code());

    let mut truncated = encode_batch(&[TestRecord::new("k", "v", 1)]);
    truncated.truncate(truncated.len() - 3);
    let resp = produce(&mut c, "t", 0, truncated, -1).await.unwrap();
    assert_eq!(resp.error_code, ResponseError::CorruptMessage.code());

    let data = fetch(&mut c, "t", 0, 0, 0, 1).await;
    assert_eq!(data.high_watermark, 0, "nothing was written");
    let resp = produce(&mut c, "t", 0, encode_batch(&[TestRecord::new("k", "v", 1)]), -1).await.unwrap();
    assert_eq!((resp.error_code, resp.base_offset), (0, 0));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_topic_with_auto_create_off() {
    let dir = temp_dir();
    let server = start(Config { auto_create_topics_enable: false, ..test_config(dir.path()) }).await;
    let mut c = Client::connect(server.kafka_addr).await;
    let resp = produce(&mut c, "missing", 0, encode_batch(&[TestRecord::new("k", "v", 1)]), -1).await.unwrap();
    assert_eq!(resp.error_code, ResponseError::UnknownTopicOrPartition.code());
    let md = metadata(&mut c, &["missing"], true).await;
    assert_eq!(md.topics[0].error_code, ResponseError::UnknownTopicOrPartition.code());
    assert!(server.node.metadata().topics.is_empty(), "nothing was created");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_auto_creates_topics_with_default_partitions() {
    let dir = temp_dir();
    let server = start(Config { num_partitions: 4, ..test_config(dir.path()) }).await;
    let mut c = Client::connect(server.kafka_addr).await;
    let md = metadata(&mut c, &["fresh"], true).await;
    assert_eq!(md.topics[0].error_code, 0);
    assert_eq!(md.topics[0].partitions.len(), 4);
    assert!(md.topics[0].partitions.iter().all(|p| p.leader_id.0 == 1));
    assert!(!md.topics[0].topic_id.is_nil());
    let md = metadata(&mut c, &["bad name!"], true).await;
    assert_eq!(md.topics[0].error_code, ResponseError::InvalidTopicException.code());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacted_topic_refuses_records_without_key() {
    let dir = temp_dir();
    let server = start(test_config(dir.path())).await;
    let mut c = Client::connect(server.kafka_addr).await;
    assert_eq!(create_topic(&mut c, "table", 1, &[("cleanup.policy", "compact")]).await, 0);
    let keyless = TestRecord { key: None, value: Some(bytes::Bytes::from_static(b"v")), timestamp: 1 };
    let mut batch = vec![TestRecord::new("k", "v", 1), keyless.clone(), TestRecord::new("k2", "v", 1), keyless];
    batch.push(TestRecord::new("k3", "v", 1));
    let resp = produce(&mut c, "table", 0, encode_batch(&batch), -1).await.unwrap();
    assert_eq!(resp.error_code, ResponseError::InvalidRecord.code());
    // Kafka's record_errors name the keyless records, so a client can resend the others.
    let indexes: Vec<i32> = resp.record_errors.iter().map(|e| e.batch_index).collect();
    assert_eq!(indexes, vec![1, 3]);
    assert!(resp.error_message.as_deref().is_some_and(|m| m.contains("2 of 5 records have no key")));
    let resp = fetch(&mut c, "table", 0, 0, 0, 0).await;
    assert_eq!(resp.high_watermark, 0, "nothing of the refused batch is stored");
    let resp = produce(&mut c, "table", 0, encode_batch(&[TestRecord::new("k", "v", 1)]), -1).await.unwrap();
    assert_eq!((resp.error_code, resp.base_offset), (0, 0));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_v2_is_answered_with_unsupported_version() {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ApiKey, ProduceRequest, RequestHeader, RequestKind, ResponseKind, TopicName};
    let dir = temp_dir();
    let server = start(test_config(dir.path())).await;
    let mut c = Client::connect(server.kafka_addr).await;
    assert_eq!(create_topic(&mut c, "t", 1, &[]).await, 0);
    let req =
        ProduceRequest::default().with_acks(-1).with_timeout_ms(1000).with_topic_data(vec![TopicProduceData::default(
        )
        .with_name(TopicName("t".into()))
        .with_partition_data(vec![PartitionProduceData::default()
            .with_index(0)
            .with_records(Some(encode_batch(&[TestRecord::new("k", "v", 1)])))])]);
    let header = RequestHeader::default().with_request_api_key(0).with_request_api_version(3).with_correlation_id(77);
    let v3 = protocol::frame::encode_request(&header, &RequestKind::Produce(req)).unwrap();
    // v2 is v3 without the transactional id: a null string right after the header (which
    // is 4 + 2 + 2 + 4 + 2 bytes here, the client id being null).
    let mut v2 = v3.to_vec();
    assert_eq!(&v2[14..16], &[0xff, 0xff]);
    v2.drain(14..16);
    v2[6..8].copy_from_slice(&2i16.to_be_bytes());
    let size = (v2.len() - 4) as i32;
    v2[0..4].copy_from_slice(&size.to_be_bytes());
    c.send_raw(&v2).await.unwrap();
    let frame = c.read_frame().await.expect("a response, not a closed connection");
    let (corr, resp) = protocol::frame::decode_response(frame, ApiKey::Produce, 3).unwrap();
    assert_eq!(corr, 77);
    let ResponseKind::Produce(r) = resp else { panic!() };
    assert_eq!(r.responses[0].partition_responses[0].error_code, ResponseError::UnsupportedVersion.code());
    assert_eq!(fetch(&mut c, "t", 0, 0, 0, 1).await.high_watermark, 0, "nothing stored");
    server.shutdown().await;
}

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
    let resp = produce(&mut c, "table", 0, encode_batch(&[TestRecord::new("k", "v", 1), keyless]), -1).await.unwrap();
    assert_eq!(resp.error_code, ResponseError::InvalidRecord.code());
    let resp = produce(&mut c, "table", 0, encode_batch(&[TestRecord::new("k", "v", 1)]), -1).await.unwrap();
    assert_eq!((resp.error_code, resp.base_offset), (0, 0));
    server.shutdown().await;
}

//! Helpers for integration tests: a node on loopback ports and a minimal wire-level
//! Kafka client, so tests speak exactly the bytes real clients send.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseKind};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub use broker::{Config, Server};

/// Logs to the test writer when `RUST_LOG` is set.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A config for a node on free loopback ports with its data in `dir`.
pub fn test_config(dir: &Path) -> Config {
    Config {
        data_dir: dir.to_path_buf(),
        kafka_listen: "127.0.0.1:0".into(),
        http_listen: "127.0.0.1:0".into(),
        sql_listen: "127.0.0.1:0".into(),
        ..Default::default()
    }
}

/// A loopback port free now (for a node started next; another process could take it first).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Held by the tests that start nodes on ports from [`free_port`], so that they run one
/// at a time: two at once could be handed the same free port.
pub async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// Starts a node with `config`.
pub async fn start(config: Config) -> Server {
    init_tracing();
    Server::start(config).await.expect("node starts")
}

/// A Kafka connection that sends one request at a time.
pub struct Client {
    stream: TcpStream,
    correlation_id: i32,
}

impl Client {
    pub async fn connect(addr: std::net::SocketAddr) -> Client {
        Client::try_connect(addr).await.expect("connect")
    }

    /// A connection, if the node accepts one (it may be down).
    pub async fn try_connect(addr: std::net::SocketAddr) -> Option<Client> {
        let stream = TcpStream::connect(addr).await.ok()?;
        stream.set_nodelay(true).ok()?;
        Some(Client { stream, correlation_id: 0 })
    }

    /// Sends raw bytes (for malformed-input tests).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// Reads one size-prefixed frame; `None` when the broker closed the connection.
    pub async fn read_frame(&mut self) -> Option<Bytes> {
        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size).await.ok()?;
        let mut buf = vec![0u8; i32::from_be_bytes(size) as usize];
        self.stream.read_exact(&mut buf).await.ok()?;
        Some(buf.into())
    }

    /// Sends a request at `version` and decodes its response.
    pub async fn call(&mut self, version: i16, body: RequestKind) -> ResponseKind {
        self.try_call(version, body).await.expect("response")
    }

    /// Sends a request and decodes its response; `None` if the connection is gone first
    /// (the node may have died).
    pub async fn try_call(&mut self, version: i16, body: RequestKind) -> Option<ResponseKind> {
        let api_key = api_key_of(&body);
        self.try_send(api_key, version, &body).await?;
        let frame = self.read_frame().await?;
        let (correlation_id, resp) =
            protocol::frame::decode_response(frame, api_key, version).expect("decodable response");
        assert_eq!(correlation_id, self.correlation_id, "responses come back in order");
        Some(resp)
    }

    /// Sends a request without reading a response.
    pub async fn send(&mut self, api_key: ApiKey, version: i16, body: &RequestKind) {
        self.try_send(api_key, version, body).await.expect("send");
    }

    /// Sends a request; `None` if the connection is gone.
    pub async fn try_send(&mut self, api_key: ApiKey, version: i16, body: &RequestKind) -> Option<()> {
        self.correlation_id += 1;
        let header = RequestHeader::default()
            .with_request_api_key(api_key as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("quarry-tests")));
        let bytes = protocol::frame::encode_request(&header, body).expect("encodable request");
        self.stream.write_all(&bytes).await.ok()
    }

    /// Whether the broker has closed the connection (reads EOF within `wait`).
    pub async fn is_closed(&mut self, wait: Duration) -> bool {
        let mut b = [0u8; 1];
        matches!(tokio::time::timeout(wait, self.stream.read(&mut b)).await, Ok(Ok(0)) | Ok(Err(_)))
    }
}

/// The API key of a request body.
pub fn api_key_of(body: &RequestKind) -> ApiKey {
    match body {
        RequestKind::Produce(_) => ApiKey::Produce,
        RequestKind::Fetch(_) => ApiKey::Fetch,
        RequestKind::ListOffsets(_) => ApiKey::ListOffsets,
        RequestKind::Metadata(_) => ApiKey::Metadata,
        RequestKind::ApiVersions(_) => ApiKey::ApiVersions,
        RequestKind::CreateTopics(_) => ApiKey::CreateTopics,
        RequestKind::DeleteTopics(_) => ApiKey::DeleteTopics,
        RequestKind::CreatePartitions(_) => ApiKey::CreatePartitions,
        RequestKind::DescribeConfigs(_) => ApiKey::DescribeConfigs,
        RequestKind::AlterConfigs(_) => ApiKey::AlterConfigs,
        RequestKind::IncrementalAlterConfigs(_) => ApiKey::IncrementalAlterConfigs,
        RequestKind::DescribeCluster(_) => ApiKey::DescribeCluster,
        RequestKind::FindCoordinator(_) => ApiKey::FindCoordinator,
        RequestKind::OffsetCommit(_) => ApiKey::OffsetCommit,
        RequestKind::OffsetFetch(_) => ApiKey::OffsetFetch,
        RequestKind::OffsetDelete(_) => ApiKey::OffsetDelete,
        RequestKind::JoinGroup(_) => ApiKey::JoinGroup,
        RequestKind::SyncGroup(_) => ApiKey::SyncGroup,
        RequestKind::Heartbeat(_) => ApiKey::Heartbeat,
        RequestKind::LeaveGroup(_) => ApiKey::LeaveGroup,
        RequestKind::InitProducerId(_) => ApiKey::InitProducerId,
        RequestKind::DescribeGroups(_) => ApiKey::DescribeGroups,
        RequestKind::ListGroups(_) => ApiKey::ListGroups,
        RequestKind::DeleteGroups(_) => ApiKey::DeleteGroups,
        RequestKind::DeleteRecords(_) => ApiKey::DeleteRecords,
        RequestKind::OffsetForLeaderEpoch(_) => ApiKey::OffsetForLeaderEpoch,
        RequestKind::AlterPartitionReassignments(_) => ApiKey::AlterPartitionReassignments,
        RequestKind::ListPartitionReassignments(_) => ApiKey::ListPartitionReassignments,
        other => panic!("no api key mapping for {other:?}"),
    }
}

/// A simple record for building batches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestRecord {
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub timestamp: i64,
}

impl TestRecord {
    pub fn new(key: &str, value: &str, timestamp: i64) -> TestRecord {
        TestRecord {
            key: Some(Bytes::copy_from_slice(key.as_bytes())),
            value: Some(Bytes::copy_from_slice(value.as_bytes())),
            timestamp,
        }
    }
}

/// Encodes one uncompressed v2 batch of `records`, as a producer would.
pub fn encode_batch(records: &[TestRecord]) -> Bytes {
    encode_producer_batch(records, -1, -1, -1)
}

/// Encodes a batch as an idempotent producer would (`producer_id` -1: not idempotent):
/// its records carry sequences from `base_sequence` on.
pub fn encode_producer_batch(
    records: &[TestRecord],
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
) -> Bytes {
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, r)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id,
            producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The encoder keeps records in one batch while offset - sequence stays the same;
            // without a producer id the batch's base sequence comes out as -1.
            sequence: if producer_id < 0 { i as i32 - 1 } else { base_sequence + i as i32 },
            timestamp: r.timestamp,
            key: r.key.clone(),
            value: r.value.clone(),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(&mut buf, &records, &RecordEncodeOptions { version: 2, compression: Compression::None })
        .expect("encode batch");
    buf.freeze()
}

/// Decodes the records of fetched batches: `(offset, record)`.
pub fn decode_records(mut bytes: Bytes) -> Vec<(i64, TestRecord)> {
    let mut out = Vec::new();
    let sets = kafka_protocol::records::RecordBatchDecoder::decode_all(&mut bytes).expect("decodable batches");
    for set in sets {
        for r in set.records {
            out.push((r.offset, TestRecord { key: r.key, value: r.value, timestamp: r.timestamp }));
        }
    }
    out
}

/// The values of the fetched records, as text.
pub fn values(data: kafka_protocol::messages::fetch_response::PartitionData) -> Vec<String> {
    decode_records(data.records.unwrap_or_default())
        .into_iter()
        .map(|(_, r)| String::from_utf8(r.value.unwrap().to_vec()).unwrap())
        .collect()
}

/// A fresh temporary directory.
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// The `quarry` binary built with the same profile as the running test binary (which
/// lives in `<target>/<profile>/deps/`).
pub fn quarry_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target profile directory");
    let bin = profile_dir.join("quarry");
    assert!(bin.exists(), "{} is missing: build the workspace (`make test` does)", bin.display());
    bin
}

pub mod requests {
    //! Builders for the requests tests send, at versions current clients use.

    use bytes::Bytes;
    use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::fetch_response::PartitionData;
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::StrBytes;

    use super::Client;

    fn name(s: &str) -> TopicName {
        TopicName(StrBytes::from_string(s.to_string()))
    }

    /// InitProducerId v4: `(error, producer id, epoch)`.
    pub async fn init_producer_id(
        c: &mut Client,
        current: Option<(i64, i16)>,
        transactional_id: Option<&str>,
    ) -> (i16, i64, i16) {
        let (id, epoch) = current.unwrap_or((-1, -1));
        let req = InitProducerIdRequest::default()
            .with_transactional_id(transactional_id.map(|t| TransactionalId(StrBytes::from_string(t.into()))))
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(epoch);
        match c.call(4, RequestKind::InitProducerId(req)).await {
            ResponseKind::InitProducerId(r) => (r.error_code, r.producer_id.0, r.producer_epoch),
            other => panic!("unexpected {other:?}"),
        }
    }

    /// Creates a topic; returns the error code (0 on success).
    pub async fn create_topic(c: &mut Client, topic: &str, partitions: i32, configs: &[(&str, &str)]) -> i16 {
        let configs = configs
            .iter()
            .map(|(k, v)| {
                CreatableTopicConfig::default()
                    .with_name(StrBytes::from_string(k.to_string()))
                    .with_value(Some(StrBytes::from_string(v.to_string())))
            })
            .collect();
        let wanted = CreatableTopic::default().with_num_partitions(partitions).with_replication_factor(-1);
        create_topics(c, wanted.with_configs(configs), topic).await
    }

    /// Creates a topic with a replication factor, or (`factor` -1, `partitions` -1) with
    /// these replicas per partition; returns the error code.
    pub async fn create_placed_topic(
        c: &mut Client,
        topic: &str,
        partitions: i32,
        factor: i16,
        assignments: &[&[i32]],
    ) -> i16 {
        use kafka_protocol::messages::create_topics_request::CreatableReplicaAssignment;
        let assignments = assignments
            .iter()
            .enumerate()
            .map(|(i, brokers)| {
                CreatableReplicaAssignment::default()
                    .with_partition_index(i as i32)
                    .with_broker_ids(brokers.iter().map(|b| BrokerId(*b)).collect())
            })
            .collect();
        let wanted = CreatableTopic::default().with_num_partitions(partitions).with_assignments(assignments);
        create_topics(c, wanted.with_replication_factor(factor), topic).await
    }

    async fn create_topics(c: &mut Client, wanted: CreatableTopic, topic: &str) -> i16 {
        let req =
            CreateTopicsRequest::default().with_timeout_ms(10_000).with_topics(vec![wanted.with_name(name(topic))]);
        match c.call(7, RequestKind::CreateTopics(req)).await {
            ResponseKind::CreateTopics(r) => r.topics[0].error_code,
            other => panic!("unexpected {other:?}"),
        }
    }

    /// Produces `records` to one partition; returns the partition response.
    pub async fn produce(
        c: &mut Client,
        topic: &str,
        partition: i32,
        records: Bytes,
        acks: i16,
    ) -> Option<produce_response::PartitionProduceResponse> {
        let req = ProduceRequest::default().with_acks(acks).with_timeout_ms(10_000).with_topic_data(vec![
            TopicProduceData::default().with_name(name(topic)).with_partition_data(vec![
                PartitionProduceData::default().with_index(partition).with_records(Some(records)),
            ]),
        ]);
        if acks == 0 {
            c.send(ApiKey::Produce, 9, &RequestKind::Produce(req)).await;
            return None;
        }
        match c.call(9, RequestKind::Produce(req)).await {
            ResponseKind::Produce(mut r) => Some(r.responses.remove(0).partition_responses.remove(0)),
            other => panic!("unexpected {other:?}"),
        }
    }

    /// Fetches one partition (Fetch v12).
    pub async fn fetch(
        c: &mut Client,
        topic: &str,
        partition: i32,
        offset: i64,
        max_wait_ms: i32,
        min_bytes: i32,
    ) -> PartitionData {
        fetch_at_epoch(c, topic, partition, offset, max_wait_ms, min_bytes, -1).await
    }

    /// Fetches one partition (Fetch v12) as a client that knows the leader epoch (-1: none).
    pub async fn fetch_at_epoch(
        c: &mut Client,
        topic: &str,
        partition: i32,
        offset: i64,
        max_wait_ms: i32,
        min_bytes: i32,
        current_leader_epoch: i32,
    ) -> PartitionData {
        let req = fetch_request(topic, partition, offset, max_wait_ms, min_bytes, current_leader_epoch);
        match c.call(12, RequestKind::Fetch(req)).await {
            ResponseKind::Fetch(mut r) => r.responses.remove(0).partitions.remove(0),
            other => panic!("unexpected {other:?}"),
        }
    }

    /// A Fetch (v12) of one partition, read committed, up to 1 MiB.
    pub fn fetch_request(
        topic: &str,
        partition: i32,
        offset: i64,
        max_wait_ms: i32,
        min_bytes: i32,
        current_leader_epoch: i32,
    ) -> FetchRequest {
        FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(max_wait_ms)
            .with_min_bytes(min_bytes)
            .with_max_bytes(50 << 20)
            .with_isolation_level(1)
            .with_session_epoch(-1)
            .with_topics(vec![FetchTopic::default().with_topic(name(topic)).with_partitions(vec![
                FetchPartition::default()
                    .with_partition(partition)
                    .with_fetch_offset(offset)
                    .with_current_leader_epoch(current_leader_epoch)
                    .with_partition_max_bytes(1 << 20),
            ])])
    }

    /// ListOffsets for one partition: `(error, offset, timestamp)`.
    pub async fn list_offset(c: &mut Client, topic: &str, partition: i32, timestamp: i64) -> (i16, i64, i64) {
        let req =
            ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![ListOffsetsTopic::default()
                .with_name(name(topic))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(partition)
                    .with_timestamp(timestamp)])]);
        match c.call(7, RequestKind::ListOffsets(req)).await {
            ResponseKind::ListOffsets(r) => {
                let p = &r.topics[0].partitions[0];
                (p.error_code, p.offset, p.timestamp)
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    /// OffsetForLeaderEpoch v4 for one partition: `(error, leader epoch, end offset)`.
    pub async fn epoch_end(
        c: &mut Client,
        topic: &str,
        partition: i32,
        current_leader_epoch: i32,
        leader_epoch: i32,
    ) -> (i16, i32, i64) {
        use kafka_protocol::messages::offset_for_leader_epoch_request::{
            OffsetForLeaderPartition, OffsetForLeaderTopic,
        };
        let req = OffsetForLeaderEpochRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![
            OffsetForLeaderTopic::default().with_topic(name(topic)).with_partitions(vec![
                OffsetForLeaderPartition::default()
                    .with_partition(partition)
                    .with_current_leader_epoch(current_leader_epoch)
                    .with_leader_epoch(leader_epoch),
            ]),
        ]);
        match c.call(4, RequestKind::OffsetForLeaderEpoch(req)).await {
            ResponseKind::OffsetForLeaderEpoch(r) => {
                let p = &r.topics[0].partitions[0];
                (p.error_code, p.leader_epoch, p.end_offset)
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    /// JoinGroup v9 of a consumer-protocol member (`""`: a new member) with one
    /// assignor, "range", and 10 s timeouts.
    pub async fn join_group(c: &mut Client, group: &str, member: &str) -> JoinGroupResponse {
        match c.call(9, RequestKind::JoinGroup(join_group_request(group, member))).await {
            ResponseKind::JoinGroup(r) => r,
            other => panic!("unexpected {other:?}"),
        }
    }

    pub fn join_group_request(group: &str, member: &str) -> JoinGroupRequest {
        use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
        JoinGroupRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
            .with_session_timeout_ms(10_000)
            .with_rebalance_timeout_ms(10_000)
            .with_member_id(StrBytes::from_string(member.to_string()))
            .with_protocol_type(StrBytes::from_static_str("consumer"))
            .with_protocols(vec![JoinGroupRequestProtocol::default()
                .with_name(StrBytes::from_static_str("range"))
                .with_metadata(bytes::Bytes::from("m"))])
    }

    /// SyncGroup v5 of a member that assigns itself "events-0".
    pub async fn sync_group(c: &mut Client, group: &str, member: &str, generation: i32) -> SyncGroupResponse {
        match c.call(5, RequestKind::SyncGroup(sync_group_request(group, member, generation))).await {
            ResponseKind::SyncGroup(r) => r,
            other => panic!("unexpected {other:?}"),
        }
    }

    pub fn sync_group_request(group: &str, member: &str, generation: i32) -> SyncGroupRequest {
        use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
        let member = StrBytes::from_string(member.to_string());
        SyncGroupRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
            .with_generation_id(generation)
            .with_member_id(member.clone())
            .with_assignments(vec![SyncGroupRequestAssignment::default()
                .with_member_id(member)
                .with_assignment(bytes::Bytes::from("events-0"))])
    }

    /// Heartbeat v4: the error code.
    pub async fn heartbeat(c: &mut Client, group: &str, member: &str, generation: i32) -> i16 {
        match c.call(4, RequestKind::Heartbeat(heartbeat_request(group, member, generation))).await {
            ResponseKind::Heartbeat(r) => r.error_code,
            other => panic!("unexpected {other:?}"),
        }
    }

    pub fn heartbeat_request(group: &str, member: &str, generation: i32) -> HeartbeatRequest {
        HeartbeatRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
            .with_generation_id(generation)
            .with_member_id(StrBytes::from_string(member.to_string()))
    }

    /// FindCoordinator v3 of a group: `(error, node id)`.
    pub async fn find_coordinator(c: &mut Client, group: &str) -> (i16, i32) {
        match c.call(3, RequestKind::FindCoordinator(find_coordinator_request(group))).await {
            ResponseKind::FindCoordinator(r) => (r.error_code, r.node_id.0),
            other => panic!("unexpected {other:?}"),
        }
    }

    pub fn find_coordinator_request(group: &str) -> FindCoordinatorRequest {
        FindCoordinatorRequest::default().with_key(StrBytes::from_string(group.to_string())).with_key_type(0)
    }

    /// Metadata for the given topics (v12), auto-creating them if `create`.
    pub async fn metadata(c: &mut Client, topics: &[&str], create: bool) -> MetadataResponse {
        let req = MetadataRequest::default()
            .with_topics(Some(
                topics
                    .iter()
                    .map(|t| metadata_request::MetadataRequestTopic::default().with_name(Some(name(t))))
                    .collect(),
            ))
            .with_allow_auto_topic_creation(create);
        match c.call(12, RequestKind::Metadata(req)).await {
            ResponseKind::Metadata(r) => r,
            other => panic!("unexpected {other:?}"),
        }
    }

    /// `POST /sql` on the node's HTTP listener: the status and the JSON body.
    pub fn sql_http(
        addr: std::net::SocketAddr,
        sql: &str,
    ) -> impl std::future::Future<Output = (u16, serde_json::Value)> + 'static {
        let body = serde_json::json!({ "sql": sql }).to_string();
        sql_http_body(addr, body)
    }

    async fn sql_http_body(addr: std::net::SocketAddr, body: String) -> (u16, serde_json::Value) {
        let (status, body) = super::http(addr, "POST", "/sql", &body).await.expect("http request");
        let value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
        (status, value)
    }
}

/// One HTTP/1.0 request (a JSON body, or none if empty): the status and the body, or
/// `None` if the node cannot be reached.
pub async fn http(addr: std::net::SocketAddr, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!(
        "{method} {path} HTTP/1.0\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    s.read_to_string(&mut response).await.ok()?;
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    Some((status, response.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_string()))
}

//! A producer written against the Kafka wire protocol, for measuring the broker's cost
//! of idempotence with the client side held equal: it keeps up to 5 produce requests in
//! flight on one connection, idempotent or not, as the Java client does (librdkafka 2.12
//! sends one request at a time per partition when idempotent).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, InitProducerIdRequest, InitProducerIdResponse, ProduceRequest, ProduceResponse, RequestHeader,
    ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};

const PRODUCE_VERSION: i16 = 9;
const IN_FLIGHT: usize = 5;

struct Conn {
    stream: TcpStream,
    correlation_id: i32,
}

impl Conn {
    fn send<T: Encodable + HeaderVersion>(&mut self, api_key: ApiKey, version: i16, body: &T) -> Result<()> {
        self.correlation_id += 1;
        let header = RequestHeader::default()
            .with_request_api_key(api_key as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("wire-bench")));
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[0; 4]);
        header.encode(&mut buf, T::header_version(version))?;
        body.encode(&mut buf, version)?;
        let size = (buf.len() - 4) as i32;
        buf[..4].copy_from_slice(&size.to_be_bytes());
        self.stream.write_all(&buf)?;
        Ok(())
    }

    fn receive<T: Decodable>(&mut self, api_key: ApiKey, version: i16) -> Result<T> {
        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size)?;
        let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
        self.stream.read_exact(&mut body)?;
        let mut body = Bytes::from(body);
        ResponseHeader::decode(&mut body, api_key.response_header_version(version))?;
        Ok(T::decode(&mut body, version)?)
    }
}

/// One record: key, value, timestamp (ms).
pub type MakeRecord<'a> = &'a dyn Fn(usize) -> (Option<Bytes>, Bytes, i64);

/// One batch of the records `first..first + records` made by `make`; `producer` is (id,
/// epoch, base sequence) when idempotent.
fn batch(first: usize, records: usize, make: MakeRecord, producer: Option<(i64, i16, i32)>) -> Result<Bytes> {
    let (producer_id, producer_epoch, base_sequence) = producer.unwrap_or((-1, -1, -1));
    let records: Vec<Record> = (0..records)
        .map(|i| {
            let (key, value, timestamp) = make(first + i);
            Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id,
                producer_epoch,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                // The encoder keeps records in one batch while offset - sequence is constant.
                sequence: if producer_id < 0 { i as i32 - 1 } else { base_sequence + i as i32 },
                timestamp,
                key,
                value: Some(value),
                headers: Default::default(),
            }
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions { version: 2, compression: Compression::None },
    )?;
    Ok(buf.freeze())
}

/// Produces `count` records of `size` bytes in batches of `per_batch`, round-robin over
/// `partitions` partitions, acks=all, up to 5 requests in flight; returns the time taken.
pub fn produce(
    port: u16,
    topic: &str,
    partitions: i32,
    size: usize,
    count: usize,
    idempotent: bool,
) -> Result<Duration> {
    let value = Bytes::from(vec![b'w'; size]);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as i64;
    produce_with(port, topic, partitions, size, count, idempotent, &|_| (None, value.clone(), now))
}

/// Produces the records `make` makes for `0..count` (about `size` bytes each) in batches
/// of about 1 MB, round-robin over `partitions` partitions, acks=all, up to 5 requests in
/// flight; returns the time taken.
pub fn produce_with(
    port: u16,
    topic: &str,
    partitions: i32,
    size: usize,
    count: usize,
    idempotent: bool,
    make: MakeRecord,
) -> Result<Duration> {
    let per_batch = (1_000_000 / (size + 20)).max(1);
    let stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_nodelay(true)?;
    let mut conn = Conn { stream, correlation_id: 0 };
    let producer = if idempotent {
        conn.send(ApiKey::InitProducerId, 4, &InitProducerIdRequest::default().with_transaction_timeout_ms(60_000))?;
        let r: InitProducerIdResponse = conn.receive(ApiKey::InitProducerId, 4)?;
        if r.error_code != 0 {
            bail!("InitProducerId: error {}", r.error_code);
        }
        Some((r.producer_id.0, r.producer_epoch))
    } else {
        None
    };
    let mut sequences = vec![0i32; partitions as usize];
    let batches = count.div_ceil(per_batch);
    let start = Instant::now();
    let (mut sent, mut answered) = (0usize, 0usize);
    while answered < batches {
        while sent < batches && sent - answered < IN_FLIGHT {
            let partition = (sent % partitions as usize) as i32;
            let n = per_batch.min(count - sent * per_batch);
            let seq = &mut sequences[partition as usize];
            let records = batch(sent * per_batch, n, make, producer.map(|(id, epoch)| (id, epoch, *seq)))?;
            *seq += n as i32;
            let req = ProduceRequest::default().with_acks(-1).with_timeout_ms(30_000).with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                    .with_partition_data(vec![PartitionProduceData::default()
                        .with_index(partition)
                        .with_records(Some(records))]),
            ]);
            conn.send(ApiKey::Produce, PRODUCE_VERSION, &req)?;
            sent += 1;
        }
        let r: ProduceResponse = conn.receive(ApiKey::Produce, PRODUCE_VERSION).context("produce response")?;
        let p = &r.responses[0].partition_responses[0];
        if p.error_code != 0 {
            bail!("produce to partition {}: error {}", p.index, p.error_code);
        }
        answered += 1;
    }
    Ok(start.elapsed())
}

/// Creates `topic` with `partitions` partitions.
pub fn create_topic(port: u16, topic: &str, partitions: i32) -> Result<()> {
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
    let stream = TcpStream::connect(("127.0.0.1", port))?;
    let mut conn = Conn { stream, correlation_id: 0 };
    let req = CreateTopicsRequest::default().with_timeout_ms(30_000).with_topics(vec![CreatableTopic::default()
        .with_name(TopicName(StrBytes::from_string(topic.to_string())))
        .with_num_partitions(partitions)
        .with_replication_factor(1)]);
    conn.send(ApiKey::CreateTopics, 5, &req)?;
    let r: CreateTopicsResponse = conn.receive(ApiKey::CreateTopics, 5)?;
    match r.topics.first().map(|t| t.error_code) {
        Some(0) => Ok(()),
        other => bail!("create topic {topic}: error {other:?}"),
    }
}

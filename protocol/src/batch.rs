//! The v2 record batch (magic 2), read and edited in place.
//!
//! The broker stores batches exactly as the client sent them. It reads the 61-byte header
//! to assign offsets and check the CRC, and writes only the fields the CRC does not cover
//! (base offset, batch length, partition leader epoch). Records inside are decoded only
//! where a feature needs them (record timestamps of uncompressed batches).

use std::borrow::Cow;
use std::ops::Range;

/// Size of the v2 batch header, up to and including the record count.
pub const HEADER_SIZE: usize = 61;
/// Bytes before the CRC-covered part: base offset, length, leader epoch, magic, crc.
const CRC_START: usize = 21;

const ATTR_COMPRESSION_MASK: i16 = 0x07;
const ATTR_LOG_APPEND_TIME: i16 = 0x08;
const ATTR_TRANSACTIONAL: i16 = 0x10;
const ATTR_CONTROL: i16 = 0x20;

/// Why a batch cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("record batch truncated: need {needed} bytes, have {available}")]
    Truncated { needed: usize, available: usize },
    #[error("unsupported record batch magic {0} (only v2 is accepted)")]
    Magic(i8),
    #[error("record batch crc mismatch: header says {expected:#010x}, content is {actual:#010x}")]
    Crc { expected: u32, actual: u32 },
    #[error("record batch declares {count} records but last offset delta {last_offset_delta}")]
    Count { count: i32, last_offset_delta: i32 },
    #[error("record batch length {0} is invalid")]
    Length(i32),
    #[error("records of the batch do not decode: {0}")]
    Records(String),
}

/// Compression codec of a batch, from its attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
    Unknown(i16),
}

/// The fixed header of one record batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

fn i16_at(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn i32_at(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn i64_at(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl BatchHeader {
    /// Reads the header at the start of `buf` (which may hold more than one batch).
    pub fn parse(buf: &[u8]) -> Result<BatchHeader, BatchError> {
        if buf.len() < 17 {
            return Err(BatchError::Truncated { needed: 17, available: buf.len() });
        }
        let magic = buf[16] as i8;
        if magic != 2 {
            return Err(BatchError::Magic(magic));
        }
        if buf.len() < HEADER_SIZE {
            return Err(BatchError::Truncated { needed: HEADER_SIZE, available: buf.len() });
        }
        let header = BatchHeader {
            base_offset: i64_at(buf, 0),
            batch_length: i32_at(buf, 8),
            partition_leader_epoch: i32_at(buf, 12),
            magic,
            crc: u32::from_be_bytes(buf[17..21].try_into().expect("4 bytes")),
            attributes: i16_at(buf, 21),
            last_offset_delta: i32_at(buf, 23),
            base_timestamp: i64_at(buf, 27),
            max_timestamp: i64_at(buf, 35),
            producer_id: i64_at(buf, 43),
            producer_epoch: i16_at(buf, 51),
            base_sequence: i32_at(buf, 53),
            records_count: i32_at(buf, 57),
        };
        if (header.batch_length as i64) < (HEADER_SIZE as i64 - 12) {
            return Err(BatchError::Length(header.batch_length));
        }
        Ok(header)
    }

    /// Total size of the batch in bytes, header included.
    pub fn size(&self) -> usize {
        12 + self.batch_length as usize
    }

    /// Offset of the last record, given the base offset in the header.
    pub fn last_offset(&self) -> i64 {
        self.base_offset + self.last_offset_delta as i64
    }

    /// Number of offsets the batch occupies.
    pub fn offset_count(&self) -> i64 {
        self.last_offset_delta as i64 + 1
    }

    pub fn compression(&self) -> Compression {
        match self.attributes & ATTR_COMPRESSION_MASK {
            0 => Compression::None,
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            other => Compression::Unknown(other),
        }
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }

    pub fn has_log_append_time(&self) -> bool {
        self.attributes & ATTR_LOG_APPEND_TIME != 0
    }
}

/// Splits a records blob into the byte ranges of its batches, checking each header.
///
/// A trailing partial batch is an error: producers never send one.
pub fn split_batches(records: &[u8]) -> Result<Vec<(BatchHeader, Range<usize>)>, BatchError> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < records.len() {
        let header = BatchHeader::parse(&records[at..])?;
        let end = at + header.size();
        if end > records.len() {
            return Err(BatchError::Truncated { needed: header.size(), available: records.len() - at });
        }
        out.push((header, at..end));
        at = end;
    }
    Ok(out)
}

/// Checks what a producer's batch must satisfy before it is stored: CRC32C over the
/// attributes onwards, and a record count that matches the offset span.
pub fn validate(header: &BatchHeader, batch: &[u8]) -> Result<(), BatchError> {
    let actual = crc32c::crc32c(&batch[CRC_START..]);
    if actual != header.crc {
        return Err(BatchError::Crc { expected: header.crc, actual });
    }
    if header.last_offset_delta < 0 || header.records_count != header.last_offset_delta + 1 {
        return Err(BatchError::Count { count: header.records_count, last_offset_delta: header.last_offset_delta });
    }
    Ok(())
}

/// Sets the base offset; the CRC does not cover it.
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) {
    batch[0..8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Sets the partition leader epoch; the CRC does not cover it.
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) {
    batch[12..16].copy_from_slice(&epoch.to_be_bytes());
}

/// Marks the batch as LogAppendTime with `timestamp` as its max timestamp and recomputes
/// the CRC, as a topic with `message.timestamp.type=LogAppendTime` requires. The batch is
/// given as its header (the first [`HEADER_SIZE`] bytes, edited) and the records after it.
pub fn set_log_append_time(head: &mut [u8], records: &[u8], timestamp: i64) {
    let attributes = i16_at(head, 21) | ATTR_LOG_APPEND_TIME;
    head[21..23].copy_from_slice(&attributes.to_be_bytes());
    head[35..43].copy_from_slice(&timestamp.to_be_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&head[CRC_START..HEADER_SIZE]), records);
    head[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// Offset delta and timestamp of each record of a batch; `None` when its records do not
/// parse (compressed batches are decompressed: only ListOffsets by time needs this).
pub fn record_timestamps(header: &BatchHeader, batch: &[u8]) -> Option<Vec<(i32, i64)>> {
    let data = record_data(header, batch).ok()?;
    let mut out = Vec::with_capacity(header.records_count.clamp(0, 1 << 16) as usize);
    for r in Records::new(header, &data) {
        let r = r.ok()?;
        out.push((r.offset_delta, header.base_timestamp.wrapping_add(r.timestamp_delta)));
    }
    Some(out)
}

/// The indexes (within the batch) of its records with a null key, decompressing if
/// needed; `None` if its records do not decode.
pub fn keyless_records(batch: &[u8]) -> Option<Vec<i32>> {
    let header = BatchHeader::parse(batch).ok()?;
    let data = record_data(&header, batch).ok()?;
    let mut out = Vec::new();
    for (i, r) in Records::new(&header, &data).enumerate() {
        if r.ok()?.key.is_none() {
            out.push(i as i32);
        }
    }
    Some(out)
}

/// The records of a batch as stored after its header: borrowed when the batch is not
/// compressed, decompressed otherwise.
pub fn record_data<'a>(header: &BatchHeader, batch: &'a [u8]) -> Result<Cow<'a, [u8]>, BatchError> {
    use kafka_protocol::compression::{Decompressor, Gzip, Lz4, Snappy, Zstd};
    let records = batch
        .get(HEADER_SIZE..header.size().min(batch.len()))
        .ok_or(BatchError::Truncated { needed: HEADER_SIZE, available: batch.len() })?;
    fn out(r: anyhow::Result<Vec<u8>>) -> Result<Cow<'static, [u8]>, BatchError> {
        r.map(Cow::Owned).map_err(|e| BatchError::Records(format!("{e:#}")))
    }
    let mut buf: &[u8] = records;
    // The decompressed bytes are taken as they are (no copy when the buffer is unique).
    let take = |b: &mut bytes::Bytes| Ok(Vec::from(std::mem::take(b)));
    match header.compression() {
        Compression::None => Ok(Cow::Borrowed(records)),
        Compression::Gzip => out(Gzip::decompress(&mut buf, take)),
        Compression::Snappy => out(Snappy::decompress(&mut buf, take)),
        Compression::Lz4 => out(Lz4::decompress(&mut buf, take)),
        Compression::Zstd => out(Zstd::decompress(&mut buf, take)),
        Compression::Unknown(c) => Err(BatchError::Records(format!("unknown compression codec {c}"))),
    }
}

/// One record of a batch, borrowed from the batch's record data.
#[derive(Debug, Clone, Copy)]
pub struct RecordRef<'a> {
    pub offset_delta: i32,
    pub timestamp_delta: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    header_count: usize,
    headers: &'a [u8],
}

impl<'a> RecordRef<'a> {
    /// The record's headers in order: key, and value (`None` for a null value).
    pub fn headers(&self) -> impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)> + 'a {
        let mut buf = self.headers;
        (0..self.header_count).map_while(move |_| {
            let key = read_bytes(&mut buf)?;
            let value = read_bytes(&mut buf);
            Some((key?, value?))
        })
    }
}

/// The records of a batch's record data ([`record_data`]), read in place.
pub struct Records<'a> {
    buf: &'a [u8],
    left: i32,
}

impl<'a> Records<'a> {
    pub fn new(header: &BatchHeader, data: &'a [u8]) -> Self {
        Records { buf: data, left: header.records_count.max(0) }
    }

    fn next_record(&mut self) -> Option<RecordRef<'a>> {
        let length = usize::try_from(read_varint(&mut self.buf)?).ok()?;
        let mut r = self.buf.get(..length)?;
        self.buf = &self.buf[length..];
        r = r.get(1..)?; // attributes
        let timestamp_delta = read_varint(&mut r)?;
        let offset_delta = i32::try_from(read_varint(&mut r)?).ok()?;
        let key = read_bytes(&mut r)?;
        let value = read_bytes(&mut r)?;
        let header_count = usize::try_from(read_varint(&mut r)?).ok()?;
        if header_count > r.len() {
            return None;
        }
        let record = RecordRef { offset_delta, timestamp_delta, key, value, header_count, headers: r };
        // Every header must be whole: a record's fields are checked once, here.
        if record.headers().count() != header_count {
            return None;
        }
        Some(record)
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<RecordRef<'a>, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left <= 0 {
            return None;
        }
        self.left -= 1;
        match self.next_record() {
            Some(r) => Some(Ok(r)),
            None => {
                self.left = 0;
                Some(Err(BatchError::Records("a record is truncated or malformed".into())))
            }
        }
    }
}

/// Reads a length-prefixed byte string (length -1 is null): `None` if malformed,
/// `Some(None)` for null.
fn read_bytes<'a>(buf: &mut &'a [u8]) -> Option<Option<&'a [u8]>> {
    let len = read_varint(buf)?;
    if len < 0 {
        return Some(None);
    }
    let b = buf.get(..usize::try_from(len).ok()?)?;
    *buf = &buf[b.len()..];
    Some(Some(b))
}

/// Reads a zig-zag varint (up to 64 bits).
fn read_varint(buf: &mut &[u8]) -> Option<i64> {
    let mut value: u64 = 0;
    for i in 0..10 {
        let byte = *buf.first()?;
        *buf = &buf[1..];
        value |= ((byte & 0x7f) as u64) << (7 * i);
        if byte & 0x80 == 0 {
            return Some(((value >> 1) as i64) ^ -((value & 1) as i64));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::records::{
        Compression as Codec, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    fn encode(n: i64, base_ts: i64) -> Vec<u8> {
        encode_with(n, base_ts, Codec::None)
    }

    fn encode_with(n: i64, base_ts: i64, compression: Codec) -> Vec<u8> {
        let records: Vec<Record> = (0..n)
            .map(|i| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i,
                sequence: i as i32 - 1,
                timestamp: base_ts + i * 10,
                key: Some(format!("k{i}").into()),
                value: Some(format!("value {i}").into()),
                headers: Default::default(),
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(&mut buf, &records, &RecordEncodeOptions { version: 2, compression }).unwrap();
        buf.to_vec()
    }

    #[test]
    fn header_of_encoded_batch_reads_back() {
        let b = encode(5, 1_000);
        let (h, range) = split_batches(&b).unwrap().remove(0);
        assert_eq!(range, 0..b.len());
        assert_eq!(h.records_count, 5);
        assert_eq!(h.last_offset_delta, 4);
        assert_eq!(h.base_timestamp, 1_000);
        assert_eq!(h.max_timestamp, 1_040);
        validate(&h, &b).unwrap();
    }

    #[test]
    fn base_offset_and_epoch_do_not_touch_crc() {
        let mut b = encode(3, 0);
        set_base_offset(&mut b, 1234);
        set_partition_leader_epoch(&mut b, 9);
        let h = BatchHeader::parse(&b).unwrap();
        assert_eq!((h.base_offset, h.partition_leader_epoch), (1234, 9));
        validate(&h, &b).unwrap();
    }

    #[test]
    fn flipped_byte_fails_crc() {
        let mut b = encode(3, 0);
        let last = b.len() - 1;
        b[last] ^= 1;
        let h = BatchHeader::parse(&b).unwrap();
        assert!(matches!(validate(&h, &b), Err(BatchError::Crc { .. })));
    }

    #[test]
    fn log_append_time_rewrites_crc() {
        let mut b = encode(3, 0);
        let (head, records) = b.split_at_mut(HEADER_SIZE);
        set_log_append_time(head, records, 99);
        let h = BatchHeader::parse(&b).unwrap();
        assert!(h.has_log_append_time());
        assert_eq!(h.max_timestamp, 99);
        validate(&h, &b).unwrap();
    }

    #[test]
    fn truncated_batch_is_an_error() {
        let b = encode(3, 0);
        assert!(matches!(split_batches(&b[..b.len() - 1]), Err(BatchError::Truncated { .. })));
        assert!(matches!(split_batches(&b[..30]), Err(BatchError::Truncated { .. })));
    }

    #[test]
    fn record_timestamps_of_compressed_batches() {
        for codec in [Codec::Gzip, Codec::Snappy, Codec::Lz4, Codec::Zstd] {
            let b = encode_with(4, 500, codec);
            let h = BatchHeader::parse(&b).unwrap();
            assert_ne!(h.compression(), Compression::None);
            assert_eq!(record_timestamps(&h, &b).unwrap(), vec![(0, 500), (1, 510), (2, 520), (3, 530)], "{codec:?}");
        }
    }

    #[test]
    fn record_timestamps_of_uncompressed_batch() {
        let b = encode(4, 500);
        let h = BatchHeader::parse(&b).unwrap();
        assert_eq!(record_timestamps(&h, &b).unwrap(), vec![(0, 500), (1, 510), (2, 520), (3, 530)]);
    }
}

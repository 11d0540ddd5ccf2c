//! Request framing: `i32` size, request header, body.
//!
//! [`decode_request`] follows mini-redis: `Ok(None)` means "need more bytes"; an `Err` means
//! the connection's byte stream can no longer be trusted and must be closed.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};

/// Why a connection's input cannot be decoded.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {size} bytes exceeds socket.request.max.bytes ({max})")]
    TooLarge { size: i64, max: usize },
    #[error("frame of {size} bytes is too short for a request header")]
    TooShort { size: i64 },
    #[error("unknown api key {0}")]
    UnknownApiKey(i16),
    #[error("malformed {api_key:?} v{version} request: {reason}")]
    Malformed { api_key: ApiKey, version: i16, reason: String },
    #[error("cannot encode {api_key:?} v{version} response: {reason}")]
    Encode { api_key: ApiKey, version: i16, reason: String },
}

/// One decoded request.
#[derive(Debug, Clone)]
pub struct Request {
    pub api_key: ApiKey,
    pub header: RequestHeader,
    pub body: RequestKind,
}

/// What one complete frame holds.
#[derive(Debug, Clone)]
pub enum Frame {
    Request(Request),
    /// A request whose version the codec does not know. Only the fixed part of the header
    /// was read; Kafka answers ApiVersions in this state (KIP-511) and closes otherwise.
    UnsupportedVersion {
        api_key: ApiKey,
        version: i16,
        correlation_id: i32,
    },
}

/// Decodes one size-prefixed request from `buf`; `Ok(None)` until the whole frame is buffered.
pub fn decode_request(buf: &mut BytesMut, max_size: usize) -> Result<Option<Frame>, FrameError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let size = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as i64;
    if size < 8 {
        return Err(FrameError::TooShort { size });
    }
    if size as u64 > max_size as u64 {
        return Err(FrameError::TooLarge { size, max: max_size });
    }
    let total = 4 + size as usize;
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    let mut frame = buf.split_to(total).freeze();
    frame.advance(4);
    decode_frame(frame).map(Some)
}

/// Decodes the body of one frame (without its size prefix).
pub fn decode_frame(mut frame: Bytes) -> Result<Frame, FrameError> {
    if frame.len() < 8 {
        return Err(FrameError::TooShort { size: frame.len() as i64 });
    }
    let key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let api_key = ApiKey::try_from(key).map_err(|_| FrameError::UnknownApiKey(key))?;
    let range = api_key.valid_versions();
    // Produce v0-2 differ from v3 only by the missing transactional id, so they are
    // decoded as v3 and answered with UNSUPPORTED_VERSION by the handler (KAFKA-18659).
    let legacy_produce = api_key == ApiKey::Produce && (0..range.min).contains(&version);
    if (version < range.min || version > range.max) && !legacy_produce {
        return Ok(Frame::UnsupportedVersion { api_key, version, correlation_id });
    }
    let malformed = |reason: String| FrameError::Malformed { api_key, version, reason };
    let header_version = api_key.request_header_version(version.max(range.min));
    let header = RequestHeader::decode(&mut frame, header_version).map_err(|e| malformed(e.to_string()))?;
    let body = if legacy_produce {
        let mut with_txn_id = BytesMut::with_capacity(frame.len() + 2);
        with_txn_id.put_i16(-1);
        with_txn_id.put_slice(&frame);
        RequestKind::decode(api_key, &mut with_txn_id.freeze(), range.min)
    } else {
        RequestKind::decode(api_key, &mut frame, version)
    }
    .map_err(|e| malformed(format!("{e:#}")))?;
    Ok(Frame::Request(Request { api_key, header, body }))
}

/// Appends one size-prefixed response to `out`.
///
/// ApiVersions responses always carry header v0, whatever the request version (KIP-511).
pub fn encode_response(
    out: &mut BytesMut,
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &ResponseKind,
) -> Result<(), FrameError> {
    let err = |e: anyhow_free::Error| FrameError::Encode { api_key, version, reason: e.0 };
    let start = out.len();
    out.put_i32(0);
    let header_version = if api_key == ApiKey::ApiVersions { 0 } else { api_key.response_header_version(version) };
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(out, header_version)
        .map_err(|e| err(e.into()))?;
    body.encode(out, version).map_err(|e| err(e.into()))?;
    let size = (out.len() - start - 4) as i32;
    out[start..start + 4].copy_from_slice(&size.to_be_bytes());
    Ok(())
}

/// Encodes a request with its size prefix, as a client sends it.
pub fn encode_request(header: &RequestHeader, body: &RequestKind) -> Result<BytesMut, FrameError> {
    let api_key =
        ApiKey::try_from(header.request_api_key).map_err(|_| FrameError::UnknownApiKey(header.request_api_key))?;
    let version = header.request_api_version;
    let err = |e: anyhow_free::Error| FrameError::Encode { api_key, version, reason: e.0 };
    let mut out = BytesMut::new();
    out.put_i32(0);
    header.encode(&mut out, api_key.request_header_version(version)).map_err(|e| err(e.into()))?;
    body.encode(&mut out, version).map_err(|e| err(e.into()))?;
    let size = (out.len() - 4) as i32;
    out[0..4].copy_from_slice(&size.to_be_bytes());
    Ok(out)
}

/// Decodes a response body (after the size prefix), as a client reads it.
pub fn decode_response(mut frame: Bytes, api_key: ApiKey, version: i16) -> Result<(i32, ResponseKind), FrameError> {
    let malformed = |reason: String| FrameError::Malformed { api_key, version, reason };
    let header_version = if api_key == ApiKey::ApiVersions { 0 } else { api_key.response_header_version(version) };
    let header = ResponseHeader::decode(&mut frame, header_version).map_err(|e| malformed(e.to_string()))?;
    let body = ResponseKind::decode(api_key, &mut frame, version).map_err(|e| malformed(format!("{e:#}")))?;
    Ok((header.correlation_id, body))
}

/// The codec reports errors as `anyhow::Error`; this keeps anyhow out of our public types.
mod anyhow_free {
    pub struct Error(pub String);
    impl<E: std::fmt::Display> From<E> for Error {
        fn from(e: E) -> Self {
            Error(format!("{e:#}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::ApiVersionsRequest;

    fn frame_for(key: i16, version: i16, body: &[u8]) -> BytesMut {
        let mut b = BytesMut::new();
        b.put_i32((8 + 2 + body.len()) as i32);
        b.put_i16(key);
        b.put_i16(version);
        b.put_i32(7);
        b.put_i16(-1); // null client id
        b.put_slice(body);
        b
    }

    #[test]
    fn partial_frame_needs_more_bytes() {
        let full = encode_request(
            &RequestHeader::default().with_request_api_key(18).with_request_api_version(3).with_correlation_id(1),
            &RequestKind::ApiVersions(ApiVersionsRequest::default()),
        )
        .unwrap();
        for cut in 0..full.len() {
            let mut part = BytesMut::from(&full[..cut]);
            assert!(decode_request(&mut part, 1 << 20).unwrap().is_none(), "cut at {cut}");
        }
        let mut whole = full.clone();
        assert!(matches!(decode_request(&mut whole, 1 << 20).unwrap(), Some(Frame::Request(_))));
        assert!(whole.is_empty());
    }

    #[test]
    fn oversized_frame_is_rejected_before_buffering() {
        let mut b = BytesMut::new();
        b.put_i32(10_000);
        assert!(matches!(decode_request(&mut b, 1000), Err(FrameError::TooLarge { .. })));
    }

    #[test]
    fn unknown_api_key_is_an_error() {
        let mut b = frame_for(999, 0, &[]);
        assert!(matches!(decode_request(&mut b, 1 << 20), Err(FrameError::UnknownApiKey(999))));
    }

    #[test]
    fn future_api_versions_request_is_reported_not_failed() {
        let mut b = frame_for(18, 99, &[1, 2, 3]);
        match decode_request(&mut b, 1 << 20).unwrap() {
            Some(Frame::UnsupportedVersion { api_key: ApiKey::ApiVersions, version: 99, correlation_id: 7 }) => {}
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn truncated_body_is_malformed() {
        // Metadata v1 with an array count of 5 topics and no topics.
        let mut b = frame_for(3, 1, &[0, 0, 0, 5]);
        assert!(matches!(decode_request(&mut b, 1 << 20), Err(FrameError::Malformed { .. })));
    }
}

//! The Kafka listener and its connections.
//!
//! A connection reads frames in order and runs each request as its own task, so many
//! produce requests of one client are in flight together; the writer sends the responses
//! in request order, as Kafka clients require. Requests whose effects depend on their
//! order (produce, and the offset requests of [`in_order`]) still take effect in the
//! order the client sent them. A frame that cannot be decoded closes only its own
//! connection.

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseKind};
use protocol::frame::{self, Frame, FrameError, Request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn, Instrument};

use crate::api::{self, Call};
use crate::cluster::node::Node;

/// Requests of one connection that may be in flight at once.
const MAX_IN_FLIGHT: usize = 256;

/// Accepts Kafka connections until `shutdown` fires.
pub async fn serve(listener: TcpListener, node: Arc<Node>, shutdown: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((socket, peer)) => {
                let _ = socket.set_nodelay(true);
                let node = node.clone();
                let shutdown = shutdown.clone();
                let span = tracing::debug_span!("connection", %peer);
                tokio::spawn(
                    async move {
                        metrics::gauge!("quarry_connections").increment(1.0);
                        tokio::select! {
                            _ = shutdown.cancelled() => {}
                            r = run_connection(socket, peer, node) => {
                                if let Err(e) = r {
                                    debug!(error = %e, "connection closed");
                                }
                            }
                        }
                        metrics::gauge!("quarry_connections").decrement(1.0);
                    }
                    .instrument(span),
                );
            }
            Err(e) => {
                warn!(error = %e, "failed to accept");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("{api_key:?} v{version} is not supported")]
    Unsupported { api_key: ApiKey, version: i16 },
}

async fn run_connection(socket: TcpStream, peer: std::net::SocketAddr, node: Arc<Node>) -> Result<(), ConnectionError> {
    let (mut reader, writer) = socket.into_split();
    let (tx, rx) = mpsc::channel::<JoinHandle<std::io::Result<Option<Bytes>>>>(MAX_IN_FLIGHT);
    let writer = tokio::spawn(write_responses(writer, rx));
    let max = node.config.socket_request_max_bytes;
    let mut buf = BytesMut::with_capacity(64 * 1024);
    // Finishes (its sender drops) when the connection's last in-order request is done.
    let mut in_order_tail: Option<oneshot::Receiver<()>> = None;
    let result = loop {
        let frame = match frame::decode_request(&mut buf, max) {
            Ok(Some(f)) => f,
            Ok(None) => {
                if buf.capacity() - buf.len() < 4096 {
                    buf.reserve(64 * 1024);
                }
                match reader.read_buf(&mut buf).await {
                    Ok(0) => break Ok(()),
                    Ok(_) => continue,
                    Err(e) => break Err(e.into()),
                }
            }
            Err(e) => {
                metrics::counter!("quarry_bad_frames_total").increment(1);
                warn!(error = %e, "closing connection on a bad frame");
                break Err(e.into());
            }
        };
        let handle = match frame {
            Frame::UnsupportedVersion { api_key: ApiKey::ApiVersions, version, correlation_id } => {
                debug!(version, "answering ApiVersions of an unknown version in v0");
                let body = ResponseKind::ApiVersions(api::api_versions::unsupported());
                tokio::spawn(async move { encode(ApiKey::ApiVersions, 0, correlation_id, &body).map(Some) })
            }
            Frame::UnsupportedVersion { api_key, version, .. } => {
                break Err(ConnectionError::Unsupported { api_key, version })
            }
            Frame::Request(req) => {
                let version = req.header.request_api_version;
                if !api::advertised(req.api_key).is_some_and(|r| r.min <= version && version <= r.max) {
                    break Err(ConnectionError::Unsupported { api_key: req.api_key, version });
                }
                let Request { api_key, header, body } = req;
                let call = Call {
                    node: node.clone(),
                    version,
                    client_id: header.client_id.as_deref().unwrap_or("").to_string(),
                    client_host: format!("/{}", peer.ip()),
                };
                let started = Instant::now();
                let response: BoxFuture<'static, Option<ResponseKind>> = match body {
                    // Queued here, in the read loop, so a client's produce requests keep
                    // their order per partition.
                    RequestKind::Produce(p) => {
                        api::produce::submit(call, p).await.map(|r| r.map(ResponseKind::Produce)).boxed()
                    }
                    body if in_order(api_key) => {
                        let previous = in_order_tail.take();
                        let (done, tail) = oneshot::channel::<()>();
                        in_order_tail = Some(tail);
                        async move {
                            if let Some(previous) = previous {
                                let _ = previous.await;
                            }
                            let response = api::handle(call, body).await;
                            drop(done);
                            response
                        }
                        .boxed()
                    }
                    body => api::handle(call, body).boxed(),
                };
                tokio::spawn(finish(api_key, header, started, response))
            }
        };
        if tx.send(handle).await.is_err() {
            break Ok(());
        }
    };
    drop(tx);
    // Responses to requests already read are still sent before closing.
    let _ = writer.await;
    result
}

/// Requests that start only once the connection's previous such request is done, as
/// Kafka handles a connection's requests one at a time: pipelined asynchronous commits
/// (librdkafka's and Java's `commitAsync`) then land in the order they were sent, and an
/// OffsetFetch sees the commits sent before it.
fn in_order(api_key: ApiKey) -> bool {
    matches!(api_key, ApiKey::OffsetCommit | ApiKey::OffsetFetch | ApiKey::OffsetDelete | ApiKey::DeleteGroups)
}

async fn finish(
    api_key: ApiKey,
    header: RequestHeader,
    started: Instant,
    response: BoxFuture<'static, Option<ResponseKind>>,
) -> std::io::Result<Option<Bytes>> {
    let version = header.request_api_version;
    let span = tracing::debug_span!("request", ?api_key, api_version = version, correlation_id = header.correlation_id);
    let response = response.instrument(span).await;
    let label = format!("{api_key:?}");
    metrics::counter!("quarry_requests_total", "api" => label.clone()).increment(1);
    metrics::histogram!("quarry_request_seconds", "api" => label).record(started.elapsed().as_secs_f64());
    // Produce v0-2 are answered with UNSUPPORTED_VERSION in the v3 layout, which v2 shares.
    let encode_version = if api_key == ApiKey::Produce { version.max(3) } else { version };
    let Some(response) = response else { return Ok(None) };
    encode(api_key, encode_version, header.correlation_id, &response).map(Some)
}

/// The response frame; an error if the body cannot be written in this version (a field
/// set that the version lacks), which closes the connection rather than leave the client
/// waiting for an answer that never comes.
fn encode(api_key: ApiKey, version: i16, correlation_id: i32, body: &ResponseKind) -> std::io::Result<Bytes> {
    // A fetch response is mostly its records: room for them up front, so the buffer is
    // not grown (and copied) several times over while they are written into it.
    let records: usize = match body {
        ResponseKind::Fetch(f) => f
            .responses
            .iter()
            .flat_map(|t| t.partitions.iter())
            .map(|p| p.records.as_ref().map_or(0, |r| r.len()))
            .sum(),
        _ => 0,
    };
    let mut out = BytesMut::with_capacity(records + 4096);
    match frame::encode_response(&mut out, api_key, version, correlation_id, body) {
        Ok(()) => Ok(out.freeze()),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode response; closing the connection");
            Err(std::io::Error::other(format!("cannot encode a {api_key:?} v{version} response")))
        }
    }
}

/// Writes responses in request order, coalescing those that are ready together.
async fn write_responses(
    mut writer: OwnedWriteHalf,
    mut rx: mpsc::Receiver<JoinHandle<std::io::Result<Option<Bytes>>>>,
) -> std::io::Result<()> {
    let mut out = BytesMut::new();
    while let Some(handle) = rx.recv().await {
        match handle.await {
            // Large responses (fetches) go out as they are; small ones are coalesced.
            Ok(Ok(Some(bytes))) if bytes.len() >= 64 * 1024 => {
                if !out.is_empty() {
                    writer.write_all(&out).await?;
                    out.clear();
                }
                writer.write_all(&bytes).await?;
            }
            Ok(Ok(Some(bytes))) => out.extend_from_slice(&bytes),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => {
                // What was answered before still goes out.
                writer.write_all(&out).await?;
                return Err(e);
            }
            Err(e) => {
                tracing::error!(error = %e, "request handler failed; closing connection");
                return Err(std::io::Error::other("request handler failed"));
            }
        }
        if rx.is_empty() && !out.is_empty() {
            writer.write_all(&out).await?;
            out.clear();
        }
    }
    if !out.is_empty() {
        writer.write_all(&out).await?;
    }
    let _ = writer.shutdown().await;
    Ok(())
}

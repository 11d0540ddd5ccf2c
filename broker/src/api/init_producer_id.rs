//! InitProducerId: a producer id for an idempotent producer, reserved durably through the
//! controller, or the next epoch of the id the producer already has.
//!
//! A producer that hits a sequence error bumps its epoch (KIP-360) by sending its current
//! id and epoch (v3+): the answer is the same id with the epoch one higher, so partitions
//! fence the old epoch and expect sequence 0 again. When the epoch would overflow, a new id
//! is handed out. Transactional ids are refused: transactions are not implemented.

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use kafka_protocol::ResponseError;

use super::Call;

pub async fn handle(call: &Call, req: InitProducerIdRequest) -> InitProducerIdResponse {
    let refuse = |code: ResponseError| {
        InitProducerIdResponse::default()
            .with_error_code(code.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    };
    if req.transactional_id.as_ref().is_some_and(|t| !t.is_empty()) {
        tracing::info!(
            client_id = call.client_id,
            "InitProducerId with a transactional id refused: transactions are not supported"
        );
        return refuse(ResponseError::TransactionalIdAuthorizationFailed);
    }
    let (id, epoch) = (req.producer_id.0, req.producer_epoch);
    if id >= 0 || epoch >= 0 {
        if id < 0 || epoch < 0 {
            return refuse(ResponseError::InvalidRequest);
        }
        if id >= call.node.metadata().next_producer_id {
            return refuse(ResponseError::InvalidProducerIdMapping);
        }
        if epoch < i16::MAX - 1 {
            return InitProducerIdResponse::default().with_producer_id(ProducerId(id)).with_producer_epoch(epoch + 1);
        }
    }
    match call.node.new_producer_id().await {
        Ok(id) => InitProducerIdResponse::default().with_producer_id(ProducerId(id)).with_producer_epoch(0),
        Err((code, why)) => {
            tracing::warn!(error = why, "cannot reserve producer ids");
            refuse(code)
        }
    }
}

//! ApiVersions: what this broker speaks. An unknown future version is answered in v0
//! format with UNSUPPORTED_VERSION by the connection (KIP-511).

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};

use super::{advertised, Call, IMPLEMENTED};
use crate::error::ResponseError;

pub fn handle(_call: &Call, _req: ApiVersionsRequest) -> ApiVersionsResponse {
    response(0)
}

/// The response listing every implemented API, with `error_code`.
pub fn response(error_code: i16) -> ApiVersionsResponse {
    let api_keys = IMPLEMENTED
        .iter()
        .filter_map(|k| {
            advertised(*k)
                .map(|r| ApiVersion::default().with_api_key(*k as i16).with_min_version(r.min).with_max_version(r.max))
        })
        .collect();
    ApiVersionsResponse::default().with_error_code(error_code).with_api_keys(api_keys)
}

/// The v0 answer to an ApiVersions request of a version we do not know.
pub fn unsupported() -> ApiVersionsResponse {
    response(ResponseError::UnsupportedVersion.code())
}

//! [`ApiError`]: every way an API call fails, mapped to status, `code` and message in one place
//! (DESIGN §2.2). Internal details are logged, never sent.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::api_key::Scope;
use crate::hub::BrokerError;
use crate::store::StoreError;

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Always `false`.
    pub success: bool,
    /// Human readable message; names the offending field where there is one.
    pub error: String,
    /// Machine readable code, such as `invalid_request`.
    pub code: &'static str,
    /// Seconds to wait, on `rate_limited` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

/// Every failure of an API call.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400 `invalid_request`: malformed JSON, wrong type, bad name; the message names the field.
    #[error("{0}")]
    InvalidRequest(String),
    /// 401 `missing_api_key`: no key in any accepted location.
    #[error("an API key is required")]
    MissingApiKey,
    /// 401 `invalid_key`: unknown, malformed, revoked, or of the wrong kind for its header.
    #[error("invalid API key")]
    InvalidKey,
    /// 401 `key_expired`.
    #[error("API key has expired")]
    KeyExpired,
    /// 401 `invalid_token`: a client JWT that is missing, malformed, badly signed or expired.
    #[error("{0}")]
    InvalidToken(String),
    /// 401 `invalid_ticket`: unknown, used or expired ticket.
    #[error("invalid or expired ticket")]
    InvalidTicket,
    /// 403 `insufficient_scope`: the message names the scope.
    #[error("this key lacks the scope {0}")]
    InsufficientScope(Scope),
    /// 403 `forbidden`: another tenant's app.
    #[error("{0}")]
    Forbidden(String),
    /// 403 `app_disabled`.
    #[error("the app is disabled")]
    AppDisabled,
    /// A key of a soft-deleted app: 403 `app_disabled`, except on the app's own routes
    /// (`/api/applications/…`), where the app is 404 like for everyone else.
    #[error("the app is deleted")]
    AppDeleted(String),
    /// 403 `origin_not_allowed`.
    #[error("origin {0:?} is not allowed for this app")]
    OriginNotAllowed(String),
    /// 404 `not_found`.
    #[error("{0}")]
    NotFound(String),
    /// 405 `method_not_allowed`.
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    /// 409 `conflict`.
    #[error("{0}")]
    Conflict(String),
    /// 413 `payload_too_large`.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 415 `unsupported_media_type`.
    #[error("Content-Type must be application/json")]
    UnsupportedMediaType,
    /// 426 `upgrade_required`: `/ws` without WebSocket upgrade headers.
    #[error("this endpoint speaks WebSocket; send an upgrade request")]
    UpgradeRequired,
    /// 429 `connection_limit`: the app's `max_connections` is reached.
    #[error("the app has reached its connection limit")]
    ConnectionLimit,
    /// 429 `connection_limit`: the client IP holds `limits.connections_per_ip` connections.
    #[error("too many connections from this address")]
    IpConnectionLimit,
    /// 503 `unavailable` with `Retry-After`: this node takes no new WebSocket connections (at
    /// its connection or memory bound); another node, or this one later, will.
    #[error("this node is full; retry in {retry_after} s (another node may take the connection now)")]
    NodeFull { retry_after: u64 },
    /// 429 `rate_limited`.
    #[error("rate limit exceeded; retry in {retry_after} s")]
    RateLimited { retry_after: u64 },
    /// 503 `unavailable`: the store or the broker cannot be reached; retrying later is safe.
    /// The detail is logged only.
    #[error("temporarily unavailable; retrying later is safe")]
    Unavailable(String),
    /// 500 `internal`: a bug. The detail is logged only.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    /// Status and machine code of each variant.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::InvalidRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            ApiError::MissingApiKey => (StatusCode::UNAUTHORIZED, "missing_api_key"),
            ApiError::InvalidKey => (StatusCode::UNAUTHORIZED, "invalid_key"),
            ApiError::KeyExpired => (StatusCode::UNAUTHORIZED, "key_expired"),
            ApiError::InvalidToken(_) => (StatusCode::UNAUTHORIZED, "invalid_token"),
            ApiError::InvalidTicket => (StatusCode::UNAUTHORIZED, "invalid_ticket"),
            ApiError::InsufficientScope(_) => (StatusCode::FORBIDDEN, "insufficient_scope"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::AppDisabled | ApiError::AppDeleted(_) => (StatusCode::FORBIDDEN, "app_disabled"),
            ApiError::OriginNotAllowed(_) => (StatusCode::FORBIDDEN, "origin_not_allowed"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::UnsupportedMediaType => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            ApiError::UpgradeRequired => (StatusCode::UPGRADE_REQUIRED, "upgrade_required"),
            ApiError::ConnectionLimit | ApiError::IpConnectionLimit => {
                (StatusCode::TOO_MANY_REQUESTS, "connection_limit")
            }
            ApiError::NodeFull { .. } => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    /// 400 naming `field`.
    pub fn field(field: &str, message: impl std::fmt::Display) -> Self {
        ApiError::InvalidRequest(format!("{field}: {message}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        match &self {
            ApiError::Internal(detail) => tracing::error!(%detail, "internal error"),
            ApiError::Unavailable(detail) => tracing::warn!(%detail, "dependency unavailable"),
            _ => tracing::debug!(code, error = %self, "request refused"),
        }
        let retry_after = match self {
            ApiError::RateLimited { retry_after } | ApiError::NodeFull { retry_after } => Some(retry_after),
            _ => None,
        };
        let body = ErrorBody { success: false, error: self.to_string(), code, retry_after };
        let mut response = (status, axum::Json(body)).into_response();
        if let Some(seconds) = retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if status == StatusCode::UPGRADE_REQUIRED {
            response.headers_mut().insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict => ApiError::Conflict("already exists".into()),
            StoreError::NotFound => ApiError::NotFound("not found".into()),
            StoreError::Unavailable(detail) => ApiError::Unavailable(format!("store unavailable: {detail}")),
            StoreError::Corrupt(detail) => ApiError::Internal(format!("corrupt store record: {detail}")),
        }
    }
}

impl From<BrokerError> for ApiError {
    fn from(e: BrokerError) -> Self {
        match e {
            BrokerError::Unavailable(detail) => {
                ApiError::Unavailable(format!("broker unavailable: {detail}"))
            }
        }
    }
}

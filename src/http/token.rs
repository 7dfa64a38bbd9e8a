//! `POST /api/token`: mints a client JWT for an app from its `app_id` and `app_secret`.

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use subtle::ConstantTimeEq;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::extract::{ClientIp, Json, opt_int};
use super::{AppState, iso8601};
use crate::apps::is_active;
use crate::auth::token::{TokenError, check_payload, mint};
use crate::clock::now_ms;

/// Routes of this area.
pub fn router() -> Router<AppState> {
    Router::new().route("/api/token", post(create_token))
}

/// Shortest and longest token lifetimes, in seconds.
const TTL_RANGE: std::ops::RangeInclusive<u64> = 60..=2_592_000;

/// Body of `POST /api/token`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct TokenRequest {
    pub app_id: String,
    pub app_secret: String,
    /// Extra claims: `user_id`, `user_info`, `rooms`, `can_publish`, and anything else.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub payload: Option<Map<String, Value>>,
    /// Seconds, 60–2592000; default 86400.
    #[serde(default, deserialize_with = "opt_int")]
    #[schema(minimum = 60, maximum = 2_592_000)]
    pub expires_in: Option<u64>,
}

/// A minted token.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    pub success: bool,
    pub token: String,
    pub expires_in: u64,
    /// ISO 8601 UTC.
    pub expires_at: String,
}

#[utoipa::path(post, path = "/api/token", tag = "tokens", request_body = TokenRequest,
    responses((status = 200, body = TokenResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 415, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn create_token(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    slot: Option<axum::Extension<crate::limits::RateSlot>>,
    Json(req): Json<TokenRequest>,
) -> Result<axum::Json<TokenResponse>, ApiError> {
    AppState::charge_ip(&state.guards.limits.ips, ip, slot.as_deref())?;
    let ttl = req.expires_in.unwrap_or(state.config.tokens.default_ttl_s);
    if !TTL_RANGE.contains(&ttl) {
        return Err(ApiError::field("expires_in", "must be between 60 and 2592000 seconds"));
    }
    let payload = req.payload.unwrap_or_default();
    check_payload(&payload).map_err(|e| match e {
        TokenError::InvalidPayload { field, message } => ApiError::field(&field, message),
        TokenError::Invalid(m) => ApiError::InvalidRequest(m),
    })?;
    // An unknown app and a wrong secret answer alike, so app ids cannot be probed.
    // A secret the cache does not know may have been regenerated through another node.
    let matches = |a: &crate::store::AppRecord| {
        a.deleted_at.is_none() && bool::from(a.secret.as_bytes().ct_eq(req.app_secret.as_bytes()))
    };
    let checked =
        state.apps.check_app(&req.app_id, |a| if matches(a) { Ok(a.clone()) } else { Err(()) }).await?;
    let app = checked.and_then(Result::ok).ok_or(ApiError::InvalidKey)?;
    if !is_active(&app) {
        return Err(ApiError::AppDisabled);
    }
    let now = now_ms();
    let token = mint(&app.app_id, &app.secret, &payload, now / 1000, ttl as i64);
    Ok(axum::Json(TokenResponse {
        success: true,
        token,
        expires_in: ttl,
        expires_at: iso8601((now / 1000 + ttl as i64) * 1000),
    }))
}

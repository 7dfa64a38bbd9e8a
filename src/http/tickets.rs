//! `POST /api/tickets`: one-time WebSocket tickets, bought with an API key (`tickets:write`) or
//! with a client JWT as `Authorization: Bearer`.

use axum::Router;
use axum::extract::{FromRequestParts, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::routing::post;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::extract::{ClientIp, Json, Principal, find_key, opt_int};
use crate::apps::is_active;
use crate::auth::api_key::Scope;
use crate::auth::token::{Identity, TokenError, check_payload};
use crate::clock::now_ms;
use crate::protocol::{RoomGrants, RoomPattern};

/// Routes of this area.
pub fn router() -> Router<AppState> {
    Router::new().route("/api/tickets", post(create_ticket))
}

/// Shortest and longest ticket lifetimes, in seconds.
const TTL_RANGE: std::ops::RangeInclusive<u64> = 5..=300;
/// Lifetime when the request names none, in seconds.
const DEFAULT_TTL: u64 = 30;

/// Body of `POST /api/tickets`. With a client JWT only `expires_in` counts: the ticket carries the
/// JWT's identity and restrictions.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(default)]
pub struct TicketRequest {
    /// Required with an admin key.
    pub app_id: Option<String>,
    #[schema(min_length = 1, max_length = 200)]
    pub user_id: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub user_info: Option<Value>,
    /// Room patterns (`*` at the end for a prefix); absent = every room except `private-*`.
    #[schema(value_type = Option<Vec<RoomPatternText>>)]
    pub rooms: Option<Vec<String>>,
    pub can_publish: Option<bool>,
    /// Seconds, 5–300; default 30.
    #[serde(deserialize_with = "opt_int")]
    #[schema(minimum = 5, maximum = 300)]
    pub expires_in: Option<u64>,
}

/// A room pattern: a room name, optionally ending in `*` (a prefix match); or `*` alone.
#[derive(Debug, ToSchema)]
#[schema(pattern = r"^([A-Za-z0-9_\-=@,.;:]{1,164}\*?|\*)$")]
pub struct RoomPatternText(#[allow(dead_code, reason = "describes the schema only")] String);

/// A ticket, shown once.
#[derive(Debug, Serialize, ToSchema)]
pub struct TicketResponse {
    pub success: bool,
    /// Pass as `/ws?ticket=`; single use.
    pub ticket: String,
    pub expires_in: u64,
}

/// Who is buying the ticket.
#[derive(Debug)]
pub enum Buyer {
    Key(Principal),
    Client(Identity),
}

impl FromRequestParts<AppState> for Buyer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let ClientIp(ip) = ClientIp::from_request_parts(parts, state).await?;
        AppState::charge_ip(&state.guards.limits.ips, ip, parts.extensions.get::<crate::limits::RateSlot>())?;
        let bearer = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim);
        // A bearer that is not an API key (`rc_…`) is a client JWT.
        if let Some(token) = bearer.filter(|t| !t.starts_with("rc_"))
            && find_key(parts).is_some_and(|(source, _)| source == super::extract::KeySource::Bearer)
        {
            return state.verify_client_token(token).await.map(Buyer::Client);
        }
        Principal::from_request_parts(parts, state).await.map(Buyer::Key)
    }
}

fn identity_from_body(app_id: String, body: &TicketRequest) -> Result<Identity, ApiError> {
    let mut claims = Map::new();
    if let Some(v) = &body.user_id {
        claims.insert("user_id".into(), Value::String(v.clone()));
    }
    if let Some(v) = &body.user_info {
        claims.insert("user_info".into(), v.clone());
    }
    if let Some(rooms) = &body.rooms {
        claims.insert("rooms".into(), rooms.iter().cloned().map(Value::String).collect());
    }
    check_payload(&claims).map_err(|e| match e {
        TokenError::InvalidPayload { field, message } => {
            ApiError::field(field.trim_start_matches("payload."), message)
        }
        TokenError::Invalid(m) => ApiError::InvalidRequest(m),
    })?;
    let grants = match &body.rooms {
        None => RoomGrants::default(),
        Some(list) => RoomGrants::new(Some(
            list.iter()
                .map(|p| RoomPattern::parse(p))
                .collect::<Result<_, _>>()
                .map_err(|e| ApiError::field("rooms", e))?,
        )),
    };
    Ok(Identity {
        app_id,
        user_id: body.user_id.clone(),
        user_info: body.user_info.clone().filter(|v| !v.is_null()),
        grants,
        can_publish: body.can_publish.unwrap_or(false),
        exp: 0,
    })
}

#[utoipa::path(post, path = "/api/tickets", tag = "tokens", request_body = Option<TicketRequest>,
    responses((status = 200, body = TicketResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 415, body = ErrorBody), (status = 429, body = ErrorBody)),
    security(("api_key" = [])))]
async fn create_ticket(
    State(state): State<AppState>,
    buyer: Buyer,
    Json(body): Json<TicketRequest>,
) -> Result<axum::Json<TicketResponse>, ApiError> {
    let ttl = body.expires_in.unwrap_or(DEFAULT_TTL);
    if !TTL_RANGE.contains(&ttl) {
        return Err(ApiError::field("expires_in", "must be between 5 and 300 seconds"));
    }
    let identity = match buyer {
        Buyer::Client(identity) => identity,
        Buyer::Key(principal) => {
            principal.require(Scope::TicketsWrite)?;
            let app_id = principal.target_app(body.app_id.as_deref())?;
            identity_from_body(app_id, &body)?
        }
    };
    let app = state.live_app(&identity.app_id).await?;
    if !is_active(&app) {
        return Err(ApiError::AppDisabled);
    }
    let now = now_ms();
    let ticket = state
        .auth
        .tickets
        .issue(identity, now + ttl as i64 * 1000, now)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    Ok(axum::Json(TicketResponse { success: true, ticket, expires_in: ttl }))
}

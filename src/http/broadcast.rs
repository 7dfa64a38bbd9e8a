//! `POST /api/broadcast` and `/api/broadcast/batch`: server-side publishing into rooms.

use std::borrow::Cow;

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::ToSchema;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::extract::{Authed, Principal};
use crate::apps::is_active;
use crate::auth::api_key::Scope;
use crate::domain::AppId;
use crate::hub::events::PublishKind;
use crate::hub::registry::RoomKey;
use crate::idempotency::Claim;
use crate::protocol::{EventName, MAX_DATA_DEPTH, RoomName, compact_json, json_depth};

/// Routes of this area.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/broadcast", post(broadcast))
        .route("/api/broadcast/batch", post(broadcast_batch))
}

/// One event to publish.
#[derive(Debug, Deserialize, ToSchema)]
pub struct BroadcastRequest {
    /// Required with an admin key (400 without it); must match an app key's app when given.
    #[serde(default)]
    pub app_id: Option<String>,
    /// Client-facing room name.
    #[schema(value_type = String, pattern = r"^[A-Za-z0-9_\-=@,.;:]{1,164}$")]
    pub room: RoomName,
    /// 1–200 characters, not starting with `roomcast:`.
    #[schema(value_type = String, min_length = 1, max_length = 200, pattern = r"^(?!roomcast:)[^\x00-\x1f\x7f-\x9f]+$")]
    pub event: EventName,
    /// Any JSON value; its compact form must fit `limits.max_message_bytes`.
    #[serde(default)]
    #[schema(value_type = Option<serde_json::Value>)]
    pub data: Option<Box<RawValue>>,
    /// A `c_…` connection that must not receive the event (usually the sender's own).
    #[serde(default, alias = "socket_id")]
    pub exclude_connection_id: Option<String>,
    /// 1–64 characters of `[A-Za-z0-9_.:-]`: a repeat within `history.idempotency_window_s`
    /// (300 s) for the same app publishes nothing and answers the first result, on any node.
    #[serde(default)]
    #[schema(pattern = r"^[A-Za-z0-9_.:-]{1,64}$")]
    pub idempotency_key: Option<String>,
}

/// Body of `POST /api/broadcast/batch`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct BatchRequest {
    /// At most `limits.max_batch_events` (100) events.
    #[schema(min_items = 1, max_items = 100)]
    pub events: Vec<BroadcastRequest>,
}

/// What one publication reached (recorded whole for an `idempotency_key`).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BroadcastResult {
    pub success: bool,
    /// Namespaced `app-{app_id}-{room}`.
    pub room: String,
    pub event: String,
    /// Subscribers of the room when the event was published.
    pub subscriber_count: usize,
    /// The event's place in the room's stream (DESIGN §11); 0 when the room had no stream (no
    /// subscriber, and its app keeps no history).
    pub offset: u64,
    /// The stream's epoch, which the offset belongs to.
    pub epoch: String,
    /// Milliseconds since the epoch.
    pub timestamp: i64,
}

/// `{"success", "results"}`, one result per event in order.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchResult {
    pub success: bool,
    pub results: Vec<BroadcastResult>,
}

/// A request checked against the caller, the app and the size limit.
pub(super) struct Checked<'a> {
    app_id: String,
    req: &'a BroadcastRequest,
    data: Cow<'a, RawValue>,
}

pub(super) async fn check<'a>(
    state: &AppState,
    principal: &Principal,
    req: &'a BroadcastRequest,
    field: &str,
) -> Result<Checked<'a>, ApiError> {
    let app_id = principal.target_app(req.app_id.as_deref()).map_err(|e| match e {
        ApiError::InvalidRequest(_) => {
            ApiError::field(&format!("{field}app_id"), "is required with an admin key")
        }
        other => other,
    })?;
    let app = state.live_app(&app_id).await?;
    if !is_active(&app) {
        return Err(ApiError::AppDisabled);
    }
    if let Some(key) = &req.idempotency_key
        && !crate::idempotency::is_key(key)
    {
        return Err(ApiError::field(
            &format!("{field}idempotency_key"),
            "must be 1 to 64 characters of A-Z a-z 0-9 _ . : -",
        ));
    }
    let limit = state.config.limits.max_message_bytes;
    let data: Cow<'a, RawValue> = match &req.data {
        None => Cow::Borrowed(RawValue::NULL),
        Some(raw) if json_depth(raw.get()) > MAX_DATA_DEPTH => {
            return Err(ApiError::field(
                &format!("{field}data"),
                format!("is nested deeper than {MAX_DATA_DEPTH} levels"),
            ));
        }
        Some(raw) if raw.get().len() <= limit => Cow::Borrowed(&**raw),
        Some(raw) => {
            // The limit applies to the compact form; only compact when the raw text is over it.
            let compact = compact_json(raw.get());
            if compact.len() > limit {
                state.hub.metrics().dropped(crate::metrics::DropReason::Oversize).increment(1);
                return Err(ApiError::PayloadTooLarge(format!(
                    "{field}data is {} bytes; the limit is {limit}",
                    compact.len()
                )));
            }
            Cow::Owned(RawValue::from_string(compact).map_err(|e| ApiError::Internal(e.to_string()))?)
        }
    };
    Ok(Checked { app_id, req, data })
}

/// Publishes a checked event; one with an `idempotency_key` at most once within the window.
pub(super) async fn publish(state: &AppState, checked: Checked<'_>) -> Result<BroadcastResult, ApiError> {
    let Some(key) = checked.req.idempotency_key.clone() else { return publish_now(state, checked).await };
    let app_id = checked.app_id.clone();
    let claim = state
        .idempotency
        .claim(&app_id, &key)
        .await
        .map_err(|e| ApiError::Unavailable(format!("idempotency keys: {e}")))?;
    match claim {
        Claim::Done(first) => serde_json::from_str(&first).map_err(|e| ApiError::Internal(e.to_string())),
        Claim::Pending => Err(ApiError::Conflict(
            "a broadcast with this idempotency_key is being published; retry in a moment".into(),
        )),
        Claim::New => match publish_now(state, checked).await {
            Ok(result) => {
                let recorded =
                    serde_json::to_string(&result).map_err(|e| ApiError::Internal(e.to_string()))?;
                state.idempotency.settle(&app_id, &key, Some(&recorded)).await;
                Ok(result)
            }
            Err(e) => {
                state.idempotency.settle(&app_id, &key, None).await;
                Err(e)
            }
        },
    }
}

async fn publish_now(state: &AppState, checked: Checked<'_>) -> Result<BroadcastResult, ApiError> {
    let req = checked.req;
    let outcome = state
        .hub
        .broadcast(
            &checked.app_id,
            &req.room,
            &req.event,
            &checked.data,
            req.exclude_connection_id.as_deref(),
            PublishKind::Broadcast,
        )
        .await?;
    let key = RoomKey { app_id: AppId::known(&checked.app_id), room: req.room.clone() };
    Ok(BroadcastResult {
        success: true,
        room: key.namespaced(),
        event: req.event.to_string(),
        subscriber_count: outcome.subscriber_count,
        offset: outcome.offset,
        epoch: outcome.epoch.to_string(),
        timestamp: outcome.timestamp,
    })
}

#[utoipa::path(post, path = "/api/broadcast", tag = "broadcast", request_body = BroadcastRequest,
    responses((status = 200, body = BroadcastResult), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("api_key" = [])))]
async fn broadcast(
    State(state): State<AppState>,
    call: Authed<BroadcastRequest>,
) -> Result<axum::Json<BroadcastResult>, ApiError> {
    call.principal.require(Scope::BroadcastWrite)?;
    let checked = check(&state, &call.principal, &call.body, "").await?;
    Ok(axum::Json(publish(&state, checked).await?))
}

#[utoipa::path(post, path = "/api/broadcast/batch", tag = "broadcast", request_body = BatchRequest,
    responses((status = 200, body = BatchResult), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("api_key" = [])))]
async fn broadcast_batch(
    State(state): State<AppState>,
    call: Authed<BatchRequest>,
) -> Result<axum::Json<BatchResult>, ApiError> {
    call.principal.require(Scope::BroadcastWrite)?;
    let max = state.config.limits.max_batch_events;
    let events = &call.body.events;
    if events.is_empty() || events.len() > max {
        return Err(ApiError::field("events", format!("must hold 1 to {max} events")));
    }
    // Every event is checked before any is published, so a bad batch publishes nothing.
    let mut checked = Vec::with_capacity(events.len());
    for (i, req) in events.iter().enumerate() {
        checked.push(check(&state, &call.principal, req, &format!("events[{i}].")).await?);
    }
    let mut results = Vec::with_capacity(checked.len());
    for c in checked {
        results.push(publish(&state, c).await?);
    }
    Ok(axum::Json(BatchResult { success: true, results }))
}

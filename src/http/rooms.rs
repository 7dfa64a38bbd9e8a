//! Room introspection: occupied rooms, one room, a presence room's members and a room's
//! retained history (scope `rooms:read`, always within the caller's app).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorBody};
use super::extract::{Principal, Query};
use super::{AppState, iso8601};
use crate::auth::api_key::Scope;
use crate::domain::AppId;
use crate::hub::registry::{RoomInfo, RoomKey};
use crate::protocol::RoomName;

/// Routes of this area.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/rooms", get(list_rooms))
        .route("/api/rooms/{room}", get(get_room))
        .route("/api/rooms/{room}/presence", get(presence))
        .route("/api/rooms/{room}/history", get(history))
}

/// Largest page of rooms or members.
const MAX_PAGE: usize = 100;

/// Query of `GET /api/rooms`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RoomListParams {
    /// Only rooms whose names start with this.
    pub prefix: Option<String>,
    /// 1–100, default 100.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// The app, for admin keys.
    pub app_id: Option<String>,
}

/// Query of the single-room routes.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RoomParams {
    /// 1–100, default 100 (presence only).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<usize>,
    /// The `next_cursor` of the previous page (presence only).
    pub cursor: Option<String>,
    /// The app, for admin keys.
    pub app_id: Option<String>,
}

/// Query of `GET /api/rooms/{room}/history`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryParams {
    /// Events after this offset (default 0: every retained event).
    #[param(minimum = 0)]
    pub since: Option<u64>,
    /// 1–1000, default 100.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// The app, for admin keys.
    pub app_id: Option<String>,
}

/// Largest page of history.
const MAX_HISTORY_PAGE: usize = 1000;

/// One retained event.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryEventView {
    pub event: String,
    /// As published.
    #[schema(value_type = serde_json::Value)]
    pub data: Box<serde_json::value::RawValue>,
    pub offset: u64,
    /// Milliseconds since the epoch.
    pub timestamp: i64,
}

/// `{"success", "room", "epoch", "offset", "complete", "events"}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryView {
    pub success: bool,
    pub room: String,
    /// The stream's epoch: offsets compare within one epoch only (`null` when the room has no
    /// stream).
    pub epoch: Option<String>,
    /// The room's last offset.
    pub offset: u64,
    /// False when events after `since` are no longer retained (a gap before the first one).
    pub complete: bool,
    /// Oldest first.
    pub events: Vec<HistoryEventView>,
}

/// One room.
#[derive(Debug, Serialize, ToSchema)]
pub struct RoomView {
    /// The client-facing name.
    pub room: String,
    pub occupied: bool,
    /// Subscribed connections.
    pub subscriber_count: usize,
    /// Distinct users, for `presence-` rooms; null for others.
    pub user_count: Option<usize>,
    /// ISO 8601 UTC; null when unoccupied.
    pub occupied_since: Option<String>,
}

impl From<&RoomInfo> for RoomView {
    fn from(r: &RoomInfo) -> Self {
        RoomView {
            room: r.room.to_string(),
            occupied: true,
            subscriber_count: r.subscriber_count,
            user_count: r.user_count,
            occupied_since: Some(iso8601(r.occupied_since)),
        }
    }
}

/// `{"success", "rooms", "next_cursor"}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RoomList {
    pub success: bool,
    pub rooms: Vec<RoomView>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// `{"success", "room"}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RoomShown {
    pub success: bool,
    pub room: RoomView,
}

/// A presence member.
#[derive(Debug, Serialize, ToSchema)]
pub struct MemberView {
    pub user_id: String,
    /// The `user_info` of the user's token.
    #[schema(value_type = Object)]
    pub user_info: Box<serde_json::value::RawValue>,
}

/// `{"success", "members", "member_count", "next_cursor"}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct MemberList {
    pub success: bool,
    pub members: Vec<MemberView>,
    /// Every member, however many are listed.
    pub member_count: usize,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// The caller's app (an admin names it with `?app_id=`), which must exist.
async fn rooms_app(
    state: &AppState,
    principal: &Principal,
    requested: Option<&str>,
) -> Result<Arc<str>, ApiError> {
    principal.require(Scope::RoomsRead)?;
    let app_id = principal.target_app(requested)?;
    Ok(Arc::from(state.live_app(&app_id).await?.app_id.as_str()))
}

fn page_size(limit: Option<usize>) -> Result<usize, ApiError> {
    let limit = limit.unwrap_or(MAX_PAGE);
    if (1..=MAX_PAGE).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::field("limit", format!("must be between 1 and {MAX_PAGE}")))
    }
}

fn room_name(field: &str, s: &str) -> Result<RoomName, ApiError> {
    RoomName::parse(s).map_err(|e| ApiError::field(field, e))
}

#[utoipa::path(get, path = "/api/rooms", tag = "rooms", params(RoomListParams),
    responses((status = 200, body = RoomList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
async fn list_rooms(
    State(state): State<AppState>,
    principal: Principal,
    Query(params): Query<RoomListParams>,
) -> Result<axum::Json<RoomList>, ApiError> {
    let app_id = rooms_app(&state, &principal, params.app_id.as_deref()).await?;
    let limit = page_size(params.limit)?;
    let prefix = params.prefix.unwrap_or_default();
    if prefix.len() > crate::protocol::MAX_ROOM_LEN {
        return Err(ApiError::field("prefix", "is longer than any room name"));
    }
    if let Some(cursor) = &params.cursor {
        room_name("cursor", cursor)?;
    }
    let (rooms, more) = state.hub.rooms_page(&app_id, &prefix, params.cursor.as_deref(), limit).await?;
    let next_cursor = if more { rooms.last().map(|r| r.room.to_string()) } else { None };
    Ok(axum::Json(RoomList { success: true, rooms: rooms.iter().map(RoomView::from).collect(), next_cursor }))
}

#[utoipa::path(get, path = "/api/rooms/{room}", tag = "rooms",
    params(("room" = String, Path, description = "client-facing room name"), RoomParams),
    responses((status = 200, body = RoomShown), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
async fn get_room(
    State(state): State<AppState>,
    principal: Principal,
    Path(room): Path<String>,
    Query(params): Query<RoomParams>,
) -> Result<axum::Json<RoomShown>, ApiError> {
    let app_id = rooms_app(&state, &principal, params.app_id.as_deref()).await?;
    let room = room_name("room", &room)?;
    // Over the whole cluster in cluster mode; the rest of the view is this node's.
    let total = state.hub.room_subscribers(&app_id, &room).await?;
    let key = RoomKey { app_id: AppId::known(&app_id), room };
    let view = match state.hub.registry().room_info(&key) {
        Some(info) => RoomView { subscriber_count: total, ..RoomView::from(&info) },
        None => RoomView {
            room: key.room.to_string(),
            occupied: total > 0,
            subscriber_count: total,
            user_count: key.room.is_presence().then_some(0),
            occupied_since: None,
        },
    };
    Ok(axum::Json(RoomShown { success: true, room: view }))
}

#[utoipa::path(get, path = "/api/rooms/{room}/presence", tag = "rooms",
    params(("room" = String, Path, description = "a presence- room"), RoomParams),
    responses((status = 200, body = MemberList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
async fn presence(
    State(state): State<AppState>,
    principal: Principal,
    Path(room): Path<String>,
    Query(params): Query<RoomParams>,
) -> Result<axum::Json<MemberList>, ApiError> {
    let app_id = rooms_app(&state, &principal, params.app_id.as_deref()).await?;
    let room = room_name("room", &room)?;
    if !room.is_presence() {
        return Err(ApiError::field("room", "is not a presence- room"));
    }
    let limit = page_size(params.limit)?;
    let key = RoomKey { app_id: AppId::known(&app_id), room };
    // One more than the page, under one lock: whether it comes back says whether more follow.
    let (mut members, member_count) =
        state.hub.presence_page(&key, params.cursor.as_deref(), limit + 1).await?.unwrap_or_default();
    let more = members.len() > limit;
    members.truncate(limit);
    let next_cursor = if more { members.last().map(|m| m.user_id.to_string()) } else { None };
    let members = members
        .into_iter()
        .map(|m| MemberView { user_id: m.user_id.to_string(), user_info: m.user_info.as_ref().to_owned() })
        .collect();
    Ok(axum::Json(MemberList { success: true, members, member_count, next_cursor }))
}

#[utoipa::path(get, path = "/api/rooms/{room}/history", tag = "rooms",
    params(("room" = String, Path, description = "the room"), HistoryParams),
    responses((status = 200, body = HistoryView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("api_key" = [])))]
async fn history(
    State(state): State<AppState>,
    principal: Principal,
    Path(room): Path<String>,
    Query(params): Query<HistoryParams>,
) -> Result<axum::Json<HistoryView>, ApiError> {
    let app_id = rooms_app(&state, &principal, params.app_id.as_deref()).await?;
    let room = room_name("room", &room)?;
    let limit = params.limit.unwrap_or(100);
    if !(1..=MAX_HISTORY_PAGE).contains(&limit) {
        return Err(ApiError::field("limit", format!("must be between 1 and {MAX_HISTORY_PAGE}")));
    }
    let since = params.since.unwrap_or(0);
    let page = state.hub.history(&app_id, &room, since, limit).await?;
    Ok(axum::Json(HistoryView {
        success: true,
        room: room.to_string(),
        epoch: page.epoch.map(|e| e.to_string()),
        offset: page.offset,
        complete: page.complete,
        events: page
            .events
            .into_iter()
            .map(|e| HistoryEventView {
                event: e.event,
                data: e.data,
                offset: e.offset,
                timestamp: e.timestamp,
            })
            .collect(),
    }))
}

//! Pusher's HTTP API (DESIGN §12) under `/apps/{app_id}/…`, so the `pusher` server SDKs publish
//! and query unchanged: Pusher's `app_id` and `key` are the roomcast app id, its `secret` the
//! app secret. Every request is signed as Pusher signs it (`auth_key`, `auth_timestamp`,
//! `auth_version`, `body_md5`, `auth_signature`); the events land in the same rooms, streams and
//! webhooks as `POST /api/broadcast`. Errors keep roomcast's JSON shape (the SDKs read the status).

use std::borrow::Cow;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, Path, Request, State};
use axum::routing::{get, post};
use md5::{Digest, Md5};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::AppState;
use super::broadcast::{BroadcastRequest, check, publish};
use super::error::ApiError;
use super::extract::{Principal, parse_json};
use crate::apps::is_active;
use crate::auth::api_key::{Scope, unhex};
use crate::domain::{AppId, RoomKey};
use crate::limits::RateSlot;
use crate::protocol::{EventName, RoomName};
use crate::store::KeyKind;

/// How far `auth_timestamp` may be from the hub's clock, in seconds (Pusher's rule).
const TIMESTAMP_WINDOW_S: i64 = 600;
/// Channels one event may go to.
const MAX_CHANNELS: usize = 100;
/// Events in one `batch_events` call.
const MAX_BATCH: usize = 10;

/// Routes of this area.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/apps/{app_id}/events", post(events))
        .route("/apps/{app_id}/batch_events", post(batch_events))
        .route("/apps/{app_id}/channels", get(channels))
        .route("/apps/{app_id}/channels/{channel}", get(channel))
        .route("/apps/{app_id}/channels/{channel}/users", get(users))
        .route("/apps/{app_id}/users/{user_id}/terminate_connections", post(terminate))
}

/// A request whose Pusher signature holds: the app it is for, its query parameters (without
/// the `auth_*` ones) and its body.
#[derive(Debug)]
pub struct Signed {
    app_id: String,
    /// The app as the caller of the routes `send` shares with `/api/broadcast`.
    principal: Principal,
    params: Vec<(String, String)>,
    body: Bytes,
}

impl Signed {
    /// A query parameter other than the `auth_*` ones.
    fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// The query's `key=value` pairs, keys lower-cased, sorted by key as Pusher signs them. A pair
/// without `%` or `+` is borrowed as it is: the SDKs' `auth_*` parameters never need decoding,
/// and this is on every publish's path.
fn query_pairs(query: &str) -> Vec<(Cow<'_, str>, Cow<'_, str>)> {
    fn lower(k: Cow<'_, str>) -> Cow<'_, str> {
        match k.bytes().any(|b| b.is_ascii_uppercase()) {
            true => Cow::Owned(k.to_ascii_lowercase()),
            false => k,
        }
    }
    let mut pairs: Vec<(Cow<'_, str>, Cow<'_, str>)> = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = if pair.bytes().any(|b| b == b'%' || b == b'+') {
                let (k, v) = form_urlencoded::parse(pair.as_bytes()).next().unwrap_or_default();
                (Cow::Owned(k.into_owned()), Cow::Owned(v.into_owned()))
            } else {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (Cow::Borrowed(k), Cow::Borrowed(v))
            };
            (lower(k), v)
        })
        .collect();
    // Stable: a repeated key keeps its last value when looked up, as a map would.
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    pairs.dedup_by(|later, earlier| {
        let same = later.0 == earlier.0;
        if same {
            std::mem::swap(later, earlier);
        }
        same
    });
    pairs
}

/// `body_md5`: 32 hex digits naming the body's MD5.
fn md5_matches(body: &[u8], given: Option<&str>) -> bool {
    given.and_then(unhex::<16>).is_some_and(|given| given == <[u8; 16]>::from(Md5::digest(body)))
}

impl FromRequest<AppState> for Signed {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let (parts, body) = req.into_parts();
        // Every route is `/apps/{app_id}/…`; an app id needs no percent-decoding (a-z 0-9 -).
        let path = parts.uri.path();
        let app_id = path.split('/').nth(2).unwrap_or_default().to_owned();
        let limit = state.config.limits.max_message_bytes * MAX_BATCH + 64 * 1024;
        let body = axum::body::to_bytes(body, limit)
            .await
            .map_err(|_| ApiError::PayloadTooLarge(format!("request body is larger than {limit} bytes")))?;
        let mut pairs = query_pairs(parts.uri.query().unwrap_or(""));
        fn get<'a>(pairs: &'a [(Cow<'_, str>, Cow<'_, str>)], name: &str) -> Option<&'a str> {
            pairs.iter().find(|(k, _)| k == name).map(|(_, v)| &**v)
        }
        let unsigned = || ApiError::InvalidKey;
        let signature = get(&pairs, "auth_signature").ok_or_else(unsigned)?.to_owned();
        pairs.retain(|(k, _)| k != "auth_signature");
        if get(&pairs, "auth_key") != Some(app_id.as_str()) {
            return Err(ApiError::InvalidKey);
        }
        if get(&pairs, "auth_version") != Some("1.0") {
            return Err(ApiError::InvalidRequest("auth_version must be 1.0".into()));
        }
        let timestamp: i64 =
            get(&pairs, "auth_timestamp").and_then(|t| t.parse().ok()).ok_or_else(unsigned)?;
        let now = crate::clock::now_ms() / 1000;
        if (now - timestamp).abs() > TIMESTAMP_WINDOW_S {
            return Err(ApiError::InvalidToken(format!(
                "auth_timestamp is more than {TIMESTAMP_WINDOW_S} s from the server's time ({now})"
            )));
        }
        if !body.is_empty() && !md5_matches(&body, get(&pairs, "body_md5")) {
            return Err(ApiError::InvalidToken("body_md5 does not match the body".into()));
        }
        let app = state.live_app(&app_id).await.map_err(|e| match e {
            ApiError::NotFound(_) => ApiError::InvalidKey,
            other => other,
        })?;
        let method = parts.method.as_str();
        let size = pairs.iter().map(|(k, v)| k.len() + v.len() + 2).sum::<usize>();
        let mut signed = String::with_capacity(method.len() + path.len() + 2 + size);
        signed.push_str(method);
        signed.push('\n');
        signed.push_str(path);
        signed.push('\n');
        for (i, (k, v)) in pairs.iter().enumerate() {
            if i > 0 {
                signed.push('&');
            }
            signed.push_str(k);
            signed.push('=');
            signed.push_str(v);
        }
        if !crate::pusher::signed_by(&app.secret, &signed, &signature) {
            return Err(ApiError::InvalidKey);
        }
        if !is_active(&app) {
            return Err(ApiError::AppDisabled);
        }
        // The app's own rate limit, as for its API keys.
        let principal = principal(&app_id);
        state.charge(&principal, parts.extensions.get::<RateSlot>())?;
        let params = pairs
            .into_iter()
            .filter(|(k, _)| !matches!(&**k, "auth_key" | "auth_timestamp" | "auth_version" | "body_md5"))
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        Ok(Self { app_id, principal, params, body })
    }
}

/// The app, as a key holding what Pusher's API may do.
fn principal(app_id: &str) -> Principal {
    Principal {
        kind: KeyKind::App,
        key_id: "pusher".into(),
        app_id: Some(app_id.to_owned()),
        scopes: vec![Scope::BroadcastWrite, Scope::RoomsRead],
        expires_at: None,
    }
}

/// One event as Pusher's SDKs send it.
#[derive(Debug, Deserialize)]
struct PusherEvent {
    name: String,
    /// A string: JSON text (what the SDKs send for objects) or any text.
    data: Value,
    #[serde(default)]
    channels: Option<Vec<String>>,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    socket_id: Option<String>,
    /// `user_count` and/or `subscription_count`, comma separated.
    #[serde(default)]
    info: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Batch {
    batch: Vec<PusherEvent>,
}

/// What was asked in `info`.
#[derive(Debug, Clone, Copy, Default)]
struct Info {
    users: bool,
    subscriptions: bool,
}

impl Info {
    fn parse(info: Option<&str>) -> Result<Self, ApiError> {
        let mut asked = Self::default();
        for item in info.unwrap_or("").split(',').map(str::trim).filter(|i| !i.is_empty()) {
            match item {
                "user_count" => asked.users = true,
                "subscription_count" => asked.subscriptions = true,
                other => return Err(ApiError::field("info", format!("unknown attribute {other:?}"))),
            }
        }
        Ok(asked)
    }

    fn any(self) -> bool {
        self.users || self.subscriptions
    }
}

/// A Pusher channel name as the room it is.
fn room(field: &str, name: &str) -> Result<RoomName, ApiError> {
    RoomName::parse(name).map_err(|e| ApiError::field(field, e))
}

/// Pusher's `data` as roomcast data: JSON text stays that JSON (so native clients get the
/// object), other text becomes a JSON string. Errors name `{field}data`.
fn event_data(field: &str, data: &Value) -> Result<Box<RawValue>, ApiError> {
    let text = match data {
        Value::String(s) => s,
        _ => return Err(ApiError::field(&format!("{field}data"), "must be a string")),
    };
    let raw = match serde_json::from_str::<&RawValue>(text) {
        Ok(raw) => raw.to_owned(),
        Err(_) => RawValue::from_string(Value::String(text.clone()).to_string())
            .map_err(|e| ApiError::Internal(e.to_string()))?,
    };
    Ok(raw)
}

/// The broadcasts one Pusher event stands for (one per channel), each checked.
fn requests(event: &PusherEvent, field: &str) -> Result<(Vec<BroadcastRequest>, Info), ApiError> {
    let names: Vec<&String> = match (&event.channels, &event.channel) {
        (Some(list), None) => list.iter().collect(),
        (None, Some(one)) => vec![one],
        _ => return Err(ApiError::field(&format!("{field}channels"), "give channels or channel")),
    };
    if names.is_empty() || names.len() > MAX_CHANNELS {
        return Err(ApiError::field(
            &format!("{field}channels"),
            format!("must name 1 to {MAX_CHANNELS} channels"),
        ));
    }
    let name = EventName::parse(&event.name).map_err(|e| ApiError::field(&format!("{field}name"), e))?;
    let data = event_data(field, &event.data)?;
    let info = Info::parse(event.info.as_deref())?;
    let requests = names
        .into_iter()
        .map(|channel| {
            Ok(BroadcastRequest {
                app_id: None,
                room: RoomName::parse(channel)
                    .map_err(|e| ApiError::field(&format!("{field}channels"), e))?,
                event: name.clone(),
                data: Some(data.clone()),
                exclude_connection_id: event.socket_id.clone(),
                idempotency_key: None,
            })
        })
        .collect::<Result<_, ApiError>>()?;
    Ok((requests, info))
}

/// Checks every request, then publishes each (so a bad one publishes nothing); returns, per
/// request, the attributes its `info` asked for (an empty object when none).
/// Fields are named as in a batch when `batch`.
async fn send(
    state: &AppState,
    call: &Signed,
    requests: &[(BroadcastRequest, Info)],
    batch: bool,
) -> Result<Vec<Value>, ApiError> {
    let (app_id, principal) = (call.app_id.as_str(), &call.principal);
    let mut checked = Vec::with_capacity(requests.len());
    for (i, (req, _)) in requests.iter().enumerate() {
        let field = if batch { format!("batch[{i}].") } else { String::new() };
        checked.push(check(state, principal, req, &field).await?);
    }
    let mut answers = Vec::with_capacity(requests.len());
    for (c, (req, info)) in checked.into_iter().zip(requests) {
        let result = publish(state, c).await?;
        answers.push(match info.any() {
            true => attributes(state, app_id, &req.room, *info, result.subscriber_count).await?,
            false => Value::Object(serde_json::Map::new()),
        });
    }
    Ok(answers)
}

/// A channel's `user_count` and `subscription_count`, as asked.
async fn attributes(
    state: &AppState,
    app_id: &str,
    room: &RoomName,
    info: Info,
    subscribers: usize,
) -> Result<Value, ApiError> {
    let mut out = serde_json::Map::new();
    if info.subscriptions {
        out.insert("subscription_count".into(), subscribers.into());
    }
    if info.users && room.is_presence() {
        out.insert("user_count".into(), user_count(state, app_id, room).await?.into());
    }
    Ok(Value::Object(out))
}

async fn user_count(state: &AppState, app_id: &str, room: &RoomName) -> Result<usize, ApiError> {
    let key = RoomKey { app_id: AppId::known(app_id), room: room.clone() };
    Ok(state.hub.presence_page(&key, None, 1).await?.map_or(0, |(_, count)| count))
}

async fn events(State(state): State<AppState>, call: Signed) -> Result<axum::Json<Value>, ApiError> {
    let event: PusherEvent = parse_json(&call.body)?;
    let (requests, info) = requests(&event, "")?;
    let requests: Vec<_> = requests.into_iter().map(|r| (r, info)).collect();
    let answers = send(&state, &call, &requests, false).await?;
    if !info.any() {
        return Ok(axum::Json(json!({})));
    }
    let channels: serde_json::Map<String, Value> =
        requests.iter().map(|(r, _)| r.room.to_string()).zip(answers).collect();
    Ok(axum::Json(json!({ "channels": channels })))
}

async fn batch_events(State(state): State<AppState>, call: Signed) -> Result<axum::Json<Value>, ApiError> {
    let batch: Batch = parse_json(&call.body)?;
    if batch.batch.is_empty() || batch.batch.len() > MAX_BATCH {
        return Err(ApiError::field("batch", format!("must hold 1 to {MAX_BATCH} events")));
    }
    let mut all = Vec::new();
    for (i, event) in batch.batch.iter().enumerate() {
        let (requests, info) = requests(event, &format!("batch[{i}]."))?;
        if requests.len() != 1 {
            return Err(ApiError::field(&format!("batch[{i}].channel"), "a batch event goes to one channel"));
        }
        all.extend(requests.into_iter().map(|r| (r, info)));
    }
    let any_info = all.iter().any(|(_, info)| info.any());
    let answers = send(&state, &call, &all, true).await?;
    Ok(axum::Json(if any_info { json!({ "batch": answers }) } else { json!({}) }))
}

async fn channels(State(state): State<AppState>, call: Signed) -> Result<axum::Json<Value>, ApiError> {
    let prefix = call.param("filter_by_prefix").unwrap_or_default().to_owned();
    let info = Info::parse(call.param("info"))?;
    if info.users && !prefix.starts_with("presence-") {
        return Err(ApiError::field("info", "user_count needs filter_by_prefix=presence-"));
    }
    let mut out = serde_json::Map::new();
    let mut after: Option<String> = None;
    loop {
        let (rooms, more) = state.hub.rooms_page(&call.app_id, &prefix, after.as_deref(), 1000).await?;
        for r in &rooms {
            let mut attrs = serde_json::Map::new();
            if info.users {
                attrs.insert("user_count".into(), r.user_count.unwrap_or(0).into());
            }
            if info.subscriptions {
                attrs.insert("subscription_count".into(), r.subscriber_count.into());
            }
            out.insert(r.room.to_string(), Value::Object(attrs));
        }
        after = rooms.last().map(|r| r.room.to_string());
        if !more || after.is_none() {
            break;
        }
    }
    Ok(axum::Json(json!({ "channels": out })))
}

async fn channel(
    State(state): State<AppState>,
    Path((_, name)): Path<(String, String)>,
    call: Signed,
) -> Result<axum::Json<Value>, ApiError> {
    let room = room("channel", &name)?;
    let info = Info::parse(call.param("info"))?;
    if info.users && !room.is_presence() {
        return Err(ApiError::field("info", "user_count is for presence- channels"));
    }
    let subscribers = state.hub.room_subscribers(&call.app_id, &room).await?;
    let mut answer = serde_json::Map::new();
    answer.insert("occupied".into(), (subscribers > 0).into());
    if let Value::Object(attrs) = attributes(&state, &call.app_id, &room, info, subscribers).await? {
        answer.extend(attrs);
    }
    Ok(axum::Json(Value::Object(answer)))
}

async fn users(
    State(state): State<AppState>,
    Path((_, name)): Path<(String, String)>,
    call: Signed,
) -> Result<axum::Json<Value>, ApiError> {
    let room = room("channel", &name)?;
    if !room.is_presence() {
        return Err(ApiError::field("channel", "users are listed for presence- channels only"));
    }
    let key = RoomKey { app_id: AppId::known(&call.app_id), room };
    let mut users = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let Some((members, _)) = state.hub.presence_page(&key, after.as_deref(), 1000).await? else { break };
        let last = members.last().map(|m| m.user_id.to_string());
        users.extend(members.iter().map(|m| json!({ "id": m.user_id.to_string() })));
        if members.len() < 1000 || last.is_none() {
            break;
        }
        after = last;
    }
    Ok(axum::Json(json!({ "users": users })))
}

/// Closes every connection of the user (signed in, or subscribed to a presence channel as
/// them, or holding a token for them) on every node with 4009: Pusher's clients do not
/// reconnect after it.
async fn terminate(
    State(state): State<AppState>,
    Path((_, user_id)): Path<(String, String)>,
    call: Signed,
) -> Result<axum::Json<Value>, ApiError> {
    state.hub.terminate_user(&call.app_id, &user_id).await?;
    Ok(axum::Json(json!({})))
}

#[cfg(test)]
mod tests {
    use super::{event_data, md5_matches, query_pairs};

    #[test]
    fn query_pairs_are_decoded_lowered_and_sorted_like_a_map() {
        let pairs = query_pairs("b=2&A=1&body_md5=x&c=a%20b+c&d=x%3Dy=z&&e&b=3");
        let flat: Vec<(String, String)> =
            pairs.into_iter().map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
        let want = [("a", "1"), ("b", "3"), ("body_md5", "x"), ("c", "a b c"), ("d", "x=y=z"), ("e", "")];
        assert_eq!(flat, want.map(|(k, v)| (k.to_owned(), v.to_owned())));
        // Plain pairs are borrowed, not copied.
        assert!(matches!(query_pairs("auth_key=app")[0].1, std::borrow::Cow::Borrowed("app")));
    }

    #[test]
    fn body_md5_is_compared_as_hex() {
        // MD5("") = d41d8cd98f00b204e9800998ecf8427e
        assert!(md5_matches(b"", Some("d41d8cd98f00b204e9800998ecf8427e")));
        assert!(md5_matches(b"", Some("D41D8CD98F00B204E9800998ECF8427E")));
        assert!(!md5_matches(b"", Some("d41d8cd98f00b204e9800998ecf8427f")));
        assert!(!md5_matches(b"", Some("d41d8cd98f00b204e9800998ecf8427")));
        assert!(!md5_matches(b"", Some("zz1d8cd98f00b204e9800998ecf8427e")));
        assert!(!md5_matches(b"", None));
    }

    #[test]
    fn pusher_data_text_becomes_json_or_a_string() {
        let d = |s: &str| event_data("", &serde_json::Value::String(s.into())).unwrap().get().to_owned();
        assert_eq!(d(r#"{"a":1}"#), r#"{"a":1}"#);
        assert_eq!(d("hello"), r#""hello""#);
        assert_eq!(d("12"), "12");
        assert!(event_data("", &serde_json::json!({"a": 1})).is_err());
    }
}

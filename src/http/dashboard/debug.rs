//! `GET /dashboard/debug?app_id=…&room=…`: the live debug console's feed. Server-sent events,
//! one per thing that happens in the app's rooms on this node (or in one room): broadcasts and
//! client events with their data and offsets, joins and leaves, rooms occupied and vacated,
//! presence members. It reads the hub's event bus as a queued listener, so a slow console
//! loses events (and says how many) instead of slowing the hub.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use dashmap::DashMap;
use futures_util::Stream;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::api_key::Scope;
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::extract::{Principal, Query};
use crate::hub::events::{HubEvent, PublishKind};
use crate::protocol::RoomName;

/// Events a console may fall behind by before it loses some.
const QUEUE: usize = 4096;

/// Apps with a console open on this node: their publications carry their data.
#[derive(Debug, Default)]
pub struct Watchers {
    /// Open consoles per app.
    apps: DashMap<String, usize>,
    /// Open consoles in all: every publication asks [`Watchers::watching`], and with none open
    /// (nearly always) the answer must not cost a map lookup.
    open: AtomicUsize,
}

impl Watchers {
    /// Whether a console watches `app_id`.
    pub fn watching(&self, app_id: &str) -> bool {
        self.open.load(Ordering::Relaxed) > 0 && self.apps.contains_key(app_id)
    }

    fn watch(self: &Arc<Self>, app_id: &str) -> Watch {
        *self.apps.entry(app_id.to_owned()).or_default() += 1;
        self.open.fetch_add(1, Ordering::Relaxed);
        Watch { watchers: self.clone(), app_id: app_id.to_owned() }
    }
}

/// One open console; dropping it stops the data copies once no console watches the app.
struct Watch {
    watchers: Arc<Watchers>,
    app_id: String,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.watchers.open.fetch_sub(1, Ordering::Relaxed);
        self.watchers.apps.remove_if_mut(&self.app_id, |_, n| {
            *n -= 1;
            *n == 0
        });
    }
}

#[derive(Debug, Deserialize)]
pub struct DebugQuery {
    app_id: Option<String>,
    /// One room; every room of the app when absent or empty.
    room: Option<String>,
}

/// What the console shows of one hub event, when it concerns the watched app (and room).
fn render(event: &HubEvent, app_id: &str, room: Option<&RoomName>) -> Option<Value> {
    let ours = |key: &crate::domain::RoomKey| *key.app_id == *app_id && room.is_none_or(|r| *r == key.room);
    let at = crate::clock::now_ms();
    let (kind, key, mut fields) = match event {
        HubEvent::Published { room: key, event, kind, data, timestamp, sender, offset } if ours(key) => {
            let kind = match kind {
                PublishKind::Broadcast => "broadcast",
                PublishKind::Client => "client_event",
                PublishKind::System => "system",
            };
            let data = data
                .as_ref()
                .and_then(|d| serde_json::from_str::<Value>(d.get()).ok())
                .unwrap_or(Value::Null);
            let fields = json!({
                "event": event.as_str(),
                "data": data,
                "offset": offset,
                "at": timestamp,
                "connection_id": sender.as_ref().map(|s| s.connection_id.to_string()),
                "user_id": sender.as_ref().and_then(|s| s.user_id.as_deref()),
            });
            (kind, key, fields)
        }
        HubEvent::Joined { room: key, connection_id, user_id } if ours(key) => (
            "join",
            key,
            json!({ "connection_id": connection_id.to_string(), "user_id": user_id.as_deref() }),
        ),
        HubEvent::Left { room: key, connection_id, user_id } if ours(key) => (
            "leave",
            key,
            json!({ "connection_id": connection_id.to_string(), "user_id": user_id.as_deref() }),
        ),
        HubEvent::MemberJoined { room: key, user_id } if ours(key) => {
            ("member_added", key, json!({ "user_id": user_id }))
        }
        HubEvent::MemberLeft { room: key, user_id } if ours(key) => {
            ("member_removed", key, json!({ "user_id": user_id }))
        }
        HubEvent::RoomOccupied { room: key } if ours(key) => ("occupied", key, json!({})),
        HubEvent::RoomVacated { room: key } if ours(key) => ("vacated", key, json!({})),
        _ => return None,
    };
    let object = fields.as_object_mut()?;
    object.insert("type".into(), kind.into());
    object.insert("room".into(), key.room.to_string().into());
    object.entry("at").or_insert(at.into());
    Some(fields)
}

/// The feed: `hello` first (so the page knows it is connected), then one `message` per event;
/// `lost` when the console fell behind.
pub async fn stream(
    State(state): State<AppState>,
    principal: Principal,
    Query(query): Query<DebugQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    principal.require(Scope::RoomsRead)?;
    let app_id = principal.target_app(query.app_id.as_deref())?;
    state.live_app(&app_id).await?;
    let room = match query.room.as_deref().map(str::trim).filter(|r| !r.is_empty()) {
        Some(name) => Some(RoomName::parse(name).map_err(|e| ApiError::field("room", e))?),
        None => None,
    };
    let watch = state.watchers.watch(&app_id);
    let (events, refused) = state.hub.events().subscribe_counted(QUEUE);
    let shutdown = state.node.shutdown.clone();
    let hello = json!({ "type": "hello", "app_id": app_id, "room": room.as_ref().map(|r| r.to_string()), "node": state.node.id });
    let start = (Some(hello), events, watch, 0);
    let feed = futures_util::stream::unfold(start, move |(hello, mut events, watch, lost_before)| {
        let (shutdown, room, refused) = (shutdown.clone(), room.clone(), refused.clone());
        async move {
            if let Some(hello) = hello {
                let event = Event::default().event("hello").data(hello.to_string());
                return Some((Ok(event), (None, events, watch, lost_before)));
            }
            loop {
                let event = tokio::select! {
                    event = events.recv() => event?,
                    _ = shutdown.cancelled() => return None,
                };
                let lost = refused.load(Ordering::Relaxed);
                if lost != lost_before {
                    let note = json!({ "type": "lost", "events": lost - lost_before });
                    let event = Event::default().event("lost").data(note.to_string());
                    return Some((Ok(event), (None, events, watch, lost)));
                }
                if let Some(shown) = render(&event, &watch.app_id, room.as_ref()) {
                    let event = Event::default().data(shown.to_string());
                    return Some((Ok(event), (None, events, watch, lost_before)));
                }
            }
        }
    });
    Ok(Sse::new(feed).keep_alive(KeepAlive::default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_app_is_watched_while_a_console_on_it_is_open() {
        let watchers = Arc::new(Watchers::default());
        assert!(!watchers.watching("shop"));
        let first = watchers.watch("shop");
        let second = watchers.watch("shop");
        assert!(watchers.watching("shop") && !watchers.watching("blog"));
        drop(first);
        assert!(watchers.watching("shop"), "one console is still open");
        drop(second);
        assert!(!watchers.watching("shop"));
        assert_eq!(watchers.open.load(Ordering::Relaxed), 0);
    }
}

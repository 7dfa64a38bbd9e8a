//! One client: a single task that reads frames, drains the outbound queue in batches, pings,
//! and owns the connection's rooms. Nothing here is shared except the [`ConnHandle`].

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};

use crate::apps::is_active;
use crate::auth::token::Identity;
use crate::http::AppState;
use crate::hub::events::PublishKind;
use crate::hub::{ConnHandle, Frame};
use crate::protocol::{ClientFrame, CloseCode, ErrorCode, FrameError, RoomName, ServerFrame};

/// Most queued frames written before one flush.
const MAX_BATCH: usize = 64;
/// How long a close frame may take to go out before the socket is simply dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// A slow consumer's close frame waits behind its backlog; give it longer to get there so the
/// client learns why (4008) instead of seeing a dropped socket.
const SLOW_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// How the loop ended.
enum End {
    /// Send this close code, then drop the socket.
    Close(CloseCode),
    /// A close code requested through the handle (slow consumer, app disabled).
    Requested(u16),
    /// The peer closed or the socket failed; nothing more to send.
    Gone,
}

struct Session {
    state: AppState,
    identity: Identity,
    conn: Arc<ConnHandle>,
    rooms: HashSet<RoomName>,
}

/// Serves one upgraded socket until it closes.
pub async fn run(state: AppState, mut socket: WebSocket, identity: Identity) {
    // Held for the whole session, so shutdown waits for this connection to say goodbye.
    let _tracked = state.tracker.token();
    let cfg = state.config.websocket.clone();
    let (conn, mut queue) =
        state.hub.connect(&identity.app_id, identity.user_id.as_deref(), cfg.outbound_queue_messages);
    tracing::debug!(connection_id = %conn.id, app_id = %identity.app_id, "connection opened");
    let shutdown = state.shutdown.clone();
    let mut session = Session { state, identity, conn: conn.clone(), rooms: HashSet::new() };

    let hello = ServerFrame::connected(&conn.id, &conn.app_id, conn.user_id.as_deref(), cfg.heartbeat_s);
    let mut end = match socket.send(Message::Text(hello.into())).await {
        Ok(()) => None,
        Err(_) => Some(End::Gone),
    };

    let idle_timeout = Duration::from_secs(cfg.idle_timeout_s);
    let period = Duration::from_secs(cfg.heartbeat_s);
    let mut heartbeat = tokio::time::interval_at(Instant::now() + period, period);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_seen = Instant::now();

    while end.is_none() {
        end = tokio::select! {
            biased;
            _ = shutdown.cancelled() => Some(End::Close(CloseCode::ServiceRestart)),
            code = conn.close_requested() => Some(End::Requested(code)),
            frame = queue.recv() => match frame {
                Some(frame) => {
                    tokio::select! {
                        biased;
                        _ = shutdown.cancelled() => Some(End::Close(CloseCode::ServiceRestart)),
                        code = conn.close_requested() => Some(End::Requested(code)),
                        written = write_batch(&mut socket, frame, &mut queue) => written.err(),
                    }
                }
                None => Some(End::Gone),
            },
            incoming = socket.next() => match incoming {
                None => Some(End::Gone),
                Some(Err(e)) => Some(read_error(e)),
                Some(Ok(message)) => {
                    last_seen = Instant::now();
                    session.on_message(&mut socket, message).await
                }
            },
            _ = heartbeat.tick() => {
                if last_seen.elapsed() >= idle_timeout {
                    Some(End::Close(CloseCode::IdleTimeout))
                } else {
                    match socket.send(Message::Ping(Default::default())).await {
                        Ok(()) => None,
                        Err(_) => Some(End::Gone),
                    }
                }
            }
        };
    }

    // Leave rooms first so no more frames are queued for a socket that is going away.
    let rooms: Vec<RoomName> = session.rooms.drain().collect();
    for room in &rooms {
        session.state.hub.leave(&conn, room).await;
    }
    session.state.hub.disconnect(&conn);
    let close = match end {
        Some(End::Close(code)) => Some((code.code(), code.reason())),
        Some(End::Requested(code)) => Some((code, reason_of(code))),
        Some(End::Gone) | None => None,
    };
    if let Some((code, reason)) = close {
        let frame = CloseFrame { code, reason: reason.into() };
        let wait = if code == CloseCode::SlowConsumer.code() { SLOW_CLOSE_TIMEOUT } else { CLOSE_TIMEOUT };
        let _ = tokio::time::timeout(wait, socket.send(Message::Close(Some(frame)))).await;
    }
    tracing::debug!(connection_id = %conn.id, close = ?close.map(|c| c.0), "connection closed");
}

fn reason_of(code: u16) -> &'static str {
    [CloseCode::SlowConsumer, CloseCode::AppDisabled, CloseCode::ServiceRestart, CloseCode::IdleTimeout]
        .into_iter()
        .find(|c| c.code() == code)
        .map_or("closed", CloseCode::reason)
}

fn read_error(e: axum::Error) -> End {
    let too_big = e
        .into_inner()
        .downcast_ref::<tungstenite::Error>()
        .is_some_and(|e| matches!(e, tungstenite::Error::Capacity(_)));
    if too_big { End::Close(CloseCode::MessageTooBig) } else { End::Gone }
}

/// Writes `first` and whatever else is already queued (up to [`MAX_BATCH`]), then flushes once.
async fn write_batch(
    socket: &mut WebSocket,
    first: Frame,
    queue: &mut mpsc::Receiver<Frame>,
) -> Result<(), End> {
    socket.feed(Message::Text(first)).await.map_err(|_| End::Gone)?;
    for _ in 1..MAX_BATCH {
        match queue.try_recv() {
            Ok(frame) => socket.feed(Message::Text(frame)).await.map_err(|_| End::Gone)?,
            Err(_) => break,
        }
    }
    socket.flush().await.map_err(|_| End::Gone)
}

impl Session {
    async fn on_message(&mut self, socket: &mut WebSocket, message: Message) -> Option<End> {
        let reply = match message {
            Message::Text(text) => match ClientFrame::parse(text.as_str()) {
                Ok(frame) => self.on_frame(frame).await,
                Err(e) => Some(error_frame(&e)),
            },
            Message::Binary(_) => Some(ServerFrame::error(
                ErrorCode::InvalidMessage,
                "binary frames are not accepted; send JSON text",
                None,
            )),
            Message::Close(_) => return Some(End::Gone),
            Message::Ping(_) | Message::Pong(_) => None,
        };
        let reply = reply?;
        match socket.send(Message::Text(reply.into())).await {
            Ok(()) => None,
            Err(_) => Some(End::Gone),
        }
    }

    /// Handles one valid frame; returns the reply to send, if any.
    async fn on_frame(&mut self, frame: ClientFrame) -> Option<String> {
        match frame {
            ClientFrame::Ping { id } => Some(ServerFrame::pong(id)),
            ClientFrame::Subscribe { room, id } => Some(match self.subscribe(&room).await {
                Ok(()) => ServerFrame::subscribed(&room, id),
                Err((code, message)) => ServerFrame::error(code, &message, id),
            }),
            ClientFrame::Unsubscribe { room, id } => Some(if self.rooms.remove(&room) {
                self.state.hub.leave(&self.conn, &room).await;
                ServerFrame::unsubscribed(&room, id)
            } else {
                ServerFrame::error(ErrorCode::NotSubscribed, &format!("not subscribed to {room}"), id)
            }),
            ClientFrame::Publish { room, event, data, id } => {
                match self.publish(&room, &event, &data).await {
                    Ok(()) => None,
                    Err((code, message)) => Some(ServerFrame::error(code, &message, id)),
                }
            }
        }
    }

    async fn subscribe(&mut self, room: &RoomName) -> Result<(), (ErrorCode, String)> {
        if self.rooms.contains(room) {
            return Ok(());
        }
        if !self.identity.grants.allows(room) {
            return Err((ErrorCode::RoomForbidden, format!("the token does not grant room {room}")));
        }
        if room.is_presence() && self.identity.user_id.is_none() {
            return Err((ErrorCode::UserIdRequired, "presence rooms need a user_id in the token".into()));
        }
        let max = self.state.config.limits.max_rooms_per_connection;
        if self.rooms.len() >= max {
            return Err((ErrorCode::TooManyRooms, format!("at most {max} rooms per connection")));
        }
        self.state
            .hub
            .join(&self.conn, room)
            .await
            .map_err(|e| (ErrorCode::Unavailable, format!("cannot subscribe now: {e}")))?;
        self.rooms.insert(room.clone());
        Ok(())
    }

    async fn publish(
        &mut self,
        room: &RoomName,
        event: &crate::protocol::EventName,
        data: &RawValue,
    ) -> Result<(), (ErrorCode, String)> {
        let app_allows =
            self.state.apps.get(&self.identity.app_id).is_some_and(|a| is_active(&a) && a.client_events);
        if !app_allows || !self.identity.can_publish {
            return Err((
                ErrorCode::ClientEventsDisabled,
                "client events are not enabled for this app or token".into(),
            ));
        }
        if !self.rooms.contains(room) {
            return Err((ErrorCode::NotSubscribed, format!("subscribe to {room} before publishing to it")));
        }
        self.state
            .hub
            .broadcast(&self.identity.app_id, room, event, data, Some(&self.conn.id), PublishKind::Client)
            .await
            .map(drop)
            .map_err(|e| (ErrorCode::Unavailable, format!("cannot publish now: {e}")))
    }
}

fn error_frame(e: &FrameError) -> String {
    ServerFrame::error(e.code, &e.message, e.id)
}

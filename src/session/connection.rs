//! One client: a single task that reads frames, drains the connection's outbox in batches,
//! sends the pings the heartbeat sweeper asks for, and owns the connection's rooms. Nothing here
//! is shared except the [`ConnHandle`]. The waiting state is kept small, since an idle hub is
//! mostly this task times the number of clients: rarely used paths (handling a client frame,
//! closing) run in boxed futures.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use serde_json::value::RawValue;

use crate::apps::is_active;
use crate::auth::token::Identity;
use crate::http::AppState;
use crate::hub::events::PublishKind;
use crate::hub::registry::JoinOutcome;
use crate::hub::{ConnHandle, Wake};
use crate::metrics::{DropReason, HubMetrics};
use crate::protocol::{ClientFrame, CloseCode, ErrorCode, RoomName, ServerFrame, Since, StreamAck};

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
    /// A close code requested through the handle (slow consumer, app disabled, idle, restart).
    Requested(u16),
    /// The client sent a close frame: the echo the WebSocket layer queued is flushed.
    ClientClosed,
    /// The socket failed; nothing more can be sent.
    Gone,
}

/// A per-connection limiter of client frames (no key, no shared state).
type FrameLimiter = governor::DefaultDirectRateLimiter;

struct Session {
    state: AppState,
    identity: Identity,
    conn: Arc<ConnHandle>,
    /// At most `limits.max_rooms_per_connection` (100): a vector, searched in order, is smaller
    /// than a set for the one or few rooms most connections hold.
    rooms: Vec<RoomName>,
    limiter: FrameLimiter,
    /// Frames refused in a row by the limiter.
    refused: u32,
    /// The token's `user_info` as JSON text, made at the first presence join.
    user_info: Option<Arc<RawValue>>,
}

/// Serves one upgraded socket until it closes; `proxied_ip` is the client's address when it
/// came through a trusted proxy (the hub counts such connections per address).
pub async fn run(state: AppState, mut socket: WebSocket, identity: Identity, proxied_ip: Option<IpAddr>) {
    // Held for the whole session, so shutdown waits for this connection to say goodbye.
    let _tracked = state.node.tracker.token();
    let conn = state.hub.connect_from(&identity.app_id, identity.user_id.as_deref(), proxied_ip);
    tracing::info!(connection_id = %conn.id, app_id = %identity.app_id, user_id = identity.user_id.as_deref().unwrap_or("-"), "connection opened");
    let limiter = frame_limiter(&state.config.limits);
    let mut session =
        Session { state, identity, conn, rooms: Vec::new(), limiter, refused: 0, user_info: None };
    let end = serve(&mut session, &mut socket).await;
    Box::pin(finish(session, socket, end)).await;
}

async fn serve(session: &mut Session, socket: &mut WebSocket) -> End {
    let conn = session.conn.clone();
    let hello = ServerFrame::connected(
        &conn.id,
        &conn.app_id,
        conn.user_id.as_deref(),
        session.state.config.websocket.heartbeat_s,
    );
    if socket.send(Message::Text(hello.into())).await.is_err() {
        return End::Gone;
    }
    loop {
        tokio::select! {
            biased;
            wake = conn.wake() => match wake {
                Wake::Close(code) => return End::Requested(code),
                Wake::Work => {
                    // A slow client can block the flush; a close request must still get through.
                    tokio::select! {
                        biased;
                        code = conn.closing() => return End::Requested(code),
                        written = write_outbox(socket, &conn) => if written.is_err() { return End::Gone },
                    }
                }
            },
            incoming = socket.next() => match incoming {
                None => return End::Gone,
                Some(Err(e)) => return read_error(e, session.state.hub.metrics()),
                Some(Ok(message)) => {
                    conn.touch(session.state.hub.clock_ms());
                    if let Some(end) = Box::pin(session.on_message(socket, message)).await {
                        return end;
                    }
                }
            },
        }
    }
}

/// Leaves every room, forgets the connection, and says goodbye with the close code if any.
async fn finish(mut session: Session, mut socket: WebSocket, end: End) {
    let conn = session.conn.clone();
    // Leave rooms first so no more frames are queued for a socket that is going away.
    let rooms = std::mem::take(&mut session.rooms);
    for room in &rooms {
        session.state.hub.leave(&conn, room).await;
    }
    session.state.hub.disconnect(&conn);
    let close = match end {
        End::Close(code) => Some((code.code(), code.reason())),
        End::Requested(code) => Some((code, reason_of(code))),
        End::ClientClosed => {
            // Completes the closing handshake with the client's own code.
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, socket.flush()).await;
            None
        }
        End::Gone => None,
    };
    if let Some((code, reason)) = close {
        let frame = CloseFrame { code, reason: reason.into() };
        let wait = if code == CloseCode::SlowConsumer.code() { SLOW_CLOSE_TIMEOUT } else { CLOSE_TIMEOUT };
        let closing = async {
            socket.send(Message::Close(Some(frame))).await?;
            // The closing handshake: what the client still sends is read (and dropped) until
            // its close frame, so the socket is not torn down with unread data, which would
            // reset it before the client reads the close frame.
            while let Some(message) = socket.next().await {
                if matches!(message?, Message::Close(_)) {
                    break;
                }
            }
            Ok::<_, axum::Error>(())
        };
        let _ = tokio::time::timeout(wait, closing).await;
    }
    tracing::info!(connection_id = %conn.id, app_id = %conn.app_id, close_code = close.map_or(0, |c| c.0), rooms = rooms.len(), "connection closed");
}

fn frame_limiter(limits: &crate::config::LimitsConfig) -> FrameLimiter {
    use std::num::NonZeroU32;
    // validate() guarantees both are positive.
    let rate = NonZeroU32::new(limits.client_messages_per_second).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(limits.client_messages_burst).unwrap_or(NonZeroU32::MIN);
    governor::RateLimiter::direct(governor::Quota::per_second(rate).allow_burst(burst))
}

fn reason_of(code: u16) -> &'static str {
    [
        CloseCode::SlowConsumer,
        CloseCode::AppDisabled,
        CloseCode::ServiceRestart,
        CloseCode::IdleTimeout,
        CloseCode::RateLimited,
    ]
    .into_iter()
    .find(|c| c.code() == code)
    .map_or("closed", CloseCode::reason)
}

/// A frame the socket could not read: answered with the close code that says why, when the
/// socket can still carry one.
fn read_error(e: axum::Error, metrics: &HubMetrics) -> End {
    match e.into_inner().downcast_ref::<tungstenite::Error>() {
        Some(tungstenite::Error::Capacity(_)) => {
            metrics.dropped(DropReason::Oversize).increment(1);
            End::Close(CloseCode::MessageTooBig)
        }
        Some(tungstenite::Error::Utf8(_)) => End::Close(CloseCode::InvalidPayload),
        Some(tungstenite::Error::Protocol(_)) => End::Close(CloseCode::ProtocolError),
        _ => End::Gone,
    }
}

/// Writes a requested ping and up to [`MAX_BATCH`] waiting frames, then flushes once. Frames
/// left over wake the task again at once.
async fn write_outbox(socket: &mut WebSocket, conn: &ConnHandle) -> Result<(), axum::Error> {
    let mut wrote = false;
    if conn.take_ping() {
        socket.feed(Message::Ping(Default::default())).await?;
        wrote = true;
    }
    for _ in 0..MAX_BATCH {
        let Some(frame) = conn.next_frame() else { break };
        socket.feed(Message::Text(frame)).await?;
        wrote = true;
    }
    if wrote { socket.flush().await } else { Ok(()) }
}

impl Session {
    async fn on_message(&mut self, socket: &mut WebSocket, message: Message) -> Option<End> {
        if matches!(message, Message::Text(_) | Message::Binary(_)) && self.limiter.check().is_err() {
            self.state.hub.metrics().dropped(DropReason::RateLimit).increment(1);
            self.refused += 1;
            if self.refused >= self.state.config.limits.client_abuse_close_after {
                return Some(End::Close(CloseCode::RateLimited));
            }
            let id = match &message {
                Message::Text(text) => ClientFrame::parse(text.as_str()).ok().and_then(|f| f.id()),
                _ => None,
            };
            let reply = self.refuse(ErrorCode::RateLimited, "over the client frame rate", None, id);
            return socket.send(Message::Text(reply.into())).await.err().map(|_| End::Gone);
        }
        self.refused = 0;
        let reply = match message {
            Message::Text(text) => match ClientFrame::parse(text.as_str()) {
                Ok(frame) => self.on_frame(frame).await,
                Err(e) => Some(self.refuse(e.code, &e.detail, None, e.id)),
            },
            Message::Binary(_) => Some(self.refuse(
                ErrorCode::InvalidMessage,
                "a binary frame; only JSON text is read",
                None,
                None,
            )),
            Message::Close(_) => return Some(End::ClientClosed),
            Message::Ping(_) | Message::Pong(_) => None,
        };
        let reply = reply?;
        match socket.send(Message::Text(reply.into())).await {
            Ok(()) => None,
            Err(_) => Some(End::Gone),
        }
    }

    /// Forgets `room`; whether the connection was in it.
    fn leave_room(&mut self, room: &RoomName) -> bool {
        let Some(at) = self.rooms.iter().position(|r| r == room) else { return false };
        self.rooms.swap_remove(at);
        true
    }

    /// The error frame for a refused client frame: the code's fixed message for the client, the
    /// detail for the log (a broker failure at warn level, the client's own mistakes at debug).
    fn refuse(&self, code: ErrorCode, detail: &str, room: Option<&RoomName>, id: Option<u64>) -> String {
        let connection_id = &*self.conn.id;
        let named = room.map_or("-", RoomName::as_str);
        if code == ErrorCode::Unavailable {
            tracing::warn!(connection_id, room = named, code = code.as_str(), detail, "client frame refused");
        } else {
            tracing::debug!(
                connection_id,
                room = named,
                code = code.as_str(),
                detail,
                "client frame refused"
            );
        }
        ServerFrame::error(code, room, id)
    }

    /// Handles one valid frame; returns the reply to send, if any.
    async fn on_frame(&mut self, frame: ClientFrame) -> Option<String> {
        match frame {
            ClientFrame::Ping { id } => Some(ServerFrame::pong(id)),
            ClientFrame::Subscribe { room, id, since } => {
                Some(match self.subscribe(&room, since.as_ref()).await {
                    Ok(joined) => {
                        let stream = &joined.stream;
                        let recovery = stream.recovery.as_ref();
                        let ack = StreamAck {
                            offset: stream.offset,
                            epoch: &stream.epoch,
                            recovered: recovery.map(Result::is_ok),
                            reason: recovery.and_then(|r| r.as_ref().err()).map(|r| r.as_str()),
                        };
                        let presence =
                            joined.presence.as_ref().map(|p| (p.members.as_slice(), p.member_count));
                        ServerFrame::subscribed(&room, id, ack, presence)
                    }
                    Err((code, detail)) => self.refuse(code, &detail, Some(&room), id),
                })
            }
            ClientFrame::Unsubscribe { room, id } => Some(if self.leave_room(&room) {
                self.state.hub.leave(&self.conn, &room).await;
                ServerFrame::unsubscribed(&room, id)
            } else {
                self.refuse(ErrorCode::NotSubscribed, "unsubscribe", Some(&room), id)
            }),
            ClientFrame::Publish { room, event, data, id } => {
                match self.publish(&room, &event, &data).await {
                    // Answered only when asked (an `id`): the offset the event took.
                    Ok(offset) => id.map(|id| ServerFrame::published(&room, id, offset)),
                    Err((code, detail)) => Some(self.refuse(code, &detail, Some(&room), id)),
                }
            }
        }
    }

    /// Joins `room` (recovering what was missed since `since`); returns where its stream stands
    /// and, for a presence room, its members.
    async fn subscribe(
        &mut self,
        room: &RoomName,
        since: Option<&Since>,
    ) -> Result<JoinOutcome, (ErrorCode, String)> {
        if !self.identity.grants.allows(room) {
            return Err((ErrorCode::RoomForbidden, format!("the token does not grant room {room}")));
        }
        if room.is_presence() && self.identity.user_id.is_none() {
            return Err((ErrorCode::UserIdRequired, "presence rooms need a user_id in the token".into()));
        }
        let max = self.state.config.limits.max_rooms_per_connection;
        if !self.rooms.contains(room) && self.rooms.len() >= max {
            return Err((ErrorCode::TooManyRooms, format!("at most {max} rooms per connection")));
        }
        if room.is_presence() && self.user_info.is_none() {
            let text = self.identity.user_info.as_ref().map_or_else(|| "null".to_owned(), |v| v.to_string());
            self.user_info = RawValue::from_string(text).ok().map(Arc::from);
        }
        let outcome = self
            .state
            .hub
            .join(&self.conn, room, self.user_info.as_ref(), since)
            .await
            .map_err(|e| (ErrorCode::Unavailable, format!("cannot subscribe now: {e}")))?;
        if !self.rooms.contains(room) {
            self.rooms.push(room.clone());
        }
        Ok(outcome)
    }

    async fn publish(
        &mut self,
        room: &RoomName,
        event: &crate::protocol::EventName,
        data: &RawValue,
    ) -> Result<u64, (ErrorCode, String)> {
        let app_allows = self
            .state
            .apps
            .cache()
            .get(&self.identity.app_id)
            .is_some_and(|a| is_active(&a) && a.client_events);
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
            .map(|published| published.offset)
            .map_err(|e| (ErrorCode::Unavailable, format!("cannot publish now: {e}")))
    }
}

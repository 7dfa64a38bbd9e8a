//! One client: a single task that reads frames, drains the connection's outbox in batches,
//! sends the pings the heartbeat sweeper asks for, and owns the connection's rooms. Nothing here
//! is shared except the [`ConnHandle`]. The waiting state is kept small, since an idle hub is
//! mostly this task times the number of clients: rarely used paths (handling a client frame,
//! closing) run in boxed futures. The loop is the same for every protocol; a [`Speaker`] says
//! what differs (roomcast's own here, Pusher's in [`super::pusher`]).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::future::BoxFuture;
use futures_util::{SinkExt, StreamExt};
use serde_json::value::RawValue;

use crate::apps::is_active;
use crate::auth::token::Identity;
use crate::http::AppState;
use crate::hub::events::PublishKind;
use crate::hub::registry::JoinOutcome;
use crate::hub::{ConnHandle, Protocol, Wake};
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
pub(super) enum End {
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

/// What a protocol's reply to one text frame is: a frame to send, nothing, or the end.
pub(super) type Reply<'a> = BoxFuture<'a, Result<Option<String>, End>>;

/// What differs between the protocols a socket may speak: the first frame, the answer to a
/// frame, the refusals the loop makes, and the close codes.
pub(super) trait Speaker: Send + Sync + 'static {
    /// The first frame the client gets.
    fn hello(&self, core: &Core) -> String;
    /// Handles one text frame.
    fn on_text<'a>(&'a mut self, core: &'a mut Core, text: &'a str) -> Reply<'a>;
    /// The answer to a frame refused before it was read: over the client frame rate (`text`
    /// is the frame), or a binary frame (`None`).
    fn refused(&self, core: &Core, text: Option<&str>) -> String;
    /// The close code and reason sent for the hub's close `code`.
    fn close(&self, code: u16) -> (u16, &'static str);
    /// A last frame sent before the close frame (code and reason as [`Speaker::close`] made them).
    fn farewell(&self, _code: u16, _reason: &str) -> Option<String> {
        None
    }
}

/// What every session holds, whatever its protocol.
pub(super) struct Core {
    pub(super) state: AppState,
    pub(super) conn: Arc<ConnHandle>,
    /// At most `limits.max_rooms_per_connection` (100): a vector, searched in order, is smaller
    /// than a set for the one or few rooms most connections hold.
    pub(super) rooms: Vec<RoomName>,
    limiter: FrameLimiter,
    /// Frames refused in a row by the limiter.
    refused: u32,
}

impl Core {
    /// Forgets `room`; whether the connection was in it.
    pub(super) fn leave_room(&mut self, room: &RoomName) -> bool {
        let Some(at) = self.rooms.iter().position(|r| r == room) else { return false };
        self.rooms.swap_remove(at);
        true
    }

    /// Why the connection cannot join one more room, if it cannot.
    pub(super) fn room_limit(&self, room: &RoomName) -> Option<String> {
        let max = self.state.config.limits.max_rooms_per_connection;
        (!self.rooms.contains(room) && self.rooms.len() >= max)
            .then(|| format!("at most {max} rooms per connection"))
    }

    /// Notes that the connection joined `room`.
    pub(super) fn joined(&mut self, room: &RoomName) {
        if !self.rooms.contains(room) {
            self.rooms.push(room.clone());
        }
    }

    /// Whether the connection's app is active and allows client events.
    pub(super) fn client_events_allowed(&self) -> bool {
        self.state.apps.cache().get(&self.conn.app_id).is_some_and(|a| is_active(&a) && a.client_events)
    }
}

/// The native protocol (`/ws`).
struct Native {
    identity: Identity,
    /// The token's `user_info` as JSON text, made at the first presence join.
    user_info: Option<Arc<RawValue>>,
}

/// Serves one upgraded socket until it closes; `proxied_ip` is the client's address when it
/// came through a trusted proxy (the hub counts such connections per address). Registers the
/// connection when called; the future serves it.
///
/// Not an `async fn`: one would keep its own copy of the socket (its arguments live as long as
/// it does) beside the one the session's future holds, hundreds of bytes per idle connection.
pub fn run(
    state: AppState,
    socket: WebSocket,
    identity: Identity,
    proxied_ip: Option<IpAddr>,
) -> impl Future<Output = ()> + Send {
    let conn = state.hub.connect_from(&identity.app_id, identity.user_id.as_deref(), proxied_ip);
    tracing::info!(connection_id = %conn.id, app_id = %identity.app_id, user_id = identity.user_id.as_deref().unwrap_or("-"), "connection opened");
    serve_socket(state, socket, conn, Native { identity, user_info: None })
}

/// [`run`] for a connection speaking `protocol`, served by `speaker`.
pub(super) fn run_as<S: Speaker>(
    state: AppState,
    socket: WebSocket,
    protocol: Protocol,
    app_id: &str,
    proxied_ip: Option<IpAddr>,
    speaker: S,
) -> impl Future<Output = ()> + Send + use<S> {
    let conn = state.hub.connect_as(protocol, app_id, None, proxied_ip);
    tracing::info!(connection_id = %conn.id, app_id, ?protocol, "connection opened");
    serve_socket(state, socket, conn, speaker)
}

/// The session's future. What it holds is moved in once and used in place: the future is the
/// waiting state of every idle connection.
fn serve_socket<S: Speaker>(
    state: AppState,
    mut socket: WebSocket,
    conn: Arc<ConnHandle>,
    mut speaker: S,
) -> impl Future<Output = ()> + Send + use<S> {
    // Held for the whole session, so shutdown waits for this connection to say goodbye.
    let tracked = state.node.tracker.token();
    let limiter = frame_limiter(&state.config.limits);
    let mut core = Core { state, conn, rooms: Vec::new(), limiter, refused: 0 };
    async move {
        let _tracked = tracked;
        let end = serve(&mut core, &mut speaker, &mut socket).await;
        Box::pin(finish(core, &speaker, socket, end)).await;
    }
}

async fn serve<S: Speaker>(core: &mut Core, speaker: &mut S, socket: &mut WebSocket) -> End {
    let conn = core.conn.clone();
    if socket.send(Message::Text(speaker.hello(core).into())).await.is_err() {
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
                Some(Err(e)) => return read_error(e, core.state.hub.metrics()),
                Some(Ok(message)) => {
                    conn.touch(core.state.hub.clock_ms());
                    if let Some(end) = Box::pin(on_message(core, speaker, socket, message)).await {
                        return end;
                    }
                }
            },
        }
    }
}

/// Handles one frame from the client: the rate limit first, then the protocol.
async fn on_message<S: Speaker>(
    core: &mut Core,
    speaker: &mut S,
    socket: &mut WebSocket,
    message: Message,
) -> Option<End> {
    if matches!(message, Message::Text(_) | Message::Binary(_)) && core.limiter.check().is_err() {
        core.state.hub.metrics().dropped(DropReason::RateLimit).increment(1);
        core.refused += 1;
        if core.refused >= core.state.config.limits.client_abuse_close_after {
            return Some(End::Close(CloseCode::RateLimited));
        }
        let text = match &message {
            Message::Text(text) => Some(text.as_str()),
            _ => None,
        };
        let reply = speaker.refused(core, Some(text.unwrap_or("")));
        return socket.send(Message::Text(reply.into())).await.err().map(|_| End::Gone);
    }
    core.refused = 0;
    let reply = match message {
        Message::Text(text) => match speaker.on_text(core, text.as_str()).await {
            Ok(reply) => reply,
            Err(end) => return Some(end),
        },
        Message::Binary(_) => Some(speaker.refused(core, None)),
        Message::Close(_) => return Some(End::ClientClosed),
        Message::Ping(_) | Message::Pong(_) => None,
    };
    let reply = reply?;
    match socket.send(Message::Text(reply.into())).await {
        Ok(()) => None,
        Err(_) => Some(End::Gone),
    }
}

/// Leaves every room, forgets the connection, and says goodbye with the close code if any.
async fn finish<S: Speaker>(mut core: Core, speaker: &S, mut socket: WebSocket, end: End) {
    let conn = core.conn.clone();
    // Leave rooms first so no more frames are queued for a socket that is going away.
    let rooms = std::mem::take(&mut core.rooms);
    for room in &rooms {
        core.state.hub.leave(&conn, room).await;
    }
    core.state.hub.disconnect(&conn);
    let close = match end {
        End::Close(code) => Some(speaker.close(code.code())),
        End::Requested(code) => Some(speaker.close(code)),
        End::ClientClosed => {
            // Completes the closing handshake with the client's own code.
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, socket.flush()).await;
            None
        }
        End::Gone => None,
    };
    let slow = matches!(end, End::Requested(code) if code == CloseCode::SlowConsumer.code());
    if let Some((code, reason)) = close {
        let wait = if slow { SLOW_CLOSE_TIMEOUT } else { CLOSE_TIMEOUT };
        if let Some(last) = speaker.farewell(code, reason) {
            let _ = tokio::time::timeout(wait, socket.feed(Message::Text(last.into()))).await;
        }
        close_socket(&mut socket, code, reason, wait).await;
    }
    tracing::info!(connection_id = %conn.id, app_id = %conn.app_id, close_code = close.map_or(0, |c| c.0), rooms = rooms.len(), "connection closed");
}

/// Sends a close frame and completes the closing handshake, within `wait`.
pub(super) async fn close_socket(socket: &mut WebSocket, code: u16, reason: &'static str, wait: Duration) {
    let closing = async {
        socket.send(Message::Close(Some(CloseFrame { code, reason: reason.into() }))).await?;
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

/// The native reason of a close code.
pub(super) fn reason_of(code: u16) -> &'static str {
    CloseCode::of(code).map_or("closed", CloseCode::reason)
}

fn frame_limiter(limits: &crate::config::LimitsConfig) -> FrameLimiter {
    use std::num::NonZeroU32;
    // validate() guarantees both are positive.
    let rate = NonZeroU32::new(limits.client_messages_per_second).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(limits.client_messages_burst).unwrap_or(NonZeroU32::MIN);
    governor::RateLimiter::direct(governor::Quota::per_second(rate).allow_burst(burst))
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

impl Speaker for Native {
    fn hello(&self, core: &Core) -> String {
        let conn = &core.conn;
        ServerFrame::connected(
            &conn.id,
            &conn.app_id,
            conn.user_id().map(|u| &**u),
            core.state.config.websocket.heartbeat_s,
        )
    }

    fn on_text<'a>(&'a mut self, core: &'a mut Core, text: &'a str) -> Reply<'a> {
        Box::pin(async move {
            Ok(match ClientFrame::parse(text) {
                Ok(frame) => self.on_frame(core, frame).await,
                Err(e) => Some(refuse(core, e.code, &e.detail, None, e.id)),
            })
        })
    }

    fn refused(&self, core: &Core, text: Option<&str>) -> String {
        match text {
            Some(text) => {
                let id = ClientFrame::parse(text).ok().and_then(|f| f.id());
                refuse(core, ErrorCode::RateLimited, "over the client frame rate", None, id)
            }
            None => {
                refuse(core, ErrorCode::InvalidMessage, "a binary frame; only JSON text is read", None, None)
            }
        }
    }

    fn close(&self, code: u16) -> (u16, &'static str) {
        (code, reason_of(code))
    }
}

/// The error frame for a refused client frame: the code's fixed message for the client, the
/// detail for the log (a broker failure at warn level, the client's own mistakes at debug).
fn refuse(core: &Core, code: ErrorCode, detail: &str, room: Option<&RoomName>, id: Option<u64>) -> String {
    let connection_id = &*core.conn.id;
    let named = room.map_or("-", RoomName::as_str);
    if code == ErrorCode::Unavailable {
        tracing::warn!(connection_id, room = named, code = code.as_str(), detail, "client frame refused");
    } else {
        tracing::debug!(connection_id, room = named, code = code.as_str(), detail, "client frame refused");
    }
    ServerFrame::error(code, room, id)
}

impl Native {
    /// Handles one valid frame; returns the reply to send, if any.
    async fn on_frame(&mut self, core: &mut Core, frame: ClientFrame) -> Option<String> {
        match frame {
            ClientFrame::Ping { id } => Some(ServerFrame::pong(id)),
            ClientFrame::Subscribe { room, id, since } => {
                Some(match self.subscribe(core, &room, since.as_ref()).await {
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
                    Err((code, detail)) => refuse(core, code, &detail, Some(&room), id),
                })
            }
            ClientFrame::Unsubscribe { room, id } => Some(if core.leave_room(&room) {
                core.state.hub.leave(&core.conn, &room).await;
                ServerFrame::unsubscribed(&room, id)
            } else {
                refuse(core, ErrorCode::NotSubscribed, "unsubscribe", Some(&room), id)
            }),
            ClientFrame::Publish { room, event, data, id } => {
                match publish(core, self.identity.can_publish, &room, &event, &data).await {
                    // Answered only when asked (an `id`): the offset the event took.
                    Ok(offset) => id.map(|id| ServerFrame::published(&room, id, offset)),
                    Err((code, detail)) => Some(refuse(core, code, &detail, Some(&room), id)),
                }
            }
        }
    }

    /// Joins `room` (recovering what was missed since `since`); returns where its stream stands
    /// and, for a presence room, its members.
    async fn subscribe(
        &mut self,
        core: &mut Core,
        room: &RoomName,
        since: Option<&Since>,
    ) -> Result<JoinOutcome, (ErrorCode, String)> {
        if !self.identity.grants.allows(room) {
            return Err((ErrorCode::RoomForbidden, format!("the token does not grant room {room}")));
        }
        if room.is_presence() && self.identity.user_id.is_none() {
            return Err((ErrorCode::UserIdRequired, "presence rooms need a user_id in the token".into()));
        }
        if let Some(why) = core.room_limit(room) {
            return Err((ErrorCode::TooManyRooms, why));
        }
        if room.is_presence() && self.user_info.is_none() {
            let text = self.identity.user_info.as_ref().map_or_else(|| "null".to_owned(), |v| v.to_string());
            self.user_info = RawValue::from_string(text).ok().map(Arc::from);
        }
        let outcome = core
            .state
            .hub
            .join(&core.conn, room, self.user_info.as_ref(), since)
            .await
            .map_err(|e| (ErrorCode::Unavailable, format!("cannot subscribe now: {e}")))?;
        core.joined(room);
        Ok(outcome)
    }
}

/// Publishes a native client event to a room the connection is in; the offset it took.
async fn publish(
    core: &Core,
    can_publish: bool,
    room: &RoomName,
    event: &crate::protocol::EventName,
    data: &RawValue,
) -> Result<u64, (ErrorCode, String)> {
    if !core.client_events_allowed() || !can_publish {
        return Err((
            ErrorCode::ClientEventsDisabled,
            "client events are not enabled for this app or token".into(),
        ));
    }
    if !core.rooms.contains(room) {
        return Err((ErrorCode::NotSubscribed, format!("subscribe to {room} before publishing to it")));
    }
    core.state
        .hub
        .broadcast(&core.conn.app_id, room, event, data, Some(&core.conn.id), PublishKind::Client)
        .await
        .map(|published| published.offset)
        .map_err(|e| (ErrorCode::Unavailable, format!("cannot publish now: {e}")))
}

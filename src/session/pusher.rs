//! `GET /app/{key}`: Pusher Channels protocol 7 (DESIGN §12). The socket is served by the same
//! loop as `/ws` (outbox, heartbeats, frame limits); this is what a Pusher client says and is
//! told. A Pusher connection has no token: public channels are open to anyone with the key,
//! `private-` and `presence-` ones need the app's HMAC channel authorization.

use std::sync::Arc;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::connection::{self, Core, Reply, Speaker, close_socket, reason_of};
use crate::apps::is_active;
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::extract::{ClientIp, Query};
use crate::hub::Protocol;
use crate::hub::events::PublishKind;
use crate::limits::RateSlot;
use crate::protocol::{CloseCode, EventName, MAX_DATA_DEPTH, RoomName, json_depth};
use crate::pusher::{self as wire, PusherCode, PusherFrame};

/// How long a refused Pusher connection's error and close may take.
const REFUSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// The query pusher-js sends: `protocol=7&client=js&version=8.4.0&flash=false`.
#[derive(Debug, Deserialize)]
pub struct PusherParams {
    pub protocol: Option<String>,
}

/// `GET /app/{key}`, for the HTTP router.
pub fn router() -> axum::Router<AppState> {
    axum::Router::new().route("/app/{key}", axum::routing::get(upgrade))
}

/// The upgrade handler. What a Pusher client must be told in Pusher's terms (an unknown app, a
/// disabled one, a full node…) is told after the upgrade, as `pusher:error` and a close code
/// pusher-js acts on; a flood from one address is refused before it.
#[allow(clippy::too_many_arguments)]
pub async fn upgrade(
    State(state): State<AppState>,
    Path(key): Path<String>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    Query(params): Query<PusherParams>,
    ClientIp(ip): ClientIp,
    peer: Option<axum::Extension<ConnectInfo<std::net::SocketAddr>>>,
    slot: Option<axum::Extension<RateSlot>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let upgrade = super::sized(&state, upgrade.map_err(|_| ApiError::UpgradeRequired)?);
    let proxied_ip = match super::admit(&state, ip, peer, slot) {
        Ok(proxied_ip) => proxied_ip,
        Err(ApiError::NodeFull { .. }) => return Ok(refuse(upgrade, PusherCode::OverCapacity)),
        Err(e) => return Err(e),
    };
    if let Err(code) = check_protocol(params.protocol.as_deref()) {
        return Ok(refuse(upgrade, code));
    }
    let app = match state.app(&key).await? {
        Some(app) if app.deleted_at.is_none() => app,
        _ => return Ok(refuse(upgrade, PusherCode::AppNotFound)),
    };
    if !is_active(&app) {
        return Ok(refuse(upgrade, PusherCode::AppDisabled));
    }
    // Public channels need no credential on this protocol: an app takes Pusher clients only
    // when it says so, so turning this endpoint on never opens a native app's rooms.
    if !app.pusher_clients {
        tracing::debug!(app_id = %app.app_id, "Pusher upgrade refused: the app does not take Pusher clients");
        return Ok(refuse(upgrade, PusherCode::NotEnabled));
    }
    if state.hub.app_connection_count(&app.app_id) >= app.max_connections as usize {
        return Ok(refuse(upgrade, PusherCode::OverQuota));
    }
    if let Some(origin) = super::refused_origin(&headers, &app.allowed_domains) {
        tracing::debug!(app_id = %app.app_id, origin, "Pusher upgrade refused: origin not allowed");
        return Ok(refuse(upgrade, PusherCode::Unauthorized));
    }
    let app_id = app.app_id.clone();
    Ok(upgrade.on_upgrade(move |socket| {
        connection::run_as(state, socket, Protocol::Pusher, &app_id, proxied_ip, PusherSpeaker)
    }))
}

/// The `protocol` query parameter: 5 to 7.
fn check_protocol(protocol: Option<&str>) -> Result<(), PusherCode> {
    let version: u8 =
        protocol.ok_or(PusherCode::NoProtocol)?.parse().map_err(|_| PusherCode::InvalidVersion)?;
    if (wire::OLDEST_PROTOCOL..=wire::PROTOCOL).contains(&version) {
        Ok(())
    } else {
        Err(PusherCode::UnsupportedProtocol)
    }
}

/// Upgrades only to say `pusher:error` with `code`, and close with it.
fn refuse(upgrade: WebSocketUpgrade, code: PusherCode) -> Response {
    upgrade.on_upgrade(move |mut socket: WebSocket| async move {
        let error = wire::error(Some(code.code()), code.message());
        let said = tokio::time::timeout(REFUSE_TIMEOUT, socket.send(error.into())).await;
        if matches!(said, Ok(Ok(()))) {
            close_socket(&mut socket, code.code(), code.message(), REFUSE_TIMEOUT).await;
        }
    })
}

/// The Pusher side of a session. Everything it needs is in the [`Core`]: the user a presence
/// subscription or sign-in sets lives on the connection's handle.
struct PusherSpeaker;

/// A refused subscription: its HTTP-like status and why.
type Refusal = (u16, String);

impl Speaker for PusherSpeaker {
    fn hello(&self, core: &Core) -> String {
        wire::connection_established(&core.conn.id, core.state.config.websocket.heartbeat_s)
    }

    fn on_text<'a>(&'a mut self, core: &'a mut Core, text: &'a str) -> Reply<'a> {
        Box::pin(async move {
            let frame = match PusherFrame::parse(text) {
                Ok(frame) => frame,
                Err(why) => {
                    tracing::debug!(connection_id = %core.conn.id, why, "Pusher frame refused");
                    return Ok(Some(wire::error(None, &why)));
                }
            };
            Ok(match frame {
                PusherFrame::Ping => Some(wire::pong()),
                PusherFrame::Ignored => None,
                PusherFrame::Subscribe { channel, auth, channel_data } => {
                    Some(match subscribe(core, &channel, auth.as_deref(), channel_data.as_deref()).await {
                        Ok(succeeded) => succeeded,
                        Err((status, why)) => {
                            tracing::debug!(connection_id = %core.conn.id, channel, status, why, "Pusher subscription refused");
                            wire::subscription_error(&channel, status, &why)
                        }
                    })
                }
                PusherFrame::Unsubscribe { channel } => {
                    if let Ok(room) = RoomName::parse(&channel)
                        && core.leave_room(&room)
                    {
                        core.state.hub.leave(&core.conn, &room).await;
                    }
                    None
                }
                PusherFrame::Signin { auth, user_data } => Some(signin(core, &auth, &user_data)),
                PusherFrame::Client { event, channel, data } => {
                    client_event(core, &event, &channel, &data).await
                }
            })
        })
    }

    fn refused(&self, _core: &Core, text: Option<&str>) -> String {
        match text {
            Some(_) => {
                let code = PusherCode::ClientEventRateLimited;
                wire::error(Some(code.code()), code.message())
            }
            None => wire::error(None, "binary frames are not read; send JSON text"),
        }
    }

    fn close(&self, code: u16) -> (u16, &'static str) {
        // pusher-js acts on the range: 4000–4099 gives up, 4100–4199 backs off, 4200–4299
        // reconnects at once; and it takes 4000 itself to mean "use TLS".
        let pusher = match CloseCode::of(code) {
            Some(CloseCode::AppDisabled) => PusherCode::AppDisabled,
            Some(CloseCode::Terminated) => PusherCode::Unauthorized,
            Some(CloseCode::RateLimited) => PusherCode::OverCapacity,
            Some(CloseCode::IdleTimeout) => PusherCode::PongNotReceived,
            Some(CloseCode::ServiceRestart | CloseCode::SlowConsumer) => PusherCode::Reconnect,
            // The WebSocket's own codes (1002, 1007, 1009) mean the same to every client.
            _ => return (code, reason_of(code)),
        };
        (pusher.code(), pusher.message())
    }

    fn farewell(&self, code: u16, reason: &str) -> Option<String> {
        // Pusher says why in a frame before closing; pusher-js hands it to `error` listeners.
        (code >= 4000).then(|| wire::error(Some(code), reason))
    }
}

/// Subscribes to `channel`, checking its authorization; `pusher_internal:subscription_succeeded`.
async fn subscribe(
    core: &mut Core,
    channel: &str,
    auth: Option<&str>,
    channel_data: Option<&str>,
) -> Result<String, Refusal> {
    if let Some(user) = channel.strip_prefix(wire::USER_CHANNEL_PREFIX) {
        // pusher-js subscribes to its user's channel after signing in; events sent to a user
        // are not served yet, so the subscription carries nothing.
        return match core.conn.user_id() {
            Some(me) if **me == *user => Ok(wire::subscription_succeeded(channel, None)),
            _ => Err((403, "sign in as this user first".into())),
        };
    }
    let room = RoomName::parse(channel).map_err(|e| (400, format!("channel name {e}")))?;
    if let Some(why) = core.room_limit(&room) {
        return Err((400, why));
    }
    let presence = room.is_presence();
    let mut user_info: Option<Arc<RawValue>> = None;
    if presence || room.is_private() {
        let app =
            core.state.apps.cache().get(&core.conn.app_id).ok_or((503, "app unknown here".to_owned()))?;
        let data = if presence {
            Some(channel_data.ok_or((400, "a presence channel needs channel_data".to_owned()))?)
        } else {
            None
        };
        let signed = wire::channel_signed(&core.conn.id, channel, data);
        if !auth.is_some_and(|auth| wire::verify(&app.app_id, &app.secret, auth, &signed)) {
            return Err((401, "invalid channel authorization signature".into()));
        }
        if let Some(data) = data {
            let (user_id, info) = wire::presence_member(data).map_err(|e| (400, e))?;
            if !core.conn.become_user(&user_id) {
                return Err((403, "this connection is already another user".into()));
            }
            user_info = Some(Arc::from(info));
        }
    }
    let joined = core
        .state
        .hub
        .join(&core.conn, &room, user_info.as_ref(), None)
        .await
        .map_err(|e| (503, format!("cannot subscribe now: {e}")))?;
    core.joined(&room);
    let members = joined.presence.as_ref().map(|p| (p.members.as_slice(), p.member_count));
    Ok(wire::subscription_succeeded(channel, members))
}

/// `pusher:signin`: the user the app's signature vouches for becomes the connection's user.
fn signin(core: &Core, auth: &str, user_data: &str) -> String {
    let refused = |why: &str| {
        tracing::debug!(connection_id = %core.conn.id, why, "Pusher sign-in refused");
        wire::error(Some(PusherCode::Unauthorized.code()), why)
    };
    let Some(app) = core.state.apps.cache().get(&core.conn.app_id) else {
        return refused("app unknown here");
    };
    if !wire::verify(&app.app_id, &app.secret, auth, &wire::signin_signed(&core.conn.id, user_data)) {
        return refused("invalid sign-in signature");
    }
    let user_id = match wire::signin_user(user_data) {
        Ok(user_id) => user_id,
        Err(why) => return refused(&why),
    };
    if !core.conn.become_user(&user_id) {
        return refused("this connection is already another user");
    }
    wire::signin_success(user_data)
}

/// A `client-…` event: published to the channel's other subscribers when the app allows it,
/// the channel is private or presence (not encrypted), and the connection is subscribed.
async fn client_event(core: &Core, event: &EventName, channel: &str, data: &RawValue) -> Option<String> {
    let refused = |why: &str| Some(wire::error(None, why));
    if !core.client_events_allowed() {
        return refused("client events are not enabled for this app");
    }
    let Ok(room) = RoomName::parse(channel) else { return refused("no such channel") };
    if !(room.is_private() || room.is_presence()) || channel.starts_with("private-encrypted-") {
        return refused("client events are allowed on private and presence channels only");
    }
    if !core.rooms.contains(&room) {
        return refused("subscribe to the channel before sending client events to it");
    }
    if json_depth(data.get()) > MAX_DATA_DEPTH {
        return refused("data is nested too deeply");
    }
    let hub = &core.state.hub;
    match hub.broadcast(&core.conn.app_id, &room, event, data, Some(&core.conn.id), PublishKind::Client).await
    {
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(connection_id = %core.conn.id, channel, error = %e, "Pusher client event not published");
            refused("cannot publish now")
        }
    }
}

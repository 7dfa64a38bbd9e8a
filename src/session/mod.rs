//! `GET /ws`: checks the credential, the app and the browser's Origin before upgrading, then
//! hands the socket to a [`connection`] task; [`pusher`] does the same for `GET /app/{key}`.

pub mod connection;
pub mod pusher;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, header};
use axum::response::Response;
use serde::Deserialize;

use crate::apps::is_active;
use crate::auth::token::Identity;
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::extract::{ClientIp, Query};
use crate::limits::RateSlot;
use crate::metrics::RefusedReason;

/// Seconds a client told that the node is full should wait before trying it again.
const NODE_FULL_RETRY_S: u64 = 5;

/// Credentials accepted in the query string.
#[derive(Debug, Deserialize)]
pub struct WsParams {
    pub token: Option<String>,
    pub ticket: Option<String>,
}

/// The WebSocket endpoint, `GET /ws`, for the HTTP router.
pub fn router() -> axum::Router<AppState> {
    axum::Router::new().route("/ws", axum::routing::get(upgrade)).merge(pusher::router())
}

/// The upgrade handler.
pub async fn upgrade(
    State(state): State<AppState>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    Query(params): Query<WsParams>,
    ClientIp(ip): ClientIp,
    peer: Option<axum::Extension<ConnectInfo<std::net::SocketAddr>>>,
    slot: Option<axum::Extension<RateSlot>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let upgrade = upgrade.map_err(|_| ApiError::UpgradeRequired)?;
    let proxied_ip = admit(&state, ip, peer, slot)?;
    let identity = authenticate(&state, &params, &headers).await?;
    let app =
        state.app(&identity.app_id).await?.ok_or_else(|| ApiError::InvalidToken("unknown app".into()))?;
    if !is_active(&app) {
        return Err(ApiError::AppDisabled);
    }
    // Checked, not reserved: upgrades racing for the last slots may pass it together, so the
    // limit can be exceeded by the number of upgrades in flight at that moment.
    if state.hub.app_connection_count(&app.app_id) >= app.max_connections as usize {
        return Err(ApiError::ConnectionLimit);
    }
    if let Some(origin) = refused_origin(&headers, &app.allowed_domains) {
        return Err(ApiError::OriginNotAllowed(origin.to_owned()));
    }
    Ok(sized(&state, upgrade).on_upgrade(move |socket| connection::run(state, socket, identity, proxied_ip)))
}

/// What every upgrade passes first, whatever its protocol: a client behind a trusted proxy
/// under its connection cap, a node under its bounds, and the address's upgrade rate charged.
/// The client's address when it came through a trusted proxy.
pub(crate) fn admit(
    state: &AppState,
    ip: Option<std::net::IpAddr>,
    peer: Option<axum::Extension<ConnectInfo<std::net::SocketAddr>>>,
    slot: Option<axum::Extension<RateSlot>>,
) -> Result<Option<std::net::IpAddr>, ApiError> {
    // A client behind a trusted proxy is capped here (a direct one was at the accept), by the
    // hub's count of its connections. Checked, not reserved, like the app's max_connections.
    let proxied_ip = match (peer, ip) {
        (Some(axum::Extension(ConnectInfo(peer))), Some(client))
            if state.guards.admission.is_trusted(peer.ip()) && client != peer.ip() =>
        {
            if state.hub.connections_from(client) >= state.config.limits.connections_per_ip as usize {
                state.metrics.listener.refused(RefusedReason::IpLimit).increment(1);
                return Err(ApiError::IpConnectionLimit);
            }
            Some(client)
        }
        _ => None,
    };
    // The node's own bound comes before any work: a full node answers at once, so a load
    // balancer (or the client) tries another.
    if let Some(full) = state.guards.capacity.full(state.hub.connection_count()) {
        state.metrics.listener.refused(RefusedReason::NodeFull).increment(1);
        tracing::debug!(reason = full.as_str(), "upgrade refused: node full");
        return Err(ApiError::NodeFull { retry_after: NODE_FULL_RETRY_S });
    }
    // Charged before any check, so a flood of bad credentials is limited too.
    AppState::charge_ip(&state.guards.limits.upgrades, ip, slot.as_deref())?;
    Ok(proxied_ip)
}

/// The browser's Origin when the app's allow-list refuses it.
pub(crate) fn refused_origin<'a>(headers: &'a HeaderMap, allowed: &[String]) -> Option<&'a str> {
    headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .filter(|origin| !origin_allowed(origin, allowed))
}

/// The upgrade with the node's socket buffers and frame limit.
pub(crate) fn sized(state: &AppState, upgrade: WebSocketUpgrade) -> WebSocketUpgrade {
    let ws = &state.config.websocket;
    let max = state.config.limits.max_message_bytes;
    upgrade
        .read_buffer_size(ws.read_buffer_bytes)
        .write_buffer_size(ws.write_buffer_bytes)
        .max_write_buffer_size(ws.max_write_buffer_bytes)
        .max_message_size(max)
        .max_frame_size(max)
}

async fn authenticate(
    state: &AppState,
    params: &WsParams,
    headers: &HeaderMap,
) -> Result<Identity, ApiError> {
    if let Some(ticket) = &params.ticket {
        return state
            .auth
            .tickets
            .redeem(ticket, crate::clock::now_ms())
            .await
            .map_err(|e| ApiError::Unavailable(e.to_string()))?
            .ok_or(ApiError::InvalidTicket);
    }
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")));
    let token = params.token.as_deref().or(bearer).ok_or_else(|| {
        ApiError::InvalidToken("a token is required (?token=, ?ticket= or Authorization: Bearer)".into())
    })?;
    state.verify_client_token(token).await
}

/// Whether a browser `Origin` matches an app's allow-list; an empty list allows any origin.
pub fn origin_allowed(origin: &str, allowed: &[String]) -> bool {
    if allowed.is_empty() {
        return true;
    }
    let without_scheme = origin.split_once("://").map_or(origin, |(_, rest)| rest);
    let authority = without_scheme.split('/').next().unwrap_or("");
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.split(':').next().unwrap_or(""),
    }
    .to_ascii_lowercase();
    allowed.iter().any(|pattern| match pattern.strip_prefix("*.") {
        Some(parent) => {
            host.len() > parent.len() + 1
                && host.ends_with(parent)
                && host[..host.len() - parent.len()].ends_with('.')
        }
        None => host == *pattern,
    })
}

#[cfg(test)]
mod tests {
    use super::origin_allowed;

    #[test]
    fn origins() {
        let list = vec!["example.com".to_owned(), "*.apps.test".to_owned()];
        assert!(origin_allowed("https://example.com", &list));
        assert!(origin_allowed("http://example.com:8080", &list));
        assert!(origin_allowed("https://a.apps.test", &list));
        assert!(origin_allowed("https://a.b.apps.test", &list));
        assert!(!origin_allowed("https://apps.test", &list));
        assert!(!origin_allowed("https://evilapps.test", &list));
        assert!(!origin_allowed("https://example.com.evil.org", &list));
        assert!(!origin_allowed("null", &list));
        assert!(origin_allowed("https://anything", &[]));
    }
}

//! The operator's routes: `GET /health` (liveness of this node and its dependencies, for load
//! balancers) and `GET /metrics` (Prometheus).

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::error::ApiError;

/// Routes of this area.
pub fn router() -> Router<AppState> {
    Router::new().route("/health", get(health)).route("/metrics", get(metrics_page))
}

/// Health of the node.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    pub ok: bool,
    pub version: &'static str,
    pub node_id: String,
    pub uptime_s: u64,
    /// `ok` or `down`.
    pub store: &'static str,
    /// `ok`, `down`, or `disabled` on a single node.
    pub redis: &'static str,
    /// Open WebSocket connections on this node.
    pub connections: usize,
    /// `limits.max_connections`: WebSockets this node serves at once.
    pub max_connections: usize,
    /// Null, or why the node takes no new WebSocket connections now (`connections`, `memory`);
    /// the answer is then 503 so a load balancer sends new clients elsewhere, while the node's
    /// clients keep being served.
    pub full: Option<&'static str>,
}

#[utoipa::path(get, path = "/health", tag = "operations",
    responses((status = 200, body = Health), (status = 503, body = Health)))]
async fn health(State(state): State<AppState>) -> (StatusCode, axum::Json<Health>) {
    let store_ok =
        match tokio::time::timeout(std::time::Duration::from_secs(2), state.apps.store().ping()).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "store health check failed");
                false
            }
            Err(_) => false,
        };
    let redis = match &state.node.cluster {
        None => "disabled",
        Some(r) if r.link.is_up() => "ok",
        Some(_) => "down",
    };
    let connections = state.hub.connection_count();
    let full = state.guards.capacity.full(connections).map(crate::accept::Full::as_str);
    let ok = store_ok && redis != "down" && full.is_none();
    let body = Health {
        ok,
        version: env!("CARGO_PKG_VERSION"),
        node_id: state.node.id.clone(),
        uptime_s: state.node.started.elapsed().as_secs(),
        store: if store_ok { "ok" } else { "down" },
        redis,
        connections,
        max_connections: state.guards.capacity.max_connections,
        full,
    };
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, axum::Json(body))
}

/// `GET /metrics`: the Prometheus text format; with `metrics.token` set, only for
/// `Authorization: Bearer <token>`.
pub async fn metrics_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(expected) = &state.config.metrics.token {
        use subtle::ConstantTimeEq;
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !bool::from(presented.as_bytes().ct_eq(expected.as_bytes())) {
            return ApiError::InvalidToken("GET /metrics needs Authorization: Bearer <metrics.token>".into())
                .into_response();
        }
    }
    let full = state.guards.capacity.full(state.hub.connection_count()).is_some();
    let redis_up = state.node.cluster.as_ref().map(|c| c.link.is_up());
    let body = state.metrics.render(&state.hub, full, redis_up);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}

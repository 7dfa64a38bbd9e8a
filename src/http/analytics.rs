//! `GET /api/analytics?period=1h|24h|7d|30d` (scope `analytics:read`), in the shape of
//! DESIGN §5.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::extract::{Principal, Query};
use crate::analytics::Period;
use crate::auth::api_key::Scope;
use crate::clock::now_ms;

/// Routes of this area.
pub fn router() -> Router<AppState> {
    Router::new().route("/api/analytics", get(analytics))
}

/// Query of `GET /api/analytics`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AnalyticsParams {
    /// `1h`, `24h` (default), `7d` or `30d`.
    pub period: Option<String>,
    /// The app, for admin keys.
    pub app_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConnectionStats {
    /// Connections opened in the period.
    pub total: u64,
    /// Open now.
    pub current: u64,
    /// Most open at once in the period.
    pub peak: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventStats {
    /// Broadcasts plus client events.
    pub total: u64,
    pub broadcasts: u64,
    pub client_events: u64,
    /// Event frames delivered to subscribers.
    pub delivered: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserStats {
    /// Distinct users connected now.
    pub online: u64,
    /// Distinct users seen in the period.
    pub total: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookStats {
    pub delivered: u64,
    pub failed: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AnalyticsMetrics {
    pub connections: ConnectionStats,
    pub events: EventStats,
    pub users: UserStats,
    pub webhooks: WebhookStats,
}

/// One step of the series: 1 minute for `1h`, 1 hour for `24h`, 6 hours for `7d`, 1 day for
/// `30d`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SeriesPoint {
    /// Start of the step, ms since the epoch.
    pub t: i64,
    /// Most connections open at once during the step.
    pub connections: u64,
    /// Broadcasts plus client events.
    pub events: u64,
    pub delivered: u64,
}

/// The analytics answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct AnalyticsReport {
    pub success: bool,
    pub app_id: String,
    pub period: String,
    pub metrics: AnalyticsMetrics,
    pub series: Vec<SeriesPoint>,
    /// When the report was made, ms since the epoch.
    pub timestamp: i64,
}

#[utoipa::path(get, path = "/api/analytics", tag = "analytics", params(AnalyticsParams),
    responses((status = 200, body = AnalyticsReport), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
async fn analytics(
    State(state): State<AppState>,
    principal: Principal,
    Query(params): Query<AnalyticsParams>,
) -> Result<axum::Json<AnalyticsReport>, ApiError> {
    principal.require(Scope::AnalyticsRead)?;
    let app_id = principal.target_app(params.app_id.as_deref())?;
    let app = state.live_app(&app_id).await?;
    let period = match params.period.as_deref() {
        None => Period::Day,
        Some(p) => Period::parse(p).ok_or_else(|| ApiError::field("period", "must be 1h, 24h, 7d or 30d"))?,
    };
    let now = now_ms();
    let r = state
        .stats
        .report(&app.app_id, period, now)
        .await
        .map_err(|e| ApiError::Unavailable(format!("analytics in Redis: {e}")))?;
    let current = r.current;
    let t = r.totals;
    Ok(axum::Json(AnalyticsReport {
        success: true,
        app_id: app.app_id.clone(),
        period: period.as_str().to_owned(),
        metrics: AnalyticsMetrics {
            connections: ConnectionStats {
                total: t.connections_opened,
                current,
                peak: r.peak_connections.max(current),
            },
            events: EventStats {
                total: t.broadcasts + t.client_events,
                broadcasts: t.broadcasts,
                client_events: t.client_events,
                delivered: t.delivered,
            },
            users: UserStats { online: r.users_online, total: r.users_total },
            webhooks: WebhookStats { delivered: t.webhooks_delivered, failed: t.webhooks_failed },
        },
        series: r
            .series
            .iter()
            .map(|(t, c)| SeriesPoint {
                t: *t,
                connections: c.peak_connections,
                events: c.broadcasts + c.client_events,
                delivered: c.delivered,
            })
            .collect(),
        timestamp: now,
    }))
}

//! Webhook management (DESIGN §2.3, §6): register, list, change, delete, the delivery log, a
//! test ping and the manual retry of a failed delivery. Scopes `webhooks:read` and
//! `webhooks:write`; a webhook of another app is 404, as if it did not exist.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorBody};
use super::extract::{Authed, Principal, Query};
use super::{AppState, iso8601};
use crate::auth::api_key::Scope;
use crate::clock::now_ms;
use crate::protocol::EventName;
use crate::store::{DeliveryRecord, WebhookFormat, WebhookRecord};
use crate::webhooks::target;

/// Routes of this area.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/webhooks", get(list_webhooks).post(create_webhook))
        .route("/api/webhooks/{id}", get(get_webhook).patch(update_webhook).delete(delete_webhook))
        .route("/api/webhooks/{id}/deliveries", get(list_deliveries))
        .route("/api/webhooks/{id}/test", post(test_webhook))
        .route("/api/webhooks/{id}/deliveries/{delivery_id}/retry", post(retry_delivery))
}

/// Most event names one webhook may list.
const MAX_EVENTS: usize = 100;
/// Length bounds of a caller-chosen secret.
const SECRET_LEN: std::ops::RangeInclusive<usize> = 16..=256;
/// Largest page of deliveries.
const MAX_PAGE: usize = 100;

/// Body of `POST /api/webhooks`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(default)]
pub struct CreateWebhook {
    /// The app, for admin keys (also accepted as `?app_id=`).
    pub app_id: Option<String>,
    /// `http` or `https`, without credentials, at most 2,048 characters.
    #[schema(max_length = 2048)]
    pub url: Option<String>,
    /// Signs deliveries; 16–256 characters. Generated (and returned once) when absent.
    #[schema(min_length = 16, max_length = 256)]
    pub secret: Option<String>,
    /// Event names, system events (`room-occupied`, `room-vacated`, `user-joined`, `user-left`)
    /// or `"*"` for all; 1–100 entries.
    #[schema(min_items = 1, max_items = 100)]
    pub events: Option<Vec<String>>,
    /// Default true.
    pub enabled: Option<bool>,
    /// `roomcast` (the default) or `pusher`: Pusher's batched body with `X-Pusher-Key` and
    /// `X-Pusher-Signature` (signed with the app secret), for Pusher's SDK validators.
    #[schema(example = "roomcast")]
    pub format: Option<String>,
}

/// Body of `PATCH /api/webhooks/{id}`: only the fields given change.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(default)]
pub struct UpdateWebhook {
    #[schema(max_length = 2048)]
    pub url: Option<String>,
    /// Replaces the signing secret (16–256 characters).
    #[schema(min_length = 16, max_length = 256)]
    pub secret: Option<String>,
    #[schema(min_items = 1, max_items = 100)]
    pub events: Option<Vec<String>>,
    /// Enabling a webhook clears `disabled_reason` and resumes its waiting deliveries.
    pub enabled: Option<bool>,
    /// `roomcast` or `pusher`; deliveries already recorded keep their body.
    pub format: Option<String>,
}

/// A webhook as the API shows it: never its secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookView {
    /// The webhook's identifier, the `:id` of its routes.
    pub id: String,
    pub app_id: String,
    pub url: String,
    pub events: Vec<String>,
    pub enabled: bool,
    /// Why roomcast disabled it (410, too many failures); null otherwise.
    pub disabled_reason: Option<String>,
    /// Failed attempts since the last success.
    pub consecutive_failures: u32,
    /// `roomcast` or `pusher`.
    pub format: String,
    pub created_at: String,
    pub updated_at: String,
}

impl From<&WebhookRecord> for WebhookView {
    fn from(w: &WebhookRecord) -> Self {
        Self {
            id: w.webhook_id.clone(),
            app_id: w.app_id.clone(),
            url: w.url.clone(),
            events: w.events.clone(),
            enabled: w.enabled,
            disabled_reason: w.disabled_reason.clone(),
            consecutive_failures: w.consecutive_failures,
            format: w.format.as_str().to_owned(),
            created_at: iso8601(w.created_at),
            updated_at: iso8601(w.updated_at),
        }
    }
}

/// `{"success", "webhook", "secret"}`; `secret` only when just created or replaced.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookShown {
    pub success: bool,
    pub webhook: WebhookView,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// `{"success", "webhooks"}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookList {
    pub success: bool,
    pub webhooks: Vec<WebhookView>,
}

/// One delivery and its latest attempt.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryView {
    pub delivery_id: String,
    pub webhook_id: String,
    pub event: String,
    /// The client-facing room; null for `ping`.
    pub room: Option<String>,
    /// `pending`, `retrying`, `succeeded` or `failed`.
    pub status: String,
    pub attempts: u32,
    /// HTTP status of the latest attempt; null before one or when no answer came.
    pub response_code: Option<u16>,
    pub latency_ms: Option<u64>,
    pub error: Option<String>,
    pub next_retry_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// Every attempt so far (at most the last 20), oldest first.
    pub attempt_log: Vec<AttemptView>,
}

/// One attempt of a delivery.
#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptView {
    /// When the attempt ended.
    pub at: String,
    /// HTTP status of the answer; null when none came (timeout, refused connection).
    pub response_code: Option<u16>,
    pub latency_ms: Option<u64>,
    /// Why it failed; null for a success.
    pub error: Option<String>,
}

impl From<&DeliveryRecord> for DeliveryView {
    fn from(d: &DeliveryRecord) -> Self {
        Self {
            delivery_id: d.delivery_id.clone(),
            webhook_id: d.webhook_id.clone(),
            event: d.event.clone(),
            room: d.room.clone(),
            status: d.status.as_str().to_owned(),
            attempts: d.attempts,
            response_code: d.response_code,
            latency_ms: d.latency_ms,
            error: d.error.clone(),
            next_retry_at: d.next_retry_at.map(iso8601),
            created_at: iso8601(d.created_at),
            updated_at: iso8601(d.updated_at),
            attempt_log: d
                .attempt_log
                .iter()
                .map(|a| AttemptView {
                    at: iso8601(a.at),
                    response_code: a.response_code,
                    latency_ms: a.latency_ms,
                    error: a.error.clone(),
                })
                .collect(),
        }
    }
}

/// `{"success", "deliveries", "next_cursor"}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryList {
    pub success: bool,
    pub deliveries: Vec<DeliveryView>,
    /// Pass as `cursor` for older deliveries; null on the last page.
    pub next_cursor: Option<String>,
}

/// `{"success", "delivery"}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryShown {
    pub success: bool,
    pub delivery: DeliveryView,
}

/// `{"success"}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Done {
    pub success: bool,
}

/// Query naming the app, for admin keys.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AppParam {
    /// The app, for admin keys.
    pub app_id: Option<String>,
}

/// Query of the delivery log.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveryParams {
    /// 1–100, default 50.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A webhook the caller may see: its app's own for an app key, any for an admin; the app must
/// be live. Anything else is 404, so ids of other tenants are not revealed.
async fn visible_webhook(
    state: &AppState,
    principal: &Principal,
    id: &str,
) -> Result<Arc<WebhookRecord>, ApiError> {
    let not_found = || ApiError::NotFound(format!("no webhook {id:?}"));
    let webhook = state.webhook(id).await?.ok_or_else(not_found)?;
    if principal.app_id.as_ref().is_some_and(|own| *own != webhook.app_id) {
        return Err(not_found());
    }
    match state.live_app(&webhook.app_id).await {
        Ok(_) => Ok(webhook),
        Err(ApiError::NotFound(_)) => Err(not_found()),
        Err(other) => Err(other),
    }
}

fn check_url(state: &AppState, raw: &str) -> Result<reqwest::Url, ApiError> {
    target::parse_url(raw, state.webhooks.config().allow_private_targets)
        .map_err(|e| ApiError::field("url", e))
}

fn check_events(events: &[String]) -> Result<Vec<String>, ApiError> {
    if events.is_empty() || events.len() > MAX_EVENTS {
        return Err(ApiError::field("events", format!("must list 1 to {MAX_EVENTS} event names or \"*\"")));
    }
    let mut out: Vec<String> = Vec::with_capacity(events.len());
    for (i, e) in events.iter().enumerate() {
        if e != "*" {
            EventName::parse(e).map_err(|why| ApiError::field(&format!("events[{i}]"), why))?;
        }
        if !out.contains(e) {
            out.push(e.clone());
        }
    }
    Ok(out)
}

fn check_format(format: &str) -> Result<WebhookFormat, ApiError> {
    WebhookFormat::parse(format)
        .ok_or_else(|| ApiError::field("format", "must be \"roomcast\" or \"pusher\""))
}

fn check_secret(secret: &str) -> Result<(), ApiError> {
    if !SECRET_LEN.contains(&secret.chars().count()) || secret.chars().any(char::is_control) {
        return Err(ApiError::field(
            "secret",
            format!(
                "must be {} to {} characters without control characters",
                SECRET_LEN.start(),
                SECRET_LEN.end()
            ),
        ));
    }
    Ok(())
}

#[utoipa::path(post, path = "/api/webhooks", tag = "webhooks", request_body = CreateWebhook, params(AppParam),
    responses((status = 201, body = WebhookShown), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 415, body = ErrorBody)),
    security(("api_key" = [])))]
async fn create_webhook(
    State(state): State<AppState>,
    Query(params): Query<AppParam>,
    call: Authed<CreateWebhook>,
) -> Result<impl IntoResponse, ApiError> {
    let (principal, body) = (call.principal, call.body);
    principal.require(Scope::WebhooksWrite)?;
    let requested = body.app_id.as_deref().or(params.app_id.as_deref());
    let app_id = state.live_app(&principal.target_app(requested)?).await?.app_id.clone();
    let url = body.url.as_deref().ok_or_else(|| ApiError::field("url", "is required"))?;
    let url = check_url(&state, url)?;
    let events = check_events(&body.events.ok_or_else(|| ApiError::field("events", "is required"))?)?;
    if let Some(secret) = &body.secret {
        check_secret(secret)?;
    }
    let format = body.format.as_deref().map(check_format).transpose()?.unwrap_or_default();
    target::check_resolved(&url, state.webhooks.config().allow_private_targets)
        .await
        .map_err(|e| ApiError::field("url", e))?;
    let _writes = state.webhooks.writing().await;
    let max = state.webhooks.config().max_per_app;
    if state.webhooks.of_app(&app_id).len() >= max {
        return Err(ApiError::field(
            "url",
            format!("this app already has {max} webhooks (webhooks.max_per_app)"),
        ));
    }
    let now = now_ms();
    let generated = body.secret.is_none();
    let record = WebhookRecord {
        webhook_id: format!("wh_{}", crate::auth::random_base62(16)),
        app_id,
        url: url.to_string(),
        secret: body.secret.unwrap_or_else(|| format!("whsec_{}", crate::auth::random_base62(32))),
        events,
        enabled: body.enabled.unwrap_or(true),
        disabled_reason: None,
        consecutive_failures: 0,
        format,
        created_at: now,
        updated_at: now,
    };
    state.webhooks.create(record.clone()).await?;
    let secret = generated.then(|| record.secret.clone());
    Ok((
        StatusCode::CREATED,
        axum::Json(WebhookShown { success: true, webhook: WebhookView::from(&record), secret }),
    ))
}

#[utoipa::path(get, path = "/api/webhooks", tag = "webhooks", params(AppParam),
    responses((status = 200, body = WebhookList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
async fn list_webhooks(
    State(state): State<AppState>,
    principal: Principal,
    Query(params): Query<AppParam>,
) -> Result<axum::Json<WebhookList>, ApiError> {
    principal.require(Scope::WebhooksRead)?;
    let app = state.live_app(&principal.target_app(params.app_id.as_deref())?).await?;
    let webhooks = state.webhooks.of_app(&app.app_id).iter().map(|w| WebhookView::from(&**w)).collect();
    Ok(axum::Json(WebhookList { success: true, webhooks }))
}

#[utoipa::path(get, path = "/api/webhooks/{id}", tag = "webhooks",
    params(("id" = String, Path, description = "the webhook")),
    responses((status = 200, body = WebhookShown), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
async fn get_webhook(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<WebhookShown>, ApiError> {
    principal.require(Scope::WebhooksRead)?;
    let webhook = visible_webhook(&state, &principal, &id).await?;
    Ok(axum::Json(WebhookShown { success: true, webhook: WebhookView::from(&*webhook), secret: None }))
}

#[utoipa::path(patch, path = "/api/webhooks/{id}", tag = "webhooks", request_body = UpdateWebhook,
    params(("id" = String, Path, description = "the webhook")),
    responses((status = 200, body = WebhookShown), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 415, body = ErrorBody)),
    security(("api_key" = [])))]
async fn update_webhook(
    State(state): State<AppState>,
    Path(id): Path<String>,
    call: Authed<UpdateWebhook>,
) -> Result<axum::Json<WebhookShown>, ApiError> {
    let (principal, body) = (call.principal, call.body);
    principal.require(Scope::WebhooksWrite)?;
    visible_webhook(&state, &principal, &id).await?;
    let url = body.url.as_deref().map(|u| check_url(&state, u)).transpose()?;
    let events = body.events.as_deref().map(check_events).transpose()?;
    if let Some(secret) = &body.secret {
        check_secret(secret)?;
    }
    let format = body.format.as_deref().map(check_format).transpose()?;
    if let Some(url) = &url {
        target::check_resolved(url, state.webhooks.config().allow_private_targets)
            .await
            .map_err(|e| ApiError::field("url", e))?;
    }
    let _writes = state.webhooks.writing().await;
    // Read again under the lock: an attempt may have changed its health meanwhile, here or
    // (the store has it) on another node.
    let current = visible_webhook(&state, &principal, &id).await?;
    let mut next = state.webhooks.stored(&id).await?.unwrap_or_else(|| (*current).clone());
    if let Some(url) = url {
        next.url = url.to_string();
    }
    if let Some(events) = events {
        next.events = events;
    }
    if let Some(secret) = &body.secret {
        next.secret.clone_from(secret);
    }
    if let Some(format) = format {
        next.format = format;
    }
    let enabling = body.enabled == Some(true) && !next.enabled;
    if let Some(enabled) = body.enabled {
        next.enabled = enabled;
        next.disabled_reason = None;
        if enabling {
            next.consecutive_failures = 0;
        }
    }
    next.updated_at = now_ms().max(current.updated_at).max(next.updated_at);
    state.webhooks.update(next.clone(), enabling).await?;
    Ok(axum::Json(WebhookShown { success: true, webhook: WebhookView::from(&next), secret: None }))
}

#[utoipa::path(delete, path = "/api/webhooks/{id}", tag = "webhooks",
    params(("id" = String, Path, description = "the webhook")),
    responses((status = 200, body = Done), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
async fn delete_webhook(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<Done>, ApiError> {
    principal.require(Scope::WebhooksWrite)?;
    let _writes = state.webhooks.writing().await;
    let webhook = visible_webhook(&state, &principal, &id).await?;
    state.webhooks.delete(&webhook).await?;
    Ok(axum::Json(Done { success: true }))
}

#[utoipa::path(get, path = "/api/webhooks/{id}/deliveries", tag = "webhooks",
    params(("id" = String, Path, description = "the webhook"), DeliveryParams),
    responses((status = 200, body = DeliveryList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
async fn list_deliveries(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    Query(params): Query<DeliveryParams>,
) -> Result<axum::Json<DeliveryList>, ApiError> {
    principal.require(Scope::WebhooksRead)?;
    let webhook = visible_webhook(&state, &principal, &id).await?;
    let limit = params.limit.unwrap_or(50);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::field("limit", format!("must be between 1 and {MAX_PAGE}")));
    }
    if let Some(cursor) = &params.cursor
        && !is_delivery_id(cursor)
    {
        return Err(ApiError::field("cursor", "is not a cursor this API returned"));
    }
    let mut page =
        state.webhooks.deliveries(&webhook.webhook_id, params.cursor.as_deref(), limit + 1).await?;
    let more = page.len() > limit;
    page.truncate(limit);
    let next_cursor = if more { page.last().map(|d| d.delivery_id.clone()) } else { None };
    Ok(axum::Json(DeliveryList {
        success: true,
        deliveries: page.iter().map(DeliveryView::from).collect(),
        next_cursor,
    }))
}

/// `d` + 12 hex digits + 10 base62 characters.
fn is_delivery_id(s: &str) -> bool {
    s.len() == 23 && s.starts_with('d') && s[1..].bytes().all(|b| b.is_ascii_alphanumeric())
}

#[utoipa::path(post, path = "/api/webhooks/{id}/test", tag = "webhooks",
    params(("id" = String, Path, description = "the webhook")),
    responses((status = 200, body = DeliveryShown), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("api_key" = [])))]
async fn test_webhook(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<DeliveryShown>, ApiError> {
    principal.require(Scope::WebhooksWrite)?;
    let webhook = visible_webhook(&state, &principal, &id).await?;
    if !webhook.enabled {
        return Err(ApiError::Conflict("the webhook is disabled; enable it first".into()));
    }
    let delivery = state.webhooks.ping(&webhook).await?;
    Ok(axum::Json(DeliveryShown { success: true, delivery: DeliveryView::from(&delivery) }))
}

#[utoipa::path(post, path = "/api/webhooks/{id}/deliveries/{delivery_id}/retry", tag = "webhooks",
    params(("id" = String, Path, description = "the webhook"), ("delivery_id" = String, Path, description = "the delivery")),
    responses((status = 202, body = DeliveryShown), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("api_key" = [])))]
async fn retry_delivery(
    State(state): State<AppState>,
    principal: Principal,
    Path((id, delivery_id)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    principal.require(Scope::WebhooksWrite)?;
    let webhook = visible_webhook(&state, &principal, &id).await?;
    let not_found = || ApiError::NotFound(format!("no delivery {delivery_id:?} of webhook {id:?}"));
    if !is_delivery_id(&delivery_id) {
        return Err(not_found());
    }
    let delivery = state
        .webhooks
        .delivery(&delivery_id)
        .await?
        .filter(|d| d.webhook_id == webhook.webhook_id)
        .ok_or_else(not_found)?;
    if !webhook.enabled {
        return Err(ApiError::Conflict("the webhook is disabled; enable it first".into()));
    }
    let delivery = state
        .webhooks
        .retry(delivery)
        .await?
        .ok_or_else(|| ApiError::Conflict("the delivery is already scheduled".into()))?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(DeliveryShown { success: true, delivery: DeliveryView::from(&delivery) }),
    ))
}

//! `/api/applications`: create, list, read, update apps; rotate their primary key and secret.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorBody};
use super::extract::{Authed, Principal, Query, from_value, opt_int};
use super::keys::KeyView;
use super::{AppState, iso8601};
use crate::apps::{check_app_id, generate_app_id};
use crate::auth::api_key::{PresentedKey, Scope};
use crate::auth::random_base62;
use crate::clock::now_ms;
use crate::config::HistoryConfig;
use crate::store::{AppRecord, AppStatus, KeyKind, KeyRecord, Retention};

/// Routes of this area.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/applications", get(list_apps).post(create_app))
        .route("/api/applications/{app_id}", get(get_app).put(update_app).delete(delete_app))
        .route("/api/applications/{app_id}/restore", post(restore_app))
        .route("/api/applications/{app_id}/regenerate-api-key", post(regenerate_api_key))
        .route("/api/applications/{app_id}/regenerate-secret", post(regenerate_secret))
}

/// How long a soft-deleted app can be restored, in milliseconds (30 days); after that it is
/// purged.
pub const RESTORE_WINDOW_MS: i64 = 30 * 24 * 3600 * 1000;

/// Length of generated app secrets.
const SECRET_LEN: usize = 48;
/// Longest accepted `grace_seconds` on key rotation: one week.
const MAX_GRACE_S: u64 = 7 * 24 * 3600;

/// An app as the API shows it: never its secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct AppView {
    pub app_id: String,
    pub name: String,
    /// `enabled` or `disabled`.
    pub status: String,
    pub allowed_domains: Vec<String>,
    /// HTTP requests per minute for the app's keys.
    pub rate_limit: u32,
    pub max_connections: u32,
    pub client_events: bool,
    /// Whether Pusher clients (pusher-js, Laravel Echo) may connect to `/app/{app_id}`.
    pub pusher_clients: bool,
    pub created_at: String,
    pub updated_at: String,
    pub deleted_at: Option<String>,
    /// What the app's rooms keep for recovery (the configured defaults unless set).
    pub history: Retention,
}

impl AppView {
    /// The view of `app`, its history settings resolved against `defaults`.
    pub fn new(app: &AppRecord, defaults: &HistoryConfig) -> Self {
        Self {
            app_id: app.app_id.clone(),
            name: app.name.clone(),
            status: app.status.as_str().to_owned(),
            allowed_domains: app.allowed_domains.clone(),
            rate_limit: app.rate_limit,
            max_connections: app.max_connections,
            client_events: app.client_events,
            pusher_clients: app.pusher_clients,
            created_at: iso8601(app.created_at),
            updated_at: iso8601(app.updated_at),
            deleted_at: app.deleted_at.map(iso8601),
            history: retention(app, defaults),
        }
    }
}

/// An app's history retention: its own, else the configured defaults.
pub fn retention(app: &AppRecord, defaults: &HistoryConfig) -> Retention {
    app.history.unwrap_or(Retention { size: defaults.size, ttl_s: defaults.ttl_s })
}

/// `history` in an app's settings: either field may be left out (it keeps its value).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HistoryInput {
    /// Events each room keeps (0 turns history off; at most `history.max_size`, 10,000 by default).
    #[serde(default, deserialize_with = "opt_int")]
    #[schema(minimum = 0)]
    pub size: Option<u32>,
    /// Seconds each event is kept (1 to `history.max_ttl_s`, 86,400 by default).
    #[serde(default, deserialize_with = "opt_int")]
    #[schema(minimum = 1)]
    pub ttl_s: Option<u32>,
}

/// An `allowed_domains` entry: a host name, or `*.` and a host name for its subdomains.
#[derive(Debug, ToSchema)]
#[schema(pattern = r"^(\*\.)?[A-Za-z0-9-]{1,63}(\.[A-Za-z0-9-]{1,63})*$", max_length = 255)]
pub struct DomainPattern(#[allow(dead_code, reason = "describes the schema only")] String);

/// `status` as a word or as the seed API's boolean.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum StatusInput {
    Flag(bool),
    Word(String),
}

/// How `status` is documented: what [`StatusInput`] accepts.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code, reason = "describes the schema only")]
pub enum StatusSchema {
    Flag(bool),
    Word(StatusWord),
}

/// `enabled` or `disabled`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code, reason = "describes the schema only")]
pub enum StatusWord {
    Enabled,
    Disabled,
}

impl StatusInput {
    fn parse(&self) -> Result<AppStatus, ApiError> {
        match self {
            StatusInput::Flag(true) => Ok(AppStatus::Enabled),
            StatusInput::Flag(false) => Ok(AppStatus::Disabled),
            StatusInput::Word(w) if w == "enabled" => Ok(AppStatus::Enabled),
            StatusInput::Word(w) if w == "disabled" => Ok(AppStatus::Disabled),
            StatusInput::Word(_) => {
                Err(ApiError::field("status", "must be \"enabled\", \"disabled\", true or false"))
            }
        }
    }
}

/// An app's settings: the body of `PUT /api/applications/{app_id}`, and with `app_id` the body of
/// `POST /api/applications`. Every field is optional; unknown fields (an `app_id` on `PUT`, since
/// ids never change) are ignored.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(default)]
pub struct AppSettings {
    /// Display name; on create it defaults to the `app_id`.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub name: Option<String>,
    /// Origin allow-list (host names, `*.example.com`); empty allows any origin.
    #[schema(value_type = Option<Vec<DomainPattern>>)]
    pub allowed_domains: Option<Vec<String>>,
    /// A single domain, replacing the list with `[value]`.
    #[schema(value_type = Option<DomainPattern>)]
    pub allowed_domain: Option<String>,
    /// HTTP requests per minute for the app's keys (1–1000000, default 1000).
    #[serde(deserialize_with = "opt_int")]
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub rate_limit: Option<u32>,
    /// Concurrent WebSocket connections.
    #[serde(deserialize_with = "opt_int")]
    #[schema(minimum = 0, maximum = 2_147_483_647)]
    pub max_connections: Option<u32>,
    /// Whether clients may publish (their tokens need `can_publish` too).
    pub client_events: Option<bool>,
    /// Whether Pusher clients may connect to `/app/{app_id}` (default false): anyone who knows
    /// the app id may then read its public channels, as on Pusher.
    pub pusher_clients: Option<bool>,
    #[schema(value_type = Option<StatusSchema>)]
    pub status: Option<StatusInput>,
    /// Room history for recovery (DESIGN §11).
    pub history: Option<HistoryInput>,
}

/// Body of `POST /api/applications` (documentation only: the handler reads `app_id` and then the
/// settings from the same object, so errors name fields by their plain path).
#[derive(Debug, ToSchema)]
#[allow(dead_code, reason = "describes the schema only")]
pub struct CreateApp {
    /// Slug `[a-z0-9][a-z0-9-]{2,63}`; generated when absent.
    #[schema(pattern = "^[a-z0-9][a-z0-9-]{2,63}$")]
    app_id: Option<String>,
    #[serde(flatten)]
    settings: AppSettings,
}

impl AppSettings {
    /// Checks every given field, then applies them all to `app`; on error `app` is unchanged.
    fn apply(self, app: &mut AppRecord, caps: &HistoryConfig) -> Result<(), ApiError> {
        if let Some(name) = &self.name {
            check_name(name)?;
        }
        // Both domain forms are checked even when `allowed_domain` wins: bad input is never
        // silently ignored.
        if let Some(list) = &self.allowed_domains {
            check_domains(list)?;
        }
        if let Some(one) = &self.allowed_domain {
            check_domains(std::slice::from_ref(one))?;
        }
        if let Some(rate_limit) = self.rate_limit {
            check_rate_limit(rate_limit)?;
        }
        if self.max_connections.is_some_and(|m| m > i32::MAX as u32) {
            return Err(ApiError::field("max_connections", "must be between 0 and 2147483647"));
        }
        let status = self.status.as_ref().map(StatusInput::parse).transpose()?;
        let history = match &self.history {
            Some(h) => {
                let current = retention(app, caps);
                let next = Retention {
                    size: h.size.unwrap_or(current.size),
                    ttl_s: h.ttl_s.unwrap_or(current.ttl_s),
                };
                if next.size > caps.max_size {
                    return Err(ApiError::field(
                        "history.size",
                        format!("must be between 0 and {}", caps.max_size),
                    ));
                }
                if next.ttl_s == 0 || next.ttl_s > caps.max_ttl_s {
                    return Err(ApiError::field(
                        "history.ttl_s",
                        format!("must be between 1 and {}", caps.max_ttl_s),
                    ));
                }
                Some(next)
            }
            None => None,
        };

        if let Some(name) = self.name {
            app.name = name;
        }
        if let Some(one) = self.allowed_domain {
            app.allowed_domains = lower_domains(vec![one]);
        } else if let Some(list) = self.allowed_domains {
            app.allowed_domains = lower_domains(list);
        }
        if let Some(rate_limit) = self.rate_limit {
            app.rate_limit = rate_limit;
        }
        if let Some(max) = self.max_connections {
            app.max_connections = max;
        }
        if let Some(flag) = self.client_events {
            app.client_events = flag;
        }
        if let Some(flag) = self.pusher_clients {
            app.pusher_clients = flag;
        }
        if let Some(status) = status {
            app.status = status;
        }
        if history.is_some() {
            app.history = history;
        }
        Ok(())
    }
}

/// `{"success", "app"}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AppResponse {
    pub success: bool,
    pub app: AppView,
}

/// `{"success", "app", "app_secret", "api_key"}`: the secret and key are shown only here.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedApp {
    pub success: bool,
    pub app: AppView,
    pub app_secret: String,
    pub api_key: String,
}

/// `{"success", "applications", "next_cursor"}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AppList {
    pub success: bool,
    pub applications: Vec<AppView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// Paging of `GET /api/applications`.
#[derive(Debug, Deserialize, IntoParams)]
pub struct ListParams {
    /// 1–100, default 20.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Admins only: list soft-deleted apps too.
    pub include_deleted: Option<bool>,
}

/// Body of `regenerate-api-key`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(default)]
pub struct RegenerateKey {
    /// Seconds the old key keeps working (0–604800, default 0).
    #[serde(deserialize_with = "opt_int")]
    #[schema(minimum = 0, maximum = 604_800)]
    pub grace_seconds: Option<u64>,
}

/// `{"success", "api_key", "key"}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RegeneratedKey {
    pub success: bool,
    /// The new primary key, shown once.
    pub api_key: String,
    pub key: KeyView,
}

/// `{"success", "app_secret"}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RegeneratedSecret {
    pub success: bool,
    /// The new secret, shown once. Tokens signed with the old one stop working.
    pub app_secret: String,
}

/// Empty body accepted by routes whose body is optional.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct Empty {}

fn check_domains(domains: &[String]) -> Result<(), ApiError> {
    for (i, d) in domains.iter().enumerate() {
        let host = d.strip_prefix("*.").unwrap_or(d);
        let valid = !host.is_empty()
            && d.len() <= 255
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !valid {
            return Err(ApiError::field(
                &format!("allowed_domains[{i}]"),
                "must be a host name such as example.com or *.example.com",
            ));
        }
    }
    Ok(())
}

fn check_name(name: &str) -> Result<(), ApiError> {
    if name.trim().is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(ApiError::field("name", "must be 1 to 200 characters without control characters"));
    }
    Ok(())
}

fn check_rate_limit(rate_limit: u32) -> Result<(), ApiError> {
    if rate_limit == 0 || rate_limit > 1_000_000 {
        return Err(ApiError::field("rate_limit", "must be between 1 and 1000000 requests per minute"));
    }
    Ok(())
}

fn lower_domains(domains: Vec<String>) -> Vec<String> {
    domains.into_iter().map(|d| d.trim().to_ascii_lowercase()).collect()
}

/// A fresh primary key record for `app_id` with every app-level scope.
pub fn new_primary_key(app_id: &str, now: i64) -> (PresentedKey, KeyRecord) {
    let key = PresentedKey::generate(KeyKind::App);
    let record = KeyRecord {
        key_id: key.key_id.clone(),
        kind: KeyKind::App,
        app_id: Some(app_id.to_owned()),
        name: "primary".into(),
        scopes: Scope::APP_LEVEL.iter().map(|s| s.as_str().to_owned()).collect(),
        secret_hash: key.secret_hash(),
        primary: true,
        created_at: now,
        expires_at: None,
        last_used_at: None,
        revoked_at: None,
    };
    (key, record)
}

/// The app the caller may act on, refusing other tenants and unknown or deleted apps.
pub(super) async fn visible_app(
    state: &AppState,
    principal: &Principal,
    app_id: &str,
) -> Result<std::sync::Arc<AppRecord>, ApiError> {
    state.live_app(&principal.target_app(Some(app_id))?).await
}

#[utoipa::path(post, path = "/api/applications", tag = "applications", request_body = Option<CreateApp>,
    responses((status = 201, body = CreatedApp), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 415, body = ErrorBody)),
    security(("api_key" = [])))]
async fn create_app(
    State(state): State<AppState>,
    call: Authed<serde_json::Map<String, serde_json::Value>>,
) -> Result<impl IntoResponse, ApiError> {
    call.principal.require_admin()?;
    let _writes = state.apps.writing().await;
    let mut body = call.body;
    let app_id = match body.remove("app_id") {
        Some(serde_json::Value::String(id)) => {
            check_app_id(&id).map_err(|e| ApiError::field("app_id", e))?;
            id
        }
        None | Some(serde_json::Value::Null) => generate_app_id(),
        Some(_) => return Err(ApiError::field("app_id", "must be a string")),
    };
    let settings: AppSettings = from_value(serde_json::Value::Object(body))?;
    let now = now_ms();
    let mut app = AppRecord {
        app_id: app_id.clone(),
        name: app_id.clone(),
        secret: random_base62(SECRET_LEN),
        status: AppStatus::Enabled,
        allowed_domains: Vec::new(),
        rate_limit: state.config.apps.default_rate_limit,
        max_connections: state.config.apps.default_max_connections,
        client_events: false,
        pusher_clients: false,
        created_at: now,
        updated_at: now,
        deleted_at: None,
        history: None,
    };
    settings.apply(&mut app, &state.config.history)?;
    let (key, record) = new_primary_key(&app_id, now);
    let view = AppView::new(&app, &state.config.history);
    let secret = app.secret.clone();
    state.apps.create(app, record).await.map_err(|e| match e {
        crate::store::StoreError::Conflict => {
            ApiError::Conflict(format!("app_id {app_id:?} is already taken"))
        }
        other => other.into(),
    })?;
    Ok((
        StatusCode::CREATED,
        axum::Json(CreatedApp { success: true, app: view, app_secret: secret, api_key: key.plaintext() }),
    ))
}

#[utoipa::path(get, path = "/api/applications", tag = "applications", params(ListParams),
    responses((status = 200, body = AppList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("api_key" = [])))]
async fn list_apps(
    State(state): State<AppState>,
    principal: Principal,
    Query(params): Query<ListParams>,
) -> Result<axum::Json<AppList>, ApiError> {
    let limit = params.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::field("limit", "must be between 1 and 100"));
    }
    if let Some(cursor) = &params.cursor
        && check_app_id(cursor).is_err()
    {
        return Err(ApiError::field("cursor", "is not a next_cursor of this list"));
    }
    if let Some(own) = &principal.app_id {
        principal.require(Scope::AppsRead)?;
        let applications =
            state.app(own).await?.iter().map(|a| AppView::new(a, &state.config.history)).collect();
        return Ok(axum::Json(AppList { success: true, applications, next_cursor: None }));
    }
    let (apps, more) =
        state.apps.cache().page(params.cursor.as_deref(), limit, params.include_deleted.unwrap_or(false));
    let next_cursor = if more { apps.last().map(|a| a.app_id.clone()) } else { None };
    let applications = apps.iter().map(|a| AppView::new(a, &state.config.history)).collect();
    Ok(axum::Json(AppList { success: true, applications, next_cursor }))
}

#[utoipa::path(get, path = "/api/applications/{app_id}", tag = "applications",
    params(("app_id" = String, Path, description = "the app"), ShowParams),
    responses((status = 200, body = AppResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
async fn get_app(
    State(state): State<AppState>,
    principal: Principal,
    Path(app_id): Path<String>,
    Query(params): Query<ShowParams>,
) -> Result<axum::Json<AppResponse>, ApiError> {
    principal.require(Scope::AppsRead)?;
    if params.include_deleted == Some(true) && principal.require_admin().is_ok() {
        let app =
            state.app(&app_id).await?.ok_or_else(|| ApiError::NotFound(format!("no app {app_id:?}")))?;
        return Ok(axum::Json(AppResponse { success: true, app: AppView::new(&app, &state.config.history) }));
    }
    let app = visible_app(&state, &principal, &app_id).await?;
    Ok(axum::Json(AppResponse { success: true, app: AppView::new(&app, &state.config.history) }))
}

/// Options of `GET /api/applications/{app_id}`.
#[derive(Debug, Deserialize, IntoParams)]
pub struct ShowParams {
    /// Admins only: show the app even when it is soft-deleted.
    pub include_deleted: Option<bool>,
}

#[utoipa::path(delete, path = "/api/applications/{app_id}", tag = "applications",
    params(("app_id" = String, Path, description = "the app")),
    responses((status = 200, body = AppResponse), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
async fn delete_app(
    State(state): State<AppState>,
    principal: Principal,
    Path(app_id): Path<String>,
) -> Result<axum::Json<AppResponse>, ApiError> {
    principal.require_admin()?;
    let _writes = state.apps.writing().await;
    let current = visible_app(&state, &principal, &app_id).await?;
    let app = state.apps.delete(&current).await?;
    let view = AppView::new(&app, &state.config.history);
    tracing::info!(app_id, "app soft-deleted; restorable for 30 days");
    Ok(axum::Json(AppResponse { success: true, app: view }))
}

#[utoipa::path(post, path = "/api/applications/{app_id}/restore", tag = "applications",
    params(("app_id" = String, Path, description = "the app")),
    responses((status = 200, body = AppResponse), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
async fn restore_app(
    State(state): State<AppState>,
    principal: Principal,
    Path(app_id): Path<String>,
) -> Result<axum::Json<AppResponse>, ApiError> {
    principal.require_admin()?;
    let _writes = state.apps.writing().await;
    let app =
        state.apps.restore(&app_id).await?.ok_or_else(|| {
            ApiError::NotFound(format!("no deleted app {app_id:?} within the 30-day window"))
        })?;
    let view = AppView::new(&app, &state.config.history);
    Ok(axum::Json(AppResponse { success: true, app: view }))
}

#[utoipa::path(put, path = "/api/applications/{app_id}", tag = "applications", request_body = Option<AppSettings>,
    params(("app_id" = String, Path, description = "the app")),
    responses((status = 200, body = AppResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 415, body = ErrorBody)),
    security(("api_key" = [])))]
async fn update_app(
    State(state): State<AppState>,
    Path(app_id): Path<String>,
    call: Authed<AppSettings>,
) -> Result<axum::Json<AppResponse>, ApiError> {
    call.principal.require(Scope::AppsWrite)?;
    let _writes = state.apps.writing().await;
    let current = visible_app(&state, &call.principal, &app_id).await?;
    let app = state.apps.update(&current, |app| call.body.apply(app, &state.config.history)).await?;
    let view = AppView::new(&app, &state.config.history);
    Ok(axum::Json(AppResponse { success: true, app: view }))
}

#[utoipa::path(post, path = "/api/applications/{app_id}/regenerate-api-key", tag = "applications",
    request_body = Option<RegenerateKey>,
    params(("app_id" = String, Path, description = "the app")),
    responses((status = 200, body = RegeneratedKey), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
async fn regenerate_api_key(
    State(state): State<AppState>,
    Path(app_id): Path<String>,
    call: Authed<RegenerateKey>,
) -> Result<axum::Json<RegeneratedKey>, ApiError> {
    call.principal.require(Scope::KeysWrite)?;
    let _writes = state.apps.writing().await;
    let app = visible_app(&state, &call.principal, &app_id).await?;
    let grace = call.body.grace_seconds.unwrap_or(0);
    if grace > MAX_GRACE_S {
        return Err(ApiError::field("grace_seconds", format!("must be between 0 and {MAX_GRACE_S}")));
    }
    let now = now_ms();
    let mut changed: Vec<KeyRecord> = state
        .auth
        .keys
        .of_app(&app.app_id)
        .into_iter()
        .filter(|k| k.record.primary && k.record.revoked_at.is_none())
        .map(|k| {
            let mut old = k.record.clone();
            old.primary = false;
            if grace == 0 {
                old.revoked_at = Some(now);
            } else {
                let until = now + (grace as i64) * 1000;
                old.expires_at = Some(old.expires_at.map_or(until, |e| e.min(until)));
            }
            old
        })
        .collect();
    let (key, record) = new_primary_key(&app.app_id, now);
    changed.push(record.clone());
    state.apps.save_keys(changed).await?;
    let view = state
        .auth
        .keys
        .get(&record.key_id)
        .map(|k| KeyView::from(&*k))
        .ok_or_else(|| ApiError::Internal("new key missing from cache".into()))?;
    tracing::info!(app_id = %app.app_id, grace, "primary API key regenerated");
    Ok(axum::Json(RegeneratedKey { success: true, api_key: key.plaintext(), key: view }))
}

#[utoipa::path(post, path = "/api/applications/{app_id}/regenerate-secret", tag = "applications",
    params(("app_id" = String, Path, description = "the app")),
    responses((status = 200, body = RegeneratedSecret), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
async fn regenerate_secret(
    State(state): State<AppState>,
    Path(app_id): Path<String>,
    call: Authed<Empty>,
) -> Result<axum::Json<RegeneratedSecret>, ApiError> {
    call.principal.require(Scope::KeysWrite)?;
    let _writes = state.apps.writing().await;
    let current = visible_app(&state, &call.principal, &app_id).await?;
    let app = state
        .apps
        .update(&current, |app| {
            app.secret = random_base62(SECRET_LEN);
            Ok::<_, ApiError>(())
        })
        .await?;
    let secret = app.secret;
    tracing::info!(app_id, "app secret regenerated");
    Ok(axum::Json(RegeneratedSecret { success: true, app_secret: secret }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains() {
        check_domains(&["example.com".into(), "*.example.com".into(), "localhost".into()]).unwrap();
        for bad in ["", "*.", "http://x.com", "a..b", "ex ample.com", "a/b"] {
            assert!(check_domains(&[bad.into()]).is_err(), "{bad}");
        }
    }
}

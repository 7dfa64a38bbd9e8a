//! API key introspection (`GET /api/test`) and the key view shared by key routes.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{delete, get};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::extract::{Authed, Principal, opt_int};
use super::{AppState, iso8601};
use crate::auth::api_key::{CachedKey, PresentedKey, Scope, key_prefix};
use crate::clock::now_ms;
use crate::store::{KeyKind, KeyRecord};

/// Routes of this area.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/test", get(test_key))
        .route("/api/applications/{app_id}/keys", get(list_keys).post(create_key))
        .route("/api/applications/{app_id}/keys/{key_id}", delete(revoke_key))
}

/// Longest key lifetime, in seconds: ten years.
const MAX_KEY_TTL_S: u64 = 10 * 365 * 24 * 3600;

/// Body of `POST /api/applications/{app_id}/keys`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(default)]
pub struct CreateKey {
    /// A label for listings.
    #[schema(min_length = 1, max_length = 200)]
    pub name: Option<String>,
    /// App-level scopes such as `broadcast:write` (at least one; never `admin:full`).
    #[schema(min_items = 1)]
    pub scopes: Vec<String>,
    /// Seconds until the key expires (60 up to ten years); never when absent.
    #[serde(deserialize_with = "opt_int")]
    #[schema(minimum = 60, maximum = 315_360_000)]
    pub expires_in: Option<u64>,
}

/// `{"success", "key", "api_key"}`: the plaintext is shown only here.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedKey {
    pub success: bool,
    pub key: KeyView,
    pub api_key: String,
}

/// `{"success", "keys"}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyList {
    pub success: bool,
    pub keys: Vec<KeyView>,
}

/// `{"success"}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Done {
    pub success: bool,
}

/// The caller's target app for key management, which must exist.
async fn key_app(state: &AppState, principal: &Principal, app_id: &str) -> Result<String, ApiError> {
    principal.require(Scope::KeysWrite)?;
    super::apps::visible_app(state, principal, app_id).await.map(|a| a.app_id.clone())
}

#[utoipa::path(get, path = "/api/applications/{app_id}/keys", tag = "keys",
    params(("app_id" = String, Path, description = "the app")),
    responses((status = 200, body = KeyList), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
async fn list_keys(
    State(state): State<AppState>,
    principal: Principal,
    Path(app_id): Path<String>,
) -> Result<axum::Json<KeyList>, ApiError> {
    let app_id = key_app(&state, &principal, &app_id).await?;
    let keys = state
        .auth
        .keys
        .of_app(&app_id)
        .iter()
        .filter(|k| k.record.revoked_at.is_none())
        .map(|k| KeyView::from(&**k))
        .collect();
    Ok(axum::Json(KeyList { success: true, keys }))
}

#[utoipa::path(post, path = "/api/applications/{app_id}/keys", tag = "keys", request_body = CreateKey,
    params(("app_id" = String, Path, description = "the app")),
    responses((status = 201, body = CreatedKey), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 415, body = ErrorBody)),
    security(("api_key" = [])))]
async fn create_key(
    State(state): State<AppState>,
    Path(app_id): Path<String>,
    call: Authed<CreateKey>,
) -> Result<impl IntoResponse, ApiError> {
    let app_id = key_app(&state, &call.principal, &app_id).await?;
    let body = call.body;
    let name = body.name.unwrap_or_else(|| "key".to_owned());
    if name.trim().is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(ApiError::field("name", "must be 1 to 200 characters without control characters"));
    }
    if body.scopes.is_empty() {
        return Err(ApiError::field("scopes", "must name at least one scope"));
    }
    let mut scopes = Vec::with_capacity(body.scopes.len());
    for (i, s) in body.scopes.iter().enumerate() {
        match Scope::parse(s) {
            Some(Scope::AdminFull) | None => {
                return Err(ApiError::field(
                    &format!("scopes[{i}]"),
                    format!("{s:?} is not an app-level scope"),
                ));
            }
            Some(scope) if !scopes.contains(&scope) => scopes.push(scope),
            Some(_) => {}
        }
    }
    if body.expires_in.is_some_and(|t| !(60..=MAX_KEY_TTL_S).contains(&t)) {
        return Err(ApiError::field("expires_in", format!("must be between 60 and {MAX_KEY_TTL_S} seconds")));
    }
    let now = now_ms();
    let key = PresentedKey::generate(KeyKind::App);
    let record = KeyRecord {
        key_id: key.key_id.clone(),
        kind: KeyKind::App,
        app_id: Some(app_id),
        name,
        scopes: scopes.iter().map(|s| s.as_str().to_owned()).collect(),
        secret_hash: key.secret_hash(),
        primary: false,
        created_at: now,
        expires_at: body.expires_in.map(|t| now + t as i64 * 1000),
        last_used_at: None,
        revoked_at: None,
    };
    let _writes = state.apps.writing().await;
    let view = CachedKey::new(record.clone()).map(|k| KeyView::from(&k));
    state.apps.insert_key(record).await?;
    let view = view.ok_or_else(|| ApiError::Internal("new key has a malformed hash".into()))?;
    Ok((StatusCode::CREATED, axum::Json(CreatedKey { success: true, key: view, api_key: key.plaintext() })))
}

#[utoipa::path(delete, path = "/api/applications/{app_id}/keys/{key_id}", tag = "keys",
    params(("app_id" = String, Path, description = "the app"), ("key_id" = String, Path, description = "the key")),
    responses((status = 200, body = Done), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
async fn revoke_key(
    State(state): State<AppState>,
    principal: Principal,
    Path((app_id, key_id)): Path<(String, String)>,
) -> Result<axum::Json<Done>, ApiError> {
    let app_id = key_app(&state, &principal, &app_id).await?;
    let _writes = state.apps.writing().await;
    let key = state
        .auth
        .keys
        .get(&key_id)
        .filter(|k| k.record.app_id.as_deref() == Some(app_id.as_str()) && k.record.revoked_at.is_none())
        .ok_or_else(|| ApiError::NotFound(format!("no key {key_id:?} in app {app_id:?}")))?;
    let mut record = key.record.clone();
    record.revoked_at = Some(now_ms());
    state.apps.save_keys(vec![record]).await?;
    tracing::info!(app_id, key_id, "API key revoked");
    Ok(axum::Json(Done { success: true }))
}

/// A key as listings show it: never its secret or hash.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyView {
    pub key_id: String,
    /// `rc_app_<key_id>` or `rc_admin_<key_id>`.
    pub key_prefix: String,
    /// `app` or `admin`.
    pub kind: String,
    pub app_id: Option<String>,
    pub name: String,
    pub scopes: Vec<String>,
    /// The app's primary key, replaced by `regenerate-api-key`.
    pub primary: bool,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub last_used_at: Option<String>,
}

impl From<&CachedKey> for KeyView {
    fn from(k: &CachedKey) -> Self {
        let r = &k.record;
        Self {
            key_id: r.key_id.clone(),
            key_prefix: key_prefix(r.kind, &r.key_id),
            kind: r.kind.as_str().to_owned(),
            app_id: r.app_id.clone(),
            name: r.name.clone(),
            scopes: r.scopes.clone(),
            primary: r.primary,
            created_at: iso8601(r.created_at),
            expires_at: r.expires_at.map(iso8601),
            last_used_at: k.last_used_at().map(iso8601),
        }
    }
}

/// What `GET /api/test` tells about the calling key.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyInfo {
    pub success: bool,
    pub message: String,
    /// `app` or `admin`.
    pub kind: String,
    pub key_prefix: String,
    /// `null` for admin keys.
    pub app_id: Option<String>,
    pub scopes: Vec<String>,
    pub expires_at: Option<String>,
}

#[utoipa::path(get, path = "/api/test", tag = "keys",
    responses((status = 200, body = KeyInfo), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("api_key" = [])))]
async fn test_key(
    State(_state): State<AppState>,
    principal: Principal,
) -> Result<axum::Json<KeyInfo>, ApiError> {
    let scopes = match principal.kind {
        crate::store::KeyKind::Admin => vec!["admin:full".to_owned()],
        crate::store::KeyKind::App => principal.scopes.iter().map(|s| s.as_str().to_owned()).collect(),
    };
    Ok(axum::Json(KeyInfo {
        success: true,
        message: "API key is valid".into(),
        kind: principal.kind.as_str().to_owned(),
        key_prefix: key_prefix(principal.kind, &principal.key_id),
        app_id: principal.app_id,
        scopes,
        expires_at: principal.expires_at.map(iso8601),
    }))
}

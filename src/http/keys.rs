//! API key introspection (`GET /api/test`) and the key view shared by key routes.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::extract::Principal;
use super::{AppState, iso8601};
use crate::auth::api_key::{CachedKey, key_prefix};

/// Routes of this area.
pub fn router() -> Router<AppState> {
    Router::new().route("/api/test", get(test_key))
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

//! `/dashboard` (DESIGN §14): the web console, served from the binary with every asset embedded,
//! and its sign-in. Signing in with an API key sets the `login_token` cookie, an HS256 JWT
//! signed with a server secret kept in the store (so it outlives restarts and is shared by
//! every node); the JWT names the key, never holds it. The console then calls the ordinary
//! JSON API with that cookie in place of a key ([`super::extract`] reads it), and every
//! state-changing call carries the session's CSRF token as `X-CSRF-Token`.

pub mod debug;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::AppState;
use super::error::ApiError;
use super::extract::{ClientIp, KeySource, Principal};
use crate::clock::now_ms;
use crate::domain::random_base62;
use crate::store::{Store, StoreError};

/// The session cookie's name.
pub const COOKIE: &str = "login_token";
/// A session's lifetime without and with "remember me".
const SHORT_S: i64 = 6 * 3600;
const LONG_S: i64 = 30 * 86_400;
/// The store's name for the cookie-signing secret.
const SECRET_NAME: &str = "dashboard_cookie";

const INDEX: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/style.css");
const ICON: &str = include_str!("assets/icon.svg");

/// What a page of the console may load: only this origin, no inline script.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// Routes of this area.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/dashboard", get(index))
        .route("/dashboard/", get(|| async { Redirect::permanent("/dashboard") }))
        .route("/dashboard/app.js", get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }))
        .route("/dashboard/style.css", get(|| async { asset("text/css; charset=utf-8", STYLE) }))
        .route("/dashboard/icon.svg", get(|| async { asset("image/svg+xml", ICON) }))
        .route("/dashboard/login", post(login))
        .route("/dashboard/logout", post(logout))
        .route("/dashboard/session", get(session))
        .route("/dashboard/debug", get(debug::stream))
}

fn security_headers() -> [(header::HeaderName, &'static str); 4] {
    [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
    ]
}

async fn index() -> Response {
    (security_headers(), [(header::CACHE_CONTROL, "no-cache")], axum::response::Html(INDEX)).into_response()
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (security_headers(), [(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body)
        .into_response()
}

/// What the `login_token` JWT says.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The session's id (revocation is by id).
    pub sid: String,
    /// The API key the session acts as.
    pub kid: String,
    /// The token state-changing requests must echo in `X-CSRF-Token`.
    pub csrf: String,
    pub iat: i64,
    pub exp: i64,
}

/// Issues and checks dashboard sessions.
pub struct Sessions {
    encoding: EncodingKey,
    decoding: DecodingKey,
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").finish_non_exhaustive()
    }
}

impl Sessions {
    /// Loads the cookie secret from the store, making it on the first start.
    pub async fn open(store: Arc<dyn Store>) -> Result<Self, StoreError> {
        let secret = store.server_secret(SECRET_NAME, &random_base62(64)).await?;
        Ok(Self {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            store,
        })
    }

    /// A new session for `key_id`: its JWT and claims.
    fn issue(&self, key_id: &str, remember: bool) -> Result<(String, Claims), ApiError> {
        let now = now_ms() / 1000;
        let claims = Claims {
            sid: random_base62(22),
            kid: key_id.to_owned(),
            csrf: random_base62(32),
            iat: now,
            exp: now + if remember { LONG_S } else { SHORT_S },
        };
        let jwt = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        Ok((jwt, claims))
    }

    /// The claims of a live session: signed by this server, unexpired and not ended.
    pub async fn check(&self, jwt: &str) -> Result<Claims, ApiError> {
        let ended = || ApiError::InvalidToken("the dashboard session has ended; sign in again".into());
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.required_spec_claims = ["exp".to_owned()].into();
        let claims =
            jsonwebtoken::decode::<Claims>(jwt, &self.decoding, &validation).map_err(|_| ended())?.claims;
        match self.store.session_revoked(&claims.sid).await {
            Ok(false) => Ok(claims),
            Ok(true) => Err(ended()),
            Err(e) => Err(ApiError::Unavailable(format!("dashboard sessions: {e}"))),
        }
    }

    async fn end(&self, claims: &Claims) -> Result<(), ApiError> {
        self.store
            .revoke_session(&claims.sid, claims.exp * 1000)
            .await
            .map_err(|e| ApiError::Unavailable(format!("dashboard sessions: {e}")))
    }
}

/// The `login_token` cookie's value, if the request has one.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|v| !v.is_empty())
}

/// Whether a method changes state (and so needs the CSRF token).
fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Equal, in time that does not depend on where they differ.
fn same(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// The caller of a request that carries a dashboard session instead of a key: `None` without the
/// cookie. A state-changing request without the session's `X-CSRF-Token` is 403; a session
/// whose key was revoked, expired or lost its app is refused as that key would be.
pub async fn session_principal(
    parts: &Parts,
    state: &AppState,
) -> Result<Option<(Principal, Claims)>, ApiError> {
    let Some(jwt) = session_cookie(&parts.headers) else { return Ok(None) };
    let claims = state.sessions.check(jwt).await?;
    if changes_state(&parts.method) {
        let given = parts.headers.get("x-csrf-token").and_then(|v| v.to_str().ok()).unwrap_or("");
        if !same(given, &claims.csrf) {
            return Err(ApiError::Forbidden(
                "missing or wrong X-CSRF-Token for this dashboard session".into(),
            ));
        }
    }
    let principal = state.key_principal(&claims.kid).await?;
    Ok(Some((principal, claims)))
}

/// Whether the request reached us over HTTPS: through a trusted proxy that says so.
fn over_https(parts: &Parts, state: &AppState) -> bool {
    let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let trusted =
        peer.is_some_and(|ip| state.config.server.trusted_proxies.iter().any(|net| net.contains(&ip)));
    trusted
        && parts
            .headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"))
}

fn cookie(value: &str, max_age: i64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let text = format!("{COOKIE}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}");
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("login_token=; Max-Age=0"))
}

/// Whether a browser's `Origin` (when it sent one) is this host.
fn same_origin(headers: &HeaderMap) -> bool {
    let text = |name| headers.get(name).and_then(|v: &HeaderValue| v.to_str().ok());
    match (text(header::ORIGIN), text(header::HOST)) {
        (None, _) => true,
        (Some(origin), Some(host)) => {
            origin.split_once("://").is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(host))
        }
        (Some(_), None) => false,
    }
}

/// `{"key", "remember"}` as JSON or as a form.
#[derive(Debug, Deserialize)]
struct Login {
    key: String,
    #[serde(default, deserialize_with = "flag")]
    remember: bool,
}

/// A boolean from JSON (`true`) or a form (`on`, `true`, `1`).
fn flag<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Flag {
        Bool(bool),
        Text(String),
    }
    Ok(match Flag::deserialize(d)? {
        Flag::Bool(b) => b,
        Flag::Text(t) => matches!(t.as_str(), "on" | "true" | "1" | "yes"),
    })
}

fn read_login(headers: &HeaderMap, body: &[u8]) -> Result<Login, ApiError> {
    let mime = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mime = mime.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match mime.as_str() {
        "application/x-www-form-urlencoded" => serde_urlencoded::from_bytes(body)
            .map_err(|e| ApiError::field("key", format!("the form is not valid: {e}"))),
        "application/json" => super::extract::parse_json(body),
        _ => Err(ApiError::UnsupportedMediaType),
    }
}

async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    slot: Option<axum::Extension<crate::limits::RateSlot>>,
    parts: Parts,
    body: Bytes,
) -> Result<Response, ApiError> {
    // Every attempt counts against the IP's bucket, as on /api/token: guessing keys is slow.
    AppState::charge_ip(&state.guards.limits.ips, ip, slot.as_deref())?;
    if !same_origin(&parts.headers) {
        // Another site's page posting a key of its own would sign this browser in as it.
        return Err(ApiError::Forbidden("sign-in from another origin".into()));
    }
    let login = read_login(&parts.headers, &body)?;
    if login.key.trim().is_empty() {
        return Err(ApiError::field("key", "is required"));
    }
    let principal = state.authenticate(KeySource::Bearer, login.key.trim()).await?;
    let (jwt, claims) = state.sessions.issue(&principal.key_id, login.remember)?;
    let max_age = claims.exp - claims.iat;
    let mut response = described(&principal, &claims);
    response.headers_mut().insert(header::SET_COOKIE, cookie(&jwt, max_age, over_https(&parts, &state)));
    Ok(response)
}

/// A session as the page learns it (from signing in, or after a reload): who it acts as, its
/// CSRF token and when it ends. Never cached.
fn described(p: &Principal, claims: &Claims) -> Response {
    let answer = json!({
        "success": true,
        "csrf_token": claims.csrf,
        "expires_at": super::iso8601(claims.exp * 1000),
        "key": {
            "kind": p.kind.as_str(),
            "key_id": p.key_id,
            "app_id": p.app_id,
            "scopes": p.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        },
    });
    ([(header::CACHE_CONTROL, "no-store")], axum::Json(answer)).into_response()
}

/// The request's live session, or 401 when it has none.
async fn signed_in(parts: &Parts, state: &AppState) -> Result<(Principal, Claims), ApiError> {
    session_principal(parts, state)
        .await?
        .ok_or_else(|| ApiError::InvalidToken("not signed in to the dashboard".into()))
}

async fn logout(State(state): State<AppState>, parts: Parts) -> Result<Response, ApiError> {
    let (_, claims) = signed_in(&parts, &state).await?;
    state.sessions.end(&claims).await?;
    let mut response = axum::Json(json!({ "success": true })).into_response();
    response.headers_mut().insert(header::SET_COOKIE, cookie("", 0, over_https(&parts, &state)));
    Ok(response)
}

/// The current session: who it acts as and its CSRF token (a page reload keeps the session).
async fn session(State(state): State<AppState>, parts: Parts) -> Result<Response, ApiError> {
    let (principal, claims) = signed_in(&parts, &state).await?;
    Ok(described(&principal, &claims))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_static("a=1; login_token=abc.def ; b=2"));
        assert_eq!(session_cookie(&headers), Some("abc.def"));
        headers.insert(header::COOKIE, HeaderValue::from_static("xlogin_token=1; login_token="));
        assert_eq!(session_cookie(&headers), None);
    }

    #[test]
    fn sign_in_is_taken_from_this_origin_or_a_program() {
        let headers = |pairs: &[(header::HeaderName, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(k, HeaderValue::from_static(v));
            }
            h
        };
        assert!(same_origin(&headers(&[(header::HOST, "127.0.0.1:8080")])));
        assert!(same_origin(&headers(&[(header::HOST, "hub:80"), (header::ORIGIN, "http://hub:80")])));
        assert!(!same_origin(&headers(&[
            (header::HOST, "hub:80"),
            (header::ORIGIN, "https://evil.example")
        ])));
        assert!(!same_origin(&headers(&[(header::HOST, "hub"), (header::ORIGIN, "null")])));
    }

    #[test]
    fn csrf_comparison_needs_equal_text() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "abcd"));
        assert!(!same("", "a"));
    }

    #[test]
    fn the_cookie_has_the_attributes_of_design_14() {
        let c = cookie("jwt", SHORT_S, false);
        assert_eq!(c.to_str().unwrap(), "login_token=jwt; Path=/; Max-Age=21600; HttpOnly; SameSite=Strict");
        assert!(
            cookie("jwt", LONG_S, true)
                .to_str()
                .unwrap()
                .ends_with("Max-Age=2592000; HttpOnly; SameSite=Strict; Secure")
        );
    }
}

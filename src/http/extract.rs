//! Extractors whose rejections are [`ApiError`]s: JSON bodies (naming the bad field), query
//! strings, and the calling API key as a [`Principal`].

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use std::net::IpAddr;

use axum::http::{HeaderMap, header};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::AppState;
use super::error::ApiError;
use crate::auth::api_key::Scope;
use crate::limits::RateSlot;
use crate::store::KeyKind;

/// Where a key was found, in the order they are looked at (DESIGN §2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    AdminHeader,
    AppHeader,
    LegacyHeader,
    Bearer,
    Query,
    Body,
}

/// The authenticated caller of an API route.
#[derive(Debug, Clone)]
pub struct Principal {
    pub kind: KeyKind,
    pub key_id: String,
    /// The app of an app key; `None` for admin keys.
    pub app_id: Option<String>,
    pub scopes: Vec<Scope>,
    pub expires_at: Option<i64>,
}

impl Principal {
    /// Passes when the key holds `scope` (or `admin:full`).
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.kind == KeyKind::Admin || self.scopes.iter().any(|s| *s == scope || *s == Scope::AdminFull) {
            Ok(())
        } else {
            Err(ApiError::InsufficientScope(scope))
        }
    }

    /// Passes for admin keys only.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self.kind {
            KeyKind::Admin => Ok(()),
            KeyKind::App => Err(ApiError::Forbidden("this route needs an admin key".into())),
        }
    }

    /// The app a call acts on: an app key's own (a different `requested` one is 403
    /// `forbidden`); for an admin key, `requested`, which is then required.
    pub fn target_app(&self, requested: Option<&str>) -> Result<String, ApiError> {
        match (&self.app_id, requested) {
            (Some(own), Some(requested)) if own != requested => {
                Err(ApiError::Forbidden("this key belongs to another app".into()))
            }
            (Some(own), _) => Ok(own.clone()),
            (None, Some(requested)) => Ok(requested.to_owned()),
            (None, None) => Err(ApiError::field("app_id", "is required with an admin key")),
        }
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

#[derive(Deserialize)]
struct KeyQuery {
    api_key: Option<String>,
}

/// The first key location that is present, from headers and query only.
pub fn find_key(parts: &Parts) -> Option<(KeySource, String)> {
    let headers = &parts.headers;
    if let Some(v) = header_str(headers, "x-admin-api-key") {
        return Some((KeySource::AdminHeader, v.to_owned()));
    }
    if let Some(v) = header_str(headers, "x-app-api-key") {
        return Some((KeySource::AppHeader, v.to_owned()));
    }
    if let Some(v) = header_str(headers, "x-api-key") {
        return Some((KeySource::LegacyHeader, v.to_owned()));
    }
    if let Some(v) = header_str(headers, header::AUTHORIZATION.as_str()) {
        let token = v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")).unwrap_or(v);
        return Some((KeySource::Bearer, token.trim().to_owned()));
    }
    let query = parts.uri.query()?;
    let parsed: KeyQuery = serde_urlencoded::from_str(query).ok()?;
    parsed.api_key.map(|k| (KeySource::Query, k))
}

/// The caller named by the headers or query (the first key location present, DESIGN §2.1),
/// or else by a dashboard session cookie; `None` when the request has neither.
async fn caller(parts: &Parts, state: &AppState) -> Result<Option<Principal>, ApiError> {
    match find_key(parts) {
        Some((source, key)) => state.authenticate(source, &key).await.map(Some),
        None => Ok(super::dashboard::session_principal(parts, state).await?.map(|(principal, _)| principal)),
    }
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let principal = caller(parts, state).await.and_then(|p| p.ok_or(ApiError::MissingApiKey));
        let principal = principal.map_err(|e| match e {
            ApiError::AppDeleted(app_id) if parts.uri.path().starts_with("/api/applications") => {
                ApiError::NotFound(format!("no app {app_id:?}"))
            }
            other => other,
        })?;
        if let (Some(caller), Some(app_id)) =
            (parts.extensions.get::<super::observe::CallerApp>(), &principal.app_id)
        {
            caller.set(app_id);
        }
        state.charge(&principal, parts.extensions.get::<RateSlot>())?;
        Ok(principal)
    }
}

/// Reads the body up to `limit` bytes; larger is 413.
async fn body_bytes(req: Request, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(req.into_body(), limit)
        .await
        .map_err(|_| ApiError::PayloadTooLarge(format!("request body is larger than {limit} bytes")))
}

fn check_json_content_type(headers: &HeaderMap, body: &[u8]) -> Result<(), ApiError> {
    if body.is_empty() {
        return Ok(());
    }
    let Some(ct) = header_str(headers, header::CONTENT_TYPE.as_str()) else {
        return Err(ApiError::UnsupportedMediaType);
    };
    let mime = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json")) {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType)
    }
}

/// Deserializes a body that must be a JSON object (empty or `null` counts as `{}`), naming the
/// path of any bad field.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    // JSON whitespace only: a form feed or vertical tab is not "empty", it is not JSON.
    let json_space = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r');
    let start = body.iter().position(|b| !json_space(b)).unwrap_or(body.len());
    let end = body.iter().rposition(|b| !json_space(b)).map_or(start, |i| i + 1);
    let trimmed = &body[start..end];
    let body: &[u8] = if trimmed.is_empty() || trimmed == b"null" { b"{}" } else { body };
    // serde would also build a struct from a positional array; the API speaks objects only.
    if body.iter().find(|b| !json_space(b)).is_none_or(|b| *b != b'{') {
        return Err(ApiError::InvalidRequest("body: must be a JSON object".into()));
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(body_error)?;
    de.end().map_err(|e| ApiError::InvalidRequest(format!("body: {e}")))?;
    Ok(value)
}

/// Deserializes an already parsed JSON value, naming the path of any bad field.
pub fn from_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(body_error)
}

/// A body that did not deserialize: 400 naming the field's path, or the body as a whole.
fn body_error(e: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = e.path().to_string();
    let inner = e.into_inner();
    if path == "." || path.is_empty() {
        ApiError::InvalidRequest(format!("body: {inner}"))
    } else {
        ApiError::field(&path, inner)
    }
}

/// A JSON body, with 413/415/400 answers in the API's error shape.
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let headers = req.headers().clone();
        let body = body_bytes(req, state.config.limits.max_body_bytes).await?;
        check_json_content_type(&headers, &body)?;
        parse_json(&body).map(Json)
    }
}

/// An authenticated call with a JSON body; the key may also come from the body's `api_key`.
#[derive(Debug)]
pub struct Authed<T> {
    pub principal: Principal,
    pub body: T,
}

#[derive(Deserialize)]
struct BodyKey {
    api_key: Option<String>,
}

impl<T: DeserializeOwned> FromRequest<AppState> for Authed<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let (parts, body) = req.into_parts();
        let req = Request::from_parts(parts.clone(), body);
        let bytes = body_bytes(req, state.config.limits.max_body_bytes).await?;
        let principal = match caller(&parts, state).await? {
            Some(principal) => principal,
            None => {
                check_json_content_type(&parts.headers, &bytes)?;
                let key = serde_json::from_slice::<BodyKey>(&bytes).ok().and_then(|b| b.api_key);
                let key = key.ok_or(ApiError::MissingApiKey)?;
                state.authenticate(KeySource::Body, &key).await?
            }
        };
        state.charge(&principal, parts.extensions.get::<RateSlot>())?;
        check_json_content_type(&parts.headers, &bytes)?;
        Ok(Authed { principal, body: parse_json(&bytes)? })
    }
}

/// A query string, with 400 naming the bad parameter.
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de).map(Query).map_err(|e| {
            let path = e.path().to_string();
            ApiError::field(&format!("query {path}"), e.into_inner())
        })
    }
}

/// `deserialize_with` for optional integer fields: accepts `5` and `5.0` (JSON Schema counts both
/// as integers), refuses fractions, negatives and values out of `T`'s range.
pub fn opt_int<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<u64>,
{
    use serde::de::Error;
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    let whole = n.as_u64().or_else(|| {
        n.as_f64().filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < u64::MAX as f64).map(|f| f as u64)
    });
    let whole = whole.ok_or_else(|| D::Error::custom(format!("must be a non-negative integer, got {n}")))?;
    T::try_from(whole).map(Some).map_err(|_| D::Error::custom(format!("{whole} is out of range")))
}

/// The client's address: the socket peer, or, when the peer is a trusted proxy
/// (`server.trusted_proxies`), what it put in `X-Forwarded-For`.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub Option<IpAddr>);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let peer = parts.extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>();
        Ok(ClientIp(peer.map(|c| client_ip(c.0.ip(), &parts.headers, &state.config.server.trusted_proxies))))
    }
}

/// Most `X-Forwarded-For` entries looked at; a longer chain is cut at the proxy this far in.
const MAX_FORWARDED_HOPS: usize = 32;

/// Resolves the client behind a chain of proxies: walking `X-Forwarded-For` from the right (the
/// entry the nearest proxy wrote), each address in `trusted` is a further proxy and the first
/// one that is not is the client. Entries left of it were written by the client itself and are
/// never believed. An unreadable entry ends the walk at the proxy that passed it on.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[ipnet::IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    let mut client = peer;
    for entry in entries.iter().rev().take(MAX_FORWARDED_HOPS) {
        let Some(ip) = parse_forwarded(entry) else { break };
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    client
}

/// One `X-Forwarded-For` entry: `1.2.3.4`, `1.2.3.4:5678`, `::1` or `[::1]:5678`.
fn parse_forwarded(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    if let Ok(ip) = entry.parse() {
        return Some(ip);
    }
    if let Some(rest) = entry.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    entry.parse::<std::net::SocketAddr>().ok().map(|s| s.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(peer: &str, xff: &[&str], trusted: &[&str]) -> String {
        let mut headers = HeaderMap::new();
        for v in xff {
            headers.append("x-forwarded-for", v.parse().unwrap());
        }
        let trusted: Vec<ipnet::IpNet> = trusted.iter().map(|t| t.parse().unwrap()).collect();
        client_ip(peer.parse().unwrap(), &headers, &trusted).to_string()
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let proxies = ["10.0.0.0/8", "127.0.0.1/32"];
        // An untrusted peer's header is ignored.
        assert_eq!(resolve("203.0.113.9", &["198.51.100.1"], &proxies), "203.0.113.9");
        // A trusted peer: the right-most untrusted entry is the client; entries the client
        // wrote itself (left of it) are not.
        assert_eq!(resolve("10.0.0.2", &["6.6.6.6, 198.51.100.1"], &proxies), "198.51.100.1");
        assert_eq!(resolve("10.0.0.2", &["6.6.6.6, 198.51.100.1, 10.0.0.7"], &proxies), "198.51.100.1");
        // Several header lines are one list.
        assert_eq!(resolve("127.0.0.1", &["6.6.6.6", "198.51.100.1"], &proxies), "198.51.100.1");
        // Ports and brackets.
        assert_eq!(resolve("127.0.0.1", &["198.51.100.1:4433"], &proxies), "198.51.100.1");
        assert_eq!(resolve("127.0.0.1", &["[2001:db8::1]:80"], &proxies), "2001:db8::1");
        // Garbage ends the walk at the proxy that passed it on.
        assert_eq!(resolve("10.0.0.2", &["198.51.100.1, not-an-ip, 10.0.0.7"], &proxies), "10.0.0.7");
        // No header, or nothing trusted configured: the peer.
        assert_eq!(resolve("127.0.0.1", &[], &proxies), "127.0.0.1");
        assert_eq!(resolve("127.0.0.1", &["198.51.100.1"], &[]), "127.0.0.1");
        // Only proxies in the chain: the left-most of them.
        assert_eq!(resolve("10.0.0.2", &["10.0.0.3"], &proxies), "10.0.0.3");
    }
}

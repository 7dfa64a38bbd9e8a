//! Client JWTs (DESIGN §3): HS256, signed with the app's secret, so a backend may mint them
//! itself with any JWT library.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::protocol::{RoomGrants, RoomPattern};

/// Claims the hub sets itself; a `payload` may not carry them.
pub const RESERVED_CLAIMS: [&str; 4] = ["app_id", "iat", "exp", "sub"];

/// Why a token could not be minted or was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// A payload field is wrong; `field` is its path, such as `payload.rooms`.
    #[error("{field}: {message}")]
    InvalidPayload { field: String, message: String },
    /// Bad signature, wrong algorithm, expired, malformed, or unknown app.
    #[error("{0}")]
    Invalid(String),
}

/// Who a verified token speaks for, and what it allows.
#[derive(Debug, Clone)]
pub struct Identity {
    pub app_id: String,
    pub user_id: Option<String>,
    pub user_info: Option<Value>,
    pub grants: RoomGrants,
    pub can_publish: bool,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
}

/// Checks the fields with meaning, and refuses reserved claims.
pub fn check_payload(payload: &Map<String, Value>) -> Result<(), TokenError> {
    let bad = |field: &str, message: &str| TokenError::InvalidPayload {
        field: format!("payload.{field}"),
        message: message.to_owned(),
    };
    if let Some(claim) = RESERVED_CLAIMS.iter().find(|c| payload.contains_key(**c)) {
        return Err(bad(claim, "is a reserved claim and cannot be set"));
    }
    match payload.get("user_id") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 200 => {}
        Some(_) => return Err(bad("user_id", "must be a string of 1 to 200 characters")),
    }
    match payload.get("user_info") {
        None | Some(Value::Null) | Some(Value::Object(_)) => {}
        Some(_) => return Err(bad("user_info", "must be an object")),
    }
    match payload.get("can_publish") {
        None | Some(Value::Null) | Some(Value::Bool(_)) => {}
        Some(_) => return Err(bad("can_publish", "must be a boolean")),
    }
    match payload.get("rooms") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let Value::String(s) = item else {
                    return Err(bad(&format!("rooms[{i}]"), "must be a string"));
                };
                RoomPattern::parse(s).map_err(|e| bad(&format!("rooms[{i}]"), &e))?;
            }
        }
        Some(_) => return Err(bad("rooms", "must be a list of room patterns")),
    }
    Ok(())
}

/// Signs a token for `app_id` valid from `now_s` for `ttl_s` seconds. `payload` must have passed
/// [`check_payload`].
pub fn mint(app_id: &str, secret: &str, payload: &Map<String, Value>, now_s: i64, ttl_s: i64) -> String {
    let mut claims = payload.clone();
    if let Some(Value::String(user_id)) = payload.get("user_id") {
        claims.insert("sub".into(), Value::String(user_id.clone()));
    }
    claims.insert("app_id".into(), Value::String(app_id.to_owned()));
    claims.insert("iat".into(), now_s.into());
    claims.insert("exp".into(), (now_s + ttl_s).into());
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("HS256 signing of a JSON map cannot fail")
}

#[derive(Deserialize)]
struct AppOnly {
    app_id: String,
}

/// The `app_id` claim, read before verification to pick the secret to verify with. Nothing else
/// of an unverified token is trusted.
pub fn peek_app_id(token: &str) -> Option<String> {
    jsonwebtoken::dangerous::insecure_decode_claims::<AppOnly>(token).ok().map(|c| c.app_id)
}

#[derive(Deserialize)]
struct Claims {
    app_id: String,
    exp: i64,
    sub: Option<String>,
    user_id: Option<Value>,
    user_info: Option<Value>,
    rooms: Option<Vec<String>>,
    can_publish: Option<bool>,
}

/// Verifies signature (HS256 only), expiry with `leeway_s`, and the meaning of known claims.
pub fn verify(token: &str, secret: &str, leeway_s: u64) -> Result<Identity, TokenError> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = leeway_s;
    validation.validate_aud = false;
    let claims =
        jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(secret.as_bytes()), &validation)
            .map_err(|e| TokenError::Invalid(format!("token rejected: {e}")))?
            .claims;
    let user_id = match claims.user_id {
        Some(Value::String(s)) => Some(s),
        Some(Value::Number(n)) => Some(n.to_string()),
        None | Some(Value::Null) => claims.sub,
        Some(_) => return Err(TokenError::Invalid("user_id claim must be a string".into())),
    };
    let grants = match claims.rooms {
        None => RoomGrants::default(),
        Some(list) => RoomGrants::new(Some(
            list.iter()
                .map(|s| RoomPattern::parse(s))
                .collect::<Result<_, _>>()
                .map_err(|e| TokenError::Invalid(format!("rooms claim: {e}")))?,
        )),
    };
    Ok(Identity {
        app_id: claims.app_id,
        user_id,
        user_info: claims.user_info.filter(|v| !v.is_null()),
        grants,
        can_publish: claims.can_publish.unwrap_or(false),
        exp: claims.exp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::RoomName;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn mint_then_verify() {
        let payload =
            map(json!({"user_id": "u1", "rooms": ["team-*"], "can_publish": true, "user_info": {"n": 1}}));
        check_payload(&payload).unwrap();
        let now = 1_900_000_000;
        let token = mint("app-1", "secret", &payload, now - 10, 3600);
        assert_eq!(peek_app_id(&token).as_deref(), Some("app-1"));
        // `exp` lies in the future only relative to `now`, so verify against a token minted now.
        let token = mint("app-1", "secret", &payload, time_now(), 3600);
        let id = verify(&token, "secret", 0).unwrap();
        assert_eq!(id.app_id, "app-1");
        assert_eq!(id.user_id.as_deref(), Some("u1"));
        assert!(id.can_publish);
        assert!(id.grants.allows(&RoomName::parse("team-a").unwrap()));
        assert!(!id.grants.allows(&RoomName::parse("lobby").unwrap()));
        assert!(verify(&token, "other-secret", 0).is_err());
    }

    fn time_now() -> i64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
    }

    #[test]
    fn expiry_honours_leeway() {
        let token = mint("a", "s", &Map::new(), time_now() - 100, 80);
        assert!(verify(&token, "s", 0).is_err());
        assert!(verify(&token, "s", 30).is_ok());
    }

    #[test]
    fn alg_none_is_refused() {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = b64.encode(r#"{"alg":"none","typ":"JWT"}"#);
        let body = b64.encode(format!(r#"{{"app_id":"a","exp":{}}}"#, time_now() + 100));
        assert!(verify(&format!("{header}.{body}."), "s", 0).is_err());
    }

    #[test]
    fn reserved_and_malformed_payloads() {
        for claim in RESERVED_CLAIMS {
            let err = check_payload(&map(json!({ claim: "x" }))).unwrap_err();
            assert_eq!(err.to_string().split(':').next().unwrap(), format!("payload.{claim}"));
        }
        assert!(check_payload(&map(json!({"rooms": "chat"}))).is_err());
        assert!(check_payload(&map(json!({"rooms": ["ok", "bad room"]}))).is_err());
        assert!(check_payload(&map(json!({"user_info": 3}))).is_err());
        assert!(check_payload(&map(json!({"user_id": 3}))).is_err());
        assert!(check_payload(&map(json!({"can_publish": "yes"}))).is_err());
        assert!(check_payload(&map(json!({"custom": {"any": "thing"}}))).is_ok());
    }
}

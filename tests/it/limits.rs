//! API rate limits: per app across its keys, per admin bucket, per client IP for tokens.

use reqwest::StatusCode;
use serde_json::json;

use crate::support::{assert_error, spawn_hub, spawn_hub_with};

fn header(res: &reqwest::Response, name: &str) -> Option<u64> {
    res.headers().get(name)?.to_str().ok()?.parse().ok()
}

#[tokio::test]
async fn an_apps_keys_share_its_bucket_and_get_429_with_headers() {
    let hub = spawn_hub().await;
    let app = hub.create_app(json!({"app_id": "rate-app", "rate_limit": 4})).await;
    let (_, v) =
        hub.post("/api/applications/rate-app/keys", &app.api_key, json!({"scopes": ["apps:read"]})).await;
    let second = v["api_key"].as_str().unwrap().to_owned();
    // Two requests were already charged (create-key above is one; this GET is the next).
    let res = hub.http.get(hub.url("/api/test")).header("X-API-Key", &second).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, "x-ratelimit-limit"), Some(4));
    assert_eq!(header(&res, "x-ratelimit-remaining"), Some(2));
    assert!(header(&res, "x-ratelimit-reset").is_some_and(|r| r <= 60));
    hub.get("/api/test", &app.api_key).await;
    hub.get("/api/test", &second).await;
    let res = hub.http.get(hub.url("/api/test")).header("X-API-Key", &app.api_key).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry = header(&res, "retry-after").expect("Retry-After");
    assert!((1..=60).contains(&retry));
    assert_eq!(header(&res, "x-ratelimit-remaining"), Some(0));
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!((body["code"].as_str(), body["retry_after"].as_u64()), (Some("rate_limited"), Some(retry)));

    // Other apps and admin keys have buckets of their own; a raised limit applies at once.
    let other = hub.create_app(json!({"app_id": "rate-other"})).await;
    assert_eq!(hub.get("/api/test", &other.api_key).await.0, StatusCode::OK);
    let admin = hub.admin_key.clone();
    let (status, _) = hub.put("/api/applications/rate-app", &admin, json!({"rate_limit": 100})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(hub.get("/api/test", &app.api_key).await.0, StatusCode::OK);
}

#[tokio::test]
async fn admin_keys_have_their_own_bucket() {
    let hub = spawn_hub_with(|c| c.limits.admin_rate_limit = 3).await;
    let admin = hub.admin_key.clone();
    for _ in 0..3 {
        assert_eq!(hub.get("/api/test", &admin).await.0, StatusCode::OK);
    }
    assert_error(&hub.get("/api/test", &admin).await, 429, "rate_limited");
}

#[tokio::test]
async fn token_minting_is_limited_per_client_ip() {
    let hub = spawn_hub().await;
    let app = hub.create_app(json!({"app_id": "ip-app"})).await;
    let body = json!({"app_id": "ip-app", "app_secret": app.secret});
    for _ in 0..100u32 {
        let res = hub.http.post(hub.url("/api/token")).json(&body).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }
    let res = hub.http.post(hub.url("/api/token")).json(&body).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(header(&res, "retry-after").is_some());
    assert_eq!(header(&res, "x-ratelimit-limit"), Some(100u32.into()));
}

//! Narrow API keys: create, list, scope checks, expiry, revocation.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{assert_error, spawn_hub};

#[tokio::test]
async fn narrow_keys_can_do_only_what_their_scopes_say() {
    let hub = spawn_hub().await;
    let app = hub.create_app(json!({"app_id": "keys-app"})).await;
    let path = "/api/applications/keys-app/keys";
    let (status, v) =
        hub.post(path, &app.api_key, json!({"name": "publisher", "scopes": ["broadcast:write"]})).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let narrow = v["api_key"].as_str().unwrap().to_owned();
    assert_eq!(v["key"]["scopes"], json!(["broadcast:write"]));
    assert_eq!(v["key"]["name"], "publisher");
    assert_eq!(v["key"]["primary"], false);
    assert!(narrow.starts_with(v["key"]["key_prefix"].as_str().unwrap()));

    assert_eq!(
        hub.broadcast(
            &crate::support::TestApp { api_key: narrow.clone(), ..app.clone() },
            "r",
            "e",
            json!(1)
        )
        .await["success"],
        true
    );
    let denied = hub.get("/api/applications/keys-app", &narrow).await;
    assert_error(&denied, 403, "insufficient_scope");
    assert!(denied.1["error"].as_str().unwrap().contains("apps:read"));
    assert_error(
        &hub.post(path, &narrow, json!({"scopes": ["broadcast:write"]})).await,
        403,
        "insufficient_scope",
    );
    let (_, info) = hub.get("/api/test", &narrow).await;
    assert_eq!(info["scopes"], json!(["broadcast:write"]));

    // Listings never show secrets or hashes.
    let (status, list) = hub.get(path, &app.api_key).await;
    assert_eq!(status, StatusCode::OK);
    let keys = list["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    let text = list.to_string();
    assert!(!text.contains(&narrow[narrow.len() - 32..]) && !text.contains("hash"), "{text}");
    let used: Vec<&Value> = keys.iter().filter(|k| k["last_used_at"].is_string()).collect();
    assert_eq!(used.len(), 2, "both keys were used: {text}");

    // Revocation takes effect at once.
    let key_id = v["key"]["key_id"].as_str().unwrap();
    let (status, _) =
        hub.send(reqwest::Method::DELETE, &format!("{path}/{key_id}"), &app.api_key, json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_error(&hub.get("/api/test", &narrow).await, 401, "invalid_key");
    assert_error(
        &hub.send(reqwest::Method::DELETE, &format!("{path}/{key_id}"), &app.api_key, json!({})).await,
        404,
        "not_found",
    );
    assert_eq!(hub.get(path, &app.api_key).await.1["keys"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn key_requests_are_checked_and_tenants_kept_apart() {
    let hub = spawn_hub().await;
    let app = hub.create_app(json!({"app_id": "keys-chk"})).await;
    let other = hub.create_app(json!({"app_id": "keys-oth"})).await;
    let path = "/api/applications/keys-chk/keys";
    for (body, field) in [
        (json!({"scopes": []}), "scopes"),
        (json!({"scopes": ["admin:full"]}), "scopes[0]"),
        (json!({"scopes": ["apps:delete"]}), "scopes[0]"),
        (json!({"scopes": ["apps:read"], "expires_in": 10}), "expires_in"),
        (json!({"scopes": ["apps:read"], "name": ""}), "name"),
    ] {
        let got = hub.post(path, &app.api_key, body.clone()).await;
        assert_error(&got, 400, "invalid_request");
        assert!(got.1["error"].as_str().unwrap().contains(field), "{body}: {}", got.1);
    }
    assert_error(&hub.get(path, &other.api_key).await, 403, "forbidden");
    let other_key_id =
        hub.get("/api/applications/keys-oth/keys", &other.api_key).await.1["keys"][0]["key_id"]
            .as_str()
            .unwrap()
            .to_owned();
    let cross =
        hub.send(reqwest::Method::DELETE, &format!("{path}/{other_key_id}"), &app.api_key, json!({})).await;
    assert_error(&cross, 404, "not_found");
    assert_eq!(hub.get("/api/test", &other.api_key).await.0, StatusCode::OK);
    // Admin keys manage any app's keys.
    let admin = hub.admin_key.clone();
    let (status, v) = hub.post(path, &admin, json!({"scopes": ["rooms:read"], "expires_in": 60})).await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(v["key"]["expires_at"].is_string());
}

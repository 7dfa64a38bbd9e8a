//! The HTTP API: authentication, apps, tokens, error shapes.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{assert_error, spawn_hub, split};

#[tokio::test]
async fn health_reports_a_single_node() {
    let hub = spawn_hub().await;
    let (status, v) = split(hub.http.get(hub.url("/health")).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["ok"], true);
    assert_eq!(v["store"], "ok");
    assert_eq!(v["redis"], "disabled");
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert!(v["node_id"].as_str().is_some_and(|n| !n.is_empty()));
    assert!(v["uptime_s"].is_u64());
}

#[tokio::test]
async fn unknown_routes_and_methods_use_the_error_shape() {
    let hub = spawn_hub().await;
    let got = split(hub.http.get(hub.url("/api/nope")).send().await.unwrap()).await;
    assert_error(&got, 404, "not_found");
    let got = split(hub.http.delete(hub.url("/api/broadcast")).send().await.unwrap()).await;
    assert_error(&got, 405, "method_not_allowed");
    let got = split(hub.http.get(hub.url("/ws")).send().await.unwrap()).await;
    assert_error(&got, 426, "upgrade_required");
}

#[tokio::test]
async fn keys_are_accepted_from_every_documented_location() {
    let hub = spawn_hub().await;
    let key = hub.admin_key.clone();
    let c = &hub.http;
    let ok = |res: (StatusCode, Value)| {
        assert_eq!(res.0, StatusCode::OK, "{}", res.1);
        assert_eq!(res.1["kind"], "admin");
    };
    ok(split(c.get(hub.url("/api/test")).header("X-ADMIN-API-KEY", &key).send().await.unwrap()).await);
    ok(split(c.get(hub.url("/api/test")).header("X-API-Key", &key).send().await.unwrap()).await);
    ok(split(c.get(hub.url("/api/test")).header("X-APP-API-KEY", &key).send().await.unwrap()).await);
    ok(split(c.get(hub.url("/api/test")).bearer_auth(&key).send().await.unwrap()).await);
    ok(split(c.get(hub.url(&format!("/api/test?api_key={key}"))).send().await.unwrap()).await);
    // A body key on a POST route: creating an app proves the admin key was read from the body.
    let res = c
        .post(hub.url("/api/applications"))
        .json(&json!({"api_key": key, "app_id": "from-body"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);

    assert_error(&split(c.get(hub.url("/api/test")).send().await.unwrap()).await, 401, "missing_api_key");
    let garbage =
        split(c.get(hub.url("/api/test")).header("X-API-Key", "rc_admin_nope").send().await.unwrap()).await;
    assert_error(&garbage, 401, "invalid_key");
    // The first location present decides: a bad admin header is not rescued by a good bearer.
    let first =
        c.get(hub.url("/api/test")).header("X-ADMIN-API-KEY", "bad").bearer_auth(&key).send().await.unwrap();
    assert_error(&split(first).await, 401, "invalid_key");
    // Right key id, wrong secret.
    let mut forged = key.clone();
    forged.pop();
    forged.push(if key.ends_with('a') { 'b' } else { 'a' });
    assert_error(&hub.get("/api/test", &forged).await, 401, "invalid_key");
}

#[tokio::test]
async fn key_introspection_describes_app_and_admin_keys() {
    let hub = spawn_hub().await;
    let app = hub.create_app(json!({"app_id": "intro-app"})).await;
    let (status, v) = hub.get("/api/test", &app.api_key).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["success"], true);
    assert_eq!(v["message"], "API key is valid");
    assert_eq!(v["kind"], "app");
    assert_eq!(v["app_id"], "intro-app");
    assert!(app.api_key.starts_with(v["key_prefix"].as_str().unwrap()));
    assert!(v["key_prefix"].as_str().unwrap().starts_with("rc_app_"));
    let scopes: Vec<&str> = v["scopes"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    for scope in [
        "broadcast:write",
        "tokens:write",
        "tickets:write",
        "apps:read",
        "apps:write",
        "keys:write",
        "webhooks:read",
        "webhooks:write",
        "analytics:read",
        "rooms:read",
    ] {
        assert!(scopes.contains(&scope), "{scope} missing from {scopes:?}");
    }
    assert!(!scopes.contains(&"admin:full"));
    assert_eq!(v["expires_at"], Value::Null);

    let (_, v) = hub.get("/api/test", &hub.admin_key).await;
    assert_eq!(v["app_id"], Value::Null);
    assert_eq!(v["scopes"], json!(["admin:full"]));
    assert!(v["key_prefix"].as_str().unwrap().starts_with("rc_admin_"));

    // An app key presented as an admin key is refused outright.
    let res =
        hub.http.get(hub.url("/api/test")).header("X-ADMIN-API-KEY", &app.api_key).send().await.unwrap();
    assert_error(&split(res).await, 401, "invalid_key");
}

#[tokio::test]
async fn creating_apps() {
    let hub = spawn_hub().await;
    let admin = hub.admin_key.clone();
    let (status, v) = hub
        .post(
            "/api/applications",
            &admin,
            json!({"app_id": "my-app-123", "name": "My App",
            "allowed_domains": ["Example.com", "*.example.org"], "client_events": true, "rate_limit": 50}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert_eq!(v["success"], true);
    let app = &v["app"];
    assert_eq!(app["app_id"], "my-app-123");
    assert_eq!(app["name"], "My App");
    assert_eq!(app["status"], "enabled");
    assert_eq!(app["allowed_domains"], json!(["example.com", "*.example.org"]));
    assert_eq!(app["rate_limit"], 50);
    assert_eq!(app["client_events"], true);
    assert!(app["max_connections"].is_u64());
    assert!(app["created_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(app["deleted_at"], Value::Null);
    assert!(app.get("app_secret").is_none() && app.get("secret").is_none());
    assert!(v["app_secret"].as_str().unwrap().len() >= 32);
    assert!(v["api_key"].as_str().unwrap().starts_with("rc_app_"));

    // Generated id and defaults.
    let (status, v) = hub.post("/api/applications", &admin, json!({})).await;
    assert_eq!(status, StatusCode::CREATED);
    let id = v["app"]["app_id"].as_str().unwrap();
    assert_eq!(v["app"]["name"], id);
    assert_eq!(v["app"]["client_events"], false);
    assert_eq!(v["app"]["rate_limit"], 1000);

    assert_error(
        &hub.post("/api/applications", &admin, json!({"app_id": "my-app-123"})).await,
        409,
        "conflict",
    );
    let bad = hub.post("/api/applications", &admin, json!({"app_id": "No Spaces"})).await;
    assert_error(&bad, 400, "invalid_request");
    assert!(bad.1["error"].as_str().unwrap().contains("app_id"));
    let bad = hub.post("/api/applications", &admin, json!({"rate_limit": "fast"})).await;
    assert_error(&bad, 400, "invalid_request");
    assert!(bad.1["error"].as_str().unwrap().contains("rate_limit"), "{}", bad.1);
    let bad = hub.post("/api/applications", &admin, json!({"allowed_domains": ["https://x.com/"]})).await;
    assert_error(&bad, 400, "invalid_request");
    assert!(bad.1["error"].as_str().unwrap().contains("allowed_domains[0]"), "{}", bad.1);

    let app_key = hub.create_app(json!({"app_id": "tenant-b"})).await.api_key;
    assert_error(
        &hub.post("/api/applications", &app_key, json!({"app_id": "sneaky"})).await,
        403,
        "forbidden",
    );
}

#[tokio::test]
async fn malformed_bodies_get_clear_errors_and_the_server_keeps_serving() {
    let hub = spawn_hub().await;
    let admin = hub.admin_key.clone();
    let post = |body: &'static str, ct: &'static str| {
        hub.http
            .post(hub.url("/api/applications"))
            .header("X-API-Key", &admin)
            .header("Content-Type", ct)
            .body(body)
            .send()
    };
    let got = split(post("{not json", "application/json").await.unwrap()).await;
    assert_error(&got, 400, "invalid_request");
    let got = split(post(r#"{"app_id": 12}"#, "application/json").await.unwrap()).await;
    assert_error(&got, 400, "invalid_request");
    assert!(got.1["error"].as_str().unwrap().contains("app_id"), "{}", got.1);
    let got = split(post(r#"{"app_id": "x-y-z"} trailing"#, "application/json").await.unwrap()).await;
    assert_error(&got, 400, "invalid_request");
    // A positional array is not an object, even though every field is optional.
    let got = split(post("[null, null]", "application/json").await.unwrap()).await;
    assert_error(&got, 400, "invalid_request");
    let got = split(post(r#"{"rate_limit": 1.5}"#, "application/json").await.unwrap()).await;
    assert_error(&got, 400, "invalid_request");
    assert!(got.1["error"].as_str().unwrap().contains("rate_limit"), "{}", got.1);
    let got = split(post(r#"{"rate_limit": -3}"#, "application/json").await.unwrap()).await;
    assert_error(&got, 400, "invalid_request");
    let got = split(post("app_id=x", "application/x-www-form-urlencoded").await.unwrap()).await;
    assert_error(&got, 415, "unsupported_media_type");
    let huge = format!(r#"{{"app_id": "big-one", "name": "{}"}}"#, "n".repeat(2 * 1024 * 1024));
    let res = hub
        .http
        .post(hub.url("/api/applications"))
        .header("X-API-Key", &admin)
        .header("Content-Type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_error(&split(res).await, 413, "payload_too_large");
    // Nothing of the above was stored, and the server still answers.
    let (status, v) = hub.get("/api/applications", &admin).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["applications"], json!([]));
}

#[tokio::test]
async fn listing_and_reading_apps() {
    let hub = spawn_hub().await;
    let admin = hub.admin_key.clone();
    let a = hub.create_app(json!({"app_id": "app-aaa"})).await;
    hub.create_app(json!({"app_id": "app-bbb"})).await;
    hub.create_app(json!({"app_id": "app-ccc"})).await;

    let (_, page1) = hub.get("/api/applications?limit=1", &admin).await;
    assert_eq!(page1["applications"].as_array().unwrap().len(), 1);
    assert_eq!(page1["applications"][0]["app_id"], "app-aaa");
    let cursor = page1["next_cursor"].as_str().unwrap().to_owned();
    let (_, page2) = hub.get(&format!("/api/applications?limit=2&cursor={cursor}"), &admin).await;
    let ids: Vec<&str> =
        page2["applications"].as_array().unwrap().iter().map(|a| a["app_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["app-bbb", "app-ccc"]);
    assert_eq!(page2["next_cursor"], Value::Null);
    assert_error(&hub.get("/api/applications?limit=0", &admin).await, 400, "invalid_request");
    assert_error(&hub.get("/api/applications?limit=lots", &admin).await, 400, "invalid_request");

    let (status, own) = hub.get("/api/applications", &a.api_key).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(own["applications"].as_array().unwrap().len(), 1);
    assert_eq!(own["applications"][0]["app_id"], "app-aaa");
    assert_eq!(own["next_cursor"], Value::Null);

    let (status, one) = hub.get("/api/applications/app-aaa", &a.api_key).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["success"], true);
    assert_eq!(one["app"]["app_id"], "app-aaa");
    assert_eq!(hub.get("/api/applications/app-bbb", &admin).await.1["app"]["app_id"], "app-bbb");
    assert_error(&hub.get("/api/applications/app-bbb", &a.api_key).await, 403, "forbidden");
    assert_error(&hub.get("/api/applications/app-zzz", &admin).await, 404, "not_found");
}

#[tokio::test]
async fn updating_apps() {
    let hub = spawn_hub().await;
    let app = hub.create_app(json!({"app_id": "upd-app", "name": "Before"})).await;
    let path = "/api/applications/upd-app";
    // `10.0` is an integer to JSON Schema, so it is accepted as one.
    let (status, v) = hub
        .put(
            path,
            &app.api_key,
            json!({"name": "After", "allowed_domain": "one.example", "client_events": true,
            "max_connections": 5, "rate_limit": 10.0, "unknown_field": 1, "app_secret": "hijack"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["app"]["name"], "After");
    assert_eq!(v["app"]["allowed_domains"], json!(["one.example"]));
    assert_eq!(v["app"]["client_events"], true);
    assert_eq!(v["app"]["max_connections"], 5);
    assert_eq!(v["app"]["rate_limit"], 10);
    // The secret cannot be changed through PUT: tokens still mint with the original one.
    hub.token(&app, json!({})).await;

    // An invalid field changes nothing, even alongside valid ones.
    let bad = hub.put(path, &app.api_key, json!({"name": "Changed", "rate_limit": 0})).await;
    assert_error(&bad, 400, "invalid_request");
    assert!(bad.1["error"].as_str().unwrap().contains("rate_limit"));
    // Ids never change: an app_id in a PUT body is an unknown field and ignored.
    let (status, v) = hub.put(path, &app.api_key, json!({"app_id": "renamed-app"})).await;
    assert_eq!((status, v["app"]["app_id"].as_str()), (StatusCode::OK, Some("upd-app")));
    let bad = hub.put(path, &app.api_key, json!({"status": "paused"})).await;
    assert_error(&bad, 400, "invalid_request");
    assert!(bad.1["error"].as_str().unwrap().contains("status"));
    assert_eq!(hub.get(path, &app.api_key).await.1["app"]["name"], "After");

    let (_, v) = hub.put(path, &hub.admin_key.clone(), json!({"status": "disabled"})).await;
    assert_eq!(v["app"]["status"], "disabled");
    assert_error(&hub.get("/api/test", &app.api_key).await, 403, "app_disabled");
    let (_, v) = hub.put(path, &hub.admin_key.clone(), json!({"status": true})).await;
    assert_eq!(v["app"]["status"], "enabled");
    assert_eq!(hub.get("/api/test", &app.api_key).await.0, StatusCode::OK);
    let other = hub.create_app(json!({"app_id": "other-app"})).await;
    assert_error(&hub.put(path, &other.api_key, json!({"name": "x"})).await, 403, "forbidden");
}

#[tokio::test]
async fn regenerating_the_api_key() {
    let hub = spawn_hub().await;
    let app = hub.create_app(json!({"app_id": "rot-app"})).await;
    let path = "/api/applications/rot-app/regenerate-api-key";
    let (status, v) = hub.post(path, &app.api_key, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let new_key = v["api_key"].as_str().unwrap().to_owned();
    assert_eq!(v["key"]["primary"], true);
    assert!(new_key.starts_with(v["key"]["key_prefix"].as_str().unwrap()));
    assert_error(&hub.get("/api/test", &app.api_key).await, 401, "invalid_key");
    assert_eq!(hub.get("/api/test", &new_key).await.0, StatusCode::OK);

    // With a grace period the old key keeps working, and reports its expiry.
    let (_, v) = hub.post(path, &new_key, json!({"grace_seconds": 300})).await;
    let newest = v["api_key"].as_str().unwrap().to_owned();
    let (status, old) = hub.get("/api/test", &new_key).await;
    assert_eq!(status, StatusCode::OK);
    assert!(old["expires_at"].is_string());
    assert_eq!(hub.get("/api/test", &newest).await.0, StatusCode::OK);
    let bad = hub.post(path, &newest, json!({"grace_seconds": -1})).await;
    assert_error(&bad, 400, "invalid_request");
    assert!(bad.1["error"].as_str().unwrap().contains("grace_seconds"));
    // No body at all is fine too.
    let res = hub.http.post(hub.url(path)).header("X-API-Key", &newest).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn regenerating_the_secret_invalidates_tokens() {
    let hub = spawn_hub().await;
    let mut app = hub.create_app(json!({"app_id": "sec-app"})).await;
    let old_token = hub.token(&app, json!({})).await;
    let res = hub
        .http
        .post(hub.url("/api/applications/sec-app/regenerate-secret"))
        .header("X-API-Key", &app.api_key)
        .send()
        .await
        .unwrap();
    let (status, v) = split(res).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let new_secret = v["app_secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, app.secret);
    assert_eq!(hub.try_connect(&old_token).await.err().unwrap().0, 401);
    let res = hub
        .http
        .post(hub.url("/api/token"))
        .json(&json!({"app_id": "sec-app", "app_secret": app.secret}))
        .send()
        .await
        .unwrap();
    assert_error(&split(res).await, 401, "invalid_key");
    app.secret = new_secret;
    let token = hub.token(&app, json!({})).await;
    hub.connect(&token).await;
}

#[tokio::test]
async fn minting_tokens() {
    use base64::Engine;
    let hub = spawn_hub().await;
    let app = hub.create_app(json!({"app_id": "tok-app"})).await;
    let hub = &hub;
    let mint = |body: Value| async move {
        split(hub.http.post(hub.url("/api/token")).json(&body).send().await.unwrap()).await
    };

    let (status, v) = mint(json!({"app_id": "tok-app", "app_secret": app.secret,
        "payload": {"user_id": "u1", "user_info": {"name": "Ann"}, "custom": 5}, "expires_in": 120}))
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["success"], true);
    assert_eq!(v["expires_in"], 120);
    assert!(v["expires_at"].as_str().unwrap().ends_with('Z'));
    let token = v["token"].as_str().unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token.split('.').nth(1).unwrap()).unwrap(),
    )
    .unwrap();
    assert_eq!(claims["app_id"], "tok-app");
    assert_eq!(claims["sub"], "u1");
    assert_eq!(claims["user_id"], "u1");
    assert_eq!(claims["custom"], 5);
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 120);

    let (_, v) = mint(json!({"app_id": "tok-app", "app_secret": app.secret})).await;
    assert_eq!(v["expires_in"], 86400);

    for (body, field) in [
        (json!({"app_id": "tok-app", "app_secret": app.secret, "expires_in": 59}), "expires_in"),
        (json!({"app_id": "tok-app", "app_secret": app.secret, "expires_in": 2_592_001}), "expires_in"),
        (json!({"app_id": "tok-app", "app_secret": app.secret, "payload": {"exp": 1}}), "payload.exp"),
        (
            json!({"app_id": "tok-app", "app_secret": app.secret, "payload": {"app_id": "other"}}),
            "payload.app_id",
        ),
        (
            json!({"app_id": "tok-app", "app_secret": app.secret, "payload": {"rooms": ["bad room"]}}),
            "payload.rooms[0]",
        ),
        (json!({"app_id": "tok-app"}), "app_secret"),
    ] {
        let got = mint(body).await;
        assert_error(&got, 400, "invalid_request");
        assert!(got.1["error"].as_str().unwrap().contains(field), "{field}: {}", got.1);
    }
    assert_error(&mint(json!({"app_id": "tok-app", "app_secret": "wrong"})).await, 401, "invalid_key");
    assert_error(&mint(json!({"app_id": "no-such-app", "app_secret": "wrong"})).await, 401, "invalid_key");
    hub.put("/api/applications/tok-app", &app.api_key, json!({"status": false})).await;
    assert_error(&mint(json!({"app_id": "tok-app", "app_secret": app.secret})).await, 403, "app_disabled");
}

#[tokio::test]
async fn openapi_document_and_pages() {
    let hub = spawn_hub().await;
    let (status, doc) = split(hub.http.get(hub.url("/api/openapi.json")).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    for path in [
        "/api/broadcast",
        "/api/broadcast/batch",
        "/api/token",
        "/api/applications",
        "/api/applications/{app_id}",
        "/api/applications/{app_id}/regenerate-api-key",
        "/api/applications/{app_id}/regenerate-secret",
        "/api/test",
        "/health",
        "/api/tickets",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing from the OpenAPI document");
    }
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
    for page in ["/api/docs/", "/api/redoc"] {
        let res = hub.http.get(hub.url(page)).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{page}");
        let html = res.text().await.unwrap();
        assert!(html.to_lowercase().contains("<html"), "{page}");
    }
    // Swagger UI's assets are served from the binary itself.
    let res = hub.http.get(hub.url("/api/docs/swagger-ui-bundle.js")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.bytes().await.unwrap().len() > 100_000);
}

#[tokio::test]
async fn other_methods_on_known_routes() {
    let hub = spawn_hub().await;
    let res = hub.http.request(Method::PATCH, hub.url("/api/applications")).send().await.unwrap();
    assert_error(&split(res).await, 405, "method_not_allowed");
}

#[tokio::test]
async fn soft_delete_and_restore() {
    use crate::support::Ending;
    let hub = spawn_hub().await;
    let admin = hub.admin_key.clone();
    let app = hub.create_app(json!({"app_id": "gone-app"})).await;
    let token = hub.token(&app, json!({})).await;
    let mut ws = hub.subscriber(&app, json!({}), &["r"]).await;
    let path = "/api/applications/gone-app";

    assert_error(&hub.send(Method::DELETE, path, &app.api_key, json!({})).await, 403, "forbidden");
    let (status, v) = hub.send(Method::DELETE, path, &admin, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert!(v["app"]["deleted_at"].is_string());
    assert_eq!(ws.closed().await, Ending::Closed(4003));

    assert_error(&hub.get(path, &admin).await, 404, "not_found");
    assert_error(&hub.get("/api/test", &app.api_key).await, 403, "app_disabled");
    // On its own app routes the deleted app is not found, as for everyone else.
    assert_error(&hub.get(path, &app.api_key).await, 404, "not_found");
    assert_error(&hub.get(&format!("{path}/keys"), &app.api_key).await, 404, "not_found");
    assert_error(
        &hub.post("/api/broadcast", &app.api_key, json!({"room": "r", "event": "e", "data": {}})).await,
        403,
        "app_disabled",
    );
    assert_eq!(hub.try_connect(&token).await.err().unwrap().0, 403);
    let res = hub
        .http
        .post(hub.url("/api/token"))
        .json(&json!({"app_id": "gone-app", "app_secret": app.secret}))
        .send()
        .await
        .unwrap();
    assert_error(&split(res).await, 401, "invalid_key");
    assert_eq!(hub.get("/api/applications", &admin).await.1["applications"], json!([]));
    let (_, all) = hub.get("/api/applications?include_deleted=true", &admin).await;
    assert_eq!(all["applications"][0]["app_id"], "gone-app");
    let (status, shown) = hub.get(&format!("{path}?include_deleted=true"), &admin).await;
    assert_eq!((status, shown["app"]["app_id"].as_str()), (StatusCode::OK, Some("gone-app")));
    // The id stays taken while the app can be restored.
    assert_error(
        &hub.post("/api/applications", &admin, json!({"app_id": "gone-app"})).await,
        409,
        "conflict",
    );
    assert_error(&hub.send(Method::DELETE, path, &admin, json!({})).await, 404, "not_found");

    let (status, v) = hub.post(&format!("{path}/restore"), &admin, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["app"]["deleted_at"], Value::Null);
    // Keys and secret come back with it.
    assert_eq!(hub.get("/api/test", &app.api_key).await.0, StatusCode::OK);
    hub.connect(&hub.token(&app, json!({})).await).await;
    assert_error(&hub.post(&format!("{path}/restore"), &admin, json!({})).await, 404, "not_found");
    assert_error(&hub.post("/api/applications/never-was/restore", &admin, json!({})).await, 404, "not_found");
}

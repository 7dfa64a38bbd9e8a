//! Restarts and graceful shutdown of an in-process server.

use reqwest::StatusCode;
use serde_json::json;

use crate::support::{Ending, spawn_hub, spawn_hub_in};

#[tokio::test]
async fn a_restart_keeps_apps_and_keys() {
    let hub = spawn_hub().await;
    let app = hub.create_app(json!({"app_id": "keep-app", "name": "Kept", "client_events": true})).await;
    let (_, v) = hub.post("/api/applications/keep-app/regenerate-api-key", &app.api_key, json!({})).await;
    let rotated = v["api_key"].as_str().unwrap().to_owned();
    let (dir, admin, drained) = hub.stop().await;
    assert!(drained);

    let hub = spawn_hub_in(dir, admin, |_| {}).await;
    let (status, v) = hub.get("/api/applications/keep-app", &rotated).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["app"]["name"], "Kept");
    assert_eq!(v["app"]["client_events"], true);
    // The key revoked before the restart stays revoked.
    assert_eq!(hub.get("/api/test", &app.api_key).await.0, StatusCode::UNAUTHORIZED);
    // The secret survived too.
    let token = hub.token(&app, json!({})).await;
    hub.connect(&token).await;
    assert_eq!(hub.get("/api/test", &hub.admin_key.clone()).await.0, StatusCode::OK);
}

#[tokio::test]
async fn shutdown_closes_clients_with_1012() {
    let hub = spawn_hub().await;
    let app = hub.create_app(json!({"app_id": "bye-app"})).await;
    let mut a = hub.subscriber(&app, json!({}), &["r"]).await;
    let mut b = hub.subscriber(&app, json!({}), &[]).await;
    let stopping = tokio::spawn(hub.stop());
    assert_eq!(a.closed().await, Ending::Closed(1012));
    assert_eq!(b.closed().await, Ending::Closed(1012));
    let (_, _, drained) = stopping.await.unwrap();
    assert!(drained, "every session ended within the grace period");
}

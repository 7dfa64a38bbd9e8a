//! Restarts and graceful shutdown of an in-process server.

use reqwest::StatusCode;
use serde_json::json;

use crate::support::{Ending, assert_error, spawn_hub, spawn_hub_in};

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
async fn apps_deleted_over_30_days_ago_are_purged_at_start() {
    let hub = spawn_hub().await;
    let admin = hub.admin_key.clone();
    let old = hub.create_app(json!({"app_id": "old-gone"})).await;
    drop(hub.subscriber(&old, json!({"user_id": "u"}), &[]).await);
    hub.create_app(json!({"app_id": "recent-gone"})).await;
    hub.create_app(json!({"app_id": "still-here"})).await;
    for id in ["old-gone", "recent-gone"] {
        let path = format!("/api/applications/{id}");
        assert_eq!(hub.send(reqwest::Method::DELETE, &path, &admin, json!({})).await.0, StatusCode::OK);
    }
    let (dir, admin, _) = hub.stop().await;
    // Age one deletion past the 30-day window, straight in the SQLite file.
    let db = rusqlite::Connection::open(dir.path().join("roomcast.db")).unwrap();
    let month = 31_i64 * 24 * 3600 * 1000;
    db.execute("UPDATE apps SET deleted_at = deleted_at - ?1 WHERE app_id = 'old-gone'", [month]).unwrap();
    drop(db);

    let hub = spawn_hub_in(dir, admin, |_| {}).await;
    let admin = hub.admin_key.clone();
    let (_, all) = hub.get("/api/applications?include_deleted=true", &admin).await;
    let ids: Vec<&str> =
        all["applications"].as_array().unwrap().iter().map(|a| a["app_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["recent-gone", "still-here"], "{all}");
    // Its keys are gone with it and its id is free again.
    assert_error(&hub.get("/api/test", &old.api_key).await, 401, "invalid_key");
    assert_error(&hub.post("/api/applications/old-gone/restore", &admin, json!({})).await, 404, "not_found");
    let (status, v) = hub.post("/api/applications", &admin, json!({"app_id": "old-gone"})).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    // The new app with the old id starts with no analytics of its predecessor.
    let (_, stats) = hub.get("/api/analytics?period=30d&app_id=old-gone", &admin).await;
    assert_eq!(stats["metrics"]["connections"]["total"], 0, "{stats}");
    assert_eq!(stats["metrics"]["users"]["total"], 0, "{stats}");
    // The recent one can still come back.
    assert_eq!(hub.post("/api/applications/recent-gone/restore", &admin, json!({})).await.0, StatusCode::OK);
    let db = rusqlite::Connection::open(hub.dir.path().join("roomcast.db")).unwrap();
    let keys: i64 = db
        .query_row(
            "SELECT count(*) FROM api_keys WHERE app_id = 'old-gone' AND key_id = ?1",
            [&old.api_key[7..19]],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(keys, 0, "the purged app's keys are erased");
}

#[tokio::test]
async fn an_expired_key_gets_key_expired() {
    let hub = spawn_hub().await;
    let app = hub.create_app(json!({})).await;
    let path = format!("/api/applications/{}/keys", app.app_id);
    let (status, v) = hub.post(&path, &app.api_key, json!({"scopes": ["apps:read"], "expires_in": 60})).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let short = v["api_key"].as_str().unwrap().to_owned();
    let key_id = v["key"]["key_id"].as_str().unwrap().to_owned();
    assert_eq!(hub.get("/api/test", &short).await.0, StatusCode::OK);
    let (dir, admin, _) = hub.stop().await;
    // Let the minute pass, in the store.
    let db = rusqlite::Connection::open(dir.path().join("roomcast.db")).unwrap();
    db.execute("UPDATE api_keys SET expires_at = expires_at - 120000 WHERE key_id = ?1", [&key_id]).unwrap();
    drop(db);
    let hub = spawn_hub_in(dir, admin, |_| {}).await;
    assert_error(&hub.get("/api/test", &short).await, 401, "key_expired");
    assert_eq!(hub.get("/api/test", &app.api_key).await.0, StatusCode::OK, "other keys are unaffected");
}

#[tokio::test]
async fn a_store_locked_by_another_process_answers_503_and_loses_nothing() {
    let hub = spawn_hub().await;
    let admin = hub.admin_key.clone();
    hub.create_app(json!({"app_id": "before-lock"})).await;
    // Another process takes the write lock and holds it past the hub's 5 s busy timeout.
    let mut db = rusqlite::Connection::open(hub.dir.path().join("roomcast.db")).unwrap();
    let lock = db.transaction_with_behavior(rusqlite::TransactionBehavior::Exclusive).unwrap();
    let got = hub.post("/api/applications", &admin, json!({"app_id": "during-lock"})).await;
    assert_error(&got, 503, "unavailable");
    // Reads are served from memory meanwhile.
    assert_eq!(hub.get("/api/applications/before-lock", &admin).await.0, StatusCode::OK);
    lock.rollback().unwrap();
    // Nothing half-written: the refused app does not exist and can be created now.
    assert_error(&hub.get("/api/applications/during-lock", &admin).await, 404, "not_found");
    let (status, v) = hub.post("/api/applications", &admin, json!({"app_id": "during-lock"})).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let (dir, admin, _) = hub.stop().await;
    let hub = spawn_hub_in(dir, admin, |_| {}).await;
    let (_, list) = hub.get("/api/applications", &hub.admin_key.clone()).await;
    let ids: Vec<&str> =
        list["applications"].as_array().unwrap().iter().map(|a| a["app_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["before-lock", "during-lock"]);
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

//! The SQLite store's own tests: records across a reopen, the migrations that carry older data
//! forward, and what another connection to the same file sees.

use super::*;

fn app(id: &str) -> AppRecord {
    AppRecord {
        app_id: id.into(),
        name: "Test".into(),
        secret: "s3cret".into(),
        status: AppStatus::Enabled,
        allowed_domains: vec!["example.com".into()],
        rate_limit: 1000,
        max_connections: 10,
        client_events: false,
        // Not the default, so the store is seen to keep it.
        pusher_clients: true,
        created_at: 1,
        updated_at: 1,
        deleted_at: None,
        history: None,
    }
}

fn key(id: &str, app_id: &str) -> KeyRecord {
    KeyRecord {
        key_id: id.into(),
        kind: KeyKind::App,
        app_id: Some(app_id.into()),
        name: "primary".into(),
        scopes: vec!["broadcast:write".into()],
        secret_hash: "ab".repeat(32),
        primary: true,
        created_at: 1,
        expires_at: None,
        last_used_at: None,
        revoked_at: None,
    }
}

#[tokio::test]
async fn records_round_trip_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/roomcast.db");
    let store = SqliteStore::open(&path).unwrap();
    store.insert_app(&app("app-one"), &key("k1", "app-one")).await.unwrap();
    assert!(matches!(
        store.insert_app(&app("app-one"), &key("k2", "app-one")).await,
        Err(StoreError::Conflict)
    ));
    let mut changed = app("app-one");
    changed.name = "Renamed".into();
    store.update_app(&changed).await.unwrap();
    assert!(matches!(store.update_app(&app("nope")).await, Err(StoreError::NotFound)));
    store.touch_keys(&[("k1".into(), 99)]).await.unwrap();
    drop(store);

    let store = SqliteStore::open(&path).unwrap();
    let snap = store.snapshot().await.unwrap();
    assert_eq!(snap.apps, vec![changed]);
    let mut expected = key("k1", "app-one");
    expected.last_used_at = Some(99);
    assert_eq!(snap.keys, vec![expected]);
}

#[tokio::test]
async fn other_connections_move_the_change_marker() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("roomcast.db");
    let server = SqliteStore::open(&path).unwrap();
    let before = server.change_marker().await.unwrap();
    let cli = SqliteStore::open(&path).unwrap();
    cli.insert_app(&app("app-two"), &key("k9", "app-two")).await.unwrap();
    assert_ne!(server.change_marker().await.unwrap(), before);
}

#[tokio::test]
async fn deliveries_made_before_the_attempt_log_start_it_with_their_last_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("roomcast.db");
    {
        let mut conn = Connection::open(&path).unwrap();
        let tx = conn.transaction().unwrap();
        for sql in &super::schema::MIGRATIONS[..3] {
            tx.execute_batch(sql).unwrap();
        }
        tx.pragma_update(None, "user_version", 3).unwrap();
        tx.execute_batch(
            "INSERT INTO apps VALUES ('app-old', 'n', 's', 'enabled', '[]', 1, 1, 0, 1, 1, NULL);
             INSERT INTO webhooks VALUES ('wh_o', 'app-old', 'https://x.test/', 's', '[\"*\"]', 1, NULL, 0, 1, 1);
             INSERT INTO webhook_deliveries VALUES
               ('d000000000001AAAAAAAAAA', 'wh_o', 'app-old', 'e', NULL, '{}', 'retrying', 1, 1, 500, 12, 'HTTP 500', 9, 1, 5),
               ('d000000000002AAAAAAAAAA', 'wh_o', 'app-old', 'e', NULL, '{}', 'pending', 0, 0, NULL, NULL, NULL, 9, 2, 2);",
        )
        .unwrap();
        tx.commit().unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    let tried = store.delivery("d000000000001AAAAAAAAAA").await.unwrap().unwrap();
    assert_eq!(
        tried.attempt_log,
        vec![super::super::AttemptEntry {
            at: 5,
            response_code: Some(500),
            latency_ms: Some(12),
            error: Some("HTTP 500".into())
        }]
    );
    let untried = store.delivery("d000000000002AAAAAAAAAA").await.unwrap().unwrap();
    assert!(untried.attempt_log.is_empty());
}

#[tokio::test]
async fn legacy_user_rows_are_loaded_once_and_erased_by_the_first_save_of_sketches() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("roomcast.db")).unwrap();
    store
        .with(|conn| {
            conn.execute_batch(
                "INSERT INTO analytics_users VALUES ('app-x', 'u1', 5000), ('app-x', 'u2', 6000);",
            )
            .map_err(unavailable)
        })
        .await
        .unwrap();
    let loaded = store.load_analytics(0).await.unwrap();
    assert_eq!(loaded.users.len(), 2);
    let sketch = SketchRow {
        app_id: "app-x".into(),
        level: 3,
        start: 0,
        expires_at: 99_000,
        sketch: "[1,null]".into(),
    };
    let rows = AnalyticsRows { sketches: vec![sketch.clone()], ..Default::default() };
    store.save_analytics(rows, 0, 10_000).await.unwrap();
    let loaded = store.load_analytics(0).await.unwrap();
    assert!(loaded.users.is_empty());
    assert_eq!(loaded.sketches, [sketch]);
}

#[test]
fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("roomcast.db");
    {
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
    }
    assert!(matches!(SqliteStore::open(&path), Err(StoreError::Corrupt(_))));
}

//! The two stores behind the same trait, driven through the same sequence: the embedded SQLite
//! file and Redis (a real `redis-server`). Each answer is checked, and both must agree.

use std::sync::Arc;

use roomcast::store::redis::RedisStore;
use roomcast::store::sqlite::SqliteStore;
use roomcast::store::{
    AnalyticsRows, AppRecord, AppStatus, AttemptRecord, DeliveryRecord, DeliveryStatus, KeyKind, KeyRecord,
    MinuteCounts, MinuteRow, SketchRow, Store, StoreError, WebhookHealth, WebhookRecord,
};

use crate::support::{RedisCluster, RedisServer};

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

fn key(id: &str, app_id: &str, created_at: i64) -> KeyRecord {
    KeyRecord {
        key_id: id.into(),
        kind: KeyKind::App,
        app_id: Some(app_id.into()),
        name: "primary".into(),
        scopes: vec!["broadcast:write".into()],
        secret_hash: "ab".repeat(32),
        primary: true,
        created_at,
        expires_at: None,
        last_used_at: None,
        revoked_at: None,
    }
}

fn webhook(id: &str, app_id: &str) -> WebhookRecord {
    WebhookRecord {
        webhook_id: id.into(),
        app_id: app_id.into(),
        url: "https://example.com/h".into(),
        secret: "whsec_x".into(),
        events: vec!["*".into()],
        enabled: true,
        disabled_reason: None,
        consecutive_failures: 0,
        // Not the default, so both stores are seen to keep it.
        format: roomcast::store::WebhookFormat::Pusher,
        created_at: 5,
        updated_at: 5,
    }
}

fn delivery(n: i64, webhook_id: &str) -> DeliveryRecord {
    DeliveryRecord {
        delivery_id: format!("d{n:012x}AAAAAAAAAA"),
        webhook_id: webhook_id.into(),
        app_id: "app-1".into(),
        event: "e".into(),
        room: Some("r".into()),
        body: format!(r#"{{"n":{n}}}"#),
        status: DeliveryStatus::Pending,
        attempts: 0,
        step: 0,
        response_code: None,
        latency_ms: None,
        error: None,
        next_retry_at: Some(100 + n),
        created_at: n,
        updated_at: n,
        attempt_log: Vec::new(),
    }
}

/// Runs the sequence; returns what was read back along the way, for comparing the stores.
/// Runs the same calls on `store`; `keeps_analytics` is false for the Redis store, which saves
/// none (a cluster shares analytics in buckets of its own).
async fn exercise(store: Arc<dyn Store>, keeps_analytics: bool) -> Vec<String> {
    let mut seen = Vec::new();
    store.insert_app(&app("app-1"), &key("key000000001", "app-1", 2)).await.unwrap();
    assert!(matches!(
        store.insert_app(&app("app-1"), &key("key000000009", "app-1", 2)).await,
        Err(StoreError::Conflict)
    ));
    // A conflict on the key alone leaves no app behind.
    assert!(matches!(
        store.insert_app(&app("app-2"), &key("key000000001", "app-2", 2)).await,
        Err(StoreError::Conflict)
    ));
    assert!(matches!(store.update_app(&app("nope")).await, Err(StoreError::NotFound)));
    assert!(matches!(store.insert_key(&key("key000000001", "app-1", 3)).await, Err(StoreError::Conflict)));
    store.insert_key(&key("key000000002", "app-1", 3)).await.unwrap();
    let mut revoked = key("key000000002", "app-1", 3);
    revoked.revoked_at = Some(9);
    store.save_keys(&[revoked]).await.unwrap();
    store.touch_keys(&[("key000000001".into(), 7), ("key000000001".into(), 6)]).await.unwrap();
    // Nothing newer, or keys that do not exist: nothing to write, and no error.
    store.touch_keys(&[("key000000001".into(), 5), ("nokey0000000".into(), 9)]).await.unwrap();
    let mut renamed = app("app-1");
    renamed.name = "Renamed".into();
    store.update_app(&renamed).await.unwrap();
    let snap = store.snapshot().await.unwrap();
    assert_eq!(
        snap.apps.iter().map(|a| (a.app_id.as_str(), a.name.as_str())).collect::<Vec<_>>(),
        [("app-1", "Renamed")]
    );
    let keys: Vec<_> = snap.keys.iter().map(|k| (k.key_id.as_str(), k.last_used_at, k.revoked_at)).collect();
    assert_eq!(keys, [("key000000001", Some(7), None), ("key000000002", None, Some(9))]);
    seen.push(format!("{:?}", snap.keys));

    store.insert_webhook(&webhook("wh_1", "app-1")).await.unwrap();
    assert!(matches!(store.insert_webhook(&webhook("wh_1", "app-1")).await, Err(StoreError::Conflict)));
    assert!(matches!(store.update_webhook(&webhook("wh_none", "app-1")).await, Err(StoreError::NotFound)));
    let ds: Vec<DeliveryRecord> = (1..=3).map(|n| delivery(n, "wh_1")).collect();
    store.insert_deliveries(&ds).await.unwrap();
    let page = store.deliveries("wh_1", None, 2).await.unwrap();
    assert_eq!(page.iter().map(|d| d.created_at).collect::<Vec<_>>(), [3, 2], "newest first");
    let rest = store.deliveries("wh_1", Some(&page[1].delivery_id), 2).await.unwrap();
    assert_eq!(rest.iter().map(|d| d.created_at).collect::<Vec<_>>(), [1]);
    let mut due = store.due_deliveries(None).await.unwrap();
    due.sort_by_key(|d| d.due_at);
    assert_eq!(due.iter().map(|d| d.due_at).collect::<Vec<_>>(), [101, 102, 103]);

    let mut done = ds[0].clone();
    // 25 attempts: the log keeps the last 20, oldest first.
    for at in 26..=50 {
        (done.response_code, done.error, done.latency_ms, done.updated_at) =
            (Some(500), Some(format!("HTTP 500 at {at}")), Some(7), at);
        done.log_attempt();
    }
    (done.status, done.attempts, done.response_code, done.error, done.next_retry_at) =
        (DeliveryStatus::Failed, 25, Some(410), None, None);
    done.log_attempt();
    assert_eq!(done.attempt_log.len(), 20);
    assert_eq!(done.attempt_log[0].error.as_deref(), Some("HTTP 500 at 32"));
    assert_eq!(
        (done.attempt_log[19].response_code, done.attempt_log[19].error.as_deref()),
        (Some(410), None)
    );
    let health = WebhookHealth {
        webhook_id: "wh_1".into(),
        enabled: false,
        disabled_reason: Some("410".into()),
        consecutive_failures: 1,
        updated_at: 50,
    };
    let mut later = ds[1].clone();
    (later.status, later.attempts, later.next_retry_at) = (DeliveryStatus::Retrying, 1, Some(500));
    let ghost = delivery(99, "wh_1");
    store
        .save_attempts(&[
            AttemptRecord { delivery: done.clone(), health: Some(health) },
            AttemptRecord { delivery: later, health: None },
            AttemptRecord { delivery: ghost.clone(), health: None },
        ])
        .await
        .unwrap();
    assert_eq!(store.delivery(&done.delivery_id).await.unwrap(), Some(done.clone()));
    assert_eq!(store.delivery(&ghost.delivery_id).await.unwrap(), None, "unknown deliveries are skipped");
    store.save_attempts(&[AttemptRecord { delivery: ghost.clone(), health: None }]).await.unwrap();
    let mut due = store.due_deliveries(Some("wh_1")).await.unwrap();
    due.sort_by_key(|d| d.due_at);
    assert_eq!(due.iter().map(|d| d.due_at).collect::<Vec<_>>(), [103, 500]);
    let w = store.snapshot().await.unwrap().webhooks;
    assert_eq!(
        (w[0].enabled, w[0].disabled_reason.as_deref(), w[0].consecutive_failures),
        (false, Some("410"), 1)
    );
    assert_eq!(store.prune_deliveries(51).await.unwrap(), 1, "the failed one, last changed at 50");
    assert_eq!(store.deliveries("wh_1", None, 10).await.unwrap().len(), 2);
    seen.push(format!("{:?}", store.deliveries("wh_1", None, 10).await.unwrap()));

    let counts = MinuteCounts { connections_opened: 3, broadcasts: 2, delivered: 9, ..Default::default() };
    let rows = AnalyticsRows {
        minutes: vec![
            MinuteRow { app_id: "app-1".into(), minute: 60_000, counts },
            MinuteRow { app_id: "app-1".into(), minute: 0, counts },
        ],
        sketches: vec![
            SketchRow {
                app_id: "app-1".into(),
                level: 1,
                start: 0,
                expires_at: 90_000,
                sketch: "[1,null]".into(),
            },
            SketchRow {
                app_id: "app-1".into(),
                level: 3,
                start: 0,
                expires_at: 50_000,
                sketch: "[2,null]".into(),
            },
        ],
        users: Vec::new(),
    };
    store.save_analytics(rows, 0, 60_000).await.unwrap();
    let mut loaded = store.load_analytics(30_000).await.unwrap();
    loaded.minutes.sort_by_key(|m| m.minute);
    if keeps_analytics {
        assert_eq!(loaded.minutes, [MinuteRow { app_id: "app-1".into(), minute: 60_000, counts }]);
        let kept = SketchRow {
            app_id: "app-1".into(),
            level: 1,
            start: 0,
            expires_at: 90_000,
            sketch: "[1,null]".into(),
        };
        assert_eq!(loaded.sketches, [kept], "the expired sketch is forgotten");
    } else {
        assert_eq!(loaded, AnalyticsRows::default());
    }

    store.delete_webhook("wh_1").await.unwrap();
    assert!(matches!(store.delete_webhook("wh_1").await, Err(StoreError::NotFound)));
    assert_eq!(store.delivery(&ds[2].delivery_id).await.unwrap(), None, "deliveries go with their webhook");
    assert!(store.due_deliveries(None).await.unwrap().is_empty());

    store.insert_webhook(&webhook("wh_2", "app-1")).await.unwrap();
    store.insert_deliveries(&[delivery(7, "wh_2")]).await.unwrap();
    let mut deleted = renamed;
    deleted.deleted_at = Some(10);
    store.update_app(&deleted).await.unwrap();
    assert_eq!(store.purge_deleted(5).await.unwrap(), Vec::<String>::new(), "deleted after the cutoff");
    assert_eq!(store.purge_deleted(11).await.unwrap(), ["app-1"]);
    let snap = store.snapshot().await.unwrap();
    assert!(snap.apps.is_empty() && snap.keys.is_empty() && snap.webhooks.is_empty(), "{snap:?}");
    assert!(store.due_deliveries(None).await.unwrap().is_empty());
    assert!(store.load_analytics(0).await.unwrap().minutes.is_empty());
    store.ping().await.unwrap();

    // Server secrets: the first stored wins, later candidates are ignored.
    assert_eq!(store.server_secret("cookie", "first").await.unwrap(), "first");
    assert_eq!(store.server_secret("cookie", "second").await.unwrap(), "first");
    assert_eq!(store.server_secret("other", "third").await.unwrap(), "third");
    // Ended dashboard sessions.
    let later = roomcast::clock::now_ms() + 60_000;
    assert!(!store.session_revoked("sess-1").await.unwrap());
    store.revoke_session("sess-1", later).await.unwrap();
    store.revoke_session("sess-1", later).await.unwrap();
    assert!(store.session_revoked("sess-1").await.unwrap());
    assert!(!store.session_revoked("sess-2").await.unwrap());
    seen
}

/// Prunes a log longer than a page: finished deliveries go when they ended before the cutoff,
/// whatever their place; pending ones, ones finished later and ones made later stay. Returns
/// the ids left.
async fn prune_a_long_log(store: Arc<dyn Store>) -> Vec<String> {
    store.insert_app(&app("app-p"), &key("key0000000p1", "app-p", 2)).await.unwrap();
    store.insert_webhook(&webhook("wh_p", "app-p")).await.unwrap();
    // 1,300 deliveries made at 1..=1300; every third still pending; 1..=1000 otherwise failed
    // at their creation time + 10; 1001..=1300 failed at 5,000.
    let ds: Vec<DeliveryRecord> = (1..=1300).map(|n| delivery(n, "wh_p")).collect();
    store.insert_deliveries(&ds).await.unwrap();
    let ended: Vec<AttemptRecord> = ds
        .iter()
        .filter(|d| d.created_at % 3 != 0)
        .map(|d| {
            let mut d = d.clone();
            d.status = DeliveryStatus::Failed;
            d.next_retry_at = None;
            d.updated_at = if d.created_at <= 1000 { d.created_at + 10 } else { 5000 };
            AttemptRecord { delivery: d, health: None }
        })
        .collect();
    store.save_attempts(&ended).await.unwrap();
    // Cutoff 1,011: failed ones made up to 1,000 go (667 of them); failed later ones stay.
    assert_eq!(store.prune_deliveries(1011).await.unwrap(), 667);
    assert_eq!(store.prune_deliveries(1011).await.unwrap(), 0, "nothing twice");
    let left: Vec<DeliveryRecord> = store.deliveries("wh_p", None, 2000).await.unwrap();
    assert_eq!(left.len(), 1300 - 667);
    assert!(left.iter().all(|d| d.created_at % 3 == 0 || d.created_at > 1000));
    assert_eq!(store.due_deliveries(Some("wh_p")).await.unwrap().len(), 433, "pending ones untouched");
    left.into_iter().map(|d| d.delivery_id).collect()
}

#[tokio::test]
async fn sqlite_and_redis_stores_behave_alike() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("s.db")).unwrap());
    let redis_server = RedisServer::start().await;
    let redis: Arc<dyn Store> =
        Arc::new(RedisStore::connect(&redis_server.url(), false, &Default::default()).await.unwrap());
    let before = redis.change_marker().await.unwrap();
    let from_sqlite = exercise(sqlite.clone(), true).await;
    let from_redis = exercise(redis.clone(), false).await;
    assert_eq!(from_sqlite, from_redis);
    assert!(redis.change_marker().await.unwrap() > before, "writes move the Redis store's version");
    assert_eq!(prune_a_long_log(sqlite).await, prune_a_long_log(redis).await);
}

#[tokio::test]
async fn the_redis_store_behaves_alike_on_a_redis_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("s.db")).unwrap());
    let cluster = RedisCluster::start().await;
    let redis: Arc<dyn Store> =
        Arc::new(RedisStore::connect(&cluster.urls(), true, &Default::default()).await.unwrap());
    // Every script and transaction keeps to one slot (the `{store}` tag), or a Redis Cluster
    // would refuse it with CROSSSLOT.
    assert_eq!(exercise(sqlite.clone(), true).await, exercise(redis.clone(), false).await);
    assert_eq!(prune_a_long_log(sqlite).await, prune_a_long_log(redis).await);
}

//! `GET /api/analytics` (DESIGN §5): exact counters after a scripted sequence, across a restart.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{TestHub, assert_error, spawn_hub, spawn_hub_in};

fn sum(series: &Value, field: &str) -> u64 {
    series.as_array().unwrap().iter().map(|p| p[field].as_u64().unwrap()).sum()
}

async fn report(hub: &TestHub, key: &str, query: &str) -> Value {
    let (status, v) = hub.get(&format!("/api/analytics{query}"), key).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    v
}

#[tokio::test]
async fn counters_move_exactly_and_survive_a_restart() {
    let hub = spawn_hub().await;
    let app = hub.create_app(json!({"app_id": "stats-app", "client_events": true})).await;
    let quiet = hub.create_app(json!({"app_id": "quiet-app"})).await;
    let mut u1a = hub.subscriber(&app, json!({"user_id": "u1", "can_publish": true}), &["room"]).await;
    let _u1b = hub.subscriber(&app, json!({"user_id": "u1"}), &["room"]).await;
    let mut u2 = hub.subscriber(&app, json!({"user_id": "u2"}), &[]).await;
    let _anon = hub.subscriber(&app, json!({}), &[]).await;
    for n in 0..3 {
        hub.broadcast(&app, "room", "e", json!(n)).await;
    }
    for _ in 0..3 {
        assert_eq!(u1a.next_json().await["event"], "e");
    }
    // A client event reaches the other tab only: one delivery.
    u1a.send_json(json!({"type": "publish", "room": "room", "event": "typing", "data": {}})).await;
    u1a.roundtrip(1).await;

    let v = report(&hub, &app.api_key, "?period=1h").await;
    assert_eq!((v["app_id"].as_str(), v["period"].as_str()), (Some("stats-app"), Some("1h")));
    let m = &v["metrics"];
    assert_eq!(m["connections"], json!({"total": 4, "current": 4, "peak": 4}));
    assert_eq!(m["events"], json!({"total": 4, "broadcasts": 3, "client_events": 1, "delivered": 7}));
    assert_eq!(m["users"], json!({"online": 2, "total": 2}));
    assert_eq!(m["webhooks"], json!({"delivered": 0, "failed": 0}));
    let series = &v["series"];
    assert_eq!(series.as_array().unwrap().len(), 60);
    assert_eq!((sum(series, "events"), sum(series, "delivered")), (4, 7));
    assert!(series.as_array().unwrap().iter().any(|p| p["connections"] == 4), "{series}");
    let ts: Vec<i64> = series.as_array().unwrap().iter().map(|p| p["t"].as_i64().unwrap()).collect();
    assert!(ts.windows(2).all(|w| w[1] - w[0] == 60_000), "one-minute steps, oldest first");
    assert!(v["timestamp"].as_i64().unwrap() >= *ts.last().unwrap());

    // A user leaving: online drops, the period still saw them.
    u2.stream.close(None).await.unwrap();
    u2.closed().await;
    let m = report(&hub, &app.api_key, "").await["metrics"].clone();
    assert_eq!((m["users"]["online"].as_u64(), m["users"]["total"].as_u64()), (Some(1), Some(2)));
    assert_eq!(m["connections"]["current"], 3);
    // Longer periods have coarser series and the same totals; tenants are apart.
    for (period, points) in [("24h", 24), ("7d", 28), ("30d", 30)] {
        let v = report(&hub, &app.api_key, &format!("?period={period}")).await;
        assert_eq!(v["series"].as_array().unwrap().len(), points, "{period}");
        assert_eq!(v["metrics"]["events"]["total"], 4, "{period}");
    }
    let other = report(&hub, &quiet.api_key, "").await;
    assert_eq!(other["metrics"]["events"]["total"], 0);
    assert_eq!(other["metrics"]["connections"]["total"], 0);

    // Bad input and access.
    let got = hub.get("/api/analytics?period=2h", &app.api_key).await;
    assert_error(&got, 400, "invalid_request");
    assert!(got.1["error"].as_str().unwrap().contains("period"));
    assert_error(&hub.get("/api/analytics?app_id=quiet-app", &app.api_key).await, 403, "forbidden");
    let admin = hub.admin_key.clone();
    assert_error(&hub.get("/api/analytics", &admin).await, 400, "invalid_request");
    assert_eq!(report(&hub, &admin, "?app_id=stats-app").await["metrics"]["events"]["broadcasts"], 3);
    let (_, narrow) =
        hub.post("/api/applications/stats-app/keys", &app.api_key, json!({"scopes": ["rooms:read"]})).await;
    let refused = hub.get("/api/analytics", narrow["api_key"].as_str().unwrap()).await;
    assert_error(&refused, 403, "insufficient_scope");

    // Everything counted survives a restart; the live numbers start again from zero.
    drop((u1a, _u1b, _anon));
    let (dir, admin, _) = hub.stop().await;
    let hub = spawn_hub_in(dir, admin, |_| {}).await;
    let m = report(&hub, &app.api_key, "?period=1h").await["metrics"].clone();
    assert_eq!(m["connections"]["total"], 4);
    assert_eq!(m["connections"]["current"], 0);
    assert_eq!(m["connections"]["peak"], 4);
    assert_eq!(m["events"], json!({"total": 4, "broadcasts": 3, "client_events": 1, "delivered": 7}));
    assert_eq!(m["users"], json!({"online": 0, "total": 2}));
}

/// Distinct users in a cluster go into Redis's own HyperLogLogs: 100,000 users flushed by a node
/// are counted within 2 %, a user seen again is not counted twice, and Redis holds a few fixed-size
/// sketches for them, not a record per user.
#[tokio::test]
async fn distinct_users_in_redis_are_counted_within_two_percent_in_fixed_memory() {
    use std::sync::Arc;
    use std::sync::atomic::AtomicU64;

    use roomcast::analytics::redis::SharedAnalytics;
    use roomcast::analytics::{AppDelta, Period, Report};

    let redis = crate::support::RedisServer::start().await;
    let tls = roomcast::redis_conn::TlsFiles::default();
    let (_, commands) = roomcast::redis_conn::connect(&redis.url(), false, &tls).await.unwrap();
    let shared = SharedAnalytics::new(commands, "node-x", 10_000, Arc::new(AtomicU64::new(0)));
    let now = roomcast::clock::now_ms();
    let delta = |users: std::ops::Range<u32>| AppDelta {
        app_id: Arc::from("hll-app"),
        seen: users.map(|n| (Arc::from(format!("user-{n}")), now)).collect(),
        ..AppDelta::default()
    };
    for chunk in 0..10 {
        shared.flush(&[delta(chunk * 10_000..(chunk + 1) * 10_000)]).await.unwrap();
    }
    shared.flush(&[delta(0..5_000)]).await.unwrap();
    for period in [Period::Hour, Period::Day, Period::Week, Period::Month] {
        let r = shared.report("hll-app", period, now, &Report::default()).await.unwrap();
        let error = (r.users_total as f64 - 100_000.0).abs() / 100_000.0;
        assert!(error < 0.02, "{period:?}: {} ({:.2} %)", r.users_total, error * 100.0);
    }
    let keys = redis.cli(&["--scan", "--pattern", "rc:an:{hll-app}:u*"]).await;
    assert_eq!(keys.lines().count(), 4, "one sketch per level: {keys}");
    for key in keys.lines() {
        let bytes: u64 = redis.cli(&["memory", "usage", key]).await.trim().parse().unwrap();
        assert!(bytes < 16_000, "{key}: {bytes} bytes");
        assert!(redis.cli(&["pttl", key]).await.trim().parse::<i64>().unwrap() > 0, "{key} expires");
    }
}

//! State across nodes: presence, records in Redis, webhook deliveries, analytics.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_spans_the_cluster() {
    let redis = RedisServer::start().await;
    let (a, b, _shared) = two_nodes(&redis).await;
    let app = a.create_app(json!({"app_id": "presence-app"})).await;
    known_on(&b, &app).await;

    let (mut alice, ack) = member(&a, &app, "alice").await;
    assert_eq!(user_ids(&ack["presence"]), ["alice"]);
    let (mut bob, ack) = member(&b, &app, "bob").await;
    assert_eq!(
        (user_ids(&ack["presence"]), ack["member_count"].as_u64()),
        (vec!["alice", "bob"], Some(2)),
        "{ack}"
    );
    assert_eq!(ack["presence"][0]["user_info"], json!({"name": "alice"}));
    let f = alice.next_json().await;
    assert_eq!(member_event(&f), (Some("user-joined"), Some("bob")), "{f}");

    // A second tab of alice on the other node is not a new member.
    let (mut alice2, ack) = member(&b, &app, "alice").await;
    assert_eq!(ack["member_count"], 2);
    bob.roundtrip(3).await;
    // Alice leaves node A but is still on B: nobody hears user-left.
    alice.stream.close(None).await.unwrap();
    alice.closed().await;
    bob.roundtrip(4).await;
    let (_, v) = a.get("/api/rooms/presence-team/presence", &app.api_key).await;
    assert_eq!((user_ids(&v["members"]), v["member_count"].as_u64()), (vec!["alice", "bob"], Some(2)), "{v}");
    // Her last tab leaves: user-left, once.
    alice2.stream.close(None).await.unwrap();
    alice2.closed().await;
    let f = bob.next_json().await;
    assert_eq!(member_event(&f), (Some("user-left"), Some("alice")), "{f}");
    bob.roundtrip(5).await;
    let (_, v) = a.get("/api/rooms/presence-team/presence", &app.api_key).await;
    assert_eq!(user_ids(&v["members"]), ["bob"], "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_in_redis_reach_every_node_within_a_second() {
    let redis = RedisServer::start().await;
    let (a, b) = two_redis_nodes(&redis).await;
    // Both started with the same admin key: registered once, accepted by both.
    for hub in [&a, &b] {
        assert_eq!(hub.get("/api/test", &hub.admin_key).await.0, StatusCode::OK);
    }
    let app = a.create_app(json!({"app_id": "redis-store-app"})).await;
    let took = within(|| async { b.get("/api/test", &app.api_key).await.0 == StatusCode::OK }).await;
    assert!(took < Duration::from_secs(1), "a new app reached node B after {took:?}");
    let (_, list) = b.get("/api/applications/redis-store-app", &b.admin_key).await;
    assert_eq!(list["app"]["app_id"], "redis-store-app", "{list}");

    // A narrow key, revoked on A: refused on B within a second.
    let (status, v) = a
        .post("/api/applications/redis-store-app/keys", &app.api_key, json!({"scopes": ["rooms:read"]}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let (narrow, key_id) =
        (v["api_key"].as_str().unwrap().to_owned(), v["key"]["key_id"].as_str().unwrap().to_owned());
    within(|| async { b.get("/api/rooms", &narrow).await.0 == StatusCode::OK }).await;
    let (status, _) = a
        .send(
            reqwest::Method::DELETE,
            &format!("/api/applications/redis-store-app/keys/{key_id}"),
            &app.api_key,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let took = within(|| async { b.get("/api/rooms", &narrow).await.0 == StatusCode::UNAUTHORIZED }).await;
    assert!(took < Duration::from_secs(1), "a revoked key still worked on node B after {took:?}");

    // A regenerated secret: tokens signed with the old one stop working on B.
    let old_token = a.token(&app, json!({"user_id": "u"})).await;
    assert!(b.try_connect(&old_token).await.is_ok());
    let (status, v) =
        a.post("/api/applications/redis-store-app/regenerate-secret", &app.api_key, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let took = within(|| async { b.try_connect(&old_token).await.is_err() }).await;
    assert!(took < Duration::from_secs(1), "an old token still connected to node B after {took:?}");

    // Webhooks live there too; the app's key works on both nodes for them.
    let (status, v) =
        a.post("/api/webhooks", &app.api_key, json!({"url": "https://example.com/h", "events": ["*"]})).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let id = v["webhook"]["id"].as_str().unwrap().to_owned();
    within(|| async { b.get(&format!("/api/webhooks/{id}"), &app.api_key).await.0 == StatusCode::OK }).await;
    // A duplicate app id is refused whichever node is asked.
    let got = b.post("/api/applications", &b.admin_key, json!({"app_id": "redis-store-app"})).await;
    assert_error(&got, 409, "conflict");

    // `roomcast admin create-key` writes to the same Redis; running nodes accept the key at once.
    let dir = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_roomcast"))
        .args(["admin", "create-key", "--name", "ops"])
        .current_dir(dir.path())
        .env("ROOMCAST_STORE__KIND", "redis")
        .env("ROOMCAST_CLUSTER__REDIS_URL", redis.url())
        .env_remove("ROOMCAST_ADMIN_KEY")
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let new_key = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let took = within(|| async { b.get("/api/test", &new_key).await.0 == StatusCode::OK }).await;
    assert!(took < Duration::from_secs(1), "a key made with the CLI reached node B after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_node_takes_over_the_deliveries_of_a_stopped_one() {
    let redis = RedisServer::start().await;
    let admin_key = PresentedKey::generate(KeyKind::Admin).plaintext();
    let node = |name: &'static str| {
        let (url, admin_key) = (redis.url(), admin_key.clone());
        async move {
            spawn_hub_in(tempfile::tempdir().unwrap(), admin_key, move |c| {
                c.cluster.redis_url = Some(url);
                c.cluster.node_id = Some(name.to_owned());
                c.store.kind = roomcast::config::StoreKind::Redis;
                c.webhooks.allow_private_targets = true;
                c.webhooks.retry_delays_ms = vec![300, 300, 300, 300, 300, 300, 300, 300];
                c.webhooks.claim_overdue_after_ms = 1000;
            })
            .await
        }
    };
    let a = node("node-a").await;
    let b = node("node-b").await;
    let app = a.create_app(json!({"app_id": "takeover-app"})).await;
    // The receiver is down while node A makes its first attempts.
    let spare = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = spare.local_addr().unwrap().port();
    drop(spare);
    let (status, v) = a
        .post(
            "/api/webhooks",
            &app.api_key,
            json!({"url": format!("http://127.0.0.1:{port}/h"), "events": ["order"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let id = v["webhook"]["id"].as_str().unwrap().to_owned();
    within(|| async { b.get(&format!("/api/webhooks/{id}"), &app.api_key).await.0 == StatusCode::OK }).await;
    a.broadcast(&app, "shop", "order", json!({"n": 1})).await;
    within(|| async {
        let (_, v) = b.get(&format!("/api/webhooks/{id}/deliveries"), &app.api_key).await;
        v["deliveries"][0]["status"] == "retrying"
    })
    .await;
    // Node A stops for good; the receiver comes up; node B sends the delivery.
    a.stop().await;
    let mut receiver = Receiver::on(tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap());
    let hit = receiver.next().await;
    let (delivery_id, body) = (hit.header("x-roomcast-delivery-id").to_owned(), hit.json());
    assert_eq!(body["data"], json!({"n": 1}));
    let log = b.get(&format!("/api/webhooks/{id}/deliveries"), &app.api_key).await.1;
    let entry = &log["deliveries"][0];
    assert_eq!(entry["delivery_id"], delivery_id.as_str(), "the same delivery, not a new one");
    within(|| async {
        b.get(&format!("/api/webhooks/{id}/deliveries"), &app.api_key).await.1["deliveries"][0]["status"]
            == "succeeded"
    })
    .await;
    // Delivered once.
    receiver.quiet(Duration::from_millis(500)).await;
}

/// The `metrics` of `GET /api/analytics` on `hub`.
pub(super) async fn analytics(hub: &TestHub, app: &TestApp, period: &str) -> Value {
    let (status, v) = hub.get(&format!("/api/analytics?period={period}"), &app.api_key).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    v
}

/// Polls both nodes until each reports `expected` as its metrics.
async fn both_report(nodes: &[&TestHub], app: &TestApp, expected: Value) {
    for hub in nodes {
        let mut last = Value::Null;
        let started = Instant::now();
        loop {
            let v = analytics(hub, app, "1h").await;
            if v["metrics"] == expected {
                break;
            }
            assert!(started.elapsed() < WAIT, "expected {expected}, last report {last}");
            last = v["metrics"].clone();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analytics_count_each_event_once_for_the_whole_cluster() {
    let redis = RedisServer::start().await;
    let (a, b) = two_redis_nodes(&redis).await;
    let app = a.create_app(json!({"app_id": "stats-app", "client_events": true})).await;
    within(|| async { b.get("/api/test", &app.api_key).await.0 == StatusCode::OK }).await;
    // u1 on both nodes, u2 on B; three broadcasts from A, two from B, a client event on B.
    let mut u1a = a.subscriber(&app, json!({"user_id": "u1"}), &["room"]).await;
    let mut u1b = b.subscriber(&app, json!({"user_id": "u1", "can_publish": true}), &["room"]).await;
    let mut u2 = b.subscriber(&app, json!({"user_id": "u2"}), &["room"]).await;
    for n in 0..5 {
        let hub = if n < 3 { &a } else { &b };
        hub.broadcast(&app, "room", "e", json!(n)).await;
    }
    u1b.send_json(json!({"type": "publish", "room": "room", "event": "typing", "data": {}})).await;
    // The publisher of the client event does not get it back.
    for (ws, n) in [(&mut u1a, 6), (&mut u1b, 5), (&mut u2, 6)] {
        events(ws, n).await;
    }
    // 5 broadcasts × 3 subscribers + 1 client event × 2 others = 17 deliveries; 3 connections
    // opened, 2 users seen, over the whole time.
    let expected = |current: u64, online: u64| {
        json!({
            "connections": {"total": 3, "current": current, "peak": 3},
            "events": {"total": 6, "broadcasts": 5, "client_events": 1, "delivered": 17},
            "users": {"online": online, "total": 2},
            "webhooks": {"delivered": 0, "failed": 0},
        })
    };
    both_report(&[&a, &b], &app, expected(3, 2)).await;
    for (period, points) in [("24h", 24), ("7d", 28), ("30d", 30)] {
        let v = analytics(&b, &app, period).await;
        let series = v["series"].as_array().unwrap();
        assert_eq!(series.len(), points, "{period}");
        let events: u64 = series.iter().map(|p| p["events"].as_u64().unwrap()).sum();
        let delivered: u64 = series.iter().map(|p| p["delivered"].as_u64().unwrap()).sum();
        assert_eq!((events, delivered), (6, 17), "{period}: {v}");
        assert_eq!(v["metrics"]["connections"]["total"], 3, "{period}");
    }

    // u2 leaves B: one user online, two connections, the period still saw both users.
    u2.stream.close(None).await.unwrap();
    u2.closed().await;
    both_report(&[&a, &b], &app, expected(2, 1)).await;

    // Node A stops: its counts stay in the cluster's, its connection is gone from `current`.
    drop(u1a);
    a.stop().await;
    both_report(&[&b], &app, expected(1, 1)).await;
}

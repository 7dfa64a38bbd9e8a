//! Cluster consistency (DESIGN §7): what one node wrote is in force on the other for the very
//! next request, forged credentials cost the store a bounded number of reads, and disabling or
//! deleting an app closes its connections on every node. Two nodes in this process on a real
//! `redis-server`, their records in Redis.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::cluster::{nodes_adjusted, two_redis_nodes};
use crate::support::{RedisServer, TestApp, TestHub, assert_error};
use roomcast::auth::api_key::PresentedKey;
use roomcast::store::KeyKind;

/// `roomcast_store_lookups_total{outcome}` on `hub`.
async fn lookups(hub: &TestHub, outcome: &str) -> u64 {
    let text = hub.http.get(hub.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let prefix = format!("roomcast_store_lookups_total{{outcome=\"{outcome}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&prefix)).map_or(0, |n| n.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_one_node_wrote_is_in_force_on_the_other_at_once() {
    let redis = RedisServer::start().await;
    // Records in Redis; caches refresh on change notices only. Every request to B below is sent
    // the moment A answered, without waiting for B to hear of the change.
    let (a, b) = two_redis_nodes(&redis).await;

    // An app created on A: its key broadcasts through B, B mints its tokens, and a token minted
    // on A connects to B.
    let app = a.create_app(json!({"app_id": "ryw-app"})).await;
    assert_eq!(b.broadcast(&app, "room", "e", json!(1)).await["subscriber_count"], 0);
    let on_b = b.token(&app, json!({"user_id": "bea"})).await;
    b.connect(&on_b).await;
    let from_a = a.token(&app, json!({"user_id": "al"})).await;
    b.connect(&from_a).await;
    let other = a.create_app(json!({"app_id": "ryw-other"})).await;
    let (status, v) = b.get("/api/applications/ryw-other", &b.admin_key).await;
    assert_eq!((status, v["app"]["app_id"].as_str()), (StatusCode::OK, Some("ryw-other")), "{v}");
    let (status, v) = b.get("/api/test", &other.api_key).await;
    assert_eq!(status, StatusCode::OK, "{v}");

    // A key created on A works on B.
    let (status, v) = a
        .post("/api/applications/ryw-app/keys", &app.api_key, json!({"name": "ci", "scopes": ["rooms:read"]}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let (status, v) = b.get("/api/rooms", v["api_key"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{v}");

    // A secret regenerated on A: B mints with the new one and accepts tokens signed with it.
    let (status, v) = a.post("/api/applications/ryw-app/regenerate-secret", &app.api_key, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let renewed = TestApp { secret: v["app_secret"].as_str().unwrap().to_owned(), ..app.clone() };
    let signed = a.token(&renewed, json!({})).await;
    b.connect(&signed).await;
    b.token(&renewed, json!({})).await;

    // A webhook created on A can be read and changed through B.
    let hook = json!({"url": "https://example.com/hook", "events": ["*"]});
    let (status, v) = a.post("/api/webhooks", &app.api_key, hook).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let id = v["webhook"]["id"].as_str().unwrap().to_owned();
    let (status, v) = b.get(&format!("/api/webhooks/{id}"), &app.api_key).await;
    assert_eq!((status, v["webhook"]["id"].as_str()), (StatusCode::OK, Some(id.as_str())), "{v}");
    let (status, v) = b
        .send(reqwest::Method::PATCH, &format!("/api/webhooks/{id}"), &app.api_key, json!({"events": ["e"]}))
        .await;
    assert_eq!((status, &v["webhook"]["events"]), (StatusCode::OK, &json!(["e"])), "{v}");

    // Changes made on A one after the other through both nodes are all kept (B writes from the
    // store's version, not its cache's).
    let (status, _) = a.put("/api/applications/ryw-app", &app.api_key, json!({"name": "Renamed"})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, v) = b.put("/api/applications/ryw-app", &app.api_key, json!({"rate_limit": 500})).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(
        (v["app"]["name"].as_str(), v["app"]["rate_limit"].as_u64()),
        (Some("Renamed"), Some(500)),
        "{v}"
    );

    // Without any notice at all (a key written straight into the store, as a node whose
    // announcement was lost would leave it), B asks the store before refusing.
    let presented = PresentedKey::generate(KeyKind::App);
    let record = roomcast::store::KeyRecord {
        key_id: presented.key_id.clone(),
        kind: KeyKind::App,
        app_id: Some("ryw-app".into()),
        name: "direct".into(),
        scopes: vec!["rooms:read".into()],
        secret_hash: presented.secret_hash(),
        primary: false,
        created_at: 1,
        expires_at: None,
        last_used_at: None,
        revoked_at: None,
    };
    let found_before = lookups(&b, "found").await;
    redis
        .cli(&["hset", "rc:{store}:keys", &presented.key_id, &serde_json::to_string(&record).unwrap()])
        .await;
    let (status, v) = b.get("/api/test", &presented.plaintext()).await;
    assert_eq!(
        (status, v["key_prefix"].as_str()),
        (StatusCode::OK, Some(presented.prefix().as_str())),
        "{v}"
    );
    assert_eq!(lookups(&b, "found").await, found_before + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_credentials_cost_the_store_a_bounded_number_of_reads() {
    let redis = RedisServer::start().await;
    let (_a, b) = nodes_adjusted(&redis.url(), false, |c| c.limits.store_lookups_per_s = 20).await;
    let read = |hub: &TestHub| {
        let hub = hub.url("/metrics");
        async move {
            let text = crate::support::http_client().get(hub).send().await.unwrap().text().await.unwrap();
            let count = |outcome: &str| -> u64 {
                let prefix = format!("roomcast_store_lookups_total{{outcome=\"{outcome}\"}} ");
                text.lines().find_map(|l| l.strip_prefix(&prefix)).map_or(0, |n| n.parse().unwrap())
            };
            (count("found") + count("missing"), count("recent"), count("throttled"))
        }
    };
    let (reads_before, recent_before, _) = read(&b).await;
    // One forged key, again and again: one read per second at most.
    let forged = PresentedKey::generate(KeyKind::App).plaintext();
    let started = Instant::now();
    for _ in 0..100 {
        assert_error(&b.get("/api/test", &forged).await, 401, "invalid_key");
    }
    let (reads, recent, _) = read(&b).await;
    assert!(reads - reads_before <= 1 + started.elapsed().as_secs(), "{} reads", reads - reads_before);
    assert!(recent - recent_before >= 99 - started.elapsed().as_secs(), "{recent}");
    // 300 distinct forged keys: the budget (20 per second) bounds the reads; the rest are
    // refused without one.
    let started = Instant::now();
    for _ in 0..300 {
        let forged = PresentedKey::generate(KeyKind::App).plaintext();
        assert_error(&b.get("/api/test", &forged).await, 401, "invalid_key");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (after, _, throttled) = read(&b).await;
    let distinct = after - reads;
    assert!(distinct as f64 <= 20.0 + 20.0 * elapsed + 1.0, "{distinct} reads in {elapsed:.2} s");
    assert!(throttled >= 300 - distinct, "{throttled} throttled, {distinct} read");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabling_or_deleting_an_app_closes_its_connections_on_every_node() {
    let redis = RedisServer::start().await;
    let (a, b) = two_redis_nodes(&redis).await;
    let app = a.create_app(json!({"app_id": "stop-app"})).await;
    let mut on_a = a.subscriber(&app, json!({}), &["room"]).await;
    let mut on_b = b.subscriber(&app, json!({}), &["room"]).await;
    let (status, v) = a.put("/api/applications/stop-app", &a.admin_key, json!({"status": "disabled"})).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let answered = Instant::now();
    assert!(matches!(on_b.closed().await, crate::support::Ending::Closed(4003)));
    assert!(answered.elapsed() < Duration::from_secs(1), "B closed after {:?}", answered.elapsed());
    assert!(matches!(on_a.closed().await, crate::support::Ending::Closed(4003)));
    // Refused on B at once, too.
    assert_error(&b.get("/api/rooms", &app.api_key).await, 403, "app_disabled");

    // Enabled again through B, deleted through A: B's connections close with 4003 as well.
    let (status, v) = b.put("/api/applications/stop-app", &b.admin_key, json!({"status": "enabled"})).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let mut on_b = b.subscriber(&app, json!({}), &["room"]).await;
    let (status, v) =
        a.send(reqwest::Method::DELETE, "/api/applications/stop-app", &a.admin_key, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let answered = Instant::now();
    assert!(matches!(on_b.closed().await, crate::support::Ending::Closed(4003)));
    assert!(answered.elapsed() < Duration::from_secs(1), "B closed after {:?}", answered.elapsed());
    assert_error(&b.get("/api/applications/stop-app", &b.admin_key).await, 404, "not_found");
}

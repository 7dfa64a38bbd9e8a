//! Cluster mode (DESIGN §7) with a real `redis-server` on a free port and two roomcast nodes in
//! this process. The nodes share one SQLite file for now (apps and keys in Redis come later), so
//! an app created on one is seen by the other at its next cache reload.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{RedisServer, TestApp, TestHub, WAIT, Ws, assert_error, spawn_hub_in};
use roomcast::auth::api_key::PresentedKey;
use roomcast::store::KeyKind;

/// Two nodes on `redis`, sharing a store.
async fn two_nodes(redis: &RedisServer) -> (TestHub, TestHub, tempfile::TempDir) {
    let shared = tempfile::tempdir().unwrap();
    let admin_key = PresentedKey::generate(KeyKind::Admin).plaintext();
    let mut nodes = Vec::new();
    for name in ["node-a", "node-b"] {
        let (url, path) = (redis.url(), shared.path().join("roomcast.db"));
        let hub = spawn_hub_in(tempfile::tempdir().unwrap(), admin_key.clone(), move |c| {
            c.cluster.redis_url = Some(url);
            c.cluster.node_id = Some(name.to_owned());
            c.store.path = path;
            c.store.reload_interval_ms = 50;
        })
        .await;
        nodes.push(hub);
    }
    let b = nodes.pop().unwrap();
    let a = nodes.pop().unwrap();
    (a, b, shared)
}

/// Waits until `hub` knows `app` (its cache reloads from the shared store).
async fn known_on(hub: &TestHub, app: &TestApp) {
    let deadline = Instant::now() + WAIT;
    while hub.get("/api/test", &app.api_key).await.0 != StatusCode::OK {
        assert!(Instant::now() < deadline, "the app never reached the other node");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn health(hub: &TestHub) -> (StatusCode, Value) {
    let res = hub.http.get(hub.url("/health")).send().await.unwrap();
    crate::support::split(res).await
}

/// Reads `n` events; returns their `(data, offset)`.
async fn events(ws: &mut Ws, n: usize) -> Vec<(Value, u64)> {
    let mut out = Vec::new();
    while out.len() < n {
        let f = ws.next_json().await;
        if f["type"] == "event" {
            out.push((f["data"].clone(), f["offset"].as_u64().unwrap()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_delivers_every_event_once_in_one_order() {
    let redis = RedisServer::start().await;
    let (a, b, _shared) = two_nodes(&redis).await;
    let app = a.create_app(json!({"app_id": "cluster-app"})).await;
    known_on(&b, &app).await;
    for hub in [&a, &b] {
        let (status, v) = health(hub).await;
        assert_eq!((status, v["redis"].as_str()), (StatusCode::OK, Some("ok")), "{v}");
    }
    let mut on_a = a.subscriber(&app, json!({}), &["room"]).await;
    let mut on_b = b.subscriber(&app, json!({}), &["room"]).await;

    // Publishers on both nodes, interleaved: one order, one set of offsets, everywhere.
    for n in 0..40 {
        let hub = if n % 2 == 0 { &a } else { &b };
        hub.broadcast(&app, "room", "e", json!(n)).await;
    }
    let got_a = events(&mut on_a, 40).await;
    let got_b = events(&mut on_b, 40).await;
    assert_eq!(got_a, got_b, "both nodes' subscribers see the same events, offsets and order");
    let data: Vec<i64> = got_a.iter().map(|(d, _)| d.as_i64().unwrap()).collect();
    assert_eq!(data, (0..40).collect::<Vec<_>>(), "each once, in publish order");
    assert!(got_a.windows(2).all(|w| w[1].1 == w[0].1 + 1), "cluster-wide offsets: {got_a:?}");
    // Nothing more: the publishing node's own subscriber got each event once, not twice.
    for ws in [&mut on_a, &mut on_b] {
        ws.roundtrip(77).await;
    }

    // Client events cross nodes too.
    let mut talker = a.subscriber(&app, json!({"user_id": "t", "can_publish": true}), &["room"]).await;
    let (status, v) =
        a.put("/api/applications/cluster-app", &a.admin_key, json!({"client_events": true})).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let deadline = Instant::now() + WAIT;
    loop {
        talker
            .send_json(
                json!({"type": "publish", "room": "room", "event": "typing", "data": {"x": 1}, "id": 5}),
            )
            .await;
        talker.send_json(json!({"type": "ping", "id": 6})).await;
        let reply = talker.next_json().await;
        if reply["type"] == "pong" {
            break;
        }
        assert_eq!(talker.next_json().await["type"], "pong");
        assert!(Instant::now() < deadline, "client events never enabled: {reply}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let f = on_b.next_json().await;
    assert_eq!((f["event"].as_str(), &f["data"]), (Some("typing"), &json!({"x": 1})), "{f}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_is_reported_and_refused_then_rooms_resume() {
    let mut redis = RedisServer::start().await;
    let (a, b, _shared) = two_nodes(&redis).await;
    let app = a.create_app(json!({"app_id": "outage-app"})).await;
    known_on(&b, &app).await;
    let mut on_a = a.subscriber(&app, json!({}), &["room"]).await;
    let mut on_b = b.subscriber(&app, json!({}), &["room"]).await;
    a.broadcast(&app, "room", "e", json!("before")).await;
    assert_eq!(events(&mut on_b, 1).await[0].0, "before");
    events(&mut on_a, 1).await;

    redis.kill();
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, v) = health(&a).await;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!((v["ok"].as_bool(), v["redis"].as_str()), (Some(false), Some("down")), "{v}");
            break;
        }
        assert!(Instant::now() < deadline, "health never said redis down: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Refused, never a silent partial success; clients stay connected.
    let got =
        a.post("/api/broadcast", &app.api_key, json!({"room": "room", "event": "e", "data": "lost"})).await;
    assert_error(&got, 503, "unavailable");

    redis.restart().await;
    for hub in [&a, &b] {
        let deadline = Instant::now() + WAIT;
        while health(hub).await.0 != StatusCode::OK {
            assert!(Instant::now() < deadline, "a node never came back");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Both nodes subscribed their rooms again: events flow, each once.
    b.broadcast(&app, "room", "e", json!("after")).await;
    for ws in [&mut on_a, &mut on_b] {
        let got = events(ws, 1).await;
        assert_eq!(got[0].0, "after");
        ws.roundtrip(9).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_is_single_use_across_nodes() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let redis = RedisServer::start().await;
    let (a, b, _shared) = two_nodes(&redis).await;
    let app = a.create_app(json!({"app_id": "ticket-app"})).await;
    known_on(&b, &app).await;
    let (status, v) = a
        .post(
            "/api/tickets",
            &app.api_key,
            json!({"user_id": "ann", "rooms": ["team-*"], "can_publish": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let ticket = v["ticket"].as_str().unwrap().to_owned();
    let redeem = |hub: &TestHub| {
        let req = format!("ws://{}/ws?ticket={ticket}", hub.addr).into_client_request().unwrap();
        Ws::open(req)
    };
    // Bought on A, used on B, with the identity and grants it was bought for.
    let (mut ws, hello) = redeem(&b).await.expect("the ticket works on another node");
    assert_eq!(
        (hello["type"].as_str(), hello["user_id"].as_str()),
        (Some("connected"), Some("ann")),
        "{hello}"
    );
    ws.subscribe("team-red").await;
    ws.send_json(json!({"type": "subscribe", "room": "other", "id": 2})).await;
    assert_eq!(ws.next_json().await["code"], "room_forbidden");
    // Used once, on any node.
    for hub in [&a, &b] {
        let (status, body) = redeem(hub).await.err().expect("a ticket works once");
        assert_eq!((status, body["code"].as_str()), (401, Some("invalid_ticket")));
    }
}

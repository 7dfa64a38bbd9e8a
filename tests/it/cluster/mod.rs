//! Cluster mode (DESIGN §7) with real `redis-server` processes on free ports (one server, or a
//! Redis Cluster of three) and two roomcast nodes in this process, plus node processes where a
//! signal is part of the test. Some tests share one SQLite file between the nodes (an app
//! created on one is seen by the other at its next cache reload), others keep the records in
//! Redis (`store.kind = "redis"`).
//!
//! Here: delivery, Redis going down, tickets, counts. [`nodes`]: nodes leaving (SIGTERM, kill).
//! [`state`]: presence, records, webhooks and analytics across nodes. [`sharded`]: a Redis
//! Cluster and TLS.

mod nodes;
mod recovery;
mod sharded;
mod state;

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::receiver::Receiver;
use crate::support::{RedisCluster, RedisServer, TestApp, TestHub, WAIT, Ws, assert_error, spawn_hub_in};
use roomcast::auth::api_key::PresentedKey;
use roomcast::redis_conn::TlsFiles;
use roomcast::store::KeyKind;

/// Two nodes on `redis` with their records in Redis too (`store.kind = "redis"`), each with
/// its own data directory; caches are refreshed by announcements only (the poll is a minute).
pub(crate) async fn two_redis_nodes(redis: &RedisServer) -> (TestHub, TestHub) {
    nodes_on(&redis.url(), false).await
}

/// Two nodes as [`two_redis_nodes`] on `urls`; with `sharded`, a Redis Cluster.
async fn nodes_on(urls: &str, sharded: bool) -> (TestHub, TestHub) {
    nodes_with_tls(urls, sharded, TlsFiles::default()).await
}

/// Two nodes as [`nodes_on`] that reach `rediss://` servers with the files of `tls`.
async fn nodes_with_tls(urls: &str, sharded: bool, tls: TlsFiles) -> (TestHub, TestHub) {
    nodes_adjusted(urls, sharded, move |c| {
        c.cluster.redis_ca_file = tls.ca.clone();
        c.cluster.redis_client_cert_file = tls.client_cert.clone();
        c.cluster.redis_client_key_file = tls.client_key.clone();
    })
    .await
}

/// Two nodes as [`nodes_on`], their configuration changed by `adjust` last.
pub(crate) async fn nodes_adjusted(
    urls: &str,
    sharded: bool,
    adjust: impl Fn(&mut roomcast::config::Config),
) -> (TestHub, TestHub) {
    let admin_key = PresentedKey::generate(KeyKind::Admin).plaintext();
    let mut nodes = Vec::new();
    for name in ["node-a", "node-b"] {
        let url = urls.to_owned();
        let adjust = &adjust;
        let hub = spawn_hub_in(tempfile::tempdir().unwrap(), admin_key.clone(), move |c| {
            c.cluster.sharded_pubsub = sharded;
            c.cluster.redis_url = Some(url);
            c.cluster.node_id = Some(name.to_owned());
            c.store.kind = roomcast::config::StoreKind::Redis;
            c.store.reload_interval_ms = 60_000;
            c.cluster.node_timeout_ms = 1500;
            adjust(c);
        })
        .await;
        nodes.push(hub);
    }
    let b = nodes.pop().unwrap();
    (nodes.pop().unwrap(), b)
}

/// TLS files naming only the authority `ca`.
fn trusting(ca: std::path::PathBuf) -> TlsFiles {
    TlsFiles { ca: Some(ca), ..TlsFiles::default() }
}

/// How long until `check` holds, polling; panics after [`WAIT`].
async fn within<F: std::future::Future<Output = bool>>(mut check: impl FnMut() -> F) -> Duration {
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < WAIT, "never happened");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    started.elapsed()
}

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
            c.cluster.node_timeout_ms = 1500;
            c.webhooks.allow_private_targets = true;
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

/// Waits until `/health` answers `status` on each of `hubs`.
async fn health_becomes(hubs: &[&TestHub], status: StatusCode) {
    for hub in hubs {
        within(|| async { health(hub).await.0 == status }).await;
    }
}

/// `n` rooms of `app` (`room-0`, …), and a subscriber to all of them on each of `a` and `b`.
async fn rooms_on_both(a: &TestHub, b: &TestHub, app: &TestApp, n: usize) -> (Vec<String>, Ws, Ws) {
    let rooms: Vec<String> = (0..n).map(|n| format!("room-{n}")).collect();
    let names: Vec<&str> = rooms.iter().map(String::as_str).collect();
    let on_a = a.subscriber(app, json!({}), &names).await;
    let on_b = b.subscriber(app, json!({}), &names).await;
    (rooms, on_a, on_b)
}

/// Broadcasts `<room>/<tag>` to each of `rooms` from `from`; checks that each is counted over
/// the cluster (one subscriber per node, `on`) and reaches both, once, in the same order per
/// room. Returns what they received, by room.
async fn each_room_once(
    from: &TestHub,
    app: &TestApp,
    rooms: &[String],
    tag: &str,
    on: [&mut Ws; 2],
) -> Vec<(Value, u64)> {
    for room in rooms {
        let v = from.broadcast(app, room, "e", json!(format!("{room}/{tag}"))).await;
        assert_eq!(v["subscriber_count"], 2, "{room}: {v}");
    }
    let [on_a, on_b] = on;
    let got = by_room(events(on_a, rooms.len()).await);
    assert_eq!(got, by_room(events(on_b, rooms.len()).await), "both nodes alike");
    let mut data: Vec<String> = got.iter().map(|(d, _)| d.as_str().unwrap().to_owned()).collect();
    data.sort();
    let mut expected: Vec<String> = rooms.iter().map(|r| format!("{r}/{tag}")).collect();
    expected.sort();
    assert_eq!(data, expected, "each room once");
    got
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

/// `events` grouped by room (the part of `data` before `/`), each room's in arrival order.
fn by_room(mut events: Vec<(Value, u64)>) -> Vec<(Value, u64)> {
    events.sort_by_key(|(data, _)| data.as_str().unwrap().split('/').next().unwrap().to_owned());
    events
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
        // `published` once the node knows client events are on; `error` before.
        let reply = talker.next_json().await;
        if reply["type"] == "published" {
            assert_eq!(reply["id"], 5);
            break;
        }
        assert_eq!(reply["code"], "client_events_disabled", "{reply}");
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
    let mut on_a = a.subscriber(&app, json!({"user_id": "ann"}), &["room"]).await;
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
    // So are the answers that need the cluster's state, and again and again, each at once
    // rather than after the client's reconnection attempts (nine seconds with its defaults).
    for path in ["/api/rooms", "/api/analytics?period=1h", "/api/rooms/room"] {
        let asked = Instant::now();
        assert_error(&a.get(path, &app.api_key).await, 503, "unavailable");
        assert!(asked.elapsed() < Duration::from_secs(2), "{path} took {:?}", asked.elapsed());
    }
    let asked = Instant::now();
    let got =
        b.post("/api/broadcast", &app.api_key, json!({"room": "room", "event": "e", "data": "lost"})).await;
    assert_error(&got, 503, "unavailable");
    assert!(asked.elapsed() < Duration::from_secs(2), "a second broadcast took {:?}", asked.elapsed());
    // A subscribe that needs Redis is refused with the code's fixed message; the broker's own
    // error stays in the log.
    on_a.send_json(json!({"type": "subscribe", "room": "new-room", "id": 3})).await;
    let refused = on_a.next_json().await;
    assert_eq!(
        (refused["code"].as_str(), refused["room"].as_str(), refused["id"].as_u64()),
        (Some("unavailable"), Some("new-room"), Some(3)),
        "{refused}"
    );
    assert_eq!(refused["message"], "the hub cannot do this right now; retrying later is safe");

    redis.restart().await;
    health_becomes(&[&a, &b], StatusCode::OK).await;
    // Both nodes subscribed their rooms again and wrote their counts and room list back into
    // the empty Redis: events flow, each once.
    let v = b.broadcast(&app, "room", "e", json!("after")).await;
    assert_eq!(v["subscriber_count"], 2, "{v}");
    assert_eq!(room_names(&a, &app, "").await.0, ["room"]);
    // The restarted Redis lost who is online; node A writes its users again.
    let online = || async {
        let (_, v) = b.get("/api/analytics?period=1h", &app.api_key).await;
        v["metrics"]["users"]["online"] == 1 && v["metrics"]["connections"]["current"] == 2
    };
    within(online).await;
    // So it does after any reconnection, even one no write failed around: here the set is
    // lost while the subscription connections are cut (the command connection stays).
    redis.cli(&["del", "rc:an:{outage-app}:on:node-a"]).await;
    redis.cli(&["client", "kill", "type", "pubsub"]).await;
    within(online).await;
    for ws in [&mut on_a, &mut on_b] {
        let got = events(ws, 1).await;
        assert_eq!(got[0].0, "after");
        ws.roundtrip(9).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_is_single_use_across_nodes() {
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
    // Bought on A, used on B, with the identity and grants it was bought for.
    let (mut ws, hello) = b.try_redeem(&ticket).await.expect("the ticket works on another node");
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
        let (status, body) = hub.try_redeem(&ticket).await.expect_err("a ticket works once");
        assert_eq!((status, body["code"].as_str()), (401, Some("invalid_ticket")));
    }
}

/// `"{event} {room}"` of the next webhook request.
async fn next_event(hooks: &mut Receiver) -> String {
    let v = hooks.next().await.json();
    format!("{} {}", v["event"].as_str().unwrap(), v["room"].as_str().unwrap_or("-"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_and_room_events_are_cluster_wide() {
    let redis = RedisServer::start().await;
    let (a, b, _shared) = two_nodes(&redis).await;
    let app = a.create_app(json!({"app_id": "count-app"})).await;
    known_on(&b, &app).await;
    let mut hooks = Receiver::start().await;
    let url = hooks.url();
    let (status, v) = a
        .post("/api/webhooks", &app.api_key, json!({"url": url, "events": ["room-occupied", "room-vacated"]}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    // B learns of the webhook at its next reload; wait until its listing shows it.
    let deadline = Instant::now() + WAIT;
    while b.get("/api/webhooks", &app.api_key).await.1["webhooks"].as_array().is_none_or(|l| l.is_empty()) {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut a1 = a.subscriber(&app, json!({}), &["room"]).await;
    assert_eq!(next_event(&mut hooks).await, "room-occupied room");
    let a2 = a.subscriber(&app, json!({}), &["room"]).await;
    let mut b1 = b.subscriber(&app, json!({}), &["room"]).await;
    for hub in [&a, &b] {
        let v = hub.broadcast(&app, "room", "e", json!(1)).await;
        assert_eq!(v["subscriber_count"], 3, "{v}");
        let (_, v) = hub.get("/api/rooms/room", &app.api_key).await;
        assert_eq!(
            (v["room"]["occupied"].as_bool(), v["room"]["subscriber_count"].as_u64()),
            (Some(true), Some(3)),
            "{v}"
        );
    }
    // Node A empties the room, B still has a subscriber: not vacated.
    drop(a2);
    a1.stream.close(None).await.unwrap();
    a1.closed().await;
    let deadline = Instant::now() + WAIT;
    while a.get("/api/rooms/room", &app.api_key).await.1["room"]["subscriber_count"] != 1 {
        assert!(Instant::now() < deadline, "A's subscribers never left the count");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, v) = a.get("/api/rooms/room", &app.api_key).await;
    assert_eq!(v["room"]["occupied"], true, "occupied through node B: {v}");
    b1.stream.close(None).await.unwrap();
    b1.closed().await;
    assert_eq!(next_event(&mut hooks).await, "room-vacated room");
    // Once per cluster: nothing more.
    hooks.quiet(Duration::from_millis(300)).await;
}

/// `(names, next_cursor)` of `GET /api/rooms{query}` on `hub`.
async fn room_names(hub: &TestHub, app: &TestApp, query: &str) -> (Vec<String>, Value) {
    let (status, v) = hub.get(&format!("/api/rooms{query}"), &app.api_key).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let names =
        v["rooms"].as_array().unwrap().iter().map(|r| r["room"].as_str().unwrap().to_owned()).collect();
    (names, v["next_cursor"].clone())
}

/// A connection of `user` on `hub`, subscribed to `presence-team`; returns it and its
/// `subscribed` frame.
async fn member(hub: &TestHub, app: &TestApp, user: &str) -> (Ws, Value) {
    let mut ws = hub.subscriber(app, json!({"user_id": user, "user_info": {"name": user}}), &[]).await;
    ws.send_json(json!({"type": "subscribe", "room": "presence-team", "id": 1})).await;
    let ack = ws.next_json().await;
    assert_eq!(ack["type"], "subscribed", "{ack}");
    (ws, ack)
}

/// `(event, user_id)` of a presence event frame.
fn member_event(f: &Value) -> (Option<&str>, Option<&str>) {
    (f["event"].as_str(), f["data"]["user_id"].as_str())
}

fn user_ids(list: &Value) -> Vec<&str> {
    list.as_array().unwrap().iter().map(|m| m["user_id"].as_str().unwrap()).collect()
}

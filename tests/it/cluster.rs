//! Cluster mode (DESIGN §7) with real `redis-server` processes on free ports (one server, or a
//! Redis Cluster of three) and two roomcast nodes in this process, plus node processes where a
//! signal is part of the test. Some tests share one SQLite file between the nodes (an app
//! created on one is seen by the other at its next cache reload), others keep the records in
//! Redis (`store.kind = "redis"`).

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
    for hub in [&a, &b] {
        let deadline = Instant::now() + WAIT;
        while health(hub).await.0 != StatusCode::OK {
            assert!(Instant::now() < deadline, "a node never came back");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
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

/// A node as its own process, on the shared store `shared` (with `a`'s admin key), with the
/// given node timeout; returns it, its address and its directory.
async fn node_process(
    redis: &RedisServer,
    a: &TestHub,
    shared: &tempfile::TempDir,
    node_timeout_ms: u64,
) -> (tokio::process::Child, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_roomcast"))
        .current_dir(dir.path())
        .env("ROOMCAST_SERVER__LISTEN", "127.0.0.1:0")
        .env("ROOMCAST_ADMIN_KEY", &a.admin_key)
        .env("ROOMCAST_STORE__PATH", shared.path().join("roomcast.db"))
        .env("ROOMCAST_CLUSTER__REDIS_URL", redis.url())
        .env("ROOMCAST_CLUSTER__NODE_ID", "node-c")
        .env("ROOMCAST_CLUSTER__NODE_TIMEOUT_MS", node_timeout_ms.to_string())
        .env("ROOMCAST_LOG__LEVEL", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = tokio::time::timeout(WAIT, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(addr) = line.strip_prefix("roomcast listening on http://") {
                return addr.to_owned();
            }
        }
        panic!("node-c exited");
    })
    .await
    .unwrap();
    (child, addr, dir)
}

/// A connection to the node at `addr` with `token`.
async fn connect_to(addr: &str, token: &str) -> Ws {
    crate::support::open_ws(addr, &format!("token={token}")).await.unwrap().0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stopped_with_sigterm_hands_its_clients_over() {
    let redis = RedisServer::start().await;
    let (a, _b, shared) = two_nodes(&redis).await;
    let app = a.create_app(json!({"app_id": "term-app"})).await;
    // A node timeout of a minute: whatever happens within seconds is the node leaving by itself.
    let (mut child, addr, dir) = node_process(&redis, &a, &shared, 60_000).await;
    let mut carol = connect_to(&addr, &a.token(&app, json!({"user_id": "carol"})).await).await;
    carol.send_json(json!({"type": "subscribe", "room": "presence-team", "id": 1})).await;
    let f = carol.next_json().await;
    assert_eq!(f["type"], "subscribed", "{f}");
    let (mut dave, ack) = member(&a, &app, "dave").await;
    assert_eq!(user_ids(&ack["presence"]), ["carol", "dave"], "{ack}");

    let pid = child.id().unwrap().to_string();
    let term = Instant::now();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    // Its client is told to reconnect elsewhere (1012), its member leaves at once, it exits 0.
    assert!(matches!(carol.closed().await, crate::support::Ending::Closed(1012)));
    let f = dave.next_json().await;
    assert_eq!(member_event(&f), (Some("user-left"), Some("carol")), "{f}");
    let status =
        tokio::time::timeout(Duration::from_secs(5), child.wait()).await.expect("exits within 5 s").unwrap();
    assert!(status.success(), "{status}");
    assert!(term.elapsed() < Duration::from_secs(5));
    assert!(!redis.cli(&["smembers", "rc:nodes"]).await.contains("node-c"), "node-c deregistered");
    // Every task it started (sessions, the Redis broker's, webhooks, analytics) ended before it
    // exited: the drain finished within the grace period.
    let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap();
    assert!(log.contains("shutdown complete"), "{log}");
    assert!(!log.contains("tasks still running"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_is_removed_from_counts() {
    let redis = RedisServer::start().await;
    let (a, _b, shared) = two_nodes(&redis).await;
    let app = a.create_app(json!({"app_id": "kill-app"})).await;
    let mut hooks = Receiver::start().await;
    a.post("/api/webhooks", &app.api_key, json!({"url": hooks.url(), "events": ["room-vacated"]})).await;

    // A third node as its own process, killed with SIGKILL while it holds the room's only
    // subscriber.
    let (mut child, addr, _dir) = node_process(&redis, &a, &shared, 1500).await;
    let mut ws = connect_to(&addr, &a.token(&app, json!({})).await).await;
    ws.subscribe("room").await;
    assert_eq!(a.broadcast(&app, "room", "e", json!(1)).await["subscriber_count"], 1);
    // Carol is present through node-c only; Dave, on node A, watches.
    let mut carol = connect_to(&addr, &a.token(&app, json!({"user_id": "carol"})).await).await;
    carol.send_json(json!({"type": "subscribe", "room": "presence-team", "id": 1})).await;
    let f = carol.next_json().await;
    assert_eq!(f["type"], "subscribed", "{f}");
    let (mut dave, ack) = member(&a, &app, "dave").await;
    assert_eq!(user_ids(&ack["presence"]), ["carol", "dave"], "{ack}");

    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let killed = Instant::now();
    // Node A (node timeout 1.5 s in these tests) removes node-c's count and reports the room
    // vacated, once.
    assert_eq!(next_event(&mut hooks).await, "room-vacated room");
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(5), "cleanup took {took:?}");
    assert_eq!(a.broadcast(&app, "room", "e", json!(2)).await["subscriber_count"], 0);
    assert_eq!(room_names(&a, &app, "").await.0, ["presence-team"], "the dead node's room is unlisted");
    let f = dave.next_json().await;
    assert_eq!(member_event(&f), (Some("user-left"), Some("carol")), "{f}");
    let (_, v) = a.get("/api/rooms/presence-team/presence", &app.api_key).await;
    assert_eq!(user_ids(&v["members"]), ["dave"], "{v}");
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
async fn analytics(hub: &TestHub, app: &TestApp, period: &str) -> Value {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_with_sharded_pubsub_carries_the_hub() {
    let mut redis = RedisCluster::start().await;
    let (a, b) = nodes_on(&redis.urls(), true).await;
    let app = a.create_app(json!({"app_id": "shard-app"})).await;
    let took = within(|| async { b.get("/api/test", &app.api_key).await.0 == StatusCode::OK }).await;
    assert!(took < Duration::from_secs(1), "a new app reached node B after {took:?}");

    // Twelve rooms, spread over the shards; a subscriber to all of them on each node.
    let (rooms, mut on_a, mut on_b) = rooms_on_both(&a, &b, &app, 12).await;
    for (n, room) in rooms.iter().enumerate() {
        for k in 0..2 {
            let hub = if (n + k) % 2 == 0 { &a } else { &b };
            let v = hub.broadcast(&app, room, "e", json!(format!("{room}/{k}"))).await;
            assert_eq!(v["subscriber_count"], 2, "counted over the cluster: {v}");
        }
    }
    // Order is per room: rooms on different shards arrive over different connections.
    let got_a = by_room(events(&mut on_a, 24).await);
    let got_b = by_room(events(&mut on_b, 24).await);
    assert_eq!(got_a, got_b, "both nodes see the same events, offsets and order in each room");
    for room in &rooms {
        let offsets: Vec<u64> = got_a
            .iter()
            .filter(|(d, _)| d.as_str().unwrap().starts_with(&format!("{room}/")))
            .map(|e| e.1)
            .collect();
        assert_eq!(offsets, [1, 2], "{room}: one offset sequence per room");
    }
    // The rooms really are on different shards: their offset counters and their sharded
    // channels (SSUBSCRIBE) live on several servers.
    let (mut counters, mut channels) = (0, 0);
    for server in &redis.servers {
        counters += server.cli(&["--scan", "--pattern", "rc:offset:*"]).await.lines().count();
        let shard = server.cli(&["pubsub", "shardchannels", "rc:room:*"]).await;
        assert!(shard.lines().count() < 12, "every room on one shard: {shard}");
        channels += shard.lines().count();
    }
    assert_eq!((counters, channels), (12, 12), "each room's counter and channel on exactly one shard");

    // Presence, tickets and analytics work there too.
    let (_alice, _) = member(&a, &app, "alice").await;
    let (_bob, ack) = member(&b, &app, "bob").await;
    assert_eq!(user_ids(&ack["presence"]), ["alice", "bob"], "{ack}");
    let (status, v) = a.post("/api/tickets", &app.api_key, json!({"user_id": "ann"})).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let ticket = v["ticket"].as_str().unwrap().to_owned();
    assert!(b.try_redeem(&ticket).await.is_ok(), "bought on A, used on B");
    assert_eq!(a.try_redeem(&ticket).await.err().map(|e| e.0), Some(401), "used once");
    for hub in [&a, &b] {
        within(|| async { analytics(hub, &app, "1h").await["metrics"]["events"]["broadcasts"] == 24 }).await;
    }

    // One shard killed (SIGKILL) and restarted empty: the nodes say Redis is down, then come
    // back, and every room, on every shard, delivers again, once.
    redis.servers[0].kill();
    health_becomes(&[&a, &b], StatusCode::SERVICE_UNAVAILABLE).await;
    redis.servers[0].restart().await;
    redis.wait_ok().await;
    health_becomes(&[&a, &b], StatusCode::OK).await;
    each_room_once(&b, &app, &rooms, "again", [&mut on_a, &mut on_b]).await;
    on_a.roundtrip(7).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_primary_failing_over_to_its_replica_loses_no_room() {
    let mut redis = RedisCluster::start_with_replicas().await;
    let (a, b) = nodes_on(&redis.urls(), true).await;
    let app = a.create_app(json!({"app_id": "failover-app"})).await;
    within(|| async { b.get("/api/test", &app.api_key).await.0 == StatusCode::OK }).await;
    let (rooms, mut on_a, mut on_b) = rooms_on_both(&a, &b, &app, 12).await;
    each_room_once(&a, &app, &rooms, "1", [&mut on_a, &mut on_b]).await;

    // A primary that holds rooms is killed for good; its replica takes its slots over.
    let mut victim = None;
    for i in redis.primaries().await {
        if !redis.servers[i].cli(&["--scan", "--pattern", "rc:offset:*"]).await.trim().is_empty() {
            victim = Some(i);
        }
    }
    let victim = victim.expect("some primary holds a room");
    // Redis replicates asynchronously: what the primary had not passed on when killed is lost,
    // offsets included. Here the replica has it all.
    redis.wait_replicated(victim).await;
    redis.servers[victim].kill();
    health_becomes(&[&a, &b], StatusCode::SERVICE_UNAVAILABLE).await;
    within(|| async { redis.primaries().await.len() == 3 }).await;
    redis.wait_ok().await;
    health_becomes(&[&a, &b], StatusCode::OK).await;

    // Every room delivers again, on both nodes, once, counted over the cluster, and the offsets
    // (replicated to the promoted server) go on.
    let again = each_room_once(&b, &app, &rooms, "2", [&mut on_a, &mut on_b]).await;
    assert!(again.iter().all(|(_, offset)| *offset == 2), "offsets go on: {again:?}");
    on_a.roundtrip(7).await;
    on_b.roundtrip(7).await;
}

/// `(names, next_cursor)` of `GET /api/rooms{query}` on `hub`.
async fn room_names(hub: &TestHub, app: &TestApp, query: &str) -> (Vec<String>, Value) {
    let (status, v) = hub.get(&format!("/api/rooms{query}"), &app.api_key).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let names =
        v["rooms"].as_array().unwrap().iter().map(|r| r["room"].as_str().unwrap().to_owned()).collect();
    (names, v["next_cursor"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_room_list_spans_the_cluster() {
    let redis = RedisServer::start().await;
    let (a, b) = two_redis_nodes(&redis).await;
    let app = a.create_app(json!({"app_id": "list-app"})).await;
    within(|| async { b.get("/api/test", &app.api_key).await.0 == StatusCode::OK }).await;
    let _on_a = a.subscriber(&app, json!({}), &["a-1", "shared"]).await;
    let mut on_b = b.subscriber(&app, json!({}), &["b-1", "shared"]).await;
    let (_member, _) = member(&b, &app, "carol").await;

    let all = ["a-1", "b-1", "presence-team", "shared"];
    for hub in [&a, &b] {
        let (status, v) = hub.get("/api/rooms", &app.api_key).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        let rooms = v["rooms"].as_array().unwrap();
        let names: Vec<&str> = rooms.iter().map(|r| r["room"].as_str().unwrap()).collect();
        assert_eq!(names, all, "every node lists every node's rooms: {v}");
        let shared = &rooms[3];
        assert_eq!(
            (shared["subscriber_count"].as_u64(), shared["occupied"].as_bool()),
            (Some(2), Some(true))
        );
        assert!(shared["occupied_since"].as_str().is_some_and(|t| t.ends_with('Z')), "{shared}");
        assert_eq!(rooms[2]["user_count"], 1, "presence rooms count users over the cluster");
        assert_eq!(rooms[0]["user_count"], Value::Null);
    }
    // Prefix and pages, as on one node.
    assert_eq!(room_names(&a, &app, "?prefix=b-").await.0, ["b-1"]);
    let (first, cursor) = room_names(&a, &app, "?limit=2").await;
    assert_eq!((first, cursor), (vec!["a-1".to_owned(), "b-1".into()], json!("b-1")));
    let (rest, cursor) = room_names(&a, &app, "?limit=2&cursor=b-1").await;
    assert_eq!((rest, cursor), (vec!["presence-team".to_owned(), "shared".into()], Value::Null));

    // A room emptied on B leaves A's list; a room still held elsewhere stays.
    on_b.stream.close(None).await.unwrap();
    on_b.closed().await;
    within(|| async { room_names(&a, &app, "").await.0 == ["a-1", "presence-team", "shared"] }).await;
    let (_, v) = a.get("/api/rooms?prefix=shared", &app.api_key).await;
    assert_eq!(v["rooms"][0]["subscriber_count"], 1, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_joins_and_leaves_keep_the_node_count_and_room_set_exact() {
    let redis = RedisServer::start().await;
    let (a, _b) = nodes_adjusted(&redis.url(), false, |c| {
        c.limits.client_messages_per_second = 100_000;
        c.limits.client_messages_burst = 100_000;
    })
    .await;
    let app = a.create_app(json!({"app_id": "race-app"})).await;
    let rooms = ["r0", "r1", "r2"];
    // 30 connections subscribe to and leave the same three rooms, all at once, many times;
    // each ends in one room (every third in none).
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..30usize {
        let mut ws = a.subscriber(&app, json!({}), &[]).await;
        clients.spawn(async move {
            for round in 0..8u64 {
                for (n, room) in rooms.iter().enumerate() {
                    let id = round * 10 + n as u64;
                    ws.send_json(json!({"type": "subscribe", "room": room, "id": id})).await;
                    ws.send_json(json!({"type": "unsubscribe", "room": room, "id": id + 100})).await;
                }
                ws.send_json(json!({"type": "ping", "id": 1000 + round})).await;
                loop {
                    let f = ws.next_json().await;
                    assert!(
                        ["subscribed", "unsubscribed", "pong"].contains(&f["type"].as_str().unwrap()),
                        "{f}"
                    );
                    if f["type"] == "pong" {
                        break;
                    }
                }
            }
            if i % 3 != 0 {
                ws.subscribe(rooms[i % 3]).await;
            }
            ws
        });
    }
    let mut held = Vec::new();
    while let Some(ws) = clients.join_next().await {
        held.push(ws.unwrap());
    }
    // Connections 1, 2, 4, 5, …: ten in r1, ten in r2, none in r0.
    let in_set = redis.cli(&["smembers", "rc:node-rooms:node-a"]).await;
    for (room, expected) in [("r0", 0), ("r1", 10), ("r2", 10)] {
        let count = redis.cli(&["hget", &format!("rc:count:{{race-app:{room}}}"), "node-a"]).await;
        assert_eq!(count.trim().parse::<i64>().unwrap_or(0), expected, "{room}");
        let listed = in_set.lines().any(|l| l == format!("race-app:{room}"));
        assert_eq!(listed, expected > 0, "{room} in the node's room set: {in_set}");
        let (_, v) = a.get(&format!("/api/rooms/{room}"), &app.api_key).await;
        assert_eq!(v["room"]["subscriber_count"], expected, "{room}: {v}");
    }

    // Everyone leaves: nothing of node A is left behind.
    drop(held);
    within(|| async { redis.cli(&["smembers", "rc:node-rooms:node-a"]).await.trim().is_empty() }).await;
    for room in rooms {
        let count = redis.cli(&["hget", &format!("rc:count:{{race-app:{room}}}"), "node-a"]).await;
        assert!(count.trim().is_empty(), "{room}: {count}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_taken_for_dead_writes_its_state_again() {
    let redis = RedisServer::start().await;
    let (a, b) = two_redis_nodes(&redis).await;
    let app = a.create_app(json!({"app_id": "heal-app"})).await;
    within(|| async { b.get("/api/test", &app.api_key).await.0 == StatusCode::OK }).await;
    let _on_a = a.subscriber(&app, json!({}), &["room"]).await;
    let _on_b = b.subscriber(&app, json!({}), &["room"]).await;
    assert_eq!(a.broadcast(&app, "room", "e", json!(1)).await["subscriber_count"], 2);

    // What another node does to one it takes for dead (as after a Redis that lost the liveness
    // keys): B's count is removed, then B from the node set. B notices and writes it again.
    redis.cli(&["hdel", "rc:count:{heal-app:room}", "node-b"]).await;
    assert_eq!(a.broadcast(&app, "room", "e", json!(2)).await["subscriber_count"], 1);
    redis.cli(&["srem", "rc:nodes", "node-b"]).await;
    within(|| async { a.broadcast(&app, "room", "e", json!(3)).await["subscriber_count"] == 2 }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_who_left_while_redis_was_away_are_announced_on_its_return() {
    let mut redis = RedisServer::start().await;
    let (a, b) = two_redis_nodes(&redis).await;
    let app = a.create_app(json!({"app_id": "away-app"})).await;
    within(|| async { b.get("/api/test", &app.api_key).await.0 == StatusCode::OK }).await;
    let (mut dave, _) = member(&a, &app, "dave").await;
    let (mut carol, ack) = member(&b, &app, "carol").await;
    assert_eq!(user_ids(&ack["presence"]), ["carol", "dave"], "{ack}");
    assert_eq!(dave.next_json().await["event"], "user-joined");

    // Redis goes away with its data saved (as with persistence); Dave leaves meanwhile.
    assert_eq!(redis.cli(&["save"]).await.trim(), "OK");
    redis.kill();
    dave.stream.close(None).await.unwrap();
    dave.closed().await;
    redis.restart().await;

    // On its return node A removes the member it no longer has, and Carol hears it once.
    let f = carol.next_json().await;
    assert_eq!(member_event(&f), (Some("user-left"), Some("dave")), "{f}");
    let (_, v) = b.get("/api/rooms/presence-team/presence", &app.api_key).await;
    assert_eq!(user_ids(&v["members"]), ["carol"], "{v}");
    carol.roundtrip(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_reach_redis_over_tls() {
    let redis = RedisServer::start_tls().await;
    assert!(redis.url().starts_with("rediss://"));
    let (a, b) = nodes_with_tls(&redis.url(), false, trusting(redis.cert())).await;
    for hub in [&a, &b] {
        // Up once the subscription connection (TLS too) is.
        within(|| async { health(hub).await.1["redis"] == "ok" }).await;
    }
    let app = a.create_app(json!({"app_id": "tls-app"})).await;
    within(|| async { b.get("/api/test", &app.api_key).await.0 == StatusCode::OK }).await;
    let mut on_b = b.subscriber(&app, json!({}), &["room"]).await;
    a.broadcast(&app, "room", "e", json!("over tls")).await;
    assert_eq!(events(&mut on_b, 1).await[0].0, "over tls");

    // The system's authorities do not know this certificate: without the file a node refuses
    // to start rather than talk to an unchecked Redis.
    let mut config = crate::support::test_config(tempfile::tempdir().unwrap().path(), &a.admin_key);
    config.cluster.redis_url = Some(redis.url());
    let refused =
        roomcast::server::Server::build(config).await.expect_err("an unknown certificate is refused");
    assert!(refused.to_string().to_lowercase().contains("certificate"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_present_a_client_certificate_to_a_redis_that_asks_for_one() {
    let redis = RedisServer::start_mutual_tls().await;
    let (client_cert, client_key) = redis.certs().client();
    let admin_key = PresentedKey::generate(KeyKind::Admin).plaintext();
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::support::test_config(dir.path(), &admin_key);
    config.cluster.redis_url = Some(redis.url());
    config.cluster.redis_ca_file = Some(redis.cert());
    // Without a certificate of its own, Redis ends the handshake: the node does not start.
    let refused = roomcast::server::Server::build(config.clone()).await.expect_err("no client certificate");
    assert!(refused.to_string().contains("CertificateRequired"), "{refused}");
    // A key that does not exist is named.
    config.cluster.redis_client_cert_file = Some(client_cert.clone());
    config.cluster.redis_client_key_file = Some(dir.path().join("missing.key"));
    let refused = roomcast::server::Server::build(config).await.expect_err("no key file");
    assert!(refused.to_string().contains("missing.key"), "{refused}");

    let tls =
        TlsFiles { ca: Some(redis.cert()), client_cert: Some(client_cert), client_key: Some(client_key) };
    let (a, b) = nodes_with_tls(&redis.url(), false, tls).await;
    let app = a.create_app(json!({"app_id": "mtls-app"})).await;
    within(|| async { b.get("/api/test", &app.api_key).await.0 == StatusCode::OK }).await;
    let mut on_b = b.subscriber(&app, json!({}), &["room"]).await;
    a.broadcast(&app, "room", "e", json!("with a client certificate")).await;
    assert_eq!(events(&mut on_b, 1).await[0].0, "with a client certificate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_reach_a_redis_cluster_over_tls() {
    let certs = crate::support::TestCerts::make();
    let redis = RedisCluster::start_tls(certs.clone()).await;
    assert!(redis.urls().split(',').all(|u| u.starts_with("rediss://")), "{}", redis.urls());
    let (a, b) = nodes_with_tls(&redis.urls(), true, trusting(certs.ca())).await;
    let app = a.create_app(json!({"app_id": "tls-shard-app"})).await;
    within(|| async { b.get("/api/test", &app.api_key).await.0 == StatusCode::OK }).await;
    // Six rooms, spread over the shards: each shard is reached over TLS at the address the
    // cluster gives for it (127.0.0.1, which the certificate names).
    let (rooms, mut on_a, mut on_b) = rooms_on_both(&a, &b, &app, 6).await;
    each_room_once(&a, &app, &rooms, "1", [&mut on_a, &mut on_b]).await;
    let mut shards = 0;
    for server in &redis.servers {
        let channels = server.cli(&["pubsub", "shardchannels", "rc:room:*"]).await;
        shards += usize::from(!channels.trim().is_empty());
    }
    assert!(shards >= 2, "the rooms span shards");
}

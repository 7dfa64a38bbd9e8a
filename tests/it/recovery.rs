//! History and recovery on one node (DESIGN §11): a client that comes back with `since` gets
//! exactly what it missed, or `recovered: false` with the reason and nothing replayed; the
//! history route; idempotent publishing; app history settings; the node's memory bound.

use serde_json::{Value, json};

use crate::support::{
    TestApp, TestHub, Ws, assert_error, assert_subscribed, spawn_hub, spawn_hub_in, spawn_hub_with,
};

/// Subscribes `ws` to `room` asking to recover after `offset` of `epoch`; returns the ack.
async fn recover(ws: &mut Ws, room: &str, offset: u64, epoch: &str) -> Value {
    ws.send_json(
        json!({"type": "subscribe", "room": room, "id": 2, "since": {"offset": offset, "epoch": epoch}}),
    )
    .await;
    let ack = ws.next_json().await;
    assert_subscribed(&ack, room, Some(2));
    ack
}

/// The next `n` events' `(offset, data)`.
async fn events(ws: &mut Ws, n: usize) -> Vec<(u64, Value)> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        let f = ws.next_json().await;
        assert_eq!(f["type"], "event", "{f}");
        got.push((f["offset"].as_u64().unwrap(), f["data"].clone()));
    }
    got
}

/// Broadcasts `data` to `room`; returns the result.
async fn publish(hub: &TestHub, app: &TestApp, room: &str, data: Value) -> Value {
    hub.broadcast(app, room, "e", data).await
}

#[tokio::test]
async fn a_client_that_comes_back_gets_exactly_what_it_missed_then_live() {
    let hub = spawn_hub().await;
    let app = hub.create_app(json!({})).await;
    let mut ws = hub.subscriber(&app, json!({}), &[]).await;
    let ack = ws.subscribe("chat").await;
    let epoch = ack["epoch"].as_str().unwrap().to_owned();
    assert_eq!(ack["offset"], 0);
    for n in 1..=3 {
        let result = publish(&hub, &app, "chat", json!(n)).await;
        assert_eq!((result["offset"].as_u64(), result["epoch"].as_str()), (Some(n), Some(epoch.as_str())));
    }
    assert_eq!(events(&mut ws, 3).await.last().unwrap().0, 3);
    drop(ws);
    for n in 4..=8 {
        publish(&hub, &app, "chat", json!(n)).await;
    }
    let mut back = hub.subscriber(&app, json!({}), &[]).await;
    let ack = recover(&mut back, "chat", 3, &epoch).await;
    assert_eq!(
        (ack["recovered"].as_bool(), ack["offset"].as_u64(), ack["reason"].is_null()),
        (Some(true), Some(8), true)
    );
    let missed = events(&mut back, 5).await;
    assert_eq!(missed, (4..=8).map(|n| (n, json!(n))).collect::<Vec<_>>());
    publish(&hub, &app, "chat", json!(9)).await;
    assert_eq!(events(&mut back, 1).await, [(9, json!(9))], "then live, no gap, no repeat");
    // Up to date: recovered, nothing replayed.
    let mut current = hub.subscriber(&app, json!({}), &[]).await;
    let ack = recover(&mut current, "chat", 9, &epoch).await;
    assert_eq!(ack["recovered"], true);
    current.roundtrip(5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cut_mid_stream_recovers_every_offset_once_while_publishing_goes_on() {
    let hub = spawn_hub().await;
    let app = hub.create_app(json!({"history": {"size": 1000}})).await;
    let total = 600u64;
    let mut ws = hub.subscriber(&app, json!({}), &[]).await;
    let epoch = ws.subscribe("feed").await["epoch"].as_str().unwrap().to_owned();
    let (url, key, http) = (hub.url("/api/broadcast"), app.api_key.clone(), hub.http.clone());
    let publisher = tokio::spawn(async move {
        for n in 1..=total {
            let body = json!({"room": "feed", "event": "e", "data": n});
            let res = http.post(&url).header("X-API-Key", &key).json(&body).send().await.unwrap();
            assert!(res.status().is_success());
        }
    });
    let mut seen: Vec<u64> = Vec::new();
    // Three cuts at moments the publisher does not wait for.
    for cut in [50usize, 200, 350] {
        while seen.len() < cut {
            seen.push(events(&mut ws, 1).await[0].0);
        }
        drop(ws);
        ws = hub.subscriber(&app, json!({}), &[]).await;
        let ack = recover(&mut ws, "feed", *seen.last().unwrap(), &epoch).await;
        assert_eq!(ack["recovered"], true, "{ack}");
    }
    while seen.len() < total as usize {
        seen.push(events(&mut ws, 1).await[0].0);
    }
    publisher.await.unwrap();
    assert_eq!(seen, (1..=total).collect::<Vec<_>>(), "every offset once, in order");
}

#[tokio::test]
async fn what_cannot_be_recovered_is_said_and_nothing_is_replayed() {
    let hub = spawn_hub().await;
    let small = hub.create_app(json!({"history": {"size": 3}})).await;
    let off = hub.create_app(json!({"history": {"size": 0}})).await;
    let short = hub.create_app(json!({"history": {"ttl_s": 1}})).await;
    let epoch_of = |v: &Value| v["epoch"].as_str().unwrap().to_owned();
    let mut cases = Vec::new();
    // Another epoch, and an offset ahead of the room's.
    let e = epoch_of(&publish(&hub, &small, "r", json!(1)).await);
    cases.push((&small, "r", 1, "not-the-epoch".to_owned(), "epoch_changed"));
    cases.push((&small, "r", 1_000, e.clone(), "epoch_changed"));
    // Beyond the room's last 3 events.
    for n in 2..=6 {
        publish(&hub, &small, "r", json!(n)).await;
    }
    cases.push((&small, "r", 1, e.clone(), "too_old"));
    // History off.
    let mut keeper = hub.subscriber(&off, json!({}), &["r"]).await;
    let e_off = epoch_of(&publish(&hub, &off, "r", json!(1)).await);
    publish(&hub, &off, "r", json!(2)).await;
    cases.push((&off, "r", 1, e_off, "history_disabled"));
    // Past its time to live (one second).
    let e_short = epoch_of(&publish(&hub, &short, "r", json!(1)).await);
    publish(&hub, &short, "r", json!(2)).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    cases.push((&short, "r", 1, e_short, "too_old"));
    for (app, room, offset, epoch, reason) in cases {
        let mut ws = hub.subscriber(app, json!({}), &[]).await;
        let ack = recover(&mut ws, room, offset, &epoch).await;
        assert_eq!(
            (ack["recovered"].as_bool(), ack["reason"].as_str()),
            (Some(false), Some(reason)),
            "{ack}"
        );
        // The next frame is the pong: nothing was replayed.
        ws.roundtrip(3).await;
        let result = publish(&hub, app, room, json!("live")).await;
        assert_eq!(events(&mut ws, 1).await[0].0, result["offset"].as_u64().unwrap(), "live continues");
    }
    assert_eq!(events(&mut keeper, 3).await.len(), 3, "the live events of the kept room");
    let metrics = hub.http.get(hub.url("/metrics")).send().await.unwrap().text().await.unwrap();
    for (outcome, n) in [("epoch_changed", 2), ("too_old", 2), ("history_disabled", 1)] {
        let line = format!("roomcast_recoveries_total{{outcome=\"{outcome}\"}} {n}");
        assert!(metrics.contains(&line), "{line} in {metrics}");
    }
}

#[tokio::test]
async fn malformed_since_is_an_invalid_message() {
    let hub = spawn_hub().await;
    let app = hub.create_app(json!({})).await;
    let mut ws = hub.subscriber(&app, json!({}), &[]).await;
    for since in [
        json!(5),
        json!({"offset": -1, "epoch": "e"}),
        json!({"offset": 1}),
        json!({"offset": 1, "epoch": ""}),
        json!({"offset": 1, "epoch": "x".repeat(65)}),
        json!({"offset": 1, "epoch": "e", "more": 1}),
        json!({"offset": "1", "epoch": "e"}),
    ] {
        ws.send_json(json!({"type": "subscribe", "room": "r", "id": 4, "since": since})).await;
        let f = ws.next_json().await;
        assert_eq!(
            (f["type"].as_str(), f["code"].as_str(), f["id"].as_u64()),
            (Some("error"), Some("invalid_message"), Some(4)),
            "{since}: {f}"
        );
    }
    ws.send_json(json!({"type": "subscribe", "room": "r", "id": 5, "since": null})).await;
    assert_subscribed(&ws.next_json().await, "r", Some(5));
}

#[tokio::test]
async fn offsets_continue_after_a_room_empties_and_restart_with_a_new_epoch_after_a_node_restart() {
    let hub = spawn_hub().await;
    let app = hub.create_app(json!({})).await;
    let mut ws = hub.subscriber(&app, json!({}), &[]).await;
    let epoch = ws.subscribe("room").await["epoch"].as_str().unwrap().to_owned();
    publish(&hub, &app, "room", json!(1)).await;
    publish(&hub, &app, "room", json!(2)).await;
    drop(ws);
    assert_eq!(publish(&hub, &app, "room", json!(3)).await["offset"], 3, "nobody in it: it keeps its stream");
    let mut again = hub.subscriber(&app, json!({}), &[]).await;
    let ack = again.subscribe("room").await;
    assert_eq!((ack["offset"].as_u64(), ack["epoch"].as_str()), (Some(3), Some(epoch.as_str())));
    drop(again);
    // A restart loses the node's history: the same offset means nothing in the new epoch.
    let (dir, admin, _) = hub.stop().await;
    let hub = spawn_hub_in(dir, admin, |_| {}).await;
    let mut back = hub.subscriber(&app, json!({}), &[]).await;
    let ack = recover(&mut back, "room", 2, &epoch).await;
    assert_eq!((ack["recovered"].as_bool(), ack["reason"].as_str()), (Some(false), Some("epoch_changed")));
    assert_ne!(ack["epoch"].as_str(), Some(epoch.as_str()));
    back.roundtrip(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_cut_with_4008_comes_back_and_recovers() {
    let hub = spawn_hub_with(|c| {
        c.websocket.outbound_queue_messages = 16;
        c.websocket.write_buffer_bytes = 1024;
        c.websocket.max_write_buffer_bytes = 256 * 1024;
    })
    .await;
    let app = hub.create_app(json!({"history": {"size": 1000}})).await;
    let mut slow = hub.subscriber(&app, json!({}), &[]).await;
    let epoch = slow.subscribe("busy").await["epoch"].as_str().unwrap().to_owned();
    // It reads nothing while 18 MB come: its queue overflows and it is cut off.
    let payload = "p".repeat(60_000);
    let total = 300;
    for n in 1..=total {
        publish(&hub, &app, "busy", json!({"n": n, "p": payload})).await;
    }
    let mut last = 0;
    let ending = loop {
        match tokio::time::timeout(crate::support::WAIT, futures_util::StreamExt::next(&mut slow.stream))
            .await
            .unwrap()
        {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                last = v["offset"].as_u64().unwrap();
            }
            Some(Ok(tokio_tungstenite::tungstenite::Message::Close(Some(f)))) => break u16::from(f.code),
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(ending, 4008);
    assert!(last < total, "it was cut before the end: {last}");
    let mut back = hub.subscriber(&app, json!({}), &[]).await;
    let ack = recover(&mut back, "busy", last, &epoch).await;
    assert_eq!(ack["recovered"], true, "{ack}");
    let got: Vec<u64> = events(&mut back, (total - last) as usize).await.into_iter().map(|e| e.0).collect();
    assert_eq!(got, ((last + 1)..=total).collect::<Vec<_>>());
}

#[tokio::test]
async fn the_history_route_pages_says_when_it_is_incomplete_and_needs_rooms_read() {
    let hub = spawn_hub().await;
    let app = hub.create_app(json!({"history": {"size": 5}})).await;
    let mut epoch = String::new();
    for n in 1..=8 {
        epoch = publish(&hub, &app, "log", json!({"n": n})).await["epoch"].as_str().unwrap().to_owned();
    }
    let (status, page) = hub.get("/api/rooms/log/history?since=5&limit=2", &app.api_key).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(
        (page["room"].as_str(), page["epoch"].as_str(), page["offset"].as_u64()),
        (Some("log"), Some(epoch.as_str()), Some(8))
    );
    assert_eq!(page["complete"], true);
    let offsets: Vec<u64> =
        page["events"].as_array().unwrap().iter().map(|e| e["offset"].as_u64().unwrap()).collect();
    assert_eq!(offsets, [6, 7]);
    assert_eq!(page["events"][0]["data"], json!({"n": 6}));
    assert_eq!(page["events"][0]["event"], "e");
    let (_, all) = hub.get("/api/rooms/log/history", &app.api_key).await;
    assert_eq!(
        (all["complete"].as_bool(), all["events"].as_array().unwrap().len()),
        (Some(false), 5),
        "1 to 3 are gone"
    );
    let (_, none) = hub.get("/api/rooms/empty-room/history", &app.api_key).await;
    assert_eq!((none["offset"].as_u64(), none["complete"].as_bool()), (Some(0), Some(true)));
    assert_error(&hub.get("/api/rooms/log/history?limit=0", &app.api_key).await, 400, "invalid_request");
    assert_error(&hub.get("/api/rooms/log/history?limit=1001", &app.api_key).await, 400, "invalid_request");
    assert_error(&hub.get("/api/rooms/log/history?since=-1", &app.api_key).await, 400, "invalid_request");
    assert_error(&hub.get("/api/rooms/bad%20room/history", &app.api_key).await, 400, "invalid_request");
    // A key without rooms:read is refused; another app's key sees its own app only.
    let (_, created) = hub
        .post(
            &format!("/api/applications/{}/keys", app.app_id),
            &app.api_key,
            json!({"name": "pub", "scopes": ["broadcast:write"]}),
        )
        .await;
    let narrow = created["api_key"].as_str().expect("a key was made").to_owned();
    assert_error(&hub.get("/api/rooms/log/history", &narrow).await, 403, "insufficient_scope");
    let other = hub.create_app(json!({})).await;
    let (_, theirs) = hub.get("/api/rooms/log/history", &other.api_key).await;
    assert_eq!(theirs["events"].as_array().unwrap().len(), 0, "rooms are per app");
}

#[tokio::test]
async fn a_repeated_idempotency_key_publishes_once_and_answers_the_first_result() {
    let hub = spawn_hub().await;
    let app = hub.create_app(json!({})).await;
    let mut ws = hub.subscriber(&app, json!({}), &["orders"]).await;
    let body = json!({"room": "orders", "event": "placed", "data": {"id": 1}, "idempotency_key": "order-1"});
    let (s1, first) = hub.post("/api/broadcast", &app.api_key, body.clone()).await;
    let (s2, second) = hub.post("/api/broadcast", &app.api_key, body).await;
    assert_eq!((s1.as_u16(), s2.as_u16()), (200, 200));
    assert_eq!(first, second, "the same result, offset included");
    assert_eq!(events(&mut ws, 1).await[0].0, 1);
    ws.roundtrip(7).await;
    // In a batch too, item by item.
    let batch = json!({"events": [
        {"room": "orders", "event": "placed", "data": 2, "idempotency_key": "order-2"},
        {"room": "orders", "event": "placed", "data": 1, "idempotency_key": "order-1"}]});
    let (_, results) = hub.post("/api/broadcast/batch", &app.api_key, batch).await;
    assert_eq!(results["results"][1]["offset"], first["offset"]);
    assert_eq!(events(&mut ws, 1).await, [(2, json!(2))]);
    ws.roundtrip(8).await;
    let bad = json!({"room": "orders", "event": "e", "idempotency_key": "no spaces"});
    let refused = hub.post("/api/broadcast", &app.api_key, bad).await;
    assert_error(&refused, 400, "invalid_request");
    assert!(refused.1["error"].as_str().unwrap().starts_with("idempotency_key:"), "{}", refused.1);
}

#[tokio::test]
async fn apps_set_their_history_within_the_caps() {
    let hub = spawn_hub().await;
    let app = hub.create_app(json!({})).await;
    let (_, shown) = hub.get(&format!("/api/applications/{}", app.app_id), &hub.admin_key).await;
    assert_eq!(shown["app"]["history"], json!({"size": 100, "ttl_s": 300}), "the defaults");
    let path = format!("/api/applications/{}", app.app_id);
    let (status, changed) = hub.put(&path, &hub.admin_key, json!({"history": {"size": 10}})).await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["app"]["history"], json!({"size": 10, "ttl_s": 300}), "ttl_s kept");
    for (body, field) in [
        (json!({"history": {"size": 10_001}}), "history.size"),
        (json!({"history": {"ttl_s": 0}}), "history.ttl_s"),
        (json!({"history": {"ttl_s": 86_401}}), "history.ttl_s"),
    ] {
        let refused = hub.put(&path, &hub.admin_key, body).await;
        assert_error(&refused, 400, "invalid_request");
        assert!(refused.1["error"].as_str().unwrap().starts_with(&format!("{field}:")), "{}", refused.1);
    }
    assert_error(
        &hub.put(&path, &hub.admin_key, json!({"history": {"size": "ten"}})).await,
        400,
        "invalid_request",
    );
    assert_error(
        &hub.put(&path, &hub.admin_key, json!({"history": {"depth": 3}})).await,
        400,
        "invalid_request",
    );
    let (_, after) = hub.get(&path, &hub.admin_key).await;
    assert_eq!(after["app"]["history"], json!({"size": 10, "ttl_s": 300}), "refused changes change nothing");
    // And it applies at once.
    let mut epoch = String::new();
    for n in 1..=12 {
        epoch = publish(&hub, &app, "r", json!(n)).await["epoch"].as_str().unwrap().to_owned();
    }
    let mut ws = hub.subscriber(&app, json!({}), &[]).await;
    assert_eq!(recover(&mut ws, "r", 1, &epoch).await["reason"], "too_old");
    let mut ws = hub.subscriber(&app, json!({}), &[]).await;
    assert_eq!(recover(&mut ws, "r", 2, &epoch).await["recovered"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_bound_holds_over_a_hundred_thousand_rooms() {
    let bound: u64 = 4 << 20;
    // The same load with history off is the base the bound is measured over.
    let base = Flood::run(bound, 0).await;
    let flood = Flood::run(bound, 100).await;
    eprintln!(
        "memory bound: history {} B; RSS grew {} KiB, {} KiB with history off",
        flood.held,
        flood.grown / 1024,
        base.grown / 1024
    );
    assert!(flood.held <= bound, "history bytes {} over the bound {bound}", flood.held);
    assert!(
        flood.grown <= base.grown + bound + bound / 2,
        "RSS grew {} bytes, {} without history, for a {bound}-byte bound",
        flood.grown,
        base.grown
    );
    // The most recent rooms are still recoverable; the oldest lost all they kept, and with
    // nobody in them their streams are gone (a client coming back gets a new epoch).
    assert_eq!(flood.newest["events"].as_array().unwrap().len(), 2, "{}", flood.newest);
    let oldest = &flood.oldest;
    assert_eq!(
        (oldest["events"].as_array().unwrap().len(), oldest["epoch"].is_null()),
        (0, true),
        "{oldest}"
    );
}

/// 100,000 rooms getting two events of about 100 bytes each (~40 MB of history unbounded),
/// published to a node of its own process, so its memory is its own.
struct Flood {
    /// `roomcast_history_bytes` once the node caught up.
    held: u64,
    /// RSS growth over the run, bytes.
    grown: u64,
    newest: Value,
    oldest: Value,
}

impl Flood {
    async fn run(bound: u64, size: u32) -> Flood {
        let dir = tempfile::tempdir().unwrap();
        let admin =
            roomcast::auth::api_key::PresentedKey::generate(roomcast::store::KeyKind::Admin).plaintext();
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_roomcast"))
            .current_dir(dir.path())
            .env("ROOMCAST_SERVER__LISTEN", "127.0.0.1:0")
            .env("ROOMCAST_ADMIN_KEY", &admin)
            .env("ROOMCAST_STORE__PATH", dir.path().join("roomcast.db"))
            .env("ROOMCAST_HISTORY__MAX_BYTES", bound.to_string())
            .env("ROOMCAST_HISTORY__SIZE", size.to_string())
            .env("ROOMCAST_LIMITS__MAX_BATCH_EVENTS", "1000")
            .env("ROOMCAST_LOG__LEVEL", "warn")
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        use tokio::io::AsyncBufReadExt;
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let addr = tokio::time::timeout(crate::support::WAIT, async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(addr) = line.strip_prefix("roomcast listening on http://") {
                    return addr.to_owned();
                }
            }
            panic!("the node exited");
        })
        .await
        .unwrap();
        let http = crate::support::http_client();
        let post = |path: &str, key: &str, body: Value| {
            http.post(format!("http://{addr}{path}")).header("X-API-Key", key).json(&body).send()
        };
        let created: Value =
            post("/api/applications", &admin, json!({})).await.unwrap().json().await.unwrap();
        let key = created["api_key"].as_str().unwrap().to_owned();
        let pid = child.id().unwrap();
        let rss_before = rss_kib(pid);
        for batch in 0..200 {
            let events: Vec<Value> = (0..1000)
                .map(|i| json!({"room": format!("room-{}", (batch * 1000 + i) / 2), "event": "e", "data": {"pad": "x".repeat(60)}}))
                .collect();
            let res = post("/api/broadcast/batch", &key, json!({"events": events})).await.unwrap();
            assert_eq!(res.status(), 200);
        }
        let mut held = u64::MAX;
        for _ in 0..100 {
            let text = http.get(format!("http://{addr}/metrics")).send().await.unwrap().text().await.unwrap();
            held = text
                .lines()
                .find_map(|l| l.strip_prefix("roomcast_history_bytes "))
                .unwrap()
                .trim()
                .parse::<f64>()
                .unwrap() as u64;
            if held <= bound {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let grown = rss_kib(pid).saturating_sub(rss_before) * 1024;
        let get = |path: &str| http.get(format!("http://{addr}{path}")).header("X-API-Key", &key).send();
        let newest: Value = get("/api/rooms/room-99999/history").await.unwrap().json().await.unwrap();
        let oldest: Value = get("/api/rooms/room-0/history").await.unwrap().json().await.unwrap();
        Flood { held, grown, newest, oldest }
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .unwrap()
        .trim()
        .trim_end_matches(" kB")
        .trim()
        .parse()
        .unwrap()
}

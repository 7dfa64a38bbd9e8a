//! History and recovery across a cluster (DESIGN §11): streams live in Redis, so a client
//! recovers on another node than the one it left; a Redis that lost its data gives rooms new
//! epochs; idempotency keys and the history route span the nodes.

use super::*;

/// Subscribes to `room` asking to recover after `offset` of `epoch`; returns the ack.
async fn recover(ws: &mut Ws, room: &str, offset: u64, epoch: &str) -> Value {
    ws.send_json(
        json!({"type": "subscribe", "room": room, "id": 2, "since": {"offset": offset, "epoch": epoch}}),
    )
    .await;
    let ack = ws.next_json().await;
    assert_eq!(ack["type"], "subscribed", "{ack}");
    ack
}

/// The offsets of the next `n` events.
async fn offsets(ws: &mut Ws, n: usize) -> Vec<u64> {
    let mut got = Vec::new();
    while got.len() < n {
        let f = ws.next_json().await;
        assert_eq!(f["type"], "event", "{f}");
        got.push(f["offset"].as_u64().unwrap());
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_recovers_on_another_node_than_the_one_it_left() {
    let redis = RedisServer::start().await;
    let (a, b, _shared) = two_nodes(&redis).await;
    let app = a.create_app(json!({})).await;
    known_on(&b, &app).await;
    let mut on_a = a.subscriber(&app, json!({}), &[]).await;
    let ack = on_a.subscribe("room").await;
    let epoch = ack["epoch"].as_str().unwrap().to_owned();
    for n in 1..=3 {
        let v = a.broadcast(&app, "room", "e", json!(n)).await;
        assert_eq!((v["offset"].as_u64(), v["epoch"].as_str()), (Some(n), Some(epoch.as_str())), "{v}");
    }
    assert_eq!(offsets(&mut on_a, 3).await, [1, 2, 3]);
    drop(on_a);
    for n in 4..=7 {
        b.broadcast(&app, "room", "e", json!(n)).await;
    }
    let mut on_b = b.subscriber(&app, json!({}), &[]).await;
    let ack = recover(&mut on_b, "room", 3, &epoch).await;
    assert_eq!(
        (ack["recovered"].as_bool(), ack["offset"].as_u64(), ack["epoch"].as_str()),
        (Some(true), Some(7), Some(epoch.as_str())),
        "{ack}"
    );
    assert_eq!(offsets(&mut on_b, 4).await, [4, 5, 6, 7]);
    a.broadcast(&app, "room", "e", json!(8)).await;
    assert_eq!(offsets(&mut on_b, 1).await, [8], "then live, from the other node");
    // The history route answers the same on either node.
    for hub in [&a, &b] {
        let (_, page) = hub.get("/api/rooms/room/history?since=5", &app.api_key).await;
        let got: Vec<u64> =
            page["events"].as_array().unwrap().iter().map(|e| e["offset"].as_u64().unwrap()).collect();
        assert_eq!(
            (got, page["complete"].as_bool(), page["epoch"].as_str()),
            (vec![6, 7, 8], Some(true), Some(epoch.as_str()))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cut_while_two_nodes_publish_recovers_every_offset_once() {
    let redis = RedisServer::start().await;
    let (a, b, _shared) = two_nodes(&redis).await;
    let app = a.create_app(json!({"history": {"size": 1000}})).await;
    known_on(&b, &app).await;
    let total = 400u64;
    let mut ws = a.subscriber(&app, json!({}), &[]).await;
    let epoch = ws.subscribe("feed").await["epoch"].as_str().unwrap().to_owned();
    let mut publishers = Vec::new();
    for (hub, from) in [(&a, 0u64), (&b, 1)] {
        let (url, key, http) = (hub.url("/api/broadcast"), app.api_key.clone(), hub.http.clone());
        publishers.push(tokio::spawn(async move {
            for n in (1..=total).filter(|n| n % 2 == from) {
                let body = json!({"room": "feed", "event": "e", "data": n});
                let res = http.post(&url).header("X-API-Key", &key).json(&body).send().await.unwrap();
                assert!(res.status().is_success());
            }
        }));
    }
    let mut seen: Vec<u64> = Vec::new();
    for (cut, node) in [(60usize, &b), (180, &a), (300, &b)] {
        while seen.len() < cut {
            seen.extend(offsets(&mut ws, 1).await);
        }
        drop(ws);
        ws = node.subscriber(&app, json!({}), &[]).await;
        let ack = recover(&mut ws, "feed", *seen.last().unwrap(), &epoch).await;
        assert_eq!(ack["recovered"], true, "{ack}");
    }
    while seen.len() < total as usize {
        seen.extend(offsets(&mut ws, 1).await);
    }
    for p in publishers {
        p.await.unwrap();
    }
    assert_eq!(seen, (1..=total).collect::<Vec<_>>(), "every offset once, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_lost_its_data_gives_rooms_a_new_epoch() {
    let mut redis = RedisServer::start().await;
    let (a, b, _shared) = two_nodes(&redis).await;
    let app = a.create_app(json!({})).await;
    known_on(&b, &app).await;
    let mut ws = a.subscriber(&app, json!({}), &[]).await;
    let epoch = ws.subscribe("room").await["epoch"].as_str().unwrap().to_owned();
    a.broadcast(&app, "room", "e", json!(1)).await;
    a.broadcast(&app, "room", "e", json!(2)).await;
    // A snapshot now; what follows it is lost when Redis comes back from it.
    redis.cli(&["SAVE"]).await;
    a.broadcast(&app, "room", "e", json!(3)).await;
    a.broadcast(&app, "room", "e", json!(4)).await;
    assert_eq!(offsets(&mut ws, 4).await, [1, 2, 3, 4]);
    drop(ws);
    redis.restart().await;
    health_becomes(&[&a, &b], StatusCode::OK).await;
    // The restored stream says offset 2 in the old epoch; the next events would take the
    // offsets of the lost 3 and 4.
    let stream = format!("rc:stream:{{{}:room}}", app.app_id);
    assert_eq!(redis.cli(&["HGET", &stream, "offset"]).await.trim(), "2", "the snapshot was loaded");
    assert_eq!(redis.cli(&["HGET", &stream, "epoch"]).await.trim(), epoch);
    // A client that left at 2, or at 4, must not take them for what it missed.
    for left_at in [2, 4] {
        let mut back = b.subscriber(&app, json!({}), &[]).await;
        let ack = recover(&mut back, "room", left_at, &epoch).await;
        assert_eq!(
            (ack["recovered"].as_bool(), ack["reason"].as_str()),
            (Some(false), Some("epoch_changed")),
            "{ack}"
        );
        assert_ne!(ack["epoch"].as_str(), Some(epoch.as_str()));
        back.roundtrip(4).await;
    }
    let v = a.broadcast(&app, "room", "e", json!("new")).await;
    assert_ne!(v["epoch"].as_str(), Some(epoch.as_str()), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_holds_across_nodes() {
    let redis = RedisServer::start().await;
    let (a, b, _shared) = two_nodes(&redis).await;
    let app = a.create_app(json!({})).await;
    known_on(&b, &app).await;
    let mut ws = b.subscriber(&app, json!({}), &["orders"]).await;
    let body = json!({"room": "orders", "event": "placed", "data": 1, "idempotency_key": "order-7"});
    let (_, first) = a.post("/api/broadcast", &app.api_key, body.clone()).await;
    let (status, again) = b.post("/api/broadcast", &app.api_key, body).await;
    assert_eq!((status.as_u16(), &again), (200, &first), "the first result, from the other node");
    assert_eq!(offsets(&mut ws, 1).await, [1]);
    ws.roundtrip(3).await;
}

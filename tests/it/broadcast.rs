//! `POST /api/broadcast` and `/api/broadcast/batch`, observed by real WebSocket subscribers.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{assert_error, spawn_hub};

#[tokio::test]
async fn broadcast_reaches_subscribers_with_the_documented_response() {
    let hub = spawn_hub().await;
    let app = hub.create_app(json!({"app_id": "bc-app"})).await;
    let mut a = hub.subscriber(&app, json!({}), &["chat"]).await;
    let mut b = hub.subscriber(&app, json!({}), &["chat"]).await;

    let before = roomcast::clock::now_ms();
    let v = hub.broadcast(&app, "chat", "new-message", json!({"text": "hi", "n": [1, 2]})).await;
    assert_eq!(v["success"], true);
    assert_eq!(v["room"], "app-bc-app-chat");
    assert_eq!(v["event"], "new-message");
    assert_eq!(v["subscriber_count"], 2);
    let ts = v["timestamp"].as_i64().unwrap();
    assert!(ts >= before && ts <= roomcast::clock::now_ms());

    for ws in [&mut a, &mut b] {
        let ev = ws.next_json().await;
        assert_eq!(ev["type"], "event");
        assert_eq!(ev["room"], "chat");
        assert_eq!(ev["event"], "new-message");
        assert_eq!(ev["data"], json!({"text": "hi", "n": [1, 2]}));
        assert_eq!(ev["offset"], 1);
        assert_eq!(ev["timestamp"], ts);
    }
    let v = hub.broadcast(&app, "empty-room", "x", json!(null)).await;
    assert_eq!(v["subscriber_count"], 0);
}

#[tokio::test]
async fn apps_with_the_same_room_name_never_meet() {
    let hub = spawn_hub().await;
    let one = hub.create_app(json!({"app_id": "tenant-one"})).await;
    let two = hub.create_app(json!({"app_id": "tenant-two"})).await;
    // Names chosen so that naive "app-{app}-{room}" keys would collide.
    let three = hub.create_app(json!({"app_id": "tenant-one-x"})).await;
    let mut ws_one = hub.subscriber(&one, json!({}), &["x-lobby"]).await;
    let mut ws_two = hub.subscriber(&two, json!({}), &["x-lobby"]).await;
    let mut ws_three = hub.subscriber(&three, json!({}), &["lobby"]).await;

    assert_eq!(hub.broadcast(&one, "x-lobby", "for-one", json!(1)).await["subscriber_count"], 1);
    assert_eq!(hub.broadcast(&two, "x-lobby", "for-two", json!(2)).await["subscriber_count"], 1);
    assert_eq!(hub.broadcast(&three, "lobby", "for-three", json!(3)).await["subscriber_count"], 1);
    assert_eq!(ws_one.next_json().await["event"], "for-one");
    assert_eq!(ws_two.next_json().await["event"], "for-two");
    assert_eq!(ws_three.next_json().await["event"], "for-three");
    // Nothing else arrived before the pongs.
    ws_one.roundtrip(5).await;
    ws_two.roundtrip(5).await;
    ws_three.roundtrip(5).await;

    // An app key cannot publish into another app.
    let got = hub
        .post(
            "/api/broadcast",
            &one.api_key,
            json!({"app_id": "tenant-two", "room": "x-lobby", "event": "e"}),
        )
        .await;
    assert_error(&got, 403, "forbidden");
}

#[tokio::test]
async fn admin_keys_name_the_app() {
    let hub = spawn_hub().await;
    let app = hub.create_app(json!({"app_id": "adm-bc"})).await;
    let mut ws = hub.subscriber(&app, json!({}), &["r"]).await;
    let admin = hub.admin_key.clone();
    let got = hub.post("/api/broadcast", &admin, json!({"room": "r", "event": "e"})).await;
    assert_error(&got, 400, "invalid_request");
    assert!(got.1["error"].as_str().unwrap().contains("app_id"));
    let (status, v) = hub
        .post("/api/broadcast", &admin, json!({"app_id": "adm-bc", "room": "r", "event": "e", "data": 7}))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(ws.next_json().await["data"], 7);
    assert_error(
        &hub.post("/api/broadcast", &admin, json!({"app_id": "ghost", "room": "r", "event": "e"})).await,
        404,
        "not_found",
    );
}

#[tokio::test]
async fn invalid_broadcasts_name_the_field() {
    let hub = spawn_hub().await;
    let app = hub.create_app(json!({"app_id": "inv-bc"})).await;
    let key = app.api_key.clone();
    for (body, field) in [
        (json!({"room": "has space", "event": "e"}), "room"),
        (json!({"room": "", "event": "e"}), "room"),
        (json!({"room": "r".repeat(165), "event": "e"}), "room"),
        (json!({"room": 5, "event": "e"}), "room"),
        (json!({"event": "e"}), "room"),
        (json!({"room": "r", "event": "roomcast:internal"}), "event"),
        (json!({"room": "r", "event": ""}), "event"),
        (json!({"room": "r", "event": "e".repeat(201)}), "event"),
        (json!({"room": "r", "event": "bad\u{7}bell"}), "event"),
    ] {
        let got = hub.post("/api/broadcast", &key, body.clone()).await;
        assert_error(&got, 400, "invalid_request");
        assert!(got.1["error"].as_str().unwrap().contains(field), "{body}: {}", got.1);
    }
    // 64 KiB of compact data is fine; one byte more is not. Whitespace does not count.
    let fits = "x".repeat(65_536 - 2);
    let (status, _) =
        hub.post("/api/broadcast", &key, json!({"room": "r", "event": "e", "data": fits})).await;
    assert_eq!(status, StatusCode::OK);
    let padded = format!(r#"{{"room":"r","event":"e","data":{{ "k" :    "{}"   }}}}"#, "y".repeat(65_000));
    let res = hub
        .http
        .post(hub.url("/api/broadcast"))
        .header("X-API-Key", &key)
        .header("Content-Type", "application/json")
        .body(padded)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let too_big = "x".repeat(65_536 - 1);
    let got = hub.post("/api/broadcast", &key, json!({"room": "r", "event": "e", "data": too_big})).await;
    assert_error(&got, 413, "payload_too_large");
    assert_error(
        &hub.post("/api/broadcast", "rc_app_x", json!({"room": "r", "event": "e"})).await,
        401,
        "invalid_key",
    );
}

#[tokio::test]
async fn exclude_connection_id_skips_the_sender() {
    let hub = spawn_hub().await;
    let app = hub.create_app(json!({"app_id": "excl-app"})).await;
    let mut sender = hub.subscriber(&app, json!({}), &["r"]).await;
    let mut other = hub.subscriber(&app, json!({}), &["r"]).await;
    let (status, v) = hub
        .post(
            "/api/broadcast",
            &app.api_key,
            json!({"room": "r", "event": "e", "exclude_connection_id": sender.connection_id}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(other.next_json().await["event"], "e");
    sender.roundtrip(1).await;
}

#[tokio::test]
async fn disabled_apps_cannot_broadcast() {
    let hub = spawn_hub().await;
    let app = hub.create_app(json!({"app_id": "off-app"})).await;
    hub.put("/api/applications/off-app", &hub.admin_key.clone(), json!({"status": "disabled"})).await;
    assert_error(
        &hub.post("/api/broadcast", &app.api_key, json!({"room": "r", "event": "e"})).await,
        403,
        "app_disabled",
    );
    let admin = hub.admin_key.clone();
    let got =
        hub.post("/api/broadcast", &admin, json!({"app_id": "off-app", "room": "r", "event": "e"})).await;
    assert_error(&got, 403, "app_disabled");
}

#[tokio::test]
async fn batches_publish_in_order_or_not_at_all() {
    let hub = spawn_hub().await;
    let app = hub.create_app(json!({"app_id": "batch-app"})).await;
    let mut ws = hub.subscriber(&app, json!({}), &["a", "b"]).await;
    let events: Vec<Value> =
        (0..3).map(|i| json!({"room": if i == 1 { "b" } else { "a" }, "event": "e", "data": i})).collect();
    let (status, v) = hub.post("/api/broadcast/batch", &app.api_key, json!({"events": events})).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["success"], true);
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    assert_eq!(results[1]["room"], "app-batch-app-b");
    assert!(results.iter().all(|r| r["subscriber_count"] == 1));
    for i in 0..3 {
        assert_eq!(ws.next_json().await["data"], i);
    }

    let bad = json!({"events": [{"room": "a", "event": "ok"}, {"room": "a", "event": "roomcast:x"}]});
    let got = hub.post("/api/broadcast/batch", &app.api_key, bad).await;
    assert_error(&got, 400, "invalid_request");
    assert!(got.1["error"].as_str().unwrap().contains("events[1].event"), "{}", got.1);
    let too_many: Vec<Value> = (0..101).map(|_| json!({"room": "a", "event": "e"})).collect();
    let got = hub.post("/api/broadcast/batch", &app.api_key, json!({"events": too_many})).await;
    assert_error(&got, 400, "invalid_request");
    assert!(got.1["error"].as_str().unwrap().contains("events"));
    assert_error(
        &hub.post("/api/broadcast/batch", &app.api_key, json!({"events": []})).await,
        400,
        "invalid_request",
    );
    // The refused batches delivered nothing.
    ws.roundtrip(2).await;
}

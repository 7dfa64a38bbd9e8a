//! The WebSocket protocol (DESIGN §4, §10): credentials, frames, errors, close codes.

use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::support::{Ending, Ws, assert_subscribed, spawn_hub, spawn_hub_with};

#[tokio::test]
async fn connected_frame_describes_the_connection() {
    let hub = spawn_hub().await;
    let app = hub.create_app(json!({"app_id": "ws-app"})).await;
    let token = hub.token(&app, json!({"user_id": "u1"})).await;
    let (_ws, hello) = hub.try_connect(&token).await.unwrap();
    assert_eq!(hello["type"], "connected");
    assert_eq!(hello["app_id"], "ws-app");
    assert_eq!(hello["user_id"], "u1");
    assert_eq!(hello["heartbeat_s"], 25);
    assert!(hello["connection_id"].as_str().unwrap().starts_with("c_"));

    // Authorization: Bearer works as well as ?token=.
    let mut req = format!("ws://{}/ws", hub.addr).into_client_request().unwrap();
    req.headers_mut().insert("Authorization", format!("Bearer {token}").parse().unwrap());
    let (_ws, hello) = Ws::open(req).await.unwrap();
    assert_eq!(hello["type"], "connected");
}

#[tokio::test]
async fn bad_credentials_are_refused_before_the_upgrade() {
    use base64::Engine;
    let hub = spawn_hub().await;
    let app = hub.create_app(json!({"app_id": "cred-app"})).await;
    let other = hub.create_app(json!({"app_id": "cred-other"})).await;

    let refused = |r: Result<(Ws, serde_json::Value), (u16, serde_json::Value)>| r.expect_err("refused");
    let (status, body) = refused(hub.try_connect("garbage").await);
    assert_eq!((status, body["code"].as_str()), (401, Some("invalid_token")));
    let (status, _) = refused(Ws::open(format!("ws://{}/ws", hub.addr).into_client_request().unwrap()).await);
    assert_eq!(status, 401);

    // A token claiming this app but signed with another app's secret.
    let forged = roomcast::auth::token::mint(
        "cred-app",
        &other.secret,
        &Default::default(),
        roomcast::clock::now_ms() / 1000,
        600,
    );
    assert_eq!(refused(hub.try_connect(&forged).await).0, 401);
    // alg: none.
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let unsigned = format!(
        "{}.{}.",
        b64.encode(r#"{"alg":"none","typ":"JWT"}"#),
        b64.encode(format!(r#"{{"app_id":"cred-app","exp":{}}}"#, roomcast::clock::now_ms() / 1000 + 600))
    );
    assert_eq!(refused(hub.try_connect(&unsigned).await).0, 401);
    // Expired beyond the 30 s leeway.
    let expired = roomcast::auth::token::mint(
        "cred-app",
        &app.secret,
        &Default::default(),
        roomcast::clock::now_ms() / 1000 - 200,
        100,
    );
    assert_eq!(refused(hub.try_connect(&expired).await).0, 401);
    let req = format!("ws://{}/ws?ticket=tk_unknown", hub.addr).into_client_request().unwrap();
    let (status, body) = refused(Ws::open(req).await);
    assert_eq!((status, body["code"].as_str()), (401, Some("invalid_ticket")));

    let token = hub.token(&app, json!({})).await;
    hub.put("/api/applications/cred-app", &app.api_key, json!({"status": "disabled"})).await;
    let (status, body) = refused(hub.try_connect(&token).await);
    assert_eq!((status, body["code"].as_str()), (403, Some("app_disabled")));
}

#[tokio::test]
async fn origin_must_match_allowed_domains() {
    let hub = spawn_hub().await;
    let app = hub
        .create_app(json!({"app_id": "orig-app", "allowed_domains": ["example.com", "*.example.org"]}))
        .await;
    let token = hub.token(&app, json!({})).await;
    let with_origin = |origin: &str| {
        let mut req = format!("ws://{}/ws?token={token}", hub.addr).into_client_request().unwrap();
        req.headers_mut().insert("Origin", origin.parse().unwrap());
        req
    };
    assert!(Ws::open(with_origin("https://example.com")).await.is_ok());
    assert!(Ws::open(with_origin("https://chat.example.org")).await.is_ok());
    let (status, body) = Ws::open(with_origin("https://evil.test")).await.err().unwrap();
    assert_eq!((status, body["code"].as_str()), (403, Some("origin_not_allowed")));
    // No Origin: not a browser, allowed.
    hub.connect(&token).await;
}

#[tokio::test]
async fn a_client_close_is_answered_with_1000_and_leaves_its_rooms() {
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    let hub = spawn_hub().await;
    let app = hub.create_app(json!({})).await;
    let mut ws = hub.subscriber(&app, json!({}), &["bye"]).await;
    let frame = CloseFrame { code: CloseCode::Normal, reason: "done".into() };
    ws.stream.send(Message::Close(Some(frame))).await.unwrap();
    assert_eq!(ws.closed().await, Ending::Closed(1000));
    assert_eq!(hub.broadcast(&app, "bye", "e", json!(1)).await["subscriber_count"], 0);
}

#[tokio::test]
async fn subscribe_unsubscribe_and_ping_echo_ids() {
    let hub = spawn_hub().await;
    let app = hub.create_app(json!({"app_id": "proto-app"})).await;
    let mut ws = hub.subscriber(&app, json!({}), &[]).await;
    ws.send_json(json!({"type": "subscribe", "room": "chat", "id": 7})).await;
    assert_subscribed(&ws.next_json().await, "chat", Some(7));
    ws.send_json(json!({"type": "subscribe", "room": "nolabel"})).await;
    assert_subscribed(&ws.next_json().await, "nolabel", None);
    hub.broadcast(&app, "chat", "e", json!(1)).await;
    assert_eq!(ws.next_json().await["offset"], 1);
    ws.send_json(json!({"type": "unsubscribe", "room": "chat", "id": 8})).await;
    assert_eq!(ws.next_json().await, json!({"type": "unsubscribed", "room": "chat", "id": 8}));
    assert_eq!(hub.broadcast(&app, "chat", "e", json!(2)).await["subscriber_count"], 0);
    ws.roundtrip(9).await;
    ws.send_json(json!({"type": "ping"})).await;
    assert_eq!(ws.next_json().await, json!({"type": "pong"}));
}

#[tokio::test]
async fn error_frames_keep_the_connection_open() {
    let hub = spawn_hub_with(|c| c.limits.max_rooms_per_connection = 2).await;
    let app = hub.create_app(json!({"app_id": "err-app"})).await;
    let mut ws = hub.subscriber(&app, json!({"rooms": ["team-*", "private-mine"]}), &[]).await;
    let expect_error = |code: &'static str, id: Option<u64>| {
        move |v: serde_json::Value| {
            assert_eq!(v["type"], "error", "{v}");
            assert_eq!(v["code"], code, "{v}");
            assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()));
            assert_eq!(v.get("id").and_then(|i| i.as_u64()), id, "{v}");
        }
    };

    ws.send_text("not json at all").await;
    expect_error("invalid_message", None)(ws.next_json().await);
    ws.send_json(json!({"type": "dance", "id": 3})).await;
    expect_error("invalid_message", Some(3))(ws.next_json().await);
    ws.stream.send(Message::Binary(vec![0, 159, 146, 150].into())).await.unwrap();
    expect_error("invalid_message", None)(ws.next_json().await);
    ws.send_json(json!({"type": "subscribe", "room": "bad room!", "id": 4})).await;
    expect_error("invalid_room", Some(4))(ws.next_json().await);
    ws.send_json(json!({"type": "subscribe", "room": "lobby", "id": 5})).await;
    expect_error("room_forbidden", Some(5))(ws.next_json().await);
    ws.send_json(json!({"type": "subscribe", "room": "private-other", "id": 6})).await;
    expect_error("room_forbidden", Some(6))(ws.next_json().await);
    ws.send_json(json!({"type": "subscribe", "room": "presence-team", "id": 7})).await;
    expect_error("room_forbidden", Some(7))(ws.next_json().await);
    ws.send_json(json!({"type": "unsubscribe", "room": "team-a", "id": 8})).await;
    expect_error("not_subscribed", Some(8))(ws.next_json().await);
    ws.send_json(json!({"type": "publish", "room": "team-a", "event": "typing", "id": 9})).await;
    expect_error("client_events_disabled", Some(9))(ws.next_json().await);

    ws.subscribe("team-a").await;
    ws.subscribe("private-mine").await;
    ws.send_json(json!({"type": "subscribe", "room": "team-b", "id": 10})).await;
    expect_error("too_many_rooms", Some(10))(ws.next_json().await);
    ws.roundtrip(11).await;

    // Presence rooms need a user id.
    let mut anon = hub.subscriber(&app, json!({"rooms": ["presence-*"]}), &[]).await;
    anon.send_json(json!({"type": "subscribe", "room": "presence-x", "id": 1})).await;
    expect_error("user_id_required", Some(1))(anon.next_json().await);
}

#[tokio::test]
async fn client_events_reach_others_and_never_echo() {
    let hub = spawn_hub().await;
    let app = hub.create_app(json!({"app_id": "cev-app", "client_events": true})).await;
    let mut talker = hub.subscriber(&app, json!({"can_publish": true, "user_id": "t"}), &["room"]).await;
    let mut listener = hub.subscriber(&app, json!({}), &["room"]).await;
    let mut mute = hub.subscriber(&app, json!({}), &["room"]).await;

    talker
        .send_json(json!({"type": "publish", "room": "room", "event": "typing", "data": {"on": true}}))
        .await;
    let ev = listener.next_json().await;
    assert_eq!((ev["event"].as_str(), ev["data"].clone()), (Some("typing"), json!({"on": true})));
    assert_eq!(mute.next_json().await["event"], "typing");
    talker.roundtrip(1).await;

    // With an id, the publisher hears the offset its event took; the others get that event.
    talker
        .send_json(json!({"type": "publish", "room": "room", "event": "typing", "data": {}, "id": 7}))
        .await;
    let ack = talker.next_json().await;
    let ev = listener.next_json().await;
    assert_eq!(ack, json!({"type": "published", "room": "room", "id": 7, "offset": ev["offset"]}));
    assert_eq!(ev["offset"], 2);
    assert_eq!(mute.next_json().await["offset"], 2);

    // A token without can_publish is refused even though the app allows client events.
    mute.send_json(json!({"type": "publish", "room": "room", "event": "typing", "id": 2})).await;
    assert_eq!(mute.next_json().await["code"], "client_events_disabled");
    talker.send_json(json!({"type": "publish", "room": "elsewhere", "event": "typing", "id": 3})).await;
    assert_eq!(talker.next_json().await["code"], "not_subscribed");
    listener.roundtrip(4).await;
}

#[tokio::test]
async fn oversized_frames_close_with_1009_and_the_server_keeps_serving() {
    let hub = spawn_hub_with(|c| c.limits.max_message_bytes = 1024).await;
    let app = hub.create_app(json!({"app_id": "big-app"})).await;
    let mut ws = hub.subscriber(&app, json!({}), &[]).await;
    let big = json!({"type": "ping", "pad": "x".repeat(2000)}).to_string();
    let _ = ws.stream.send(Message::Text(big.into())).await;
    assert_eq!(ws.closed().await, Ending::Closed(1009));
    let mut again = hub.subscriber(&app, json!({}), &["r"]).await;
    again.roundtrip(1).await;
}

#[tokio::test]
async fn silent_clients_are_pinged_then_closed() {
    let hub = spawn_hub_with(|c| {
        c.websocket.heartbeat_s = 1;
        c.websocket.idle_timeout_s = 2;
    })
    .await;
    let app = hub.create_app(json!({"app_id": "hb-app"})).await;
    let token = hub.token(&app, json!({})).await;
    let (mut ws, _) = hub.try_connect(&token).await.unwrap();
    // The server pings on its own.
    use futures_util::StreamExt;
    let first = tokio::time::timeout(crate::support::WAIT, ws.stream.next()).await.unwrap();
    assert!(matches!(first, Some(Ok(Message::Ping(_)))), "expected a ping, got {first:?}");
    // This client never answers (it stops reading), so the server gives up on it.
    let mut raw = ws.stream.into_inner();
    let mut buf = Vec::new();
    use tokio::io::AsyncReadExt;
    tokio::time::timeout(crate::support::WAIT, raw.read_to_end(&mut buf)).await.unwrap().unwrap();
    // The close frame is the last frame: 0x88, length, then the code 4000 big-endian.
    let close_at = buf.windows(2).rposition(|w| w[0] == 0x88).expect("a close frame");
    assert_eq!(u16::from_be_bytes([buf[close_at + 2], buf[close_at + 3]]), 4000);
}

#[tokio::test]
async fn disabling_an_app_closes_its_connections_with_4003() {
    let hub = spawn_hub().await;
    let app = hub.create_app(json!({"app_id": "kill-app"})).await;
    let bystander = hub.create_app(json!({"app_id": "stay-app"})).await;
    let mut ws = hub.subscriber(&app, json!({}), &["r"]).await;
    let mut other = hub.subscriber(&bystander, json!({}), &["r"]).await;
    hub.put("/api/applications/kill-app", &hub.admin_key.clone(), json!({"status": false})).await;
    assert_eq!(ws.closed().await, Ending::Closed(4003));
    other.roundtrip(1).await;
}

#[tokio::test]
async fn a_slow_consumer_is_closed_with_4008_and_others_get_everything() {
    let hub = spawn_hub_with(|c| {
        c.websocket.outbound_queue_messages = 16;
        c.websocket.write_buffer_bytes = 1024;
        c.websocket.max_write_buffer_bytes = 256 * 1024;
    })
    .await;
    let app = hub.create_app(json!({"app_id": "slow-app"})).await;
    let mut slow = hub.subscriber(&app, json!({}), &["r"]).await;
    let mut fast = hub.subscriber(&app, json!({}), &["r"]).await;
    let payload = "p".repeat(60_000);
    let reader = tokio::spawn(async move {
        for i in 0..300 {
            let ev = fast.next_json().await;
            assert_eq!(ev["offset"], i + 1);
        }
        fast
    });
    // `slow` reads nothing while 18 MB are published at it.
    for i in 0..300 {
        hub.broadcast(&app, "r", "e", json!({"i": i, "p": payload})).await;
    }
    let mut fast = reader.await.unwrap();
    fast.roundtrip(1).await;
    assert_eq!(slow.closed().await, Ending::Closed(4008));
}

#[tokio::test]
async fn client_frames_are_rate_limited_and_abuse_closes_with_4029() {
    let hub = spawn_hub_with(|c| {
        c.limits.client_messages_per_second = 1;
        c.limits.client_messages_burst = 5;
        c.limits.client_abuse_close_after = 10;
    })
    .await;
    let app = hub.create_app(json!({"app_id": "rl-app"})).await;
    let token = hub.token(&app, json!({})).await;
    let mut ws = hub.connect(&token).await;
    for id in 0..8u64 {
        ws.send_json(json!({"type": "ping", "id": id})).await;
    }
    let mut pongs = 0;
    let mut limited = Vec::new();
    for _ in 0..8 {
        let v = ws.next_json().await;
        match v["type"].as_str() {
            Some("pong") => pongs += 1,
            Some("error") => {
                assert_eq!(v["code"], "rate_limited", "{v}");
                limited.push(v["id"].as_u64().unwrap());
            }
            _ => panic!("{v}"),
        }
    }
    // The burst of 5 passes (a sixth may have been earned meanwhile); the rest are refused, ids echoed.
    assert!((5..=6).contains(&pongs), "{pongs} pongs");
    assert_eq!(limited.last(), Some(&7));
    // A client that keeps going is disconnected.
    for id in 8..40u64 {
        if ws.stream.send(Message::Text(json!({"type": "ping", "id": id}).to_string().into())).await.is_err()
        {
            break;
        }
    }
    assert_eq!(ws.closed().await, Ending::Closed(4029));
    // Other connections are unaffected.
    hub.subscriber(&app, json!({}), &["r"]).await.roundtrip(1).await;
}

#[tokio::test]
async fn max_connections_refuses_the_upgrade_with_429_and_frees_slots_on_close() {
    let hub = spawn_hub().await;
    let app = hub.create_app(json!({"app_id": "cap-app", "max_connections": 2})).await;
    let token = hub.token(&app, json!({})).await;
    let a = hub.connect(&token).await;
    let mut b = hub.connect(&token).await;
    let (status, body) = hub.try_connect(&token).await.expect_err("third refused");
    assert_eq!((status, body["code"].as_str()), (429, Some("connection_limit")));
    // Another app is not affected.
    let other = hub.create_app(json!({"app_id": "cap-other"})).await;
    hub.connect(&hub.token(&other, json!({})).await).await;
    // A closed connection gives its slot back.
    b.stream.close(None).await.unwrap();
    assert_eq!(b.closed().await, Ending::Dropped);
    let deadline = std::time::Instant::now() + crate::support::WAIT;
    loop {
        match hub.try_connect(&token).await {
            Ok(_) => break,
            Err((429, _)) if std::time::Instant::now() < deadline => tokio::task::yield_now().await,
            Err(other) => panic!("{other:?}"),
        }
    }
    drop(a);
}

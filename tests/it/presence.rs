//! Presence rooms (DESIGN §4, §5) and room introspection (`/api/rooms…`).

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{Ws, assert_error, spawn_hub, spawn_hub_with};

/// Subscribes and returns the `subscribed` frame.
async fn join(ws: &mut Ws, room: &str, id: u64) -> Value {
    ws.send_json(json!({"type": "subscribe", "room": room, "id": id})).await;
    let ack = ws.next_json().await;
    assert_eq!((ack["type"].as_str(), ack["id"].as_u64()), (Some("subscribed"), Some(id)), "{ack}");
    ack
}

fn member_ids(list: &Value) -> Vec<&str> {
    list.as_array().unwrap().iter().map(|m| m["user_id"].as_str().unwrap()).collect()
}

/// The next frame is a presence event about `user_id`.
async fn expect_member_event(ws: &mut Ws, event: &str, user_id: &str, user_info: Value) {
    let frame = ws.next_json().await;
    assert_eq!(frame["type"], "event", "{frame}");
    assert_eq!(frame["event"], event, "{frame}");
    assert_eq!(frame["room"], "presence-lobby", "{frame}");
    assert_eq!(frame["data"], json!({"user_id": user_id, "user_info": user_info}), "{frame}");
    assert!(frame["offset"].as_u64().is_some() && frame["timestamp"].as_i64().is_some(), "{frame}");
}

#[tokio::test]
async fn members_join_and_leave_once_per_user_across_tabs_and_reconnects() {
    let hub = spawn_hub().await;
    let app = hub.create_app(json!({})).await;
    let alice_claims = json!({"user_id": "alice", "user_info": {"name": "Alice"}});
    let alice_token = hub.token(&app, alice_claims).await;
    let bob_token = hub.token(&app, json!({"user_id": "bob"})).await;

    let mut alice1 = hub.connect(&alice_token).await;
    let ack = join(&mut alice1, "presence-lobby", 1).await;
    assert_eq!(ack["presence"], json!([{"user_id": "alice", "user_info": {"name": "Alice"}}]));
    assert_eq!(ack["member_count"], 1);

    let mut bob = hub.connect(&bob_token).await;
    let ack = join(&mut bob, "presence-lobby", 2).await;
    assert_eq!(member_ids(&ack["presence"]), ["alice", "bob"]);
    assert_eq!(ack["presence"][1]["user_info"], Value::Null, "no user_info in the token");
    expect_member_event(&mut alice1, "user-joined", "bob", Value::Null).await;

    // A second tab of alice is the same member: nobody hears about it.
    let mut alice2 = hub.connect(&alice_token).await;
    let ack = join(&mut alice2, "presence-lobby", 3).await;
    assert_eq!((member_ids(&ack["presence"]), ack["member_count"].as_u64()), (vec!["alice", "bob"], Some(2)));
    bob.roundtrip(10).await;
    alice1.roundtrip(11).await;

    // One tab leaving keeps alice in; the last one leaving (a closed socket) is user-left.
    alice1.send_json(json!({"type": "unsubscribe", "room": "presence-lobby", "id": 4})).await;
    assert_eq!(alice1.next_json().await["type"], "unsubscribed");
    bob.roundtrip(12).await;
    drop(alice2);
    expect_member_event(&mut bob, "user-left", "alice", json!({"name": "Alice"})).await;

    // Reconnecting is joining again.
    let mut alice3 = hub.connect(&alice_token).await;
    let ack = join(&mut alice3, "presence-lobby", 5).await;
    assert_eq!(member_ids(&ack["presence"]), ["alice", "bob"]);
    expect_member_event(&mut bob, "user-joined", "alice", json!({"name": "Alice"})).await;
    // A repeated subscribe changes nothing and tells nobody.
    join(&mut alice3, "presence-lobby", 6).await;
    bob.roundtrip(13).await;

    // Ordinary broadcasts still reach members, with offsets after the presence events.
    let sent = hub.broadcast(&app, "presence-lobby", "chat", json!({"t": 1})).await;
    assert_eq!(sent["subscriber_count"], 2);
    let frame = bob.next_json().await;
    assert_eq!(frame["event"], "chat");
    // Presence rooms need a user id.
    let anon = hub.token(&app, json!({})).await;
    let mut anon = hub.connect(&anon).await;
    anon.send_json(json!({"type": "subscribe", "room": "presence-lobby", "id": 9})).await;
    let error = anon.next_json().await;
    assert_eq!((error["code"].as_str(), error["id"].as_u64()), (Some("user_id_required"), Some(9)));
}

#[tokio::test]
async fn member_lists_are_capped_but_the_count_is_exact() {
    let hub = spawn_hub_with(|c| c.limits.presence_members_listed = 2).await;
    let app = hub.create_app(json!({})).await;
    let mut sockets = Vec::new();
    for user in ["u1", "u2", "u3"] {
        let token = hub.token(&app, json!({"user_id": user})).await;
        sockets.push(hub.connect(&token).await);
    }
    join(&mut sockets[0], "presence-lobby", 1).await;
    join(&mut sockets[1], "presence-lobby", 1).await;
    let ack = join(&mut sockets[2], "presence-lobby", 1).await;
    assert_eq!((member_ids(&ack["presence"]).len(), ack["member_count"].as_u64()), (2, Some(3)));

    // The API pages through all of them.
    let path = "/api/rooms/presence-lobby/presence?limit=2";
    let (status, page) = hub.get(path, &app.api_key).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!((member_ids(&page["members"]), page["member_count"].as_u64()), (vec!["u1", "u2"], Some(3)));
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let (_, rest) = hub.get(&format!("{path}&cursor={cursor}"), &app.api_key).await;
    assert_eq!(member_ids(&rest["members"]), ["u3"]);
    assert_eq!(rest["next_cursor"], Value::Null);
}

#[tokio::test]
async fn rooms_api_lists_counts_and_isolates_tenants() {
    let hub = spawn_hub().await;
    let admin = hub.admin_key.clone();
    let app = hub.create_app(json!({"app_id": "rooms-app"})).await;
    let other = hub.create_app(json!({"app_id": "other-app"})).await;
    let mut a = hub.subscriber(&app, json!({}), &["chat-1", "chat-2", "news"]).await;
    let _b = hub.subscriber(&app, json!({}), &["chat-1"]).await;
    let _c = hub.subscriber(&other, json!({}), &["chat-1", "secret-other"]).await;
    let token = hub.token(&app, json!({"user_id": "ann"})).await;
    let mut ann = hub.connect(&token).await;
    join(&mut ann, "presence-x", 1).await;
    let token = hub.token(&app, json!({"user_id": "ann"})).await;
    let mut ann2 = hub.connect(&token).await;
    join(&mut ann2, "presence-x", 1).await;

    let (status, list) = hub.get("/api/rooms", &app.api_key).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let rooms: Vec<(&str, u64)> = list["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["room"].as_str().unwrap(), r["subscriber_count"].as_u64().unwrap()))
        .collect();
    assert_eq!(rooms, [("chat-1", 2), ("chat-2", 1), ("news", 1), ("presence-x", 2)]);
    assert_eq!(list["next_cursor"], Value::Null);
    assert_eq!(list["rooms"][3]["user_count"], 1, "two tabs, one user");
    assert_eq!(list["rooms"][0]["user_count"], Value::Null);

    // Prefix and pages.
    let (_, page) = hub.get("/api/rooms?prefix=chat-&limit=1", &app.api_key).await;
    assert_eq!(
        (page["rooms"][0]["room"].as_str(), page["next_cursor"].as_str()),
        (Some("chat-1"), Some("chat-1"))
    );
    let (_, page) = hub.get("/api/rooms?prefix=chat-&limit=1&cursor=chat-1", &app.api_key).await;
    assert_eq!((page["rooms"][0]["room"].as_str(), &page["next_cursor"]), (Some("chat-2"), &Value::Null));

    // One room, occupied or not.
    let (_, room) = hub.get("/api/rooms/chat-1", &app.api_key).await;
    assert_eq!(
        (room["room"]["occupied"].as_bool(), room["room"]["subscriber_count"].as_u64()),
        (Some(true), Some(2))
    );
    assert!(room["room"]["occupied_since"].as_str().is_some_and(|t| t.ends_with('Z')), "{room}");
    let (status, empty) = hub.get("/api/rooms/nobody-here", &app.api_key).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        empty["room"],
        json!({"room": "nobody-here", "occupied": false, "subscriber_count": 0, "user_count": null, "occupied_since": null})
    );
    a.send_json(json!({"type": "unsubscribe", "room": "news", "id": 1})).await;
    a.next_json().await;
    assert_eq!(hub.get("/api/rooms/news", &app.api_key).await.1["room"]["occupied"], false);

    // Another tenant's rooms never show: not in lists, not by name.
    let (_, theirs) = hub.get("/api/rooms", &other.api_key).await;
    let names: Vec<&str> =
        theirs["rooms"].as_array().unwrap().iter().map(|r| r["room"].as_str().unwrap()).collect();
    assert_eq!(names, ["chat-1", "secret-other"]);
    assert_eq!(hub.get("/api/rooms/secret-other", &app.api_key).await.1["room"]["occupied"], false);
    assert_eq!(hub.get("/api/rooms/chat-1", &other.api_key).await.1["room"]["subscriber_count"], 1);
    assert_error(&hub.get("/api/rooms?app_id=other-app", &app.api_key).await, 403, "forbidden");

    // Admins name the app; scopes are checked; bad input is 400.
    let (_, by_admin) = hub.get("/api/rooms?app_id=other-app", &admin).await;
    assert_eq!(by_admin["rooms"].as_array().unwrap().len(), 2);
    assert_error(&hub.get("/api/rooms", &admin).await, 400, "invalid_request");
    assert_error(&hub.get("/api/rooms?app_id=never-was", &admin).await, 404, "not_found");
    let path = "/api/applications/rooms-app/keys";
    let (_, narrow) = hub.post(path, &app.api_key, json!({"scopes": ["broadcast:write"]})).await;
    let narrow = narrow["api_key"].as_str().unwrap();
    let refused = hub.get("/api/rooms", narrow).await;
    assert_error(&refused, 403, "insufficient_scope");
    assert!(refused.1["error"].as_str().unwrap().contains("rooms:read"));
    assert_error(&hub.get("/api/rooms/bad%20name", &app.api_key).await, 400, "invalid_request");
    assert_error(&hub.get("/api/rooms/chat-1/presence", &app.api_key).await, 400, "invalid_request");
    assert_error(&hub.get("/api/rooms?limit=0", &app.api_key).await, 400, "invalid_request");
    assert_error(&hub.get("/api/rooms?cursor=a%20b", &app.api_key).await, 400, "invalid_request");
    let (_, members) = hub.get("/api/rooms/presence-x/presence", &app.api_key).await;
    assert_eq!((member_ids(&members["members"]), members["member_count"].as_u64()), (vec!["ann"], Some(1)));
    let (_, none) = hub.get("/api/rooms/presence-empty/presence", &app.api_key).await;
    assert_eq!((none["members"].clone(), none["member_count"].as_u64()), (json!([]), Some(0)));
}

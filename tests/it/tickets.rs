//! One-time tickets: bought with a key or a client JWT, redeemed once at `/ws?ticket=`.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{TestHub, assert_error, spawn_hub, split};

async fn buy(hub: &TestHub, auth: (&str, &str), body: Value) -> (StatusCode, Value) {
    let res = hub.http.post(hub.url("/api/tickets")).header(auth.0, auth.1).json(&body).send().await.unwrap();
    split(res).await
}

#[tokio::test]
async fn a_key_buys_a_single_use_ticket_with_the_identity_it_names() {
    let hub = spawn_hub().await;
    let app = hub.create_app(json!({"app_id": "tix-app"})).await;
    let (status, v) =
        buy(&hub, ("X-API-Key", &app.api_key), json!({"user_id": "ann", "rooms": ["team-*"]})).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["success"], true);
    assert_eq!(v["expires_in"], 30);
    let ticket = v["ticket"].as_str().unwrap().to_owned();

    let (mut ws, hello) = hub.try_redeem(&ticket).await.unwrap();
    assert_eq!((hello["app_id"].as_str(), hello["user_id"].as_str()), (Some("tix-app"), Some("ann")));
    ws.subscribe("team-red").await;
    ws.send_json(json!({"type": "subscribe", "room": "lobby", "id": 2})).await;
    assert_eq!(ws.next_json().await["code"], "room_forbidden");

    let (status, body) = hub.try_redeem(&ticket).await.expect_err("a ticket works once");
    assert_eq!((status, body["code"].as_str()), (401, Some("invalid_ticket")));
}

#[tokio::test]
async fn a_client_jwt_buys_a_ticket_carrying_its_own_identity() {
    let hub = spawn_hub().await;
    let app = hub.create_app(json!({"app_id": "tix-jwt"})).await;
    let token = hub.token(&app, json!({"user_id": "bob", "rooms": ["only-this"]})).await;
    // The body cannot widen what the JWT allows.
    let (status, v) = buy(
        &hub,
        ("Authorization", &format!("Bearer {token}")),
        json!({"user_id": "mallory", "rooms": ["*"]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (mut ws, hello) = hub.try_redeem(v["ticket"].as_str().unwrap()).await.unwrap();
    assert_eq!(hello["user_id"], "bob");
    ws.subscribe("only-this").await;
    ws.send_json(json!({"type": "subscribe", "room": "other", "id": 3})).await;
    assert_eq!(ws.next_json().await["code"], "room_forbidden");

    assert_error(&buy(&hub, ("Authorization", "Bearer not-a-jwt"), json!({})).await, 401, "invalid_token");
}

#[tokio::test]
async fn ticket_requests_are_checked() {
    let hub = spawn_hub().await;
    let app = hub.create_app(json!({"app_id": "tix-chk"})).await;
    let other = hub.create_app(json!({"app_id": "tix-oth"})).await;
    let key = ("X-API-Key", app.api_key.as_str());
    for (body, field) in [
        (json!({"expires_in": 4}), "expires_in"),
        (json!({"expires_in": 301}), "expires_in"),
        (json!({"rooms": ["bad room"]}), "rooms[0]"),
        (json!({"user_info": "text"}), "user_info"),
    ] {
        let got = buy(&hub, key, body).await;
        assert_error(&got, 400, "invalid_request");
        assert!(got.1["error"].as_str().unwrap().contains(field), "{field}: {}", got.1);
    }
    let (_, v) = buy(&hub, key, json!({"expires_in": 300})).await;
    assert_eq!(v["expires_in"], 300);
    assert_error(
        &buy(&hub, ("X-API-Key", &other.api_key), json!({"app_id": "tix-chk"})).await,
        403,
        "forbidden",
    );
    let admin = hub.admin_key.clone();
    let got = buy(&hub, ("X-API-Key", &admin), json!({})).await;
    assert_error(&got, 400, "invalid_request");
    assert!(got.1["error"].as_str().unwrap().contains("app_id"));
    let (status, _) = buy(&hub, ("X-API-Key", &admin), json!({"app_id": "tix-chk"})).await;
    assert_eq!(status, StatusCode::OK);
    assert_error(&buy(&hub, ("X-API-Key", "rc_app_bogus"), json!({})).await, 401, "invalid_key");
}

//! Hostile input: broken frames, absurd JSON, floods and injection attempts. After each the hub
//! must still answer `/health` and another tenant's subscriber must still get its events.

use std::net::SocketAddr;

use futures_util::SinkExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::support::{TestApp, TestHub, WAIT, Ws, assert_error, spawn_hub, spawn_hub_with, split};

/// A bystander: another app with a subscriber, to prove an attack on one tenant leaves the
/// others alone.
struct Bystander {
    app: TestApp,
    ws: Ws,
}

impl Bystander {
    async fn new(hub: &TestHub) -> Self {
        let app = hub.create_app(json!({})).await;
        let ws = hub.subscriber(&app, json!({}), &["calm"]).await;
        Bystander { app, ws }
    }

    /// The hub is healthy and this tenant still gets its events.
    async fn still_served(&mut self, hub: &TestHub, n: u64) {
        let (status, health) = split(hub.http.get(hub.url("/health")).send().await.unwrap()).await;
        assert_eq!(status, StatusCode::OK, "{health}");
        hub.broadcast(&self.app, "calm", "tick", json!({"n": n})).await;
        let frame = self.ws.next_json().await;
        assert_eq!((frame["event"].as_str(), &frame["data"]), (Some("tick"), &json!({"n": n})), "{frame}");
    }
}

/// A WebSocket opened by hand, for frames no well-behaved library would send.
struct RawWs(TcpStream);

impl RawWs {
    async fn open(addr: SocketAddr, token: &str) -> Self {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let request = format!(
            "GET /ws?token={token} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(tcp.read_u8().await.unwrap());
        }
        assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
        let mut raw = RawWs(tcp);
        assert_eq!(raw.read_frame().await.0, 0x1, "the connected frame comes first");
        raw
    }

    /// Sends one frame with `first` as its first byte (FIN, RSV, opcode), masked or not.
    async fn send(&mut self, first: u8, payload: &[u8], masked: bool) {
        assert!(payload.len() < 126);
        let mut frame = vec![first, payload.len() as u8 | if masked { 0x80 } else { 0 }];
        let mask = [0x12, 0x34, 0x56, 0x78];
        if masked {
            frame.extend_from_slice(&mask);
            frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        } else {
            frame.extend_from_slice(payload);
        }
        self.0.write_all(&frame).await.unwrap();
    }

    /// The next server frame as (opcode, payload).
    async fn read_frame(&mut self) -> (u8, Vec<u8>) {
        tokio::time::timeout(WAIT, async {
            let first = self.0.read_u8().await.unwrap();
            let len = match self.0.read_u8().await.unwrap() & 0x7f {
                126 => u64::from(self.0.read_u16().await.unwrap()),
                127 => self.0.read_u64().await.unwrap(),
                n => u64::from(n),
            };
            let mut payload = vec![0; len as usize];
            self.0.read_exact(&mut payload).await.unwrap();
            (first & 0x0f, payload)
        })
        .await
        .expect("a frame in time")
    }

    /// Reads until a close frame and returns its code.
    async fn close_code(&mut self) -> u16 {
        loop {
            let (opcode, payload) = self.read_frame().await;
            if opcode == 0x8 {
                return u16::from_be_bytes([payload[0], payload[1]]);
            }
        }
    }
}

#[tokio::test]
async fn binary_invalid_utf8_and_protocol_violations() {
    let hub = spawn_hub().await;
    let mut calm = Bystander::new(&hub).await;
    let app = hub.create_app(json!({})).await;
    let token = hub.token(&app, json!({})).await;

    // Binary frames get an error frame and the connection stays usable.
    let mut ws = hub.connect(&token).await;
    ws.stream.send(Message::Binary(vec![0xff, 0x00, 0x7b].into())).await.unwrap();
    let error = ws.next_json().await;
    assert_eq!((error["type"].as_str(), error["code"].as_str()), (Some("error"), Some("invalid_message")));
    ws.roundtrip(1).await;
    calm.still_served(&hub, 1).await;

    // A text frame that is not UTF-8: 1007.
    let mut raw = RawWs::open(hub.addr, &token).await;
    raw.send(0x81, b"{\"type\":\"ping\",\"x\":\"\xc3\x28\"}", true).await;
    assert_eq!(raw.close_code().await, 1007);
    calm.still_served(&hub, 2).await;

    // An unmasked client frame breaks the protocol: 1002.
    let mut raw = RawWs::open(hub.addr, &token).await;
    raw.send(0x81, br#"{"type":"ping"}"#, false).await;
    assert_eq!(raw.close_code().await, 1002);
    // So do reserved bits and an unknown opcode.
    let mut raw = RawWs::open(hub.addr, &token).await;
    raw.send(0xc1, br#"{"type":"ping"}"#, true).await;
    assert_eq!(raw.close_code().await, 1002);
    let mut raw = RawWs::open(hub.addr, &token).await;
    raw.send(0x83, b"?", true).await;
    assert_eq!(raw.close_code().await, 1002);
    calm.still_served(&hub, 3).await;
}

#[tokio::test]
async fn unknown_and_malformed_client_frames_get_error_frames() {
    let hub = spawn_hub_with(|c| c.limits.client_messages_burst = 100).await;
    let mut calm = Bystander::new(&hub).await;
    let app = hub.create_app(json!({})).await;
    let mut ws = hub.subscriber(&app, json!({}), &[]).await;
    let cases: &[(&str, &str, Value)] = &[
        (r#"{"type":"hack","id":7}"#, "invalid_message", json!(7)),
        (r#"{"id":8}"#, "invalid_message", json!(8)),
        ("[]", "invalid_message", Value::Null),
        ("null", "invalid_message", Value::Null),
        (r#""subscribe""#, "invalid_message", Value::Null),
        ("{", "invalid_message", Value::Null),
        ("", "invalid_message", Value::Null),
        (r#"{"type":"subscribe","id":9}"#, "invalid_room", json!(9)),
        (r#"{"type":"subscribe","room":{"$gt":""},"id":10}"#, "invalid_room", json!(10)),
        (r#"{"type":"subscribe","room":"a\u0000b","id":11}"#, "invalid_room", json!(11)),
        (r#"{"type":"subscribe","room":"../../etc/passwd","id":12}"#, "invalid_room", json!(12)),
        (
            r#"{"type":"publish","room":"r","event":"roomcast:x","data":{},"id":13}"#,
            "invalid_message",
            json!(13),
        ),
        // Ids that are not small whole numbers are not echoed.
        (r#"{"type":"hack","id":1e999}"#, "invalid_message", Value::Null),
        (r#"{"type":"hack","id":18446744073709551616}"#, "invalid_message", Value::Null),
        (r#"{"type":"hack","id":-1}"#, "invalid_message", Value::Null),
    ];
    // The message is fixed per code: what the parser made of the frame stays in the log.
    let mut messages = std::collections::HashMap::new();
    for (n, (text, code, id)) in cases.iter().enumerate() {
        ws.send_text(text).await;
        let error = ws.next_json().await;
        assert_eq!(error["type"], "error", "{text}: {error}");
        assert_eq!(error["code"], *code, "{text}: {error}");
        assert_eq!(error.get("id").cloned().unwrap_or(Value::Null), *id, "{text}: {error}");
        let message = error["message"].as_str().unwrap_or_default().to_owned();
        assert!(!message.is_empty(), "{error}");
        assert_eq!(messages.entry(*code).or_insert_with(|| message.clone()), &message, "{text}: {error}");
        assert!(!message.contains("line") && !message.contains("column"), "{text}: {error}");
        ws.roundtrip(100 + n as u64).await;
    }
    calm.still_served(&hub, 1).await;
}

#[tokio::test]
async fn deep_nesting_and_huge_numbers_are_refused_without_harm() {
    let hub = spawn_hub().await;
    let mut calm = Bystander::new(&hub).await;
    let app = hub.create_app(json!({"client_events": true})).await;
    let mut ws = hub.subscriber(&app, json!({"can_publish": true}), &["deep"]).await;

    // 20,000 levels: far past serde_json's recursion limit, under the 64 KiB frame limit.
    let deep = format!("{}{}", "[".repeat(20_000), "]".repeat(20_000));
    ws.send_text(&format!(r#"{{"type":"publish","room":"deep","event":"e","data":{deep},"id":5}}"#)).await;
    let error = ws.next_json().await;
    assert_eq!(error["code"], "invalid_message", "{error}");
    ws.roundtrip(6).await;

    let (status, v) =
        post_raw(&hub, &app.api_key, format!(r#"{{"room":"deep","event":"e","data":{deep}}}"#)).await;
    assert_error(&(status, v.clone()), 400, "invalid_request");
    assert!(v["error"].as_str().unwrap().contains("data"), "{v}");

    // Exactly the depth limit passes.
    let edge = format!(r#"{{"room":"deep","event":"edge","data":{}{}}}"#, "[".repeat(128), "]".repeat(128));
    let (status, v) = post_raw(&hub, &app.api_key, edge).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(next_text(&mut ws).await, format!("{}{}", "[".repeat(128), "]".repeat(128)));

    // Data is opaque: numbers beyond f64 or u64 travel exactly as written, never rounded.
    for n in ["1e999", "-1e999", "123456789012345678901234567890"] {
        let body = format!(r#"{{"room":"deep","event":"big","data":{{"n": {n}}}}}"#);
        let (status, v) = post_raw(&hub, &app.api_key, body).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(next_text(&mut ws).await, format!(r#"{{"n": {n}}}"#));
    }
    // Numeric fields elsewhere name the field.
    let res = hub
        .http
        .post(hub.url("/api/token"))
        .json(&json!({"app_id": app.app_id, "app_secret": app.secret, "expires_in": 1e300}))
        .send()
        .await
        .unwrap();
    let got = split(res).await;
    assert_error(&got, 400, "invalid_request");
    assert!(got.1["error"].as_str().unwrap().contains("expires_in"), "{}", got.1);
    let got = hub.get("/api/applications?limit=99999999999999999999999", &hub.admin_key.clone()).await;
    assert_error(&got, 400, "invalid_request");
    calm.still_served(&hub, 1).await;
}

/// `POST /api/broadcast` with a body sent byte for byte.
async fn post_raw(hub: &TestHub, key: &str, body: String) -> (StatusCode, Value) {
    let res = hub
        .http
        .post(hub.url("/api/broadcast"))
        .header("X-API-Key", key)
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    split(res).await
}

/// The `data` of the next event, as the exact text the hub sent.
async fn next_text(ws: &mut Ws) -> String {
    let frame = loop {
        match tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut ws.stream)).await.unwrap() {
            Some(Ok(Message::Text(t))) => break t.as_str().to_owned(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    };
    let start = frame.find(r#""data":"#).expect("an event frame") + 7;
    let end = frame
        .rfind(r#","offset""#)
        .or_else(|| frame.rfind(",\"timestamp\""))
        .expect("data is followed by offset");
    frame[start..end].to_owned()
}

#[tokio::test]
async fn ten_thousand_subscribes_on_one_connection() {
    // With the default frame limit the flood is cut off: error frames, then 4029.
    let hub = spawn_hub().await;
    let mut calm = Bystander::new(&hub).await;
    let app = hub.create_app(json!({})).await;
    let mut ws = hub.subscriber(&app, json!({}), &[]).await;
    for i in 0..10_000 {
        let frame = json!({"type": "subscribe", "room": format!("r{i}"), "id": i}).to_string();
        if ws.stream.feed(Message::Text(frame.into())).await.is_err() {
            break;
        }
    }
    let _ = ws.stream.flush().await;
    let (mut subscribed, mut limited) = (0, 0);
    let ending = loop {
        match tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut ws.stream)).await.unwrap() {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                match (v["type"].as_str(), v["code"].as_str()) {
                    (Some("subscribed"), _) => subscribed += 1,
                    (Some("error"), Some("rate_limited")) => limited += 1,
                    _ => panic!("unexpected {v}"),
                }
            }
            Some(Ok(Message::Close(Some(f)))) => break u16::from(f.code),
            Some(Ok(_)) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(ending, 4029);
    assert!(subscribed <= 21, "only the burst gets through: {subscribed}");
    assert_eq!(limited, 99, "refused frames before the close");
    calm.still_served(&hub, 1).await;

    // Without the frame limit the room cap holds: 100 rooms, then too_many_rooms.
    let hub = spawn_hub_with(|c| {
        c.limits.client_messages_per_second = 1_000_000;
        c.limits.client_messages_burst = 1_000_000;
    })
    .await;
    let app = hub.create_app(json!({})).await;
    let mut ws = hub.subscriber(&app, json!({}), &[]).await;
    for i in 0..10_000 {
        let frame = json!({"type": "subscribe", "room": format!("r{i}"), "id": i}).to_string();
        ws.stream.feed(Message::Text(frame.into())).await.unwrap();
    }
    ws.stream.flush().await.unwrap();
    let (mut subscribed, mut refused) = (0, 0);
    while subscribed + refused < 10_000 {
        let v = ws.next_json().await;
        match (v["type"].as_str(), v["code"].as_str()) {
            (Some("subscribed"), _) => subscribed += 1,
            (Some("error"), Some("too_many_rooms")) => refused += 1,
            _ => panic!("unexpected {v}"),
        }
    }
    assert_eq!((subscribed, refused), (100, 9_900));
    ws.roundtrip(1).await;
    let (_, last_in) = hub.post("/api/broadcast", &app.api_key, json!({"room": "r99", "event": "e"})).await;
    let (_, first_out) =
        hub.post("/api/broadcast", &app.api_key, json!({"room": "r100", "event": "e"})).await;
    assert_eq!(
        (last_in["subscriber_count"].as_u64(), first_out["subscriber_count"].as_u64()),
        (Some(1), Some(0))
    );
}

/// Opens a WebSocket from `local` (any 127.0.0.0/8 address) with extra headers.
async fn upgrade_from(
    hub: &TestHub,
    local: &str,
    token: &str,
    headers: &[(&str, &str)],
) -> Result<(), (u16, Value)> {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{local}:0").parse().unwrap()).unwrap();
    let tcp = socket.connect(hub.addr).await.unwrap();
    let mut req = format!("ws://{}/ws?token={token}", hub.addr).into_client_request().unwrap();
    for (name, value) in headers {
        let name: tokio_tungstenite::tungstenite::http::HeaderName = name.parse().unwrap();
        req.headers_mut().insert(name, value.parse().unwrap());
    }
    match tokio_tungstenite::client_async(req, tcp).await {
        Ok(_) => Ok(()),
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            let retry = res.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
            let limit =
                res.headers().get("x-ratelimit-limit").and_then(|v| v.to_str().ok()).map(str::to_owned);
            let mut body: Value =
                res.body().as_ref().map(|b| serde_json::from_slice(b).unwrap()).unwrap_or_default();
            body["retry_after_header"] = json!(retry);
            body["limit_header"] = json!(limit);
            Err((res.status().as_u16(), body))
        }
        Err(e) => panic!("upgrade failed: {e}"),
    }
}

#[tokio::test]
async fn an_upgrade_flood_from_one_ip_is_limited_per_ip() {
    let hub = spawn_hub_with(|c| c.limits.upgrade_rate_limit = 5).await;
    let mut calm = Bystander::new(&hub).await;
    let app = hub.create_app(json!({})).await;
    let token = hub.token(&app, json!({})).await;
    // Failed upgrades count too: a flood of bad tokens spends the same bucket.
    for _ in 0..2 {
        assert_eq!(upgrade_from(&hub, "127.0.0.3", "bad", &[]).await.unwrap_err().0, 401);
    }
    for _ in 0..3 {
        upgrade_from(&hub, "127.0.0.3", &token, &[]).await.unwrap();
    }
    let (status, body) = upgrade_from(&hub, "127.0.0.3", &token, &[]).await.unwrap_err();
    assert_eq!((status, body["code"].as_str()), (429, Some("rate_limited")), "{body}");
    assert!(body["retry_after"].as_u64().is_some_and(|s| s >= 1), "{body}");
    assert_eq!(body["retry_after_header"], body["retry_after"].to_string(), "{body}");
    assert_eq!(body["limit_header"], "5");
    // Another address has its own bucket.
    upgrade_from(&hub, "127.0.0.4", &token, &[]).await.unwrap();
    // Behind a trusted proxy (loopback by default) each forwarded client has its own bucket;
    // what the client wrote left of the proxy's entry is not believed.
    let forwarded = [("x-forwarded-for", "198.51.100.7")];
    for _ in 0..5 {
        upgrade_from(&hub, "127.0.0.3", &token, &forwarded).await.unwrap();
    }
    assert_eq!(upgrade_from(&hub, "127.0.0.3", &token, &forwarded).await.unwrap_err().0, 429);
    let spoofed = [("x-forwarded-for", "198.51.100.9, 198.51.100.7")];
    assert_eq!(upgrade_from(&hub, "127.0.0.3", &token, &spoofed).await.unwrap_err().0, 429);
    calm.still_served(&hub, 1).await;

    // When the hub faces clients directly, X-Forwarded-For changes nothing.
    let hub = spawn_hub_with(|c| {
        c.limits.upgrade_rate_limit = 2;
        c.server.trusted_proxies = vec![];
    })
    .await;
    let app = hub.create_app(json!({})).await;
    let token = hub.token(&app, json!({})).await;
    for n in 0..2 {
        let forwarded = format!("198.51.100.{n}");
        upgrade_from(&hub, "127.0.0.5", &token, &[("x-forwarded-for", &forwarded)]).await.unwrap();
    }
    let fresh = [("x-forwarded-for", "198.51.100.99")];
    assert_eq!(upgrade_from(&hub, "127.0.0.5", &token, &fresh).await.unwrap_err().0, 429);
}

#[tokio::test]
async fn header_and_query_injection_attempts() {
    let hub = spawn_hub().await;
    let admin = hub.admin_key.clone();
    let mut calm = Bystander::new(&hub).await;
    let app = hub.create_app(json!({"app_id": "target-app"})).await;

    // SQL in ids is refused by the id syntax; in free text it is stored as text.
    let got = hub.post("/api/applications", &admin, json!({"app_id": "x'); DROP TABLE apps;--"})).await;
    assert_error(&got, 400, "invalid_request");
    let evil_name = "Robert'); DROP TABLE apps;-- <script>";
    let (status, v) =
        hub.post("/api/applications", &admin, json!({"app_id": "sql-name", "name": evil_name})).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert_eq!(hub.get("/api/applications/sql-name", &admin).await.1["app"]["name"], evil_name);
    for path in [
        "/api/applications/target-app'%20OR%20'1'='1",
        "/api/applications/..%2F..%2Fetc%2Fpasswd",
        "/api/applications/%00",
        "/api/applications/target-app%0d%0aX-Injected:%201",
    ] {
        let (status, v) = hub.get(path, &admin).await;
        assert!(status == 400 || status == 404, "{path}: {status} {v}");
        assert_eq!(v["success"], false, "{path}: {v}");
    }
    // Repeated and odd query parameters are refused, never guessed.
    let token = hub.token(&app, json!({})).await;
    let dup = format!("ws://{}/ws?token={token}&token=other", hub.addr).into_client_request().unwrap();
    assert_eq!(Ws::open(dup).await.err().map(|e| e.0), Some(400));
    for query in ["limit=-1", "limit=abc", "limit=1&limit=2", "cursor=%00%ff", "include_deleted=maybe"] {
        let (status, v) = hub.get(&format!("/api/applications?{query}"), &admin).await;
        assert_error(&(status, v), 400, "invalid_request");
    }
    // A room or event name carrying a header break or NUL is a bad name, not a header.
    for (room, event) in [("a\r\nb", "e"), ("a\u{0}b", "e"), ("r", "e\r\nX-Injected: 1")] {
        let got = hub.post("/api/broadcast", &app.api_key, json!({"room": room, "event": event})).await;
        assert_error(&got, 400, "invalid_request");
    }
    // Broken header bytes are refused by the HTTP parser before any handler runs.
    let mut tcp = TcpStream::connect(hub.addr).await.unwrap();
    tcp.write_all(b"GET /api/test HTTP/1.1\r\nHost: x\r\nX-API-Key: rc_admin_\x00abc\r\n\r\n").await.unwrap();
    let mut answer = vec![0; 64];
    let n = tokio::time::timeout(WAIT, tcp.read(&mut answer)).await.unwrap().unwrap();
    assert!(answer[..n].starts_with(b"HTTP/1.1 400"), "{}", String::from_utf8_lossy(&answer[..n]));
    // A key in the query never overrides one in a header; a bad header key is not a fall-through.
    let path = format!("/api/test?api_key={admin}");
    assert_error(&hub.get(&path, "rc_app_nope").await, 401, "invalid_key");
    // Nothing was damaged: every app is still there.
    let (_, list) = hub.get("/api/applications", &admin).await;
    assert_eq!(list["applications"].as_array().map(Vec::len), Some(3), "{list}");
    calm.still_served(&hub, 1).await;
}

#[tokio::test]
async fn a_wrong_secret_and_an_unknown_key_look_the_same() {
    let hub = spawn_hub().await;
    let app = hub.create_app(json!({})).await;
    // Same key id, secrets wrong in the first or the last character, and a key id never issued.
    let (head, secret) = app.api_key.rsplit_once('_').unwrap();
    let flip = |c: char| if c == 'a' { 'b' } else { 'a' };
    let first_wrong = format!("{head}_{}{}", flip(secret.chars().next().unwrap()), &secret[1..]);
    let last_wrong = format!("{head}_{}{}", &secret[..31], flip(secret.chars().last().unwrap()));
    let unknown = format!("rc_app_AAAAAAAAAAAA_{secret}");
    let mut answers = Vec::new();
    for key in [&first_wrong, &last_wrong, &unknown] {
        let res = hub.http.get(hub.url("/api/test")).header("X-API-Key", key).send().await.unwrap();
        answers.push((res.status(), res.text().await.unwrap()));
    }
    assert_eq!(answers[0].0, StatusCode::UNAUTHORIZED);
    assert!(answers.iter().all(|a| *a == answers[0]), "{answers:?}");
    // Same for app secrets on /api/token: a wrong secret and an unknown app answer alike.
    let mut answers = Vec::new();
    for (app_id, secret) in [(app.app_id.as_str(), "wrong"), ("no-such-app", app.secret.as_str())] {
        let res = hub
            .http
            .post(hub.url("/api/token"))
            .json(&json!({"app_id": app_id, "app_secret": secret}))
            .send()
            .await
            .unwrap();
        answers.push(split(res).await);
    }
    assert_error(&answers[0], 401, "invalid_key");
    assert_eq!(answers[0], answers[1]);
}

//! Webhooks (DESIGN §6) against a real HTTP receiver on 127.0.0.1: signatures checked with an
//! HMAC computed here, filters, system events, retries, 410, durability across a restart,
//! refused private targets, and broadcasts unaffected by a slow receiver.

use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::support::receiver::{Hit, Receiver, Reply};
use crate::support::{TestApp, TestHub, WAIT, assert_error, spawn_hub_in, spawn_hub_with};
use roomcast::config::Config;

/// A hub that may call loopback targets, with fast retries.
async fn hub_with(adjust: impl FnOnce(&mut Config)) -> TestHub {
    spawn_hub_with(|c| {
        c.webhooks.allow_private_targets = true;
        c.webhooks.retry_delays_ms = vec![100, 200, 300];
        adjust(c);
    })
    .await
}

/// Registers a webhook; returns `(webhook_id, secret)`.
async fn register(hub: &TestHub, app: &TestApp, url: &str, events: Value) -> (String, String) {
    let (status, v) = hub.post("/api/webhooks", &app.api_key, json!({"url": url, "events": events})).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    (v["webhook"]["id"].as_str().unwrap().to_owned(), v["secret"].as_str().unwrap().to_owned())
}

async fn deliveries(hub: &TestHub, key: &str, webhook_id: &str) -> Vec<Value> {
    let (status, v) = hub.get(&format!("/api/webhooks/{webhook_id}/deliveries?limit=100"), key).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    v["deliveries"].as_array().unwrap().clone()
}

/// Polls the delivery log until `done` holds for it (the log is the observable outcome).
async fn log_until(
    hub: &TestHub,
    key: &str,
    webhook_id: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let log = deliveries(hub, key, webhook_id).await;
        if done(&log) {
            return log;
        }
        assert!(Instant::now() < deadline, "delivery log never got there: {log:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn webhook(hub: &TestHub, key: &str, webhook_id: &str) -> Value {
    let (status, v) = hub.get(&format!("/api/webhooks/{webhook_id}"), key).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    v["webhook"].clone()
}

/// Checks a request the way a receiver should, with an HMAC computed here (not roomcast's).
#[track_caller]
fn assert_signed(hit: &Hit, secret: &str, webhook_id: &str) {
    assert_eq!(hit.header("content-type"), "application/json");
    assert_eq!(hit.header("x-roomcast-webhook-id"), webhook_id);
    let timestamp = hit.header("x-roomcast-timestamp");
    let ts: i64 = timestamp.parse().expect("timestamp in seconds");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!((now - ts).abs() <= 5, "fresh timestamp, in seconds: {ts}");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(&hit.body);
    let expected: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hit.header("x-roomcast-signature"), format!("sha256={expected}"));
    let body = hit.json();
    assert_eq!(body["id"], hit.header("x-roomcast-delivery-id"), "body id is the delivery id");
}

#[tokio::test]
async fn registration_checks_and_tenancy() {
    let hub = spawn_hub_with(|_| {}).await;
    let app = hub.create_app(json!({"app_id": "hooks-app"})).await;
    let other = hub.create_app(json!({"app_id": "other-app"})).await;
    let key = &app.api_key;
    let bad = |url: &str| json!({"url": url, "events": ["*"]});
    for url in [
        "ftp://example.com/x",
        "not a url",
        "https://user:pw@example.com/",
        "http://127.0.0.1:9000/hook",
        "http://localhost:9000/hook",
        "http://[::1]/",
        "http://10.0.0.8/",
        "http://169.254.169.254/latest/meta-data/",
        "http://100.64.1.1/",
    ] {
        let got = hub.post("/api/webhooks", key, bad(url)).await;
        assert_error(&got, 400, "invalid_request");
        assert!(got.1["error"].as_str().unwrap().starts_with("url"), "{url}: {}", got.1);
    }
    let long = format!("https://example.com/{}", "a".repeat(2048));
    assert_error(&hub.post("/api/webhooks", key, bad(&long)).await, 400, "invalid_request");
    for (body, field) in [
        (json!({"events": ["*"]}), "url"),
        (json!({"url": "https://example.com/h"}), "events"),
        (json!({"url": "https://example.com/h", "events": []}), "events"),
        (json!({"url": "https://example.com/h", "events": ["ok", "roomcast:internal"]}), "events[1]"),
        (json!({"url": "https://example.com/h", "events": ["*"], "secret": "short"}), "secret"),
        (json!({"url": 5, "events": ["*"]}), "url"),
    ] {
        let got = hub.post("/api/webhooks", key, body.clone()).await;
        assert_error(&got, 400, "invalid_request");
        assert!(got.1["error"].as_str().unwrap().starts_with(field), "{body}: {}", got.1);
    }

    // A good registration: the generated secret is shown once.
    let (status, v) = hub
        .post(
            "/api/webhooks",
            key,
            json!({"url": "https://example.com/hook", "events": ["new-message", "*", "*"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let id = v["webhook"]["id"].as_str().unwrap().to_owned();
    assert!(v["secret"].as_str().unwrap().starts_with("whsec_"));
    assert_eq!(v["webhook"]["events"], json!(["new-message", "*"]));
    assert_eq!(
        (v["webhook"]["enabled"].as_bool(), v["webhook"]["app_id"].as_str()),
        (Some(true), Some("hooks-app"))
    );
    let shown = webhook(&hub, key, &id).await;
    assert!(shown.get("secret").is_none(), "{shown}");
    let (_, list) = hub.get("/api/webhooks", key).await;
    assert_eq!(list["webhooks"].as_array().unwrap().len(), 1);
    assert!(!list.to_string().contains("whsec_"), "{list}");

    // A chosen secret is not echoed.
    let (status, v) = hub
        .post(
            "/api/webhooks",
            key,
            json!({"url": "https://example.com/b", "events": ["a"], "secret": "s3cret-of-my-own-choice"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(v.get("secret").is_none(), "{v}");

    // Other tenants see nothing; scopes are enforced; admins name the app.
    for path in [format!("/api/webhooks/{id}"), format!("/api/webhooks/{id}/deliveries")] {
        assert_error(&hub.get(&path, &other.api_key).await, 404, "not_found");
    }
    let (_, list) = hub.get("/api/webhooks", &other.api_key).await;
    assert_eq!(list["webhooks"], json!([]));
    assert_error(
        &hub.send(reqwest::Method::DELETE, &format!("/api/webhooks/{id}"), &other.api_key, json!({})).await,
        404,
        "not_found",
    );
    assert_error(&hub.get("/api/webhooks?app_id=hooks-app", &other.api_key).await, 403, "forbidden");
    let (_, narrow) =
        hub.post("/api/applications/hooks-app/keys", key, json!({"scopes": ["webhooks:read"]})).await;
    let narrow = narrow["api_key"].as_str().unwrap();
    assert_eq!(hub.get("/api/webhooks", narrow).await.0, StatusCode::OK);
    assert_error(
        &hub.post("/api/webhooks", narrow, bad("https://example.com/c")).await,
        403,
        "insufficient_scope",
    );
    assert_error(&hub.get("/api/webhooks", &hub.admin_key).await, 400, "invalid_request");
    let (status, list) = hub.get("/api/webhooks?app_id=hooks-app", &hub.admin_key).await;
    assert_eq!((status, list["webhooks"].as_array().unwrap().len()), (StatusCode::OK, 2));

    // PATCH changes only what it names; bad values change nothing.
    let path = format!("/api/webhooks/{id}");
    let patch = |body: Value| hub.send(reqwest::Method::PATCH, &path, key, body);
    assert_error(&patch(json!({"url": "http://127.0.0.1/"})).await, 400, "invalid_request");
    assert_error(&patch(json!({"events": []})).await, 400, "invalid_request");
    let (status, v) = patch(json!({"events": ["user-joined"], "enabled": false})).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["webhook"]["events"], json!(["user-joined"]));
    assert_eq!(v["webhook"]["url"], "https://example.com/hook");
    assert_eq!(v["webhook"]["enabled"], false);
    assert_error(&hub.post(&format!("/api/webhooks/{id}/test"), key, json!({})).await, 409, "conflict");

    // Delete: gone, and the id is unknown afterwards.
    let (status, _) = hub.send(reqwest::Method::DELETE, &format!("/api/webhooks/{id}"), key, json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_error(&hub.get(&format!("/api/webhooks/{id}"), key).await, 404, "not_found");
    assert_error(&hub.get("/api/webhooks/wh_unknown", key).await, 404, "not_found");
}

#[tokio::test]
async fn deliveries_are_signed_and_follow_filters() {
    let hub = hub_with(|_| {}).await;
    let app = hub.create_app(json!({"app_id": "signed-app", "client_events": true})).await;
    let mut only_news = Receiver::start().await;
    let mut all = Receiver::start().await;
    let (news_id, news_secret) = register(&hub, &app, &only_news.url(), json!(["news"])).await;
    let (all_id, all_secret) = register(&hub, &app, &all.url(), json!(["*"])).await;

    let mut sub = hub.subscriber(&app, json!({"user_id": "u1", "can_publish": true}), &["lobby"]).await;
    let occupied = all.next().await;
    assert_signed(&occupied, &all_secret, &all_id);
    let body = occupied.json();
    assert_eq!((body["event"].as_str(), body["room"].as_str()), (Some("room-occupied"), Some("lobby")));
    assert_eq!((body["app_id"].as_str(), &body["data"]), (Some("signed-app"), &Value::Null));

    hub.broadcast(&app, "lobby", "news", json!({"headline": "hi", "n": [1, 2.5, "x"]})).await;
    hub.broadcast(&app, "lobby", "weather", json!("sunny")).await;
    for event in ["news", "weather"] {
        assert_eq!(sub.next_json().await["event"], event);
    }
    sub.send_json(json!({"type": "publish", "room": "lobby", "event": "typing", "data": {"on": true}})).await;
    sub.roundtrip(9).await;

    let hit = only_news.next().await;
    assert_signed(&hit, &news_secret, &news_id);
    let body = hit.json();
    assert_eq!(body["event"], "news");
    assert_eq!(body["room"], "lobby", "client-facing room name");
    assert_eq!(body["data"], json!({"headline": "hi", "n": [1, 2.5, "x"]}));
    let ts = body["timestamp"].as_i64().unwrap();
    assert!(ts > 1_700_000_000_000, "timestamp in ms: {ts}");
    let keys: Vec<&str> = body.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys.len(), 6, "{body}");

    let mut seen: Vec<(String, Value)> = Vec::new();
    for _ in 0..3 {
        let hit = all.next().await;
        assert_signed(&hit, &all_secret, &all_id);
        let b = hit.json();
        seen.push((b["event"].as_str().unwrap().to_owned(), b["data"].clone()));
    }
    seen.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        seen,
        vec![
            ("news".into(), json!({"headline": "hi", "n": [1, 2.5, "x"]})),
            ("typing".into(), json!({"on": true})),
            ("weather".into(), json!("sunny")),
        ]
    );
    only_news.quiet(Duration::from_millis(300)).await;
    let log =
        log_until(&hub, &app.api_key, &news_id, |l| l.len() == 1 && l[0]["status"] == "succeeded").await;
    let d = &log[0];
    assert_eq!(
        (d["event"].as_str(), d["attempts"].as_u64(), d["response_code"].as_u64()),
        (Some("news"), Some(1), Some(200))
    );
    assert_eq!((&d["error"], &d["next_retry_at"]), (&Value::Null, &Value::Null));
    assert!(d["latency_ms"].as_u64().is_some() && d["created_at"].as_str().unwrap().ends_with('Z'), "{d}");
    assert_eq!(d["delivery_id"], hit.header("x-roomcast-delivery-id"));
}

/// A connection of `user` subscribed to `presence-team`.
async fn presence_member(hub: &TestHub, app: &TestApp, user: &str) -> crate::support::Ws {
    let mut ws = hub.subscriber(app, json!({"user_id": user}), &[]).await;
    ws.send_json(json!({"type": "subscribe", "room": "presence-team", "id": 1})).await;
    assert_eq!(ws.next_json().await["type"], "subscribed");
    ws
}

#[tokio::test]
async fn system_events_fire_for_presence_rooms() {
    let hub = hub_with(|_| {}).await;
    let app = hub.create_app(json!({"app_id": "presence-hooks"})).await;
    let mut rx = Receiver::start().await;
    let (id, secret) =
        register(&hub, &app, &rx.url(), json!(["room-occupied", "room-vacated", "user-joined", "user-left"]))
            .await;

    let mut alice = presence_member(&hub, &app, "alice").await;
    let mut got = Vec::new();
    for _ in 0..2 {
        let hit = rx.next().await;
        assert_signed(&hit, &secret, &id);
        let b = hit.json();
        got.push((b["event"].as_str().unwrap().to_owned(), b["data"].clone()));
        assert_eq!(b["room"], "presence-team");
    }
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got,
        vec![("room-occupied".into(), Value::Null), ("user-joined".into(), json!({"user_id": "alice"}))]
    );

    // A second tab of the same user is not a new member; another user is.
    let _alice2 = presence_member(&hub, &app, "alice").await;
    let mut bob = presence_member(&hub, &app, "bob").await;
    let b = rx.next().await.json();
    assert_eq!((b["event"].as_str(), &b["data"]), (Some("user-joined"), &json!({"user_id": "bob"})));
    bob.stream.close(None).await.unwrap();
    bob.closed().await;
    let b = rx.next().await.json();
    assert_eq!((b["event"].as_str(), &b["data"]), (Some("user-left"), &json!({"user_id": "bob"})));
    drop(_alice2);
    alice.stream.close(None).await.unwrap();
    alice.closed().await;
    let mut end: Vec<String> =
        rx.bodies(2).await.iter().map(|b| b["event"].as_str().unwrap().to_owned()).collect();
    end.sort();
    assert_eq!(end, ["room-vacated", "user-left"]);
    rx.quiet(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn failed_attempts_are_retried_as_the_same_delivery() {
    let hub = hub_with(|_| {}).await;
    let app = hub.create_app(json!({"app_id": "retry-app"})).await;
    let mut rx = Receiver::start().await;
    rx.then(&[Reply::Status(500), Reply::Status(503)]);
    let (id, secret) = register(&hub, &app, &rx.url(), json!(["e"])).await;
    hub.broadcast(&app, "r", "e", json!(1)).await;
    let hits = [rx.next().await, rx.next().await, rx.next().await];
    for hit in &hits {
        assert_signed(hit, &secret, &id);
    }
    assert!(hits.iter().all(|h| h.body == hits[0].body), "every attempt sends the same bytes");
    assert!(
        hits.iter().all(|h| h.header("x-roomcast-delivery-id") == hits[0].header("x-roomcast-delivery-id"))
    );
    let log = log_until(&hub, &app.api_key, &id, |l| l[0]["status"] == "succeeded").await;
    assert_eq!(
        (log.len(), log[0]["attempts"].as_u64(), log[0]["response_code"].as_u64()),
        (1, Some(3), Some(200))
    );
    // The log shows every attempt, oldest first, not only the last outcome.
    let attempts = log[0]["attempt_log"].as_array().unwrap();
    let codes: Vec<Option<u64>> = attempts.iter().map(|a| a["response_code"].as_u64()).collect();
    assert_eq!(codes, [Some(500), Some(503), Some(200)], "{attempts:?}");
    assert!(attempts[0]["error"].as_str().unwrap().starts_with("HTTP 500"), "{attempts:?}");
    assert!(attempts[2]["error"].is_null() && attempts[2]["latency_ms"].is_u64(), "{attempts:?}");
    assert!(attempts[0]["at"].as_str() <= attempts[1]["at"].as_str(), "{attempts:?}");

    // A refused connection is retried too, and delivered once something listens.
    let spare = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = spare.local_addr().unwrap().port();
    drop(spare);
    let (down_id, _) =
        register(&hub, &app, &format!("http://127.0.0.1:{port}/later"), json!(["later"])).await;
    hub.broadcast(&app, "r", "later", json!(2)).await;
    let log =
        log_until(&hub, &app.api_key, &down_id, |l| l.len() == 1 && l[0]["attempts"].as_u64() >= Some(1))
            .await;
    assert_eq!(log[0]["status"], "retrying", "{log:?}");
    assert!(log[0]["error"].as_str().unwrap().contains("connect"), "{log:?}");
    assert!(log[0]["next_retry_at"].is_string(), "{log:?}");
    let mut late = Receiver::on(tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap());
    assert_eq!(late.next().await.json()["data"], 2);
    log_until(&hub, &app.api_key, &down_id, |l| l[0]["status"] == "succeeded").await;

    // Out of retries: failed, in the dead-letter list, counted; a manual retry sends it again.
    rx.always(Reply::Status(500));
    hub.broadcast(&app, "r", "e", json!(3)).await;
    let log = log_until(&hub, &app.api_key, &id, |l| l[0]["status"] == "failed").await;
    let failed = log[0].clone();
    assert_eq!((failed["attempts"].as_u64(), failed["response_code"].as_u64()), (Some(4), Some(500)));
    assert!(failed["error"].as_str().unwrap().starts_with("HTTP 500"), "{failed}");
    let (_, analytics) = hub.get("/api/analytics?period=1h", &app.api_key).await;
    assert_eq!(analytics["metrics"]["webhooks"], json!({"delivered": 2, "failed": 1}));
    let metrics = hub.http.get(hub.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let count = |outcome: &str| -> u64 {
        let prefix = format!("roomcast_webhook_deliveries_total{{outcome=\"{outcome}\"}} ");
        let line = metrics
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("{prefix} in\n{metrics}"));
        line[prefix.len()..].parse().unwrap()
    };
    // Retried: 2 + 3 here, and at least one for the refused connection.
    assert_eq!((count("succeeded"), count("failed"), count("dropped")), (2, 1, 0));
    assert!(count("retried") >= 6, "{metrics}");
    for _ in 0..4 {
        rx.next().await;
    }
    rx.always(Reply::Status(204));
    let delivery_id = failed["delivery_id"].as_str().unwrap();
    let retry = format!("/api/webhooks/{id}/deliveries/{delivery_id}/retry");
    let (status, v) = hub.post(&retry, &app.api_key, json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    let hit = rx.next().await;
    assert_eq!(hit.header("x-roomcast-delivery-id"), delivery_id);
    let log = log_until(&hub, &app.api_key, &id, |l| l[0]["status"] == "succeeded").await;
    assert_eq!((log[0]["attempts"].as_u64(), log[0]["response_code"].as_u64()), (Some(5), Some(204)));
    assert_error(
        &hub.post(
            &format!("/api/webhooks/{id}/deliveries/dzzzzzzzzzzzzzzzzzzzzzz/retry"),
            &app.api_key,
            json!({}),
        )
        .await,
        404,
        "not_found",
    );
}

#[tokio::test]
async fn gone_and_repeated_failures_disable_the_webhook() {
    let hub = hub_with(|c| {
        c.webhooks.retry_delays_ms = vec![];
        c.webhooks.disable_after_failures = 3;
    })
    .await;
    let app = hub.create_app(json!({"app_id": "gone-app"})).await;
    let mut rx = Receiver::start().await;
    rx.then(&[Reply::Status(410)]);
    let (id, _) = register(&hub, &app, &rx.url(), json!(["*"])).await;
    hub.broadcast(&app, "r", "first", json!(1)).await;
    rx.next().await;
    let log = log_until(&hub, &app.api_key, &id, |l| l.len() == 1 && l[0]["status"] == "failed").await;
    assert_eq!((log[0]["attempts"].as_u64(), log[0]["response_code"].as_u64()), (Some(1), Some(410)));
    let w = webhook(&hub, &app.api_key, &id).await;
    assert_eq!(w["enabled"], false);
    assert!(w["disabled_reason"].as_str().unwrap().contains("410"), "{w}");
    // Disabled: new events make no deliveries.
    hub.broadcast(&app, "r", "second", json!(2)).await;
    rx.quiet(Duration::from_millis(300)).await;
    assert_eq!(deliveries(&hub, &app.api_key, &id).await.len(), 1);

    // Enabling clears the reason; three failures in a row disable it again.
    let (status, v) = hub
        .send(reqwest::Method::PATCH, &format!("/api/webhooks/{id}"), &app.api_key, json!({"enabled": true}))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(
        (&v["webhook"]["disabled_reason"], v["webhook"]["consecutive_failures"].as_u64()),
        (&Value::Null, Some(0))
    );
    rx.always(Reply::Status(500));
    for n in 0..3 {
        hub.broadcast(&app, "r", "e", json!(n)).await;
        rx.next().await;
    }
    log_until(&hub, &app.api_key, &id, |l| l.len() == 4 && l.iter().all(|d| d["status"] == "failed")).await;
    let w = webhook(&hub, &app.api_key, &id).await;
    assert_eq!((w["enabled"].as_bool(), w["consecutive_failures"].as_u64()), (Some(false), Some(3)));
    assert!(w["disabled_reason"].as_str().unwrap().contains("3 consecutive"), "{w}");
}

#[tokio::test]
async fn a_pending_delivery_survives_a_restart() {
    let spare = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = spare.local_addr().unwrap().port();
    drop(spare);
    let slow_retries = |c: &mut Config| {
        c.webhooks.allow_private_targets = true;
        c.webhooks.retry_delays_ms = vec![300, 300, 300, 300, 300];
    };
    let hub = spawn_hub_with(slow_retries).await;
    let app = hub.create_app(json!({"app_id": "durable-app"})).await;
    let (id, secret) = register(&hub, &app, &format!("http://127.0.0.1:{port}/hook"), json!(["order"])).await;
    hub.broadcast(&app, "shop", "order", json!({"order": 42})).await;
    let log = log_until(&hub, &app.api_key, &id, |l| l.len() == 1 && l[0]["status"] == "retrying").await;
    let delivery_id = log[0]["delivery_id"].as_str().unwrap().to_owned();
    let (dir, admin_key, _) = hub.stop().await;

    let mut rx = Receiver::on(tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap());
    let hub = spawn_hub_in(dir, admin_key, slow_retries).await;
    let hit = rx.next().await;
    assert_signed(&hit, &secret, &id);
    assert_eq!(hit.header("x-roomcast-delivery-id"), delivery_id);
    assert_eq!(hit.json()["data"], json!({"order": 42}));
    let log = log_until(&hub, &app.api_key, &id, |l| l[0]["status"] == "succeeded").await;
    assert_eq!(log.len(), 1, "the same delivery, not a new one");
    let attempts = log[0]["attempts"].as_u64().unwrap();
    assert!(attempts >= 2);
    // The attempts made before the restart are still in its log.
    let entries = log[0]["attempt_log"].as_array().unwrap();
    assert_eq!(entries.len() as u64, attempts, "{entries:?}");
    assert!(entries[0]["response_code"].is_null(), "a refused connection first: {entries:?}");
    assert!(entries[0]["error"].as_str().unwrap().contains("connect"), "{entries:?}");
    assert_eq!(entries.last().unwrap()["response_code"], 200);
}

#[tokio::test]
async fn private_targets_are_refused_at_delivery_time_too() {
    // Registered while allowed, then the hub restarts with the default policy: the stored
    // targets (a loopback literal and a name that resolves to loopback) are refused when sent.
    let mut rx = Receiver::start().await;
    let hub = hub_with(|_| {}).await;
    let app = hub.create_app(json!({"app_id": "ssrf-app"})).await;
    let (literal, _) = register(&hub, &app, &rx.url(), json!(["e"])).await;
    let (named, _) =
        register(&hub, &app, &format!("http://localhost:{}/hook", rx.addr.port()), json!(["e"])).await;
    let (dir, admin_key, _) = hub.stop().await;
    let hub = spawn_hub_in(dir, admin_key, |c| c.webhooks.retry_delays_ms = vec![]).await;
    hub.broadcast(&app, "r", "e", json!(1)).await;
    let done = |l: &[Value]| l.len() == 1 && l[0]["status"] == "failed";
    let log = log_until(&hub, &app.api_key, &literal, done).await;
    assert!(log[0]["error"].as_str().unwrap().contains("loopback"), "{log:?}");
    let log = log_until(&hub, &app.api_key, &named, done).await;
    let error = log[0]["error"].as_str().unwrap();
    assert!(error.contains("internal addresses") || error.contains("localhost"), "{error}");
    assert_eq!(log[0]["response_code"], Value::Null);
    rx.quiet(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn test_ping_and_log_paging() {
    let hub = hub_with(|_| {}).await;
    let app = hub.create_app(json!({"app_id": "ping-app"})).await;
    let mut rx = Receiver::start().await;
    let (id, secret) = register(&hub, &app, &rx.url(), json!(["only-this"])).await;
    let (status, v) = hub.post(&format!("/api/webhooks/{id}/test"), &app.api_key, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let d = &v["delivery"];
    assert_eq!(
        (d["event"].as_str(), d["status"].as_str(), d["response_code"].as_u64()),
        (Some("ping"), Some("succeeded"), Some(200))
    );
    let hit = rx.next().await;
    assert_signed(&hit, &secret, &id);
    assert_eq!((hit.json()["event"].as_str(), &hit.json()["room"]), (Some("ping"), &Value::Null));

    for n in 0..4 {
        hub.broadcast(&app, "r", "only-this", json!(n)).await;
    }
    rx.bodies(4).await;
    log_until(&hub, &app.api_key, &id, |l| l.len() == 5 && l.iter().all(|d| d["status"] == "succeeded"))
        .await;
    let mut cursor: Option<String> = None;
    let mut ids = Vec::new();
    loop {
        let q = cursor.as_ref().map(|c| format!("&cursor={c}")).unwrap_or_default();
        let (status, v) = hub.get(&format!("/api/webhooks/{id}/deliveries?limit=2{q}"), &app.api_key).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        ids.extend(
            v["deliveries"].as_array().unwrap().iter().map(|d| d["delivery_id"].as_str().unwrap().to_owned()),
        );
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(ids.len(), 5);
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    for q in ["limit=0", "limit=101", "cursor=nope", "limit=x"] {
        assert_error(
            &hub.get(&format!("/api/webhooks/{id}/deliveries?{q}"), &app.api_key).await,
            400,
            "invalid_request",
        );
    }
}

#[tokio::test]
async fn a_slow_receiver_does_not_delay_broadcasts() {
    let hub = hub_with(|_| {}).await;
    let app = hub.create_app(json!({"app_id": "slow-app"})).await;
    let mut rx = Receiver::start().await;
    rx.always(Reply::Slow(Duration::from_secs(5), 200));
    let (id, _) = register(&hub, &app, &rx.url(), json!(["*"])).await;
    let mut sub = hub.subscriber(&app, json!({}), &["feed"]).await;
    // The room-occupied delivery is now stuck in the receiver.
    rx.next().await;

    let mut took = Vec::new();
    for n in 0..200 {
        let started = Instant::now();
        hub.broadcast(&app, "feed", "tick", json!(n)).await;
        took.push(started.elapsed());
        assert_eq!(sub.next_json().await["data"], n);
    }
    took.sort();
    let (p50, p99) = (took[100], took[197]);
    println!("broadcast latency with a 5 s webhook receiver: p50 {p50:?}, p99 {p99:?}");
    // Far below the receiver's 5 s, with room for a busy machine: a broadcast that waited for
    // the webhook would take seconds.
    assert!(p99 < Duration::from_secs(1), "p99 {p99:?}");
    // The deliveries are waiting, not lost: per-webhook concurrency holds the rest back.
    let log = deliveries(&hub, &app.api_key, &id).await;
    assert_eq!(log.len(), 100, "a full first page");
    assert!(log.iter().all(|d| d["status"] == "pending"), "nothing answered yet");
}

/// A verification example from `examples/webhooks/` running as its own process.
struct Example {
    child: tokio::process::Child,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    url: String,
}

impl Example {
    async fn start(program: &str, script: &str, secret: &str) -> Example {
        use tokio::io::AsyncBufReadExt;
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/webhooks/");
        let mut child = tokio::process::Command::new(program)
            .arg(format!("{path}{script}"))
            .env("WEBHOOK_SECRET", secret)
            .env("PORT", "0")
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{program} is needed for the webhook examples (scripts/test.sh installs it): {e}")
            });
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let first = Self::read(&mut lines).await;
        let addr = first.strip_prefix("listening on ").unwrap_or_else(|| panic!("{script}: {first}"));
        Example { url: format!("http://{addr}/hook"), child, lines }
    }

    async fn read(lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>) -> String {
        tokio::time::timeout(WAIT, lines.next_line())
            .await
            .expect("a line in time")
            .unwrap()
            .expect("still running")
    }

    async fn line(&mut self) -> String {
        Self::read(&mut self.lines).await
    }
}

#[tokio::test]
async fn the_documented_verification_examples_accept_deliveries_and_refuse_forgeries() {
    let hub = hub_with(|_| {}).await;
    let app = hub.create_app(json!({"app_id": "example-app"})).await;
    let secret = "whsec_an_example_secret_0123456789";
    for (program, script) in [("python3", "receiver.py"), ("node", "receiver.js")] {
        let mut example = Example::start(program, script, secret).await;
        let (status, v) = hub
            .post(
                "/api/webhooks",
                &app.api_key,
                json!({"url": example.url, "events": [script], "secret": secret}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
        let id = v["webhook"]["id"].as_str().unwrap().to_owned();
        hub.broadcast(&app, "lobby:1", script, json!({"text": "naïve – ünïcödé", "n": 1e3})).await;
        let line = example.line().await;
        assert!(line.starts_with("verified d"), "{script}: {line}");
        assert!(line.contains(&format!("{script} lobby:1 ")), "{script}: {line}");
        let log = log_until(&hub, &app.api_key, &id, |l| l.len() == 1 && l[0]["status"] == "succeeded").await;
        assert_eq!(log[0]["response_code"], 204);
        let delivery_id = log[0]["delivery_id"].as_str().unwrap();
        assert!(line.contains(delivery_id), "{line}");

        // Forgeries, and a replay of a real delivery, as a receiver sees them.
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let body = format!(
            r#"{{"id":"dforged","app_id":"example-app","event":"x","room":"r","data":1,"timestamp":{now}000}}"#
        );
        let sign = |ts: u64, body: &str, key: &str| {
            let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
            mac.update(format!("{ts}.{body}").as_bytes());
            let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
            format!("sha256={hex}")
        };
        let url = example.url.clone();
        let post = |ts: u64, signature: String, body: String| {
            hub.http
                .post(&url)
                .header("Content-Type", "application/json")
                .header("X-Roomcast-Timestamp", ts.to_string())
                .header("X-Roomcast-Signature", signature)
                .body(body)
                .send()
        };
        let cases = [
            (now, sign(now, &body, "whsec_some_other_secret_000000"), body.clone(), "rejected bad signature"),
            (
                now,
                sign(now, &body, secret),
                body.replace("\"data\":1", "\"data\":2"),
                "rejected bad signature",
            ),
            (now - 600, sign(now - 600, &body, secret), body.clone(), "rejected stale or missing timestamp"),
            (now, sign(now, &body, secret), body.clone(), "verified dforged x r 1"),
            (now, sign(now, &body, secret), body.clone(), "duplicate dforged"),
        ];
        for (ts, signature, body, expected) in cases {
            let status = post(ts, signature, body).await.unwrap().status();
            assert_eq!(status.is_success(), !expected.starts_with("rejected"), "{script}: {expected}");
            assert_eq!(example.line().await, expected, "{script}");
        }
        example.child.kill().await.unwrap();
    }
}

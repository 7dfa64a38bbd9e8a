//! `GET /metrics`: every family after a scripted sequence, checked by value, and by promtool.

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};

use futures_util::SinkExt;
use reqwest::StatusCode;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::support::{Ending, TestHub, assert_error, spawn_hub_with, split};

/// Samples by their full series name (`name{labels}`), as the exporter writes them.
fn parse(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            (series.to_owned(), value.parse().unwrap())
        })
        .collect()
}

async fn scrape(hub: &TestHub) -> (String, HashMap<String, f64>) {
    let res = hub.http.get(hub.url("/metrics")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = res.text().await.unwrap();
    let samples = parse(&text);
    (text, samples)
}

#[tokio::test]
async fn every_family_moves_as_expected_and_passes_promtool() {
    let hub = spawn_hub_with(|c| {
        c.limits.client_messages_burst = 2;
        c.limits.client_messages_per_second = 1;
        c.limits.max_message_bytes = 1024;
    })
    .await;
    let a = hub.create_app(json!({"app_id": "metrics-a"})).await;
    let b = hub.create_app(json!({"app_id": "metrics-b"})).await;
    let _a1 = hub.subscriber(&a, json!({}), &["room"]).await;
    let _a2 = hub.subscriber(&a, json!({}), &["room"]).await;
    let mut b1 = hub.subscriber(&b, json!({"user_id": "u"}), &[]).await;
    b1.send_json(json!({"type": "subscribe", "room": "presence-p", "id": 1})).await;
    b1.next_json().await;
    for n in 0..3 {
        hub.broadcast(&a, "room", "e", json!(n)).await;
    }
    // b1 has spent its burst of 2 (subscribe and the one below); the next frame is refused.
    b1.send_json(json!({"type": "ping", "id": 2})).await;
    b1.next_json().await;
    b1.send_json(json!({"type": "ping", "id": 3})).await;
    assert_eq!(b1.next_json().await["code"], "rate_limited");
    // An oversize frame closes its socket with 1009.
    let mut big = hub.subscriber(&a, json!({}), &[]).await;
    big.stream.send(Message::Text("x".repeat(2048).into())).await.unwrap();
    assert_eq!(big.closed().await, Ending::Closed(1009));

    let (text, m) = scrape(&hub).await;
    let get = |series: &str| *m.get(series).unwrap_or_else(|| panic!("no {series} in\n{text}"));
    assert_eq!(get(r#"roomcast_connections{app="metrics-a"}"#), 2.0);
    assert_eq!(get(r#"roomcast_connections{app="metrics-b"}"#), 1.0);
    assert_eq!(get("roomcast_connections_opened_total"), 4.0);
    assert_eq!(get("roomcast_rooms"), 2.0);
    assert_eq!(get("roomcast_subscriptions"), 3.0);
    assert_eq!(get(r#"roomcast_messages_published_total{kind="broadcast"}"#), 3.0);
    assert_eq!(get(r#"roomcast_messages_published_total{kind="client"}"#), 0.0);
    assert_eq!(get("roomcast_messages_delivered_total"), 6.0);
    assert_eq!(get(r#"roomcast_messages_dropped_total{reason="rate_limit"}"#), 1.0);
    assert_eq!(get(r#"roomcast_messages_dropped_total{reason="oversize"}"#), 1.0);
    assert_eq!(get(r#"roomcast_messages_dropped_total{reason="slow_consumer"}"#), 0.0);
    assert_eq!(get("roomcast_fanout_duration_seconds_count"), 3.0);
    assert_eq!(get(r#"roomcast_fanout_duration_seconds_bucket{le="+Inf"}"#), 3.0);
    let broadcasts = r#"roomcast_http_request_duration_seconds_count{route="/api/broadcast",status="200"}"#;
    assert_eq!(get(broadcasts), 3.0);
    assert_eq!(get(r#"roomcast_build_info{version="0.1.0"}"#), 1.0);
    assert!(get("roomcast_uptime_seconds") >= 0.0);
    assert_eq!(get("roomcast_hub_events_dropped_total"), 0.0);
    // No webhook here: every outcome is present at 0 (values are tested in tests/it/webhooks.rs).
    for outcome in ["succeeded", "retried", "failed", "dropped"] {
        assert_eq!(get(&format!(r#"roomcast_webhook_deliveries_total{{outcome="{outcome}"}}"#)), 0.0);
    }
    for family in [
        "roomcast_connections",
        "roomcast_messages_published_total",
        "roomcast_fanout_duration_seconds",
        "roomcast_webhook_deliveries_total",
    ] {
        assert!(text.contains(&format!("# HELP {family} ")), "{family} has no HELP");
    }
    // Room names and user ids never become labels.
    assert!(!text.contains("presence-p") && !text.contains("\"u\""), "{text}");

    // A disconnect shows at the next scrape: the close echo comes after the hub forgot it.
    b1.stream.send(Message::Close(None)).await.unwrap();
    b1.closed().await;
    let (_, after) = scrape(&hub).await;
    assert_eq!(after.get(r#"roomcast_connections{app="metrics-b"}"#), Some(&0.0));

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed (Debian package prometheus; scripts/test.sh installs it)");
    promtool.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_configured_token_guards_metrics() {
    let hub = spawn_hub_with(|c| c.metrics.token = Some("scrape-secret".into())).await;
    let res = hub.http.get(hub.url("/metrics")).send().await.unwrap();
    assert_error(&split(res).await, 401, "invalid_token");
    let res = hub.http.get(hub.url("/metrics")).bearer_auth("wrong").send().await.unwrap();
    assert_error(&split(res).await, 401, "invalid_token");
    let res = hub.http.get(hub.url("/metrics")).bearer_auth("scrape-secret").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.text().await.unwrap().contains("roomcast_build_info"));
}

//! Fan-out completeness and order.

use serde_json::json;

use crate::support::spawn_hub;

#[tokio::test]
async fn a_thousand_broadcasts_reach_fifty_subscribers_complete_and_in_order() {
    const SUBSCRIBERS: usize = 50;
    const EVENTS: u64 = 1000;
    let hub = spawn_hub().await;
    let app = hub.create_app(json!({"app_id": "fan-app"})).await;
    let mut readers = Vec::new();
    for _ in 0..SUBSCRIBERS {
        let mut ws = hub.subscriber(&app, json!({}), &["stream"]).await;
        readers.push(tokio::spawn(async move {
            for seq in 0..EVENTS {
                let ev = ws.next_json().await;
                assert_eq!(ev["offset"], seq + 1, "offsets are gapless and ordered");
                assert_eq!(ev["data"]["seq"], seq, "payloads arrive in publish order");
            }
            // Nothing extra (no duplicates) before the pong.
            ws.roundtrip(1).await;
        }));
    }
    for seq in 0..EVENTS {
        let v = hub.broadcast(&app, "stream", "tick", json!({"seq": seq})).await;
        assert_eq!(v["subscriber_count"], SUBSCRIBERS);
    }
    for reader in readers {
        reader.await.unwrap();
    }
}

#[tokio::test]
async fn concurrent_publishers_give_every_subscriber_the_same_order() {
    let hub = spawn_hub().await;
    let app = hub.create_app(json!({"app_id": "order-app"})).await;
    let mut a = hub.subscriber(&app, json!({}), &["r"]).await;
    let mut b = hub.subscriber(&app, json!({}), &["r"]).await;
    let hub = std::sync::Arc::new(hub);
    let mut publishers = Vec::new();
    for p in 0..4 {
        let (hub, app) = (hub.clone(), app.clone());
        publishers.push(tokio::spawn(async move {
            for i in 0..50 {
                hub.broadcast(&app, "r", "e", json!({"p": p, "i": i})).await;
            }
        }));
    }
    for p in publishers {
        p.await.unwrap();
    }
    let mut seen_a = Vec::new();
    let mut seen_b = Vec::new();
    for _ in 0..200 {
        seen_a.push(a.next_json().await);
        seen_b.push(b.next_json().await);
    }
    assert_eq!(seen_a, seen_b);
    let offsets: Vec<u64> = seen_a.iter().map(|e| e["offset"].as_u64().unwrap()).collect();
    assert_eq!(offsets, (1..=200).collect::<Vec<_>>());
}

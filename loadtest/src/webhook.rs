//! A webhook receiver for load runs (`--webhook`): an HTTP server on 127.0.0.1 that answers
//! 204 at once and measures, for each broadcast's delivery, the time from publish to arrival,
//! counting duplicates by delivery id.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use hdrhistogram::Histogram;
use serde_json::{Value, json};

use crate::target::Target;

#[derive(Debug)]
struct Seen {
    ids: HashSet<String>,
    latency_us: Histogram<u64>,
}

/// What the receiver saw.
#[derive(Debug)]
pub struct Sink {
    pub addr: SocketAddr,
    /// Distinct load-test deliveries.
    pub received: AtomicU64,
    pub duplicated: AtomicU64,
    seen: Mutex<Seen>,
}

impl Sink {
    /// Starts a receiver on a free loopback port.
    pub async fn start() -> Result<Arc<Sink>> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let sink = Arc::new(Sink {
            addr: listener.local_addr()?,
            received: AtomicU64::new(0),
            duplicated: AtomicU64::new(0),
            seen: Mutex::new(Seen {
                ids: HashSet::new(),
                latency_us: Histogram::new_with_bounds(1, 600_000_000, 3).expect("bounds"),
            }),
        });
        let state = sink.clone();
        let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
            let sink = state.clone();
            async move {
                sink.record(&headers, &body);
                StatusCode::NO_CONTENT
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(sink)
    }

    fn record(&self, headers: &HeaderMap, body: &[u8]) {
        let arrived = crate::now_us();
        let Ok(v) = serde_json::from_slice::<Value>(body) else { return };
        let Some(sent) = v["data"]["t"].as_u64() else { return };
        let id = headers.get("x-roomcast-delivery-id").and_then(|h| h.to_str().ok()).unwrap_or_default();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.ids.insert(id.to_owned()) {
            let _ = seen.latency_us.record(arrived.saturating_sub(sent).max(1));
            self.received.fetch_add(1, Ordering::Relaxed);
        } else {
            self.duplicated.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Publish→arrival latency of the distinct deliveries.
    pub fn latency(&self) -> crate::Latency {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        crate::Latency::of(&seen.latency_us)
    }

    /// Registers this receiver as a webhook of the target's app for the load-test event, on
    /// the node that publishes: it matches broadcasts against its own cache of webhooks, which
    /// another node's registration reaches a moment later.
    pub async fn register(&self, target: &Target) -> Result<()> {
        let res = crate::http()
            .build()?
            .post(format!("{}/api/webhooks", target.publish_base))
            .header("X-APP-API-KEY", &target.key)
            .json(&json!({"url": format!("http://{}/lt", self.addr), "events": ["lt"]}))
            .send()
            .await
            .context("registering the webhook")?;
        if !res.status().is_success() {
            bail!(
                "registering the webhook: {} {} (start the hub with ROOMCAST_WEBHOOKS__ALLOW_PRIVATE_TARGETS=true)",
                res.status(),
                res.text().await.unwrap_or_default()
            );
        }
        Ok(())
    }
}

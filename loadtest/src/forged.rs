//! The `forged` scenario: a flood of broadcasts signed with well-formed API keys that do not
//! exist, each one new, as an attacker probing for keys would send them. A hub that asks its
//! store about every unknown key turns this into a store read per request; roomcast bounds it
//! (`limits.store_lookups_per_s`). Reports the hub's store reads (from its `/metrics`) beside
//! the request rate, and how a legitimate publisher fares meanwhile.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use rand::Rng;
use serde::Serialize;

use crate::target::Target;
use crate::{Latency, Options, http};

/// What the flood cost and did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ForgedReport {
    /// Requests with forged keys sent, and how many were refused with 401.
    pub requests: u64,
    pub refused: u64,
    pub requests_per_second: f64,
    /// Store reads the hub made for unknown credentials meanwhile (found + missing).
    pub store_reads: u64,
    pub store_reads_per_second: f64,
    /// Unknown credentials refused without a read: over the budget, or read a moment ago.
    pub throttled: u64,
    pub recent: u64,
    /// The legitimate publisher's broadcasts (10 per second) during the flood.
    pub legit_ok: u64,
    pub legit_errors: u64,
    pub legit_latency: Latency,
}

fn forged_key() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let mut part = |n: usize| -> String {
        (0..n).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
    };
    format!("rc_app_{}_{}", part(12), part(32))
}

/// `roomcast_store_lookups_total` by outcome, read from the hub's `/metrics`.
async fn lookups(client: &reqwest::Client, base: &str) -> Result<[u64; 4]> {
    let text = client.get(format!("{base}/metrics")).send().await?.text().await?;
    let count = |outcome: &str| {
        let prefix = format!("roomcast_store_lookups_total{{outcome=\"{outcome}\"}} ");
        text.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|n| n.trim().parse().ok()).unwrap_or(0)
    };
    Ok([count("found"), count("missing"), count("throttled"), count("recent")])
}

/// Floods `target` for `opts.duration` at `opts.rate` forged requests per second (0 = as fast
/// as answered) from `opts.publishers` connections.
pub async fn run(opts: &Options, target: &Target) -> Result<ForgedReport> {
    let client = http().pool_max_idle_per_host(opts.publishers + 1).build()?;
    let base = &target.publish_base;
    let before = lookups(&client, base).await.context("reading the hub's /metrics")?;
    let started = Instant::now();
    let deadline = started + opts.duration;
    let publishers = opts.publishers.max(1);
    let mut flood = Vec::new();
    for _ in 0..publishers {
        let (client, url) = (client.clone(), format!("{base}/api/broadcast"));
        let period = (opts.rate > 0.0).then(|| Duration::from_secs_f64(publishers as f64 / opts.rate));
        flood.push(tokio::spawn(async move {
            let (mut sent, mut refused) = (0u64, 0u64);
            let mut next = Instant::now();
            while Instant::now() < deadline {
                if let Some(period) = period {
                    tokio::time::sleep_until(next.into()).await;
                    next += period;
                }
                let res = client
                    .post(&url)
                    .header("X-APP-API-KEY", forged_key())
                    .header("Content-Type", "application/json")
                    .body(r#"{"room":"lt","event":"probe","data":1}"#)
                    .send()
                    .await;
                sent += 1;
                if let Ok(res) = res {
                    refused += u64::from(res.status() == reqwest::StatusCode::UNAUTHORIZED);
                    let _ = res.bytes().await;
                }
            }
            (sent, refused)
        }));
    }
    // A legitimate publisher beside the flood.
    let legit = {
        let (client, target) = (client.clone(), target.clone());
        tokio::spawn(async move {
            let mut latency = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).expect("bounds");
            let (mut ok, mut errors) = (0u64, 0u64);
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            while Instant::now() < deadline {
                tick.tick().await;
                let sent = Instant::now();
                match target.publish_request(&client, "lt-legit", "1").send().await {
                    Ok(res) if res.status().is_success() => {
                        ok += 1;
                        latency.record(sent.elapsed().as_micros().max(1) as u64).ok();
                    }
                    _ => errors += 1,
                }
            }
            (ok, errors, Latency::of(&latency))
        })
    };
    let mut report = ForgedReport::default();
    for task in flood {
        let (sent, refused) = task.await?;
        report.requests += sent;
        report.refused += refused;
    }
    let seconds = started.elapsed().as_secs_f64().max(1e-9);
    (report.legit_ok, report.legit_errors, report.legit_latency) = legit.await?;
    let after = lookups(&client, base).await?;
    report.requests_per_second = report.requests as f64 / seconds;
    report.store_reads = (after[0] + after[1]).saturating_sub(before[0] + before[1]);
    report.store_reads_per_second = report.store_reads as f64 / seconds;
    report.throttled = after[2].saturating_sub(before[2]);
    report.recent = after[3].saturating_sub(before[3]);
    Ok(report)
}

//! The jitter scenario (roomcast): subscribers spread over rooms while broadcasts go on, each
//! cut at a random moment every 5–15 s and coming back with `since`. It checks that every
//! subscriber got every event of its room exactly once and in order over all its connections,
//! and measures how long a recovery takes: from the reconnect to the last missed event in hand.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use rand::Rng;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;

use crate::target::Target;
use crate::{Latency, Options};

/// What the jitter run found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct JitterReport {
    /// Events each subscriber should have had, summed: its room's offsets after its first
    /// subscribe up to the room's last.
    pub expected: u64,
    /// Distinct events received, summed over subscribers.
    pub delivered: u64,
    /// `delivered / expected`, in percent.
    pub delivered_percent: f64,
    pub duplicated: u64,
    pub out_of_order: u64,
    /// Cuts made (each followed by a recovering subscribe).
    pub recoveries: u64,
    pub recovered: u64,
    /// Recoveries refused, by reason (and connection errors as `connect_error`).
    pub failed: BTreeMap<String, u64>,
    /// Reconnect → last missed event received.
    pub recovery_latency: Latency,
}

/// One subscriber's tally.
#[derive(Debug, Default)]
struct Tally {
    start: u64,
    last: u64,
    received: u64,
    duplicated: u64,
    out_of_order: u64,
    recoveries: u64,
    recovered: u64,
    failed: BTreeMap<String, u64>,
}

fn offset_of(frame: &str) -> Option<u64> {
    if !frame.starts_with(r#"{"type":"event""#) {
        return None;
    }
    let at = frame.rfind(r#""offset":"#)? + 9;
    let digits = frame[at..].bytes().take_while(u8::is_ascii_digit).count();
    frame[at..at + digits].parse().ok()
}

/// Runs the scenario: `opts.connections` subscribers over `opts.rooms` rooms, `opts.rate`
/// broadcasts per second for `opts.duration`.
pub async fn run(opts: &Options, target: Arc<Target>) -> Result<JitterReport> {
    let rooms = opts.rooms.max(1);
    let room = |i: usize| format!("lt-room-{}", i % rooms);
    target.wait_for_publish_node().await?;
    let stop_at = Instant::now() + opts.duration;
    let latencies = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?));
    // The last offset published in each room (from the broadcast answers).
    let tops: Arc<Vec<AtomicU64>> = Arc::new((0..rooms).map(|_| AtomicU64::new(0)).collect());
    let done_flag = Arc::new(std::sync::atomic::AtomicBool::new(false));

    let mut subscribers = Vec::with_capacity(opts.connections);
    let gate = Arc::new(tokio::sync::Semaphore::new(opts.connect_concurrency.max(1)));
    for i in 0..opts.connections {
        let (target, latencies, tops, done_flag, gate) =
            (target.clone(), latencies.clone(), tops.clone(), done_flag.clone(), gate.clone());
        let (room_name, r) = (room(i), i % rooms);
        let spread = opts.source_ips;
        let drain = opts.drain;
        subscribers.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let source = crate::source(i, spread);
            let permit = gate.acquire().await;
            let (mut ws, ack) = target.connect_since(source, &room_name, i as u64, None).await?;
            drop(permit);
            let mut epoch = ack["epoch"].as_str().unwrap_or_default().to_owned();
            tally.start = ack["offset"].as_u64().unwrap_or(0);
            tally.last = tally.start;
            loop {
                let cut_in: u64 = rand::rng().random_range(5_000..15_000);
                let cut_at = Instant::now() + Duration::from_millis(cut_in);
                // A cut falls inside the run only: nobody is cut when publishing stops (that
                // would cut every subscriber at once, which is a stampede, not jitter).
                let cuts = cut_at < stop_at;
                // Read until the cut (or the end of publishing, then until caught up).
                loop {
                    let finished = done_flag.load(Ordering::Acquire);
                    if finished && tally.last >= tops[r].load(Ordering::Acquire) {
                        return Ok::<Tally, anyhow::Error>(tally);
                    }
                    let until = match (finished, cuts) {
                        (true, _) => Instant::now() + drain,
                        (false, true) => cut_at,
                        // Look at the flag again now and then until the publishers are done.
                        (false, false) => Instant::now().max(stop_at) + Duration::from_millis(50),
                    };
                    let msg = match tokio::time::timeout_at(until.into(), ws.next()).await {
                        Err(_) if finished => return Ok(tally),
                        Err(_) if !cuts => continue,
                        Err(_) => break,
                        Ok(Some(Ok(Message::Text(t)))) => t,
                        Ok(Some(Ok(_))) => continue,
                        Ok(_) => break,
                    };
                    let Some(offset) = offset_of(msg.as_str()) else { continue };
                    count(&mut tally, offset);
                }
                // The cut, and the way back.
                drop(ws);
                tally.recoveries += 1;
                let reconnect = Instant::now();
                let mut attempt = 0;
                let (back, ack) = loop {
                    match target.connect_since(source, &room_name, i as u64, Some((tally.last, &epoch))).await
                    {
                        Ok(back) => break back,
                        Err(e) if attempt < 50 => {
                            attempt += 1;
                            *tally.failed.entry("connect_retried".into()).or_default() += 1;
                            if attempt == 1 {
                                eprintln!("jitter reconnect failed, retrying: {e:#}");
                            }
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        Err(e) => return Err(e),
                    }
                };
                ws = back;
                let acked = reconnect.elapsed();
                if ack["recovered"].as_bool() != Some(true) {
                    let reason = ack["reason"].as_str().unwrap_or("unknown").to_owned();
                    *tally.failed.entry(reason).or_default() += 1;
                    epoch = ack["epoch"].as_str().unwrap_or_default().to_owned();
                    // Continue from the new position; what was in between is lost to it.
                    tally.last = ack["offset"].as_u64().unwrap_or(tally.last);
                    continue;
                }
                tally.recovered += 1;
                let top = ack["offset"].as_u64().unwrap_or(tally.last);
                while tally.last < top {
                    let msg = match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
                        Ok(Some(Ok(Message::Text(t)))) => t,
                        Ok(Some(Ok(_))) => continue,
                        _ => break,
                    };
                    if let Some(offset) = offset_of(msg.as_str()) {
                        count(&mut tally, offset);
                    }
                }
                let took = reconnect.elapsed().as_micros() as u64;
                if took > 100_000 && std::env::var_os("LT_JITTER_DEBUG").is_some() {
                    eprintln!("slow recovery: ack after {acked:?}, done after {took} us, top {top}");
                }
                let _ = latencies.lock().await.record(took.max(1));
            }
        }));
    }

    // Publishers: rounds over the rooms at the rate.
    let http = crate::http().pool_max_idle_per_host(opts.publishers.max(1)).build()?;
    let publishers = opts.publishers.max(1);
    let mut tasks = Vec::new();
    for p in 0..publishers {
        let (target, http, tops) = (target.clone(), http.clone(), tops.clone());
        let period = Duration::from_secs_f64(publishers as f64 / opts.rate.max(1.0));
        tasks.push(tokio::spawn(async move {
            let mut next = Instant::now();
            let mut k = 0usize;
            while Instant::now() < stop_at {
                tokio::time::sleep_until(next.into()).await;
                next += period;
                let r = (p + k * publishers) % rooms;
                k += 1;
                let res = target
                    .publish_request(&http, &format!("lt-room-{r}"), r#"{"p":0,"s":0,"t":0}"#)
                    .send()
                    .await;
                if let Ok(res) = res
                    && let Ok(v) = res.json::<Value>().await
                    && let Some(offset) = v["offset"].as_u64()
                {
                    tops[r].fetch_max(offset, Ordering::AcqRel);
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    done_flag.store(true, Ordering::Release);

    let mut report = JitterReport::default();
    for (i, s) in subscribers.into_iter().enumerate() {
        let tally = s.await?.with_context(|| format!("subscriber {i}"))?;
        let top = tops[i % rooms].load(Ordering::Acquire);
        report.expected += top.saturating_sub(tally.start);
        report.delivered += tally.received;
        report.duplicated += tally.duplicated;
        report.out_of_order += tally.out_of_order;
        report.recoveries += tally.recoveries;
        report.recovered += tally.recovered;
        for (reason, n) in tally.failed {
            *report.failed.entry(reason).or_default() += n;
        }
    }
    report.delivered_percent = 100.0 * report.delivered as f64 / report.expected.max(1) as f64;
    report.recovery_latency = Latency::of(&*latencies.lock().await);
    Ok(report)
}

/// Counts one event: a repeat, the next one, or one after a gap (whose events are lost).
fn count(tally: &mut Tally, offset: u64) {
    if offset <= tally.last {
        tally.duplicated += 1;
        return;
    }
    if offset != tally.last + 1 {
        tally.out_of_order += 1;
        if std::env::var_os("LT_JITTER_DEBUG").is_some() {
            eprintln!(
                "jitter gap: after {} came {} (recoveries so far {})",
                tally.last, offset, tally.recoveries
            );
        }
    }
    tally.received += 1;
    tally.last = offset;
}

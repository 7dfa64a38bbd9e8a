//! roomcast load generator: opens many WebSocket subscribers, publishes over HTTP at a target
//! rate with a send time and per-room sequence number in each event, and reports connect rate,
//! deliveries per second, publish→deliver latency, loss, duplicates, and the hub's memory and CPU.
//!
//! Every run is bounded: it connects a fixed number of clients, publishes for a fixed time, waits
//! at most `drain` for stragglers, and stops by itself.

// The load generator is not the server: its tasks end with each run (clippy.toml bans bare
// spawns for the server).
#![allow(clippy::disallowed_methods)]

pub mod forged;
pub mod jitter;
pub mod storm;
pub mod target;
pub mod webhook;

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

use target::{Socket, Target};

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// N connections over M rooms, no traffic: memory per connection.
    Idle,
    /// One room, N subscribers, broadcasts at `rate`.
    Fanout,
    /// N subscribers spread over M rooms, broadcasts at `rate` spread over the rooms.
    Rooms,
    /// Connect/subscribe/disconnect cycles at `churn_rate` while broadcasting to steady subscribers.
    Churn,
    /// HTTP publish throughput with few subscribers.
    Publish,
    /// N connections over M rooms that all drop and reconnect at once: the reconnect storm
    /// after a node's restart or a network blip.
    Storm,
    /// Broadcasts signed with forged API keys (a new one each request) beside a legitimate
    /// publisher: what unknown credentials cost the hub's store.
    Forged,
    /// N subscribers over M rooms while broadcasts go on at `rate`, each cut every 5–15 s and
    /// recovering with `since`: every event once, in order, and how long recovery takes.
    Jitter,
}

/// One run's settings.
#[derive(Debug, Clone)]
pub struct Options {
    pub scenario: Scenario,
    pub target: Target,
    pub connections: usize,
    pub rooms: usize,
    /// Broadcasts per second over all publishers; 0 = as fast as the hub answers.
    pub rate: f64,
    pub duration: Duration,
    /// Concurrent HTTP keep-alive connections publishing.
    pub publishers: usize,
    /// Padding added to each event's data.
    pub payload_bytes: usize,
    /// The hub's process id, for RSS and CPU figures.
    pub hub_pid: Option<u32>,
    /// Source addresses 127.0.0.1 ..= 127.0.0.N, spreading ephemeral ports.
    pub source_ips: u8,
    /// Connections opened at once during the connect phase.
    pub connect_concurrency: usize,
    /// Connect/disconnect cycles per second (churn scenario).
    pub churn_rate: f64,
    /// Churn through `presence-` rooms, so every cycle is a member joining and leaving.
    pub churn_presence: bool,
    /// Longest wait for in-flight deliveries after publishing stops.
    pub drain: Duration,
    /// Extra subscribers in room 0 that never read a byte (slow consumers); they are not
    /// counted in deliveries, only in how the others fare.
    pub stalled: usize,
    /// roomcast: register a webhook for every broadcast and measure its deliveries too.
    pub webhook: bool,
}

/// Latency figures in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    /// Quantiles of a histogram of microseconds.
    pub fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Latency {
            p50_ms: ms(h.value_at_quantile(0.5)),
            p90_ms: ms(h.value_at_quantile(0.9)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

/// Webhook deliveries of the run's broadcasts (`--webhook`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct WebhookReport {
    /// Distinct deliveries received.
    pub received: u64,
    /// Broadcasts whose delivery did not arrive within the drain time.
    pub missing: u64,
    pub duplicated: u64,
    pub per_second: f64,
    /// Publish → arrival at the receiver.
    pub latency: Latency,
}

/// Everything a run measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub scenario: String,
    pub protocol: String,
    pub connections: usize,
    pub rooms: usize,
    pub connect_errors: u64,
    pub connect_seconds: f64,
    pub connects_per_second: f64,
    pub publish_seconds: f64,
    pub published: u64,
    pub publish_errors: u64,
    pub publishes_per_second: f64,
    pub expected_deliveries: u64,
    pub delivered: u64,
    pub deliveries_per_second: f64,
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    pub latency: Latency,
    pub churn_cycles: u64,
    pub churn_errors: u64,
    pub stalled_clients: usize,
    pub hub_rss_before_kib: Option<u64>,
    pub hub_rss_after_kib: Option<u64>,
    /// (after − before) / connections, measured once every client is connected and subscribed.
    pub hub_rss_per_connection_bytes: Option<f64>,
    pub hub_cpu_seconds: Option<f64>,
    pub generator_cpu_seconds: Option<f64>,
    pub webhook: Option<WebhookReport>,
    pub forged: Option<forged::ForgedReport>,
    pub storm: Option<storm::StormReport>,
    pub jitter: Option<jitter::JitterReport>,
}

impl Report {
    /// A few readable lines.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} against {}: {} connections in {} rooms\n",
            self.scenario, self.protocol, self.connections, self.rooms
        );
        if self.jitter.is_none() {
            s += &format!(
                "  connect: {:.2} s, {:.0}/s, {} errors\n",
                self.connect_seconds, self.connects_per_second, self.connect_errors
            );
        }
        if let (Some(before), Some(after)) = (self.hub_rss_before_kib, self.hub_rss_after_kib) {
            s += &format!(
                "  hub RSS: {before} KiB -> {after} KiB ({:.0} bytes per connection)\n",
                self.hub_rss_per_connection_bytes.unwrap_or(0.0)
            );
        }
        if self.published > 0 {
            s += &format!(
                "  published {} in {:.2} s ({:.0}/s, {} errors); delivered {}/{} ({:.0}/s)\n",
                self.published,
                self.publish_seconds,
                self.publishes_per_second,
                self.publish_errors,
                self.delivered,
                self.expected_deliveries,
                self.deliveries_per_second
            );
            let l = &self.latency;
            s += &format!(
                "  latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}\n",
                l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms
            );
            s += &format!(
                "  lost {}  duplicated {}  out of order {}\n",
                self.lost, self.duplicated, self.out_of_order
            );
        }
        if self.stalled_clients > 0 {
            s += &format!("  with {} subscribers that never read\n", self.stalled_clients);
        }
        if self.churn_cycles > 0 || self.churn_errors > 0 {
            s += &format!("  churn: {} cycles, {} errors\n", self.churn_cycles, self.churn_errors);
        }
        if let Some(w) = &self.webhook {
            s += &format!(
                "  webhook: {} received ({:.0}/s), {} missing, {} duplicated; latency ms: p50 {:.2}  p99 {:.2}  max {:.2}\n",
                w.received,
                w.per_second,
                w.missing,
                w.duplicated,
                w.latency.p50_ms,
                w.latency.p99_ms,
                w.latency.max_ms
            );
        }
        if let Some(j) = &self.jitter {
            s += &format!(
                "  jitter: {} of {} events delivered ({:.3} %), {} duplicated, {} gaps; {} cuts, {} recovered, failed {:?}; recovery ms: p50 {:.1}  p99 {:.1}  max {:.1}\n",
                j.delivered,
                j.expected,
                j.delivered_percent,
                j.duplicated,
                j.out_of_order,
                j.recoveries,
                j.recovered,
                j.failed,
                j.recovery_latency.p50_ms,
                j.recovery_latency.p99_ms,
                j.recovery_latency.max_ms
            );
        }
        if let Some(r) = &self.storm {
            s += &format!(
                "  storm: {} clients dropped and back in {:.2} s ({:.0}/s), {} refused attempts, {} never back; each back after ms: p50 {:.0}  p99 {:.0}  max {:.0}\n",
                r.clients,
                r.seconds,
                r.reconnects_per_second,
                r.refused_attempts,
                r.failed,
                r.back_after.p50_ms,
                r.back_after.p99_ms,
                r.back_after.max_ms
            );
        }
        if let Some(f) = &self.forged {
            s += &format!(
                "  forged keys: {} requests ({:.0}/s), {} refused with 401; hub store reads {} ({:.1}/s), {} throttled, {} answered by a recent read\n",
                f.requests,
                f.requests_per_second,
                f.refused,
                f.store_reads,
                f.store_reads_per_second,
                f.throttled,
                f.recent
            );
            s += &format!(
                "  legitimate publisher meanwhile: {} ok, {} errors; latency ms: p50 {:.2}  p99 {:.2}  max {:.2}\n",
                f.legit_ok,
                f.legit_errors,
                f.legit_latency.p50_ms,
                f.legit_latency.p99_ms,
                f.legit_latency.max_ms
            );
        }
        if let (Some(hub), Some(generator)) = (self.hub_cpu_seconds, self.generator_cpu_seconds) {
            s += &format!("  CPU seconds: hub {hub:.2}, generator {generator:.2}\n");
        }
        s
    }
}

/// A reqwest client builder. When this crate is built in one go with roomcast, cargo unifies
/// reqwest's features and its TLS then needs a rustls provider installed; this does it once.
pub fn http() -> reqwest::ClientBuilder {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    reqwest::Client::builder()
}

/// Raises the open-files soft limit to the hard limit, so 100,000 sockets fit.
pub fn raise_fd_limit() -> Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX).context("raising RLIMIT_NOFILE")
}

pub(crate) fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// VmRSS of `pid` in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().split(' ').next()?.parse().ok())
}

/// User + system CPU seconds of `pid` (or this process).
pub fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = pid.map_or("/proc/self/stat".to_owned(), |p| format!("/proc/{p}/stat"));
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

pub(crate) fn source(i: usize, spread: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 1 + (i % spread.max(1) as usize) as u8)
}

fn room_name(i: usize) -> String {
    format!("lt-room-{i}")
}

/// Shared counters and latency histograms of the receivers.
struct Collect {
    histograms: Vec<Mutex<Histogram<u64>>>,
    delivered: AtomicU64,
    /// Flipped to `true` once publishing and draining are over.
    stop: tokio::sync::watch::Sender<bool>,
}

/// Per-connection sequence checking: the last sequence number seen from each publisher.
#[derive(Default, Debug)]
struct ConnCheck {
    lost: u64,
    duplicated: u64,
    out_of_order: u64,
    received: u64,
}

async fn receive(
    target: Arc<Target>,
    mut ws: Socket,
    shard: usize,
    publishers: usize,
    collect: Arc<Collect>,
) -> ConnCheck {
    let mut last = vec![0u64; publishers.max(1)];
    let mut check = ConnCheck::default();
    // Latencies are recorded in batches: one histogram lock per batch, not per message.
    let mut pending: Vec<u64> = Vec::new();
    let flush = |pending: &mut Vec<u64>| {
        if let Ok(mut h) = collect.histograms[shard].lock() {
            for &v in pending.iter() {
                let _ = h.record(v);
            }
        }
        pending.clear();
    };
    let mut stop = collect.stop.subscribe();
    loop {
        let msg = tokio::select! {
            biased;
            _ = stop.changed() => break,
            msg = ws.next() => match msg {
                None | Some(Err(_)) => break,
                Some(Ok(msg)) => msg,
            },
        };
        let Message::Text(text) = msg else { continue };
        let Some(payload) = target.payload_of(text.as_str()) else { continue };
        pending.push(now_us().saturating_sub(payload.t).max(1));
        if pending.len() >= 64 {
            flush(&mut pending);
        }
        collect.delivered.fetch_add(1, Ordering::Relaxed);
        check.received += 1;
        let Some(seen) = last.get_mut(payload.p) else { continue };
        if payload.s == *seen + 1 {
            *seen = payload.s;
        } else if payload.s <= *seen {
            check.duplicated += 1;
        } else {
            check.lost += payload.s - *seen - 1;
            check.out_of_order += 1;
            *seen = payload.s;
        }
    }
    flush(&mut pending);
    check
}

/// Runs one scenario to completion.
pub async fn run(opts: Options) -> Result<Report> {
    let target = Arc::new(opts.target.clone());
    let rooms = match opts.scenario {
        Scenario::Fanout | Scenario::Publish | Scenario::Churn | Scenario::Forged => 1,
        Scenario::Idle | Scenario::Rooms | Scenario::Storm | Scenario::Jitter => opts.rooms.max(1),
    };
    let mut report = Report {
        scenario: format!("{:?}", opts.scenario).to_lowercase(),
        protocol: format!("{:?}", target.protocol).to_lowercase(),
        connections: opts.connections,
        rooms,
        ..Default::default()
    };
    let gen_cpu_before = cpu_seconds(None);
    let hub_cpu_before = opts.hub_pid.and_then(|p| cpu_seconds(Some(p)));
    report.hub_rss_before_kib = opts.hub_pid.and_then(rss_kib);
    if opts.scenario == Scenario::Forged {
        report.connections = 0;
        report.forged = Some(forged::run(&opts, &target).await?);
        report.hub_cpu_seconds =
            opts.hub_pid.and_then(|p| cpu_seconds(Some(p))).zip(hub_cpu_before).map(|(a, b)| a - b);
        report.generator_cpu_seconds = cpu_seconds(None).zip(gen_cpu_before).map(|(a, b)| a - b);
        return Ok(report);
    }

    if opts.scenario == Scenario::Jitter {
        let jitter = jitter::run(&opts, target.clone()).await?;
        report.connects_per_second = 0.0;
        report.delivered = jitter.delivered;
        report.expected_deliveries = jitter.expected;
        report.duplicated = jitter.duplicated;
        report.lost = jitter.expected.saturating_sub(jitter.delivered);
        report.latency = jitter.recovery_latency.clone();
        report.jitter = Some(jitter);
        report.hub_cpu_seconds =
            opts.hub_pid.and_then(|p| cpu_seconds(Some(p))).zip(hub_cpu_before).map(|(a, b)| a - b);
        report.generator_cpu_seconds = cpu_seconds(None).zip(gen_cpu_before).map(|(a, b)| a - b);
        return Ok(report);
    }

    // Connect phase.
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(opts.connect_concurrency.max(1)));
    let mut pending = Vec::with_capacity(opts.connections);
    for i in 0..opts.connections {
        let (target, gate) = (target.clone(), gate.clone());
        let spread = opts.source_ips;
        pending.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await;
            let room = room_name(i % rooms);
            (i % rooms, target.connect(source(i, spread), &room, i as u64).await)
        }));
    }
    let mut sockets = Vec::with_capacity(opts.connections);
    for p in pending {
        match p.await? {
            (room, Ok(ws)) => sockets.push((room, ws)),
            (_, Err(e)) => {
                if report.connect_errors == 0 {
                    eprintln!("first connect error: {e:#}");
                }
                report.connect_errors += 1;
            }
        }
    }
    report.connect_seconds = started.elapsed().as_secs_f64();
    report.connects_per_second = sockets.len() as f64 / report.connect_seconds.max(1e-9);
    if let Some(pid) = opts.hub_pid {
        // Let allocator and kernel settle before reading memory.
        tokio::time::sleep(Duration::from_millis(500)).await;
        report.hub_rss_after_kib = rss_kib(pid);
        if let (Some(before), Some(after)) = (report.hub_rss_before_kib, report.hub_rss_after_kib)
            && !sockets.is_empty()
        {
            report.hub_rss_per_connection_bytes =
                Some((after as f64 - before as f64) * 1024.0 / sockets.len() as f64);
        }
    }

    if opts.scenario == Scenario::Storm {
        report.storm = Some(storm::run(target.clone(), sockets, room_name, source, opts.source_ips).await?);
        report.hub_cpu_seconds =
            opts.hub_pid.and_then(|p| cpu_seconds(Some(p))).zip(hub_cpu_before).map(|(a, b)| a - b);
        report.generator_cpu_seconds = cpu_seconds(None).zip(gen_cpu_before).map(|(a, b)| a - b);
        return Ok(report);
    }

    if opts.scenario == Scenario::Idle {
        tokio::time::sleep(opts.duration).await;
        report.hub_cpu_seconds =
            opts.hub_pid.and_then(|p| cpu_seconds(Some(p))).zip(hub_cpu_before).map(|(a, b)| a - b);
        report.generator_cpu_seconds = cpu_seconds(None).zip(gen_cpu_before).map(|(a, b)| a - b);
        drop(sockets);
        return Ok(report);
    }

    // Slow consumers: subscribed, then never read. Held until the end of the run.
    let mut stalled = Vec::with_capacity(opts.stalled);
    for i in 0..opts.stalled {
        match target.connect(source(i, opts.source_ips), &room_name(0), (opts.connections + i) as u64).await {
            Ok(ws) => stalled.push(ws),
            Err(e) => eprintln!("stalled client failed to connect: {e:#}"),
        }
    }
    report.stalled_clients = stalled.len();

    // Receivers.
    let collect = Arc::new(Collect {
        histograms: (0..32)
            .map(|_| Mutex::new(Histogram::new_with_bounds(1, 120_000_000, 3).expect("bounds")))
            .collect(),
        delivered: AtomicU64::new(0),
        stop: tokio::sync::watch::Sender::new(false),
    });
    let publishers = opts.publishers.max(1);
    let mut subscribers_per_room = vec![0u64; rooms];
    let mut receivers = Vec::with_capacity(sockets.len());
    for (i, (room, ws)) in sockets.into_iter().enumerate() {
        subscribers_per_room[room] += 1;
        receivers
            .push((room, tokio::spawn(receive(target.clone(), ws, i % 32, publishers, collect.clone()))));
    }

    let churn = (opts.scenario == Scenario::Churn && opts.churn_rate > 0.0).then(|| {
        let (target, collect) = (target.clone(), collect.clone());
        let (rate, spread) = (opts.churn_rate, opts.source_ips);
        let prefix = if opts.churn_presence { "presence-lt-churn" } else { "lt-churn" };
        tokio::spawn(churn_loop(target, collect, rate, spread, prefix))
    });

    let sink = match opts.webhook {
        true => {
            let sink = webhook::Sink::start().await?;
            sink.register(&target).await?;
            Some(sink)
        }
        false => None,
    };

    target.wait_for_publish_node().await?;

    // Publish phase.
    let publish_started = Instant::now();
    let deadline = publish_started + opts.duration;
    let http = http().pool_max_idle_per_host(publishers).build()?;
    let pad = "x".repeat(opts.payload_bytes);
    let mut tasks = Vec::new();
    for p in 0..publishers {
        let (target, http, pad) = (target.clone(), http.clone(), pad.clone());
        let period = (opts.rate > 0.0).then(|| Duration::from_secs_f64(publishers as f64 / opts.rate));
        tasks.push(tokio::spawn(async move {
            let mut sent = vec![0u64; rooms];
            let mut errors = 0u64;
            let mut k = 0usize;
            let mut next = Instant::now();
            while Instant::now() < deadline {
                if let Some(period) = period {
                    tokio::time::sleep_until(next.into()).await;
                    next += period;
                }
                let room = (p + k * publishers) % rooms;
                k += 1;
                let payload = format!(r#"{{"p":{p},"s":{},"t":{},"pad":"{pad}"}}"#, sent[room] + 1, now_us());
                match target.publish_request(&http, &room_name(room), &payload).send().await {
                    Ok(res) if res.status().is_success() => {
                        let _ = res.bytes().await;
                        sent[room] += 1;
                    }
                    Ok(res) => {
                        if errors == 0 {
                            eprintln!(
                                "publish refused: {} {}",
                                res.status(),
                                res.text().await.unwrap_or_default()
                            );
                        }
                        errors += 1;
                    }
                    Err(e) => {
                        if errors == 0 {
                            eprintln!("publish failed: {e}");
                        }
                        errors += 1;
                    }
                }
            }
            (sent, errors)
        }));
    }
    let mut sent_per_room = vec![0u64; rooms];
    for t in tasks {
        let (sent, errors) = t.await?;
        for (room, n) in sent.into_iter().enumerate() {
            sent_per_room[room] += n;
        }
        report.publish_errors += errors;
    }
    report.publish_seconds = publish_started.elapsed().as_secs_f64();
    report.published = sent_per_room.iter().sum();
    report.publishes_per_second = report.published as f64 / report.publish_seconds.max(1e-9);
    report.expected_deliveries = sent_per_room.iter().zip(&subscribers_per_room).map(|(s, n)| s * n).sum();

    // Drain: wait for the deliveries still in flight, up to `drain`.
    let drain_until = Instant::now() + opts.drain;
    let webhooks_done =
        || sink.as_ref().is_none_or(|s| s.received.load(Ordering::Relaxed) >= report.published);
    while (collect.delivered.load(Ordering::Relaxed) < report.expected_deliveries || !webhooks_done())
        && Instant::now() < drain_until
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let delivery_seconds = publish_started.elapsed().as_secs_f64();
    collect.stop.send_replace(true);
    if let Some(churn) = churn {
        let (cycles, errors) = churn.await?;
        report.churn_cycles = cycles;
        report.churn_errors = errors;
    }
    let mut tail_lost = 0u64;
    for (room, r) in receivers {
        let check = r.await?;
        report.delivered += check.received;
        report.duplicated += check.duplicated;
        report.out_of_order += check.out_of_order;
        report.lost += check.lost;
        // Events never seen at the end of a stream are lost too.
        tail_lost += sent_per_room[room].saturating_sub(check.received - check.duplicated + check.lost);
    }
    report.lost += tail_lost;
    report.deliveries_per_second = report.delivered as f64 / delivery_seconds.max(1e-9);
    drop(stalled);

    let mut all = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).expect("bounds");
    for h in &collect.histograms {
        if let Ok(h) = h.lock() {
            all.add(&*h).ok();
        }
    }
    report.latency = Latency::of(&all);
    if let Some(sink) = &sink {
        let received = sink.received.load(Ordering::Relaxed);
        report.webhook = Some(WebhookReport {
            received,
            missing: report.published.saturating_sub(received),
            duplicated: sink.duplicated.load(Ordering::Relaxed),
            per_second: received as f64 / delivery_seconds.max(1e-9),
            latency: sink.latency(),
        });
    }
    report.hub_cpu_seconds =
        opts.hub_pid.and_then(|p| cpu_seconds(Some(p))).zip(hub_cpu_before).map(|(a, b)| a - b);
    report.generator_cpu_seconds = cpu_seconds(None).zip(gen_cpu_before).map(|(a, b)| a - b);
    Ok(report)
}

/// Opens, subscribes (to `{prefix}-0` … `{prefix}-49`, as a new user each time) and closes
/// sockets at `rate` per second until told to stop.
async fn churn_loop(
    target: Arc<Target>,
    collect: Arc<Collect>,
    rate: f64,
    spread: u8,
    prefix: &'static str,
) -> (u64, u64) {
    let period = Duration::from_secs_f64(1.0 / rate);
    let mut tick = tokio::time::interval(period);
    let (mut cycles, mut errors) = (0u64, 0u64);
    let mut inflight = tokio::task::JoinSet::new();
    let mut i = 0usize;
    while !*collect.stop.borrow() {
        tick.tick().await;
        let target = target.clone();
        i += 1;
        let n = i;
        inflight.spawn(async move {
            let mut ws = target.connect(source(n, spread), &format!("{prefix}-{}", n % 50), n as u64).await?;
            ws.close(None).await.ok();
            anyhow::Ok(())
        });
        while let Some(done) = inflight.try_join_next() {
            match done {
                Ok(Ok(())) => cycles += 1,
                _ => errors += 1,
            }
        }
    }
    while let Some(done) = inflight.join_next().await {
        match done {
            Ok(Ok(())) => cycles += 1,
            _ => errors += 1,
        }
    }
    (cycles, errors)
}

//! Sending deliveries: a time-ordered schedule in memory (delivery ids only; bodies stay in the
//! store), bounded concurrency over all webhooks and per webhook, signed POSTs through reqwest
//! with rustls, and the retry policy (exponential delays with jitter, 410 disables, too many
//! consecutive failures disable).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Webhooks;
use crate::clock::now_ms;
use crate::config::WebhooksConfig;
use crate::metrics::WebhookOutcome;
use crate::store::{
    AttemptRecord, DeliveryRecord, DeliveryStatus, DueDelivery, StoreError, WebhookFormat, WebhookHealth,
    WebhookRecord,
};

/// Most response-body bytes read (and quoted in the delivery's `error`).
const RESPONSE_CAP: usize = 1024;
/// Characters of a response body quoted in `error`.
const QUOTE_CHARS: usize = 200;
/// Delay before trying again when the store could not be read.
const STORE_RETRY: Duration = Duration::from_secs(5);
/// Most new deliveries kept in memory with their bodies until their first attempt, which then
/// needs no store read; beyond it (a receiver far behind) entries hold ids only.
const FRESH_MAX: usize = 4096;
/// Most attempt outcomes written in one transaction.
const WRITE_BATCH: usize = 256;

/// One scheduled attempt: `(due ms, delivery id, webhook id)`.
type Entry = Reverse<(i64, String, String)>;

#[derive(Debug, Default)]
struct Queue {
    heap: BinaryHeap<Entry>,
    /// Deliveries being attempted now; a second entry for one of them is dropped.
    in_flight: HashSet<String>,
    /// Per webhook: attempts in flight, and due deliveries waiting for one of those to end.
    per_webhook: HashMap<String, (usize, VecDeque<(String, String)>)>,
    /// New deliveries with their bodies, until their first attempt (at most [`FRESH_MAX`]).
    fresh: HashMap<String, Arc<DeliveryRecord>>,
}

/// An attempt outcome waiting for the writer, and who waits for it to be on disk.
pub(super) struct PendingWrite {
    attempt: AttemptRecord,
    done: tokio::sync::oneshot::Sender<Result<(), StoreError>>,
}

/// The schedule and the HTTP client.
pub struct Dispatcher {
    queue: Mutex<Queue>,
    wake: Notify,
    slots: Arc<Semaphore>,
    per_webhook: usize,
    client: reqwest::Client,
    allow_private: bool,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher").finish_non_exhaustive()
    }
}

impl Dispatcher {
    /// An idle dispatcher with its HTTP client built from `config`.
    pub fn new(config: &WebhooksConfig) -> Result<Self, String> {
        crate::webhooks::install_tls_provider();
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.timeout_s))
            .connect_timeout(Duration::from_secs(config.timeout_s.min(5)))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent(concat!("roomcast-webhooks/", env!("CARGO_PKG_VERSION")))
            .pool_idle_timeout(Duration::from_secs(30));
        if !config.allow_private_targets {
            builder = builder.dns_resolver(Arc::new(super::target::PublicOnly));
        }
        let client = builder.build().map_err(|e| format!("cannot build the webhook HTTP client: {e}"))?;
        Ok(Self {
            queue: Mutex::new(Queue::default()),
            wake: Notify::new(),
            slots: Arc::new(Semaphore::new(config.max_in_flight)),
            per_webhook: config.max_in_flight_per_webhook,
            client,
            allow_private: config.allow_private_targets,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Schedules an attempt of `delivery_id` at `due` (ms).
    pub fn schedule(&self, delivery_id: &str, webhook_id: &str, due: i64) {
        self.lock().heap.push(Reverse((due, delivery_id.to_owned(), webhook_id.to_owned())));
        self.wake.notify_one();
    }

    /// Schedules the first attempt of a delivery just written, keeping its body at hand.
    pub fn schedule_fresh(&self, delivery: &DeliveryRecord) {
        let mut q = self.lock();
        let due = delivery.next_retry_at.unwrap_or(delivery.created_at);
        q.heap.push(Reverse((due, delivery.delivery_id.clone(), delivery.webhook_id.clone())));
        if q.fresh.len() < FRESH_MAX {
            q.fresh.insert(delivery.delivery_id.clone(), Arc::new(delivery.clone()));
        }
        drop(q);
        self.wake.notify_one();
    }

    fn take_fresh(&self, delivery_id: &str) -> Option<Arc<DeliveryRecord>> {
        self.lock().fresh.remove(delivery_id)
    }

    /// Schedules every delivery in `due`.
    pub fn schedule_all(&self, due: Vec<DueDelivery>) {
        let mut q = self.lock();
        for d in due {
            q.heap.push(Reverse((d.due_at, d.delivery_id, d.webhook_id)));
        }
        drop(q);
        self.wake.notify_one();
    }

    /// Deliveries scheduled or waiting for a slot (not counting those in flight).
    pub fn queued(&self) -> usize {
        let q = self.lock();
        q.heap.len() + q.per_webhook.values().map(|(_, w)| w.len()).sum::<usize>()
    }

    /// Takes the next due entry that may start now, or says how long to wait.
    fn next_due(&self, now: i64) -> Result<(String, String), Option<Duration>> {
        let mut q = self.lock();
        loop {
            let Some(Reverse((due, _, _))) = q.heap.peek() else { return Err(None) };
            if *due > now {
                return Err(Some(Duration::from_millis((*due - now) as u64)));
            }
            let Reverse((_, delivery_id, webhook_id)) = q.heap.pop().expect("peeked");
            if q.in_flight.contains(&delivery_id) {
                continue;
            }
            let limit = self.per_webhook;
            let (running, waiting) = q.per_webhook.entry(webhook_id.clone()).or_default();
            if *running >= limit {
                waiting.push_back((delivery_id, webhook_id));
                continue;
            }
            *running += 1;
            q.in_flight.insert(delivery_id.clone());
            return Ok((delivery_id, webhook_id));
        }
    }

    /// An attempt ended: frees its webhook slot and lets the next waiting delivery go.
    fn finished(&self, delivery_id: &str, webhook_id: &str) {
        let mut q = self.lock();
        q.in_flight.remove(delivery_id);
        let mut next = None;
        if let Some((running, waiting)) = q.per_webhook.get_mut(webhook_id) {
            *running = running.saturating_sub(1);
            next = waiting.pop_front();
            if *running == 0 && waiting.is_empty() {
                q.per_webhook.remove(webhook_id);
            }
        }
        if let Some((d, w)) = next {
            q.heap.push(Reverse((now_ms(), d, w)));
        }
        drop(q);
        self.wake.notify_one();
    }
}

/// What one attempt got back.
enum Answer {
    Status(u16, String),
    Error(String),
}

/// `delay` varied by ±20 %.
fn jittered(delay: u64) -> i64 {
    let spread = delay / 5;
    if spread == 0 {
        return delay as i64;
    }
    (delay - spread + rand::rng().random_range(0..=2 * spread)) as i64
}

/// The first `QUOTE_CHARS` characters of a response body, for `error`.
fn quote(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text: String = text.chars().filter(|c| !c.is_control()).take(QUOTE_CHARS).collect();
    text.trim().to_owned()
}

impl Webhooks {
    /// Starts due attempts as slots free up, until `shutdown`.
    pub(super) async fn run_dispatch(self: Arc<Self>, shutdown: CancellationToken, tracker: TaskTracker) {
        loop {
            let wake = self.dispatch.wake.notified();
            let wait = match self.dispatch.next_due(now_ms()) {
                Ok((delivery_id, webhook_id)) => {
                    let permit = tokio::select! {
                        p = self.dispatch.slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
                        _ = shutdown.cancelled() => return,
                    };
                    tracker.spawn(self.clone().attempt(delivery_id, webhook_id, permit, shutdown.clone()));
                    continue;
                }
                Err(wait) => wait,
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = wake => {}
                _ = tokio::time::sleep(wait.unwrap_or(Duration::from_secs(3600))) => {}
            }
        }
    }

    async fn attempt(
        self: Arc<Self>,
        delivery_id: String,
        webhook_id: String,
        _permit: OwnedSemaphorePermit,
        shutdown: CancellationToken,
    ) {
        // Shutdown abandons an attempt in flight: the delivery is still waiting in the store
        // and is sent again after the restart (at-least-once).
        let retry_at = tokio::select! {
            at = self.attempt_once(&delivery_id, &webhook_id) => at,
            _ = shutdown.cancelled() => None,
        };
        self.dispatch.finished(&delivery_id, &webhook_id);
        if let Some(at) = retry_at {
            self.dispatch.schedule(&delivery_id, &webhook_id, at);
        }
    }

    /// Makes one attempt and records it; returns when the next one is due, if any.
    async fn attempt_once(&self, delivery_id: &str, webhook_id: &str) -> Option<i64> {
        let fresh = self.dispatch.take_fresh(delivery_id);
        // A disabled or deleted webhook's deliveries wait in the store; enabling resumes them.
        let webhook = self.get(webhook_id).filter(|w| w.enabled)?;
        let stored = match fresh {
            Some(d) => Ok(Some(Arc::unwrap_or_clone(d))),
            None => self.store.delivery(delivery_id).await,
        };
        let mut delivery = match stored {
            // A second entry for a delivery rescheduled meanwhile (a claim, a resume): its
            // attempt is not due yet, and the entry for it is still queued.
            Ok(Some(d)) if d.next_retry_at.is_some_and(|t| t > now_ms() + 1000) => return None,
            Ok(Some(d)) if !d.status.is_final() => d,
            Ok(_) => return None,
            Err(e) => {
                tracing::warn!(error = %e, delivery_id, "cannot read a webhook delivery; will try again");
                return Some(now_ms() + STORE_RETRY.as_millis() as i64);
            }
        };
        if !self.lease(delivery_id).await {
            // Another node is making this attempt; it schedules the next one.
            return None;
        }
        let started = Instant::now();
        let answer = self.send(&webhook, &delivery).await;
        let now = now_ms();
        delivery.attempts += 1;
        delivery.latency_ms = Some(started.elapsed().as_millis() as u64);
        delivery.updated_at = now;
        let (succeeded, gone) = match &answer {
            Answer::Status(code, _) => ((200..300).contains(code), *code == 410),
            Answer::Error(_) => (false, false),
        };
        (delivery.response_code, delivery.error) = match answer {
            Answer::Status(code, _) if succeeded => (Some(code), None),
            Answer::Status(410, _) => (Some(410), Some("HTTP 410 Gone: the webhook was disabled".into())),
            Answer::Status(code, body) if body.is_empty() => (Some(code), Some(format!("HTTP {code}"))),
            Answer::Status(code, body) => (Some(code), Some(format!("HTTP {code}: {body}"))),
            Answer::Error(e) => (None, Some(e)),
        };
        delivery.log_attempt();
        let delays = &self.config.retry_delays_ms;
        let outcome = if succeeded {
            delivery.status = DeliveryStatus::Succeeded;
            delivery.next_retry_at = None;
            WebhookOutcome::Succeeded
        } else if !gone && (delivery.step as usize) < delays.len() {
            delivery.next_retry_at = Some(now + jittered(delays[delivery.step as usize]));
            delivery.step += 1;
            delivery.status = DeliveryStatus::Retrying;
            WebhookOutcome::Retried
        } else {
            delivery.status = DeliveryStatus::Failed;
            delivery.next_retry_at = None;
            WebhookOutcome::Failed
        };
        self.metrics.outcome(outcome).increment(1);
        if outcome != WebhookOutcome::Retried {
            self.analytics.webhook(&delivery.app_id, succeeded, now);
        }
        tracing::debug!(delivery_id, webhook_id, status = delivery.status.as_str(), code = ?delivery.response_code, error = ?delivery.error, "webhook attempt");
        if let Err(e) = self.record(&delivery, &webhook, succeeded, gone).await {
            tracing::warn!(error = %e, delivery_id, "cannot record a webhook attempt");
        }
        if let Some(waiter) = self.waiters.remove(delivery_id) {
            let _ = waiter.1.send(delivery.clone());
        }
        self.release(delivery_id).await;
        delivery.next_retry_at
    }

    /// In a cluster: takes the delivery's lease (for one attempt's time), or says another node
    /// holds it. On a single node, or when Redis does not answer, the attempt goes ahead: a
    /// duplicate is better than a delivery never made.
    async fn lease(&self, delivery_id: &str) -> bool {
        let Some(conn) = &self.leases else { return true };
        let ttl_ms = (self.config.timeout_s + 5) * 1000;
        let taken: redis::RedisResult<Option<String>> = redis::cmd("SET")
            .arg(format!("rc:lease:{delivery_id}"))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms)
            .query_async(&mut conn.clone())
            .await;
        match taken {
            Ok(taken) => taken.is_some(),
            Err(e) => {
                tracing::warn!(error = %e, delivery_id, "cannot take a webhook delivery's lease; sending anyway");
                true
            }
        }
    }

    async fn release(&self, delivery_id: &str) {
        if let Some(conn) = &self.leases {
            let _: redis::RedisResult<()> =
                redis::cmd("DEL").arg(format!("rc:lease:{delivery_id}")).query_async(&mut conn.clone()).await;
        }
    }

    /// Writes the attempt and, when it changes, the webhook's health.
    async fn record(
        &self,
        delivery: &DeliveryRecord,
        webhook: &WebhookRecord,
        succeeded: bool,
        gone: bool,
    ) -> Result<(), StoreError> {
        if succeeded && webhook.consecutive_failures == 0 {
            return self.save(delivery, None).await;
        }
        let _writes = self.writes.lock().await;
        // The cached record may have changed while the attempt ran.
        let Some(current) = self.get(&webhook.webhook_id) else {
            return self.save(delivery, None).await;
        };
        let mut next = (*current).clone();
        if succeeded {
            next.consecutive_failures = 0;
        } else {
            next.consecutive_failures = next.consecutive_failures.saturating_add(1);
            if gone {
                next.enabled = false;
                next.disabled_reason = Some("the endpoint answered HTTP 410 Gone".into());
            } else if next.enabled && next.consecutive_failures >= self.config.disable_after_failures {
                next.enabled = false;
                next.disabled_reason =
                    Some(format!("disabled after {} consecutive failed attempts", next.consecutive_failures));
            }
        }
        next.updated_at = delivery.updated_at;
        let health = WebhookHealth {
            webhook_id: next.webhook_id.clone(),
            enabled: next.enabled,
            disabled_reason: next.disabled_reason.clone(),
            consecutive_failures: next.consecutive_failures,
            updated_at: next.updated_at,
        };
        // The cached webhook changes first, so whoever reads the attempt in the log also finds
        // the webhook as the attempt left it; it is put back if the write fails (nobody else
        // changes it meanwhile: `_writes` is held).
        let (disabled, reason) = (current.enabled && !next.enabled, next.disabled_reason.clone());
        self.put(next);
        if let Err(e) = self.save(delivery, Some(health)).await {
            self.put((*current).clone());
            return Err(e);
        }
        if disabled {
            tracing::warn!(webhook_id = %webhook.webhook_id, app_id = %webhook.app_id, reason = ?reason, "webhook disabled");
        }
        Ok(())
    }

    /// Hands an attempt's outcome to the writer and waits until it is on disk.
    async fn save(&self, delivery: &DeliveryRecord, health: Option<WebhookHealth>) -> Result<(), StoreError> {
        let (done, written) = tokio::sync::oneshot::channel();
        let attempt = AttemptRecord { delivery: delivery.clone(), health };
        self.writes_tx
            .send(PendingWrite { attempt, done })
            .map_err(|_| StoreError::Unavailable("shutting down".into()))?;
        written.await.map_err(|_| StoreError::Unavailable("shutting down".into()))?
    }

    /// Writes attempt outcomes in batches: one transaction (and one trip to the blocking pool)
    /// for all that finished while the previous batch was written.
    pub(super) async fn run_writer(self: Arc<Self>, shutdown: CancellationToken) {
        let mut rx = self.writes_rx.lock().await;
        let mut batch = Vec::with_capacity(WRITE_BATCH);
        loop {
            let received = tokio::select! {
                n = rx.recv_many(&mut batch, WRITE_BATCH) => n,
                _ = shutdown.cancelled() => return,
            };
            if received == 0 {
                return;
            }
            let (attempts, waiters): (Vec<AttemptRecord>, Vec<_>) =
                batch.drain(..).map(|w| (w.attempt, w.done)).unzip();
            let result = self.store.save_attempts(&attempts).await;
            for done in waiters {
                let _ = done.send(match &result {
                    Ok(()) => Ok(()),
                    Err(e) => Err(StoreError::Unavailable(e.to_string())),
                });
            }
        }
    }

    /// POSTs the delivery's body, signed, and reads at most [`RESPONSE_CAP`] bytes of the answer.
    async fn send(&self, webhook: &WebhookRecord, delivery: &DeliveryRecord) -> Answer {
        // Names are checked by the resolver; literal addresses never reach it.
        let url = match super::target::parse_url(&webhook.url, self.dispatch.allow_private) {
            Ok(url) => url,
            Err(e) => return Answer::Error(format!("target refused: url {e}")),
        };
        let request = self
            .dispatch
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("X-Roomcast-Webhook-Id", &webhook.webhook_id)
            .header("X-Roomcast-Delivery-Id", &delivery.delivery_id);
        let request = match webhook.format {
            WebhookFormat::Roomcast => {
                let timestamp = now_ms() / 1000;
                let signature = super::signature(&webhook.secret, timestamp, delivery.body.as_bytes());
                request
                    .header("X-Roomcast-Timestamp", timestamp.to_string())
                    .header("X-Roomcast-Signature", format!("sha256={signature}"))
            }
            // Pusher's validators check the body against the app's key and secret.
            WebhookFormat::Pusher => {
                let Some(secret) = self.app_secret(&webhook.app_id) else {
                    return Answer::Error("the app's secret is not known on this node".into());
                };
                request
                    .header("X-Pusher-Key", &webhook.app_id)
                    .header("X-Pusher-Signature", super::pusher_signature(&secret, delivery.body.as_bytes()))
            }
        };
        let request = request.body(delivery.body.clone());
        let mut response = match request.send().await {
            Ok(r) => r,
            Err(e) => return Answer::Error(describe(&e)),
        };
        let status = response.status().as_u16();
        let mut body = Vec::new();
        while body.len() < RESPONSE_CAP {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    body.extend_from_slice(&chunk[..chunk.len().min(RESPONSE_CAP - body.len())])
                }
                Ok(None) => break,
                // The status already decided the outcome; a broken body does not change it.
                Err(_) => break,
            }
        }
        Answer::Status(status, quote(&body))
    }
}

/// A one-line reason for a failed request, with the root cause (refused, timed out, DNS).
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let mut cause = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    if cause.is_empty() { kind.to_owned() } else { format!("{kind}: {cause}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dispatcher(per_webhook: usize) -> Dispatcher {
        let config = WebhooksConfig { max_in_flight_per_webhook: per_webhook, ..WebhooksConfig::default() };
        Dispatcher::new(&config).unwrap()
    }

    #[test]
    fn attempts_start_in_due_order_and_not_before() {
        let d = dispatcher(8);
        d.schedule("d3", "w1", 300);
        d.schedule("d1", "w2", 100);
        d.schedule("d2", "w1", 200);
        assert_eq!(d.next_due(50), Err(Some(Duration::from_millis(50))), "nothing is due yet");
        assert_eq!(d.next_due(250), Ok(("d1".into(), "w2".into())));
        assert_eq!(d.next_due(250), Ok(("d2".into(), "w1".into())));
        assert_eq!(d.next_due(250), Err(Some(Duration::from_millis(50))));
        assert_eq!(d.next_due(300), Ok(("d3".into(), "w1".into())));
        assert_eq!(d.next_due(300), Err(None), "the schedule is empty");
    }

    #[test]
    fn a_webhook_has_at_most_its_share_in_flight_and_the_next_waits_its_turn() {
        let d = dispatcher(1);
        d.schedule("a1", "slow", 0);
        d.schedule("a2", "slow", 1);
        d.schedule("b1", "other", 2);
        assert_eq!(d.next_due(10), Ok(("a1".into(), "slow".into())));
        // a2 is due but its webhook's one slot is taken: it waits, and b1 goes past it.
        assert_eq!(d.next_due(10), Ok(("b1".into(), "other".into())));
        assert_eq!(d.next_due(10), Err(None));
        assert_eq!(d.queued(), 1, "a2 waits for a1");
        d.finished("a1", "slow");
        let (next, _) = d.next_due(now_ms()).unwrap();
        assert_eq!(next, "a2", "a1's end lets a2 go");
        d.finished("a2", "slow");
        d.finished("b1", "other");
        assert_eq!(d.queued(), 0);
        assert!(d.lock().per_webhook.is_empty(), "idle webhooks leave no entry behind");
    }

    #[test]
    fn a_delivery_in_flight_is_not_started_twice() {
        let d = dispatcher(4);
        d.schedule("d1", "w", 0);
        d.schedule("d1", "w", 0);
        assert_eq!(d.next_due(1), Ok(("d1".into(), "w".into())));
        assert_eq!(d.next_due(1), Err(None), "the second entry of d1 is dropped");
    }

    #[test]
    fn fresh_deliveries_keep_their_body_until_the_first_attempt() {
        let d = dispatcher(4);
        let mut delivery = crate::webhooks::new_delivery(
            &WebhookRecord {
                webhook_id: "wh_1".into(),
                app_id: "app".into(),
                url: "http://127.0.0.1:1/".into(),
                secret: "s".into(),
                events: vec!["*".into()],
                enabled: true,
                disabled_reason: None,
                consecutive_failures: 0,
                format: Default::default(),
                created_at: 0,
                updated_at: 0,
            },
            "e",
            None,
            serde_json::value::RawValue::NULL,
            0,
            5,
        );
        delivery.next_retry_at = None;
        d.schedule_fresh(&delivery);
        assert_eq!(d.next_due(10), Ok((delivery.delivery_id.clone(), "wh_1".into())));
        assert!(d.take_fresh(&delivery.delivery_id).is_some());
        assert!(d.take_fresh(&delivery.delivery_id).is_none(), "taken once");
    }

    #[test]
    fn retry_delays_vary_within_a_fifth_and_quotes_are_short_and_clean() {
        for _ in 0..200 {
            let j = jittered(1000);
            assert!((800..=1200).contains(&j), "{j}");
        }
        assert_eq!(jittered(3), 3);
        let body = format!("  \u{7}oops{}", "x".repeat(500));
        let q = quote(body.as_bytes());
        assert!(q.starts_with("oops") && q.chars().count() <= QUOTE_CHARS, "{q}");
    }
}

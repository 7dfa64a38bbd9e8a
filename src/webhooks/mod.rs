//! Webhooks (DESIGN §6): the cache of registered endpoints, the matching of hub events against
//! them, and the durable delivery pipeline.
//!
//! The fan-out path only pays for a map lookup: an inline sink matches each hub event against
//! the app's webhooks and, on a match, offers it to a bounded intake queue (a full queue drops
//! it and counts `outcome="dropped"`). The intake task turns matched events into delivery
//! records, writes them to the store in batches, and only then hands them to the
//! [`dispatch`] scheduler, so every delivery that was ever scheduled is on disk: a restart
//! resumes the pending ones (at-least-once; the delivery id lets receivers deduplicate).

pub mod dispatch;
pub mod target;

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use hmac::{Hmac, Mac};
use serde::Serialize;
use serde_json::value::RawValue;
use sha2::Sha256;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::analytics::Analytics;
use crate::clock::now_ms;
use crate::config::WebhooksConfig;
use crate::hub::events::{HubEvent, PublishKind, Sender};
use crate::metrics::{WebhookMetrics, WebhookOutcome};
use crate::store::{
    AttemptRecord, DeliveryRecord, DeliveryStatus, Store, StoreError, WebhookFormat, WebhookRecord,
};

/// The event name of `POST /api/webhooks/:id/test` deliveries.
pub const PING_EVENT: &str = "ping";

/// The system events a webhook can ask for besides publication names.
pub const SYSTEM_EVENTS: [&str; 4] = ["room-occupied", "room-vacated", "user-joined", "user-left"];

/// Most overdue deliveries claimed at once.
const CLAIM_BATCH: usize = 1000;

/// Most matched events written to the store in one transaction.
const INTAKE_BATCH: usize = 256;

/// Most events in one Pusher-format delivery.
const PUSHER_BATCH: usize = 100;

/// An event that matched at least one webhook, waiting to become deliveries.
#[derive(Debug)]
struct Matched {
    app_id: crate::domain::AppId,
    event: String,
    room: Option<String>,
    data: Arc<RawValue>,
    timestamp: i64,
    /// `System` for the hub's own events (occupied, vacated, joined, left).
    kind: PublishKind,
    /// A client event's sender.
    sender: Option<Sender>,
}

/// Says an app's secret, which signs Pusher-format deliveries; `None` for an unknown app.
pub type AppSecrets = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

pub use crate::redis_conn::install_tls_provider;

/// `HMAC-SHA256(secret, "{timestamp}.{body}")` as lower-case hex: the `X-Roomcast-Signature`
/// value after `sha256=`.
pub fn signature(secret: &str, timestamp_s: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(timestamp_s.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    crate::domain::hex(&mac.finalize().into_bytes())
}

/// `HMAC-SHA256(app secret, body)` as lower-case hex: Pusher's `X-Pusher-Signature`.
pub fn pusher_signature(app_secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(app_secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(body);
    crate::domain::hex(&mac.finalize().into_bytes())
}

/// Whether `s` has the form of a webhook id: `wh_` and 16 base62 characters.
pub fn is_webhook_id(s: &str) -> bool {
    s.len() == 19 && s.starts_with("wh_") && s[3..].bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Whether `webhook` wants `event` (of `kind`). A Pusher-format webhook gets what Pusher sends
/// (channel existence, presence, client events; never broadcasts) and also takes Pusher's
/// names in its `events`.
fn wants(webhook: &WebhookRecord, event: &str, kind: PublishKind) -> bool {
    let listed = |name: &str| webhook.events.iter().any(|e| e == "*" || e == name);
    webhook.enabled
        && match webhook.format {
            WebhookFormat::Roomcast => listed(event),
            WebhookFormat::Pusher => pusher_name(event, kind).is_some_and(|p| listed(event) || listed(p)),
        }
}

/// Pusher's webhook event name for a hub event; `None` for what Pusher does not send.
fn pusher_name(event: &str, kind: PublishKind) -> Option<&'static str> {
    match (kind, event) {
        (PublishKind::Client, _) => Some("client_event"),
        (PublishKind::System, "room-occupied") => Some("channel_occupied"),
        (PublishKind::System, "room-vacated") => Some("channel_vacated"),
        (PublishKind::System, "user-joined") => Some("member_added"),
        (PublishKind::System, "user-left") => Some("member_removed"),
        _ => None,
    }
}

/// One event of a Pusher-format body.
fn pusher_event(m: &Matched) -> Option<serde_json::Value> {
    let name = pusher_name(&m.event, m.kind)?;
    let mut event = serde_json::Map::new();
    event.insert("name".into(), name.into());
    event.insert("channel".into(), m.room.clone().into());
    match m.kind {
        PublishKind::Client => {
            event.insert("event".into(), m.event.clone().into());
            event.insert("data".into(), crate::pusher::data_string(&m.data).into());
            if let Some(sender) = &m.sender {
                event.insert("socket_id".into(), sender.connection_id.to_string().into());
                if let (Some(user), true) =
                    (&sender.user_id, m.room.as_deref().is_some_and(|r| r.starts_with("presence-")))
                {
                    event.insert("user_id".into(), user.to_string().into());
                }
            }
        }
        _ => {
            if let Ok(member) = serde_json::from_str::<serde_json::Value>(m.data.get())
                && let Some(user_id) = member.get("user_id")
            {
                event.insert("user_id".into(), user_id.clone());
            }
        }
    }
    Some(serde_json::Value::Object(event))
}

/// A new delivery id: `d`, the creation time in 12 hex digits, 10 random base62 characters, so
/// ids sort by creation time.
fn delivery_id(now: i64) -> String {
    format!("{}{}", crate::store::delivery_id_prefix(now), crate::auth::random_base62(10))
}

/// The delivery body, serialized once; every attempt sends these exact bytes.
#[derive(Serialize)]
struct Body<'a> {
    id: &'a str,
    app_id: &'a str,
    event: &'a str,
    room: Option<&'a str>,
    data: &'a RawValue,
    timestamp: i64,
}

/// A new pending delivery of `event` to `webhook`.
pub fn new_delivery(
    webhook: &WebhookRecord,
    event: &str,
    room: Option<&str>,
    data: &RawValue,
    timestamp: i64,
    now: i64,
) -> DeliveryRecord {
    let id = delivery_id(now);
    let body = match webhook.format {
        WebhookFormat::Roomcast => {
            let body = Body { id: &id, app_id: &webhook.app_id, event, room, data, timestamp };
            serde_json::to_string(&body).expect("strings and raw JSON always serialize")
        }
        // A ping (the only event sent this way to a Pusher-format webhook) is an empty batch.
        WebhookFormat::Pusher => pusher_body(now, Vec::new()),
    };
    delivery_record(webhook, id, event, room, body, now)
}

/// Pusher's webhook body: `{"time_ms","events"}`.
fn pusher_body(time_ms: i64, events: Vec<serde_json::Value>) -> String {
    serde_json::json!({ "time_ms": time_ms, "events": events }).to_string()
}

/// A Pusher-format delivery of `events` (at most [`PUSHER_BATCH`]) to `webhook`: its log shows
/// the event's name and channel when there is one, `batch` otherwise.
fn pusher_delivery(webhook: &WebhookRecord, events: Vec<serde_json::Value>, now: i64) -> DeliveryRecord {
    let one = (events.len() == 1).then(|| &events[0]);
    let name = one.and_then(|e| e["name"].as_str()).unwrap_or("batch").to_owned();
    let channel = one.and_then(|e| e["channel"].as_str()).map(str::to_owned);
    delivery_record(webhook, delivery_id(now), &name, channel.as_deref(), pusher_body(now, events), now)
}

fn delivery_record(
    webhook: &WebhookRecord,
    id: String,
    event: &str,
    room: Option<&str>,
    body: String,
    now: i64,
) -> DeliveryRecord {
    DeliveryRecord {
        delivery_id: id,
        webhook_id: webhook.webhook_id.clone(),
        app_id: webhook.app_id.clone(),
        event: event.to_owned(),
        room: room.map(str::to_owned),
        body,
        status: DeliveryStatus::Pending,
        attempts: 0,
        step: 0,
        response_code: None,
        latency_ms: None,
        error: None,
        next_retry_at: Some(now),
        created_at: now,
        updated_at: now,
        attempt_log: Vec::new(),
    }
}

/// The webhook service: registered endpoints (cached from the store), intake and dispatch.
pub struct Webhooks {
    config: WebhooksConfig,
    store: Arc<dyn Store>,
    by_id: DashMap<String, Arc<WebhookRecord>>,
    /// Each app's webhooks, for matching; rebuilt for an app when one of its webhooks changes.
    by_app: DashMap<Arc<str>, Arc<[Arc<WebhookRecord>]>>,
    intake: mpsc::Sender<Matched>,
    intake_rx: tokio::sync::Mutex<mpsc::Receiver<Matched>>,
    metrics: WebhookMetrics,
    analytics: Arc<Analytics>,
    dispatch: dispatch::Dispatcher,
    /// Callers of `…/test` waiting for the first attempt of their ping.
    waiters: DashMap<String, oneshot::Sender<DeliveryRecord>>,
    /// Serializes webhook record writes with the API's (the server's `writes` lock).
    writes: Arc<tokio::sync::Mutex<()>>,
    /// Attempt outcomes on their way to the store (at most `max_in_flight` at once: each
    /// attempt waits for its write).
    writes_tx: mpsc::UnboundedSender<dispatch::PendingWrite>,
    writes_rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<dispatch::PendingWrite>>,
    /// In a cluster: Redis, where a node takes a short lease on a delivery before an attempt, so
    /// one node at a time makes it, and from which overdue deliveries are claimed.
    leases: Option<crate::redis_conn::Commands>,
    /// Apps' secrets, for Pusher-format deliveries (set once the app service exists).
    app_secrets: std::sync::OnceLock<AppSecrets>,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks").field("webhooks", &self.by_id.len()).finish_non_exhaustive()
    }
}

impl Webhooks {
    /// The service with `webhooks` cached; nothing runs until [`Webhooks::start`].
    pub fn new(
        config: WebhooksConfig,
        store: Arc<dyn Store>,
        webhooks: Vec<WebhookRecord>,
        metrics: WebhookMetrics,
        analytics: Arc<Analytics>,
        writes: Arc<tokio::sync::Mutex<()>>,
        leases: Option<crate::redis_conn::Commands>,
    ) -> Result<Self, String> {
        let (intake, intake_rx) = mpsc::channel(config.queue_capacity);
        let dispatch = dispatch::Dispatcher::new(&config)?;
        let (writes_tx, writes_rx) = mpsc::unbounded_channel();
        let service = Self {
            config,
            store,
            by_id: DashMap::new(),
            by_app: DashMap::new(),
            intake,
            intake_rx: tokio::sync::Mutex::new(intake_rx),
            metrics,
            analytics,
            dispatch,
            waiters: DashMap::new(),
            writes,
            writes_tx,
            writes_rx: tokio::sync::Mutex::new(writes_rx),
            leases,
            app_secrets: std::sync::OnceLock::new(),
        };
        service.replace_all(webhooks);
        Ok(service)
    }

    /// Where Pusher-format deliveries find their app's secret; the first call wins.
    pub fn use_app_secrets(&self, secrets: AppSecrets) {
        let _ = self.app_secrets.set(secrets);
    }

    /// An app's secret, when it is known.
    fn app_secret(&self, app_id: &str) -> Option<String> {
        self.app_secrets.get().and_then(|of| of(app_id))
    }

    /// The settings in force.
    pub fn config(&self) -> &WebhooksConfig {
        &self.config
    }

    /// One webhook.
    pub fn get(&self, webhook_id: &str) -> Option<Arc<WebhookRecord>> {
        self.by_id.get(webhook_id).map(|w| w.clone())
    }

    /// An app's webhooks, oldest first.
    pub fn of_app(&self, app_id: &str) -> Vec<Arc<WebhookRecord>> {
        self.by_app.get(app_id).map(|l| l.to_vec()).unwrap_or_default()
    }

    /// Caches a created or changed webhook.
    pub fn put(&self, webhook: WebhookRecord) {
        let app_id = webhook.app_id.clone();
        self.by_id.insert(webhook.webhook_id.clone(), Arc::new(webhook));
        self.reindex(&app_id);
    }

    /// Caches a webhook read from the store unless the cache holds a version at least as new.
    pub fn put_newer(&self, webhook: WebhookRecord) {
        if self.get(&webhook.webhook_id).is_none_or(|cached| cached.updated_at < webhook.updated_at) {
            self.put(webhook);
        }
    }

    /// Forgets a deleted webhook.
    pub fn remove(&self, webhook_id: &str) {
        if let Some((_, w)) = self.by_id.remove(webhook_id) {
            self.reindex(&w.app_id);
        }
    }

    /// The write lock shared with apps and keys: held by a caller that reads, checks and then
    /// writes.
    pub async fn writing(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.writes.lock().await
    }

    /// Registers a webhook. The caller holds [`Webhooks::writing`].
    pub async fn create(&self, record: WebhookRecord) -> Result<(), StoreError> {
        self.store.insert_webhook(&record).await?;
        tracing::info!(app_id = %record.app_id, webhook_id = %record.webhook_id, "webhook registered");
        self.put(record);
        Ok(())
    }

    /// The webhook as the store has it (another node may have changed it a moment ago).
    pub async fn stored(&self, webhook_id: &str) -> Result<Option<WebhookRecord>, StoreError> {
        self.store.webhook(webhook_id).await
    }

    /// Writes a changed webhook; one being enabled again gets its waiting deliveries resumed.
    /// The caller holds [`Webhooks::writing`].
    pub async fn update(&self, next: WebhookRecord, enabling: bool) -> Result<(), StoreError> {
        self.store.update_webhook(&next).await?;
        let id = next.webhook_id.clone();
        self.put(next);
        if enabling {
            self.resume(&id).await?;
        }
        Ok(())
    }

    /// Deletes a webhook. The caller holds [`Webhooks::writing`].
    pub async fn delete(&self, webhook: &WebhookRecord) -> Result<(), StoreError> {
        self.store.delete_webhook(&webhook.webhook_id).await?;
        self.remove(&webhook.webhook_id);
        tracing::info!(app_id = %webhook.app_id, webhook_id = %webhook.webhook_id, "webhook deleted");
        Ok(())
    }

    /// A page of a webhook's deliveries, newest first, after the delivery `cursor`.
    pub async fn deliveries(
        &self,
        webhook_id: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        self.store.deliveries(webhook_id, cursor, limit).await
    }

    /// One delivery.
    pub async fn delivery(&self, delivery_id: &str) -> Result<Option<DeliveryRecord>, StoreError> {
        self.store.delivery(delivery_id).await
    }

    /// Replaces the cache with the store's contents.
    pub fn replace_all(&self, webhooks: Vec<WebhookRecord>) {
        self.by_id.clear();
        for w in webhooks {
            self.by_id.insert(w.webhook_id.clone(), Arc::new(w));
        }
        let apps: std::collections::BTreeSet<String> = self.by_id.iter().map(|w| w.app_id.clone()).collect();
        self.by_app.retain(|app, _| apps.contains(&**app));
        for app in apps {
            self.reindex(&app);
        }
    }

    fn reindex(&self, app_id: &str) {
        let mut list: Vec<Arc<WebhookRecord>> =
            self.by_id.iter().filter(|w| w.app_id == app_id).map(|w| w.value().clone()).collect();
        list.sort_by(|a, b| (a.created_at, &a.webhook_id).cmp(&(b.created_at, &b.webhook_id)));
        if list.is_empty() {
            self.by_app.remove(app_id);
        } else {
            self.by_app.insert(Arc::from(app_id), list.into());
        }
    }

    /// Whether any enabled webhook of `app_id` exists: then publications carry their data.
    pub fn app_has_webhooks(&self, app_id: &str) -> bool {
        self.by_app.get(app_id).is_some_and(|l| l.iter().any(|w| w.enabled))
    }

    /// Inline on every hub event: a map lookup, and on a match a non-blocking offer to the
    /// intake queue.
    pub fn observe(&self, event: &HubEvent) {
        let system = PublishKind::System;
        let (app_id, name, room, kind): (&crate::domain::AppId, &str, _, _) = match event {
            HubEvent::Published {
                room,
                event,
                kind: kind @ (PublishKind::Broadcast | PublishKind::Client),
                ..
            } => (&room.app_id, event.as_str(), room, *kind),
            HubEvent::RoomOccupied { room } => (&room.app_id, "room-occupied", room, system),
            HubEvent::RoomVacated { room } => (&room.app_id, "room-vacated", room, system),
            HubEvent::MemberJoined { room, .. } => (&room.app_id, "user-joined", room, system),
            HubEvent::MemberLeft { room, .. } => (&room.app_id, "user-left", room, system),
            _ => return,
        };
        let Some(hooks) = self.by_app.get(&**app_id) else { return };
        if !hooks.iter().any(|w| wants(w, name, kind)) {
            return;
        }
        drop(hooks);
        let (data, timestamp) = match event {
            HubEvent::Published { data: Some(data), timestamp, .. } => (data.clone(), *timestamp),
            HubEvent::MemberJoined { user_id, .. } | HubEvent::MemberLeft { user_id, .. } => {
                let data = serde_json::to_string(&serde_json::json!({ "user_id": user_id }))
                    .expect("a string map serializes");
                (Arc::from(RawValue::from_string(data).expect("valid JSON")), now_ms())
            }
            HubEvent::Published { data: None, .. } => {
                // The webhook was created between the payload check and now; the next event of
                // this app carries its data.
                tracing::debug!(app_id = %app_id, event = name, "publication without data skipped");
                return;
            }
            _ => (Arc::from(RawValue::NULL.to_owned()), now_ms()),
        };
        let sender = match event {
            HubEvent::Published { sender, .. } => sender.clone(),
            _ => None,
        };
        let matched = Matched {
            app_id: app_id.clone(),
            event: name.to_owned(),
            room: Some(room.room.to_string()),
            data,
            timestamp,
            kind,
            sender,
        };
        if let Err(mpsc::error::TrySendError::Full(m)) = self.intake.try_send(matched) {
            self.metrics.outcome(WebhookOutcome::Dropped).increment(1);
            tracing::warn!(app_id = %m.app_id, event = %m.event, "webhook intake queue full; event dropped");
        }
    }

    /// Loads the deliveries waiting in the store and runs intake and dispatch until `shutdown`.
    pub async fn start(
        self: &Arc<Self>,
        shutdown: CancellationToken,
        tracker: tokio_util::task::TaskTracker,
    ) {
        match self.store.due_deliveries(None).await {
            Ok(due) => {
                if !due.is_empty() {
                    tracing::info!(deliveries = due.len(), "resuming pending webhook deliveries");
                }
                self.dispatch.schedule_all(due);
            }
            Err(e) => tracing::error!(error = %e, "cannot load pending webhook deliveries"),
        }
        tracker.spawn(self.clone().run_writer(shutdown.clone()));
        tracker.spawn(self.clone().run_intake(shutdown.clone()));
        tracker.spawn(self.clone().run_dispatch(shutdown.clone(), tracker.clone()));
        if self.leases.is_some() {
            tracker.spawn(self.clone().claim_overdue(shutdown.clone()));
        }
        tracker.spawn(self.clone().prune_log(shutdown));
    }

    /// In a cluster, every half of `webhooks.claim_overdue_after_ms`: schedules deliveries
    /// overdue by more than that (their node stopped, or is far behind); the lease taken before
    /// each attempt keeps two nodes from sending one delivery at once.
    async fn claim_overdue(self: Arc<Self>, shutdown: CancellationToken) {
        let overdue = Duration::from_millis(self.config.claim_overdue_after_ms);
        let mut tick = tokio::time::interval(overdue / 2);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let before = now_ms() - overdue.as_millis() as i64;
            match self.store.overdue_deliveries(before, CLAIM_BATCH).await {
                Ok(due) if due.is_empty() => {}
                Ok(due) => {
                    tracing::info!(deliveries = due.len(), "claiming overdue webhook deliveries");
                    self.dispatch.schedule_all(due);
                }
                Err(e) => tracing::warn!(error = %e, "cannot look for overdue webhook deliveries"),
            }
        }
    }

    async fn run_intake(self: Arc<Self>, shutdown: CancellationToken) {
        let mut rx = self.intake_rx.lock().await;
        let mut batch = Vec::with_capacity(INTAKE_BATCH);
        loop {
            batch.clear();
            let received = tokio::select! {
                n = rx.recv_many(&mut batch, INTAKE_BATCH) => n,
                _ = shutdown.cancelled() => return,
            };
            if received == 0 {
                return;
            }
            let deliveries = self.deliveries_for(&batch);
            let mut wait = Duration::from_millis(100);
            while let Err(e) = self.persist(&deliveries).await {
                tracing::warn!(error = %e, deliveries = deliveries.len(), "cannot record webhook deliveries; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    // The final flush writes what is still queued; this batch gets one more try there.
                    _ = shutdown.cancelled() => {
                        if let Err(e) = self.persist(&deliveries).await {
                            tracing::error!(error = %e, deliveries = deliveries.len(), "webhook deliveries lost at shutdown: the store is unavailable");
                        }
                        return;
                    }
                }
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    }

    /// At shutdown, after every connection closed: records the matched events still queued, so
    /// the last `room-vacated` and `user-left` events are delivered after the restart.
    pub async fn flush_intake(&self) {
        let mut rx = self.intake_rx.lock().await;
        let mut batch = Vec::new();
        while let Ok(m) = rx.try_recv() {
            batch.push(m);
        }
        let deliveries = self.deliveries_for(&batch);
        if deliveries.is_empty() {
            return;
        }
        match self.store.insert_deliveries(&deliveries).await {
            Ok(()) => {
                tracing::info!(deliveries = deliveries.len(), "webhook deliveries recorded at shutdown")
            }
            Err(e) => {
                tracing::error!(error = %e, deliveries = deliveries.len(), "webhook deliveries lost at shutdown: the store is unavailable")
            }
        }
    }

    /// One delivery per matched event and webhook that wants it now; a Pusher-format webhook
    /// gets the batch's events for it together, up to [`PUSHER_BATCH`] per delivery.
    fn deliveries_for(&self, batch: &[Matched]) -> Vec<DeliveryRecord> {
        let now = now_ms();
        let mut out = Vec::with_capacity(batch.len());
        let mut batched: Vec<(Arc<WebhookRecord>, Vec<serde_json::Value>)> = Vec::new();
        for m in batch {
            let Some(hooks) = self.by_app.get(&*m.app_id).map(|l| l.clone()) else { continue };
            for w in hooks.iter().filter(|w| wants(w, &m.event, m.kind)) {
                match w.format {
                    WebhookFormat::Roomcast => {
                        out.push(new_delivery(w, &m.event, m.room.as_deref(), &m.data, m.timestamp, now))
                    }
                    WebhookFormat::Pusher => {
                        let Some(event) = pusher_event(m) else { continue };
                        match batched.iter_mut().find(|(b, _)| b.webhook_id == w.webhook_id) {
                            Some((_, events)) => events.push(event),
                            None => batched.push((w.clone(), vec![event])),
                        }
                    }
                }
            }
        }
        for (w, events) in batched {
            for chunk in events.chunks(PUSHER_BATCH) {
                out.push(pusher_delivery(&w, chunk.to_vec(), now));
            }
        }
        out
    }

    /// Writes new deliveries, then schedules them.
    async fn persist(&self, deliveries: &[DeliveryRecord]) -> Result<(), StoreError> {
        if deliveries.is_empty() {
            return Ok(());
        }
        self.store.insert_deliveries(deliveries).await?;
        for d in deliveries {
            self.dispatch.schedule_fresh(d);
        }
        Ok(())
    }

    /// Records a `ping` delivery to `webhook` and waits (up to the attempt timeout and a little
    /// more) for its first attempt; returns the delivery as it then stands.
    pub async fn ping(&self, webhook: &WebhookRecord) -> Result<DeliveryRecord, StoreError> {
        let now = now_ms();
        let data = serde_json::json!({ "webhook_id": webhook.webhook_id }).to_string();
        let data = RawValue::from_string(data).expect("valid JSON");
        let delivery = new_delivery(webhook, PING_EVENT, None, &data, now, now);
        let (tx, rx) = oneshot::channel();
        self.waiters.insert(delivery.delivery_id.clone(), tx);
        let persisted = self.persist(std::slice::from_ref(&delivery)).await;
        if let Err(e) = persisted {
            self.waiters.remove(&delivery.delivery_id);
            return Err(e);
        }
        let wait = Duration::from_secs(self.config.timeout_s + 2);
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(done)) => Ok(done),
            _ => {
                self.waiters.remove(&delivery.delivery_id);
                Ok(self.store.delivery(&delivery.delivery_id).await?.unwrap_or(delivery))
            }
        }
    }

    /// Requeues a final delivery for an attempt now, with a fresh retry schedule. `Ok(None)`
    /// when it is not final (it is already scheduled).
    pub async fn retry(&self, mut delivery: DeliveryRecord) -> Result<Option<DeliveryRecord>, StoreError> {
        if !delivery.status.is_final() {
            return Ok(None);
        }
        let now = now_ms();
        delivery.status = DeliveryStatus::Pending;
        delivery.step = 0;
        delivery.next_retry_at = Some(now);
        delivery.updated_at = now;
        let attempt = AttemptRecord { delivery: delivery.clone(), health: None };
        self.store.save_attempts(std::slice::from_ref(&attempt)).await?;
        self.dispatch.schedule_fresh(&delivery);
        Ok(Some(delivery))
    }

    /// Puts a re-enabled webhook's waiting deliveries back on the schedule.
    pub async fn resume(&self, webhook_id: &str) -> Result<(), StoreError> {
        let due = self.store.due_deliveries(Some(webhook_id)).await?;
        self.dispatch.schedule_all(due);
        Ok(())
    }

    /// Hourly: forgets final deliveries older than `log_retention_days`.
    async fn prune_log(self: Arc<Self>, shutdown: CancellationToken) {
        let every = Duration::from_secs(3600);
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let before = now_ms() - self.config.log_retention_days as i64 * 86_400_000;
            match self.store.prune_deliveries(before).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deliveries = n, "pruned old webhook deliveries"),
                Err(e) => tracing::warn!(error = %e, "cannot prune webhook deliveries"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pusher_format_webhooks_want_what_pusher_sends_by_either_name() {
        let hook = |events: &[&str]| WebhookRecord {
            webhook_id: "wh_1".into(),
            app_id: "app".into(),
            url: "http://127.0.0.1:1/".into(),
            secret: "s".into(),
            events: events.iter().map(|e| e.to_string()).collect(),
            enabled: true,
            disabled_reason: None,
            consecutive_failures: 0,
            format: WebhookFormat::Pusher,
            created_at: 0,
            updated_at: 0,
        };
        let all = hook(&["*"]);
        assert!(wants(&all, "client-x", PublishKind::Client));
        assert!(wants(&all, "room-occupied", PublishKind::System));
        assert!(!wants(&all, "news", PublishKind::Broadcast), "Pusher sends no webhook for a broadcast");
        let named = hook(&["member_added", "room-vacated"]);
        assert!(wants(&named, "user-joined", PublishKind::System), "Pusher's name");
        assert!(wants(&named, "room-vacated", PublishKind::System), "roomcast's name");
        assert!(!wants(&named, "client-x", PublishKind::Client));
        // printf '{"a":1}' | openssl dgst -sha256 -hmac secret
        assert_eq!(
            pusher_signature("secret", br#"{"a":1}"#),
            "aa9e2e3575f5d7098b6caccd790888c36d5fdb63342a73bada2d6a51747a8494"
        );
    }

    #[test]
    fn signature_matches_a_known_vector() {
        // printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac whsec_test
        assert_eq!(
            signature("whsec_test", 1_700_000_000, br#"{"a":1}"#),
            "38877139021993b830af32feea6e18a8da83eb2f6e49ee50bd9e4cf4ca4d3789"
        );
    }

    #[test]
    fn delivery_ids_sort_by_time() {
        let a = delivery_id(1_700_000_000_000);
        let b = delivery_id(1_700_000_000_001);
        assert!(a < b, "{a} < {b}");
        assert_eq!(a.len(), 23);
    }
}

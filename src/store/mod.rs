//! Durable records (apps, API keys) behind the [`Store`] trait. The hot path never calls the
//! store: it reads the caches in [`crate::apps`], which are filled from here at start and updated
//! after every write.

pub mod redis;
pub mod sqlite;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// Whether an app accepts connections and API calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AppStatus {
    Enabled,
    Disabled,
}

impl AppStatus {
    /// The stored and wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AppStatus::Enabled => "enabled",
            AppStatus::Disabled => "disabled",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "enabled" => Some(AppStatus::Enabled),
            "disabled" => Some(AppStatus::Disabled),
            _ => None,
        }
    }
}

/// A tenant as stored. Times are milliseconds since the Unix epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppRecord {
    pub app_id: String,
    pub name: String,
    /// Signs client JWTs (HS256), so it is kept in clear: it must be usable, not just checkable.
    pub secret: String,
    pub status: AppStatus,
    pub allowed_domains: Vec<String>,
    pub rate_limit: u32,
    pub max_connections: u32,
    pub client_events: bool,
    /// Whether Pusher clients may connect (`/app/{app_id}`): their public channels need no
    /// credential, as on Pusher, so an app opts in.
    #[serde(default)]
    pub pusher_clients: bool,
    pub created_at: i64,
    pub updated_at: i64,
    pub deleted_at: Option<i64>,
    /// What its rooms retain for recovery; `None` takes the configured defaults.
    #[serde(default)]
    pub history: Option<Retention>,
}

/// How much history an app's rooms keep (DESIGN §11).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Retention {
    /// Events per room; 0 turns history off.
    pub size: u32,
    /// Seconds each event is kept after it was published.
    pub ttl_s: u32,
}

/// Admin keys act on every app; app keys on one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyKind {
    Admin,
    App,
}

impl KeyKind {
    /// The stored spelling, also the one in `rc_<kind>_` key prefixes.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Admin => "admin",
            KeyKind::App => "app",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "admin" => Some(KeyKind::Admin),
            "app" => Some(KeyKind::App),
            _ => None,
        }
    }
}

/// An API key as stored: only the SHA-256 of its secret, never the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub key_id: String,
    pub kind: KeyKind,
    /// `None` for admin keys.
    pub app_id: Option<String>,
    pub name: String,
    pub scopes: Vec<String>,
    /// Lower-case hex SHA-256 of the secret part.
    pub secret_hash: String,
    /// The app's primary key, the one `regenerate-api-key` replaces.
    pub primary: bool,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// What a webhook's deliveries look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    /// One event per delivery, signed with the webhook's secret (DESIGN §6).
    #[default]
    Roomcast,
    /// Pusher's batched body, signed with the app's secret (DESIGN §12).
    Pusher,
}

impl WebhookFormat {
    /// The name the API and the store use.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookFormat::Roomcast => "roomcast",
            WebhookFormat::Pusher => "pusher",
        }
    }

    /// The format named `s`.
    pub fn parse(s: &str) -> Option<Self> {
        [WebhookFormat::Roomcast, WebhookFormat::Pusher].into_iter().find(|f| f.as_str() == s)
    }
}

/// An app's webhook endpoint as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookRecord {
    pub webhook_id: String,
    pub app_id: String,
    pub url: String,
    /// Signs deliveries (HMAC-SHA256), so it is kept in clear like the app secret.
    pub secret: String,
    /// Event names, `"*"` for all.
    pub events: Vec<String>,
    pub enabled: bool,
    /// Why roomcast disabled it (HTTP 410, too many failures); `None` when enabled or disabled
    /// by the app.
    pub disabled_reason: Option<String>,
    /// Failed attempts since the last success.
    pub consecutive_failures: u32,
    /// Records written before formats existed are `roomcast`.
    #[serde(default)]
    pub format: WebhookFormat,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Not attempted yet.
    Pending,
    /// Attempted, failed, another attempt is scheduled.
    Retrying,
    Succeeded,
    /// Out of attempts (or refused with 410): the dead-letter list.
    Failed,
}

impl DeliveryStatus {
    /// The stored and wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Retrying => "retrying",
            DeliveryStatus::Succeeded => "succeeded",
            DeliveryStatus::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(DeliveryStatus::Pending),
            "retrying" => Some(DeliveryStatus::Retrying),
            "succeeded" => Some(DeliveryStatus::Succeeded),
            "failed" => Some(DeliveryStatus::Failed),
            _ => None,
        }
    }

    /// Whether no further attempt is scheduled.
    pub fn is_final(self) -> bool {
        matches!(self, DeliveryStatus::Succeeded | DeliveryStatus::Failed)
    }
}

/// One event for one webhook, with the outcome of its latest attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    /// Sorts by creation time: `d` + 12 hex digits of ms + 10 base62.
    pub delivery_id: String,
    pub webhook_id: String,
    pub app_id: String,
    pub event: String,
    pub room: Option<String>,
    /// The exact bytes every attempt sends (and signs).
    pub body: String,
    pub status: DeliveryStatus,
    /// Attempts made in all.
    pub attempts: u32,
    /// Attempts since the delivery was (re)queued; picks the next backoff delay.
    pub step: u32,
    pub response_code: Option<u16>,
    pub latency_ms: Option<u64>,
    pub error: Option<String>,
    /// When the next attempt is due (ms); `None` once final.
    pub next_retry_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    /// Every attempt so far, oldest first, at most [`ATTEMPT_LOG_MAX`] (the oldest go first).
    #[serde(default)]
    pub attempt_log: Vec<AttemptEntry>,
}

/// Most attempts a delivery's `attempt_log` keeps.
pub const ATTEMPT_LOG_MAX: usize = 20;

/// One attempt of a delivery, as its log keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptEntry {
    /// When the attempt ended (ms).
    pub at: i64,
    /// The HTTP status, when an answer came.
    pub response_code: Option<u16>,
    pub latency_ms: Option<u64>,
    /// Why it failed; `None` for a success.
    pub error: Option<String>,
}

impl DeliveryRecord {
    /// Appends the outcome the record now holds (`response_code`, `latency_ms`, `error` at
    /// `updated_at`) to its attempt log, dropping the oldest entries past [`ATTEMPT_LOG_MAX`].
    pub fn log_attempt(&mut self) {
        self.attempt_log.push(AttemptEntry {
            at: self.updated_at,
            response_code: self.response_code,
            latency_ms: self.latency_ms,
            error: self.error.clone(),
        });
        let excess = self.attempt_log.len().saturating_sub(ATTEMPT_LOG_MAX);
        self.attempt_log.drain(..excess);
    }
}

/// The part of a delivery id made at `t` that comes from the time: every id made before `t`
/// sorts lower (delivery ids sort by creation, which the stores' paging and pruning rely on).
pub fn delivery_id_prefix(t: i64) -> String {
    format!("d{:012x}", t.max(0))
}

/// A delivery waiting for an attempt, as the scheduler needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueDelivery {
    pub delivery_id: String,
    pub webhook_id: String,
    pub due_at: i64,
}

/// What an attempt changed in its webhook's health, written with the delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookHealth {
    pub webhook_id: String,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub consecutive_failures: u32,
    pub updated_at: i64,
}

/// One attempt's outcome, to be recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    pub delivery: DeliveryRecord,
    /// The webhook's health when the attempt changed it.
    pub health: Option<WebhookHealth>,
}

/// Everything the caches need, read in one go.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub apps: Vec<AppRecord>,
    pub keys: Vec<KeyRecord>,
    pub webhooks: Vec<WebhookRecord>,
}

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A record with that id already exists.
    #[error("already exists")]
    Conflict,
    /// The record to change does not exist.
    #[error("not found")]
    NotFound,
    /// The backing database failed or cannot be reached; retrying later may work.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Stored data does not parse; a bug or outside tampering.
    #[error("corrupt record: {0}")]
    Corrupt(String),
}

/// The counters of one app for one minute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MinuteCounts {
    pub connections_opened: u64,
    pub broadcasts: u64,
    pub client_events: u64,
    pub delivered: u64,
    /// Most connections open at once during the minute.
    pub peak_connections: u64,
    pub webhooks_delivered: u64,
    pub webhooks_failed: u64,
}

impl MinuteCounts {
    /// Adds `other`'s counters; the peak is the larger one.
    pub fn add(&mut self, other: &MinuteCounts) {
        self.connections_opened += other.connections_opened;
        self.broadcasts += other.broadcasts;
        self.client_events += other.client_events;
        self.delivered += other.delivered;
        self.peak_connections = self.peak_connections.max(other.peak_connections);
        self.webhooks_delivered += other.webhooks_delivered;
        self.webhooks_failed += other.webhooks_failed;
    }
}

/// One stored analytics minute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MinuteRow {
    pub app_id: String,
    /// Start of the minute, ms since the epoch.
    pub minute: i64,
    pub counts: MinuteCounts,
}

/// One saved bucket of an app's distinct users (a HyperLogLog sketch as JSON text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SketchRow {
    pub app_id: String,
    /// Bucket width, as analytics numbers them.
    pub level: u8,
    /// Start of the bucket, ms.
    pub start: i64,
    /// When the bucket is of no more use (ms); the store forgets it then.
    pub expires_at: i64,
    pub sketch: String,
}

/// When a user of an app was last seen (ms): how stores before the sketches kept distinct
/// users. Loaded once to fill the sketches, never written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    pub app_id: String,
    pub user_id: String,
    pub last_seen: i64,
}

/// Analytics rows to save or as loaded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AnalyticsRows {
    pub minutes: Vec<MinuteRow>,
    /// Distinct-user sketches.
    pub sketches: Vec<SketchRow>,
    /// Legacy per-user rows (load only); saving sketches erases them.
    pub users: Vec<UserRow>,
}

/// Durable storage of apps, keys, webhooks with their deliveries, and analytics.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// Every app (deleted ones too) and every key.
    async fn snapshot(&self) -> Result<Snapshot, StoreError>;
    /// One app, deleted or not; what a node reads when its cache does not know the app (or may
    /// hold an older version of it).
    async fn app(&self, app_id: &str) -> Result<Option<AppRecord>, StoreError>;
    /// One key, revoked or not.
    async fn key(&self, key_id: &str) -> Result<Option<KeyRecord>, StoreError>;
    /// One webhook.
    async fn webhook(&self, webhook_id: &str) -> Result<Option<WebhookRecord>, StoreError>;
    /// Creates an app with its primary key, atomically. `Conflict` when the id is taken.
    async fn insert_app(&self, app: &AppRecord, primary_key: &KeyRecord) -> Result<(), StoreError>;
    /// Replaces an existing app. `NotFound` when it does not exist.
    async fn update_app(&self, app: &AppRecord) -> Result<(), StoreError>;
    /// Creates a key. `Conflict` when the key id is taken.
    async fn insert_key(&self, key: &KeyRecord) -> Result<(), StoreError>;
    /// Writes changed keys and inserts new ones in one transaction.
    async fn save_keys(&self, keys: &[KeyRecord]) -> Result<(), StoreError>;
    /// Records when keys were last used.
    async fn touch_keys(&self, used: &[(String, i64)]) -> Result<(), StoreError>;
    /// Erases apps soft-deleted before `deleted_before` (ms) with all their keys, webhooks and analytics,
    /// freeing their ids; returns the erased app ids.
    async fn purge_deleted(&self, deleted_before: i64) -> Result<Vec<String>, StoreError>;
    /// Writes analytics minutes and distinct-user sketches (replacing rows with the same key),
    /// forgets minutes older than `forget_before` and sketches expired at `now` (ms), and the
    /// legacy per-user rows once sketches are written.
    async fn save_analytics(
        &self,
        rows: AnalyticsRows,
        forget_before: i64,
        now: i64,
    ) -> Result<(), StoreError>;
    /// Analytics minutes from `since` (ms) on, the sketches kept, and legacy user rows.
    async fn load_analytics(&self, since: i64) -> Result<AnalyticsRows, StoreError>;
    /// Creates a webhook. `Conflict` when the id is taken.
    async fn insert_webhook(&self, webhook: &WebhookRecord) -> Result<(), StoreError>;
    /// Replaces a webhook. `NotFound` when it does not exist.
    async fn update_webhook(&self, webhook: &WebhookRecord) -> Result<(), StoreError>;
    /// Erases a webhook and its delivery log. `NotFound` when it does not exist.
    async fn delete_webhook(&self, webhook_id: &str) -> Result<(), StoreError>;
    /// Records new deliveries, all or none.
    async fn insert_deliveries(&self, deliveries: &[DeliveryRecord]) -> Result<(), StoreError>;
    /// Writes deliveries after attempts (or a manual retry), each with its webhook's new health
    /// when given, in one transaction. Deliveries that are gone (their webhook was deleted) are
    /// skipped.
    async fn save_attempts(&self, attempts: &[AttemptRecord]) -> Result<(), StoreError>;
    /// One delivery.
    async fn delivery(&self, delivery_id: &str) -> Result<Option<DeliveryRecord>, StoreError>;
    /// A webhook's deliveries, newest first, those older than the `before` id only when given.
    async fn deliveries(
        &self,
        webhook_id: &str,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeliveryRecord>, StoreError>;
    /// Deliveries waiting for an attempt (pending or retrying), of one webhook or of all.
    async fn due_deliveries(&self, webhook_id: Option<&str>) -> Result<Vec<DueDelivery>, StoreError>;
    /// Forgets final deliveries last changed before `before` (ms); returns how many.
    async fn prune_deliveries(&self, before: i64) -> Result<usize, StoreError>;
    /// Waiting deliveries that were due before `due_before` (ms), at most `limit`, oldest first:
    /// in a cluster, what a node that stopped did not send.
    async fn overdue_deliveries(&self, due_before: i64, limit: usize)
    -> Result<Vec<DueDelivery>, StoreError>;
    /// A number that changes when another process wrote to the store, so caches can reload.
    async fn change_marker(&self) -> Result<u64, StoreError>;
    /// Cheap liveness probe for `/health`.
    async fn ping(&self) -> Result<(), StoreError>;
    /// The server secret `name`: the one stored, or `candidate`, stored now, when there is none
    /// (every node of a cluster ends up with the first one stored).
    async fn server_secret(&self, name: &str, candidate: &str) -> Result<String, StoreError>;
    /// Ends the dashboard session `session_id`, which would expire at `expires_at` (ms).
    async fn revoke_session(&self, session_id: &str, expires_at: i64) -> Result<(), StoreError>;
    /// Whether the dashboard session was ended.
    async fn session_revoked(&self, session_id: &str) -> Result<bool, StoreError>;
}

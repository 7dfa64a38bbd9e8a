//! The embedded store: one SQLite file in WAL mode, versioned migrations through
//! `PRAGMA user_version`, every call on the blocking pool so no runtime thread waits on disk.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};

mod schema;

use super::{
    AnalyticsRows, AppRecord, AppStatus, AttemptRecord, DeliveryRecord, DeliveryStatus, DueDelivery, KeyKind,
    KeyRecord, MinuteCounts, MinuteRow, SketchRow, Snapshot, Store, StoreError, UserRow, WebhookFormat,
    WebhookRecord,
};
use schema::migrate;

/// SQLite-backed [`Store`].
#[derive(Debug, Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

impl SqliteStore {
    /// Opens (creating when missing) the database file and applies pending migrations.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Unavailable(format!("cannot create {}: {e}", dir.display())))?;
        }
        let mut conn = Connection::open(path).map_err(unavailable)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(unavailable)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(unavailable)?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(unavailable)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(unavailable)?;
        migrate(&mut conn)?;
        Ok(Self { conn: Arc::new(Mutex::new(conn)) })
    }

    async fn with<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock poisons it; the connection itself is still sound
            // because every write runs in a transaction that rolls back on drop.
            let mut guard = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("store task failed: {e}")))?
    }
}

impl SqliteStore {
    /// The one row `sql` finds for `id`, parsed by `from_row`.
    async fn one<T: Send + 'static>(
        &self,
        sql: &'static str,
        id: &str,
        from_row: fn(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Option<T>, StoreError> {
        let id = id.to_owned();
        self.with(move |conn| {
            conn.prepare_cached(sql).and_then(|mut q| q.query_row([&id], from_row).optional()).map_err(|e| {
                match e {
                    rusqlite::Error::FromSqlConversionFailure(_, _, reason) => {
                        StoreError::Corrupt(reason.to_string())
                    }
                    other => unavailable(other),
                }
            })
        })
        .await
    }
}

fn unavailable(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn write_error(e: rusqlite::Error) -> StoreError {
    match e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
            StoreError::Conflict
        }
        other => unavailable(other),
    }
}

fn corrupt(what: &str, value: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        0,
        rusqlite::types::Type::Text,
        format!("bad {what}: {value:?}").into(),
    )
}

fn json_list(text: &str, what: &str) -> rusqlite::Result<Vec<String>> {
    serde_json::from_str(text).map_err(|_| corrupt(what, text))
}

fn json_column<T: serde::de::DeserializeOwned>(row: &Row<'_>, column: &str) -> rusqlite::Result<T> {
    let text: String = row.get(column)?;
    serde_json::from_str(&text).map_err(|_| corrupt(column, &text))
}

fn app_from_row(row: &Row<'_>) -> rusqlite::Result<AppRecord> {
    let status: String = row.get("status")?;
    let domains: String = row.get("allowed_domains")?;
    Ok(AppRecord {
        app_id: row.get("app_id")?,
        name: row.get("name")?,
        secret: row.get("secret")?,
        status: AppStatus::parse(&status).ok_or_else(|| corrupt("status", &status))?,
        allowed_domains: json_list(&domains, "allowed_domains")?,
        rate_limit: row.get("rate_limit")?,
        max_connections: row.get("max_connections")?,
        client_events: row.get("client_events")?,
        pusher_clients: row.get("pusher_clients")?,
        created_at: row.get("created_at")?,
        updated_at: row.get("updated_at")?,
        deleted_at: row.get("deleted_at")?,
        history: match row.get::<_, Option<String>>("history")? {
            Some(text) => Some(serde_json::from_str(&text).map_err(|_| corrupt("history", &text))?),
            None => None,
        },
    })
}

fn key_from_row(row: &Row<'_>) -> rusqlite::Result<KeyRecord> {
    let kind: String = row.get("kind")?;
    let scopes: String = row.get("scopes")?;
    Ok(KeyRecord {
        key_id: row.get("key_id")?,
        kind: KeyKind::parse(&kind).ok_or_else(|| corrupt("kind", &kind))?,
        app_id: row.get("app_id")?,
        name: row.get("name")?,
        scopes: json_list(&scopes, "scopes")?,
        secret_hash: row.get("secret_hash")?,
        primary: row.get("is_primary")?,
        created_at: row.get("created_at")?,
        expires_at: row.get("expires_at")?,
        last_used_at: row.get("last_used_at")?,
        revoked_at: row.get("revoked_at")?,
    })
}

fn to_json(list: &[String]) -> String {
    serde_json::to_string(list).expect("a list of strings always serializes")
}

const INSERT_APP: &str = "INSERT INTO apps (app_id, name, secret, status, allowed_domains, rate_limit,
                      max_connections, client_events, created_at, updated_at, deleted_at, history,
                      pusher_clients)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)";

/// Takes the same parameters as [`INSERT_APP`]; `created_at` (?9) never changes.
const UPDATE_APP: &str = "UPDATE apps SET name = ?2, secret = ?3, status = ?4, allowed_domains = ?5,
        rate_limit = ?6, max_connections = ?7, client_events = ?8, updated_at = ?10, deleted_at = ?11,
        history = ?12, pusher_clients = ?13
    WHERE app_id = ?1";

fn write_app(conn: &Connection, sql: &str, app: &AppRecord) -> rusqlite::Result<usize> {
    conn.execute(
        sql,
        params![
            app.app_id,
            app.name,
            app.secret,
            app.status.as_str(),
            to_json(&app.allowed_domains),
            app.rate_limit,
            app.max_connections,
            app.client_events,
            app.created_at,
            app.updated_at,
            app.deleted_at,
            app.history.map(|h| serde_json::to_string(&h).expect("two numbers serialize")),
            app.pusher_clients
        ],
    )
}

const INSERT_KEY: &str = "INSERT INTO api_keys (key_id, kind, app_id, name, scopes, secret_hash, is_primary,
                          created_at, expires_at, last_used_at, revoked_at)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";

/// Only the mutable columns change on conflict: a key's id, kind, app and hash never do.
const UPSERT_KEY: &str = "INSERT INTO api_keys (key_id, kind, app_id, name, scopes, secret_hash, is_primary,
                          created_at, expires_at, last_used_at, revoked_at)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
    ON CONFLICT(key_id) DO UPDATE SET name = excluded.name, scopes = excluded.scopes,
        is_primary = excluded.is_primary, expires_at = excluded.expires_at,
        last_used_at = excluded.last_used_at, revoked_at = excluded.revoked_at";

fn write_key(conn: &Connection, sql: &str, key: &KeyRecord) -> rusqlite::Result<usize> {
    conn.execute(
        sql,
        params![
            key.key_id,
            key.kind.as_str(),
            key.app_id,
            key.name,
            to_json(&key.scopes),
            key.secret_hash,
            key.primary,
            key.created_at,
            key.expires_at,
            key.last_used_at,
            key.revoked_at
        ],
    )
}

fn webhook_from_row(row: &Row<'_>) -> rusqlite::Result<WebhookRecord> {
    let events: String = row.get("events")?;
    let format: String = row.get("format")?;
    let format = WebhookFormat::parse(&format).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            format!("unknown webhook format {format:?}").into(),
        )
    })?;
    Ok(WebhookRecord {
        webhook_id: row.get("webhook_id")?,
        app_id: row.get("app_id")?,
        url: row.get("url")?,
        secret: row.get("secret")?,
        events: json_list(&events, "events")?,
        enabled: row.get("enabled")?,
        disabled_reason: row.get("disabled_reason")?,
        consecutive_failures: row.get("consecutive_failures")?,
        format,
        created_at: row.get("created_at")?,
        updated_at: row.get("updated_at")?,
    })
}

const INSERT_WEBHOOK: &str = "INSERT INTO webhooks (webhook_id, app_id, url, secret, events, enabled,
                          disabled_reason, consecutive_failures, created_at, updated_at, format)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";

/// Takes the same parameters as [`INSERT_WEBHOOK`]; id, app and `created_at` never change.
const UPDATE_WEBHOOK: &str = "UPDATE webhooks SET url = ?3, secret = ?4, events = ?5, enabled = ?6,
        disabled_reason = ?7, consecutive_failures = ?8, updated_at = ?10, format = ?11
    WHERE webhook_id = ?1 AND app_id = ?2 AND created_at = ?9";

fn write_webhook(conn: &Connection, sql: &str, w: &WebhookRecord) -> rusqlite::Result<usize> {
    conn.execute(
        sql,
        params![
            w.webhook_id,
            w.app_id,
            w.url,
            w.secret,
            to_json(&w.events),
            w.enabled,
            w.disabled_reason,
            w.consecutive_failures,
            w.created_at,
            w.updated_at,
            w.format.as_str()
        ],
    )
}

fn delivery_from_row(row: &Row<'_>) -> rusqlite::Result<DeliveryRecord> {
    let status: String = row.get("status")?;
    Ok(DeliveryRecord {
        delivery_id: row.get("delivery_id")?,
        webhook_id: row.get("webhook_id")?,
        app_id: row.get("app_id")?,
        event: row.get("event")?,
        room: row.get("room")?,
        body: row.get("body")?,
        status: DeliveryStatus::parse(&status).ok_or_else(|| corrupt("status", &status))?,
        attempts: row.get("attempts")?,
        step: row.get("step")?,
        response_code: row.get("response_code")?,
        latency_ms: row.get::<_, Option<i64>>("latency_ms")?.map(|v| v.max(0) as u64),
        error: row.get("error")?,
        next_retry_at: row.get("next_retry_at")?,
        created_at: row.get("created_at")?,
        updated_at: row.get("updated_at")?,
        attempt_log: json_column(row, "attempt_log")?,
    })
}

const INSERT_DELIVERY: &str = "INSERT INTO webhook_deliveries (delivery_id, webhook_id, app_id, event, room,
        body, status, attempts, step, response_code, latency_ms, error, next_retry_at, created_at, updated_at,
        attempt_log)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)";

/// Takes the same parameters as [`INSERT_DELIVERY`]; what was sent and when it was made never
/// change.
const UPDATE_DELIVERY: &str = "UPDATE webhook_deliveries SET status = ?7, attempts = ?8, step = ?9,
        response_code = ?10, latency_ms = ?11, error = ?12, next_retry_at = ?13, updated_at = ?15,
        attempt_log = ?16
    WHERE delivery_id = ?1 AND webhook_id = ?2";

fn write_delivery(conn: &Connection, sql: &str, d: &DeliveryRecord) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute(params![
        d.delivery_id,
        d.webhook_id,
        d.app_id,
        d.event,
        d.room,
        d.body,
        d.status.as_str(),
        d.attempts,
        d.step,
        d.response_code,
        d.latency_ms.map(|v| v as i64),
        d.error,
        d.next_retry_at,
        d.created_at,
        d.updated_at,
        serde_json::to_string(&d.attempt_log).expect("attempt entries always serialize")
    ])
}

#[async_trait]
impl Store for SqliteStore {
    async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        self.with(|conn| {
            let read = |conn: &Connection| -> rusqlite::Result<Snapshot> {
                let apps = conn
                    .prepare("SELECT * FROM apps ORDER BY app_id")?
                    .query_map([], app_from_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                let keys = conn
                    .prepare("SELECT * FROM api_keys ORDER BY created_at, key_id")?
                    .query_map([], key_from_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                let webhooks = conn
                    .prepare("SELECT * FROM webhooks ORDER BY created_at, webhook_id")?
                    .query_map([], webhook_from_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok(Snapshot { apps, keys, webhooks })
            };
            read(conn).map_err(|e| match e {
                rusqlite::Error::FromSqlConversionFailure(_, _, reason) => {
                    StoreError::Corrupt(reason.to_string())
                }
                other => unavailable(other),
            })
        })
        .await
    }

    async fn app(&self, app_id: &str) -> Result<Option<AppRecord>, StoreError> {
        self.one("SELECT * FROM apps WHERE app_id = ?1", app_id, app_from_row).await
    }

    async fn key(&self, key_id: &str) -> Result<Option<KeyRecord>, StoreError> {
        self.one("SELECT * FROM api_keys WHERE key_id = ?1", key_id, key_from_row).await
    }

    async fn webhook(&self, webhook_id: &str) -> Result<Option<WebhookRecord>, StoreError> {
        self.one("SELECT * FROM webhooks WHERE webhook_id = ?1", webhook_id, webhook_from_row).await
    }

    async fn insert_app(&self, app: &AppRecord, primary_key: &KeyRecord) -> Result<(), StoreError> {
        let app = app.clone();
        let key = primary_key.clone();
        self.with(move |conn| {
            let tx = conn.transaction().map_err(unavailable)?;
            write_app(&tx, INSERT_APP, &app).map_err(write_error)?;
            write_key(&tx, INSERT_KEY, &key).map_err(write_error)?;
            tx.commit().map_err(unavailable)
        })
        .await
    }

    async fn update_app(&self, app: &AppRecord) -> Result<(), StoreError> {
        let app = app.clone();
        self.with(move |conn| {
            let changed = write_app(conn, UPDATE_APP, &app).map_err(write_error)?;
            if changed == 0 { Err(StoreError::NotFound) } else { Ok(()) }
        })
        .await
    }

    async fn purge_deleted(&self, deleted_before: i64) -> Result<Vec<String>, StoreError> {
        self.with(move |conn| {
            let tx = conn.transaction().map_err(unavailable)?;
            let ids = tx
                .prepare("SELECT app_id FROM apps WHERE deleted_at IS NOT NULL AND deleted_at < ?1")
                .and_then(|mut q| {
                    q.query_map([deleted_before], |r| r.get(0))?.collect::<rusqlite::Result<Vec<String>>>()
                })
                .map_err(unavailable)?;
            for id in &ids {
                tx.execute("DELETE FROM webhook_deliveries WHERE app_id = ?1", [id]).map_err(write_error)?;
                tx.execute("DELETE FROM webhooks WHERE app_id = ?1", [id]).map_err(write_error)?;
                tx.execute("DELETE FROM api_keys WHERE app_id = ?1", [id]).map_err(write_error)?;
                tx.execute("DELETE FROM analytics_minutes WHERE app_id = ?1", [id]).map_err(write_error)?;
                tx.execute("DELETE FROM analytics_users WHERE app_id = ?1", [id]).map_err(write_error)?;
                tx.execute("DELETE FROM analytics_sketches WHERE app_id = ?1", [id]).map_err(write_error)?;
                tx.execute("DELETE FROM apps WHERE app_id = ?1", [id]).map_err(write_error)?;
            }
            tx.commit().map_err(unavailable)?;
            Ok(ids)
        })
        .await
    }

    async fn save_analytics(
        &self,
        rows: AnalyticsRows,
        forget_before: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        self.with(move |conn| {
            let tx = conn.transaction().map_err(unavailable)?;
            {
                let mut minute = tx
                    .prepare_cached(
                        "INSERT OR REPLACE INTO analytics_minutes VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                    )
                    .map_err(unavailable)?;
                for m in &rows.minutes {
                    let c = &m.counts;
                    minute
                        .execute(params![
                            m.app_id,
                            m.minute,
                            c.connections_opened as i64,
                            c.broadcasts as i64,
                            c.client_events as i64,
                            c.delivered as i64,
                            c.peak_connections as i64,
                            c.webhooks_delivered as i64,
                            c.webhooks_failed as i64
                        ])
                        .map_err(unavailable)?;
                }
                let mut sketch = tx
                    .prepare_cached("INSERT OR REPLACE INTO analytics_sketches VALUES (?1, ?2, ?3, ?4, ?5)")
                    .map_err(unavailable)?;
                for k in &rows.sketches {
                    sketch
                        .execute(params![k.app_id, k.level, k.start, k.expires_at, k.sketch])
                        .map_err(unavailable)?;
                }
            }
            tx.execute("DELETE FROM analytics_minutes WHERE minute < ?1", [forget_before]).map_err(unavailable)?;
            tx.execute("DELETE FROM analytics_sketches WHERE expires_at <= ?1", [now]).map_err(unavailable)?;
            if !rows.sketches.is_empty() {
                // The legacy rows were loaded into sketches at start; these now hold them.
                tx.execute("DELETE FROM analytics_users", []).map_err(unavailable)?;
            }
            tx.commit().map_err(unavailable)
        })
        .await
    }

    async fn load_analytics(&self, since: i64) -> Result<AnalyticsRows, StoreError> {
        self.with(move |conn| {
            let read = |conn: &Connection| -> rusqlite::Result<AnalyticsRows> {
                let minutes = conn
                    .prepare("SELECT * FROM analytics_minutes WHERE minute >= ?1")?
                    .query_map([since], |r| {
                        let n = |i: usize| r.get::<_, i64>(i).map(|v| v.max(0) as u64);
                        Ok(MinuteRow {
                            app_id: r.get(0)?,
                            minute: r.get(1)?,
                            counts: MinuteCounts {
                                connections_opened: n(2)?,
                                broadcasts: n(3)?,
                                client_events: n(4)?,
                                delivered: n(5)?,
                                peak_connections: n(6)?,
                                webhooks_delivered: n(7)?,
                                webhooks_failed: n(8)?,
                            },
                        })
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                let users = conn
                    .prepare("SELECT * FROM analytics_users WHERE last_seen >= ?1")?
                    .query_map([since], |r| {
                        Ok(UserRow { app_id: r.get(0)?, user_id: r.get(1)?, last_seen: r.get(2)? })
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                let sketches = conn
                    .prepare("SELECT app_id, level, start, expires_at, sketch FROM analytics_sketches")?
                    .query_map([], |r| {
                        Ok(SketchRow {
                            app_id: r.get(0)?,
                            level: r.get(1)?,
                            start: r.get(2)?,
                            expires_at: r.get(3)?,
                            sketch: r.get(4)?,
                        })
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok(AnalyticsRows { minutes, sketches, users })
            };
            read(conn).map_err(unavailable)
        })
        .await
    }

    async fn insert_key(&self, key: &KeyRecord) -> Result<(), StoreError> {
        let key = key.clone();
        self.with(move |conn| write_key(conn, INSERT_KEY, &key).map(drop).map_err(write_error)).await
    }

    async fn save_keys(&self, keys: &[KeyRecord]) -> Result<(), StoreError> {
        let keys = keys.to_vec();
        self.with(move |conn| {
            let tx = conn.transaction().map_err(unavailable)?;
            for key in &keys {
                write_key(&tx, UPSERT_KEY, key).map_err(write_error)?;
            }
            tx.commit().map_err(unavailable)
        })
        .await
    }

    async fn touch_keys(&self, used: &[(String, i64)]) -> Result<(), StoreError> {
        let used = used.to_vec();
        self.with(move |conn| {
            let tx = conn.transaction().map_err(unavailable)?;
            for (key_id, at) in &used {
                tx.execute(
                    "UPDATE api_keys SET last_used_at = max(coalesce(last_used_at, 0), ?2)
                     WHERE key_id = ?1",
                    params![key_id, at],
                )
                .map_err(unavailable)?;
            }
            tx.commit().map_err(unavailable)
        })
        .await
    }

    async fn insert_webhook(&self, webhook: &WebhookRecord) -> Result<(), StoreError> {
        let webhook = webhook.clone();
        self.with(move |conn| write_webhook(conn, INSERT_WEBHOOK, &webhook).map(drop).map_err(write_error))
            .await
    }

    async fn update_webhook(&self, webhook: &WebhookRecord) -> Result<(), StoreError> {
        let webhook = webhook.clone();
        self.with(move |conn| {
            let changed = write_webhook(conn, UPDATE_WEBHOOK, &webhook).map_err(write_error)?;
            if changed == 0 { Err(StoreError::NotFound) } else { Ok(()) }
        })
        .await
    }

    async fn delete_webhook(&self, webhook_id: &str) -> Result<(), StoreError> {
        let id = webhook_id.to_owned();
        self.with(move |conn| {
            let tx = conn.transaction().map_err(unavailable)?;
            tx.execute("DELETE FROM webhook_deliveries WHERE webhook_id = ?1", [&id]).map_err(write_error)?;
            let changed =
                tx.execute("DELETE FROM webhooks WHERE webhook_id = ?1", [&id]).map_err(write_error)?;
            if changed == 0 {
                return Err(StoreError::NotFound);
            }
            tx.commit().map_err(unavailable)
        })
        .await
    }

    async fn insert_deliveries(&self, deliveries: &[DeliveryRecord]) -> Result<(), StoreError> {
        let deliveries = deliveries.to_vec();
        self.with(move |conn| {
            let tx = conn.transaction().map_err(unavailable)?;
            for d in &deliveries {
                write_delivery(&tx, INSERT_DELIVERY, d).map_err(write_error)?;
            }
            tx.commit().map_err(unavailable)
        })
        .await
    }

    async fn save_attempts(&self, attempts: &[AttemptRecord]) -> Result<(), StoreError> {
        let attempts = attempts.to_vec();
        self.with(move |conn| {
            let tx = conn.transaction().map_err(unavailable)?;
            for a in &attempts {
                if write_delivery(&tx, UPDATE_DELIVERY, &a.delivery).map_err(write_error)? == 0 {
                    continue;
                }
                if let Some(h) = &a.health {
                    tx.prepare_cached(
                        "UPDATE webhooks SET enabled = ?2, disabled_reason = ?3, consecutive_failures = ?4,
                            updated_at = ?5 WHERE webhook_id = ?1",
                    )
                    .and_then(|mut q| {
                        q.execute(params![
                            h.webhook_id,
                            h.enabled,
                            h.disabled_reason,
                            h.consecutive_failures,
                            h.updated_at
                        ])
                    })
                    .map_err(write_error)?;
                }
            }
            tx.commit().map_err(unavailable)
        })
        .await
    }

    async fn delivery(&self, delivery_id: &str) -> Result<Option<DeliveryRecord>, StoreError> {
        let id = delivery_id.to_owned();
        self.with(move |conn| {
            conn.prepare_cached("SELECT * FROM webhook_deliveries WHERE delivery_id = ?1")
                .and_then(|mut q| q.query_row([&id], delivery_from_row).optional())
                .map_err(unavailable)
        })
        .await
    }

    async fn deliveries(
        &self,
        webhook_id: &str,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        let (id, before) = (webhook_id.to_owned(), before.map(str::to_owned));
        self.with(move |conn| {
            let read = |conn: &Connection| -> rusqlite::Result<Vec<DeliveryRecord>> {
                // `before` is compared as text: ids sort by creation time.
                let mut q = conn.prepare_cached(
                    "SELECT * FROM webhook_deliveries WHERE webhook_id = ?1 AND (?2 IS NULL OR delivery_id < ?2)
                     ORDER BY delivery_id DESC LIMIT ?3",
                )?;
                q.query_map(params![id, before, limit as i64], delivery_from_row)?.collect()
            };
            read(conn).map_err(unavailable)
        })
        .await
    }

    async fn due_deliveries(&self, webhook_id: Option<&str>) -> Result<Vec<DueDelivery>, StoreError> {
        let id = webhook_id.map(str::to_owned);
        self.with(move |conn| {
            let read = |conn: &Connection| -> rusqlite::Result<Vec<DueDelivery>> {
                let mut q = conn.prepare_cached(
                    "SELECT delivery_id, webhook_id, coalesce(next_retry_at, created_at) FROM webhook_deliveries
                     WHERE status IN ('pending', 'retrying') AND (?1 IS NULL OR webhook_id = ?1)",
                )?;
                q.query_map([id], |r| Ok(DueDelivery { delivery_id: r.get(0)?, webhook_id: r.get(1)?, due_at: r.get(2)? }))?
                    .collect()
            };
            read(conn).map_err(unavailable)
        })
        .await
    }

    async fn prune_deliveries(&self, before: i64) -> Result<usize, StoreError> {
        self.with(move |conn| {
            conn.execute(
                "DELETE FROM webhook_deliveries WHERE status IN ('succeeded', 'failed') AND updated_at < ?1",
                [before],
            )
            .map_err(unavailable)
        })
        .await
    }

    async fn overdue_deliveries(
        &self,
        due_before: i64,
        limit: usize,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        self.with(move |conn| {
            let read = |conn: &Connection| -> rusqlite::Result<Vec<DueDelivery>> {
                let mut q = conn.prepare_cached(
                    "SELECT delivery_id, webhook_id, next_retry_at FROM webhook_deliveries
                     WHERE status IN ('pending', 'retrying') AND next_retry_at < ?1
                     ORDER BY next_retry_at LIMIT ?2",
                )?;
                q.query_map(params![due_before, limit as i64], |r| {
                    Ok(DueDelivery { delivery_id: r.get(0)?, webhook_id: r.get(1)?, due_at: r.get(2)? })
                })?
                .collect()
            };
            read(conn).map_err(unavailable)
        })
        .await
    }

    async fn change_marker(&self) -> Result<u64, StoreError> {
        self.with(|conn| {
            conn.pragma_query_value(None, "data_version", |r| r.get::<_, i64>(0))
                .map(|v| v as u64)
                .map_err(unavailable)
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.with(|conn| {
            conn.query_row("SELECT 1", [], |r| r.get::<_, i64>(0)).optional().map(drop).map_err(unavailable)
        })
        .await
    }

    async fn server_secret(&self, name: &str, candidate: &str) -> Result<String, StoreError> {
        let (name, candidate) = (name.to_owned(), candidate.to_owned());
        self.with(move |conn| {
            conn.execute(
                "INSERT OR IGNORE INTO server_secrets (name, value) VALUES (?1, ?2)",
                params![name, candidate],
            )
            .map_err(unavailable)?;
            conn.query_row("SELECT value FROM server_secrets WHERE name = ?1", params![name], |r| r.get(0))
                .map_err(unavailable)
        })
        .await
    }

    async fn revoke_session(&self, session_id: &str, expires_at: i64) -> Result<(), StoreError> {
        let session_id = session_id.to_owned();
        self.with(move |conn| {
            let tx = conn.transaction().map_err(unavailable)?;
            tx.execute("DELETE FROM revoked_sessions WHERE expires_at < ?1", params![crate::clock::now_ms()])
                .map_err(unavailable)?;
            tx.execute(
                "INSERT OR REPLACE INTO revoked_sessions (session_id, expires_at) VALUES (?1, ?2)",
                params![session_id, expires_at],
            )
            .map_err(unavailable)?;
            tx.commit().map_err(unavailable)
        })
        .await
    }

    async fn session_revoked(&self, session_id: &str) -> Result<bool, StoreError> {
        let session_id = session_id.to_owned();
        self.with(move |conn| {
            conn.query_row(
                "SELECT 1 FROM revoked_sessions WHERE session_id = ?1",
                params![session_id],
                |_| Ok(()),
            )
            .optional()
            .map(|found| found.is_some())
            .map_err(unavailable)
        })
        .await
    }
}

#[cfg(test)]
mod tests;

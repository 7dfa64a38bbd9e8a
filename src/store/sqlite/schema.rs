//! The SQLite schema: versioned migrations through `PRAGMA user_version`.

use rusqlite::Connection;

use super::unavailable;
use crate::store::StoreError;

/// Schema changes in order; entry `i` moves `user_version` from `i` to `i + 1`. Never edit a
/// released entry: append a new one.
pub(super) const MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE apps (
        app_id          TEXT PRIMARY KEY NOT NULL,
        name            TEXT NOT NULL,
        secret          TEXT NOT NULL,
        status          TEXT NOT NULL,
        allowed_domains TEXT NOT NULL,
        rate_limit      INTEGER NOT NULL,
        max_connections INTEGER NOT NULL,
        client_events   INTEGER NOT NULL,
        created_at      INTEGER NOT NULL,
        updated_at      INTEGER NOT NULL,
        deleted_at      INTEGER
    );
    CREATE TABLE api_keys (
        key_id       TEXT PRIMARY KEY NOT NULL,
        kind         TEXT NOT NULL,
        app_id       TEXT REFERENCES apps(app_id),
        name         TEXT NOT NULL,
        scopes       TEXT NOT NULL,
        secret_hash  TEXT NOT NULL,
        is_primary   INTEGER NOT NULL,
        created_at   INTEGER NOT NULL,
        expires_at   INTEGER,
        last_used_at INTEGER,
        revoked_at   INTEGER
    );
    CREATE INDEX api_keys_by_app ON api_keys(app_id);
",
    "
    CREATE TABLE analytics_minutes (
        app_id             TEXT NOT NULL,
        minute             INTEGER NOT NULL,
        connections_opened INTEGER NOT NULL,
        broadcasts         INTEGER NOT NULL,
        client_events      INTEGER NOT NULL,
        delivered          INTEGER NOT NULL,
        peak_connections   INTEGER NOT NULL,
        webhooks_delivered INTEGER NOT NULL,
        webhooks_failed    INTEGER NOT NULL,
        PRIMARY KEY (app_id, minute)
    ) WITHOUT ROWID;
    CREATE TABLE analytics_users (
        app_id    TEXT NOT NULL,
        user_id   TEXT NOT NULL,
        last_seen INTEGER NOT NULL,
        PRIMARY KEY (app_id, user_id)
    ) WITHOUT ROWID;
",
    "
    CREATE TABLE webhooks (
        webhook_id           TEXT PRIMARY KEY NOT NULL,
        app_id               TEXT NOT NULL REFERENCES apps(app_id),
        url                  TEXT NOT NULL,
        secret               TEXT NOT NULL,
        events               TEXT NOT NULL,
        enabled              INTEGER NOT NULL,
        disabled_reason      TEXT,
        consecutive_failures INTEGER NOT NULL,
        created_at           INTEGER NOT NULL,
        updated_at           INTEGER NOT NULL
    );
    CREATE INDEX webhooks_by_app ON webhooks(app_id);
    CREATE TABLE webhook_deliveries (
        delivery_id   TEXT PRIMARY KEY NOT NULL,
        webhook_id    TEXT NOT NULL REFERENCES webhooks(webhook_id),
        app_id        TEXT NOT NULL,
        event         TEXT NOT NULL,
        room          TEXT,
        body          TEXT NOT NULL,
        status        TEXT NOT NULL,
        attempts      INTEGER NOT NULL,
        step          INTEGER NOT NULL,
        response_code INTEGER,
        latency_ms    INTEGER,
        error         TEXT,
        next_retry_at INTEGER,
        created_at    INTEGER NOT NULL,
        updated_at    INTEGER NOT NULL
    );
    CREATE INDEX deliveries_by_webhook ON webhook_deliveries(webhook_id, delivery_id);
    CREATE INDEX deliveries_waiting ON webhook_deliveries(next_retry_at)
        WHERE status IN ('pending', 'retrying');
",
    // Each delivery's attempts (JSON array); a delivery attempted before this version starts its
    // log with the one attempt it recorded.
    "
    ALTER TABLE webhook_deliveries ADD COLUMN attempt_log TEXT NOT NULL DEFAULT '[]';
    UPDATE webhook_deliveries SET attempt_log = json_array(json_object(
            'at', updated_at, 'response_code', response_code, 'latency_ms', latency_ms, 'error', error))
        WHERE attempts > 0;
",
    // Distinct users as HyperLogLog sketches per bucket; analytics_users is read once more (its
    // users go into the sketches) and emptied by the first save.
    "
    CREATE TABLE analytics_sketches (
        app_id     TEXT NOT NULL,
        level      INTEGER NOT NULL,
        start      INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        sketch     TEXT NOT NULL,
        PRIMARY KEY (app_id, level, start)
    ) WITHOUT ROWID;
",
    // An app's history retention (JSON `{"size","ttl_s"}`), NULL for the configured defaults.
    "
    ALTER TABLE apps ADD COLUMN history TEXT;
",
    // A webhook's delivery format: `roomcast`, or `pusher` (Pusher's batched, app-signed body).
    "
    ALTER TABLE webhooks ADD COLUMN format TEXT NOT NULL DEFAULT 'roomcast';
",
    // Whether an app takes Pusher clients on /app/{key}; apps made before say no.
    "
    ALTER TABLE apps ADD COLUMN pusher_clients INTEGER NOT NULL DEFAULT 0;
",
    // The server's own secrets (the dashboard's cookie key), made once and kept across
    // restarts; dashboard sessions ended before they expire.
    "
    CREATE TABLE server_secrets (
        name  TEXT PRIMARY KEY NOT NULL,
        value TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE revoked_sessions (
        session_id TEXT PRIMARY KEY NOT NULL,
        expires_at INTEGER NOT NULL
    ) WITHOUT ROWID;
",
];

pub(super) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let current: usize =
        conn.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0)).map_err(unavailable)? as usize;
    if current > MIGRATIONS.len() {
        return Err(StoreError::Corrupt(format!(
            "database schema version {current} is newer than this binary ({})",
            MIGRATIONS.len()
        )));
    }
    for (version, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let tx = conn.transaction().map_err(unavailable)?;
        tx.execute_batch(sql).map_err(unavailable)?;
        tx.pragma_update(None, "user_version", (version + 1) as i64).map_err(unavailable)?;
        tx.commit().map_err(unavailable)?;
    }
    Ok(())
}

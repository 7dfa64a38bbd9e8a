//! The cluster store (`store.kind = "redis"`): apps, keys, webhooks and their deliveries as
//! JSON in Redis hashes, so every node reads the same records. Every write that the caches care
//! about increments `rc:store:version` and is announced on `rc:store:changed`, so other nodes
//! reload at once (see the broker) and, failing that, at their next poll of the version.
//!
//! Analytics are not kept here: a cluster adds every node's counts to shared buckets
//! ([`crate::analytics::redis`]), so this store saves and loads no analytics rows.

use std::collections::HashMap;

use async_trait::async_trait;
use redis::AsyncCommands;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{
    AnalyticsRows, AppRecord, AttemptRecord, DeliveryRecord, DueDelivery, KeyRecord, Snapshot, Store,
    StoreError, WebhookRecord,
};

const APPS: &str = "rc:{store}:apps";
const KEYS: &str = "rc:{store}:keys";
const WEBHOOKS: &str = "rc:{store}:webhooks";
const DELIVERIES: &str = "rc:{store}:deliveries";
/// Pending and retrying deliveries, scored by when they are due.
const WAITING: &str = "rc:{store}:waiting";
const VERSION: &str = "rc:{store}:version";
/// `rc:{store}:secret:{name}`: a server secret.
const SECRET: &str = "rc:{store}:secret:";
/// `rc:{store}:ended:{session_id}`: an ended dashboard session, until it would have expired.
const ENDED: &str = "rc:{store}:ended:";
/// Log entries read at a time when pruning.
const PRUNE_PAGE: usize = 500;
/// Where a write is announced to the other nodes.
pub const CHANGED_CHANNEL: &str = "rc:store:changed";

/// A webhook's deliveries by id (scores all 0, so ids sort lexically, which is by time).
fn webhook_deliveries(webhook_id: &str) -> String {
    format!("rc:{{store}}:deliveries-of:{webhook_id}")
}

/// Sets field ARGV[2] of hash KEYS[1] to ARGV[3] when it is absent (and, when given, field
/// ARGV[4] of hash KEYS[2] to ARGV[5] when that is absent too), all or nothing; bumps the
/// version (KEYS[3]) and announces it on channel ARGV[1]. Returns 0 on a conflict.
const INSERT_SCRIPT: &str = r"
if redis.call('HEXISTS', KEYS[1], ARGV[2]) == 1 then return 0 end
if ARGV[4] and redis.call('HEXISTS', KEYS[2], ARGV[4]) == 1 then return 0 end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
if ARGV[4] then redis.call('HSET', KEYS[2], ARGV[4], ARGV[5]) end
local v = redis.call('INCR', KEYS[3])
redis.call('PUBLISH', ARGV[1], v)
return 1
";

/// Replaces field ARGV[1] of hash KEYS[1] with ARGV[2] when it exists; bumps and announces the
/// version (KEYS[2], channel ARGV[3]). Returns 0 when it does not exist.
const UPDATE_SCRIPT: &str = r"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local v = redis.call('INCR', KEYS[2])
redis.call('PUBLISH', ARGV[3], v)
return 1
";

fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("store records always serialize")
}

fn parse<T: DeserializeOwned>(what: &str, text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

/// Redis-backed [`Store`].
pub struct RedisStore {
    conn: crate::redis_conn::Commands,
    insert: redis::Script,
    update: redis::Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to `url`; with `sharded`, the seeds of a Redis Cluster; `tls` as for
    /// [`crate::redis_conn::connect`].
    pub async fn connect(
        url: &str,
        sharded: bool,
        tls: &crate::redis_conn::TlsFiles,
    ) -> Result<Self, StoreError> {
        let (_, conn) =
            crate::redis_conn::connect(url, sharded, tls).await.map_err(StoreError::Unavailable)?;
        Ok(Self {
            conn,
            insert: redis::Script::new(INSERT_SCRIPT),
            update: redis::Script::new(UPDATE_SCRIPT),
        })
    }

    fn conn(&self) -> crate::redis_conn::Commands {
        self.conn.clone()
    }

    async fn hash<T: DeserializeOwned>(&self, key: &str, what: &str) -> Result<Vec<T>, StoreError> {
        let all: HashMap<String, String> = self.conn().hgetall(key).await.map_err(unavailable)?;
        all.values().map(|v| parse(what, v)).collect()
    }

    async fn field<T: DeserializeOwned>(
        &self,
        hash: &str,
        id: &str,
        what: &str,
    ) -> Result<Option<T>, StoreError> {
        let text: Option<String> = self.conn().hget(hash, id).await.map_err(unavailable)?;
        text.map(|t| parse(what, &t)).transpose()
    }

    async fn insert_one(&self, hash: &str, id: &str, json: String) -> Result<(), StoreError> {
        let done: i64 = self
            .insert
            .key(hash)
            .key(hash)
            .key(VERSION)
            .arg(CHANGED_CHANNEL)
            .arg(id)
            .arg(json)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        if done == 0 { Err(StoreError::Conflict) } else { Ok(()) }
    }

    async fn update_one(&self, hash: &str, id: &str, json: String) -> Result<(), StoreError> {
        let done: i64 = self
            .update
            .key(hash)
            .key(VERSION)
            .arg(id)
            .arg(json)
            .arg(CHANGED_CHANNEL)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        if done == 0 { Err(StoreError::NotFound) } else { Ok(()) }
    }

    /// Runs a pipeline; one with nothing in it (every record of a batch skipped) is not sent,
    /// as Redis refuses an empty command.
    async fn exec(&self, pipe: &redis::Pipeline) -> Result<(), StoreError> {
        if pipe.is_empty() {
            return Ok(());
        }
        pipe.query_async::<()>(&mut self.conn()).await.map_err(unavailable)
    }

    /// Bumps the version and tells the other nodes, after a write made outside the scripts.
    fn bump(pipe: &mut redis::Pipeline) {
        pipe.cmd("EVAL")
            .arg("local v = redis.call('INCR', KEYS[1]) redis.call('PUBLISH', ARGV[1], v) return v")
            .arg(1)
            .arg(VERSION)
            .arg(CHANGED_CHANNEL)
            .ignore();
    }

    async fn deliveries_by_id(&self, ids: &[String]) -> Result<Vec<DeliveryRecord>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let found: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(DELIVERIES)
            .arg(ids)
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        found.iter().flatten().map(|t| parse("delivery", t)).collect()
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let mut apps: Vec<AppRecord> = self.hash(APPS, "app").await?;
        let mut keys: Vec<KeyRecord> = self.hash(KEYS, "key").await?;
        let mut webhooks: Vec<WebhookRecord> = self.hash(WEBHOOKS, "webhook").await?;
        apps.sort_by(|a, b| a.app_id.cmp(&b.app_id));
        keys.sort_by(|a, b| (a.created_at, &a.key_id).cmp(&(b.created_at, &b.key_id)));
        webhooks.sort_by(|a, b| (a.created_at, &a.webhook_id).cmp(&(b.created_at, &b.webhook_id)));
        Ok(Snapshot { apps, keys, webhooks })
    }

    async fn app(&self, app_id: &str) -> Result<Option<AppRecord>, StoreError> {
        self.field(APPS, app_id, "app").await
    }

    async fn key(&self, key_id: &str) -> Result<Option<KeyRecord>, StoreError> {
        self.field(KEYS, key_id, "key").await
    }

    async fn webhook(&self, webhook_id: &str) -> Result<Option<WebhookRecord>, StoreError> {
        self.field(WEBHOOKS, webhook_id, "webhook").await
    }

    async fn insert_app(&self, app: &AppRecord, primary_key: &KeyRecord) -> Result<(), StoreError> {
        let done: i64 = self
            .insert
            .key(APPS)
            .key(KEYS)
            .key(VERSION)
            .arg(CHANGED_CHANNEL)
            .arg(&app.app_id)
            .arg(to_json(app))
            .arg(&primary_key.key_id)
            .arg(to_json(primary_key))
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        if done == 0 { Err(StoreError::Conflict) } else { Ok(()) }
    }

    async fn update_app(&self, app: &AppRecord) -> Result<(), StoreError> {
        self.update_one(APPS, &app.app_id, to_json(app)).await
    }

    async fn insert_key(&self, key: &KeyRecord) -> Result<(), StoreError> {
        self.insert_one(KEYS, &key.key_id, to_json(key)).await
    }

    async fn save_keys(&self, keys: &[KeyRecord]) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        for key in keys {
            pipe.hset(KEYS, &key.key_id, to_json(key)).ignore();
        }
        Self::bump(&mut pipe);
        self.exec(&pipe).await
    }

    async fn touch_keys(&self, used: &[(String, i64)]) -> Result<(), StoreError> {
        // Not announced: use times do not change what a key may do. One read and one write for
        // the whole batch, whatever its size.
        let mut latest: HashMap<&str, i64> = HashMap::new();
        for (key_id, at) in used {
            let t = latest.entry(key_id.as_str()).or_insert(*at);
            *t = (*t).max(*at);
        }
        if latest.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = latest.keys().copied().collect();
        let found: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(KEYS)
            .arg(&ids)
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let mut pipe = redis::pipe();
        for (id, text) in ids.iter().zip(found) {
            let Some(text) = text else { continue };
            let mut key: KeyRecord = parse("key", &text)?;
            let at = latest[id];
            if key.last_used_at.is_some_and(|t| t >= at) {
                continue;
            }
            key.last_used_at = Some(at);
            pipe.hset(KEYS, *id, to_json(&key)).ignore();
        }
        self.exec(&pipe).await
    }

    async fn purge_deleted(&self, deleted_before: i64) -> Result<Vec<String>, StoreError> {
        let apps: Vec<AppRecord> = self.hash(APPS, "app").await?;
        let gone: Vec<String> = apps
            .into_iter()
            .filter(|a| a.deleted_at.is_some_and(|d| d < deleted_before))
            .map(|a| a.app_id)
            .collect();
        if gone.is_empty() {
            return Ok(gone);
        }
        let keys: Vec<KeyRecord> = self.hash(KEYS, "key").await?;
        let webhooks: Vec<WebhookRecord> = self.hash(WEBHOOKS, "webhook").await?;
        let mut pipe = redis::pipe();
        pipe.atomic();
        for key in keys.iter().filter(|k| k.app_id.as_ref().is_some_and(|a| gone.contains(a))) {
            pipe.hdel(KEYS, &key.key_id).ignore();
        }
        for w in webhooks.iter().filter(|w| gone.contains(&w.app_id)) {
            let ids: Vec<String> =
                self.conn().zrange(webhook_deliveries(&w.webhook_id), 0, -1).await.map_err(unavailable)?;
            if !ids.is_empty() {
                pipe.hdel(DELIVERIES, &ids).ignore().zrem(WAITING, &ids).ignore();
            }
            pipe.del(webhook_deliveries(&w.webhook_id)).ignore().hdel(WEBHOOKS, &w.webhook_id).ignore();
        }
        pipe.hdel(APPS, &gone).ignore();
        Self::bump(&mut pipe);
        self.exec(&pipe).await?;
        Ok(gone)
    }

    /// Nothing to save: a cluster's analytics are shared another way.
    async fn save_analytics(
        &self,
        _rows: AnalyticsRows,
        _forget_before: i64,
        _now: i64,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    async fn load_analytics(&self, _since: i64) -> Result<AnalyticsRows, StoreError> {
        Ok(AnalyticsRows::default())
    }

    async fn insert_webhook(&self, webhook: &WebhookRecord) -> Result<(), StoreError> {
        self.insert_one(WEBHOOKS, &webhook.webhook_id, to_json(webhook)).await
    }

    async fn update_webhook(&self, webhook: &WebhookRecord) -> Result<(), StoreError> {
        self.update_one(WEBHOOKS, &webhook.webhook_id, to_json(webhook)).await
    }

    async fn delete_webhook(&self, webhook_id: &str) -> Result<(), StoreError> {
        let exists: bool = self.conn().hexists(WEBHOOKS, webhook_id).await.map_err(unavailable)?;
        if !exists {
            return Err(StoreError::NotFound);
        }
        let ids: Vec<String> =
            self.conn().zrange(webhook_deliveries(webhook_id), 0, -1).await.map_err(unavailable)?;
        let mut pipe = redis::pipe();
        pipe.atomic();
        if !ids.is_empty() {
            pipe.hdel(DELIVERIES, &ids).ignore().zrem(WAITING, &ids).ignore();
        }
        pipe.del(webhook_deliveries(webhook_id)).ignore().hdel(WEBHOOKS, webhook_id).ignore();
        Self::bump(&mut pipe);
        self.exec(&pipe).await
    }

    async fn insert_deliveries(&self, deliveries: &[DeliveryRecord]) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        for d in deliveries {
            pipe.hset(DELIVERIES, &d.delivery_id, to_json(d)).ignore();
            pipe.zadd(webhook_deliveries(&d.webhook_id), &d.delivery_id, 0).ignore();
            pipe.zadd(WAITING, &d.delivery_id, d.next_retry_at.unwrap_or(d.created_at)).ignore();
        }
        self.exec(&pipe).await
    }

    async fn save_attempts(&self, attempts: &[AttemptRecord]) -> Result<(), StoreError> {
        let ids: Vec<String> = attempts.iter().map(|a| a.delivery.delivery_id.clone()).collect();
        let exist: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(DELIVERIES)
            .arg(&ids)
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let mut pipe = redis::pipe();
        pipe.atomic();
        let mut health_changed = false;
        for (a, existing) in attempts.iter().zip(exist) {
            if existing.is_none() {
                continue;
            }
            let d = &a.delivery;
            pipe.hset(DELIVERIES, &d.delivery_id, to_json(d)).ignore();
            match (d.status.is_final(), d.next_retry_at) {
                (false, Some(due)) => pipe.zadd(WAITING, &d.delivery_id, due).ignore(),
                _ => pipe.zrem(WAITING, &d.delivery_id).ignore(),
            };
            if let Some(h) = &a.health {
                let Some(text): Option<String> =
                    self.conn().hget(WEBHOOKS, &h.webhook_id).await.map_err(unavailable)?
                else {
                    continue;
                };
                let mut w: WebhookRecord = parse("webhook", &text)?;
                w.enabled = h.enabled;
                w.disabled_reason.clone_from(&h.disabled_reason);
                w.consecutive_failures = h.consecutive_failures;
                w.updated_at = h.updated_at;
                pipe.hset(WEBHOOKS, &w.webhook_id, to_json(&w)).ignore();
                health_changed = true;
            }
        }
        if health_changed {
            Self::bump(&mut pipe);
        }
        self.exec(&pipe).await
    }

    async fn delivery(&self, delivery_id: &str) -> Result<Option<DeliveryRecord>, StoreError> {
        self.field(DELIVERIES, delivery_id, "delivery").await
    }

    async fn deliveries(
        &self,
        webhook_id: &str,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        let max = before.map_or_else(|| "+".to_owned(), |b| format!("({b}"));
        let ids: Vec<String> = redis::cmd("ZREVRANGEBYLEX")
            .arg(webhook_deliveries(webhook_id))
            .arg(max)
            .arg("-")
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        self.deliveries_by_id(&ids).await
    }

    async fn due_deliveries(&self, webhook_id: Option<&str>) -> Result<Vec<DueDelivery>, StoreError> {
        let waiting: Vec<(String, i64)> = redis::cmd("ZRANGE")
            .arg(WAITING)
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let ids: Vec<String> = waiting.iter().map(|(id, _)| id.clone()).collect();
        let records = self.deliveries_by_id(&ids).await?;
        let due: HashMap<String, i64> = waiting.into_iter().collect();
        Ok(records
            .into_iter()
            .filter(|d| !d.status.is_final() && webhook_id.is_none_or(|w| w == d.webhook_id))
            .map(|d| DueDelivery {
                due_at: due.get(&d.delivery_id).copied().unwrap_or(d.created_at),
                delivery_id: d.delivery_id,
                webhook_id: d.webhook_id,
            })
            .collect())
    }

    async fn prune_deliveries(&self, before: i64) -> Result<usize, StoreError> {
        // Only deliveries created before `before` can have been finished before it, and ids
        // sort by creation: each webhook's log is read from its oldest entry up to that bound,
        // a page at a time, never whole.
        let bound = format!("({}", super::delivery_id_prefix(before));
        let webhooks: Vec<String> = self.conn().hkeys(WEBHOOKS).await.map_err(unavailable)?;
        let mut pruned = 0;
        for webhook_id in webhooks {
            let log = webhook_deliveries(&webhook_id);
            // Entries kept (still pending, or finished later) stay in front of the next page.
            let mut kept = 0;
            loop {
                let ids: Vec<String> = redis::cmd("ZRANGEBYLEX")
                    .arg(&log)
                    .arg("-")
                    .arg(&bound)
                    .arg("LIMIT")
                    .arg(kept)
                    .arg(PRUNE_PAGE)
                    .query_async(&mut self.conn())
                    .await
                    .map_err(unavailable)?;
                let found = self.deliveries_by_id(&ids).await?;
                let old: Vec<&String> = found
                    .iter()
                    .filter(|d| d.status.is_final() && d.updated_at < before)
                    .map(|d| &d.delivery_id)
                    .collect();
                // Log entries without a record (a write cut short) go too.
                let have: std::collections::HashSet<&String> = found.iter().map(|d| &d.delivery_id).collect();
                let gone: Vec<&String> =
                    old.iter().copied().chain(ids.iter().filter(|id| !have.contains(id))).collect();
                let mut pipe = redis::pipe();
                pipe.atomic();
                if !old.is_empty() {
                    pipe.hdel(DELIVERIES, &old).ignore();
                }
                if !gone.is_empty() {
                    pipe.zrem(&log, &gone).ignore();
                }
                self.exec(&pipe).await?;
                pruned += old.len();
                kept += ids.len() - gone.len();
                if ids.len() < PRUNE_PAGE {
                    break;
                }
            }
        }
        Ok(pruned)
    }

    async fn overdue_deliveries(
        &self,
        due_before: i64,
        limit: usize,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        let waiting: Vec<(String, i64)> = redis::cmd("ZRANGEBYSCORE")
            .arg(WAITING)
            .arg("-inf")
            .arg(format!("({due_before}"))
            .arg("WITHSCORES")
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let ids: Vec<String> = waiting.iter().map(|(id, _)| id.clone()).collect();
        let webhooks: HashMap<String, String> =
            self.deliveries_by_id(&ids).await?.into_iter().map(|d| (d.delivery_id, d.webhook_id)).collect();
        Ok(waiting
            .into_iter()
            .filter_map(|(id, due_at)| {
                let webhook_id = webhooks.get(&id)?.clone();
                Some(DueDelivery { delivery_id: id, webhook_id, due_at })
            })
            .collect())
    }

    async fn change_marker(&self) -> Result<u64, StoreError> {
        let v: Option<u64> = self.conn().get(VERSION).await.map_err(unavailable)?;
        Ok(v.unwrap_or(0))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        redis::cmd("PING").query_async::<String>(&mut self.conn()).await.map(drop).map_err(unavailable)
    }

    async fn server_secret(&self, name: &str, candidate: &str) -> Result<String, StoreError> {
        let key = format!("{SECRET}{name}");
        let mut conn = self.conn();
        let _: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(candidate)
            .arg("NX")
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let value: Option<String> = conn.get(&key).await.map_err(unavailable)?;
        value.ok_or_else(|| StoreError::Unavailable(format!("server secret {name} vanished")))
    }

    async fn revoke_session(&self, session_id: &str, expires_at: i64) -> Result<(), StoreError> {
        let at = expires_at.max(crate::clock::now_ms() + 1000);
        redis::cmd("SET")
            .arg(format!("{ENDED}{session_id}"))
            .arg(1)
            .arg("PXAT")
            .arg(at)
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(unavailable)
    }

    async fn session_revoked(&self, session_id: &str) -> Result<bool, StoreError> {
        let found: bool = self.conn().exists(format!("{ENDED}{session_id}")).await.map_err(unavailable)?;
        Ok(found)
    }
}

//! [`Apps`], the service that owns apps and API keys: every write (store first, then the
//! caches), the lifecycle rules (a disabled or deleted app's connections close; a deleted app
//! is restorable for 30 days, then purged), reading through to the store for what the caches
//! do not know yet, and the jobs that keep the caches in step with the store.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, MutexGuard, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{AppCache, check_app_id, is_active};
use crate::analytics::Stats;
use crate::auth::Auth;
use crate::auth::api_key::CachedKey;
use crate::clock::now_ms;
use crate::hub::Hub;
use crate::lookups::{Kind, Lookups};
use crate::protocol::CloseCode;
use crate::store::{AppRecord, KeyRecord, Store, StoreError, WebhookRecord};
use crate::webhooks::Webhooks;

/// How long a deleted app can be restored; then it is purged with its keys.
pub const RESTORE_WINDOW_MS: i64 = 30 * 24 * 3600 * 1000;
/// How often apps past their restore window are looked for (also once at start).
const PURGE_EVERY: Duration = Duration::from_secs(3600);

/// Apps and keys: the store, the caches in front of it, and the rules.
#[derive(Debug)]
pub struct Apps {
    store: Arc<dyn Store>,
    cache: Arc<AppCache>,
    auth: Arc<Auth>,
    webhooks: Arc<Webhooks>,
    stats: Arc<Stats>,
    hub: Arc<Hub>,
    lookups: Lookups,
    /// Held across "write the store, then update the caches" and across cache reloads, so a
    /// reload can never put back a snapshot older than a write.
    writes: Arc<Mutex<()>>,
}

/// What [`Apps`] works with.
#[derive(Debug)]
pub struct Parts {
    pub store: Arc<dyn Store>,
    pub cache: Arc<AppCache>,
    pub auth: Arc<Auth>,
    pub webhooks: Arc<Webhooks>,
    pub stats: Arc<Stats>,
    pub hub: Arc<Hub>,
    pub lookups: Lookups,
    pub writes: Arc<Mutex<()>>,
}

impl Apps {
    pub fn new(p: Parts) -> Self {
        Self {
            store: p.store,
            cache: p.cache,
            auth: p.auth,
            webhooks: p.webhooks,
            stats: p.stats,
            hub: p.hub,
            lookups: p.lookups,
            writes: p.writes,
        }
    }

    /// The store (for health checks and reads no cache holds).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Every app this node knows, deleted ones included.
    pub fn cache(&self) -> &AppCache {
        &self.cache
    }

    /// The write lock: held by a caller that reads, checks and then writes, so no other write
    /// or reload lands in between.
    pub async fn writing(&self) -> MutexGuard<'_, ()> {
        self.writes.lock().await
    }

    /// The app, deleted or not. One this node does not know, or knows as disabled or deleted,
    /// is asked of the store first: it may have been created, enabled or restored through
    /// another node a moment ago.
    pub async fn app(&self, app_id: &str) -> Result<Option<Arc<AppRecord>>, StoreError> {
        let cached = self.cache.get(app_id);
        if cached.as_ref().is_some_and(|a| is_active(a)) {
            return Ok(cached);
        }
        self.app_from_store(app_id).await
    }

    /// Asks the store for the app (within the lookup bounds), then answers from the cache.
    async fn app_from_store(&self, app_id: &str) -> Result<Option<Arc<AppRecord>>, StoreError> {
        if check_app_id(app_id).is_ok() {
            self.lookups
                .fetch(Kind::App, app_id, || self.store.app(app_id), |a| self.cache.put_newer(a))
                .await?;
        }
        Ok(self.cache.get(app_id))
    }

    /// `check` run on the app as this node knows it, and once more on the store's record when the
    /// cached one fails it and the store holds another version (a secret regenerated through
    /// another node a moment ago). `None` when there is no such app.
    pub async fn check_app<T, E>(
        &self,
        app_id: &str,
        check: impl Fn(&Arc<AppRecord>) -> Result<T, E>,
    ) -> Result<Option<Result<T, E>>, StoreError> {
        let Some(app) = self.app(app_id).await? else { return Ok(None) };
        let refused = match check(&app) {
            Ok(passed) => return Ok(Some(Ok(passed))),
            Err(e) => e,
        };
        Ok(Some(match self.app_from_store(app_id).await? {
            Some(fresh) if !Arc::ptr_eq(&fresh, &app) => check(&fresh),
            _ => Err(refused),
        }))
    }

    /// The key, asking the store first when this node does not know it.
    pub async fn key(&self, key_id: &str) -> Result<Option<Arc<CachedKey>>, StoreError> {
        if let Some(key) = self.auth.keys.get(key_id) {
            return Ok(Some(key));
        }
        let keys = &self.auth.keys;
        self.lookups.fetch(Kind::Key, key_id, || self.store.key(key_id), |k| keys.put_if_absent(k)).await?;
        Ok(keys.get(key_id))
    }

    /// The webhook, asking the store first when this node does not know it.
    pub async fn webhook(&self, webhook_id: &str) -> Result<Option<Arc<WebhookRecord>>, StoreError> {
        if let Some(webhook) = self.webhooks.get(webhook_id) {
            return Ok(Some(webhook));
        }
        if crate::webhooks::is_webhook_id(webhook_id) {
            let (store, webhooks) = (&self.store, &self.webhooks);
            self.lookups
                .fetch(Kind::Webhook, webhook_id, || store.webhook(webhook_id), |w| webhooks.put_newer(w))
                .await?;
        }
        Ok(self.webhooks.get(webhook_id))
    }

    /// Creates an app with its primary key; [`StoreError::Conflict`] when the id is taken. The
    /// caller holds [`Apps::writing`].
    pub async fn create(&self, app: AppRecord, key: KeyRecord) -> Result<(), StoreError> {
        if self.cache.get(&app.app_id).is_some() {
            return Err(StoreError::Conflict);
        }
        self.store.insert_app(&app, &key).await?;
        tracing::info!(app_id = %app.app_id, "app created");
        self.cache.put(app);
        self.auth.keys.put(key);
        Ok(())
    }

    /// Writes a changed copy of `current` to the store, then to the cache, and returns it;
    /// `change` may refuse, and then nothing is written. Disabling or deleting the app closes
    /// its connections with 4003. The caller holds [`Apps::writing`].
    pub async fn update<E: From<StoreError>>(
        &self,
        current: &AppRecord,
        change: impl FnOnce(&mut AppRecord) -> Result<(), E>,
    ) -> Result<AppRecord, E> {
        // Changed from the store's version, not the cache's: another node may have changed the
        // app a moment ago, and this write must not undo that.
        let stored = self.store.app(&current.app_id).await?;
        let mut app = stored.unwrap_or_else(|| current.clone());
        let was_active = is_active(&app);
        change(&mut app)?;
        app.updated_at = now_ms().max(current.updated_at).max(app.updated_at);
        self.store.update_app(&app).await?;
        self.cache.put(app.clone());
        if was_active && !is_active(&app) {
            let closed = self.hub.close_connections(Some(&app.app_id), CloseCode::AppDisabled);
            let deleted = app.deleted_at.is_some();
            tracing::info!(app_id = %app.app_id, closed, deleted, "app stopped; its connections are closing");
        }
        Ok(app)
    }

    /// Soft-deletes an app: restorable for 30 days. The caller holds [`Apps::writing`].
    pub async fn delete(&self, current: &AppRecord) -> Result<AppRecord, StoreError> {
        let now = now_ms();
        self.update(current, |app| {
            app.deleted_at = Some(now);
            Ok::<_, StoreError>(())
        })
        .await
    }

    /// Restores an app deleted within the last 30 days; `None` when there is none. The caller
    /// holds [`Apps::writing`].
    pub async fn restore(&self, app_id: &str) -> Result<Option<AppRecord>, StoreError> {
        let now = now_ms();
        // From the store: the app may have been deleted through another node a moment ago.
        let Some(current) = self
            .store
            .app(app_id)
            .await?
            .filter(|a| a.deleted_at.is_some_and(|at| now - at <= RESTORE_WINDOW_MS))
        else {
            return Ok(None);
        };
        let app = self
            .update(&current, |app| {
                app.deleted_at = None;
                Ok::<_, StoreError>(())
            })
            .await?;
        tracing::info!(app_id, "app restored");
        Ok(Some(app))
    }

    /// Adds a key. The caller holds [`Apps::writing`].
    pub async fn insert_key(&self, key: KeyRecord) -> Result<(), StoreError> {
        self.store.insert_key(&key).await?;
        self.auth.keys.put(key);
        Ok(())
    }

    /// Writes changed keys (revoked, rotated, new) in one step. The caller holds
    /// [`Apps::writing`].
    pub async fn save_keys(&self, keys: Vec<KeyRecord>) -> Result<(), StoreError> {
        self.store.save_keys(&keys).await?;
        for key in keys {
            self.auth.keys.put(key);
        }
        Ok(())
    }

    /// Starts the jobs: reloading the caches when another process or node changed the store
    /// (polled every `reload_every`, at once when `announced` wakes), and purging apps past
    /// their restore window every hour. `marker` is the store's change marker the caches were
    /// filled at.
    pub fn start(
        self: &Arc<Self>,
        marker: u64,
        reload_every: Duration,
        announced: Option<Arc<Notify>>,
        shutdown: &CancellationToken,
        tracker: &TaskTracker,
    ) {
        tracker.spawn(self.clone().reload(marker, reload_every, announced, shutdown.clone()));
        let apps = self.clone();
        tracker.spawn(crate::shutdown::every(PURGE_EVERY, shutdown.clone(), move || {
            let apps = apps.clone();
            async move { apps.purge().await }
        }));
        let apps = self.clone();
        crate::shutdown::start_every(Duration::from_secs(60), shutdown, tracker, move || {
            apps.lookups.sweep()
        });
    }

    async fn reload(
        self: Arc<Self>,
        mut marker: u64,
        every: Duration,
        announced: Option<Arc<Notify>>,
        shutdown: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(every);
        // In a cluster a write on any node is announced, so the reload follows at once.
        let announcement = async || match &announced {
            Some(n) => n.notified().await,
            None => std::future::pending().await,
        };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
                _ = announcement() => self.lookups.changed(),
            }
            let current = match self.store.change_marker().await {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot poll the store for changes");
                    continue;
                }
            };
            if marker != current {
                // Held so that no API write lands between the snapshot and the cache replacement.
                let _writes = self.writing().await;
                if let Err(e) = self.refill().await {
                    tracing::warn!(error = %e, "cannot reload the store");
                    continue;
                }
                tracing::info!("reloaded apps and keys after an outside change to the store");
            }
            marker = current;
        }
    }

    /// Replaces the app, key and webhook caches with the store's contents, and closes with
    /// 4003 the connections of apps another node (or process) disabled or deleted; the caller
    /// holds [`Apps::writing`].
    async fn refill(&self) -> Result<(), StoreError> {
        let snapshot = self.store.snapshot().await?;
        let stopped = self.cache.replace_all(snapshot.apps);
        self.auth.keys.replace_all(snapshot.keys);
        self.webhooks.replace_all(snapshot.webhooks);
        self.lookups.changed();
        for app_id in stopped {
            let closed = self.hub.close_connections(Some(&app_id), CloseCode::AppDisabled);
            tracing::info!(app_id = %app_id, connections = closed, "app disabled or deleted elsewhere; its connections are closed");
        }
        Ok(())
    }

    /// Erases apps soft-deleted more than 30 days ago, with their keys and analytics, and drops
    /// them from the caches; their ids can then be taken again.
    async fn purge(&self) {
        let _writes = self.writing().await;
        let purged = match self.store.purge_deleted(now_ms() - RESTORE_WINDOW_MS).await {
            Ok(purged) if purged.is_empty() => return,
            Ok(purged) => purged,
            Err(e) => {
                tracing::warn!(error = %e, "cannot purge deleted apps");
                return;
            }
        };
        if let Err(e) = self.refill().await {
            tracing::warn!(error = %e, "cannot reload the store after a purge");
        }
        for app_id in &purged {
            self.stats.forget(app_id).await;
        }
        tracing::info!(apps = ?purged, "purged apps deleted more than 30 days ago");
    }
}

//! Wires everything from a [`Config`]: store, caches, admin bootstrap, hub, listener and
//! background tasks. [`Server`] is what `main` and the tests start.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::apps::AppCache;
use crate::auth::api_key::{KeyRing, PresentedKey};
use crate::clock::now_ms;
use crate::config::{Config, StoreKind};
use crate::http::apps::RESTORE_WINDOW_MS;
use crate::http::{AppState, Shared, router};
use crate::hub::local::{LocalBroker, LocalCluster};
use crate::hub::registry::Registry;
use crate::hub::{Broker, BrokerError, ClusterState, Fanout, Hub, OutboxLimits};
use crate::store::sqlite::SqliteStore;
use crate::store::{KeyKind, KeyRecord, Store, StoreError};

/// How often key `last_used_at` times are written to the store.
const KEY_USE_FLUSH: Duration = Duration::from_secs(10);
/// How long a cluster node waits, before serving, for its Redis subscription to come up.
const STARTUP_REDIS_WAIT: Duration = Duration::from_secs(10);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A setting is wrong; the message names it.
    #[error("{0}")]
    Config(String),
    /// The store cannot be opened or read.
    #[error("store {path}: {source}")]
    Store { path: String, source: StoreError },
    /// Cluster mode: Redis cannot be reached at start.
    #[error("cannot reach Redis at {url}: {source}")]
    Redis { url: String, source: BrokerError },
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

/// A built server, bound and ready to run.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    state: AppState,
    bootstrap_key: Option<String>,
    marker: u64,
    /// What the cluster state tells the hub, in cluster mode.
    news: Option<tokio::sync::mpsc::Receiver<crate::hub::ClusterNews>>,
}

impl Server {
    /// Opens the store, fills the caches, registers or creates the admin key and binds.
    pub async fn build(config: Config) -> Result<Self, StartError> {
        let store_err = |source| StartError::Store { path: store_name(&config), source };
        let node_id =
            config.cluster.node_id.clone().unwrap_or_else(|| format!("n_{}", crate::auth::random_base62(10)));
        let store = open_store(&config).await?;
        // Read before the snapshot, so a change racing with start-up triggers a reload later.
        let marker = store.change_marker().await.map_err(store_err)?;
        // Apps past their restore window go before anything is cached or served.
        let purged = store.purge_deleted(now_ms() - RESTORE_WINDOW_MS).await.map_err(store_err)?;
        if !purged.is_empty() {
            tracing::info!(apps = ?purged, "purged apps deleted more than 30 days ago");
        }
        let snapshot = store.snapshot().await.map_err(store_err)?;
        let apps = AppCache::default();
        apps.replace_all(snapshot.apps);
        let keys = KeyRing::default();
        keys.replace_all(snapshot.keys);
        let bootstrap_key = bootstrap_admin(&config, store.as_ref(), &keys).await?;

        let listener = bind(config.server.listen)
            .map_err(|source| StartError::Bind { addr: config.server.listen, source })?;
        let registry = Arc::new(Registry::default());
        let limits = OutboxLimits {
            messages: config.websocket.outbound_queue_messages,
            bytes: config.websocket.outbound_queue_bytes,
        };
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let tracker = TaskTracker::new();
        let fanout = Arc::new(Fanout::new(registry.clone(), metrics.hub.clone()));
        let (redis, news) = match &config.cluster.redis_url {
            Some(url) => {
                let (node, news) = crate::cluster::Node::connect(
                    url,
                    config.cluster.sharded_pubsub,
                    &crate::redis_conn::TlsFiles::from_config(&config.cluster),
                    &node_id,
                    Duration::from_millis(config.cluster.node_timeout_ms),
                    fanout.clone(),
                    registry.clone(),
                )
                .await
                .map_err(|e| StartError::Redis { url: redact(url), source: e })?;
                (Some(Arc::new(node)), Some(news))
            }
            None => (None, None),
        };
        let (broker, cluster): (Arc<dyn Broker>, Arc<dyn ClusterState>) = match &redis {
            Some(node) => (node.broker.clone(), node.state.clone()),
            None => (Arc::new(LocalBroker::new(fanout.clone())), Arc::new(LocalCluster::new(registry))),
        };
        let hub = Arc::new(
            Hub::new(fanout, broker, cluster, limits)
                .with_presence_list_max(config.limits.presence_members_listed),
        );
        let store_changes =
            redis.as_ref().map(|node| node.broker.notify_on(crate::store::redis::CHANGED_CHANNEL));
        let api_limits = crate::limits::ApiLimits::new(&config.limits);
        let analytics = Arc::new(match &redis {
            Some(_) => crate::analytics::Analytics::shared(),
            None => crate::analytics::Analytics::default(),
        });
        // A cluster's analytics live in Redis; a single node's in the store.
        let shared_analytics = redis.as_ref().map(|r| {
            Arc::new(crate::analytics::redis::SharedAnalytics::new(
                r.commands.clone(),
                &node_id,
                config.cluster.node_timeout_ms,
                r.link.epoch(),
            ))
        });
        if shared_analytics.is_none() {
            let saved =
                store.load_analytics(now_ms() - crate::analytics::RETENTION_MS).await.map_err(store_err)?;
            analytics.load(saved);
        }
        let sink = analytics.clone();
        hub.events().add_sink(Arc::new(move |event| sink.record(event, now_ms())));
        let writes = Arc::new(tokio::sync::Mutex::new(()));
        let webhooks = Arc::new(
            crate::webhooks::Webhooks::new(
                config.webhooks.clone(),
                store.clone(),
                snapshot.webhooks,
                metrics.webhooks.clone(),
                analytics.clone(),
                writes.clone(),
                redis.as_ref().map(|r| r.commands.clone()),
            )
            .map_err(StartError::Config)?,
        );
        let (filter, sink) = (webhooks.clone(), webhooks.clone());
        hub.events().set_payload_filter(Arc::new(move |app_id| filter.app_has_webhooks(app_id)));
        hub.events().add_sink(Arc::new(move |event| sink.observe(event)));
        let (config_lookups, metrics_lookups) = (config.limits.store_lookups_per_s, metrics.lookups.clone());
        let admission = Arc::new(crate::accept::Admission::new(
            config.limits.connections_per_ip,
            config.server.trusted_proxies.clone(),
        ));
        let capacity = crate::accept::Capacity::new(&config.limits);
        let state = AppState::new(Shared {
            config,
            store,
            apps,
            keys,
            tickets: match &redis {
                Some(redis) => crate::auth::ticket::TicketBook::in_redis(redis.commands.clone()),
                None => Default::default(),
            },
            limits: api_limits,
            metrics,
            analytics,
            shared_analytics,
            hub,
            node_id,
            started: Instant::now(),
            shutdown: CancellationToken::new(),
            tracker,
            writes,
            webhooks,
            redis,
            store_changes,
            lookups: crate::lookups::Lookups::new(config_lookups, metrics_lookups),
            admission,
            capacity,
        });
        Ok(Self { listener, state, bootstrap_key, marker, news })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// The admin key created on this start because the store had none; shown once.
    pub fn bootstrap_admin_key(&self) -> Option<&str> {
        self.bootstrap_key.as_deref()
    }

    /// Cancelling this token shuts the server down like a signal does.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.state.shutdown.clone()
    }

    /// The shared state (for tests and embedding).
    pub fn state(&self) -> AppState {
        self.state.clone()
    }

    /// Serves until `signal` resolves or the shutdown token fires, then closes every client with
    /// 1012 and waits for tasks within `server.shutdown_grace_s`. Returns whether the drain
    /// finished in time.
    pub async fn run(self, signal: impl Future<Output = ()> + Send + 'static) -> bool {
        let Server { listener, state, marker, news, .. } = self;
        let token = state.shutdown.clone();
        let tracker = state.tracker.clone();
        tracker.spawn({
            let token = token.clone();
            async move {
                tokio::select! {
                    _ = signal => token.cancel(),
                    _ = token.cancelled() => {}
                }
            }
        });
        tracker.spawn(reload_caches(state.clone(), marker));
        tracker.spawn(flush_key_uses(state.clone()));
        tracker.spawn(heartbeat(state.clone()));
        tracker.spawn(purge_deleted_apps(state.clone()));
        tracker.spawn(flush_analytics(state.clone()));
        state.webhooks.start(token.clone(), tracker.clone()).await;
        if let Some(redis) = &state.redis {
            redis.start(&token, &tracker);
            if let Some(news) = news {
                let (hub, token) = (state.hub.clone(), token.clone());
                tracker.spawn(async move {
                    tokio::select! {
                        _ = hub.follow(news) => {}
                        _ = token.cancelled() => {}
                    }
                });
            }
            // Clients may already be queued on the bound socket: serving them before the node
            // is subscribed in Redis would refuse their first subscribe and broadcast.
            if !redis.link.wait_up(STARTUP_REDIS_WAIT).await {
                tracing::warn!("Redis subscription not up yet; serving anyway, /health reports it");
            }
        }

        let grace = Duration::from_secs(state.config.server.shutdown_grace_s);
        tracing::info!(addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), node_id = %state.node_id, "roomcast listening");
        let accept = Arc::new(crate::accept::Listener {
            admission: state.admission.clone(),
            timeouts: crate::accept::Timeouts::new(&state.config.server),
            metrics: state.metrics.listener.clone(),
        });
        accept
            .run(listener, router(state.clone(), crate::session::router()), token.clone(), tracker.clone())
            .await;
        let closing = state.hub.shutdown();
        tracing::info!(connections = closing, "closing client connections with 1012");
        tracker.close();
        let drained = tokio::time::timeout(grace, tracker.wait()).await.is_ok();
        save_analytics(&state).await;
        state.webhooks.flush_intake().await;
        if let Some(redis) = &state.redis {
            redis.state.deregister().await;
        }
        if let Err(e) = state.store.touch_keys(&state.keys.unflushed_uses()).await {
            tracing::warn!(error = %e, "could not record key use times at shutdown");
        }
        if drained {
            tracing::info!("shutdown complete");
        } else {
            tracing::warn!(
                grace_s = grace.as_secs(),
                tasks = tracker.len(),
                "shutdown grace period ended with tasks still running"
            );
        }
        drained
    }
}

/// Opens the configured store: the SQLite file, or Redis.
pub async fn open_store(config: &Config) -> Result<Arc<dyn Store>, StartError> {
    let store_err = |source| StartError::Store { path: store_name(config), source };
    Ok(match (&config.store.kind, &config.cluster.redis_url) {
        (StoreKind::Redis, Some(url)) => Arc::new(
            crate::store::redis::RedisStore::connect(
                url,
                config.cluster.sharded_pubsub,
                &crate::redis_conn::TlsFiles::from_config(&config.cluster),
            )
            .await
            .map_err(store_err)?,
        ),
        (StoreKind::Redis, None) => {
            return Err(StartError::Config("store.kind = \"redis\" needs cluster.redis_url".into()));
        }
        (StoreKind::Sqlite, _) => Arc::new(SqliteStore::open(&config.store.path).map_err(store_err)?),
    })
}

/// What the store is, for messages: the SQLite path or the Redis URL.
fn store_name(config: &Config) -> String {
    match (&config.store.kind, &config.cluster.redis_url) {
        (StoreKind::Redis, Some(url)) => redact(url),
        _ => config.store.path.display().to_string(),
    }
}

/// A Redis URL without its password, for messages.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

/// Connections the kernel queues before `accept`. Reconnect storms (a node restarting, a load
/// test) arrive faster than one accept loop drains; the kernel caps this at `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 4096;

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket =
        if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Registers `admin_key` (or `ROOMCAST_ADMIN_KEY`), or creates an admin key when the store has
/// none. Returns the created key's plaintext, to be shown once.
async fn bootstrap_admin(
    config: &Config,
    store: &dyn Store,
    keys: &KeyRing,
) -> Result<Option<String>, StartError> {
    let store_err = |source| StartError::Store { path: store_name(config), source };
    if let Some(raw) = &config.admin_key {
        let presented = PresentedKey::parse(raw).filter(|k| k.kind == KeyKind::Admin).ok_or_else(|| {
            StartError::Config(
                "ROOMCAST_ADMIN_KEY (admin_key) must have the form rc_admin_<12 base62 key id>_<32 base62 secret>".into(),
            )
        })?;
        let record = admin_record(&presented, "bootstrap");
        match keys.get(&presented.key_id) {
            Some(existing)
                if existing.record.secret_hash == record.secret_hash
                    && existing.record.kind == KeyKind::Admin => {}
            Some(_) => {
                return Err(StartError::Config(
                    "ROOMCAST_ADMIN_KEY (admin_key): its key id is already registered with another secret"
                        .into(),
                ));
            }
            None => match store.insert_key(&record).await {
                // Another node started with the same key registered it first: fine if it matches.
                Ok(()) | Err(StoreError::Conflict) => {
                    let snapshot = store.snapshot().await.map_err(store_err)?;
                    let stored = snapshot.keys.into_iter().find(|k| k.key_id == record.key_id);
                    if stored.as_ref().is_none_or(|k| k.secret_hash != record.secret_hash) {
                        return Err(StartError::Config(
                            "ROOMCAST_ADMIN_KEY (admin_key): its key id is already registered with another secret".into(),
                        ));
                    }
                    keys.put(record);
                }
                Err(e) => return Err(store_err(e)),
            },
        }
        return Ok(None);
    }
    if keys.has_admin() {
        return Ok(None);
    }
    let presented = PresentedKey::generate(KeyKind::Admin);
    let record = admin_record(&presented, "bootstrap");
    store.insert_key(&record).await.map_err(store_err)?;
    keys.put(record);
    Ok(Some(presented.plaintext()))
}

/// A stored admin key for `presented`.
pub fn admin_record(presented: &PresentedKey, name: &str) -> KeyRecord {
    KeyRecord {
        key_id: presented.key_id.clone(),
        kind: KeyKind::Admin,
        app_id: None,
        name: name.to_owned(),
        scopes: vec!["admin:full".into()],
        secret_hash: presented.secret_hash(),
        primary: false,
        created_at: now_ms(),
        expires_at: None,
        last_used_at: None,
        revoked_at: None,
    }
}

/// Reloads the caches when another process (such as `roomcast admin create-key`) changed the
/// store.
async fn reload_caches(state: AppState, mut marker: u64) {
    let mut tick = tokio::time::interval(Duration::from_millis(state.config.store.reload_interval_ms));
    // In a cluster a write on any node is announced, so the reload follows at once.
    let announced = state.store_changes.clone();
    let announcement = async || match &announced {
        Some(n) => n.notified().await,
        None => std::future::pending().await,
    };
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = tick.tick() => {}
            _ = announcement() => state.lookups.changed(),
        }
        let current = match state.store.change_marker().await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "cannot poll the store for changes");
                continue;
            }
        };
        if marker != current {
            // Held so that no API write lands between the snapshot and the cache replacement.
            let _writes = state.writes.lock().await;
            if let Err(e) = refill_caches(&state).await {
                tracing::warn!(error = %e, "cannot reload the store");
                continue;
            }
            tracing::info!("reloaded apps and keys after an outside change to the store");
        }
        marker = current;
    }
}

/// Replaces the app and key caches with the store's contents, and closes with 4003 the
/// connections of apps another node (or process) disabled or deleted; the caller holds
/// `state.writes`.
async fn refill_caches(state: &AppState) -> Result<(), StoreError> {
    let snapshot = state.store.snapshot().await?;
    let stopped = state.apps.replace_all(snapshot.apps);
    state.keys.replace_all(snapshot.keys);
    state.webhooks.replace_all(snapshot.webhooks);
    state.lookups.changed();
    for app_id in stopped {
        let closed = state.hub.close_connections(Some(&app_id), crate::protocol::CloseCode::AppDisabled);
        tracing::info!(app_id = %app_id, connections = closed, "app disabled or deleted elsewhere; its connections are closed");
    }
    Ok(())
}

/// How often apps past their restore window are looked for (also once in [`Server::build`]).
const PURGE_EVERY: Duration = Duration::from_secs(3600);

/// Erases apps soft-deleted more than 30 days ago, with their keys, and drops them from the
/// caches; their ids can then be taken again.
async fn purge_deleted_apps(state: AppState) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + PURGE_EVERY, PURGE_EVERY);
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let _writes = state.writes.lock().await;
        let cutoff = now_ms() - RESTORE_WINDOW_MS;
        let purged = match state.store.purge_deleted(cutoff).await {
            Ok(purged) if purged.is_empty() => continue,
            Ok(purged) => purged,
            Err(e) => {
                tracing::warn!(error = %e, "cannot purge deleted apps");
                continue;
            }
        };
        if let Err(e) = refill_caches(&state).await {
            tracing::warn!(error = %e, "cannot reload the store after a purge");
        }
        for app_id in &purged {
            state.analytics.forget(app_id);
            if let Some(shared) = &state.shared_analytics
                && let Err(e) = shared.forget(app_id, now_ms()).await
            {
                tracing::warn!(error = %e, app_id = %app_id, "cannot erase a purged app's analytics in Redis");
            }
        }
        tracing::info!(apps = ?purged, "purged apps deleted more than 30 days ago");
    }
}

/// Drives heartbeats: once a second, closes connections silent for `idle_timeout_s` and pings
/// the connections whose turn it is, so each is pinged every `heartbeat_s` without a timer per
/// connection.
async fn heartbeat(state: AppState) {
    let ws = &state.config.websocket;
    let (ping_every, idle_ms) = (ws.heartbeat_s, ws.idle_timeout_s * 1000);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n = 0u64;
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        n += 1;
        state.hub.heartbeat(n, ping_every, idle_ms);
        state.capacity.refresh_memory();
        state.tickets.sweep(crate::clock::now_ms());
        if n.is_multiple_of(60) {
            state.limits.sweep();
            state.lookups.sweep();
        }
        if n.is_multiple_of(5) {
            state.metrics.upkeep();
        }
    }
}

/// How often analytics are written to the store: a crash loses at most this much.
const ANALYTICS_FLUSH: Duration = Duration::from_secs(10);
/// How often a cluster node adds its counts to the shared buckets: other nodes report them
/// this much later.
const SHARED_ANALYTICS_FLUSH: Duration = Duration::from_secs(1);

/// Writes analytics minutes and user sightings that changed, every [`ANALYTICS_FLUSH`] (every
/// [`SHARED_ANALYTICS_FLUSH`] in a cluster).
async fn flush_analytics(state: AppState) {
    let every = if state.shared_analytics.is_some() { SHARED_ANALYTICS_FLUSH } else { ANALYTICS_FLUSH };
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        save_analytics(&state).await;
    }
}

async fn save_analytics(state: &AppState) {
    let now = now_ms();
    state.analytics.tick(now);
    if let Some(shared) = &state.shared_analytics {
        let deltas = state.analytics.take_deltas();
        if let Err(e) = shared.flush(&deltas).await {
            tracing::warn!(error = %e, "cannot add analytics to Redis; will retry");
            state.analytics.restore(deltas);
        }
        return;
    }
    let rows = state.analytics.take_dirty();
    if rows.minutes.is_empty() && rows.sketches.is_empty() {
        return;
    }
    if let Err(e) = state.store.save_analytics(rows.clone(), now - crate::analytics::RETENTION_MS, now).await
    {
        tracing::warn!(error = %e, "cannot save analytics; will retry");
        state.analytics.mark_dirty(&rows);
    }
}

/// Persists key `last_used_at` times in batches, off the request path.
async fn flush_key_uses(state: AppState) {
    let mut tick = tokio::time::interval(KEY_USE_FLUSH);
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let used = state.keys.unflushed_uses();
        if !used.is_empty()
            && let Err(e) = state.store.touch_keys(&used).await
        {
            tracing::warn!(error = %e, "cannot record key use times");
        }
    }
}

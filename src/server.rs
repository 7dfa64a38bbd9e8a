//! Wires everything from a [`Config`]: store, caches, admin bootstrap, hub, listener and
//! background tasks. [`Server`] is what `main` and the tests start.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::apps::{AppCache, RESTORE_WINDOW_MS};
use crate::auth::api_key::{KeyRing, PresentedKey};
use crate::clock::now_ms;
use crate::config::{Config, StoreKind};
use crate::http::{AppState, Guards, NodeInfo, Shared, router};
use crate::hub::local::{LocalBroker, LocalCluster};
use crate::hub::registry::Registry;
use crate::hub::{Broker, BrokerError, ClusterState, Fanout, Hub, OutboxLimits};
use crate::store::sqlite::SqliteStore;
use crate::store::{KeyKind, KeyRecord, Store, StoreError};

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
        let app_cache = Arc::new(AppCache::default());
        app_cache.replace_all(snapshot.apps);
        let keys = KeyRing::default();
        keys.replace_all(snapshot.keys);
        let bootstrap_key = bootstrap_admin(&config, store.as_ref(), &keys).await?;

        let listener = bind(config.server.listen)
            .map_err(|source| StartError::Bind { addr: config.server.listen, source })?;
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let limits = OutboxLimits {
            messages: config.websocket.outbound_queue_messages,
            bytes: config.websocket.outbound_queue_bytes,
        };
        // The hub, over the local or the Redis implementations of its ports.
        let registry = Arc::new(Registry::with_history_bound(config.history.max_bytes as usize));
        let fanout = Arc::new(Fanout::new(registry.clone(), metrics.hub.clone()));
        let (cluster, news) = match &config.cluster.redis_url {
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
        let (broker, cluster_state): (Arc<dyn Broker>, Arc<dyn ClusterState>) = match &cluster {
            Some(node) => (node.broker.clone(), node.state.clone()),
            None => (Arc::new(LocalBroker::new(fanout.clone())), Arc::new(LocalCluster::new(registry))),
        };
        let hub = Arc::new(
            Hub::new(fanout, broker, cluster_state, limits)
                .with_presence_list_max(config.limits.presence_members_listed)
                .with_retention(retention_of(app_cache.clone(), config.history.clone())),
        );
        // The services.
        let commands = cluster.as_ref().map(|c| c.commands.clone());
        let stats = Arc::new(match &cluster {
            // A cluster's analytics live in Redis; a single node's in the store.
            Some(c) => crate::analytics::Stats::clustered(
                store.clone(),
                crate::analytics::redis::SharedAnalytics::new(
                    c.commands.clone(),
                    &node_id,
                    config.cluster.node_timeout_ms,
                    c.link.epoch(),
                ),
            ),
            None => crate::analytics::Stats::single(store.clone()).await.map_err(store_err)?,
        });
        let sink = stats.counts().clone();
        hub.events().add_sink(Arc::new(move |event| sink.record(event, now_ms())));
        let writes = Arc::new(tokio::sync::Mutex::new(()));
        let webhooks = Arc::new(
            crate::webhooks::Webhooks::new(
                config.webhooks.clone(),
                store.clone(),
                snapshot.webhooks,
                metrics.webhooks.clone(),
                stats.counts().clone(),
                writes.clone(),
                commands.clone(),
            )
            .map_err(StartError::Config)?,
        );
        let (filter, sink) = (webhooks.clone(), webhooks.clone());
        // Publications carry their data for webhooks and for open debug consoles.
        let watchers = Arc::new(crate::http::dashboard::debug::Watchers::default());
        let watching = watchers.clone();
        hub.events().set_payload_filter(Arc::new(move |app_id| {
            filter.app_has_webhooks(app_id) || watching.watching(app_id)
        }));
        hub.events().add_sink(Arc::new(move |event| sink.observe(event)));
        let idempotency = Arc::new(crate::idempotency::Idempotency::new(
            config.history.idempotency_window_s,
            commands.clone(),
        ));
        let tickets = match commands {
            Some(commands) => crate::auth::ticket::TicketBook::in_redis(commands),
            None => Default::default(),
        };
        let auth = Arc::new(crate::auth::Auth::new(keys, tickets, store.clone()));
        let sessions =
            Arc::new(crate::http::dashboard::Sessions::open(store.clone()).await.map_err(store_err)?);
        let apps = Arc::new(crate::apps::Apps::new(crate::apps::Parts {
            store,
            cache: app_cache,
            auth: auth.clone(),
            webhooks: webhooks.clone(),
            stats: stats.clone(),
            hub: hub.clone(),
            lookups: crate::lookups::Lookups::new(config.limits.store_lookups_per_s, metrics.lookups.clone()),
            writes,
        }));
        // Weak: the app service holds the webhook service.
        let secrets_of = Arc::downgrade(&apps);
        webhooks.use_app_secrets(Arc::new(move |app_id| {
            secrets_of.upgrade()?.cache().get(app_id).map(|app| app.secret.clone())
        }));
        let guards = Guards {
            limits: Arc::new(crate::limits::ApiLimits::new(&config.limits)),
            admission: Arc::new(crate::accept::Admission::new(
                config.limits.connections_per_ip,
                config.server.trusted_proxies.clone(),
            )),
            capacity: Arc::new(crate::accept::Capacity::new(&config.limits)),
        };
        let node = NodeInfo {
            id: node_id,
            started: Instant::now(),
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
            cluster,
        };
        let state = AppState::new(Shared {
            config,
            hub,
            apps,
            auth,
            webhooks,
            stats,
            idempotency,
            metrics,
            guards,
            node,
            sessions,
            watchers,
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
        self.state.node.shutdown.clone()
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
        let (token, tracker) = (state.node.shutdown.clone(), state.node.tracker.clone());
        tracker.spawn({
            let token = token.clone();
            async move {
                tokio::select! {
                    _ = signal => token.cancel(),
                    _ = token.cancelled() => {}
                }
            }
        });
        // Each owner starts its background jobs; all stop on the token.
        let ws = &state.config.websocket;
        state.hub.start_heartbeats(ws.heartbeat_s, ws.idle_timeout_s * 1000, &token, &tracker);
        state.hub.start_history_upkeep(&token, &tracker);
        state.auth.start(&token, &tracker);
        state.stats.start(&token, &tracker);
        state.idempotency.start(&token, &tracker);
        state.metrics.start(&token, &tracker);
        state.guards.limits.start(&token, &tracker);
        state.guards.capacity.start(&token, &tracker);
        state.webhooks.start(token.clone(), tracker.clone()).await;
        let reload_every = Duration::from_millis(state.config.store.reload_interval_ms);
        let announced =
            state.node.cluster.as_ref().map(|c| c.broker.notify_on(crate::store::redis::CHANGED_CHANNEL));
        state.apps.start(marker, reload_every, announced, &token, &tracker);
        if let Some(cluster) = &state.node.cluster {
            cluster.start(&token, &tracker);
            if let Some(news) = news {
                tracker.spawn(state.hub.clone().follow(news, token.clone()));
            }
            // Clients may already be queued on the bound socket: serving them before the node
            // is subscribed in Redis would refuse their first subscribe and broadcast.
            if !cluster.link.wait_up(STARTUP_REDIS_WAIT).await {
                tracing::warn!("Redis subscription not up yet; serving anyway, /health reports it");
            }
        }

        let grace = Duration::from_secs(state.config.server.shutdown_grace_s);
        tracing::info!(addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), node_id = %state.node.id, "roomcast listening");
        let accept = Arc::new(crate::accept::Listener {
            admission: state.guards.admission.clone(),
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
        state.stats.save().await;
        state.webhooks.flush_intake().await;
        if let Some(cluster) = &state.node.cluster {
            cluster.state.deregister().await;
        }
        state.auth.flush_key_uses().await;
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

/// What each app's rooms keep: its `history`, else the configured defaults.
fn retention_of(apps: Arc<AppCache>, defaults: crate::config::HistoryConfig) -> crate::hub::RetentionOf {
    Arc::new(move |app_id| {
        let (size, ttl_s) = match apps.get(app_id).and_then(|a| a.history) {
            Some(h) => (h.size, h.ttl_s),
            None => (defaults.size, defaults.ttl_s),
        };
        crate::hub::stream::Keep { size: size as usize, ttl_ms: i64::from(ttl_s) * 1000 }
    })
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

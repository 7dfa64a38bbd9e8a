//! The HTTP side: shared state, authentication of API keys, and the router that merges each
//! API area's routes.

pub mod analytics;
pub mod apps;
pub mod broadcast;
pub mod client;
pub mod dashboard;
pub mod error;
pub mod extract;
pub mod health;
pub mod keys;
pub mod observe;
pub mod openapi;
pub mod pusher;
pub mod rooms;
pub mod tickets;
pub mod token;
pub mod webhooks;

use std::ops::Deref;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::apps::{Apps, is_active};
use crate::auth::Auth;
use crate::auth::api_key::PresentedKey;
use crate::auth::token::{Identity, peek_app_id, verify};
use crate::clock::now_ms;
use crate::config::Config;
use crate::hub::Hub;
use crate::store::{AppRecord, KeyKind, WebhookRecord};
use error::ApiError;
use extract::{KeySource, Principal};

/// Everything a request handler or a WebSocket session may need; cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Shared>);

/// The parts of [`AppState`]: the configuration, the hub, the services, and the edge's own.
#[derive(Debug)]
pub struct Shared {
    pub config: Config,
    pub hub: Arc<Hub>,
    /// Apps and keys: writes, caches, lifecycle.
    pub apps: Arc<Apps>,
    /// Key cache and tickets.
    pub auth: Arc<Auth>,
    pub webhooks: Arc<crate::webhooks::Webhooks>,
    pub stats: Arc<crate::analytics::Stats>,
    /// Broadcasts' idempotency keys.
    pub idempotency: Arc<crate::idempotency::Idempotency>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Rate limits and connection bounds.
    pub guards: Guards,
    /// This process: its id, its tasks, its cluster parts.
    pub node: NodeInfo,
    /// Dashboard sign-in sessions.
    pub sessions: Arc<dashboard::Sessions>,
    /// Apps with a dashboard debug console open on this node.
    pub watchers: Arc<dashboard::debug::Watchers>,
}

/// What protects the edge: rate limits per app and per IP, connections per IP, the node's
/// bounds on connections and memory.
#[derive(Debug)]
pub struct Guards {
    pub limits: Arc<crate::limits::ApiLimits>,
    pub admission: Arc<crate::accept::Admission>,
    pub capacity: Arc<crate::accept::Capacity>,
}

/// This node of the cluster (or the only one).
#[derive(Debug)]
pub struct NodeInfo {
    pub id: String,
    pub started: Instant,
    /// Fires when the server begins to shut down.
    pub shutdown: CancellationToken,
    /// Every task and session; shutdown waits on it.
    pub tracker: TaskTracker,
    /// The cluster parts, in cluster mode.
    pub cluster: Option<Arc<crate::cluster::Node>>,
}

impl Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    /// Wraps the shared parts.
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }

    /// Checks a presented key against the cache: shape, kind for its header, secret, revocation,
    /// expiry, and for app keys the app's state. A key or app this node does not know (yet) is
    /// asked of the store first. Every failure before the secret check looks the same to the
    /// caller.
    pub async fn authenticate(&self, source: KeySource, raw: &str) -> Result<Principal, ApiError> {
        let presented = PresentedKey::parse(raw).ok_or(ApiError::InvalidKey)?;
        if source == KeySource::AdminHeader && presented.kind != KeyKind::Admin {
            return Err(ApiError::InvalidKey);
        }
        let key = self.apps.key(&presented.key_id).await?.ok_or(ApiError::InvalidKey)?;
        if key.record.kind != presented.kind || !key.secret_matches(&presented) {
            return Err(ApiError::InvalidKey);
        }
        self.admit(&key).await
    }

    /// The key `key_id` as a caller, without its secret (a dashboard session names its key):
    /// refused as [`AppState::authenticate`] refuses a revoked or expired key, or one whose app
    /// is gone or disabled.
    pub async fn key_principal(&self, key_id: &str) -> Result<Principal, ApiError> {
        let key = self.apps.key(key_id).await?.ok_or(ApiError::InvalidKey)?;
        self.admit(&key).await
    }

    /// The checks after a key's secret: revocation, expiry, its app's state.
    async fn admit(&self, key: &crate::auth::api_key::CachedKey) -> Result<Principal, ApiError> {
        if key.record.revoked_at.is_some() {
            return Err(ApiError::InvalidKey);
        }
        let now = now_ms();
        if key.record.expires_at.is_some_and(|exp| exp <= now) {
            return Err(ApiError::KeyExpired);
        }
        if let Some(app_id) = &key.record.app_id {
            let app = self.apps.app(app_id).await?.ok_or(ApiError::InvalidKey)?;
            if app.deleted_at.is_some() {
                return Err(ApiError::AppDeleted(app_id.clone()));
            }
            if !is_active(&app) {
                return Err(ApiError::AppDisabled);
            }
        }
        key.mark_used(now);
        Ok(Principal {
            kind: key.record.kind,
            key_id: key.record.key_id.clone(),
            app_id: key.record.app_id.clone(),
            scopes: key.scopes.clone(),
            expires_at: key.record.expires_at,
        })
    }

    /// The app, deleted or not, asking the store when this node does not know it as active.
    pub async fn app(&self, app_id: &str) -> Result<Option<Arc<AppRecord>>, ApiError> {
        Ok(self.apps.app(app_id).await?)
    }

    /// The webhook, asking the store first when this node does not know it.
    pub async fn webhook(&self, webhook_id: &str) -> Result<Option<Arc<WebhookRecord>>, ApiError> {
        Ok(self.apps.webhook(webhook_id).await?)
    }
}

impl AppState {
    /// Charges an authenticated call to its bucket (the app's, or the admin keys'), noting the
    /// bucket state for the `X-RateLimit-*` headers; 429 past the limit.
    pub fn charge(
        &self,
        principal: &Principal,
        slot: Option<&crate::limits::RateSlot>,
    ) -> Result<(), ApiError> {
        let info = match &principal.app_id {
            Some(app_id) => {
                let per_minute = self.apps.cache().get(app_id).map_or(1, |a| a.rate_limit);
                self.guards.limits.charge_app(app_id, per_minute)
            }
            None => self.guards.limits.charge_admin(),
        };
        Self::report(info, slot)
    }

    /// Charges a call to its client IP's bucket in `buckets` (`limits.ips` for `/api/token` and
    /// `/api/tickets`, `limits.upgrades` for `/ws`); free when the IP is unknown or the group is
    /// switched off.
    pub fn charge_ip(
        buckets: &crate::limits::IpBuckets,
        ip: Option<std::net::IpAddr>,
        slot: Option<&crate::limits::RateSlot>,
    ) -> Result<(), ApiError> {
        match ip.and_then(|ip| buckets.charge(ip)) {
            Some(info) => Self::report(info, slot),
            None => Ok(()),
        }
    }

    fn report(info: crate::limits::RateInfo, slot: Option<&crate::limits::RateSlot>) -> Result<(), ApiError> {
        if let Some(slot) = slot {
            slot.set(info);
        }
        match info.retry_after {
            Some(retry_after) => Err(ApiError::RateLimited { retry_after }),
            None => Ok(()),
        }
    }

    /// The app with this id unless it is unknown or soft-deleted (404 then).
    pub async fn live_app(&self, app_id: &str) -> Result<Arc<AppRecord>, ApiError> {
        self.app(app_id)
            .await?
            .filter(|a| a.deleted_at.is_none())
            .ok_or_else(|| ApiError::NotFound(format!("no app {app_id:?}")))
    }

    /// Verifies a client JWT against its app's current secret (DESIGN §3). A token that the
    /// cached secret refuses is tried again with the store's, which another node may have
    /// just regenerated.
    pub async fn verify_client_token(&self, token: &str) -> Result<Identity, ApiError> {
        let invalid = || ApiError::InvalidToken("invalid token".into());
        let app_id = peek_app_id(token).ok_or_else(invalid)?;
        let leeway = self.config.tokens.leeway_s;
        match self.apps.check_app(&app_id, |app| verify(token, &app.secret, leeway)).await? {
            Some(Ok(identity)) => Ok(identity),
            Some(Err(e)) => {
                tracing::debug!(error = %e, "token refused");
                Err(invalid())
            }
            None => Err(invalid()),
        }
    }
}

/// The whole HTTP surface: the API areas' routes and `edges` (the WebSocket endpoints, which
/// sit beside this module, not below it).
pub fn router(state: AppState, edges: Router<AppState>) -> Router {
    Router::new()
        .merge(health::router())
        .merge(keys::router())
        .merge(apps::router())
        .merge(token::router())
        .merge(tickets::router())
        .merge(broadcast::router())
        .merge(rooms::router())
        .merge(analytics::router())
        .merge(webhooks::router())
        .merge(edges)
        .merge(openapi::router())
        .merge(client::router())
        .merge(pusher::router())
        .merge(dashboard::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(crate::limits::headers))
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe::observe))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// ISO 8601 UTC, millisecond precision, from ms since the epoch.
pub fn iso8601(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let f = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.format(&f).unwrap_or_default()
}

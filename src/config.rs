//! The typed configuration tree: built-in defaults, then `config/roomcast.toml` (or `--config`),
//! then `ROOMCAST_*` environment variables with `__` between levels.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Where the configuration file is looked for when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "config/roomcast.toml";

/// Every setting of the hub, one sub-struct per subsystem.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// An admin key (`rc_admin_<key_id>_<secret>`) registered at start, usually set as
    /// `ROOMCAST_ADMIN_KEY` by deployment scripts.
    pub admin_key: Option<String>,
    pub server: ServerConfig,
    pub store: StoreConfig,
    pub limits: LimitsConfig,
    pub websocket: WebSocketConfig,
    pub apps: AppsConfig,
    pub tokens: TokensConfig,
    pub log: LogConfig,
    pub metrics: MetricsConfig,
    pub webhooks: WebhooksConfig,
    pub cluster: ClusterConfig,
    pub history: HistoryConfig,
}

/// HTTP listener and process lifetime.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address the HTTP and WebSocket listener binds.
    pub listen: SocketAddr,
    /// Seconds allowed for draining connections on shutdown before the process exits.
    pub shutdown_grace_s: u64,
    /// Peers whose `X-Forwarded-For` is believed (addresses or CIDR ranges); the client IP is
    /// the right-most address in that header not itself in this list.
    pub trusted_proxies: Vec<IpNet>,
    /// Seconds a connection may take to send a request's headers, from its first byte (from
    /// the accept for a new connection); slower ones are closed.
    pub header_timeout_s: u64,
    /// Seconds a keep-alive HTTP connection may sit idle between requests before it is closed.
    /// A connection upgraded to a WebSocket is governed by the heartbeat instead.
    pub http_idle_timeout_s: u64,
    /// Seconds a request (its body included) may take from its headers to its answer.
    pub request_timeout_s: u64,
}

/// The embedded store.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite` (embedded, default); `redis` is reserved for cluster mode.
    pub kind: StoreKind,
    /// SQLite database file; its directory is created when missing.
    pub path: PathBuf,
    /// How often (ms) the store is checked for changes made by other processes, such as
    /// `roomcast admin create-key`, so the in-memory caches pick them up.
    pub reload_interval_ms: u64,
}

/// Which store backs apps and keys.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    Sqlite,
    Redis,
}

/// Size limits for messages and bodies.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest event `data` (compact JSON) and largest incoming WebSocket message, in bytes.
    pub max_message_bytes: usize,
    /// Largest HTTP request body, in bytes.
    pub max_body_bytes: usize,
    /// Rooms one connection may be subscribed to at once.
    pub max_rooms_per_connection: usize,
    /// Events in one `POST /api/broadcast/batch`.
    pub max_batch_events: usize,
    /// Client frames per second per connection (pings included).
    pub client_messages_per_second: u32,
    /// Client frames a connection may send at once above the steady rate.
    pub client_messages_burst: u32,
    /// Refused frames in a row after which the connection is closed with 4029.
    pub client_abuse_close_after: u32,
    /// API requests per minute shared by all admin keys.
    pub admin_rate_limit: u32,
    /// Requests per minute per client IP on `/api/token` and `/api/tickets`.
    pub ip_rate_limit: u32,
    /// WebSocket upgrade attempts per minute per client IP; 0 turns the limit off.
    pub upgrade_rate_limit: u32,
    /// Presence members listed in a `subscribed` frame; `member_count` is always exact.
    pub presence_members_listed: usize,
    /// Store reads per second one node makes for credentials its caches do not know (an app,
    /// key or webhook created on another node a moment ago, or a forged one).
    pub store_lookups_per_s: u32,
    /// Open connections per client IP (TCP connections of a direct client, WebSockets of a
    /// client behind a trusted proxy); over it, new ones are refused.
    pub connections_per_ip: u32,
    /// WebSocket connections this node serves at once; past it, upgrades get 503. Unset: the
    /// open-files limit less 512 for the store, Redis, webhooks and HTTP calls.
    pub max_connections: Option<u32>,
    /// Resident memory (MiB) past which this node refuses new WebSocket connections with 503.
    pub max_memory_mb: Option<u64>,
}

/// WebSocket sessions.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WebSocketConfig {
    /// Seconds between server pings.
    pub heartbeat_s: u64,
    /// A connection that sent nothing (not even a pong) for this many seconds is closed.
    pub idle_timeout_s: u64,
    /// Frames waiting for one client; a client whose queue is full is closed with 4008.
    pub outbound_queue_messages: usize,
    /// Bytes of frames waiting for one client; over this the client is closed with 4008.
    pub outbound_queue_bytes: usize,
    /// Socket read buffer per connection, in bytes.
    pub read_buffer_bytes: usize,
    /// Bytes buffered before the writer flushes to the socket.
    pub write_buffer_bytes: usize,
    /// Bytes a slow client may leave unflushed before it is closed with 4008.
    pub max_write_buffer_bytes: usize,
}

/// Defaults for new apps.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AppsConfig {
    /// HTTP requests per minute for a new app's keys.
    pub default_rate_limit: u32,
    /// Concurrent WebSocket connections for a new app.
    pub default_max_connections: u32,
}

/// Room history and recovery (DESIGN §11).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HistoryConfig {
    /// Events a room keeps for an app that sets no `history.size`; 0 turns history off.
    pub size: u32,
    /// Seconds each kept event stays, for an app that sets no `history.ttl_s`.
    pub ttl_s: u32,
    /// The largest `history.size` an app may set.
    pub max_size: u32,
    /// The largest `history.ttl_s` an app may set.
    pub max_ttl_s: u32,
    /// Bytes of history this node keeps in memory at most (single node; a cluster keeps history
    /// in Redis); past it the oldest events of the least recently published rooms go.
    pub max_bytes: u64,
    /// Seconds within which a broadcast repeating an `idempotency_key` publishes nothing.
    pub idempotency_window_s: u32,
}

/// Client JWTs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TokensConfig {
    /// Lifetime of a token from `POST /api/token` when the request names none, in seconds.
    pub default_ttl_s: u64,
    /// Clock skew tolerated when checking `exp`, in seconds.
    pub leeway_s: u64,
}

/// Logging.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `roomcast=debug`; `RUST_LOG` wins when set.
    pub level: String,
}

/// Log line format.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// `GET /metrics`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// When set, `/metrics` answers only `Authorization: Bearer <token>`.
    pub token: Option<String>,
}

/// Webhook deliveries (DESIGN §6).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Allows targets on loopback, private, link-local, CGNAT, multicast and metadata addresses.
    pub allow_private_targets: bool,
    /// Time for one attempt, connect to last response byte, in seconds.
    pub timeout_s: u64,
    /// Delays before each retry, in milliseconds (each varied by ±20 %); once used up the
    /// delivery fails.
    pub retry_delays_ms: Vec<u64>,
    /// Consecutive failed attempts that disable a webhook.
    pub disable_after_failures: u32,
    /// Attempts in flight at once, over all webhooks.
    pub max_in_flight: usize,
    /// Attempts in flight at once to one webhook.
    pub max_in_flight_per_webhook: usize,
    /// Webhooks one app may register.
    pub max_per_app: usize,
    /// Matched events waiting to be written to the store; more are dropped and counted.
    pub queue_capacity: usize,
    /// Days succeeded and failed deliveries stay in the log.
    pub log_retention_days: u64,
    /// Cluster mode: a waiting delivery this long past due (its node stopped, or is far behind)
    /// is claimed by any node, in milliseconds; nodes look every half of it.
    pub claim_overdue_after_ms: u64,
}

/// Cluster mode (Redis). Empty `redis_url` means a single node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    pub redis_url: Option<String>,
    /// This node's id; a random one is chosen at start when absent.
    pub node_id: Option<String>,
    /// A node that has not refreshed its liveness in Redis for this long is dead, and the
    /// others remove its subscriber counts. It refreshes every third of it.
    pub node_timeout_ms: u64,
    /// `redis_url` is a Redis 7 Cluster (seed URLs, comma-separated): connect with the cluster
    /// client and publish rooms with SPUBLISH/SSUBSCRIBE, so each publication reaches only the
    /// shard that owns its room.
    pub sharded_pubsub: bool,
    /// A PEM file with the authority `rediss://` servers are checked against, instead of the
    /// system's (a private CA).
    pub redis_ca_file: Option<PathBuf>,
    /// A PEM certificate and its PEM key that the node presents to `rediss://` servers that
    /// ask clients for one (mutual TLS); both or neither.
    pub redis_client_cert_file: Option<PathBuf>,
    pub redis_client_key_file: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            shutdown_grace_s: 3,
            trusted_proxies: ["127.0.0.0/8", "::1/128"]
                .iter()
                .map(|net| net.parse().expect("a valid CIDR literal"))
                .collect(),
            header_timeout_s: 10,
            http_idle_timeout_s: 60,
            request_timeout_s: 60,
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self { kind: StoreKind::Sqlite, path: PathBuf::from("data/roomcast.db"), reload_interval_ms: 1000 }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: 64 * 1024,
            max_body_bytes: 1024 * 1024,
            max_rooms_per_connection: 100,
            max_batch_events: 100,
            client_messages_per_second: 10,
            client_messages_burst: 20,
            client_abuse_close_after: 100,
            admin_rate_limit: 6000,
            ip_rate_limit: 100,
            upgrade_rate_limit: 1200,
            presence_members_listed: 1000,
            store_lookups_per_s: 100,
            connections_per_ip: 1000,
            max_connections: None,
            max_memory_mb: None,
        }
    }
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        Self {
            heartbeat_s: 25,
            idle_timeout_s: 60,
            outbound_queue_messages: 1024,
            outbound_queue_bytes: 4 * 1024 * 1024,
            read_buffer_bytes: 512,
            write_buffer_bytes: 16 * 1024,
            max_write_buffer_bytes: 4 * 1024 * 1024,
        }
    }
}

impl Default for AppsConfig {
    fn default() -> Self {
        Self { default_rate_limit: 1000, default_max_connections: 100_000 }
    }
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self {
            size: 100,
            ttl_s: 300,
            max_size: 10_000,
            max_ttl_s: 86_400,
            max_bytes: 256 << 20,
            idempotency_window_s: 300,
        }
    }
}

impl Default for TokensConfig {
    fn default() -> Self {
        Self { default_ttl_s: 86_400, leeway_s: 30 }
    }
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            allow_private_targets: false,
            timeout_s: 10,
            retry_delays_ms: vec![1_000, 5_000, 30_000, 120_000, 600_000, 3_600_000],
            disable_after_failures: 100,
            max_in_flight: 256,
            max_in_flight_per_webhook: 16,
            max_per_app: 20,
            queue_capacity: 10_000,
            log_retention_days: 7,
            claim_overdue_after_ms: 30_000,
        }
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            redis_url: None,
            node_id: None,
            node_timeout_ms: 30_000,
            sharded_pubsub: false,
            redis_ca_file: None,
            redis_client_cert_file: None,
            redis_client_key_file: None,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: LogFormat::Text, level: "info".to_owned() }
    }
}

/// A configuration that could not be loaded; the message names every offending key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("invalid configuration:\n{}", .0.join("\n"))]
    Invalid(Vec<String>),
}

/// One figment error as `key: problem (source)`, with the key in config-file spelling.
fn describe(e: figment::Error) -> String {
    let key = e.path.iter().map(|p| p.to_ascii_lowercase()).collect::<Vec<_>>().join(".");
    let source = match &e.metadata {
        Some(m) if m.name.contains("environment") => {
            format!(" (from environment variable ROOMCAST_{})", e.path.join("__").to_ascii_uppercase())
        }
        Some(m) => match &m.source {
            Some(source) => format!(" (from {source})"),
            None => format!(" (from {})", m.name),
        },
        None => String::new(),
    };
    let key = if key.is_empty() { "(top level)".to_owned() } else { key };
    format!("{key}: {}{source}", e.kind)
}

impl Config {
    /// Loads defaults, then the file (`path`, or [`DEFAULT_CONFIG_PATH`] when it exists), then
    /// the `ROOMCAST_*` environment.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        match path {
            Some(path) => {
                if let Err(e) = std::fs::metadata(path) {
                    return Err(ConfigError::File { path: path.to_owned(), reason: e.to_string() });
                }
                figment = figment.merge(Toml::file_exact(path));
            }
            None => {
                if Path::new(DEFAULT_CONFIG_PATH).exists() {
                    figment = figment.merge(Toml::file_exact(DEFAULT_CONFIG_PATH));
                }
            }
        }
        let config: Config = figment
            .merge(Env::prefixed("ROOMCAST_").split("__"))
            .extract()
            .map_err(|e| ConfigError::Invalid(e.into_iter().map(describe).collect()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks relations the types cannot express; reports every problem at once.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let mut positive = |key: &str, value: u64| {
            if value == 0 {
                problems.push(format!("{key}: must be greater than 0"));
            }
        };
        positive("limits.max_message_bytes", self.limits.max_message_bytes as u64);
        positive("limits.max_body_bytes", self.limits.max_body_bytes as u64);
        positive("limits.max_rooms_per_connection", self.limits.max_rooms_per_connection as u64);
        positive("limits.max_batch_events", self.limits.max_batch_events as u64);
        positive("limits.client_messages_per_second", u64::from(self.limits.client_messages_per_second));
        positive("limits.client_messages_burst", u64::from(self.limits.client_messages_burst));
        positive("limits.client_abuse_close_after", u64::from(self.limits.client_abuse_close_after));
        positive("limits.admin_rate_limit", u64::from(self.limits.admin_rate_limit));
        positive("limits.ip_rate_limit", u64::from(self.limits.ip_rate_limit));
        positive("limits.store_lookups_per_s", u64::from(self.limits.store_lookups_per_s));
        positive("limits.connections_per_ip", u64::from(self.limits.connections_per_ip));
        if let Some(n) = self.limits.max_connections {
            positive("limits.max_connections", u64::from(n));
        }
        if let Some(n) = self.limits.max_memory_mb {
            positive("limits.max_memory_mb", n);
        }
        positive("server.header_timeout_s", self.server.header_timeout_s);
        positive("server.http_idle_timeout_s", self.server.http_idle_timeout_s);
        positive("server.request_timeout_s", self.server.request_timeout_s);
        positive("websocket.heartbeat_s", self.websocket.heartbeat_s);
        positive("websocket.idle_timeout_s", self.websocket.idle_timeout_s);
        positive("websocket.outbound_queue_messages", self.websocket.outbound_queue_messages as u64);
        positive("websocket.read_buffer_bytes", self.websocket.read_buffer_bytes as u64);
        positive("apps.default_rate_limit", u64::from(self.apps.default_rate_limit));
        positive("tokens.default_ttl_s", self.tokens.default_ttl_s);
        positive("store.reload_interval_ms", self.store.reload_interval_ms);
        positive("webhooks.timeout_s", self.webhooks.timeout_s);
        positive("webhooks.disable_after_failures", u64::from(self.webhooks.disable_after_failures));
        positive("webhooks.max_in_flight", self.webhooks.max_in_flight as u64);
        positive("webhooks.max_in_flight_per_webhook", self.webhooks.max_in_flight_per_webhook as u64);
        positive("webhooks.max_per_app", self.webhooks.max_per_app as u64);
        positive("webhooks.queue_capacity", self.webhooks.queue_capacity as u64);
        positive("webhooks.log_retention_days", self.webhooks.log_retention_days);
        positive("webhooks.claim_overdue_after_ms", self.webhooks.claim_overdue_after_ms);
        positive("history.max_bytes", self.history.max_bytes);
        positive("history.idempotency_window_s", u64::from(self.history.idempotency_window_s));
        if self.history.size > self.history.max_size {
            problems.push("history.size: must be at most history.max_size".into());
        }
        if self.history.ttl_s > self.history.max_ttl_s {
            problems.push("history.ttl_s: must be at most history.max_ttl_s".into());
        }
        if self.history.size > 0 && self.history.ttl_s == 0 {
            problems.push("history.ttl_s: must be greater than 0 when history.size is".into());
        }
        if self.webhooks.retry_delays_ms.len() > 20 {
            problems.push("webhooks.retry_delays_ms: at most 20 retries".into());
        }
        if self.cluster.node_timeout_ms < 300 {
            problems.push("cluster.node_timeout_ms: must be at least 300".into());
        }
        if let Some(id) = &self.cluster.node_id
            && (id.is_empty()
                || id.len() > 64
                || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        {
            problems.push("cluster.node_id: must be 1 to 64 characters of A-Z a-z 0-9 - _".into());
        }
        if self.websocket.idle_timeout_s <= self.websocket.heartbeat_s {
            problems.push("websocket.idle_timeout_s: must be greater than websocket.heartbeat_s".into());
        }
        if self.websocket.outbound_queue_bytes < self.limits.max_message_bytes + 1024 {
            problems.push("websocket.outbound_queue_bytes: must hold one largest event (limits.max_message_bytes + 1024)".into());
        }
        if self.limits.max_body_bytes < self.limits.max_message_bytes {
            problems.push("limits.max_body_bytes: must be at least limits.max_message_bytes".into());
        }
        // The writer stops accepting frames once the buffer passes write_buffer_bytes, so the
        // buffer peaks at that plus one largest frame (data plus a small envelope).
        let peak = self.websocket.write_buffer_bytes + self.limits.max_message_bytes + 1024;
        if self.websocket.max_write_buffer_bytes < peak {
            problems.push(format!(
                "websocket.max_write_buffer_bytes: must be at least websocket.write_buffer_bytes + \
                 limits.max_message_bytes + 1024 ({peak})"
            ));
        }
        if !(60..=2_592_000).contains(&self.tokens.default_ttl_s) {
            problems.push("tokens.default_ttl_s: must be between 60 and 2592000".into());
        }
        if self.store.kind == StoreKind::Redis && self.cluster.redis_url.is_none() {
            problems.push("store.kind: \"redis\" needs cluster.redis_url".into());
        }
        if let Some(urls) = &self.cluster.redis_url {
            let seeds: Vec<&str> = if self.cluster.sharded_pubsub {
                urls.split(',').map(str::trim).collect()
            } else {
                vec![urls]
            };
            let schemes = ["redis://", "rediss://", "redis+unix://"];
            if seeds.iter().any(|url| !schemes.iter().any(|s| url.starts_with(s))) {
                problems.push(
                    "cluster.redis_url: must be a redis://, rediss:// (TLS) or redis+unix:// URL (with \
                     cluster.sharded_pubsub, one or more separated by commas)"
                        .into(),
                );
            }
        }
        if !self.cluster.sharded_pubsub && self.cluster.redis_url.as_deref().is_some_and(|u| u.contains(','))
        {
            problems
                .push("cluster.redis_url: several URLs need cluster.sharded_pubsub (a Redis Cluster)".into());
        }
        if self.cluster.redis_client_cert_file.is_some() != self.cluster.redis_client_key_file.is_some() {
            problems.push(
                "cluster.redis_client_cert_file: needs cluster.redis_client_key_file, and the other way round"
                    .into(),
            );
        }
        if self.cluster.sharded_pubsub && self.cluster.redis_url.is_none() {
            problems.push("cluster.sharded_pubsub: needs cluster.redis_url".into());
        }
        if let Some(level) = Some(&self.log.level)
            && tracing_subscriber::EnvFilter::try_new(level).is_err()
        {
            problems.push(format!("log.level: {level:?} is not a valid filter"));
        }
        if problems.is_empty() { Ok(()) } else { Err(ConfigError::Invalid(problems)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use figment::Jail;

    // `Jail` serializes tests that touch the environment and runs each in a fresh directory.
    #[allow(clippy::result_large_err)]
    fn load_in_jail(
        files: &[(&str, &str)],
        env: &[(&str, &str)],
        path: Option<&str>,
    ) -> Result<Config, String> {
        let mut out = None;
        Jail::expect_with(|jail| {
            for (name, text) in files {
                if let Some((dir, _)) = name.rsplit_once('/') {
                    jail.create_dir(dir)?;
                }
                jail.create_file(name, text)?;
            }
            for (key, value) in env {
                jail.set_env(key, value);
            }
            out = Some(Config::load(path.map(Path::new)).map_err(|e| e.to_string()));
            Ok(())
        });
        out.unwrap()
    }

    #[test]
    fn defaults_validate() {
        Config::default().validate().unwrap();
        let loaded = load_in_jail(&[], &[], None).unwrap();
        assert_eq!(loaded, Config::default());
        assert_eq!(loaded.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(loaded.limits.max_message_bytes, 65_536);
    }

    #[test]
    fn environment_overrides_file() {
        let loaded = load_in_jail(
            &[(
                "config/roomcast.toml",
                "[server]\nlisten = \"127.0.0.1:7000\"\n[limits]\nmax_rooms_per_connection = 7\n",
            )],
            &[("ROOMCAST_SERVER__LISTEN", "127.0.0.1:9000"), ("ROOMCAST_ADMIN_KEY", "rc_admin_x")],
            None,
        )
        .unwrap();
        assert_eq!(loaded.server.listen.to_string(), "127.0.0.1:9000");
        assert_eq!(loaded.limits.max_rooms_per_connection, 7);
        assert_eq!(loaded.admin_key.as_deref(), Some("rc_admin_x"));
    }

    #[test]
    fn bad_values_name_the_key() {
        let err = load_in_jail(&[("c.toml", "[server]\nlisten = \"not-an-address\"\n")], &[], Some("c.toml"))
            .unwrap_err();
        assert!(err.contains("server.listen"), "{err}");

        let err = load_in_jail(
            &[("c.toml", "[limits]\nmax_rooms_per_connection = 0\n[websocket]\nheartbeat_s = 0\n")],
            &[],
            Some("c.toml"),
        )
        .unwrap_err();
        assert!(err.contains("limits.max_rooms_per_connection"), "{err}");
        assert!(err.contains("websocket.heartbeat_s"), "{err}");

        let err = load_in_jail(&[("c.toml", "[server]\nlistenn = \"127.0.0.1:1\"\n")], &[], Some("c.toml"))
            .unwrap_err();
        assert!(err.contains("listenn"), "{err}");

        let err = load_in_jail(&[], &[("ROOMCAST_LIMITS__MAX_BODY_BYTES", "lots")], None).unwrap_err();
        assert!(err.contains("limits.max_body_bytes"), "{err}");

        // Seeds of a Redis Cluster: each must be a Redis URL; sharding needs a Redis.
        let cluster = |urls: Option<&str>| {
            let mut c = Config::default();
            c.cluster.sharded_pubsub = true;
            c.cluster.redis_url = urls.map(str::to_owned);
            c.validate().map_err(|e| e.to_string())
        };
        cluster(Some("redis://127.0.0.1:7000, redis://127.0.0.1:7001")).unwrap();
        assert!(cluster(Some("redis://127.0.0.1:7000,http://x")).unwrap_err().contains("cluster.redis_url"));
        assert!(cluster(None).unwrap_err().contains("cluster.sharded_pubsub"));
        let mut single = Config::default();
        single.cluster.redis_url = Some("redis://127.0.0.1:7000,redis://127.0.0.1:7001".into());
        let err = single.validate().unwrap_err().to_string();
        assert!(err.contains("several URLs need cluster.sharded_pubsub"), "{err}");
        // A client certificate comes with its key.
        let mut half = Config::default();
        half.cluster.redis_url = Some("rediss://127.0.0.1:7000".into());
        half.cluster.redis_client_cert_file = Some("client.pem".into());
        let err = half.validate().unwrap_err().to_string();
        assert!(err.contains("cluster.redis_client_cert_file"), "{err}");
        half.cluster.redis_client_key_file = Some("client.key".into());
        half.validate().unwrap();
    }

    #[test]
    fn missing_file_is_an_error() {
        let err = load_in_jail(&[], &[], Some("nope.toml")).unwrap_err();
        assert!(err.contains("nope.toml"), "{err}");
    }

    #[test]
    fn shipped_config_file_matches_defaults() {
        let text =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_CONFIG_PATH)).unwrap();
        let loaded = load_in_jail(&[("shipped.toml", &text)], &[], Some("shipped.toml")).unwrap();
        assert_eq!(loaded, Config::default());
    }
}

//! Connections to Redis: one server (or a primary with replicas), or a Redis 7 Cluster when
//! `cluster.sharded_pubsub` is on. [`Commands`] runs commands, scripts and pipelines on either;
//! the broker opens the subscription connection from the [`Target`].
//!
//! On a Redis Cluster every script and pipeline must stay within one hash slot: keys that are
//! used together carry the same hash tag (`{app:room}` for a room, `{app}` for analytics,
//! `{store}` for records).

use std::path::PathBuf;
use std::time::Duration;

use redis::aio::ConnectionLike;
use redis::{Cmd, Pipeline, RedisFuture, Value};

/// Time allowed for one Redis command before the node reports Redis as down.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest wait between reconnection attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Files for `rediss://`, all PEM: the authority servers are checked against instead of the
/// system's, and a client certificate with its key for servers that ask for one (mutual TLS).
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    pub ca: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

impl TlsFiles {
    /// The files named in `cluster.redis_*_file`.
    pub fn from_config(cluster: &crate::config::ClusterConfig) -> Self {
        Self {
            ca: cluster.redis_ca_file.clone(),
            client_cert: cluster.redis_client_cert_file.clone(),
            client_key: cluster.redis_client_key_file.clone(),
        }
    }

    /// Reads the files; `None` when none is named (the system's authorities, no client
    /// certificate).
    fn load(&self) -> Result<Option<redis::TlsCertificates>, String> {
        let read = |path: &Option<PathBuf>| -> Result<Option<Vec<u8>>, String> {
            path.as_ref()
                .map(|p| std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display())))
                .transpose()
        };
        let root_cert = read(&self.ca)?;
        let client_tls = match (read(&self.client_cert)?, read(&self.client_key)?) {
            (Some(client_cert), Some(client_key)) => Some(redis::ClientTlsConfig { client_cert, client_key }),
            (None, None) => None,
            _ => return Err("a Redis client certificate needs its key, and the other way round".into()),
        };
        Ok((root_cert.is_some() || client_tls.is_some())
            .then_some(redis::TlsCertificates { client_tls, root_cert }))
    }
}

/// Where Redis is.
#[derive(Debug, Clone)]
pub enum Target {
    /// One server.
    Single(redis::Client),
    /// The seed nodes of a Redis Cluster, with the certificates for `rediss://`.
    Cluster(Vec<String>, Option<redis::TlsCertificates>),
}

impl Target {
    /// `url`, or with `cluster` the comma-separated seed URLs of a Redis Cluster; `certs` are
    /// what `rediss://` uses instead of the system's authorities and no client certificate.
    pub fn parse(url: &str, cluster: bool, certs: Option<redis::TlsCertificates>) -> Result<Self, String> {
        if cluster {
            let seeds: Vec<String> =
                url.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect();
            // Checked here so a typo fails at start, not at the first reconnect.
            Self::cluster_client(&seeds, certs.as_ref(), None).map_err(|e| e.to_string())?;
            Ok(Target::Cluster(seeds, certs))
        } else {
            let client = match certs {
                Some(certs) => redis::Client::build_with_tls(url, certs),
                None => redis::Client::open(url),
            };
            client.map(Target::Single).map_err(|e| e.to_string())
        }
    }

    /// A cluster client with the node's timeouts; `push` receives what subscriptions bring
    /// (RESP3 pushes), for the subscription connection.
    pub fn cluster_client(
        seeds: &[String],
        certs: Option<&redis::TlsCertificates>,
        push: Option<tokio::sync::mpsc::UnboundedSender<redis::PushInfo>>,
    ) -> redis::RedisResult<redis::cluster::ClusterClient> {
        // A few retries, enough to follow a slot that moved, few enough to fail fast.
        let mut builder = redis::cluster::ClusterClientBuilder::new(seeds.to_vec())
            .connection_timeout(COMMAND_TIMEOUT)
            .response_timeout(COMMAND_TIMEOUT)
            .retries(3);
        if let Some(certs) = certs {
            builder = builder.certs(certs.clone());
        }
        if let Some(push) = push {
            builder = builder.use_protocol(redis::ProtocolVersion::RESP3).push_sender(push);
        }
        builder.build()
    }
}

/// A command connection that reconnects by itself, to one server or to a Redis Cluster.
#[derive(Clone)]
pub enum Commands {
    Single(redis::aio::ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl std::fmt::Debug for Commands {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Commands::Single(_) => "Commands::Single",
            Commands::Cluster(_) => "Commands::Cluster",
        })
    }
}

impl ConnectionLike for Commands {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Commands::Single(c) => c.req_packed_command(cmd),
            Commands::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Commands::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Commands::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Commands::Single(c) => c.get_db(),
            Commands::Cluster(c) => c.get_db(),
        }
    }
}

/// Opens `url` (with `cluster`, the seeds of a Redis Cluster; `tls` for `rediss://`): the
/// target, for further connections, and a command connection that reconnects by itself (3 s
/// timeouts, reconnect delays up to 5 s). Shared by the broker and the store.
pub async fn connect(url: &str, cluster: bool, tls: &TlsFiles) -> Result<(Target, Commands), String> {
    // `rediss://` is TLS through rustls, which needs the process's crypto provider.
    install_tls_provider();
    let target = Target::parse(url, cluster, tls.load()?)?;
    let connecting = async {
        match &target {
            Target::Single(client) => {
                // One quick retry: while Redis is away every command fails within a fraction
                // of a second (the default six retries held each for about nine seconds); the
                // next command tries to connect again.
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(COMMAND_TIMEOUT))
                    .set_response_timeout(Some(COMMAND_TIMEOUT))
                    .set_number_of_retries(1)
                    .set_max_delay(MAX_BACKOFF);
                redis::aio::ConnectionManager::new_with_config(client.clone(), config)
                    .await
                    .map(Commands::Single)
            }
            Target::Cluster(seeds, certs) => Target::cluster_client(seeds, certs.as_ref(), None)?
                .get_async_connection()
                .await
                .map(Commands::Cluster),
        }
    };
    let commands = tokio::time::timeout(COMMAND_TIMEOUT * 2, connecting)
        .await
        .map_err(|_| "timed out connecting to Redis".to_owned())?
        .map_err(|e| e.to_string())?;
    Ok((target, commands))
}

/// Installs rustls' ring provider for the process, once: Redis over `rediss://` and reqwest
/// (built without a default TLS provider, whose aws-lc one is a long C build, and panicking
/// when a client is built before one is installed) both need it; every reqwest client in the
/// process (tests' too) needs this first.
pub fn install_tls_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // An error means another provider was installed first, which serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// The state of a node's subscription connection, shared by what depends on it: the broker
/// sets it; the cluster state, analytics and `/health` read it.
#[derive(Debug)]
pub struct Link {
    /// Whether the connection is up.
    up: tokio::sync::watch::Sender<bool>,
    /// Since when it is up.
    up_since: std::sync::Mutex<Option<std::time::Instant>>,
    /// How many times it came up: what was written to Redis before a change may be gone (a
    /// restarted Redis).
    epoch: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Default for Link {
    fn default() -> Self {
        Self {
            up: tokio::sync::watch::Sender::new(false),
            up_since: std::sync::Mutex::new(None),
            epoch: Default::default(),
        }
    }
}

impl Link {
    /// The connection came up (`true`) or went down.
    pub fn set_up(&self, up: bool) -> bool {
        let was = self.up.send_replace(up);
        let mut since = self.up_since.lock().unwrap_or_else(|p| p.into_inner());
        if up {
            self.epoch.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            *since = Some(std::time::Instant::now());
        } else {
            *since = None;
        }
        was
    }

    /// Whether the connection is up.
    pub fn is_up(&self) -> bool {
        *self.up.borrow()
    }

    /// Since when the connection is up.
    pub fn up_since(&self) -> Option<std::time::Instant> {
        *self.up_since.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The count of times the connection came up.
    pub fn epoch(&self) -> std::sync::Arc<std::sync::atomic::AtomicU64> {
        self.epoch.clone()
    }

    /// Waits until the connection is up, at most `within`; returns whether it is.
    pub async fn wait_up(&self, within: Duration) -> bool {
        let mut up = self.up.subscribe();
        tokio::time::timeout(within, up.wait_for(|up| *up)).await.is_ok_and(|r| r.is_ok())
    }
}

//! Spawning the hub and talking to it.

#![allow(dead_code)]

pub mod receiver;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Once};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use roomcast::auth::api_key::PresentedKey;
use roomcast::config::Config;
use roomcast::server::Server;
use roomcast::store::KeyKind;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

/// How long any single expected event may take before a test fails.
pub const WAIT: Duration = Duration::from_secs(10);

fn init_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            tracing_subscriber::fmt().with_env_filter("roomcast=debug,info").with_test_writer().init();
        }
    });
}

/// A running hub with its data directory and an admin key.
pub struct TestHub {
    pub addr: SocketAddr,
    pub admin_key: String,
    pub http: reqwest::Client,
    pub dir: TempDir,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<bool>,
}

/// An HTTP client; use this rather than `reqwest::Client::new()`, which panics in a process
/// where no TLS provider was installed yet (see `roomcast::webhooks::install_tls_provider`).
pub fn http_client() -> reqwest::Client {
    roomcast::webhooks::install_tls_provider();
    reqwest::Client::new()
}

/// A config for tests: port 0, a store in `dir`, and a fixed admin key.
pub fn test_config(dir: &Path, admin_key: &str) -> Config {
    let mut config = Config::default();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.store.path = dir.join("roomcast.db");
    config.admin_key = Some(admin_key.to_owned());
    config
}

/// Starts a hub with default test settings.
pub async fn spawn_hub() -> TestHub {
    spawn_hub_with(|_| {}).await
}

/// Starts a hub after `adjust` changed its config.
pub async fn spawn_hub_with(adjust: impl FnOnce(&mut Config)) -> TestHub {
    let dir = tempfile::tempdir().unwrap();
    let admin_key = PresentedKey::generate(KeyKind::Admin).plaintext();
    spawn_hub_in(dir, admin_key, adjust).await
}

/// Starts a hub on an existing data directory (a restart).
pub async fn spawn_hub_in(dir: TempDir, admin_key: String, adjust: impl FnOnce(&mut Config)) -> TestHub {
    init_logs();
    let mut config = test_config(dir.path(), &admin_key);
    adjust(&mut config);
    let server = Server::build(config).await.expect("server builds");
    let addr = server.local_addr();
    let shutdown = server.shutdown_token();
    let task = tokio::spawn(server.run(std::future::pending()));
    TestHub { addr, admin_key, http: http_client(), dir, shutdown, task }
}

/// A created app with its one-time secrets.
#[derive(Debug, Clone)]
pub struct TestApp {
    pub app_id: String,
    pub secret: String,
    pub api_key: String,
}

impl TestHub {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Stops the hub like SIGTERM does; returns the data directory for a restart and whether
    /// the drain finished in time.
    pub async fn stop(self) -> (TempDir, String, bool) {
        self.shutdown.cancel();
        let drained = tokio::time::timeout(WAIT, self.task).await.expect("server stops").unwrap();
        (self.dir, self.admin_key, drained)
    }

    /// `GET` with a key in `X-API-Key`.
    pub async fn get(&self, path: &str, key: &str) -> (StatusCode, Value) {
        let res = self.http.get(self.url(path)).header("X-API-Key", key).send().await.unwrap();
        split(res).await
    }

    /// `method` with a JSON body and a key in `X-API-Key`.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        key: &str,
        body: Value,
    ) -> (StatusCode, Value) {
        let res = self
            .http
            .request(method, self.url(path))
            .header("X-API-Key", key)
            .json(&body)
            .send()
            .await
            .unwrap();
        split(res).await
    }

    pub async fn post(&self, path: &str, key: &str, body: Value) -> (StatusCode, Value) {
        self.send(reqwest::Method::POST, path, key, body).await
    }

    pub async fn put(&self, path: &str, key: &str, body: Value) -> (StatusCode, Value) {
        self.send(reqwest::Method::PUT, path, key, body).await
    }

    /// Creates an app (admin key) and returns its id, secret and primary key.
    pub async fn create_app(&self, body: Value) -> TestApp {
        let (status, v) = self.post("/api/applications", &self.admin_key.clone(), body).await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
        TestApp {
            app_id: v["app"]["app_id"].as_str().unwrap().to_owned(),
            secret: v["app_secret"].as_str().unwrap().to_owned(),
            api_key: v["api_key"].as_str().unwrap().to_owned(),
        }
    }

    /// Mints a client token through `POST /api/token`.
    pub async fn token(&self, app: &TestApp, payload: Value) -> String {
        let res = self
            .http
            .post(self.url("/api/token"))
            .json(&json!({"app_id": app.app_id, "app_secret": app.secret, "payload": payload}))
            .send()
            .await
            .unwrap();
        let (status, v) = split(res).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        v["token"].as_str().unwrap().to_owned()
    }

    /// Broadcasts with an app's key; asserts success and returns the body.
    pub async fn broadcast(&self, app: &TestApp, room: &str, event: &str, data: Value) -> Value {
        let (status, v) = self
            .post("/api/broadcast", &app.api_key, json!({"room": room, "event": event, "data": data}))
            .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        v
    }

    /// Opens a WebSocket with `?token=` and reads the `connected` frame.
    pub async fn connect(&self, token: &str) -> Ws {
        let (mut ws, hello) = self.try_connect(token).await.expect("upgrade accepted");
        assert_eq!(hello["type"], "connected", "{hello}");
        ws.connection_id = hello["connection_id"].as_str().unwrap().to_owned();
        ws
    }

    /// Opens a WebSocket; `Err(status)` when the upgrade was refused.
    pub async fn try_connect(&self, token: &str) -> Result<(Ws, Value), (u16, Value)> {
        open_ws(self.addr, &format!("token={token}")).await
    }

    /// Opens a WebSocket with a ticket; `Err(status)` when the upgrade was refused.
    pub async fn try_redeem(&self, ticket: &str) -> Result<(Ws, Value), (u16, Value)> {
        open_ws(self.addr, &format!("ticket={ticket}")).await
    }

    /// Connects a client to `rooms` of `app` with `payload` claims and waits for each `subscribed`.
    pub async fn subscriber(&self, app: &TestApp, payload: Value, rooms: &[&str]) -> Ws {
        let token = self.token(app, payload).await;
        let mut ws = self.connect(&token).await;
        for room in rooms {
            ws.subscribe(room).await;
        }
        ws
    }
}

/// Asserts `ack` is the `subscribed` frame of `room` (DESIGN §4, §11): its `id`, the stream's
/// `offset` and a non-empty `epoch`, and nothing else but a presence room's members.
pub fn assert_subscribed(ack: &Value, room: &str, id: Option<u64>) {
    assert_eq!((ack["type"].as_str(), ack["room"].as_str()), (Some("subscribed"), Some(room)), "{ack}");
    assert_eq!(ack["id"].as_u64(), id, "{ack}");
    assert!(ack["offset"].is_u64(), "{ack}");
    assert!(ack["epoch"].as_str().is_some_and(|e| !e.is_empty()), "{ack}");
    let known = ["type", "room", "id", "offset", "epoch", "recovered", "reason", "presence", "member_count"];
    assert!(ack.as_object().unwrap().keys().all(|k| known.contains(&k.as_str())), "{ack}");
}

/// Opens `ws://{addr}/ws?{query}`: the socket and its first frame, or the refusal's status and
/// body.
pub async fn open_ws(addr: impl std::fmt::Display, query: &str) -> Result<(Ws, Value), (u16, Value)> {
    Ws::open(format!("ws://{addr}/ws?{query}").into_client_request().unwrap()).await
}

/// Status and JSON body of a response.
pub async fn split(res: reqwest::Response) -> (StatusCode, Value) {
    let status = res.status();
    let text = res.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

/// Asserts an error answer of the DESIGN §2.2 shape.
#[track_caller]
pub fn assert_error(got: &(StatusCode, Value), status: u16, code: &str) {
    assert_eq!(got.0.as_u16(), status, "{}", got.1);
    assert_eq!(got.1["success"], false, "{}", got.1);
    assert_eq!(got.1["code"], code, "{}", got.1);
    assert!(got.1["error"].as_str().is_some_and(|e| !e.is_empty()), "{}", got.1);
}

/// A WebSocket client.
#[derive(Debug)]
pub struct Ws {
    pub stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub connection_id: String,
}

/// How a socket ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    Closed(u16),
    Dropped,
}

impl Ws {
    pub async fn open(
        req: tokio_tungstenite::tungstenite::handshake::client::Request,
    ) -> Result<(Ws, Value), (u16, Value)> {
        match tokio_tungstenite::connect_async(req).await {
            Ok((stream, _)) => {
                let mut ws = Ws { stream, connection_id: String::new() };
                let hello = ws.next_json().await;
                ws.connection_id = hello["connection_id"].as_str().unwrap_or_default().to_owned();
                Ok((ws, hello))
            }
            Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
                let status = res.status().as_u16();
                let body = res
                    .body()
                    .as_ref()
                    .map(|b| serde_json::from_slice(b).unwrap_or(Value::Null))
                    .unwrap_or(Value::Null);
                Err((status, body))
            }
            Err(e) => panic!("connect failed: {e}"),
        }
    }

    pub async fn send_json(&mut self, v: Value) {
        self.stream.send(Message::Text(v.to_string().into())).await.unwrap();
    }

    pub async fn send_text(&mut self, text: &str) {
        self.stream.send(Message::Text(text.to_owned().into())).await.unwrap();
    }

    /// The next text frame as JSON; panics on close or after [`WAIT`].
    pub async fn next_json(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(WAIT, self.stream.next()).await.expect("a frame in time");
            match msg {
                Some(Ok(Message::Text(t))) => return serde_json::from_str(t.as_str()).unwrap(),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// Reads until the socket ends, skipping frames; returns the close code.
    pub async fn closed(&mut self) -> Ending {
        loop {
            let msg = tokio::time::timeout(WAIT, self.stream.next()).await.expect("close in time");
            match msg {
                Some(Ok(Message::Close(Some(frame)))) => return Ending::Closed(frame.code.into()),
                Some(Ok(Message::Close(None))) | None | Some(Err(_)) => return Ending::Dropped,
                Some(Ok(_)) => continue,
            }
        }
    }

    /// Subscribes and waits for `subscribed`.
    pub async fn subscribe(&mut self, room: &str) -> Value {
        self.send_json(json!({"type": "subscribe", "room": room, "id": 1})).await;
        let ack = self.next_json().await;
        assert_subscribed(&ack, room, Some(1));
        ack
    }

    /// Sends a ping with `id` and asserts the next frame is its pong: proof that every frame
    /// sent before it was handled.
    pub async fn roundtrip(&mut self, id: u64) {
        self.send_json(json!({"type": "ping", "id": id})).await;
        assert_eq!(self.next_json().await, json!({"type": "pong", "id": id}));
    }
}

/// A throwaway authority and a certificate from it for `localhost` and 127.0.0.1, both made by
/// `openssl`, for Redis servers that speak TLS.
pub struct TestCerts {
    dir: TempDir,
}

impl TestCerts {
    pub fn make() -> Arc<TestCerts> {
        let dir = tempfile::tempdir().unwrap();
        let steps: [&[&str]; 5] = [
            &["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=roomcast test CA"]
                .iter()
                .chain(&["-keyout", "ca.key", "-out", "ca.pem"])
                .copied()
                .collect::<Vec<_>>(),
            &["req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", "key.pem"]
                .iter()
                .chain(&["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-out", "server.csr"])
                .copied()
                .collect::<Vec<_>>(),
            &["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial"]
                .iter()
                .chain(&["-days", "1", "-copy_extensions", "copyall", "-out", "cert.pem"])
                .copied()
                .collect::<Vec<_>>(),
            &["req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=roomcast node"]
                .iter()
                .chain(&[
                    "-addext",
                    "extendedKeyUsage=clientAuth",
                    "-keyout",
                    "client.key",
                    "-out",
                    "client.csr",
                ])
                .copied()
                .collect::<Vec<_>>(),
            &["x509", "-req", "-in", "client.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial"]
                .iter()
                .chain(&["-days", "1", "-copy_extensions", "copyall", "-out", "client.pem"])
                .copied()
                .collect::<Vec<_>>(),
        ];
        for args in steps {
            let made = std::process::Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .output()
                .expect("openssl is needed for the Redis TLS tests (scripts/test.sh installs it)");
            assert!(made.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&made.stderr));
        }
        Arc::new(TestCerts { dir })
    }

    /// The authority (PEM).
    pub fn ca(&self) -> std::path::PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A client certificate from the same authority, and its key.
    pub fn client(&self) -> (std::path::PathBuf, std::path::PathBuf) {
        (self.dir.path().join("client.pem"), self.dir.path().join("client.key"))
    }

    fn file(&self, name: &str) -> String {
        self.dir.path().join(name).to_string_lossy().into_owned()
    }

    /// `redis-server` arguments to serve TLS only, on `port`, with this certificate, to any
    /// client.
    fn server_args(&self, port: u16) -> Vec<String> {
        let (cert, key, ca) = (self.file("cert.pem"), self.file("key.pem"), self.file("ca.pem"));
        ["--port", "0", "--tls-port", &port.to_string(), "--tls-cert-file", &cert, "--tls-key-file", &key]
            .into_iter()
            .chain(["--tls-ca-cert-file", &ca, "--tls-auth-clients", "no"])
            .map(str::to_owned)
            .collect()
    }

    /// `redis-cli` arguments to reach a server with this certificate (presenting the client
    /// certificate, in case it asks).
    fn cli_args(&self) -> Vec<String> {
        ["--tls", "--cacert", &self.file("ca.pem"), "--cert", &self.file("client.pem")]
            .into_iter()
            .chain(["--key", &self.file("client.key")])
            .map(str::to_owned)
            .collect()
    }
}

/// A real `redis-server` on a free loopback port, without persistence; killed on drop.
pub struct RedisServer {
    pub port: u16,
    child: Option<std::process::Child>,
    dir: TempDir,
    /// More `redis-server` arguments.
    args: Vec<String>,
    /// Serves TLS only, with these certificates.
    tls: Option<Arc<TestCerts>>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl RedisServer {
    /// Starts one; panics with a hint when `redis-server` is not installed.
    pub async fn start() -> RedisServer {
        Self::start_with(Vec::new(), None).await
    }

    /// A server on a free port with `args` last (where a repeated option wins).
    async fn start_with(more: Vec<String>, tls: Option<Arc<TestCerts>>) -> RedisServer {
        let port = free_port();
        let mut args = match &tls {
            Some(certs) => certs.server_args(port),
            None => vec!["--port".to_owned(), port.to_string()],
        };
        args.extend(more);
        let mut server = RedisServer { port, child: None, dir: tempfile::tempdir().unwrap(), args, tls };
        server.restart().await;
        server
    }

    /// Starts one that speaks TLS only, with a certificate for `localhost` and 127.0.0.1 from
    /// a throwaway authority ([`RedisServer::cert`]); its URL is `rediss://`.
    pub async fn start_tls() -> RedisServer {
        Self::start_with(Vec::new(), Some(TestCerts::make())).await
    }

    /// As [`RedisServer::start_tls`], talking only to clients that present a certificate from
    /// the same authority ([`TestCerts::client`]).
    pub async fn start_mutual_tls() -> RedisServer {
        let args = vec!["--tls-auth-clients".to_owned(), "yes".to_owned()];
        Self::start_with(args, Some(TestCerts::make())).await
    }

    /// The certificates of a TLS server.
    pub fn certs(&self) -> Arc<TestCerts> {
        self.tls.clone().expect("a TLS server")
    }

    /// Runs `redis-cli` against this server; returns what it printed.
    pub async fn cli(&self, args: &[&str]) -> String {
        let out = tokio::process::Command::new("redis-cli")
            .args(self.tls.as_ref().map(|c| c.cli_args()).unwrap_or_default())
            .arg("-p")
            .arg(self.port.to_string())
            .args(args)
            .output()
            .await
            .expect("redis-cli comes with redis-server");
        assert!(out.status.success(), "redis-cli {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The authority a TLS server's certificate comes from (PEM).
    pub fn cert(&self) -> std::path::PathBuf {
        self.tls.as_ref().expect("a TLS server").ca()
    }

    pub fn url(&self) -> String {
        match self.tls {
            Some(_) => format!("rediss://localhost:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// Whether the server was started and not killed since.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the server (SIGKILL) and waits until it is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server (again) on the same port and waits until it answers.
    pub async fn restart(&mut self) {
        self.kill();
        let child = std::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(&self.args)
            .current_dir(self.dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is needed for cluster tests (scripts/test.sh installs it)");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            if let Some(certs) = &self.tls {
                let ping = tokio::process::Command::new("redis-cli")
                    .args(certs.cli_args())
                    .args(["-h", "localhost", "-p", &self.port.to_string(), "ping"])
                    .output()
                    .await
                    .unwrap();
                if String::from_utf8_lossy(&ping.stdout).trim() == "PONG" {
                    return;
                }
            } else if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)).await {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = [0u8; 7];
                if s.write_all(b"PING\r\n").await.is_ok()
                    && s.read_exact(&mut buf).await.is_ok()
                    && &buf == b"+PONG\r\n"
                {
                    return;
                }
            }
            assert!(std::time::Instant::now() < deadline, "redis-server did not start on {}", self.port);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A Redis 7 Cluster of three primaries on free loopback ports, with or without a replica each.
pub struct RedisCluster {
    pub servers: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three cluster-enabled servers, joins them with `redis-cli --cluster create` and
    /// waits until every node reports the cluster ok.
    pub async fn start() -> RedisCluster {
        Self::start_with(0, &[], None).await
    }

    /// Three primaries with a replica each; a primary unreachable for a second fails over.
    pub async fn start_with_replicas() -> RedisCluster {
        Self::start_with(1, &["--cluster-node-timeout", "1000"], None).await
    }

    /// Three primaries that speak TLS only, to clients and to each other, with the
    /// certificates of `certs`.
    pub async fn start_tls(certs: Arc<TestCerts>) -> RedisCluster {
        Self::start_with(0, &["--tls-cluster", "yes"], Some(certs)).await
    }

    async fn start_with(replicas: usize, extra: &[&str], tls: Option<Arc<TestCerts>>) -> RedisCluster {
        let mut servers = Vec::new();
        for _ in 0..3 * (1 + replicas) {
            let args = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-port"]
                .map(str::to_owned)
                .into_iter()
                .chain([free_port().to_string()])
                .chain(extra.iter().map(|a| (*a).to_owned()))
                .collect();
            servers.push(RedisServer::start_with(args, tls.clone()).await);
        }
        let addrs: Vec<String> = servers.iter().map(|s| format!("127.0.0.1:{}", s.port)).collect();
        let out = tokio::process::Command::new("redis-cli")
            .args(tls.map(|c| c.cli_args()).unwrap_or_default())
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .await
            .expect("redis-cli is needed for the Redis Cluster test (it comes with redis-server)");
        assert!(out.status.success(), "redis-cli --cluster create: {}", String::from_utf8_lossy(&out.stdout));
        let cluster = RedisCluster { servers };
        cluster.wait_ok().await;
        cluster
    }

    /// The indexes of the servers that are primaries now.
    pub async fn primaries(&self) -> Vec<usize> {
        let mut found = Vec::new();
        for (i, server) in self.servers.iter().enumerate() {
            if server.is_running() && server.cli(&["role"]).await.starts_with("master") {
                found.push(i);
            }
        }
        found
    }

    /// Waits until the replica of primary `i` has received everything written to it (Redis
    /// replicates asynchronously: a primary killed earlier loses its last writes).
    pub async fn wait_replicated(&self, i: usize) {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let info = self.servers[i].cli(&["info", "replication"]).await;
            let written = info.lines().find_map(|l| l.trim().strip_prefix("master_repl_offset:"));
            let acked = info
                .lines()
                .filter_map(|l| l.trim().strip_prefix("slave0:"))
                .find_map(|l| l.split(',').find_map(|kv| kv.strip_prefix("offset=")));
            if written.is_some() && written == acked {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "the replica never caught up: {info}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until every running node reports the cluster ok and every replica its link to
    /// its primary up (a replica that never synchronized does not take over).
    pub async fn wait_ok(&self) {
        let deadline = std::time::Instant::now() + WAIT;
        for server in self.servers.iter().filter(|s| s.is_running()) {
            loop {
                let replication = server.cli(&["info", "replication"]).await;
                let linked =
                    replication.contains("role:master") || replication.contains("master_link_status:up");
                if linked && server.cli(&["cluster", "info"]).await.contains("cluster_state:ok") {
                    break;
                }
                assert!(std::time::Instant::now() < deadline, "the Redis Cluster never became ok");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// Every node's URL, comma-separated: the seeds for `cluster.redis_url`.
    pub fn urls(&self) -> String {
        self.servers.iter().map(RedisServer::url).collect::<Vec<_>>().join(",")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

//! Overload and abuse against the real binary (issue 14): half-open sockets closed by the
//! header and idle timeouts, per-IP connection caps at the accept and at the upgrade, a node at
//! its connection or memory bound refusing upgrades while serving its clients, and a process out
//! of file descriptors that keeps accepting once some are free. Client sockets come from chosen
//! loopback addresses (127.0.0.2, 127.0.0.3, …) so one test can be two clients.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::binary::{command, start_cmd};
use crate::support::{WAIT, Ws, http_client, split};

const ADMIN: &str = "rc_admin_OverloadTest_abcdefghijklmnopqrstuvwxyz012345";

/// A hub process in a fresh directory with `env` set; returns it with its address and an app
/// (`over-app`) with its secret and key.
async fn hub(env: &[(&str, &str)]) -> (tokio::process::Child, tempfile::TempDir, SocketAddr, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = command(dir.path());
    cmd.env("ROOMCAST_ADMIN_KEY", ADMIN)
        .env("ROOMCAST_LOG__LEVEL", "info")
        .env("ROOMCAST_LIMITS__UPGRADE_RATE_LIMIT", "0");
    cmd.stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let (child, _, addr) = start_cmd(&mut cmd).await;
    let addr: SocketAddr = addr.parse().unwrap();
    let (status, v) = split(
        http_client()
            .post(format!("http://{addr}/api/applications"))
            .header("X-API-Key", ADMIN)
            .json(&json!({"app_id": "over-app", "max_connections": 100_000}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let (secret, key) =
        (v["app_secret"].as_str().unwrap().to_owned(), v["api_key"].as_str().unwrap().to_owned());
    (child, dir, addr, secret, key)
}

async fn token(addr: SocketAddr, secret: &str) -> String {
    let body = json!({"app_id": "over-app", "app_secret": secret, "payload": {}});
    let (status, v) =
        split(http_client().post(format!("http://{addr}/api/token")).json(&body).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    v["token"].as_str().unwrap().to_owned()
}

/// A TCP connection to `addr` from the loopback address `source`.
async fn tcp_from(source: &str, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(format!("{source}:0").parse().unwrap())?;
    socket.connect(addr).await
}

/// How an upgrade attempt ended.
#[derive(Debug)]
enum Upgrade {
    Open(Box<Ws>),
    /// Refused with an HTTP answer: status, `Retry-After`, body.
    Refused(u16, Option<String>, Value),
    /// The connection was closed before any answer.
    Dropped,
}

/// A WebSocket from `source` with `token`, and `X-Forwarded-For: forwarded` when given.
async fn ws_from(source: &str, addr: SocketAddr, token: &str, forwarded: Option<&str>) -> Upgrade {
    let Ok(tcp) = tcp_from(source, addr).await else { return Upgrade::Dropped };
    let mut req = format!("ws://{addr}/ws?token={token}").into_client_request().unwrap();
    if let Some(f) = forwarded {
        req.headers_mut().insert("x-forwarded-for", f.parse().unwrap());
    }
    let handshake = tokio_tungstenite::client_async(req, MaybeTlsStream::Plain(tcp));
    match tokio::time::timeout(WAIT, handshake).await.expect("an answer in time") {
        Ok((stream, _)) => {
            let mut ws = Ws { stream, connection_id: String::new() };
            let hello = ws.next_json().await;
            assert_eq!(hello["type"], "connected", "{hello}");
            Upgrade::Open(Box::new(ws))
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            let retry = res.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
            let body = res.body().as_ref().map(|b| serde_json::from_slice(b).unwrap_or(Value::Null));
            Upgrade::Refused(res.status().as_u16(), retry, body.unwrap_or(Value::Null))
        }
        Err(_) => Upgrade::Dropped,
    }
}

fn open(upgrade: Upgrade) -> Ws {
    match upgrade {
        Upgrade::Open(ws) => *ws,
        other => panic!("expected an open WebSocket, got {other:?}"),
    }
}

async fn broadcast(addr: SocketAddr, key: &str, data: Value) -> Value {
    let body = json!({"room": "room", "event": "e", "data": data});
    let res = http_client().post(format!("http://{addr}/api/broadcast")).header("X-API-Key", key).json(&body);
    let (status, v) = split(res.send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    v
}

/// Waits until the socket is closed by the hub (EOF or reset); returns how long that took.
async fn closed_by_hub(mut tcp: TcpStream, since: Instant) -> Duration {
    let mut buf = [0u8; 512];
    loop {
        match tokio::time::timeout(WAIT, tcp.read(&mut buf)).await.expect("closed in time") {
            Ok(0) | Err(_) => return since.elapsed(),
            Ok(_) => continue,
        }
    }
}

async fn metric(addr: SocketAddr, name: &str) -> u64 {
    let text =
        http_client().get(format!("http://{addr}/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines().find_map(|l| l.strip_prefix(name)).map_or(0, |n| n.trim().parse::<f64>().unwrap() as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_sockets_are_closed_in_time_while_others_are_served() {
    rlimit::increase_nofile_limit(u64::MAX).unwrap();
    let (_child, _dir, addr, secret, key) = hub(&[
        ("ROOMCAST_SERVER__HEADER_TIMEOUT_S", "2"),
        ("ROOMCAST_SERVER__HTTP_IDLE_TIMEOUT_S", "3"),
        ("ROOMCAST_LIMITS__CONNECTIONS_PER_IP", "5000"),
        ("ROOMCAST_SERVER__TRUSTED_PROXIES", "[]"),
    ])
    .await;
    // A keep-alive connection that made one request and then idles: closed after the idle
    // timeout, not the header one.
    let mut idle = tcp_from("127.0.0.2", addr).await.unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 1024];
    assert!(idle.read(&mut buf).await.unwrap() > 0);
    let idle_since = Instant::now();
    let idle = tokio::spawn(closed_by_hub(idle, idle_since));

    // 2,000 sockets from one address: half send part of a request's headers and stop, half say
    // nothing at all.
    let opened = Instant::now();
    let mut held = Vec::new();
    for n in 0..2000 {
        let mut tcp = tcp_from("127.0.0.2", addr).await.unwrap();
        if n % 2 == 0 {
            tcp.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ").await.unwrap();
        }
        held.push(tcp);
    }
    let opened_in = opened.elapsed();
    // Meanwhile another client connects, subscribes and gets broadcasts at once.
    let mut ws = open(ws_from("127.0.0.3", addr, &token(addr, &secret).await, None).await);
    ws.subscribe("room").await;
    let asked = Instant::now();
    broadcast(addr, &key, json!(1)).await;
    assert_eq!(ws.next_json().await["data"], 1);
    assert!(asked.elapsed() < Duration::from_millis(500), "a broadcast took {:?}", asked.elapsed());

    let waits: Vec<_> = held.into_iter().map(|tcp| tokio::spawn(closed_by_hub(tcp, opened))).collect();
    let mut slowest = Duration::ZERO;
    for w in waits {
        slowest = slowest.max(w.await.unwrap());
    }
    // The header timeout (2 s) after the last was opened, with a second of slack for a loaded
    // machine; never anywhere near the idle timeout of a minute by default.
    assert!(
        slowest < opened_in + Duration::from_secs(3),
        "the last half-open socket closed after {slowest:?}"
    );
    assert!(slowest >= Duration::from_millis(1900), "closed before the timeout: {slowest:?}");
    let idle_took = idle.await.unwrap();
    assert!(idle_took >= Duration::from_millis(2900) && idle_took < Duration::from_secs(5), "{idle_took:?}");
    // The WebSocket is untouched by those timeouts, and still served.
    broadcast(addr, &key, json!(2)).await;
    assert_eq!(ws.next_json().await["data"], 2);
    assert!(metric(addr, "roomcast_http_connections_closed_total{reason=\"header_timeout\"} ").await >= 2000);
    assert!(metric(addr, "roomcast_http_connections_closed_total{reason=\"idle_timeout\"} ").await >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_address_over_its_cap_is_refused_beside_one_under_it() {
    // 127.0.0.1 is a trusted proxy here; 127.0.0.2 and 127.0.0.3 are clients of their own.
    let (_child, _dir, addr, secret, _key) = hub(&[
        ("ROOMCAST_LIMITS__CONNECTIONS_PER_IP", "5"),
        ("ROOMCAST_SERVER__TRUSTED_PROXIES", "[\"127.0.0.1/32\"]"),
    ])
    .await;
    let token = token(addr, &secret).await;
    let mut mine = Vec::new();
    for _ in 0..5 {
        mine.push(open(ws_from("127.0.0.2", addr, &token, None).await));
    }
    // The sixth connection of 127.0.0.2 is closed at accept, before any HTTP answer.
    assert!(matches!(ws_from("127.0.0.2", addr, &token, None).await, Upgrade::Dropped));
    let plain = tcp_from("127.0.0.2", addr).await.unwrap();
    assert!(closed_by_hub(plain, Instant::now()).await < Duration::from_secs(1));
    // Another address is served.
    let mut other = open(ws_from("127.0.0.3", addr, &token, None).await);
    other.subscribe("room").await;
    // One of 127.0.0.2's closes: its place is free again.
    drop(mine.pop());
    let deadline = Instant::now() + WAIT;
    loop {
        match ws_from("127.0.0.2", addr, &token, None).await {
            Upgrade::Open(ws) => {
                mine.push(*ws);
                break;
            }
            _ => assert!(Instant::now() < deadline, "the freed place was never given back"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Behind the trusted proxy, clients are told apart by X-Forwarded-For and capped at the
    // upgrade with 429 connection_limit.
    let mut proxied = Vec::new();
    for _ in 0..5 {
        proxied.push(open(ws_from("127.0.0.1", addr, &token, Some("198.51.100.7")).await));
    }
    match ws_from("127.0.0.1", addr, &token, Some("198.51.100.7")).await {
        Upgrade::Refused(429, _, body) => assert_eq!(body["code"], "connection_limit", "{body}"),
        other => panic!("expected 429, got {other:?}"),
    }
    open(ws_from("127.0.0.1", addr, &token, Some("198.51.100.8")).await);
    assert!(metric(addr, "roomcast_connections_refused_total{reason=\"ip_limit\"} ").await >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_node_refuses_upgrades_and_keeps_serving_its_clients() {
    let (_child, _dir, addr, secret, key) = hub(&[("ROOMCAST_LIMITS__MAX_CONNECTIONS", "3")]).await;
    let token = token(addr, &secret).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut ws = open(ws_from("127.0.0.2", addr, &token, None).await);
        ws.subscribe("room").await;
        clients.push(ws);
    }
    match ws_from("127.0.0.3", addr, &token, None).await {
        Upgrade::Refused(503, retry, body) => {
            assert_eq!(body["code"], "unavailable", "{body}");
            assert!(retry.is_some_and(|r| r.parse::<u64>().unwrap() > 0), "Retry-After");
        }
        other => panic!("expected 503, got {other:?}"),
    }
    let health = |addr| async move {
        split(http_client().get(format!("http://{addr}/health")).send().await.unwrap()).await
    };
    let (status, v) = health(addr).await;
    assert_eq!(
        (status, v["full"].as_str(), v["max_connections"].as_u64()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("connections"), Some(3)),
        "{v}"
    );
    assert_eq!(metric(addr, "roomcast_full ").await, 1);
    // Its clients keep receiving.
    assert_eq!(broadcast(addr, &key, json!("still")).await["subscriber_count"], 3);
    for ws in &mut clients {
        assert_eq!(ws.next_json().await["data"], "still");
    }
    // A place frees up: the node takes connections again and says so.
    let mut gone = clients.pop().unwrap();
    gone.stream.close(None).await.unwrap();
    gone.closed().await;
    let deadline = Instant::now() + WAIT;
    while health(addr).await.0 != StatusCode::OK {
        assert!(Instant::now() < deadline, "the node never reported room again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    open(ws_from("127.0.0.3", addr, &token, None).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_over_its_memory_bound_refuses_upgrades() {
    // Any process is over 1 MiB: the node is full from its first heartbeat on.
    let (_child, _dir, addr, secret, _key) = hub(&[("ROOMCAST_LIMITS__MAX_MEMORY_MB", "1")]).await;
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, v) =
            split(http_client().get(format!("http://{addr}/health")).send().await.unwrap()).await;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(v["full"], "memory", "{v}");
            break;
        }
        assert!(Instant::now() < deadline, "never reported full: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let token = token(addr, &secret).await;
    assert!(matches!(ws_from("127.0.0.2", addr, &token, None).await, Upgrade::Refused(503, Some(_), _)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_file_descriptors_pauses_accepting_and_never_stops_it() {
    // The hub may hold 64 files: a few for itself and its store, the rest for sockets.
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("stderr.log");
    let mut cmd = tokio::process::Command::new("prlimit");
    cmd.arg("--nofile=64:64")
        .arg(env!("CARGO_BIN_EXE_roomcast"))
        .current_dir(dir.path())
        .env_remove("RUST_LOG")
        .env("ROOMCAST_SERVER__LISTEN", "127.0.0.1:0")
        .env("ROOMCAST_ADMIN_KEY", ADMIN)
        .env("ROOMCAST_SERVER__TRUSTED_PROXIES", "[]")
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .kill_on_drop(true);
    let (mut child, _, addr) = start_cmd(&mut cmd).await;
    let addr: SocketAddr = addr.parse().unwrap();
    // More connections than it has files: the extra ones wait in the backlog.
    let mut held = Vec::new();
    for _ in 0..80 {
        held.push(tcp_from("127.0.0.2", addr).await.unwrap());
    }
    let deadline = Instant::now() + WAIT;
    while !std::fs::read_to_string(&log_path).unwrap().contains("out of file descriptors") {
        assert!(Instant::now() < deadline, "no out-of-files episode logged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(held);
    // Files free again: it accepts and answers, and it did not crash.
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(Ok(res)) = tokio::time::timeout(
            Duration::from_secs(2),
            http_client().get(format!("http://{addr}/health")).send(),
        )
        .await
            && res.status() == StatusCode::OK
        {
            break;
        }
        assert!(Instant::now() < deadline, "never accepted again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(child.try_wait().unwrap().is_none(), "still running");
    assert!(metric(addr, "roomcast_accept_errors_total{kind=\"out_of_files\"} ").await >= 1);
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert_eq!(log.matches("out of file descriptors").count(), 1, "one line per episode:\n{log}");
    assert!(log.contains("accepting"), "{log}");
}

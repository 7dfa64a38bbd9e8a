//! The `roomcast` binary itself: bootstrap key, default store path, the admin CLI, SIGTERM, and
//! start-up errors.

use std::process::Stdio;

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::support::{Ending, WAIT, Ws, split};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const BIN: &str = env!("CARGO_BIN_EXE_roomcast");

pub(crate) fn command(dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir)
        .env_remove("ROOMCAST_ADMIN_KEY")
        .env_remove("RUST_LOG")
        .env("ROOMCAST_SERVER__LISTEN", "127.0.0.1:0")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// Starts `roomcast` in `dir`; returns the child, the printed admin key if any, and the address.
async fn start(dir: &std::path::Path) -> (Child, Option<String>, String) {
    start_cmd(command(dir).stderr(Stdio::null())).await
}

pub(crate) async fn start_cmd(cmd: &mut Command) -> (Child, Option<String>, String) {
    let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut key = None;
    let addr = tokio::time::timeout(WAIT, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(k) = line.strip_prefix("ROOMCAST_ADMIN_KEY=") {
                key = Some(k.to_owned());
            }
            if let Some(addr) = line.strip_prefix("roomcast listening on http://") {
                return addr.to_owned();
            }
        }
        panic!("roomcast exited before listening");
    })
    .await
    .expect("roomcast starts in time");
    (child, key, addr)
}

#[tokio::test]
async fn the_binary_bootstraps_serves_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, key, addr) = start(dir.path()).await;
    let key = key.expect("first start prints an admin key");
    assert!(dir.path().join("data/roomcast.db").exists(), "the default store path is data/roomcast.db");
    let http = crate::support::http_client();
    let url = |p: &str| format!("http://{addr}{p}");
    let (status, v) = split(http.get(url("/api/test")).header("X-API-Key", &key).send().await.unwrap()).await;
    assert_eq!((status, v["kind"].as_str()), (StatusCode::OK, Some("admin")));

    // `admin create-key` writes to the same store; the running hub picks the key up.
    let out = command(dir.path()).args(["admin", "create-key", "--name", "ops"]).output().await.unwrap();
    assert!(out.status.success());
    let cli_key = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(cli_key.starts_with("rc_admin_"));
    let deadline = Instant::now() + WAIT;
    loop {
        let res = http.get(url("/api/test")).header("X-API-Key", &cli_key).send().await.unwrap();
        if res.status() == StatusCode::OK {
            break;
        }
        assert!(Instant::now() < deadline, "the new key was never accepted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let (_, created) = split(
        http.post(url("/api/applications"))
            .header("X-API-Key", &key)
            .json(&json!({"app_id": "bin-app"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let body = json!({"app_id": "bin-app", "app_secret": created["app_secret"]});
    let (_, token) = split(http.post(url("/api/token")).json(&body).send().await.unwrap()).await;
    let req =
        format!("ws://{addr}/ws?token={}", token["token"].as_str().unwrap()).into_client_request().unwrap();
    let (mut ws, _) = Ws::open(req).await.unwrap();

    let pid = child.id().unwrap().to_string();
    let signalled = Instant::now();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    assert_eq!(ws.closed().await, Ending::Closed(1012));
    let status =
        tokio::time::timeout(Duration::from_secs(5), child.wait()).await.expect("exits within 5 s").unwrap();
    assert!(status.success(), "{status:?}");
    assert!(signalled.elapsed() < Duration::from_secs(5));

    // A second start finds the admin keys and prints none.
    let (mut child, key, _) = start(dir.path()).await;
    assert_eq!(key, None);
    child.kill().await.unwrap();
}

#[tokio::test]
async fn start_up_errors_name_the_setting_and_exit_78() {
    let dir = tempfile::tempdir().unwrap();
    for (var, value, named) in [
        ("ROOMCAST_WEBSOCKET__HEARTBEAT_S", "0", "websocket.heartbeat_s"),
        ("ROOMCAST_LIMITS__MAX_BODY_BYTES", "lots", "limits.max_body_bytes"),
        ("ROOMCAST_SERVER__LISTEN", "nowhere", "server.listen"),
        ("ROOMCAST_ADMIN_KEY", "rc_admin_short_key", "ROOMCAST_ADMIN_KEY"),
    ] {
        let out = command(dir.path()).env(var, value).output().await.unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{var}: {stderr}");
        assert!(stderr.contains(named), "{var}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let out = command(dir.path()).args(["--config", "missing.toml"]).output().await.unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.toml"));
}

#[tokio::test]
async fn json_logs_have_a_line_per_request_and_per_connection() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("stderr.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let admin = "rc_admin_LogTestKey01_abcdefghijklmnopqrstuvwxyz012345";
    let (mut child, _, addr) = start_cmd(
        command(dir.path())
            .env("ROOMCAST_LOG__FORMAT", "json")
            .env("ROOMCAST_LOG__LEVEL", "info,roomcast::session=debug")
            .env("ROOMCAST_ADMIN_KEY", admin)
            .stderr(log),
    )
    .await;
    let http = crate::support::http_client();
    let url = |p: &str| format!("http://{addr}{p}");
    let res = http
        .post(url("/api/applications"))
        .header("X-API-Key", admin)
        .header("X-Request-Id", "req-created-1")
        .json(&json!({"app_id": "log-app"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "req-created-1", "the request id is echoed");
    let (_, created) = split(res).await;
    let res = http
        .get(url("/api/test"))
        .header("X-API-Key", created["api_key"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    let generated = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(generated.starts_with("r_"), "{generated}");
    let body = json!({"app_id": "log-app", "app_secret": created["app_secret"]});
    let (_, token) = split(http.post(url("/api/token")).json(&body).send().await.unwrap()).await;
    let req =
        format!("ws://{addr}/ws?token={}", token["token"].as_str().unwrap()).into_client_request().unwrap();
    let (mut ws, hello) = Ws::open(req).await.unwrap();
    let connection_id = hello["connection_id"].as_str().unwrap().to_owned();
    // A refused frame: the client gets the code's fixed message, the log gets what was wrong.
    ws.send_text(r#"{"type":"subscribe","room":"r","id":"seven"}"#).await;
    let refused = ws.next_json().await;
    assert_eq!(refused["code"], "invalid_message", "{refused}");
    assert!(!refused["message"].as_str().unwrap().contains("id must be"), "{refused}");
    ws.stream.close(None).await.unwrap();
    ws.closed().await;
    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    tokio::time::timeout(Duration::from_secs(5), child.wait()).await.expect("exits").unwrap();

    let text = std::fs::read_to_string(&log_path).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let find = |pred: &dyn Fn(&serde_json::Value) -> bool| {
        lines.iter().find(|l| pred(l)).unwrap_or_else(|| panic!("no such line in\n{text}")).clone()
    };
    let created_line = find(&|l| l["fields"]["request_id"] == "req-created-1");
    let f = &created_line["fields"];
    assert_eq!((f["status"].as_u64(), f["route"].as_str()), (Some(201), Some("/api/applications")));
    assert_eq!(f["method"], "POST");
    assert!(f["latency_ms"].as_f64().is_some_and(|ms| ms >= 0.0), "{created_line}");
    assert_eq!(created_line["level"], "INFO");
    let test_line = find(&|l| l["fields"]["request_id"] == generated.as_str());
    assert_eq!(test_line["fields"]["app_id"], "log-app", "the caller's app is logged");
    let opened = find(&|l| l["fields"]["message"] == "connection opened");
    assert_eq!(opened["fields"]["connection_id"], connection_id.as_str());
    assert_eq!(opened["fields"]["app_id"], "log-app");
    let refused = find(&|l| l["fields"]["message"] == "client frame refused");
    assert_eq!(refused["fields"]["connection_id"], connection_id.as_str());
    assert_eq!(refused["fields"]["code"], "invalid_message");
    assert!(refused["fields"]["detail"].as_str().unwrap().contains("id must be"), "{refused}");
    let closed = find(&|l| l["fields"]["message"] == "connection closed");
    assert_eq!(closed["fields"]["connection_id"], connection_id.as_str());
    assert!(!text.contains(admin), "keys are never logged");
    assert!(!text.contains(created["app_secret"].as_str().unwrap()), "secrets are never logged");
}

//! Pages in a real browser (Debian's Chromium via playwright-core): `examples/browser.html`
//! connects, subscribes and prints a broadcast; the API reference pages render with every
//! request to another host blocked. `scripts/test.sh` installs both.

use std::path::Path;
use std::process::Stdio;

use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::support::{WAIT, spawn_hub};

type Lines = tokio::io::Lines<BufReader<tokio::process::ChildStdout>>;

/// Runs `tests/browser/<script>` with `args` in Node; returns it and its output lines.
fn node_script(script: &str, args: &[&str]) -> (tokio::process::Child, Lines) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let mut child = tokio::process::Command::new("node")
        .arg(dir.join(script))
        .args(args)
        .current_dir(&dir)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node is installed (scripts/test.sh installs the browser tooling)");
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    (child, lines)
}

#[tokio::test]
async fn the_browser_example_prints_broadcast_events() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let hub = spawn_hub().await;
    let app = hub.create_app(json!({"app_id": "browser-app"})).await;
    let token = hub.token(&app, json!({"user_id": "browser"})).await;
    let page = format!(
        "file://{}?url=ws://{}/ws&token={token}&room=chat",
        root.join("examples/browser.html").display(),
        hub.addr
    );
    let shot = hub.dir.path().join("browser.png");
    let (mut child, mut lines) = node_script("browser.mjs", &[page.as_str(), &shot.to_string_lossy()]);
    let mut next = async || tokio::time::timeout(WAIT * 3, lines.next_line()).await.unwrap().unwrap();

    assert_eq!(next().await.as_deref(), Some("READY"));
    let v = hub.broadcast(&app, "chat", "new-message", json!({"text": "hello browser"})).await;
    assert_eq!(v["subscriber_count"], 1);
    assert_eq!(next().await.as_deref(), Some(r#"EVENT #1 chat new-message {"text":"hello browser"}"#));
    assert!(next().await.is_some_and(|l| l.starts_with("SHOT ")));
    assert!(child.wait().await.unwrap().success());
    screenshot_taken(&shot);
}

/// Opens `path` of `hub` with every request to another host blocked; returns the blocked URLs
/// once the page shows every one of `texts`.
async fn offline(hub: &crate::support::TestHub, path: &str, texts: &[&str]) -> Vec<String> {
    let shot = hub.dir.path().join(format!("{}.png", path.trim_matches('/').replace('/', "-")));
    let (url, shot_path) = (hub.url(path), shot.to_string_lossy().into_owned());
    let args: Vec<&str> =
        [url.as_str(), shot_path.as_str()].into_iter().chain(texts.iter().copied()).collect();
    let (mut child, mut lines) = node_script("offline.mjs", &args);
    let mut blocked = Vec::new();
    loop {
        let line = tokio::time::timeout(WAIT * 3, lines.next_line()).await.unwrap().unwrap();
        match line.as_deref() {
            Some(l) if l.starts_with("BLOCKED ") => blocked.push(l[8..].to_owned()),
            Some("SHOWN") => break,
            other => panic!("{path} never showed {texts:?}: {other:?} (blocked: {blocked:?})"),
        }
    }
    assert!(lines.next_line().await.unwrap().is_some_and(|l| l.starts_with("SHOT ")));
    assert!(child.wait().await.unwrap().success());
    screenshot_taken(&shot);
    blocked
}

/// Checks that a real screenshot was taken; copies it to `$ROOMCAST_KEEP_SCREENSHOT` if set.
fn screenshot_taken(shot: &Path) {
    assert!(std::fs::metadata(shot).unwrap().len() > 1000, "a real screenshot was taken");
    if let Ok(dir) = std::env::var("ROOMCAST_KEEP_SCREENSHOT") {
        std::fs::copy(shot, Path::new(&dir).join(shot.file_name().unwrap())).unwrap();
    }
}

#[tokio::test]
async fn the_api_reference_pages_render_on_an_air_gapped_host() {
    let hub = spawn_hub().await;
    // The document's title and routes, drawn by the page's own script from openapi.json.
    for path in ["/api/redoc", "/api/docs/"] {
        let blocked = offline(&hub, path, &["roomcast", "/api/broadcast", "/api/webhooks/{id}"]).await;
        assert!(blocked.is_empty(), "{path} asked other hosts for {blocked:?}");
    }
}

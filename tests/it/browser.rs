//! Pages in a real browser (Debian's Chromium via playwright-core): the API reference pages
//! render with every request to another host blocked. `scripts/test.sh` installs both.
//! (`examples/browser.html`, which runs the JavaScript client, is tested with it in
//! `clients/js/test/browser.test.mjs`.)

use std::path::Path;
use std::process::Stdio;

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

//! Nodes leaving the cluster: handed over on SIGTERM, removed after a kill.

use super::*;

/// A node as its own process, on the shared store `shared` (with `a`'s admin key), with the
/// given node timeout; returns it, its address and its directory.
async fn node_process(
    redis: &RedisServer,
    a: &TestHub,
    shared: &tempfile::TempDir,
    node_timeout_ms: u64,
) -> (tokio::process::Child, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_roomcast"))
        .current_dir(dir.path())
        .env("ROOMCAST_SERVER__LISTEN", "127.0.0.1:0")
        .env("ROOMCAST_ADMIN_KEY", &a.admin_key)
        .env("ROOMCAST_STORE__PATH", shared.path().join("roomcast.db"))
        .env("ROOMCAST_CLUSTER__REDIS_URL", redis.url())
        .env("ROOMCAST_CLUSTER__NODE_ID", "node-c")
        .env("ROOMCAST_CLUSTER__NODE_TIMEOUT_MS", node_timeout_ms.to_string())
        .env("ROOMCAST_LOG__LEVEL", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = tokio::time::timeout(WAIT, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(addr) = line.strip_prefix("roomcast listening on http://") {
                return addr.to_owned();
            }
        }
        panic!("node-c exited");
    })
    .await
    .unwrap();
    (child, addr, dir)
}

/// A connection to the node at `addr` with `token`.
async fn connect_to(addr: &str, token: &str) -> Ws {
    crate::support::open_ws(addr, &format!("token={token}")).await.unwrap().0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stopped_with_sigterm_hands_its_clients_over() {
    let redis = RedisServer::start().await;
    let (a, _b, shared) = two_nodes(&redis).await;
    let app = a.create_app(json!({"app_id": "term-app"})).await;
    // A node timeout of a minute: whatever happens within seconds is the node leaving by itself.
    let (mut child, addr, dir) = node_process(&redis, &a, &shared, 60_000).await;
    let mut carol = connect_to(&addr, &a.token(&app, json!({"user_id": "carol"})).await).await;
    carol.send_json(json!({"type": "subscribe", "room": "presence-team", "id": 1})).await;
    let f = carol.next_json().await;
    assert_eq!(f["type"], "subscribed", "{f}");
    let (mut dave, ack) = member(&a, &app, "dave").await;
    assert_eq!(user_ids(&ack["presence"]), ["carol", "dave"], "{ack}");

    let pid = child.id().unwrap().to_string();
    let term = Instant::now();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    // Its client is told to reconnect elsewhere (1012), its member leaves at once, it exits 0.
    assert!(matches!(carol.closed().await, crate::support::Ending::Closed(1012)));
    let f = dave.next_json().await;
    assert_eq!(member_event(&f), (Some("user-left"), Some("carol")), "{f}");
    let status =
        tokio::time::timeout(Duration::from_secs(5), child.wait()).await.expect("exits within 5 s").unwrap();
    assert!(status.success(), "{status}");
    assert!(term.elapsed() < Duration::from_secs(5));
    assert!(!redis.cli(&["smembers", "rc:nodes"]).await.contains("node-c"), "node-c deregistered");
    // Every task it started (sessions, the Redis broker's, webhooks, analytics) ended before it
    // exited: the drain finished within the grace period.
    let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap();
    assert!(log.contains("shutdown complete"), "{log}");
    assert!(!log.contains("tasks still running"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_is_removed_from_counts() {
    let redis = RedisServer::start().await;
    let (a, _b, shared) = two_nodes(&redis).await;
    let app = a.create_app(json!({"app_id": "kill-app"})).await;
    let mut hooks = Receiver::start().await;
    a.post("/api/webhooks", &app.api_key, json!({"url": hooks.url(), "events": ["room-vacated"]})).await;

    // A third node as its own process, killed with SIGKILL while it holds the room's only
    // subscriber.
    let (mut child, addr, _dir) = node_process(&redis, &a, &shared, 1500).await;
    let mut ws = connect_to(&addr, &a.token(&app, json!({})).await).await;
    ws.subscribe("room").await;
    assert_eq!(a.broadcast(&app, "room", "e", json!(1)).await["subscriber_count"], 1);
    // Carol is present through node-c only; Dave, on node A, watches.
    let mut carol = connect_to(&addr, &a.token(&app, json!({"user_id": "carol"})).await).await;
    carol.send_json(json!({"type": "subscribe", "room": "presence-team", "id": 1})).await;
    let f = carol.next_json().await;
    assert_eq!(f["type"], "subscribed", "{f}");
    let (mut dave, ack) = member(&a, &app, "dave").await;
    assert_eq!(user_ids(&ack["presence"]), ["carol", "dave"], "{ack}");

    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let killed = Instant::now();
    // Node A (node timeout 1.5 s in these tests) removes node-c's count and reports the room
    // vacated, once.
    assert_eq!(next_event(&mut hooks).await, "room-vacated room");
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(5), "cleanup took {took:?}");
    assert_eq!(a.broadcast(&app, "room", "e", json!(2)).await["subscriber_count"], 0);
    assert_eq!(room_names(&a, &app, "").await.0, ["presence-team"], "the dead node's room is unlisted");
    let f = dave.next_json().await;
    assert_eq!(member_event(&f), (Some("user-left"), Some("carol")), "{f}");
    let (_, v) = a.get("/api/rooms/presence-team/presence", &app.api_key).await;
    assert_eq!(user_ids(&v["members"]), ["dave"], "{v}");
}

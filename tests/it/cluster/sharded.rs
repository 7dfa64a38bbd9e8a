//! A Redis Cluster with sharded pub/sub, and Redis over TLS.

use super::state::analytics;
use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_with_sharded_pubsub_carries_the_hub() {
    let mut redis = RedisCluster::start().await;
    let (a, b) = nodes_on(&redis.urls(), true).await;
    let app = a.create_app(json!({"app_id": "shard-app"})).await;
    let took = within(|| async { b.get("/api/test", &app.api_key).await.0 == StatusCode::OK }).await;
    assert!(took < Duration::from_secs(1), "a new app reached node B after {took:?}");

    // Twelve rooms, spread over the shards; a subscriber to all of them on each node.
    let (rooms, mut on_a, mut on_b) = rooms_on_both(&a, &b, &app, 12).await;
    for (n, room) in rooms.iter().enumerate() {
        for k in 0..2 {
            let hub = if (n + k) % 2 == 0 { &a } else { &b };
            let v = hub.broadcast(&app, room, "e", json!(format!("{room}/{k}"))).await;
            assert_eq!(v["subscriber_count"], 2, "counted over the cluster: {v}");
        }
    }
    // Order is per room: rooms on different shards arrive over different connections.
    let got_a = by_room(events(&mut on_a, 24).await);
    let got_b = by_room(events(&mut on_b, 24).await);
    assert_eq!(got_a, got_b, "both nodes see the same events, offsets and order in each room");
    for room in &rooms {
        let offsets: Vec<u64> = got_a
            .iter()
            .filter(|(d, _)| d.as_str().unwrap().starts_with(&format!("{room}/")))
            .map(|e| e.1)
            .collect();
        assert_eq!(offsets, [1, 2], "{room}: one offset sequence per room");
    }
    // The rooms really are on different shards: their offset counters and their sharded
    // channels (SSUBSCRIBE) live on several servers.
    let (mut counters, mut channels) = (0, 0);
    for server in &redis.servers {
        counters += server.cli(&["--scan", "--pattern", "rc:stream:*"]).await.lines().count();
        let shard = server.cli(&["pubsub", "shardchannels", "rc:room:*"]).await;
        assert!(shard.lines().count() < 12, "every room on one shard: {shard}");
        channels += shard.lines().count();
    }
    assert_eq!((counters, channels), (12, 12), "each room's counter and channel on exactly one shard");

    // Presence, tickets and analytics work there too.
    let (_alice, _) = member(&a, &app, "alice").await;
    let (_bob, ack) = member(&b, &app, "bob").await;
    assert_eq!(user_ids(&ack["presence"]), ["alice", "bob"], "{ack}");
    let (status, v) = a.post("/api/tickets", &app.api_key, json!({"user_id": "ann"})).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let ticket = v["ticket"].as_str().unwrap().to_owned();
    assert!(b.try_redeem(&ticket).await.is_ok(), "bought on A, used on B");
    assert_eq!(a.try_redeem(&ticket).await.err().map(|e| e.0), Some(401), "used once");
    for hub in [&a, &b] {
        within(|| async { analytics(hub, &app, "1h").await["metrics"]["events"]["broadcasts"] == 24 }).await;
    }

    // One shard killed (SIGKILL) and restarted empty: the nodes say Redis is down, then come
    // back, and every room, on every shard, delivers again, once.
    redis.servers[0].kill();
    health_becomes(&[&a, &b], StatusCode::SERVICE_UNAVAILABLE).await;
    redis.servers[0].restart().await;
    redis.wait_ok().await;
    health_becomes(&[&a, &b], StatusCode::OK).await;
    each_room_once(&b, &app, &rooms, "again", [&mut on_a, &mut on_b]).await;
    on_a.roundtrip(7).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_primary_failing_over_to_its_replica_loses_no_room() {
    let mut redis = RedisCluster::start_with_replicas().await;
    let (a, b) = nodes_on(&redis.urls(), true).await;
    let app = a.create_app(json!({"app_id": "failover-app"})).await;
    within(|| async { b.get("/api/test", &app.api_key).await.0 == StatusCode::OK }).await;
    let (rooms, mut on_a, mut on_b) = rooms_on_both(&a, &b, &app, 12).await;
    each_room_once(&a, &app, &rooms, "1", [&mut on_a, &mut on_b]).await;

    // A primary that holds rooms is killed for good; its replica takes its slots over.
    let mut victim = None;
    for i in redis.primaries().await {
        if !redis.servers[i].cli(&["--scan", "--pattern", "rc:stream:*"]).await.trim().is_empty() {
            victim = Some(i);
        }
    }
    let victim = victim.expect("some primary holds a room");
    // Redis replicates asynchronously: what the primary had not passed on when killed is lost,
    // offsets included. Here the replica has it all.
    redis.wait_replicated(victim).await;
    redis.servers[victim].kill();
    health_becomes(&[&a, &b], StatusCode::SERVICE_UNAVAILABLE).await;
    within(|| async { redis.primaries().await.len() == 3 }).await;
    redis.wait_ok().await;
    health_becomes(&[&a, &b], StatusCode::OK).await;

    // Every room delivers again, on both nodes, once, counted over the cluster, and the offsets
    // (replicated to the promoted server) go on.
    let again = each_room_once(&b, &app, &rooms, "2", [&mut on_a, &mut on_b]).await;
    assert!(again.iter().all(|(_, offset)| *offset == 2), "offsets go on: {again:?}");
    on_a.roundtrip(7).await;
    on_b.roundtrip(7).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_room_list_spans_the_cluster() {
    let redis = RedisServer::start().await;
    let (a, b) = two_redis_nodes(&redis).await;
    let app = a.create_app(json!({"app_id": "list-app"})).await;
    within(|| async { b.get("/api/test", &app.api_key).await.0 == StatusCode::OK }).await;
    let _on_a = a.subscriber(&app, json!({}), &["a-1", "shared"]).await;
    let mut on_b = b.subscriber(&app, json!({}), &["b-1", "shared"]).await;
    let (_member, _) = member(&b, &app, "carol").await;

    let all = ["a-1", "b-1", "presence-team", "shared"];
    for hub in [&a, &b] {
        let (status, v) = hub.get("/api/rooms", &app.api_key).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        let rooms = v["rooms"].as_array().unwrap();
        let names: Vec<&str> = rooms.iter().map(|r| r["room"].as_str().unwrap()).collect();
        assert_eq!(names, all, "every node lists every node's rooms: {v}");
        let shared = &rooms[3];
        assert_eq!(
            (shared["subscriber_count"].as_u64(), shared["occupied"].as_bool()),
            (Some(2), Some(true))
        );
        assert!(shared["occupied_since"].as_str().is_some_and(|t| t.ends_with('Z')), "{shared}");
        assert_eq!(rooms[2]["user_count"], 1, "presence rooms count users over the cluster");
        assert_eq!(rooms[0]["user_count"], Value::Null);
    }
    // Prefix and pages, as on one node.
    assert_eq!(room_names(&a, &app, "?prefix=b-").await.0, ["b-1"]);
    let (first, cursor) = room_names(&a, &app, "?limit=2").await;
    assert_eq!((first, cursor), (vec!["a-1".to_owned(), "b-1".into()], json!("b-1")));
    let (rest, cursor) = room_names(&a, &app, "?limit=2&cursor=b-1").await;
    assert_eq!((rest, cursor), (vec!["presence-team".to_owned(), "shared".into()], Value::Null));

    // A room emptied on B leaves A's list; a room still held elsewhere stays.
    on_b.stream.close(None).await.unwrap();
    on_b.closed().await;
    within(|| async { room_names(&a, &app, "").await.0 == ["a-1", "presence-team", "shared"] }).await;
    let (_, v) = a.get("/api/rooms?prefix=shared", &app.api_key).await;
    assert_eq!(v["rooms"][0]["subscriber_count"], 1, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_joins_and_leaves_keep_the_node_count_and_room_set_exact() {
    let redis = RedisServer::start().await;
    let (a, _b) = nodes_adjusted(&redis.url(), false, |c| {
        c.limits.client_messages_per_second = 100_000;
        c.limits.client_messages_burst = 100_000;
    })
    .await;
    let app = a.create_app(json!({"app_id": "race-app"})).await;
    let rooms = ["r0", "r1", "r2"];
    // 30 connections subscribe to and leave the same three rooms, all at once, many times;
    // each ends in one room (every third in none).
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..30usize {
        let mut ws = a.subscriber(&app, json!({}), &[]).await;
        clients.spawn(async move {
            for round in 0..8u64 {
                for (n, room) in rooms.iter().enumerate() {
                    let id = round * 10 + n as u64;
                    ws.send_json(json!({"type": "subscribe", "room": room, "id": id})).await;
                    ws.send_json(json!({"type": "unsubscribe", "room": room, "id": id + 100})).await;
                }
                ws.send_json(json!({"type": "ping", "id": 1000 + round})).await;
                loop {
                    let f = ws.next_json().await;
                    assert!(
                        ["subscribed", "unsubscribed", "pong"].contains(&f["type"].as_str().unwrap()),
                        "{f}"
                    );
                    if f["type"] == "pong" {
                        break;
                    }
                }
            }
            if i % 3 != 0 {
                ws.subscribe(rooms[i % 3]).await;
            }
            ws
        });
    }
    let mut held = Vec::new();
    while let Some(ws) = clients.join_next().await {
        held.push(ws.unwrap());
    }
    // Connections 1, 2, 4, 5, …: ten in r1, ten in r2, none in r0.
    let in_set = redis.cli(&["smembers", "rc:node-rooms:node-a"]).await;
    for (room, expected) in [("r0", 0), ("r1", 10), ("r2", 10)] {
        let count = redis.cli(&["hget", &format!("rc:count:{{race-app:{room}}}"), "node-a"]).await;
        assert_eq!(count.trim().parse::<i64>().unwrap_or(0), expected, "{room}");
        let listed = in_set.lines().any(|l| l == format!("race-app:{room}"));
        assert_eq!(listed, expected > 0, "{room} in the node's room set: {in_set}");
        let (_, v) = a.get(&format!("/api/rooms/{room}"), &app.api_key).await;
        assert_eq!(v["room"]["subscriber_count"], expected, "{room}: {v}");
    }

    // Everyone leaves: nothing of node A is left behind.
    drop(held);
    within(|| async { redis.cli(&["smembers", "rc:node-rooms:node-a"]).await.trim().is_empty() }).await;
    for room in rooms {
        let count = redis.cli(&["hget", &format!("rc:count:{{race-app:{room}}}"), "node-a"]).await;
        assert!(count.trim().is_empty(), "{room}: {count}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_taken_for_dead_writes_its_state_again() {
    let redis = RedisServer::start().await;
    let (a, b) = two_redis_nodes(&redis).await;
    let app = a.create_app(json!({"app_id": "heal-app"})).await;
    within(|| async { b.get("/api/test", &app.api_key).await.0 == StatusCode::OK }).await;
    let _on_a = a.subscriber(&app, json!({}), &["room"]).await;
    let _on_b = b.subscriber(&app, json!({}), &["room"]).await;
    assert_eq!(a.broadcast(&app, "room", "e", json!(1)).await["subscriber_count"], 2);

    // What another node does to one it takes for dead (as after a Redis that lost the liveness
    // keys): B's count is removed, then B from the node set. B notices and writes it again.
    redis.cli(&["hdel", "rc:count:{heal-app:room}", "node-b"]).await;
    assert_eq!(a.broadcast(&app, "room", "e", json!(2)).await["subscriber_count"], 1);
    redis.cli(&["srem", "rc:nodes", "node-b"]).await;
    within(|| async { a.broadcast(&app, "room", "e", json!(3)).await["subscriber_count"] == 2 }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_who_left_while_redis_was_away_are_announced_on_its_return() {
    let mut redis = RedisServer::start().await;
    let (a, b) = two_redis_nodes(&redis).await;
    let app = a.create_app(json!({"app_id": "away-app"})).await;
    within(|| async { b.get("/api/test", &app.api_key).await.0 == StatusCode::OK }).await;
    let (mut dave, _) = member(&a, &app, "dave").await;
    let (mut carol, ack) = member(&b, &app, "carol").await;
    assert_eq!(user_ids(&ack["presence"]), ["carol", "dave"], "{ack}");
    assert_eq!(dave.next_json().await["event"], "user-joined");

    // Redis goes away with its data saved (as with persistence); Dave leaves meanwhile.
    assert_eq!(redis.cli(&["save"]).await.trim(), "OK");
    redis.kill();
    dave.stream.close(None).await.unwrap();
    dave.closed().await;
    redis.restart().await;

    // On its return node A removes the member it no longer has, and Carol hears it once.
    let f = carol.next_json().await;
    assert_eq!(member_event(&f), (Some("user-left"), Some("dave")), "{f}");
    let (_, v) = b.get("/api/rooms/presence-team/presence", &app.api_key).await;
    assert_eq!(user_ids(&v["members"]), ["carol"], "{v}");
    carol.roundtrip(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_reach_redis_over_tls() {
    let redis = RedisServer::start_tls().await;
    assert!(redis.url().starts_with("rediss://"));
    let (a, b) = nodes_with_tls(&redis.url(), false, trusting(redis.cert())).await;
    for hub in [&a, &b] {
        // Up once the subscription connection (TLS too) is.
        within(|| async { health(hub).await.1["redis"] == "ok" }).await;
    }
    let app = a.create_app(json!({"app_id": "tls-app"})).await;
    within(|| async { b.get("/api/test", &app.api_key).await.0 == StatusCode::OK }).await;
    let mut on_b = b.subscriber(&app, json!({}), &["room"]).await;
    a.broadcast(&app, "room", "e", json!("over tls")).await;
    assert_eq!(events(&mut on_b, 1).await[0].0, "over tls");

    // The system's authorities do not know this certificate: without the file a node refuses
    // to start rather than talk to an unchecked Redis.
    let mut config = crate::support::test_config(tempfile::tempdir().unwrap().path(), &a.admin_key);
    config.cluster.redis_url = Some(redis.url());
    let refused =
        roomcast::server::Server::build(config).await.expect_err("an unknown certificate is refused");
    assert!(refused.to_string().to_lowercase().contains("certificate"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_present_a_client_certificate_to_a_redis_that_asks_for_one() {
    let redis = RedisServer::start_mutual_tls().await;
    let (client_cert, client_key) = redis.certs().client();
    let admin_key = PresentedKey::generate(KeyKind::Admin).plaintext();
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::support::test_config(dir.path(), &admin_key);
    config.cluster.redis_url = Some(redis.url());
    config.cluster.redis_ca_file = Some(redis.cert());
    // Without a certificate of its own, Redis ends the handshake: the node does not start.
    let refused = roomcast::server::Server::build(config.clone()).await.expect_err("no client certificate");
    assert!(refused.to_string().contains("CertificateRequired"), "{refused}");
    // A key that does not exist is named.
    config.cluster.redis_client_cert_file = Some(client_cert.clone());
    config.cluster.redis_client_key_file = Some(dir.path().join("missing.key"));
    let refused = roomcast::server::Server::build(config).await.expect_err("no key file");
    assert!(refused.to_string().contains("missing.key"), "{refused}");

    let tls =
        TlsFiles { ca: Some(redis.cert()), client_cert: Some(client_cert), client_key: Some(client_key) };
    let (a, b) = nodes_with_tls(&redis.url(), false, tls).await;
    let app = a.create_app(json!({"app_id": "mtls-app"})).await;
    within(|| async { b.get("/api/test", &app.api_key).await.0 == StatusCode::OK }).await;
    let mut on_b = b.subscriber(&app, json!({}), &["room"]).await;
    a.broadcast(&app, "room", "e", json!("with a client certificate")).await;
    assert_eq!(events(&mut on_b, 1).await[0].0, "with a client certificate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_reach_a_redis_cluster_over_tls() {
    let certs = crate::support::TestCerts::make();
    let redis = RedisCluster::start_tls(certs.clone()).await;
    assert!(redis.urls().split(',').all(|u| u.starts_with("rediss://")), "{}", redis.urls());
    let (a, b) = nodes_with_tls(&redis.urls(), true, trusting(certs.ca())).await;
    let app = a.create_app(json!({"app_id": "tls-shard-app"})).await;
    within(|| async { b.get("/api/test", &app.api_key).await.0 == StatusCode::OK }).await;
    // Six rooms, spread over the shards: each shard is reached over TLS at the address the
    // cluster gives for it (127.0.0.1, which the certificate names).
    let (rooms, mut on_a, mut on_b) = rooms_on_both(&a, &b, &app, 6).await;
    each_room_once(&a, &app, &rooms, "1", [&mut on_a, &mut on_b]).await;
    let mut shards = 0;
    for server in &redis.servers {
        let channels = server.cli(&["pubsub", "shardchannels", "rc:room:*"]).await;
        shards += usize::from(!channels.trim().is_empty());
    }
    assert!(shards >= 2, "the rooms span shards");
}

//! The hub's cluster paths driven directly, without HTTP, over the Redis implementations of its
//! ports on a real `redis-server`: joins and leaves are counted in Redis, publications come back
//! through the one inbox, and a join that Redis refuses midway is undone whole. Redis is made to
//! fail midway by ACL rules that refuse one command, also inside scripts, while the connections
//! stay up.

use std::sync::Arc;
use std::time::Duration;

use roomcast::cluster::Node;
use roomcast::hub::events::PublishKind;
use roomcast::hub::metrics::HubMetrics;
use roomcast::hub::registry::Registry;
use roomcast::hub::{Fanout, Hub, OutboxLimits, Wake};
use roomcast::protocol::{EventName, RoomName};
use roomcast::redis_conn::TlsFiles;
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::support::{RedisServer, WAIT};

/// A hub of node `n_paths` on `redis`, its cluster parts running until the token fires.
async fn cluster_hub(redis: &RedisServer) -> (Arc<Hub>, CancellationToken) {
    let fanout = Arc::new(Fanout::new(Arc::new(Registry::default()), HubMetrics::default()));
    let (node, news) = Node::connect(
        &redis.url(),
        false,
        &TlsFiles::default(),
        "n_paths",
        Duration::from_secs(10),
        fanout.clone(),
        fanout.registry().clone(),
    )
    .await
    .unwrap();
    let hub = Arc::new(Hub::new(
        fanout,
        node.broker.clone(),
        node.state.clone(),
        OutboxLimits { messages: 64, bytes: 1 << 20 },
    ));
    let (token, tracker) = (CancellationToken::new(), TaskTracker::new());
    node.start(&token, &tracker);
    tracker.spawn(hub.clone().follow(news, token.clone()));
    assert!(node.link.wait_up(WAIT).await, "the subscription connection comes up");
    (hub, token)
}

/// This node's count of `room` in Redis (`None` when it has none).
async fn count_in_redis(redis: &RedisServer, room: &str) -> Option<String> {
    let out = redis.cli(&["HGET", &format!("rc:count:{{app-paths:{room}}}"), "n_paths"]).await;
    Some(out.trim().to_owned()).filter(|s| !s.is_empty())
}

/// Subscribers of the room's channel in Redis (every node's).
async fn channel_subscribers(redis: &RedisServer, room: &str) -> String {
    let out = redis.cli(&["PUBSUB", "NUMSUB", &format!("rc:room:{{app-paths:{room}}}")]).await;
    out.lines().nth(1).unwrap_or_default().trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_count_in_redis_and_publications_come_back_through_the_inbox() {
    let redis = RedisServer::start().await;
    let (hub, token) = cluster_hub(&redis).await;
    let room = RoomName::parse("chat").unwrap();
    let conn = hub.connect("app-paths", None);
    hub.join(&conn, &room, None, None).await.unwrap();
    assert_eq!(count_in_redis(&redis, "chat").await.as_deref(), Some("1"));
    assert_eq!(channel_subscribers(&redis, "chat").await, "1");
    let data = RawValue::from_string("{\"n\":1}".into()).unwrap();
    let out = hub
        .broadcast("app-paths", &room, &EventName::parse("m").unwrap(), &data, None, PublishKind::Broadcast)
        .await
        .unwrap();
    assert_eq!((out.offset, out.subscriber_count), (1, 1));
    // Delivered when it comes back from Redis, not by the publisher.
    assert_eq!(tokio::time::timeout(WAIT, conn.wake()).await.unwrap(), Wake::Work);
    assert!(conn.next_frame().unwrap().as_str().contains(r#""offset":1"#));
    assert!(hub.leave(&conn, &room).await);
    assert_eq!(count_in_redis(&redis, "chat").await, None, "the count is gone with the last subscriber");
    assert_eq!(channel_subscribers(&redis, "chat").await, "0", "the node unsubscribed");
    token.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_redis_refuses_midway_is_undone_whole() {
    let redis = RedisServer::start().await;
    let (hub, token) = cluster_hub(&redis).await;
    let mut events = hub.events().subscribe(64);

    // The count fails after the channel was subscribed: the subscription is taken back.
    let room = RoomName::parse("counted").unwrap();
    let conn = hub.connect("app-paths", None);
    redis.cli(&["ACL", "SETUSER", "default", "-hincrby"]).await;
    assert!(hub.join(&conn, &room, None, None).await.is_err());
    assert_eq!(hub.subscriber_count("app-paths", &room), 0, "not in the registry");
    assert_eq!(channel_subscribers(&redis, "counted").await, "0", "the channel was unsubscribed");
    assert_eq!(count_in_redis(&redis, "counted").await, None, "never counted");
    redis.cli(&["ACL", "SETUSER", "default", "+hincrby"]).await;
    assert!(!hub.leave(&conn, &room).await, "nothing is left to leave");

    // Presence fails after the count: the count is taken back too, and the member never shows.
    let presence = RoomName::parse("presence-team").unwrap();
    let ann = hub.connect("app-paths", Some("ann"));
    redis.cli(&["ACL", "SETUSER", "default", "-hsetnx"]).await;
    assert!(hub.join(&ann, &presence, None, None).await.is_err());
    redis.cli(&["ACL", "SETUSER", "default", "+hsetnx"]).await;
    assert_eq!(hub.subscriber_count("app-paths", &presence), 0);
    assert_eq!(count_in_redis(&redis, "presence-team").await, None, "the count was undone");
    assert_eq!(channel_subscribers(&redis, "presence-team").await, "0");
    let members = redis.cli(&["HLEN", "rc:members:{app-paths:presence-team}"]).await;
    assert_eq!(members.trim(), "0");

    // The room was occupied and vacated once each in Redis, and nobody ever joined it.
    let mut seen = Vec::new();
    while let Ok(event) = events.try_recv() {
        seen.push(format!("{event:?}").split_whitespace().next().unwrap_or_default().to_owned());
    }
    assert!(!seen.iter().any(|e| e.starts_with("MemberJoined")), "{seen:?}");
    assert_eq!(seen.iter().filter(|e| e.starts_with("RoomOccupied")).count(), 1, "{seen:?}");
    assert_eq!(seen.iter().filter(|e| e.starts_with("RoomVacated")).count(), 1, "{seen:?}");

    // And with Redis whole again the same joins go through.
    hub.join(&conn, &room, None, None).await.unwrap();
    let joined = hub.join(&ann, &presence, None, None).await.unwrap();
    assert_eq!(joined.presence.unwrap().member_count, 1);
    assert_eq!(count_in_redis(&redis, "presence-team").await.as_deref(), Some("1"));
    token.cancel();
}

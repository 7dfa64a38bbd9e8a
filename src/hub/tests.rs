//! Unit tests of the hub over its single-node ports.

use super::*;

fn hub_with(messages: usize) -> Hub {
    Hub::single_node(OutboxLimits { messages, bytes: 1 << 20 }, HubMetrics::default())
}

fn hub() -> Hub {
    hub_with(16)
}

fn raw(s: &str) -> Box<RawValue> {
    RawValue::from_string(s.to_owned()).unwrap()
}

#[tokio::test]
async fn events_reach_only_the_same_apps_room() {
    let hub = hub();
    let room = RoomName::parse("chat").unwrap();
    let a = hub.connect("app-a", None);
    let b = hub.connect("app-b", None);
    hub.join(&a, &room, None, None).await.unwrap();
    hub.join(&b, &room, None, None).await.unwrap();
    let ev = EventName::parse("m").unwrap();
    let out = hub.broadcast("app-a", &room, &ev, &raw("1"), None, PublishKind::Broadcast).await.unwrap();
    assert_eq!((out.subscriber_count, out.offset), (1, 1));
    assert!(a.next_frame().unwrap().as_str().contains(r#""offset":1"#));
    assert!(b.next_frame().is_none());
}

#[tokio::test]
async fn full_queue_closes_with_4008_and_others_keep_receiving() {
    let hub = hub_with(2);
    let room = RoomName::parse("r").unwrap();
    let slow = hub.connect("app-a", None);
    let fast = hub.connect("app-a", None);
    hub.join(&slow, &room, None, None).await.unwrap();
    hub.join(&fast, &room, None, None).await.unwrap();
    let ev = EventName::parse("m").unwrap();
    for _ in 0..2 {
        hub.broadcast("app-a", &room, &ev, &raw("null"), None, PublishKind::Broadcast).await.unwrap();
    }
    // `fast` reads its frames; `slow` does not, and the third broadcast overflows it.
    for offset in 1..=2 {
        assert!(fast.next_frame().unwrap().as_str().contains(&format!(r#""offset":{offset}"#)));
    }
    hub.broadcast("app-a", &room, &ev, &raw("null"), None, PublishKind::Broadcast).await.unwrap();
    assert_eq!(slow.closing().await, 4008);
    assert!(fast.next_frame().unwrap().as_str().contains(r#""offset":3"#));
    assert_eq!(fast.close_code(), None);
}

#[tokio::test]
async fn lifecycle_events_are_emitted_once() {
    let hub = hub();
    let mut rx = hub.events().subscribe(16);
    let room = RoomName::parse("r").unwrap();
    let a = hub.connect("app-a", Some("u1"));
    let b = hub.connect("app-a", None);
    hub.join(&a, &room, None, None).await.unwrap();
    hub.join(&b, &room, None, None).await.unwrap();
    assert!(hub.leave(&a, &room).await);
    assert!(!hub.leave(&a, &room).await);
    assert!(hub.leave(&b, &room).await);
    hub.disconnect(&a);
    let mut kinds = Vec::new();
    while let Ok(ev) = rx.try_recv() {
        kinds.push(match ev {
            HubEvent::ConnectionOpened { .. } => "open",
            HubEvent::ConnectionClosed { .. } => "close",
            HubEvent::RoomOccupied { .. } => "occupied",
            HubEvent::RoomVacated { .. } => "vacated",
            HubEvent::Published { .. } => "published",
            HubEvent::Delivered { .. } => "delivered",
            HubEvent::MemberJoined { .. } => "member joined",
            HubEvent::MemberLeft { .. } => "member left",
            HubEvent::Joined { .. } => "joined",
            HubEvent::Left { .. } => "left",
        });
    }
    // A second leave of the same connection is no event.
    assert_eq!(kinds, ["open", "open", "occupied", "joined", "joined", "left", "left", "vacated", "close"]);
    assert_eq!(hub.subscriber_count("app-a", &room), 0);
}

#[tokio::test]
async fn heartbeat_pings_in_turn_and_closes_the_silent() {
    let hub = hub();
    let conns: Vec<_> = (0..4).map(|_| hub.connect("app-a", None)).collect();
    hub.heartbeat(0, 2, 60_000);
    let pinged: Vec<bool> = conns.iter().map(|c| c.take_ping()).collect();
    assert_eq!(pinged.iter().filter(|p| **p).count(), 2, "half of them this tick");
    hub.heartbeat(1, 2, 60_000);
    for (c, before) in conns.iter().zip(pinged) {
        assert_ne!(c.take_ping(), before, "the other half next tick");
    }
    assert!(conns.iter().all(|c| c.close_code().is_none()));
    hub.heartbeat(2, 2, 0);
    assert!(conns.iter().all(|c| c.close_code() == Some(4000)));
}

#[tokio::test]
async fn connections_after_shutdown_are_born_closing() {
    let hub = hub();
    let before = hub.connect("app-a", None);
    assert_eq!(hub.shutdown(), 1);
    assert_eq!(before.close_code(), Some(1012));
    assert_eq!(hub.connect("app-a", None).close_code(), Some(1012));
}

#[tokio::test]
async fn exclude_skips_only_that_connection() {
    let hub = hub();
    let room = RoomName::parse("r").unwrap();
    let a = hub.connect("app-a", None);
    let b = hub.connect("app-a", None);
    hub.join(&a, &room, None, None).await.unwrap();
    hub.join(&b, &room, None, None).await.unwrap();
    let ev = EventName::parse("m").unwrap();
    hub.broadcast("app-a", &room, &ev, &raw("{}"), Some(&a.id), PublishKind::Client).await.unwrap();
    assert!(a.next_frame().is_none());
    assert!(b.next_frame().is_some());
}

/// The event names of the frames waiting for `conn`.
fn frames(conn: &ConnHandle) -> Vec<String> {
    std::iter::from_fn(|| conn.next_frame())
        .map(|f| {
            let v: serde_json::Value = serde_json::from_str(f.as_str()).unwrap();
            format!("{} {}", v["event"].as_str().unwrap_or("?"), v["data"]["user_id"].as_str().unwrap_or("-"))
        })
        .collect()
}

#[tokio::test]
async fn presence_is_announced_per_user_through_the_local_cluster_state() {
    let hub = hub();
    let mut rx = hub.events().subscribe(32);
    let room = RoomName::parse("presence-team").unwrap();
    let ann1 = hub.connect("app-a", Some("ann"));
    let ann2 = hub.connect("app-a", Some("ann"));
    let bob = hub.connect("app-a", Some("bob"));
    let first = hub.join(&ann1, &room, None, None).await.unwrap();
    assert_eq!(first.presence.unwrap().member_count, 1);
    hub.join(&bob, &room, None, None).await.unwrap();
    let again = hub.join(&ann2, &room, None, None).await.unwrap().presence.unwrap();
    assert!(again.joined.is_none());
    assert_eq!(again.member_count, 2, "the list the registry took at the join");
    assert_eq!(frames(&ann1), ["user-joined bob"], "the joiner itself is not told");
    assert!(frames(&bob).is_empty() && frames(&ann2).is_empty());
    hub.leave(&ann1, &room).await;
    assert!(frames(&bob).is_empty(), "ann is still here on another connection");
    hub.leave(&ann2, &room).await;
    assert_eq!(frames(&bob), ["user-left ann"]);
    let key = RoomKey { app_id: AppId::known("app-a"), room: room.clone() };
    assert_eq!(hub.presence_page(&key, None, 10).await.unwrap().unwrap().1, 1);
    hub.leave(&bob, &room).await;
    let mut kinds = Vec::new();
    while let Ok(ev) = rx.try_recv() {
        match ev {
            HubEvent::MemberJoined { user_id, .. } => kinds.push(format!("joined {user_id}")),
            HubEvent::MemberLeft { user_id, .. } => kinds.push(format!("left {user_id}")),
            HubEvent::RoomOccupied { .. } => kinds.push("occupied".into()),
            HubEvent::RoomVacated { .. } => kinds.push("vacated".into()),
            _ => {}
        }
    }
    assert_eq!(kinds, ["occupied", "joined ann", "joined bob", "left ann", "left bob", "vacated"]);
}

#[tokio::test]
async fn a_repeated_subscribe_is_counted_and_announced_once() {
    let hub = hub();
    let mut rx = hub.events().subscribe(16);
    let room = RoomName::parse("r").unwrap();
    let a = hub.connect("app-a", None);
    hub.join(&a, &room, None, None).await.unwrap();
    hub.join(&a, &room, None, None).await.unwrap();
    let mut occupied = 0;
    while let Ok(event) = rx.try_recv() {
        occupied += matches!(event, HubEvent::RoomOccupied { .. }) as usize;
    }
    assert_eq!(occupied, 1);
    assert!(hub.leave(&a, &room).await);
    assert_eq!(hub.subscriber_count("app-a", &room), 0, "one leave undoes both");
}

#[tokio::test]
async fn deliveries_are_counted_by_the_inbox_once_per_publication() {
    let hub = hub();
    let mut rx = hub.events().subscribe(32);
    let room = RoomName::parse("r").unwrap();
    let (a, b) = (hub.connect("app-a", None), hub.connect("app-a", None));
    hub.join(&a, &room, None, None).await.unwrap();
    hub.join(&b, &room, None, None).await.unwrap();
    let ev = EventName::parse("m").unwrap();
    hub.broadcast("app-a", &room, &ev, &raw("1"), Some(&a.id), PublishKind::Broadcast).await.unwrap();
    let (mut delivered, mut published) = (Vec::new(), 0);
    while let Ok(event) = rx.try_recv() {
        match event {
            HubEvent::Delivered { delivered: n, dropped, .. } => delivered.push((n, dropped)),
            HubEvent::Published { .. } => published += 1,
            _ => {}
        }
    }
    assert_eq!((delivered, published), (vec![(1, 0)], 1), "b got it; a was excluded");
}
